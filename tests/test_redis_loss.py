"""Redis coming back without its data (no append-only log, a new node, a flushed database).

Each shard's epoch marker goes with the data; a web worker that finds it gone ends every stream
MySQL holds as LIVE whose live state is gone, with the figures MySQL's own rows give, and tells
the viewers still connected. A marker lost on its own changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pymysql
import pytest
import redis.asyncio as aioredis

from hub.settings import Settings
from hub.storage.keys import Keys
from hub.storage.mysql import migrate
from tests.conftest import Api, Client, next_month, unique
from tests.faults import ClusterNodes, FlusherProcess, PrivateRedis, until

TIPS = ("2.50", "1.10", "1.99")


@pytest.fixture
async def volatile_redis(tmp_path):
    """A private Redis that keeps nothing on disk: restarted, it comes back empty."""
    server = PrivateRedis(tmp_path / "redis", persistence=False)
    server.start()
    yield server
    server.kill()


class Database:
    """A MySQL database of the test's own. A heal looks at every unfinished stream of its
    database, and the suite's other tests leave theirs in the shared one, held in other Redis
    servers: those would be healed too."""

    def __init__(self, settings: Settings) -> None:
        self.mysql = settings.mysql.with_database(f"{settings.mysql.database}_loss_{uuid.uuid4().hex[:8]}")
        self.url = self.mysql.url
        migrate(self.mysql)
        m = self.mysql
        self.conn = pymysql.connect(
            host=m.host,
            port=m.port,
            user=m.user,
            password=m.password,
            database=m.database,
            autocommit=True,
            cursorclass=pymysql.cursors.DictCursor,
        )

    def __call__(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())

    def drop(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.mysql.database}`")
        self.conn.close()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    db = Database(settings)
    yield db
    db.drop()


@pytest.fixture
async def deployment(volatile_redis, db, env, workers, tmp_path):
    """Two workers and a flusher on the private Redis and database."""
    overrides = {"REDIS_URL": volatile_redis.url, "MYSQL_URL": db.url}
    w1, w2 = await workers(2, **overrides)
    flusher = FlusherProcess({**env, **overrides}, tmp_path / "flusher.log")
    try:
        await flusher.ready()
        yield w1, w2
    finally:
        flusher.stop()


def figures(db: Database, sid: str) -> dict[str, Any]:
    """What MySQL's rows of a stream add up to."""
    messages = db("SELECT COUNT(*) AS n FROM chat_messages WHERE stream_id = %s", sid)[0]["n"]
    tips = db(
        "SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0) AS amount, "
        "COALESCE(SUM(platform_fee), 0) AS fees FROM tips WHERE stream_id = %s",
        sid,
    )[0]
    return {
        "message_count": messages,
        "tip_count": tips["n"],
        "tips_total": tips["amount"],
        "platform_fees_total": tips["fees"],
    }


async def traffic(a: Client, b: Client, sid: str) -> None:
    """Three messages from ``a``, three tips from ``b`` (each also a TIP chat message)."""
    for i in range(3):
        assert (await a.call("send_message", {"stream_id": sid, "message": f"hello {i}"}))["success"]
    for amount in TIPS:
        ack = await b.call("send_tip", {"stream_id": sid, "amount": amount})
        assert ack["success"], ack


async def test_live_streams_redis_lost_are_ended_with_mysql_figures(
    volatile_redis, deployment, settings, http, connect, token, db
):
    w1, w2 = deployment
    api1, api2 = Api(http, w1.url), Api(http, w2.url)
    streamer = token(unique("streamer"), "streamer")
    sid = (await api1.create_stream(streamer))["stream_id"]
    idle = (await api2.create_stream(token(unique("idle"), "streamer")))["stream_id"]  # nobody watches
    planner = token(unique("planner"), "streamer")
    later = (await api1.create_stream(planner, scheduled_at=next_month()))["stream_id"]
    a, b = await connect(w1.url, token(unique("a"))), await connect(w2.url, token(unique("b")))
    for c in (a, b):
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]
    await traffic(a, b, sid)

    async def flushed() -> bool:
        found = figures(db, sid)
        rows = db("SELECT status FROM streams WHERE stream_id IN (%s, %s, %s)", sid, idle, later)
        return (found["message_count"], found["tip_count"], len(rows)) == (6, 3, 3)

    await until(flushed, 30, "the streams, messages and tips in MySQL")

    try:
        volatile_redis.kill()
    finally:
        await asyncio.to_thread(volatile_redis.start)  # empty: nothing was kept on disk

    # The viewers, still connected to their workers, are told, on both workers.
    told = [await c.wait_for("stream_ended", lambda e: e["stream_id"] == sid, timeout=30) for c in (a, b)]
    assert told[0]["duration"] == told[1]["duration"] >= 0

    async def ended() -> bool:
        rows = db("SELECT stream_id FROM streams WHERE stream_id IN (%s, %s) AND status = 'ENDED'", sid, idle)
        return len(rows) == 2

    await until(ended, 30, "both live streams ENDED in MySQL")
    row = db("SELECT * FROM streams WHERE stream_id = %s", sid)[0]
    expected = {
        "message_count": 6,
        "tip_count": 3,
        "tips_total": Decimal("5.59"),
        "platform_fees_total": figures(db, sid)["platform_fees_total"],
    }
    assert figures(db, sid) == expected
    assert {name: row[name] for name in expected} == expected
    assert row["unique_viewers"] == 2  # a chatted and b tipped: both had joined
    assert row["peak_viewers"] >= 1  # a lower bound: the peak itself was lost with Redis
    assert row["duration_seconds"] == told[0]["duration"] and row["ended_at"] >= row["started_at"]
    quiet = db("SELECT * FROM streams WHERE stream_id = %s", idle)[0]
    assert (quiet["message_count"], quiet["tip_count"], quiet["tips_total"]) == (0, 0, Decimal("0.00"))

    # The viewers watch nothing now, and the stream cannot be joined again.
    again = await a.call("join_stream", {"stream_id": sid})
    assert again["success"] is False and again["error"]["code"] == "stream_not_live", again

    # The API says ENDED with those figures: from Redis's ended state, then from MySQL alone.
    for source in ("redis", "mysql"):
        status, body = await api2.request("GET", sid)
        assert status == 200 and body["stream"]["status"] == "ENDED", (source, body)
        status, body = await api2.request("GET", f"{sid}/stats")
        stats = body["stats"]
        assert (
            stats["status"],
            stats["message_count"],
            stats["tip_count"],
            stats["unique_viewers"],
            stats["duration_seconds"],
        ) == ("ENDED", 6, 3, 2, row["duration_seconds"]), (source, stats)
        assert Decimal(str(stats["tips_total"])) == Decimal("5.59")
        assert Decimal(str(stats["platform_fees_total"])) == row["platform_fees_total"]
        status, body = await api1.request("GET", f"{sid}/chat")
        assert status == 200 and body["count"] == 6, (source, body)
        status, body = await api1.request("POST", f"{sid}/end", streamer)
        assert status == 409, (source, body)
        if source == "redis":  # as when the ended state's retention has passed
            r = aioredis.from_url(volatile_redis.url)
            k = Keys.of_settings(settings).of(sid)
            await r.delete(k.stream(sid), k.unique(sid))
            await r.aclose()

    # The scheduled stream can still be started.
    status, body = await api2.request("POST", f"{later}/start", planner)
    assert status == 200 and body["stream"]["status"] == "LIVE", body

    # The streamer goes live again, and the new stream works across both workers.
    fresh = (await api1.create_stream(streamer))["stream_id"]
    for c in (a, b):
        assert (await c.call("join_stream", {"stream_id": fresh}))["success"]
    ack = await a.call("send_message", {"stream_id": fresh, "message": "back on air"})
    assert ack["success"], ack
    await b.wait_for("chat_message", lambda m: m["message_id"] == ack["message"]["message_id"])
    for c in (a, b):  # told once, whichever way the news came (the room's channel or its worker)
        assert [e["stream_id"] for e in c.events["stream_ended"]] == [sid]


async def test_a_lost_marker_alone_ends_nothing(
    volatile_redis, deployment, settings, http, connect, token, db
):
    w1, w2 = deployment
    api1 = Api(http, w1.url)
    sid = (await api1.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    a, b = await connect(w1.url, token(unique("a"))), await connect(w2.url, token(unique("b")))
    for c in (a, b):
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]
    await traffic(a, b, sid)
    keys = Keys.of_settings(settings).all
    markers = [k.epoch for k in keys]
    r = aioredis.from_url(volatile_redis.url, decode_responses=True)

    async def healed() -> list[str] | None:
        values = await r.mget(markers)
        return values if all(v is not None and v.endswith(" healed") for v in values) else None

    async def outbox_empty() -> bool:
        return all(n == 0 for n in [await r.xlen(k.outbox) for k in keys])

    try:
        await until(outbox_empty, 30, "the flusher caught up")
        assert db("SELECT status FROM streams WHERE stream_id = %s", sid) == [{"status": "LIVE"}]
        await until(healed, 20, "every shard's marker written by a worker")
        before = set(await r.mget(markers))
        await r.delete(*markers)  # the markers alone: every stream's state is still there

        async def healed_again() -> bool:
            values = await healed()
            return values is not None and not set(values) & before

        await until(healed_again, 20, "new markers, and the heal that follows them done")
        await until(outbox_empty, 30, "the flusher caught up")
    finally:
        await r.aclose()
    assert db("SELECT status FROM streams WHERE stream_id = %s", sid) == [{"status": "LIVE"}]
    status, body = await api1.request("GET", sid)
    assert body["stream"]["status"] == "LIVE" and body["stream"]["viewer_count"] == 2
    ack = await b.call("send_message", {"stream_id": sid, "message": "still here"})
    assert ack["success"], ack
    await a.wait_for("chat_message", lambda m: m["message_id"] == ack["message"]["message_id"])
    assert not a.events["stream_ended"] and not b.events["stream_ended"]


async def test_a_cluster_node_back_empty_has_its_streams_ended_and_no_other(
    settings, env, workers, http, connect, token, tmp_path
):
    nodes, db = ClusterNodes(tmp_path / "cluster", persistence=False), Database(settings)
    keys = Keys(env["HUB_REDIS_PREFIX"], 16)
    cluster = nodes.client()
    flusher = None
    try:
        await nodes.start()
        # A presence TTL longer than the node's restart: the other nodes' viewers are not dropped.
        overrides = {
            "REDIS_URL": nodes.url,
            "HUB_REDIS_SHARDS": "16",
            "MYSQL_URL": db.url,
            "HUB_PRESENCE_TTL": "10",
        }
        w1, w2 = await workers(2, **overrides)
        flusher = FlusherProcess({**env, **overrides}, tmp_path / "flusher.log")
        await flusher.ready()
        api = Api(http, w1.url)
        await cluster.initialize()

        def port_of(sid: str) -> int:
            return int(cluster.get_node_from_key(keys.of(sid).stream(sid)).port)

        lost = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
        kept = lost
        while port_of(kept) == port_of(lost):  # a stream on another node
            kept = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
        a, b, c = [await connect(w.url, token(unique(n))) for w, n in ((w1, "a"), (w2, "b"), (w2, "c"))]
        for viewer, sid in ((a, lost), (b, lost), (c, kept)):
            assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
        await traffic(a, b, lost)

        async def flushed() -> bool:
            return (
                figures(db, lost)["tip_count"] == 3
                and len(db("SELECT 1 FROM streams WHERE stream_id IN (%s, %s)", lost, kept)) == 2
            )

        await until(flushed, 30, "the streams, messages and tips in MySQL")
        await nodes.restart(port_of(lost))  # back with its slots, without its data

        for viewer in (a, b):
            await viewer.wait_for("stream_ended", lambda e: e["stream_id"] == lost, timeout=30)

        async def ended() -> bool:
            return db("SELECT status FROM streams WHERE stream_id = %s", lost) == [{"status": "ENDED"}]

        await until(ended, 30, "the stream on the restarted node ENDED in MySQL")
        row = db("SELECT * FROM streams WHERE stream_id = %s", lost)[0]
        assert (row["message_count"], row["tip_count"], row["tips_total"]) == (6, 3, Decimal("5.59"))
        assert row["platform_fees_total"] == figures(db, lost)["platform_fees_total"]

        # The stream on another node kept its state: still live, watched, and chat flows.
        ack = await c.call("send_message", {"stream_id": kept, "message": "unaffected"})
        assert ack["success"], ack
        assert db("SELECT status FROM streams WHERE stream_id = %s", kept) == [{"status": "LIVE"}]
        _, body = await api.request("GET", kept)
        assert (body["stream"]["status"], body["stream"]["viewer_count"]) == ("LIVE", 1)
        assert not c.events["stream_ended"]
    finally:
        if flusher is not None:
            flusher.stop()
        await cluster.aclose()
        nodes.stop()
        db.drop()
