"""Moderation and alerts (PROTOCOL §8): every action by each role, refusals, enforcement on
another worker, what viewers see, and what reaches MySQL."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import Api, Client, eventually, unique

UNKNOWN = "01a20e30-0000-7000-8000-000000000000"

# Each action with a payload that names a target (filled in per test).
ACTIONS = {
    "delete_message": lambda t: {"message_id": t["message_id"]},
    "timeout_user": lambda t: {"user_id": t["user"], "seconds": 60, "reason": "calm down"},
    "ban_user": lambda t: {"user_id": t["user"], "reason": "spam"},
    "unban_user": lambda t: {"user_id": t["user"]},
    "clear_chat": lambda t: {},
    "set_slow_mode": lambda t: {"seconds": 10},
    "add_moderator": lambda t: {"user_id": t["user"]},
    "remove_moderator": lambda t: {"user_id": t["user"]},
}
OWNER_ONLY = {"add_moderator", "remove_moderator"}


class Stream:
    """A live stream with its streamer, a moderator and a plain viewer, all joined on sockets."""

    def __init__(self, sid: str, streamer: str, tokens: dict[str, str]) -> None:
        self.id = sid
        self.streamer = streamer
        self.tokens = tokens
        self.sockets: dict[str, Client] = {}
        self.users: dict[str, str] = {}


@pytest.fixture
async def live(api, clients, base_url, token):
    streamer, mod, viewer, admin = unique("streamer"), unique("mod"), unique("viewer"), unique("admin")
    tokens = {
        "streamer": token(streamer, "streamer", name="Streamer"),
        "moderator": token(mod, name="Mod"),
        "viewer": token(viewer, name="Viewer"),
        "admin": token(admin, "admin", name="Admin"),
    }
    s = Stream((await api.create_stream(tokens["streamer"]))["stream_id"], streamer, tokens)
    s.users = {"streamer": streamer, "moderator": mod, "viewer": viewer, "admin": admin}
    for role, tok in tokens.items():
        c = await clients(base_url, tok)
        if role != "admin":  # an admin moderates without watching
            assert (await c.call("join_stream", {"stream_id": s.id}))["success"]
        s.sockets[role] = c
    ack = await s.sockets["streamer"].call("add_moderator", {"stream_id": s.id, "user_id": mod})
    assert ack["success"] and ack["moderators"] == [mod], ack
    return s


async def say(c: Client, sid: str, text: str) -> str:
    ack = await c.call("send_message", {"stream_id": sid, "message": text})
    assert ack["success"], ack
    return ack["message"]["message_id"]


async def chat_ids(api: Api, sid: str, **query) -> list[str]:
    status, body = await api.request("GET", f"{sid}/chat", params=query)
    assert status == 200, body
    return [m["message_id"] for m in body["messages"]]


async def target_for(live: Stream, action: str, clients, base_url, token) -> dict[str, str]:
    """A fresh target user (joined, with one message) so each actor acts on its own."""
    user = unique("target")
    c = await clients(base_url, token(user, name="Target"))
    assert (await c.call("join_stream", {"stream_id": live.id}))["success"]
    message_id = await say(c, live.id, "target's message")
    if action == "unban_user":
        assert (
            await live.sockets["streamer"].call(
                "timeout_user", {"stream_id": live.id, "user_id": user, "seconds": 60}
            )
        )["success"]
    if action == "remove_moderator":
        assert (
            await live.sockets["streamer"].call("add_moderator", {"stream_id": live.id, "user_id": user})
        )["success"]
    return {"user": user, "message_id": message_id}


# -- who may do what ------------------------------------------------------------------


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("role", ["streamer", "moderator", "admin", "viewer"])
async def test_each_action_by_each_role(action, role, live, clients, base_url, token):
    target = await target_for(live, action, clients, base_url, token)
    viewer = live.sockets["viewer"]
    await viewer.wait_for(
        "moderators_changed", lambda d: len(d["moderators"]) == 1 + (action == "remove_moderator")
    )
    seen = len(viewer.events["moderators_changed"])
    ack = await live.sockets[role].call(action, {"stream_id": live.id, **ACTIONS[action](target)})
    allowed = role in ("streamer", "admin") or (role == "moderator" and action not in OWNER_ONLY)
    if not allowed:
        assert ack == {"success": False, "error": {"code": "forbidden", "message": ack["error"]["message"]}}
        error = await live.sockets[role].wait_for("error", lambda e: e["event"] == action)
        assert error["code"] == "forbidden"
        return
    assert ack["success"], ack
    action_record = ack["action"]
    assert action_record["action"] == action and action_record["by"] == live.users[role]
    assert action_record["stream_id"] == live.id and action_record["created_at"].endswith("Z")
    # Everyone in the room hears of it, the plain viewer included.
    event = {
        "delete_message": "message_deleted",
        "timeout_user": "user_timed_out",
        "ban_user": "user_banned",
        "unban_user": "user_unbanned",
        "clear_chat": "chat_cleared",
        "set_slow_mode": "slow_mode",
        "add_moderator": "moderators_changed",
        "remove_moderator": "moderators_changed",
    }[action]
    if event == "moderators_changed":
        await eventually(lambda: _true(len(viewer.events[event]) > seen), what="moderators_changed")
        heard = viewer.events[event][seen]
        expected = [live.users["moderator"]] + ([target["user"]] if action == "add_moderator" else [])
        assert heard == {"stream_id": live.id, "moderators": sorted(expected)}
    else:
        await live.sockets["viewer"].wait_for(
            event, lambda d: d["stream_id"] == live.id and d["by"] == live.users[role]
        )


async def test_anonymous_sockets_and_missing_tokens_cannot_moderate(live, clients, base_url, api):
    anonymous = await clients(base_url)
    ack = await anonymous.call("ban_user", {"stream_id": live.id, "user_id": live.users["viewer"]})
    assert ack["error"]["code"] == "unauthorized"
    status, body = await api.request("POST", f"{live.id}/bans", json={"user_id": live.users["viewer"]})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.request("GET", f"{live.id}/moderation")
    assert status == 401


# -- deleting ---------------------------------------------------------------------------


async def test_a_deleted_message_is_gone_everywhere_and_marked_in_mysql(
    live, api, clients, base_url, token, flusher, sql
):
    viewer = live.sockets["viewer"]
    keep = await say(viewer, live.id, "keep me")
    gone = await say(viewer, live.id, "delete me")
    await flusher.drain()  # one of them in MySQL already; the deletion reaches it later
    ack = await live.sockets["moderator"].call("delete_message", {"stream_id": live.id, "message_id": gone})
    assert ack["success"], ack
    deleted = await viewer.wait_for("message_deleted", lambda d: d["message_id"] == gone)
    assert deleted == {"stream_id": live.id, "message_id": gone, "by": live.users["moderator"]}

    ids = await chat_ids(api, live.id)
    assert keep in ids and gone not in ids
    late = await clients(base_url, token(unique("late")))
    joined = await late.call("join_stream", {"stream_id": live.id})
    recent = [m["message_id"] for m in joined["recent_messages"]]
    assert keep in recent and gone not in recent

    again = await live.sockets["streamer"].call("delete_message", {"stream_id": live.id, "message_id": gone})
    assert again["error"]["code"] == "not_found"
    await flusher.drain()
    (row,) = sql("SELECT message, deleted_at, deleted_by FROM chat_messages WHERE message_id=%s", gone)
    assert row["message"] == "delete me" and row["deleted_at"] is not None
    assert row["deleted_by"] == live.users["moderator"]
    assert sql("SELECT deleted_at FROM chat_messages WHERE message_id=%s", keep)[0]["deleted_at"] is None


async def test_deleting_a_message_only_mysql_still_holds(workers, http, token, flusher, sql):
    (w,) = await workers(1, HUB_RECENT_SIZE="50", HUB_CHAT_RATE="1000")
    api = Api(http, w.url)
    streamer, viewer = unique("streamer"), unique("viewer")
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    c = Client()
    await c.connect(w.url, token(viewer))
    try:
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        first = await say(c, sid, "the oldest")
        for i in range(55):
            await say(c, sid, f"message {i}")
        await flusher.drain()
        assert first not in await chat_ids(api, sid, limit=50)  # beyond the recent buffer
        assert first in await chat_ids(api, sid, limit=200)  # but in MySQL
        status, body = await api.request("DELETE", f"{sid}/chat/{first}", token(streamer, "streamer"))
        assert status == 200 and body["action"]["message_id"] == first, body
        assert first not in await chat_ids(api, sid, limit=200)
        status, body = await api.request("DELETE", f"{sid}/chat/{UNKNOWN}", token(streamer, "streamer"))
        assert status == 404 and body["error"]["code"] == "not_found"
        await flusher.drain()
        assert (
            sql("SELECT deleted_by FROM chat_messages WHERE message_id=%s", first)[0]["deleted_by"]
            == streamer
        )
    finally:
        await c.close()


async def test_a_message_of_another_stream_cannot_be_deleted_here(live, api, token, clients, base_url):
    other_streamer = unique("streamer")
    other = (await api.create_stream(token(other_streamer, "streamer")))["stream_id"]
    c = await clients(base_url, token(unique("v")))
    assert (await c.call("join_stream", {"stream_id": other}))["success"]
    foreign = await say(c, other, "elsewhere")
    ack = await live.sockets["streamer"].call("delete_message", {"stream_id": live.id, "message_id": foreign})
    assert ack["error"]["code"] == "not_found"
    assert foreign in await chat_ids(api, other)


# -- timeouts and bans ------------------------------------------------------------------


async def test_a_timed_out_user_watches_but_cannot_chat_or_tip_until_lifted(live, api):
    viewer, uid = live.sockets["viewer"], live.users["viewer"]
    ack = await live.sockets["moderator"].call(
        "timeout_user", {"stream_id": live.id, "user_id": uid, "seconds": 600, "reason": "cool off"}
    )
    assert ack["success"] and ack["action"]["seconds"] == 600 and ack["action"]["reason"] == "cool off"
    heard = await viewer.wait_for("user_timed_out", lambda d: d["user_id"] == uid)
    assert heard["until"] == ack["action"]["until"] and heard["by"] == live.users["moderator"]

    refused = await viewer.call("send_message", {"stream_id": live.id, "message": "let me talk"})
    assert refused["error"]["code"] == "timed_out" and 590 <= refused["error"]["retry_after"] <= 600
    refused = await viewer.call("send_tip", {"stream_id": live.id, "amount": 5})
    assert refused["error"]["code"] == "timed_out"
    # Still watching: the room's messages reach the timed-out viewer.
    mid = await say(live.sockets["streamer"], live.id, "hello room")
    await viewer.wait_for("chat_message", lambda m: m["message_id"] == mid)

    lifted = await live.sockets["streamer"].call("unban_user", {"stream_id": live.id, "user_id": uid})
    assert lifted["success"]
    await viewer.wait_for("user_unbanned", lambda d: d["user_id"] == uid)
    assert (await viewer.call("send_message", {"stream_id": live.id, "message": "thanks"}))["success"]
    again = await live.sockets["streamer"].call("unban_user", {"stream_id": live.id, "user_id": uid})
    assert again["error"]["code"] == "conflict"


async def test_a_banned_user_leaves_the_room_on_every_worker_and_cannot_rejoin(workers, http, token):
    w1, w2 = await workers(2)
    streamer, mod, bad, other = unique("streamer"), unique("mod"), unique("bad"), unique("other")
    api = Api(http, w1.url)
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    made: list[Client] = []

    async def joined(url: str, uid: str) -> Client:
        c = Client()
        await c.connect(url, token(uid, name=uid))
        made.append(c)
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        return c

    try:
        watcher = await joined(w1.url, other)
        bad_tab1, bad_tab2 = await joined(w1.url, bad), await joined(w2.url, bad)
        moderator = Client()
        await moderator.connect(w2.url, token(mod))
        made.append(moderator)
        status, body = await Api(http, w2.url).request(
            "POST", f"{sid}/moderators", token(streamer, "streamer"), json={"user_id": mod}
        )
        assert status == 200 and body["moderators"] == [mod], body
        await eventually(lambda: _count(api, sid, 2), what="two viewers")

        # A timeout given on worker 2 holds on worker 1, and so does slow mode; both lift.
        assert (await moderator.call("timeout_user", {"stream_id": sid, "user_id": other, "seconds": 60}))[
            "success"
        ]
        refused = await watcher.call("send_message", {"stream_id": sid, "message": "hi"})
        assert refused["error"]["code"] == "timed_out"
        assert (await moderator.call("unban_user", {"stream_id": sid, "user_id": other}))["success"]
        assert (await moderator.call("set_slow_mode", {"stream_id": sid, "seconds": 60}))["success"]
        await say(watcher, sid, "one")
        refused = await watcher.call("send_message", {"stream_id": sid, "message": "two"})
        assert refused["error"]["code"] == "slow_mode"
        assert (await moderator.call("set_slow_mode", {"stream_id": sid, "seconds": 0}))["success"]

        # The moderator, on worker 2 and not watching, bans; both of the user's tabs are out.
        ack = await moderator.call("ban_user", {"stream_id": sid, "user_id": bad, "reason": "spam"})
        assert ack["success"], ack
        for tab in (bad_tab1, bad_tab2):
            assert await tab.wait_for("banned") == {"stream_id": sid, "reason": "spam"}
        assert (await watcher.wait_for("user_banned")) == {"stream_id": sid, "user_id": bad, "by": mod}
        left = await watcher.wait_for("viewer_left", lambda d: d["user_id"] == bad)
        assert left["viewer_count"] == 1
        await eventually(lambda: _count(api, sid, 1), what="one viewer")

        # No further room messages reach the banned user's sockets.
        mid = await say(watcher, sid, "after the ban")
        await watcher.wait_for("chat_message", lambda m: m["message_id"] == mid)
        closing = await say(watcher, sid, "closing marker")
        await watcher.wait_for("chat_message", lambda m: m["message_id"] == closing)
        for tab in (bad_tab1, bad_tab2):
            assert not [m for m in tab.events["chat_message"] if m["message_id"] in (mid, closing)]
            refused = await tab.call("join_stream", {"stream_id": sid})
            assert refused["error"]["code"] == "banned"
            refused = await tab.call("send_message", {"stream_id": sid, "message": "hello?"})
            assert refused["error"]["code"] == "not_joined"
        assert not [
            e for e in watcher.events["viewer_joined"] if e["user_id"] == bad and e["viewer_count"] > 2
        ]

        status, body = await Api(http, w2.url).request(
            "DELETE", f"{sid}/bans/{bad}", token(streamer, "streamer")
        )
        assert status == 200 and body["action"]["action"] == "unban_user"
        assert (await bad_tab2.call("join_stream", {"stream_id": sid}))["success"]
    finally:
        for c in made:
            await c.close()


async def _true(value: bool) -> bool:
    return value


async def _count(api: Api, sid: str, n: int) -> bool:
    status, body = await api.request("GET", sid)
    return status == 200 and body["stream"]["viewer_count"] == n


async def test_targets_that_are_refused(live, clients, base_url, token):
    mod, streamer = live.sockets["moderator"], live.sockets["streamer"]
    cases = [
        (mod, "ban_user", {"user_id": live.streamer}, "forbidden"),  # the streamer
        (mod, "timeout_user", {"user_id": live.users["moderator"], "seconds": 5}, "forbidden"),  # self
        (streamer, "ban_user", {"user_id": live.users["moderator"]}, "forbidden"),  # a moderator
        (streamer, "add_moderator", {"user_id": live.streamer}, "forbidden"),
        (streamer, "unban_user", {"user_id": live.users["viewer"]}, "conflict"),  # not banned
    ]
    for actor, action, fields, code in cases:
        ack = await actor.call(action, {"stream_id": live.id, **fields})
        assert ack["error"]["code"] == code, (action, fields, ack)
    banned = unique("banned")
    assert (await streamer.call("ban_user", {"stream_id": live.id, "user_id": banned}))["success"]
    assert (await streamer.call("ban_user", {"stream_id": live.id, "user_id": banned}))["error"][
        "code"
    ] == "conflict"
    assert (await streamer.call("add_moderator", {"stream_id": live.id, "user_id": banned}))["error"][
        "code"
    ] == "conflict"


@pytest.mark.parametrize(
    "action,payload",
    [
        ("timeout_user", {"user_id": "x", "seconds": 0}),
        ("timeout_user", {"user_id": "x", "seconds": 14 * 24 * 3600 + 1}),
        ("timeout_user", {"user_id": "x", "seconds": "60"}),
        ("timeout_user", {"user_id": "x", "seconds": 1.5}),
        ("timeout_user", {"user_id": "x", "seconds": True}),
        ("timeout_user", {"user_id": "x"}),
        ("ban_user", {}),
        ("ban_user", {"user_id": ""}),
        ("ban_user", {"user_id": 42}),
        ("ban_user", {"user_id": " padded "}),
        ("ban_user", {"user_id": "x" * 192}),
        ("ban_user", {"user_id": "x", "reason": "r" * 501}),
        ("set_slow_mode", {"seconds": -1}),
        ("set_slow_mode", {"seconds": 3601}),
        ("set_slow_mode", {}),
        ("delete_message", {"message_id": "not-an-id"}),
        ("delete_message", {}),
        ("add_moderator", {"user_id": None}),
    ],
)
async def test_malformed_moderation_is_invalid_and_changes_nothing(action, payload, live, api):
    ack = await live.sockets["streamer"].call(action, {"stream_id": live.id, **payload})
    assert ack["error"]["code"] == "invalid", ack
    status, body = await api.request("GET", f"{live.id}/moderation", live.tokens["streamer"])
    assert [a["action"] for a in body["actions"]] == ["add_moderator"]  # the fixture's only action
    assert (await live.sockets["streamer"].call("send_message", {"stream_id": live.id, "message": "ok"}))[
        "success"
    ]


async def test_unknown_and_ended_streams(live, api, token):
    ack = await live.sockets["streamer"].call("ban_user", {"stream_id": UNKNOWN, "user_id": "x"})
    assert ack["error"]["code"] == "not_found"
    ack = await live.sockets["streamer"].call("ban_user", {"stream_id": "nope", "user_id": "x"})
    assert ack["error"]["code"] == "not_found"
    status, _ = await api.request("POST", f"{live.id}/end", live.tokens["streamer"])
    assert status == 200
    ack = await live.sockets["streamer"].call("ban_user", {"stream_id": live.id, "user_id": "x"})
    assert ack["error"]["code"] == "stream_not_live"
    status, body = await api.request(
        "POST", f"{live.id}/alerts", live.tokens["streamer"], json={"message": "x"}
    )
    assert status == 409 and body["error"]["code"] == "stream_not_live"


# -- clearing and slow mode -------------------------------------------------------------


async def test_clear_chat_hides_every_earlier_message(live, api, clients, base_url, token, flusher, sql):
    viewer = live.sockets["viewer"]
    old = [await say(viewer, live.id, f"before {i}") for i in range(3)]
    await flusher.drain()
    status, body = await api.request("POST", f"{live.id}/chat/clear", live.tokens["moderator"])
    assert status == 200 and body["action"]["action"] == "clear_chat"
    assert await viewer.wait_for("chat_cleared") == {"stream_id": live.id, "by": live.users["moderator"]}
    assert await chat_ids(api, live.id) == []
    new = await say(viewer, live.id, "after")
    assert await chat_ids(api, live.id) == [new]
    late = await clients(base_url, token(unique("late")))
    joined = await late.call("join_stream", {"stream_id": live.id})
    assert [m["message_id"] for m in joined["recent_messages"]] == [new]
    await flusher.drain()
    rows = sql(
        "SELECT message_id, deleted_by FROM chat_messages WHERE stream_id=%s AND deleted_at IS NOT NULL",
        live.id,
    )
    assert sorted(r["message_id"] for r in rows) == sorted(old)
    assert {r["deleted_by"] for r in rows} == {live.users["moderator"]}


async def test_slow_mode_spaces_out_viewers_but_not_the_streamer_or_moderators(live, api):
    viewer = live.sockets["viewer"]
    status, body = await api.request(
        "PUT", f"{live.id}/slow-mode", live.tokens["streamer"], json={"seconds": 30}
    )
    assert status == 200 and body["action"]["seconds"] == 30
    assert (await viewer.wait_for("slow_mode")) == {
        "stream_id": live.id,
        "seconds": 30,
        "by": live.users["streamer"],
    }
    await say(viewer, live.id, "first")
    refused = await viewer.call("send_message", {"stream_id": live.id, "message": "second"})
    assert refused["error"]["code"] == "slow_mode" and 29 <= refused["error"]["retry_after"] <= 30
    for role in ("streamer", "moderator"):
        for i in range(3):
            await say(live.sockets[role], live.id, f"{role} {i}")
    # Tips are not chat: slow mode does not hold them back.
    assert (await viewer.call("send_tip", {"stream_id": live.id, "amount": 2}))["success"]
    ack = await live.sockets["moderator"].call("set_slow_mode", {"stream_id": live.id, "seconds": 0})
    assert ack["success"]
    await say(viewer, live.id, "free again")


async def test_moderators_and_the_streamer_get_the_higher_chat_rate(workers, http, token):
    (w,) = await workers(1, HUB_CHAT_RATE="2", HUB_CHAT_RATE_PRIVILEGED="6")
    api = Api(http, w.url)
    streamer, mod, viewer = unique("streamer"), unique("mod"), unique("viewer")
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    status, _ = await api.request(
        "POST", f"{sid}/moderators", token(streamer, "streamer"), json={"user_id": mod}
    )
    assert status == 200
    sent: dict[str, int] = {}
    for uid in (streamer, mod, viewer):
        c = Client()
        await c.connect(w.url, token(uid, *(["streamer"] if uid == streamer else [])))
        try:
            assert (await c.call("join_stream", {"stream_id": sid}))["success"]
            sent[uid] = 0
            while (await c.call("send_message", {"stream_id": sid, "message": "x"}))["success"]:
                sent[uid] += 1
        finally:
            await c.close()
    assert sent == {streamer: 6, mod: 6, viewer: 2}


# -- alerts -------------------------------------------------------------------------------


async def test_trade_alerts_are_the_streamers_and_exact(live, api, flusher, sql):
    ack = await live.sockets["streamer"].call(
        "send_alert",
        {
            "stream_id": live.id,
            "message": "Buying the dip",
            "symbol": "btc-usd",
            "side": "buy",
            "price": 64250.12345678,
        },
    )
    assert ack["success"], ack
    message = ack["message"]
    assert message["message_type"] == "ALERT" and message["tip_amount"] is None
    assert message["alert"] == {"symbol": "BTC-USD", "side": "BUY", "price": 64250.12345678}
    heard = await live.sockets["viewer"].wait_for("chat_message", lambda m: m["message_type"] == "ALERT")
    assert heard == message

    status, body = await api.request(
        "POST",
        f"{live.id}/alerts",
        live.tokens["streamer"],
        json={"message": "Tiny", "price": "0.00001234", "side": "SELL"},
    )
    assert status == 200 and body["message"]["alert"] == {"symbol": None, "side": "SELL", "price": 0.00001234}
    async with api.session.get(f"{api.base}/api/v1/streaming/{live.id}/chat") as resp:
        text = await resp.text()
    assert '"price":64250.12345678' in text and '"price":0.00001234' in text

    for role in ("moderator", "viewer", "admin"):
        refused = await live.sockets[role].call("send_alert", {"stream_id": live.id, "message": "x"})
        assert refused["error"]["code"] == "forbidden", role
    for bad in (
        {"price": -1},
        {"price": 0},
        {"price": "1e12"},
        {"price": 0.123456789},
        {"side": "HOLD"},
        {"symbol": "way too long symbol"},
        {"price": True},
        {"message": ""},
    ):
        refused = await live.sockets["streamer"].call(
            "send_alert", {"stream_id": live.id, "message": "m", **bad}
        )
        assert refused["error"]["code"] == "invalid", bad

    status, body = await api.request("GET", f"{live.id}/stats")
    assert body["stats"]["message_count"] == 2
    await flusher.drain()
    rows = sql(
        "SELECT message_type, alert FROM chat_messages WHERE stream_id=%s ORDER BY message_id", live.id
    )
    assert [r["message_type"] for r in rows] == ["ALERT", "ALERT"]
    assert '"price":64250.12345678' in rows[0]["alert"] and '"price":0.00001234' in rows[1]["alert"]
    # Read back from MySQL, the price is the same decimal text.
    from hub.domain.records import alert_from_json

    assert (
        alert_from_json(rows[1]["alert"])["price"] == orjson.Fragment(b"0.00001234")
        or bytes(orjson.dumps(alert_from_json(rows[1]["alert"])["price"])) == b"0.00001234"
    )


# -- the moderation log -----------------------------------------------------------------


async def test_the_moderation_log_lists_every_action_newest_first(live, api, flusher, sql, token):
    uid = live.users["viewer"]
    steps = [
        ("timeout_user", {"user_id": uid, "seconds": 30, "reason": "caps"}),
        ("unban_user", {"user_id": uid}),
        ("set_slow_mode", {"seconds": 5}),
    ]
    for action, fields in steps:
        assert (await live.sockets["moderator"].call(action, {"stream_id": live.id, **fields}))["success"]
    await flusher.drain()  # some in MySQL, the next only in Redis: the log merges both
    assert (await live.sockets["admin"].call("ban_user", {"stream_id": live.id, "user_id": uid}))["success"]

    for role in ("streamer", "moderator", "admin"):
        status, body = await api.request("GET", f"{live.id}/moderation", live.tokens[role])
        assert status == 200, body
        assert [a["action"] for a in body["actions"]] == [
            "ban_user",
            "set_slow_mode",
            "unban_user",
            "timeout_user",
            "add_moderator",
        ]
        assert body["count"] == 5
        timeout = body["actions"][3]
        assert timeout["user_id"] == uid and timeout["seconds"] == 30 and timeout["reason"] == "caps"
        assert timeout["by"] == live.users["moderator"] and timeout["until"].endswith("Z")
    status, body = await api.request(
        "GET", f"{live.id}/moderation", live.tokens["streamer"], params={"limit": 2}
    )
    assert [a["action"] for a in body["actions"]] == ["ban_user", "set_slow_mode"]
    status, body = await api.request("GET", f"{live.id}/moderation", live.tokens["viewer"])
    assert status == 403 and body["error"]["code"] == "forbidden"

    await flusher.drain()
    rows = sql(
        "SELECT action, by_user, user_id, seconds, reason FROM moderation_actions WHERE stream_id=%s "
        "ORDER BY action_id",
        live.id,
    )
    assert [r["action"] for r in rows] == [
        "add_moderator",
        "timeout_user",
        "unban_user",
        "set_slow_mode",
        "ban_user",
    ]
    assert rows[1] == {
        "action": "timeout_user",
        "by_user": live.users["moderator"],
        "user_id": uid,
        "seconds": 30,
        "reason": "caps",
    }
    assert rows[4]["by_user"] == live.users["admin"]


async def test_moderators_changed_carries_the_whole_list(live):
    streamer = live.sockets["streamer"]
    extra = unique("mod2")
    ack = await streamer.call("add_moderator", {"stream_id": live.id, "user_id": extra})
    assert sorted(ack["moderators"]) == sorted([live.users["moderator"], extra])
    heard = await live.sockets["viewer"].wait_for("moderators_changed", lambda d: extra in d["moderators"])
    assert set(heard) == {"stream_id", "moderators"}
    for uid in (extra, live.users["moderator"]):
        assert (await streamer.call("remove_moderator", {"stream_id": live.id, "user_id": uid}))["success"]
    await live.sockets["viewer"].wait_for("moderators_changed", lambda d: d["moderators"] == [])
    # The former moderator is a viewer again.
    refused = await live.sockets["moderator"].call("clear_chat", {"stream_id": live.id})
    assert refused["error"]["code"] == "forbidden"


# -- the flusher ----------------------------------------------------------------------


async def test_a_deletion_written_before_its_message_still_marks_it(flusher, sql):
    """Two flushers may write a deletion before the batch holding its message (one died, its
    entries were claimed later): the message is marked when it lands."""
    from hub.codec import dumps, iso_ms, uuid7, uuid7_ms
    from workers.batch import Batch

    stream_id, user = uuid7(), unique("u")
    message_id, cleared_message = uuid7(), uuid7()
    clear_id = uuid7()
    actions = Batch()
    actions.add(
        "moderation",
        dumps(
            {
                "action_id": uuid7(),
                "action": "delete_message",
                "stream_id": stream_id,
                "by": "mod",
                "message_id": message_id,
                "created_at": iso_ms(uuid7_ms(message_id) + 5),
            }
        ).decode(),
    )
    actions.add(
        "moderation",
        dumps(
            {
                "action_id": clear_id,
                "action": "clear_chat",
                "stream_id": stream_id,
                "by": "mod",
                "created_at": iso_ms(uuid7_ms(clear_id)),
            }
        ).decode(),
    )
    await flusher.writer.write(actions)
    later = uuid7()
    messages = Batch()
    for mid in (message_id, cleared_message, later):
        messages.add(
            "message",
            dumps(
                {
                    "message_id": mid,
                    "stream_id": stream_id,
                    "user_id": user,
                    "username": None,
                    "message": "hi",
                    "message_type": "TEXT",
                    "tip_amount": None,
                    "created_at": iso_ms(uuid7_ms(mid)),
                }
            ).decode(),
        )
    await flusher.writer.write(messages)
    rows = {
        r["message_id"]: r
        for r in sql(
            "SELECT message_id, deleted_at, deleted_by FROM chat_messages WHERE stream_id=%s", stream_id
        )
    }
    assert rows[message_id]["deleted_by"] == "mod" and rows[cleared_message]["deleted_by"] == "mod"
    assert rows[later]["deleted_at"] is None
