"""The hub under faults, with real processes on loopback. Each test restores what it stops.

Like Jepsen's set checker: record every ack the clients received, then check that every
acked message and tip is in MySQL exactly once and that no row exists that was never acked.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pymysql
import pytest
import socketio

from hub.settings import Settings
from hub.storage.mysql import migrate
from tests.conftest import Api, Client, unique
from tests.faults import FlusherProcess, PrivateMariaDB, PrivateRedis, until


class Ledger:
    """What the clients were told was accepted."""

    def __init__(self) -> None:
        self.messages: set[str] = set()
        self.tips: set[str] = set()
        self.refused = 0
        self.last_refusal: object = None

    async def chat(self, c: Client, sid: str, text: str) -> bool:
        try:
            ack = await c.call("send_message", {"stream_id": sid, "message": text})
        except Exception:
            self.refused += 1  # no ack at all: not accepted
            return False
        if ack.get("success"):
            self.messages.add(ack["message"]["message_id"])
            return True
        self.refused += 1
        self.last_refusal = ack
        return False

    async def tip(self, c: Client, sid: str, amount: str) -> bool:
        try:
            ack = await c.call("send_tip", {"stream_id": sid, "amount": amount})
        except Exception:
            self.refused += 1
            return False
        if ack.get("success"):
            self.tips.add(ack["tip"]["tip_id"])
            self.messages.add(ack["message_id"])
            return True
        self.refused += 1
        return False

    def check(self, mysql_url: str, sid: str) -> None:
        m = Settings.from_env({"MYSQL_URL": mysql_url}).mysql
        conn = pymysql.connect(
            host=m.host, port=m.port, user=m.user, password=m.password, database=m.database
        )
        with conn.cursor() as cur:
            cur.execute("SELECT message_id FROM chat_messages WHERE stream_id = %s", (sid,))
            stored = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT tip_id FROM tips WHERE stream_id = %s", (sid,))
            stored_tips = [r[0] for r in cur.fetchall()]
        conn.close()
        assert len(stored) == len(set(stored)) and len(stored_tips) == len(set(stored_tips))
        assert set(stored) == self.messages, "acked messages lost, or rows never acked"
        assert set(stored_tips) == self.tips


async def rows(mysql_url: str, table: str, sid: str) -> int:
    m = Settings.from_env({"MYSQL_URL": mysql_url}).mysql
    try:
        conn = pymysql.connect(host=m.host, port=m.port, user=m.user, database=m.database)
    except pymysql.MySQLError:
        return -1
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE stream_id = %s", (sid,))
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


async def viewer_count(api: Api, sid: str) -> int:
    status, body = await api.request("GET", sid)
    return int(body["stream"]["viewer_count"]) if status == 200 else -1


async def test_sigterm_drains_a_worker(workers, http, clients, token):
    w1, w2 = await workers(2, HUB_DRAIN_SECONDS="2", HUB_SHUTDOWN_DEADLINE="8")
    streamer, watcher_id, leaver_id = unique("streamer"), unique("watcher"), unique("leaver")
    api1, api2 = Api(http, w1.url), Api(http, w2.url)
    sid = (await api1.create_stream(token(streamer, "streamer")))["stream_id"]
    watcher = await clients(w1.url, token(watcher_id))
    await watcher.call("join_stream", {"stream_id": sid})
    leavers = [await clients(w2.url, token(leaver_id)) for _ in range(3)]
    for c in leavers:
        await c.call("join_stream", {"stream_id": sid})
    assert await viewer_count(api1, sid) == 2

    signalled = time.monotonic()
    w2.kill(signal.SIGTERM)

    async def not_ready() -> bool:
        try:
            status, body = await api2.request("GET", "/readyz")
            return status == 503 and body["checks"].get("worker") == "draining"
        except Exception:
            return False

    await until(not_ready, 5, "/readyz 503 while draining")
    left = await watcher.wait_for("viewer_left", lambda e: e["user_id"] == leaver_id, timeout=5)
    presence_gone = time.monotonic() - signalled
    assert left["viewer_count"] == 1
    late = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.connect(w2.url, token(unique("late")))
    await late.close()

    async def all_closed() -> bool:
        return all(not c.sio.connected for c in leavers)

    await until(all_closed, 8, "the draining worker's clients disconnected")
    exit_code = await asyncio.to_thread(w2.proc.wait, 10)
    took = time.monotonic() - signalled
    print(f"presence removed after {presence_gone:.2f}s, worker exited after {took:.2f}s (rc {exit_code})")
    assert exit_code == 0 and took < 8
    assert await viewer_count(api1, sid) == 1


async def test_frozen_worker_is_dropped_then_reasserted(workers, http, clients, token):
    w1, w2 = await workers(2)
    streamer, frozen_id = unique("streamer"), unique("frozen")
    api1 = Api(http, w1.url)
    sid = (await api1.create_stream(token(streamer, "streamer")))["stream_id"]
    watcher = await clients(w1.url, token(unique("watcher")))
    await watcher.call("join_stream", {"stream_id": sid})
    frozen = await clients(w2.url, token(frozen_id))
    await frozen.call("join_stream", {"stream_id": sid})
    assert await viewer_count(api1, sid) == 2

    w2.kill(signal.SIGSTOP)
    try:
        dropped = await watcher.wait_for("viewer_left", lambda e: e["user_id"] == frozen_id, timeout=20)
        assert dropped["viewer_count"] == 1
    finally:
        w2.kill(signal.SIGCONT)
    back = await watcher.wait_for(
        "viewer_joined",
        lambda e: e["user_id"] == frozen_id and len(watcher.events["viewer_left"]) > 0,
        timeout=20,
    )
    assert back["viewer_count"] == 2

    async def exact() -> bool:
        return await viewer_count(api1, sid) == 2

    took = await until(exact, 10, "count back to 2")
    print(f"re-asserted; count exact {took:.2f}s after the joined event")
    ack = await frozen.call("send_message", {"stream_id": sid, "message": "I'm back"})
    assert ack["success"]
    await watcher.wait_for("chat_message", lambda m: m["message_id"] == ack["message"]["message_id"])


@pytest.fixture
async def private_redis(tmp_path):
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


async def test_redis_killed_and_restarted(
    private_redis, env, settings, workers, http, clients, token, tmp_path
):
    overrides = {"REDIS_URL": private_redis.url}
    w1, w2 = await workers(2, **overrides)
    flusher = FlusherProcess({**env, **overrides}, tmp_path / "flusher.log")
    try:
        await flusher.ready()
        streamer = unique("streamer")
        api1 = Api(http, w1.url)
        sid = (await api1.create_stream(token(streamer, "streamer")))["stream_id"]
        a = await clients(w1.url, token(unique("a")))
        b = await clients(w2.url, token(unique("b")))
        for c in (a, b):
            await c.call("join_stream", {"stream_id": sid})
        ledger = Ledger()
        for i in range(5):
            assert await ledger.chat(a, sid, f"before {i}")
        assert await ledger.tip(b, sid, "2.00")

        private_redis.kill()
        # Redis down: the client is told, never a false success
        refused = await a.call("send_message", {"stream_id": sid, "message": "into the void"})
        assert refused["success"] is False and refused["error"]["code"] == "unavailable"
        private_redis.start()

        async def chat_crosses() -> bool:
            ok = await ledger.chat(a, sid, "after restart")
            return (
                ok
                and len(b.events["chat_message"]) > 0
                and any(m["message"] == "after restart" for m in b.events["chat_message"])
            )

        took = await until(chat_crosses, 20, "chat crossing workers after the restart")
        print(f"chat crossed workers again {took:.2f}s after Redis came back")
        assert await ledger.tip(a, sid, "3.50")
        assert await viewer_count(api1, sid) == 2

        async def flushed() -> bool:
            return await rows(settings.mysql.url, "tips", sid) == len(ledger.tips)

        await until(flushed, 30, "the flusher caught up")
        await until(lambda: _true_after_drain(private_redis), 30, "outbox empty")
        ledger.check(settings.mysql.url, sid)
    finally:
        flusher.stop()


async def _true_after_drain(server: PrivateRedis) -> bool:
    import redis.asyncio as aioredis

    client = aioredis.from_url(server.url)
    try:
        keys = [k async for k in client.scan_iter(match="*outbox")]
        lengths = [await client.xlen(k) for k in keys]
        return all(n == 0 for n in lengths)
    finally:
        await client.aclose()


@pytest.fixture
async def private_mariadb(tmp_path):
    server = await asyncio.to_thread(PrivateMariaDB, tmp_path / "mariadb")
    await asyncio.to_thread(server.start)
    migrate(Settings.from_env({"MYSQL_URL": server.url}).mysql)
    yield server
    await asyncio.to_thread(server.stop)


async def test_mariadb_down_while_chat_and_tips_flow(
    private_mariadb, env, workers, http, clients, token, tmp_path
):
    overrides = {"MYSQL_URL": private_mariadb.url, "HUB_CHAT_RATE": "10000", "HUB_TIP_RATE": "10000"}
    w1, w2 = await workers(2, **overrides)
    flusher = FlusherProcess({**env, **overrides}, tmp_path / "flusher.log")
    try:
        await flusher.ready()
        api1 = Api(http, w1.url)
        sid = (await api1.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
        a = await clients(w1.url, token(unique("a")))
        b = await clients(w2.url, token(unique("b")))
        for c in (a, b):
            await c.call("join_stream", {"stream_id": sid})
        ledger = Ledger()
        assert await ledger.chat(a, sid, "before the outage")

        await asyncio.to_thread(private_mariadb.stop)
        down_at = time.monotonic()

        async def reports_down() -> bool:
            status, body = await api1.request("GET", "/readyz")
            return status == 503 and body["checks"]["mysql"] == "down"

        await until(reports_down, 10, "/readyz reporting MySQL down")
        n = 0
        while time.monotonic() - down_at < 30:  # chat and tips keep flowing for 30 s
            assert await ledger.chat((a, b)[n % 2], sid, f"during {n}"), (n, ledger.last_refusal)
            if n % 5 == 0:
                assert await ledger.tip((b, a)[n % 2], sid, "1.25")
            n += 1
            await asyncio.sleep(0.2)  # the pace of the traffic, not a wait for a condition
        await asyncio.to_thread(private_mariadb.start)
        back_at = time.monotonic()

        async def caught_up() -> bool:
            return await rows(private_mariadb.url, "chat_messages", sid) == len(ledger.messages)

        took = await until(caught_up, 60, "the flusher catching up")
        print(
            f"{len(ledger.messages)} messages, {len(ledger.tips)} tips; caught up {took:.2f}s after "
            f"MariaDB came back (down {back_at - down_at:.1f}s)"
        )
        ledger.check(private_mariadb.url, sid)
        status, _ = await api1.request("GET", "/readyz")
        assert status == 200
    finally:
        flusher.stop()


async def test_flusher_killed_mid_stream_loses_and_doubles_nothing(
    env, settings, workers, http, clients, token, tmp_path
):
    (w1,) = await workers(1)
    api1 = Api(http, w1.url)
    sid = (await api1.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    senders = []
    for i in range(4):
        c = await clients(w1.url, token(unique(f"s{i}")))
        await c.call("join_stream", {"stream_id": sid})
        senders.append(c)
    ledger = Ledger()
    flusher = FlusherProcess({**env, "HUB_FLUSH_BATCH": "7"}, tmp_path / "flusher-1.log")
    try:
        await flusher.ready()

        async def burst(c: Client, tag: str) -> None:
            for n in range(15):
                await ledger.chat(c, sid, f"{tag} {n}")

        await asyncio.gather(*(burst(c, f"first-{i}") for i, c in enumerate(senders)))

        async def some_written() -> bool:
            return await rows(settings.mysql.url, "chat_messages", sid) > 0

        await until(some_written, 20, "the first flusher writing")
        flusher.kill()  # SIGKILL, wherever it is in its batch
    finally:
        flusher.stop()
    await asyncio.gather(*(burst(c, f"second-{i}") for i, c in enumerate(senders[:2])))
    second = FlusherProcess(env, tmp_path / "flusher-2.log")
    try:

        async def all_written() -> bool:
            return await rows(settings.mysql.url, "chat_messages", sid) == len(ledger.messages)

        took = await until(all_written, 30, "the next flusher claiming and writing everything")
        print(f"next flusher caught up in {took:.2f}s")
        ledger.check(settings.mysql.url, sid)
    finally:
        second.stop()


async def test_a_viewer_that_stops_reading_is_cut_off_and_others_keep_pace(workers, http, clients, token):
    (w1,) = await workers(1, HUB_CHAT_RATE="100000", HUB_SEND_QUEUE_LIMIT="200")
    sid = (await Api(http, w1.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    sender = await clients(w1.url, token(unique("sender")))
    reader = await clients(w1.url, token(unique("reader")))
    for c in (sender, reader):
        await c.call("join_stream", {"stream_id": sid})
    # A raw WebSocket client that joins, then never reads again: its TCP window fills up.
    ws = await http.ws_connect(w1.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str()).startswith("0")
    await ws.send_str("40/streaming,")
    assert (await ws.receive_str()).startswith("40/streaming,")
    await ws.send_str(f'42/streaming,1["join_stream",{{"stream_id":"{sid}"}}]')
    await reader.wait_for("viewer_joined", lambda e: e["viewer_count"] == 3)
    transport = ws._response.connection.transport
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport.pause_reading()

    text = "😀" * 500  # 2 KB a message on the wire
    latencies = []
    for n in range(10_000):
        started = time.monotonic()
        ack = await sender.call("send_message", {"stream_id": sid, "message": text})
        assert ack["success"], ack
        if n % 500 == 0:
            mid = ack["message"]["message_id"]
            await reader.wait_for("chat_message", lambda m, mid=mid: m["message_id"] == mid)
            latencies.append(time.monotonic() - started)
        if n % 200 == 0:
            status, body = await Api(http, w1.url).request("GET", sid)
            if body["stream"]["viewer_count"] == 2:
                break
    else:
        raise AssertionError("the viewer that stopped reading was never cut off")
    print(f"cut off after {n} messages; reader latency max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 2.0
    await ws.close()


async def test_killed_worker_clients_reconnect_and_every_ack_is_stored_once(
    workers, http, clients, token, flusher, sql
):
    w1, w2 = await workers(2, HUB_CHAT_RATE="100000")
    api1 = Api(http, w1.url)
    sid = (await api1.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    users = [unique(f"u{i}") for i in range(4)]
    socks = {u: await clients((w1, w2)[i % 2].url, token(u)) for i, u in enumerate(users)}
    for c in socks.values():
        await c.call("join_stream", {"stream_id": sid})
    ledger = Ledger()
    attempted: set[str] = set()

    async def talk(user: str, rounds: int, tag: str) -> None:
        for n in range(rounds):
            text = f"{user} {tag} {n}"
            attempted.add(text)
            if not await ledger.chat(socks[user], sid, text):
                return  # its worker died under it
            if n % 10 == 0:
                await ledger.tip(socks[user], sid, "1.00")

    traffic = asyncio.gather(*(talk(u, 40, "first") for u in users))
    await until(lambda: _at_least(ledger, 40), 20, "traffic flowing")
    w2.kill()  # SIGKILL in the middle of the traffic
    await traffic
    for i, u in enumerate(users):
        if i % 2 == 1:  # the dead worker's clients reconnect to the surviving one
            socks[u] = await clients(w1.url, token(u))
            assert (await socks[u].call("join_stream", {"stream_id": sid}))["success"]
    await asyncio.gather(*(talk(u, 10, "second") for u in users))

    async def exact() -> bool:
        return await viewer_count(api1, sid) == 4

    await until(exact, 30, "viewer count exact after the dead worker's viewers expired")
    await flusher.drain()
    stored = sql("SELECT message_id, message, message_type FROM chat_messages WHERE stream_id = %s", sid)
    stored_ids = [r["message_id"] for r in stored]
    assert len(stored_ids) == len(set(stored_ids))
    assert ledger.messages <= set(stored_ids), "an acked message was lost"
    texts = {r["message"] for r in stored if r["message_type"] == "TEXT"}
    assert texts <= attempted, "a row exists that was never sent"
    stored_tips = [r["tip_id"] for r in sql("SELECT tip_id FROM tips WHERE stream_id = %s", sid)]
    assert len(stored_tips) == len(set(stored_tips)) and ledger.tips <= set(stored_tips)
    print(
        f"{len(ledger.messages)} acked messages, {len(stored_ids)} stored, "
        f"{len(ledger.tips)} acked tips, {len(stored_tips)} stored"
    )


async def _at_least(ledger: Ledger, n: int) -> bool:
    return len(ledger.messages) >= n
