"""REST under /api/v1/streaming: every endpoint, its fields, its refusals."""

from __future__ import annotations

import json
import logging
import re
import time

import jwt
import pytest

from hub.storage.keys import Keys
from tests.conftest import SECRET, eventually, next_month, unique

UNKNOWN = "01a20e30-0000-7000-8000-000000000000"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STREAM_FIELDS = {
    "stream_id",
    "streamer_id",
    "streamer_name",
    "title",
    "description",
    "thumbnail_url",
    "status",
    "viewer_count",
    "peak_viewers",
    "started_at",
    "ended_at",
    "duration_seconds",
    "category",
    "is_recording",
    "recording_url",
    "created_at",
    "updated_at",
    "scheduled_at",
}
STATS_FIELDS = {
    "stream_id",
    "status",
    "viewer_count",
    "peak_viewers",
    "unique_viewers",
    "message_count",
    "tip_count",
    "tips_total",
    "platform_fees_total",
    "duration_seconds",
}


def assert_error(status: int, body: dict, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert body["success"] is False and body["error"]["code"] == code and body["error"]["message"]


async def streams_of(api, user_id: str) -> int:
    status, body = await api.request("GET", f"user/{user_id}/streams")
    assert status == 200
    return body["count"]


async def test_create_makes_a_live_stream_owned_by_the_token(api, token):
    streamer = unique("streamer")
    status, body = await api.request(
        "POST",
        "create",
        token(streamer, "streamer", name="Ana"),
        json={
            "title": "  Morning session ",
            "description": "BTC",
            "category": "crypto",
            "thumbnail_url": "https://img.example/t.png",
            "userId": "mallory",
            "streamer_id": "mallory",
        },
    )
    assert status == 201 and body["success"] is True
    s = body["stream"]
    assert set(s) == STREAM_FIELDS
    assert (s["streamer_id"], s["streamer_name"], s["title"], s["status"], s["category"]) == (
        streamer,
        "Ana",
        "Morning session",
        "LIVE",
        "crypto",
    )
    assert s["viewer_count"] == 0 and s["peak_viewers"] == 0 and s["is_recording"] is False
    assert ISO.match(s["started_at"]) and ISO.match(s["created_at"]) and s["ended_at"] is None
    status, got = await api.request("GET", s["stream_id"])
    assert status == 200 and got["stream"] == s
    status, got = await api.request("GET", s["stream_id"].upper())  # ids are case-insensitive
    assert status == 200 and got["stream"] == s


async def test_one_live_stream_per_streamer(api, token):
    who = token(unique("streamer"), "streamer")
    await api.create_stream(who)
    status, body = await api.request("POST", "create", who, json={"title": "second"})
    assert_error(status, body, 409, "conflict")


async def test_scheduled_stream_starts_later(api, token, clients, base_url):
    streamer = unique("streamer")
    who = token(streamer, "streamer")
    when = next_month()
    s = await api.create_stream(who, scheduled_at=when)
    assert s["status"] == "SCHEDULED" and s["started_at"] is None
    assert s["scheduled_at"] == when.replace("Z", ".000Z")
    live = await api.create_stream(who)  # a scheduled stream does not block going live
    status, body = await api.request("POST", f"{s['stream_id']}/start", who)
    assert_error(status, body, 409, "conflict")  # the live one is still running
    await api.request("POST", f"{live['stream_id']}/end", who)
    status, body = await api.request("POST", f"{s['stream_id']}/start", who)
    assert status == 200 and body["stream"]["status"] == "LIVE" and ISO.match(body["stream"]["started_at"])
    status, body = await api.request("POST", f"{s['stream_id']}/start", who)
    assert_error(status, body, 409, "conflict")
    c = await clients(base_url)
    assert (await c.call("join_stream", {"stream_id": s["stream_id"]}))["success"]


async def test_start_is_for_its_streamer(api, token):
    s = await api.create_stream(token(unique("streamer"), "streamer"), scheduled_at=next_month())
    status, body = await api.request("POST", f"{s['stream_id']}/start", token(unique("other"), "streamer"))
    assert_error(status, body, 403, "forbidden")
    status, body = await api.request("POST", f"{s['stream_id']}/start")
    assert_error(status, body, 401, "unauthorized")


def _tokens(token):
    now = int(time.time())
    return {
        "none": None,
        "garbage": "garbage",
        "expired": token("x", "streamer", ttl=-120),
        "wrong-key": jwt.encode({"sub": "x", "exp": now + 60, "roles": ["streamer"]}, "k" * 40, "HS256"),
        "alg-none": jwt.encode({"sub": "x", "exp": now + 60, "roles": ["streamer"]}, None, "none"),
        "no-exp": jwt.encode({"sub": "x", "roles": ["streamer"]}, SECRET, "HS256"),
    }


@pytest.mark.parametrize("kind", ["none", "garbage", "expired", "wrong-key", "alg-none", "no-exp"])
async def test_create_needs_a_valid_token(kind, api, token):
    status, body = await api.request("POST", "create", _tokens(token)[kind], json={"title": "t"})
    assert_error(status, body, 401, "unauthorized")


async def test_create_needs_the_streamer_role(api, token):
    viewer = unique("viewer")
    status, body = await api.request("POST", "create", token(viewer), json={"title": "t"})
    assert_error(status, body, 403, "forbidden")
    assert await streams_of(api, viewer) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid"),
        (b"[1, 2]", "invalid"),
        (b'"title"', "invalid"),
        (b"{}", "invalid"),
        (b'{"title": ""}', "invalid"),
        (b'{"title": "   "}', "invalid"),
        (b'{"title": "' + b"x" * 201 + b'"}', "invalid"),
        (b'{"title": 5}', "invalid"),
        (b'{"title": "ok", "description": 5}', "invalid"),
        (b'{"title": "ok", "category": "a/b"}', "invalid"),
        (b'{"title": "ok", "thumbnail_url": "javascript:alert(1)"}', "invalid"),
        (b'{"title": "ok", "thumbnail_url": "not a url"}', "invalid"),
        (b'{"title": "ok", "scheduled_at": "tomorrow"}', "invalid"),
        (b'{"title": "ok", "scheduled_at": 12}', "invalid"),
        (b'{"title": "ok", "scheduled_at": "9999-12-31T23:59:59-01:00"}', "invalid"),
        (b'{"title": "ok", "scheduled_at": "10000-01-01T00:00:00Z"}', "invalid"),
        (b'{"title": "ok", "scheduled_at": "2200-01-01T00:00:00Z"}', "invalid"),
    ],
)
async def test_bad_create_bodies_are_refused_and_change_nothing(body, code, api, token):
    streamer = unique("streamer")
    status, got = await api.request(
        "POST", "create", token(streamer, "streamer"), data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(status, got, 400, code)
    assert await streams_of(api, streamer) == 0
    status, _ = await api.request("GET", "live")
    assert status == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"title": 1e309}', id="infinite-number"),
        pytest.param(b'{"title": NaN}', id="NaN"),
        pytest.param(b'{"title": "\\ud800 live"}', id="lone-surrogate"),
        pytest.param(
            b'{"title": "ok", "description": ' + b"[" * 500 + b"]" * 500 + b"}", id="nested-500-deep"
        ),
        pytest.param(
            b'{"title": "ok", "description": ' + b"[" * 2000 + b"]" * 2000 + b"}", id="nested-2000-deep"
        ),
        pytest.param(b'{"title": "\xff\xfe"}', id="not-utf8"),
    ],
)
async def test_bodies_the_hub_cannot_read_are_invalid_and_log_nothing(
    body, api, token, live_stream_id, caplog
):
    """400 invalid, on creation and on a moderation action alike, and no log line at all."""
    caplog.set_level(logging.INFO)
    streamer = unique("streamer")
    status, got = await api.request(
        "POST", "create", token(streamer, "streamer"), data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(status, got, 400, "invalid")
    stream_id, owner = live_stream_id
    status, got = await api.request(
        "POST", f"{stream_id}/bans", owner, data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(status, got, 400, "invalid")
    assert [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"] == []
    assert await streams_of(api, streamer) == 0


@pytest.fixture
async def live_stream_id(api, token) -> tuple[str, str]:
    owner = token(unique("streamer"), "streamer")
    return (await api.create_stream(owner))["stream_id"], owner


async def test_oversized_body_is_payload_too_large(api, token):
    streamer = unique("streamer")
    big = b'{"title": "x", "description": "' + b"y" * 20_000 + b'"}'
    status, body = await api.request(
        "POST", "create", token(streamer, "streamer"), data=big, headers={"Content-Type": "application/json"}
    )
    assert_error(status, body, 413, "payload_too_large")
    assert await streams_of(api, streamer) == 0


@pytest.mark.parametrize(
    "path",
    [UNKNOWN, f"{UNKNOWN}/stats", f"{UNKNOWN}/chat", "not-a-uuid", "not-a-uuid/stats", "no/such/route"],
)
async def test_unknown_streams_are_not_found(path, api):
    status, body = await api.request("GET", path)
    assert_error(status, body, 404, "not_found")


@pytest.mark.parametrize("action", ["end", "start"])
async def test_actions_on_unknown_streams_are_not_found(action, api, token):
    status, body = await api.request("POST", f"{UNKNOWN}/{action}", token(unique("s"), "streamer"))
    assert_error(status, body, 404, "not_found")


# Digits other than ASCII's, Python's underscores, a plus sign, spaces: no whole number.
NOT_ASCII_DIGITS = ["１０", "1_0", "+5", "٥", "%205", "5%20"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=abc",
        "offset=-1",
        "offset=x",
        *(f"limit={n}" for n in NOT_ASCII_DIGITS),
        *(f"offset={n}" for n in NOT_ASCII_DIGITS),
    ],
)
async def test_bad_live_queries_are_invalid(query, api):
    status, body = await api.request("GET", f"live?{query}")
    assert_error(status, body, 400, "invalid")


async def test_live_lists_most_viewers_first_with_filters(api, token, clients, base_url):
    category = unique("cat")
    made = [
        await api.create_stream(token(unique("streamer"), "streamer"), category=category) for _ in range(3)
    ]
    for stream, viewers in zip(made, (1, 3, 2), strict=True):
        for _ in range(viewers):
            c = await clients(base_url)
            await c.call("join_stream", {"stream_id": stream["stream_id"]})
    status, body = await api.request("GET", f"live?category={category}")
    assert status == 200 and body["count"] == 3
    assert [s["viewer_count"] for s in body["streams"]] == [3, 2, 1]
    assert [s["stream_id"] for s in body["streams"]] == [
        made[1]["stream_id"],
        made[2]["stream_id"],
        made[0]["stream_id"],
    ]
    status, body = await api.request("GET", f"live?category={category}&limit=1&offset=1")
    assert [s["stream_id"] for s in body["streams"]] == [made[2]["stream_id"]] and body["count"] == 1
    await api.request("POST", f"{made[1]['stream_id']}/end", token(made[1]["streamer_id"], "streamer"))
    status, body = await api.request("GET", f"live?category={category}")
    assert [s["viewer_count"] for s in body["streams"]] == [2, 1]
    status, body = await api.request("GET", "live?limit=100")
    assert made[1]["stream_id"] not in {s["stream_id"] for s in body["streams"]}


async def test_end_returns_final_figures_and_is_for_its_streamer_or_an_admin(api, token, clients, base_url):
    streamer = unique("streamer")
    s = await api.create_stream(token(streamer, "streamer"))
    sid = s["stream_id"]
    c = await clients(base_url, token(unique("fan")))
    await c.call("join_stream", {"stream_id": sid})
    assert (await c.call("send_tip", {"stream_id": sid, "amount": "1.30"}))["success"]
    status, body = await api.request("POST", f"{sid}/end", token(unique("other"), "streamer"))
    assert_error(status, body, 403, "forbidden")
    status, body = await api.request("POST", f"{sid}/end")
    assert_error(status, body, 401, "unauthorized")
    status, body = await api.request("POST", f"{sid}/end", token(unique("boss"), "admin"))
    assert status == 200
    final = body["stream"]
    assert final["status"] == "ENDED" and ISO.match(final["ended_at"]) and final["duration_seconds"] >= 0
    assert (final["peak_viewers"], final["tip_count"], final["tips_total"], final["platform_fees_total"]) == (
        1,
        1,
        1.3,
        0.07,
    )
    await c.wait_for("stream_ended")
    status, body = await api.request("POST", f"{sid}/end", token(streamer, "streamer"))
    assert_error(status, body, 409, "conflict")


async def test_stats_are_exact(api, token, clients, base_url):
    streamer = unique("streamer")
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    fans = []
    for amount in ("1.10", "1.20", "2.50"):
        c = await clients(base_url, token(unique("fan")))
        await c.call("join_stream", {"stream_id": sid})
        assert (await c.call("send_tip", {"stream_id": sid, "amount": amount}))["success"]
        fans.append(c)
    await fans[0].call("send_message", {"stream_id": sid, "message": "hi"})
    anon = await clients(base_url)
    await anon.call("join_stream", {"stream_id": sid})
    status, body = await api.request("GET", f"{sid}/stats")
    assert status == 200 and set(body["stats"]) == STATS_FIELDS
    st = body["stats"]
    # 1.10 -> 0.055 -> 0.06; 1.20 -> 0.06; 2.50 -> 0.125 -> 0.13
    assert (st["tips_total"], st["platform_fees_total"], st["tip_count"], st["message_count"]) == (
        4.8,
        0.25,
        3,
        4,
    )
    assert (st["viewer_count"], st["peak_viewers"], st["unique_viewers"], st["status"]) == (4, 4, 4, "LIVE")
    assert st["duration_seconds"] >= 0


async def test_chat_pages_newest_older_than_before_oldest_first(api, token, clients, base_url):
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    sent = []
    for n in range(3):
        c = await clients(base_url, token(unique("chatter")))
        await c.call("join_stream", {"stream_id": sid})
        for i in range(10):
            sent.append((await c.call("send_message", {"stream_id": sid, "message": f"{n}-{i}"}))["message"])
    ids = sorted(m["message_id"] for m in sent)
    status, body = await api.request("GET", f"{sid}/chat")
    assert status == 200 and body["count"] == 30
    assert [m["message_id"] for m in body["messages"]] == ids
    status, body = await api.request("GET", f"{sid}/chat?limit=5&before={ids[20]}")
    assert [m["message_id"] for m in body["messages"]] == ids[15:20]
    status, body = await api.request("GET", f"{sid}/chat?limit=5&before={ids[2]}")
    assert [m["message_id"] for m in body["messages"]] == ids[:2]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=x",
        "before=nope",
        "before=123",
        *(f"limit={n}" for n in NOT_ASCII_DIGITS),
    ],
)
async def test_bad_chat_queries_are_invalid(query, api, token):
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    status, body = await api.request("GET", f"{sid}/chat?{query}")
    assert_error(status, body, 400, "invalid")


async def test_history_reads_mysql_past_the_recent_buffer(
    api, token, clients, base_url, flusher, rds, settings
):
    streamer = unique("streamer")
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    sent = []
    for n in range(12):  # 240 messages: more than the 200 the recent buffer holds
        c = await clients(base_url, token(unique("chatter")))
        await c.call("join_stream", {"stream_id": sid})
        for i in range(20):
            sent.append((await c.call("send_message", {"stream_id": sid, "message": f"{n}-{i}"}))["message"])
    ids = sorted(m["message_id"] for m in sent)
    keys = Keys.of_settings(settings).of(sid)
    assert 200 <= await rds.zcard(keys.recent(sid)) <= 220  # trimmed once a tenth over its size
    await flusher.drain()
    status, body = await api.request("GET", f"{sid}/chat?limit=200&before={ids[100]}")
    assert [m["message_id"] for m in body["messages"]] == ids[:100]
    status, body = await api.request("GET", f"{sid}/chat?limit=30&before={ids[50]}")
    assert [m["message_id"] for m in body["messages"]] == ids[20:50]
    # an ended stream whose live state expired: MySQL alone answers the same pages
    await api.request("POST", f"{sid}/end", token(streamer, "streamer"))
    await flusher.drain()
    await rds.delete(keys.stream(sid), keys.recent(sid), keys.unique(sid))
    status, body = await api.request("GET", f"{sid}/chat?limit=200")
    assert [m["message_id"] for m in body["messages"]] == ids[-200:]
    status, body = await api.request("GET", f"{sid}/chat?limit=30&before={ids[50]}")
    assert [m["message_id"] for m in body["messages"]] == ids[20:50]
    assert body["messages"][0] == next(m for m in sent if m["message_id"] == ids[20])


async def test_ended_stream_is_read_from_mysql_once_redis_forgets_it(api, token, flusher, rds, settings):
    streamer = unique("streamer")
    who = token(streamer, "streamer")
    sid = (await api.create_stream(who, title="Archived"))["stream_id"]
    status, ended = await api.request("POST", f"{sid}/end", who)
    _, stats_live = await api.request("GET", f"{sid}/stats")
    await flusher.drain()
    keys = Keys.of_settings(settings).of(sid)
    await rds.delete(keys.stream(sid), keys.recent(sid), keys.unique(sid))
    status, body = await api.request("GET", sid)
    assert status == 200
    expected = {k: v for k, v in ended["stream"].items() if k in STREAM_FIELDS}
    assert body["stream"] == expected
    status, body = await api.request("GET", f"{sid}/stats")
    assert body["stats"] == stats_live["stats"]
    status, body = await api.request("GET", f"user/{streamer}/streams")
    assert [s["stream_id"] for s in body["streams"]] == [sid]
    status, body = await api.request("POST", f"{sid}/end", who)
    assert_error(status, body, 409, "conflict")
    status, body = await api.request("POST", f"{sid}/end", token(unique("other"), "streamer"))
    assert_error(status, body, 403, "forbidden")  # someone else's, even once only MySQL has it


async def test_user_streams_newest_first_with_status_filter(api, token, flusher):
    streamer = unique("streamer")
    who = token(streamer, "streamer")
    first = await api.create_stream(who, title="one")
    await api.request("POST", f"{first['stream_id']}/end", who)
    await flusher.drain()
    second = await api.create_stream(who, title="two")
    status, body = await api.request("GET", f"user/{streamer}/streams")
    assert status == 200 and body["count"] == 2
    assert [s["title"] for s in body["streams"]] == ["two", "one"]
    status, body = await api.request("GET", f"user/{streamer}/streams?status=ended")
    assert [s["stream_id"] for s in body["streams"]] == [first["stream_id"]]
    status, body = await api.request("GET", f"user/{streamer}/streams?status=LIVE")
    assert [s["stream_id"] for s in body["streams"]] == [second["stream_id"]]
    status, body = await api.request("GET", f"user/{streamer}/streams?status=FOO")
    assert_error(status, body, 400, "invalid")
    status, body = await api.request("GET", f"user/{unique('nobody')}/streams")
    assert status == 200 and body == {"success": True, "count": 0, "streams": []}


async def test_health_and_readiness(api):
    status, body = await api.request("GET", "/healthz")
    assert status == 200 and body["success"] is True
    seen: dict = {}

    async def ready() -> bool:  # the pub/sub listener subscribes just after start
        seen["status"], seen["body"] = await api.request("GET", "/readyz")
        return seen["status"] == 200

    await eventually(ready, what="readiness")
    body = seen["body"]
    assert body["checks"] == {"redis": "up", "mysql": "up", "pubsub": "up"}
    assert set(body["outbox"]) == {"entries", "pending", "oldest_age_seconds"}
    status, body = await api.request("GET", "/metrics")
    assert status == 200 and "hub_connections" in body
    for counter in (
        "hub_deliveries_total",
        "hub_socket_writes_total",
        "hub_cut_off_total",
        "hub_room_messages_total",
    ):
        assert counter in body, counter


async def test_wrong_method_is_refused_as_json(api):
    status, body = await api.request("DELETE", "live")
    assert status == 405 and body["error"]["code"] == "invalid"


async def test_chat_pages_from_the_buffer_keep_amounts_as_written(api, token, clients, base_url, http):
    """The recent buffer's JSON goes out as it was made: 1.30, not 1.3."""
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    fan = await clients(base_url, token(unique("fan")))
    await fan.call("join_stream", {"stream_id": sid})
    assert (await fan.call("send_tip", {"stream_id": sid, "amount": "1.30"}))["success"]
    assert (await fan.call("send_message", {"stream_id": sid, "message": "after the tip"}))["success"]
    async with http.get(f"{base_url}/api/v1/streaming/{sid}/chat") as resp:
        text = await resp.text()
    assert '"tip_amount":1.30' in text
    body = json.loads(text)
    assert [m["message_type"] for m in body["messages"]] == ["TIP", "TEXT"] and body["count"] == 2
