"""Streams from creation to expiry: scheduled streams can be cancelled and expire unstarted,
creating is limited per streamer, and every Redis key the hub writes expires or is bounded."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from hub.settings import Settings
from hub.storage.keys import Keys
from hub.storage.mysql import Writer, create_pool
from tests.conftest import Api, next_month, unique
from workers.flusher import Flusher


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_scheduled_stream_is_cancelled_by_its_streamer_only(api, token, flusher, sql, rds, settings):
    owner = token(unique("streamer"), "streamer")
    sid = (await api.create_stream(owner, scheduled_at=next_month()))["stream_id"]
    status, body = await api.request("POST", f"{sid}/cancel", token(unique("other"), "streamer"))
    assert status == 403, body
    status, body = await api.request("POST", f"{sid}/cancel", owner)
    assert status == 200 and body["stream"]["status"] == "ENDED", body
    assert body["stream"]["started_at"] is None and body["stream"]["duration_seconds"] == 0
    for action in ("start", "cancel"):
        status, body = await api.request("POST", f"{sid}/{action}", owner)
        assert status == 409 and body["error"]["code"] == "conflict", (action, body)
    keys = Keys.of_settings(settings).of(sid)
    assert 0 < await rds.ttl(keys.stream(sid)) <= settings.ended_retention
    await flusher.drain()
    assert sql("SELECT status FROM streams WHERE stream_id = %s", sid) == [{"status": "ENDED"}]
    live = (await api.create_stream(owner))["stream_id"]
    status, body = await api.request("POST", f"{live}/cancel", owner)
    assert status == 409 and body["error"]["code"] == "conflict", body


async def test_a_scheduled_stream_expires_unstarted_and_lives_on_once_started(api, token, rds, settings):
    user = unique("streamer")
    owner = token(user, "streamer")
    sid = (await api.create_stream(owner, scheduled_at=in_hours(2)))["stream_id"]
    k = Keys.of_settings(settings).of(sid)
    expected = 2 * 3600 + settings.scheduled_grace
    assert expected - 120 <= await rds.ttl(k.stream(sid)) <= expected
    assert await rds.zscore(k.streamer_scheduled(user), sid) is not None
    assert await rds.ttl(k.streamer_scheduled(user)) > 0
    status, body = await api.request("POST", f"{sid}/start", owner)
    assert status == 200 and body["stream"]["status"] == "LIVE", body
    assert await rds.ttl(k.stream(sid)) == -1  # live: it ends when its streamer ends it
    assert await rds.zscore(k.streamer_scheduled(user), sid) is None


async def test_a_streamer_holds_few_scheduled_streams_and_creates_at_a_bounded_rate(workers, http, token):
    (w,) = await workers(1, HUB_SCHEDULED_MAX="3", HUB_CREATE_RATE="5", HUB_CREATE_PERIOD="3600")
    api = Api(http, w.url)
    owner = token(unique("streamer"), "streamer")
    held = [(await api.create_stream(owner, scheduled_at=next_month()))["stream_id"] for _ in range(3)]
    status, body = await api.request(
        "POST", "create", owner, json={"title": "4th", "scheduled_at": next_month()}
    )
    assert status == 409 and "scheduled" in body["error"]["message"], body
    assert (await api.request("POST", f"{held[0]}/cancel", owner))[0] == 200
    (await api.create_stream(owner, scheduled_at=next_month()))  # room again: the 5th create
    status, body = await api.request("POST", "create", owner, json={"title": "6th"})
    assert status == 429 and body["error"]["code"] == "rate_limited", body
    assert 3500 <= body["error"]["retry_after"] <= 3600


async def test_listing_a_streamers_streams_reads_only_what_it_returns(workers, http, token, rds, settings):
    (w,) = await workers(1, HUB_CREATE_RATE="1000")
    api = Api(http, w.url)
    user = unique("streamer")
    owner = token(user, "streamer")
    made = []
    for i in range(105):
        stream = await api.create_stream(owner, title=f"s{i}")
        made.append(stream["stream_id"])
        assert (await api.request("POST", f"{stream['stream_id']}/end", owner))[0] == 200
    live = (await api.create_stream(owner, title="now"))["stream_id"]
    k = Keys.of_settings(settings).of(user)
    assert await rds.zcard(k.streamer_streams(user)) <= 100
    assert 0 < await rds.ttl(k.streamer_streams(user)) <= settings.ended_retention
    status, body = await api.request("GET", f"user/{user}/streams?limit=1")
    assert [s["stream_id"] for s in body["streams"]] == [live]
    status, body = await api.request("GET", f"user/{user}/streams?limit=3&status=ENDED")
    assert [s["stream_id"] for s in body["streams"]] == made[::-1][:3]


BOUNDED = (  # one per shard
    "epoch",
    "outbox",
    "outbox:dead",
    "workers",
    "live",
    "leases",
    "lease:seq",
    "live:idle",
    "viewer_events:due",
    "ended:recent",
)
# Bounded by what holds them (docs/redis-keys.md): a lease's registry, a user's or an address's
# open connections; each member goes with its release or its lease's sweep.
HELD = re.compile(r"lease:\d+:held|user:.*:conns|addr:.*:conns")


async def test_every_key_expires_or_is_bounded(workers, connect, http, env, token):
    """Create, schedule, cancel, watch, chat, tip, moderate, end and abandon streams under a
    prefix of their own, flush, then read every key: each has a TTL, or is one of the bounded
    ones (docs/redis-keys.md), or belongs to a stream still LIVE."""
    prefix = f"{env['HUB_REDIS_PREFIX']}audit-{unique('k')}:"
    (w,) = await workers(1, HUB_REDIS_PREFIX=prefix)
    api = Api(http, w.url)
    streamer, other = unique("streamer"), unique("streamer")
    owner, owner2 = token(streamer, "streamer"), token(other, "streamer")
    ended = (await api.create_stream(owner))["stream_id"]
    abandoned = (await api.create_stream(owner2, category="fx"))["stream_id"]  # left LIVE
    (await api.create_stream(owner, scheduled_at=next_month()))  # left SCHEDULED
    cancelled = (await api.create_stream(owner, scheduled_at=next_month()))["stream_id"]
    assert (await api.request("POST", f"{cancelled}/cancel", owner))[0] == 200
    viewer_id = unique("viewer")
    viewer = await connect(w.url, token(viewer_id))
    for sid in (abandoned, ended):
        assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
        sent = await viewer.call("send_message", {"stream_id": sid, "message": "hi"})
        assert (await viewer.call("send_tip", {"stream_id": sid, "amount": 2, "client_tip_id": "t"}))[
            "success"
        ]
        owner_of = owner if sid == ended else owner2
        for path, body in (
            (f"{sid}/slow-mode", {"seconds": 5}),
            (f"{sid}/moderators", {"user_id": "m"}),
            (f"{sid}/timeouts", {"user_id": "x", "seconds": 60}),
        ):
            method = "PUT" if "slow" in path else "POST"
            assert (await api.request(method, path, owner_of, json=body))[0] == 200
        assert (await api.request("DELETE", f"{sid}/chat/{sent['message']['message_id']}", owner_of))[
            0
        ] == 200
        assert (await viewer.call("send_message", {"stream_id": sid, "message": "again"}))["success"]
    assert (await api.request("POST", f"{ended}/end", owner))[0] == 200
    settings = Settings.from_env({**env, "HUB_REDIS_PREFIX": prefix})
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    pool = await create_pool(settings.mysql, maxsize=1)
    try:
        flusher = Flusher(settings, client, Writer(pool), consumer=unique("audit"))
        await flusher.ensure_group()
        await flusher.drain()
        keys = Keys.of_settings(settings)
        live_ok = {abandoned}
        unbounded = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            if await client.pttl(key) != -1:  # expires, or already gone (-2: a lock released since the scan)
                continue
            name = key[len(prefix) :]
            name = name[name.index("}:") + 2 :] if name.startswith("{") else name
            if name in BOUNDED or name.startswith("live:cat:") or HELD.fullmatch(name):
                continue
            if name.startswith("stream:") and name.split(":")[1] in live_ok:
                continue
            if name == f"user:{other}:live":
                continue
            unbounded.append(name)
        assert unbounded == [], unbounded
        assert await client.exists(keys.of(ended).stream(ended)) == 1  # kept a while, then expires
    finally:
        pool.close()
        await pool.wait_closed()
        await client.aclose()
