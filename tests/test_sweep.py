"""The sweep of what has come due (due.lua): kept viewer events sent from their index, and
LIVE streams nobody ends ended by the hub after HUB_LIVE_IDLE_END without a streamer's socket
watching and without activity. Its Redis cost follows what is due, not the live streams."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from hub.codec import uuid7
from hub.settings import Settings
from hub.storage.keys import Keys
from hub.storage.state import State
from tests.bench.workloads import live_streams
from tests.conftest import Api, Client, eventually, unique
from tests.faults import PrivateRedis


async def redis_ms(rds: aioredis.Redis) -> int:
    """Redis's clock, the one the scripts score the indexes with."""
    seconds, micros = await rds.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def until_redis_ms(rds: aioredis.Redis, at: float, what: str) -> None:
    async def reached() -> bool:
        return await redis_ms(rds) >= at

    await eventually(reached, 15, what)


async def status_of(api: Api, sid: str) -> str:
    status, body = await api.request("GET", sid)
    assert status == 200, body
    return str(body["stream"]["status"])


async def test_an_idle_stream_is_ended_with_its_final_figures(
    workers, http, token, connect, rds, flusher, sql, env
):
    (w,) = await workers(1, HUB_LIVE_IDLE_END="2")
    api, streamer = Api(http, w.url), unique("streamer")
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    k = Keys.of_settings(Settings.from_env(env)).of(sid)
    viewer = await connect(w.url, token(unique("viewer")))
    assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
    assert (await viewer.call("send_message", {"stream_id": sid, "message": "anyone here?"}))["success"]
    last_activity = await redis_ms(rds)
    ended = await viewer.wait_for("stream_ended", timeout=10)
    assert ended["stream_id"] == sid
    # Not before the idle time had passed (the message reached Redis before its ack came back).
    assert await redis_ms(rds) >= last_activity + 2000 - 500
    assert await status_of(api, sid) == "ENDED"
    assert await rds.zscore(k.live_idle, sid) is None
    assert await rds.zscore(k.live, sid) is None
    await flusher.drain()
    row = sql("SELECT status, ended_at, message_count, peak_viewers FROM streams WHERE stream_id=%s", sid)
    assert len(row) == 1 and row[0]["status"] == "ENDED" and row[0]["ended_at"] is not None
    assert (row[0]["message_count"], row[0]["peak_viewers"]) == (1, 1)
    assert "idle stream ended" in w.log_path.read_text()


async def test_a_chat_message_pushes_the_idle_end_back(workers, http, token, connect, rds, env):
    (w,) = await workers(1, HUB_LIVE_IDLE_END="2")
    api = Api(http, w.url)
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    k = Keys.of_settings(Settings.from_env(env)).of(sid)
    viewer = await connect(w.url, token(unique("viewer")))
    assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
    first_end = await rds.zscore(k.live_idle, sid)
    assert first_end is not None
    await until_redis_ms(rds, first_end - 1000, "a second of the idle time passed")
    assert (await viewer.call("send_message", {"stream_id": sid, "message": "still here"}))["success"]
    pushed = await rds.zscore(k.live_idle, sid)
    assert pushed is not None and pushed >= first_end + 1000
    # Past the first end and a sweep or two: still live.
    await until_redis_ms(rds, first_end + 700, "the first end and a sweep passed")
    assert await status_of(api, sid) == "LIVE"
    await viewer.wait_for("stream_ended", timeout=10)
    assert await redis_ms(rds) >= pushed - 50


async def test_a_join_and_a_tip_push_the_idle_end_back(workers, http, token, connect, rds, env):
    (w,) = await workers(1, HUB_LIVE_IDLE_END="60")
    sid = (await Api(http, w.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    k = Keys.of_settings(Settings.from_env(env)).of(sid)
    started = await rds.zscore(k.live_idle, sid)
    await until_redis_ms(rds, started - 60_000 + 20, "a moment after the start")
    viewer = await connect(w.url, token(unique("viewer")))
    assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
    joined = await rds.zscore(k.live_idle, sid)
    assert joined > started
    await until_redis_ms(rds, joined - 60_000 + 20, "a moment after the join")
    assert (await viewer.call("send_tip", {"stream_id": sid, "amount": 2}))["success"]
    assert await rds.zscore(k.live_idle, sid) > joined


async def test_a_watching_streamer_keeps_the_stream_live_however_long(
    workers, http, token, connect, rds, env
):
    (w,) = await workers(1, HUB_LIVE_IDLE_END="2")
    api, streamer = Api(http, w.url), unique("streamer")
    owner = token(streamer, "streamer")
    sid = (await api.create_stream(owner))["stream_id"]
    k = Keys.of_settings(Settings.from_env(env)).of(sid)
    studio = await connect(w.url, owner)
    assert (await studio.call("join_stream", {"stream_id": sid}))["success"]
    assert await rds.zscore(k.live_idle, sid) is None  # out of the index while the streamer watches
    viewer = await connect(w.url, token(unique("viewer")))
    assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
    watching_since = await redis_ms(rds)
    await until_redis_ms(rds, watching_since + 5000, "two and a half idle periods passed")
    assert await status_of(api, sid) == "LIVE"
    assert await rds.zscore(k.live_idle, sid) is None
    assert (await studio.call("leave_stream"))["success"]
    left = await redis_ms(rds)
    back = await rds.zscore(k.live_idle, sid)
    assert back is not None and left + 2000 - 500 <= back <= left + 2000
    await viewer.wait_for("stream_ended", timeout=10)
    assert await redis_ms(rds) >= left + 2000 - 500


async def test_zero_turns_the_idle_end_off(workers, http, token, rds, env):
    """Even a stream indexed by an earlier setting is not ended; the sweep still runs (it
    drops a due viewer event of a stream with none kept)."""
    (w,) = await workers(1, HUB_LIVE_IDLE_END="0")
    api = Api(http, w.url)
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    k = Keys.of_settings(Settings.from_env(env)).of(sid)
    assert await rds.zscore(k.live_idle, sid) is None
    await rds.zadd(k.live_idle, {sid: 1})
    await rds.zadd(k.viewer_events_due, {sid: 1})

    async def swept() -> bool:
        return await rds.zscore(k.viewer_events_due, sid) is None

    await eventually(swept, 10, "a sweep ran")  # due.lua's idle part in the same call
    assert await status_of(api, sid) == "LIVE"
    assert await rds.zscore(k.live_idle, sid) == 1
    await rds.zrem(k.live_idle, sid)


async def test_two_workers_end_an_idle_stream_once(workers, http, token, rds, flusher, sql):
    w1, w2 = await workers(2, HUB_LIVE_IDLE_END="2")
    streamer = unique("streamer")
    sid = (await Api(http, w1.url).create_stream(token(streamer, "streamer")))["stream_id"]
    a, b = Client(), Client()
    try:
        await a.connect(w1.url, token(unique("a")))
        await b.connect(w2.url, token(unique("b")))
        for c in (a, b):
            assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        for c in (a, b):
            await c.wait_for("stream_ended", timeout=10)
        await flusher.drain()
        assert sql("SELECT status FROM streams WHERE stream_id=%s", sid) == [{"status": "ENDED"}]
        # Both workers' sweeps ran meanwhile (every 0.5 s); one claimed and ended the stream.
        logs = w1.log_path.read_text() + w2.log_path.read_text()
        # This stream's end only: a worker's start also gives an end to streams other tests left
        # LIVE without one (HUB_LIVE_IDLE_END=0), which these workers may end too.
        ends = [line for line in logs.splitlines() if "idle stream ended" in line and sid in line]
        assert len(ends) == 1, logs
        assert [len(c.events["stream_ended"]) for c in (a, b)] == [1, 1]
    finally:
        await a.close()
        await b.close()


# -- due.lua by itself, on a Redis of its own ---------------------------------------------


@pytest.fixture
async def private(tmp_path, settings: Settings) -> AsyncIterator[tuple[aioredis.Redis, Settings]]:
    """A redis-server of the test's own, so that its command statistics are the test's."""
    server = PrivateRedis(tmp_path / "redis", persistence=False)
    server.start()
    own = dataclasses.replace(settings, redis_url=server.url, redis_prefix="sweep:", redis_shards=1)
    client = aioredis.from_url(server.url, decode_responses=True)
    try:
        yield client, own
    finally:
        await client.aclose()
        server.kill()


# The test's own commands around the sweep's call, and the call itself.
OURS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_script|load", "cmdstat_config|resetstat")


async def test_the_sweep_reads_only_what_is_due(private):
    client, settings = private
    state = State(client, settings)
    await live_streams(client, settings, 10_000)
    k = state.keys
    assert await client.zcard(k.live_idle) == 10_000
    await client.config_resetstat()
    due = await state.due(k)
    assert due == (0, [], False)
    stats = await client.info("commandstats")
    inside = {name: v["calls"] for name, v in stats.items() if name not in OURS}
    assert inside == {"cmdstat_time": 1, "cmdstat_zrangebyscore": 2}, inside


async def test_a_kept_viewer_event_is_sent_from_the_due_index(private):
    client, settings = private
    settings = dataclasses.replace(settings, viewer_events_coalesce_above=1, viewer_events_interval=2.0)
    state = State(client, settings)
    await state.renew()  # its leases, as a worker takes them before it accepts connections
    (sid,) = await live_streams(client, settings, 1)
    k = state.keys
    pubsub = client.pubsub()
    await pubsub.subscribe(k.room(sid))
    try:
        for viewer in ("u:a", "u:b", "u:c"):  # the first two are sent, the third kept
            await state.join(sid, f"{uuid7()}|{int(time.time() * 1000)}|{viewer}", "sid", viewer, viewer, 0)
        at = await client.zscore(k.viewer_events_due, sid)
        assert at is not None
        assert await state.due(k) == (0, [], False)  # not yet due
        assert await client.zscore(k.viewer_events_due, sid) == at
        await until_redis_ms(client, at, "the kept event due")
        assert (await state.due(k)).viewer_events == 1
        assert await client.zscore(k.viewer_events_due, sid) is None
        counts: list[int] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(counts) < 3:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                counts += _viewer_counts(message["data"])
        assert counts == [1, 2, 3]
    finally:
        await pubsub.aclose()


def _viewer_counts(room_message: str) -> list[int]:
    """The viewer counts of a room message's viewer_joined events (one Engine.IO text a line
    after the skip line)."""
    events = [json.loads(text[text.index("[") :]) for text in room_message.split("\n")[1:]]
    return [data["viewer_count"] for name, data in events if name == "viewer_joined"]


async def test_a_live_stream_without_an_idle_end_is_given_one_when_a_worker_starts(private):
    """Streams live before the index existed (or before HUB_LIVE_IDLE_END was on) get their end
    from the backfill a starting worker runs; a stream whose streamer watches, and one that has
    its end already, are left as they are."""
    client, settings = private
    state = State(client, settings)
    k = state.keys
    ids = await live_streams(client, settings, 450)  # more than two chunks
    watched, kept = ids[0], ids[1]
    kept_at = await client.zscore(k.live_idle, kept)
    await client.zrem(k.live_idle, *[i for i in ids if i != kept])
    streamer = await client.hget(k.stream(watched), "streamer_id")
    await client.hset(k.viewers(watched), f"u:{streamer}", 1)  # as start_watching leaves it

    before = await redis_ms(client)
    assert await state.idle_backfill() == 448
    ends = dict(await client.zrange(k.live_idle, 0, -1, withscores=True))
    assert watched not in ends and ends[kept] == kept_at
    assert len(ends) == 449
    idle_ms = settings.live_idle_end * 1000
    assert all(before + idle_ms <= at <= before + idle_ms + 60_000 for sid, at in ends.items() if sid != kept)
    assert await state.idle_backfill() == 0  # once given, nothing more
