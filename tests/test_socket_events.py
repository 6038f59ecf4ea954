"""Socket.IO events on /streaming: join, leave, chat, tip; every refusal; presence counting."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import aiohttp
import pytest
import socketio

from hub.domain.auth import Verifier
from hub.domain.payloads import Chat, Join, Tip
from hub.domain.presence import Conn, Presence
from hub.domain.service import Hub
from hub.errors import HubError
from hub.storage.keys import NAMESPACE
from hub.storage.mysql import History, create_pool
from hub.storage.state import State
from tests.conftest import DEADLINE, Client, eventually, next_month, unique

UNKNOWN = "01a20e30-0000-7000-8000-000000000000"


@pytest.fixture
async def stream(api, token):
    streamer = unique("streamer")
    s = await api.create_stream(token(streamer, "streamer", name="Streamer"))
    return {"id": s["stream_id"], "streamer": streamer, "token": token(streamer, "streamer")}


async def joined_viewer(clients, base_url, token, sid, name="Viewer") -> tuple[str, Client]:
    uid = unique("viewer")
    c = await clients(base_url, token(uid, name=name))
    ack = await c.call("join_stream", {"stream_id": sid})
    assert ack["success"], ack
    return uid, c


async def stats(api, sid) -> dict:
    status, body = await api.request("GET", f"{sid}/stats")
    assert status == 200
    return body["stats"]


async def still_works(c: Client, sid: str) -> None:
    """The socket that was refused is still usable."""
    ack = await c.call("send_message", {"stream_id": sid, "message": "still here"})
    assert ack["success"], ack
    await c.wait_for("chat_message", lambda m: m["message_id"] == ack["message"]["message_id"])


# -- connect --------------------------------------------------------------------------


async def test_anonymous_viewer_connects_joins_and_counts(clients, base_url, stream):
    c = await clients(base_url)
    ack = await c.call("join_stream", {"stream_id": stream["id"]})
    assert ack["success"] and ack["viewer_count"] == 1
    refused = await c.call("send_message", {"stream_id": stream["id"], "message": "hi"})
    assert refused["error"]["code"] == "unauthorized"
    refused = await c.call("send_tip", {"stream_id": stream["id"], "amount": 5})
    assert refused["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("bad", ["garbage", "a.b.c", "expired", "wrong-secret", "no-sub", "alg-none"])
async def test_bad_tokens_are_refused_at_connect(bad, base_url, token):
    import time

    import jwt

    from tests.conftest import SECRET

    now = int(time.time())
    tokens = {
        "garbage": "garbage",
        "a.b.c": "a.b.c",
        "expired": token(unique("u"), ttl=-120),
        "wrong-secret": jwt.encode({"sub": "x", "exp": now + 60}, "another-secret-" + "y" * 32, "HS256"),
        "no-sub": jwt.encode({"exp": now + 60}, SECRET, "HS256"),
        "alg-none": jwt.encode({"sub": "x", "exp": now + 60}, None, "none"),
    }
    c = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(base_url, tokens[bad])
    (refusal,) = c.events["connect_error"]
    assert refusal["message"] == "unauthorized" and refusal["data"]["code"] == "unauthorized"
    await c.close()


# -- join and presence ----------------------------------------------------------------


async def test_join_answers_with_stream_count_and_recent_messages(clients, base_url, token, stream):
    uid, first = await joined_viewer(clients, base_url, token, stream["id"])
    sent = [
        (await first.call("send_message", {"stream_id": stream["id"], "message": f"m{i}"}))["message"]
        for i in range(3)
    ]
    c = await clients(base_url, token(unique("late")))
    ack = await c.call("join_stream", {"stream_id": stream["id"]})
    event = await c.wait_for("joined_stream")
    assert ack == event
    assert set(ack) == {"success", "stream", "viewer_count", "recent_messages", "has_more"}
    assert ack["has_more"] is False
    assert ack["viewer_count"] == 2 and ack["stream"]["viewer_count"] == 2
    assert ack["stream"]["stream_id"] == stream["id"] and ack["stream"]["status"] == "LIVE"
    assert [m["message_id"] for m in ack["recent_messages"]] == [m["message_id"] for m in sent]
    again = await c.call("join_stream", {"stream_id": stream["id"], "last_message_id": sent[0]["message_id"]})
    assert [m["message"] for m in again["recent_messages"]] == ["m1", "m2"]
    upper = await c.call(
        "join_stream", {"stream_id": stream["id"].upper(), "last_message_id": sent[0]["message_id"].upper()}
    )
    assert [m["message"] for m in upper["recent_messages"]] == ["m1", "m2"]  # ids are case-insensitive
    assert again["viewer_count"] == 2  # joining again changes nothing


async def test_recent_messages_are_the_last_fifty(clients, base_url, token, stream):
    for _ in range(3):
        uid, c = await joined_viewer(clients, base_url, token, stream["id"])
        for i in range(20):
            assert (await c.call("send_message", {"stream_id": stream["id"], "message": f"{uid} {i}"}))[
                "success"
            ]
    late = await clients(base_url)
    ack = await late.call("join_stream", {"stream_id": stream["id"]})
    assert len(ack["recent_messages"]) == 50
    ids = [m["message_id"] for m in ack["recent_messages"]]
    assert ids == sorted(ids) and ack["recent_messages"][-1]["message"].endswith(" 19")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"stream_id": UNKNOWN}, "not_found"),
        ({"stream_id": "not-a-uuid"}, "not_found"),
        ({"stream_id": 42}, "invalid"),
        ({"stream_id": None}, "invalid"),
        ({}, "invalid"),
        (None, "invalid"),
        ("a string", "invalid"),
        ([1, 2], "invalid"),
        ({"stream_id": UNKNOWN, "last_message_id": "nope"}, "invalid"),
    ],
)
async def test_bad_joins_are_refused(payload, code, clients, base_url, token, stream):
    c = await clients(base_url, token(unique("viewer")))
    ack = await c.call("join_stream", payload)
    assert ack == {"success": False, "error": {"code": code, "message": ack["error"]["message"]}}
    err = await c.wait_for("error")
    assert err["code"] == code and err["event"] == "join_stream" and err["message"]
    assert (await c.call("join_stream", {"stream_id": stream["id"]}))["success"]
    await still_works(c, stream["id"])


async def test_joining_an_ended_or_scheduled_stream_is_refused(api, clients, base_url, token, stream):
    await api.request("POST", f"{stream['id']}/end", stream["token"])
    c = await clients(base_url, token(unique("viewer")))
    assert (await c.call("join_stream", {"stream_id": stream["id"]}))["error"]["code"] == "stream_not_live"
    later = unique("streamer")
    scheduled = await api.create_stream(token(later, "streamer"), scheduled_at=next_month())
    assert scheduled["status"] == "SCHEDULED"
    ack = await c.call("join_stream", {"stream_id": scheduled["stream_id"]})
    assert ack["error"]["code"] == "stream_not_live"


async def test_two_tabs_count_once_and_leave_once(api, clients, base_url, token, stream):
    sid = stream["id"]
    watcher_id, watcher = await joined_viewer(clients, base_url, token, sid)
    twin = unique("twin")
    tab1 = await clients(base_url, token(twin, name="Twin"))
    tab2 = await clients(base_url, token(twin, name="Twin"))
    assert (await tab1.call("join_stream", {"stream_id": sid}))["viewer_count"] == 2
    assert (await tab2.call("join_stream", {"stream_id": sid}))["viewer_count"] == 2
    await tab1.call("leave_stream")
    await tab2.call("leave_stream")
    left = await watcher.wait_for("viewer_left", lambda e: e["user_id"] == twin)
    assert left == {"stream_id": sid, "viewer_count": 1, "user_id": twin}
    # a marker after both leaves: exactly one viewer_joined and one viewer_left for the twin
    marker = await watcher.call("send_message", {"stream_id": sid, "message": "marker"})
    await watcher.wait_for("chat_message", lambda m: m["message_id"] == marker["message"]["message_id"])
    assert [e["user_id"] for e in watcher.events["viewer_joined"]].count(twin) == 1
    assert [e["user_id"] for e in watcher.events["viewer_left"]].count(twin) == 1
    s = await stats(api, sid)
    assert (s["viewer_count"], s["peak_viewers"], s["unique_viewers"]) == (1, 2, 2)


async def test_viewer_joined_goes_to_the_room_but_not_the_joiner(clients, base_url, token, stream):
    sid = stream["id"]
    first_id, first = await joined_viewer(clients, base_url, token, sid)
    second_id, second = await joined_viewer(clients, base_url, token, sid, name="Second")
    got = await first.wait_for("viewer_joined", lambda e: e["user_id"] == second_id)
    assert got == {"stream_id": sid, "viewer_count": 2, "user_id": second_id, "username": "Second"}
    marker = await second.call("send_message", {"stream_id": sid, "message": "marker"})
    await second.wait_for("chat_message", lambda m: m["message_id"] == marker["message"]["message_id"])
    assert second.events["viewer_joined"] == []


async def test_disconnect_and_switching_streams_leave(api, clients, base_url, token, stream):
    sid = stream["id"]
    other = await api.create_stream(token(unique("streamer"), "streamer"))
    watcher_id, watcher = await joined_viewer(clients, base_url, token, sid)
    mover_id, mover = await joined_viewer(clients, base_url, token, sid)
    anon = await clients(base_url)
    await anon.call("join_stream", {"stream_id": sid})
    await watcher.wait_for("viewer_joined", lambda e: e["viewer_count"] == 3)
    assert (await mover.call("join_stream", {"stream_id": other["stream_id"]}))["viewer_count"] == 1
    await watcher.wait_for("viewer_left", lambda e: e["user_id"] == mover_id and e["viewer_count"] == 2)
    await anon.close()
    await watcher.wait_for("viewer_left", lambda e: e["user_id"] is None and e["viewer_count"] == 1)
    # the mover gets nothing more from the first stream
    msg = await watcher.call("send_message", {"stream_id": sid, "message": "only for the first"})
    refused = await mover.call("send_message", {"stream_id": sid, "message": "wrong room"})
    assert refused["error"]["code"] == "not_joined"
    assert all(m["message_id"] != msg["message"]["message_id"] for m in mover.events["chat_message"])


# -- chat -----------------------------------------------------------------------------


async def test_chat_reaches_the_room_and_the_sender(clients, base_url, token, stream):
    sid = stream["id"]
    sender_id, sender = await joined_viewer(clients, base_url, token, sid, name="Sender")
    _, other = await joined_viewer(clients, base_url, token, sid)
    ack = await sender.call(
        "send_message",
        {
            "stream_id": sid,
            "message": "  hello\x00\x07 world \n",
            "user_id": "mallory",
            "username": "Admin",
            "userId": "mallory",
        },
    )
    m = ack["message"]
    assert set(m) == {
        "message_id",
        "stream_id",
        "user_id",
        "username",
        "message",
        "message_type",
        "tip_amount",
        "created_at",
    }
    assert (m["user_id"], m["username"], m["message"], m["message_type"], m["tip_amount"]) == (
        sender_id,
        "Sender",
        "hello world",
        "TEXT",
        None,
    )
    assert uuid.UUID(m["message_id"]) and m["created_at"].endswith("Z")
    for c in (sender, other):
        assert await c.wait_for("chat_message", lambda x: x["message_id"] == m["message_id"]) == m


BAD_CHAT = [
    ({"message": ""}, "invalid"),
    ({"message": "   \n\t "}, "invalid"),
    ({"message": "x" * 501}, "invalid"),
    ({"message": 12}, "invalid"),
    ({"message": None}, "invalid"),
    ({"message": ["a"]}, "invalid"),
    ({"message": "hi", "message_type": "TIP"}, "invalid"),
    ({"message": "hi", "message_type": "ALERT"}, "invalid"),
    ({"message": "hi", "message_type": "text"}, "invalid"),
    ({"message": "hi", "message_type": 1}, "invalid"),
    ({"message": "hi", "stream_id": UNKNOWN}, "not_joined"),
    ({"message": "hi", "stream_id": 5}, "invalid"),
]


@pytest.mark.parametrize(("fields", "code"), BAD_CHAT)
async def test_bad_messages_are_refused_and_change_nothing(
    fields, code, api, clients, base_url, token, stream
):
    sid = stream["id"]
    _, c = await joined_viewer(clients, base_url, token, sid)
    _, bystander = await joined_viewer(clients, base_url, token, sid)
    before = (await stats(api, sid))["message_count"]
    ack = await c.call("send_message", {"stream_id": sid, **fields})
    assert ack["success"] is False and ack["error"]["code"] == code
    err = await c.wait_for("error")
    assert err == {**ack["error"], "event": "send_message"}
    assert (await stats(api, sid))["message_count"] == before
    await still_works(c, sid)
    assert bystander.events["error"] == []


@pytest.mark.parametrize("payload", [None, "hello", 42, [], ["a", "b"]])
async def test_payloads_that_are_not_objects_are_invalid(payload, clients, base_url, token, stream):
    _, c = await joined_viewer(clients, base_url, token, stream["id"])
    for event in ("send_message", "send_tip", "join_stream"):
        ack = await c.call(event, payload)
        assert ack["error"]["code"] == "invalid", (event, ack)
    await still_works(c, stream["id"])


async def test_longest_message_and_emoji_are_accepted(clients, base_url, token, stream):
    _, c = await joined_viewer(clients, base_url, token, stream["id"])
    ack = await c.call("send_message", {"stream_id": stream["id"], "message": "é" * 500})
    assert ack["success"] and len(ack["message"]["message"]) == 500
    ack = await c.call(
        "send_message", {"stream_id": stream["id"], "message": "🚀🔥", "message_type": "EMOJI"}
    )
    assert ack["message"]["message_type"] == "EMOJI"


async def test_chat_without_joining_is_not_joined(clients, base_url, token, stream):
    c = await clients(base_url, token(unique("viewer")))
    ack = await c.call("send_message", {"stream_id": stream["id"], "message": "hi"})
    assert ack["error"]["code"] == "not_joined"
    ack = await c.call("send_tip", {"stream_id": stream["id"], "amount": 5})
    assert ack["error"]["code"] == "not_joined"


async def test_chat_rate_limit_per_user(api, clients, base_url, token, stream):
    sid = stream["id"]
    uid, c = await joined_viewer(clients, base_url, token, sid)
    for i in range(20):
        assert (await c.call("send_message", {"stream_id": sid, "message": f"{i}"}))["success"]
    # the same user on a second socket shares the limit
    tab = await clients(base_url, token(uid))
    await tab.call("join_stream", {"stream_id": sid})
    ack = await tab.call("send_message", {"stream_id": sid, "message": "one too many"})
    assert ack["error"]["code"] == "rate_limited"
    assert isinstance(ack["error"]["retry_after"], int) and 1 <= ack["error"]["retry_after"] <= 30
    assert (await stats(api, sid))["message_count"] == 20
    _, other = await joined_viewer(clients, base_url, token, sid)
    await still_works(other, sid)


# -- tips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "fee"),
    [(10.05, 0.50), (0.10 * 10, 0.05), (12.34, 0.62), ("10.50", 0.53), (1, 0.05), (10000, 500)],
)
async def test_tip_reaches_the_room_with_an_exact_fee(amount, fee, api, clients, base_url, token, stream):
    sid = stream["id"]
    uid, c = await joined_viewer(clients, base_url, token, sid, name="Fan")
    _, other = await joined_viewer(clients, base_url, token, sid)
    ack = await c.call(
        "send_tip",
        {
            "stream_id": sid,
            "amount": amount,
            "message": "gg",
            "to_user_id": stream["streamer"],
            "from_user_id": "mallory",
        },
    )
    tip = ack["tip"]
    assert set(tip) == {
        "tip_id",
        "stream_id",
        "from_user",
        "from_username",
        "to_user",
        "amount",
        "platform_fee",
        "currency",
        "message",
        "created_at",
    }
    assert (tip["from_user"], tip["from_username"], tip["to_user"], tip["currency"], tip["message"]) == (
        uid,
        "Fan",
        stream["streamer"],
        "USD",
        "gg",
    )
    assert tip["amount"] == float(amount) and tip["platform_fee"] == fee
    assert await other.wait_for("tip_received", lambda t: t["tip_id"] == tip["tip_id"]) == tip
    m = await other.wait_for("chat_message", lambda x: x["message_type"] == "TIP")
    assert (m["tip_amount"], m["message"], m["user_id"], m["message_id"]) == (
        float(amount),
        "gg",
        uid,
        ack["message_id"],
    )
    s = await stats(api, sid)
    assert (s["tip_count"], s["tips_total"], s["platform_fees_total"], s["message_count"]) == (
        1,
        float(amount),
        fee,
        1,
    )


# Digits other than ASCII's, Python's underscores and a plus sign are no amount's text.
NOT_ASCII_DIGITS = ["１０", "1_0", "+5", "٥", "١٠.٥٠", "10\u00a0", "1e1_0"]
BAD_AMOUNTS = [
    0,
    -1,
    -0.01,
    10.005,
    0.001,
    "abc",
    True,
    None,
    [],
    {},
    "NaN",
    "Infinity",
    1e20,
    10000.01,
    0.99,
    "",
    "1e9999999",
    *NOT_ASCII_DIGITS,
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
async def test_bad_amounts_are_invalid_and_charge_nothing(amount, api, clients, base_url, token, stream):
    sid = stream["id"]
    _, c = await joined_viewer(clients, base_url, token, sid)
    ack = await c.call("send_tip", {"stream_id": sid, "amount": amount})
    assert ack["error"]["code"] == "invalid"
    assert (await c.wait_for("error"))["event"] == "send_tip"
    s = await stats(api, sid)
    assert (s["tip_count"], s["tips_total"], s["message_count"]) == (0, 0, 0)
    await still_works(c, sid)


async def raw_ack(ws, ack_id: int) -> object:
    """The payload of the acknowledgement ``ack_id`` on a raw Socket.IO websocket."""
    prefix = f"43/streaming,{ack_id}"
    while True:
        reply = await ws.receive(timeout=5)
        assert reply.type == aiohttp.WSMsgType.TEXT, reply
        if reply.data.startswith(prefix):
            return json.loads(reply.data.removeprefix(prefix))[0]


@pytest.mark.parametrize(
    ("literal", "ok"),
    [
        ("1.0000000000000001", False),  # a binary float would read 1.0
        ("10.050000000000000001", False),
        ("10.05", True),
        ("10.50", True),
        ("1e1", True),
        ("2.5E+1", True),
    ],
)
async def test_amounts_are_read_as_written_not_as_binary_floats(
    literal, ok, http, base_url, token, stream, api
):
    """JSON number text is read exactly: what a float would round to two decimals is refused."""
    sid = stream["id"]
    ws_url = base_url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with http.ws_connect(ws_url) as ws:
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40/streaming," + json.dumps({"token": token(unique("tipper"))}))
        assert (await ws.receive_str()).startswith("40/streaming,")
        await ws.send_str(f'42/streaming,1["join_stream",{{"stream_id":"{sid}"}}]')
        assert (await raw_ack(ws, 1))["success"]
        await ws.send_str(f'42/streaming,2["send_tip",{{"stream_id":"{sid}","amount":{literal}}}]')
        ack = await raw_ack(ws, 2)
    if ok:
        assert ack["success"] and str(ack["tip"]["amount"]) == str(float(literal)), ack
    else:
        assert ack["error"]["code"] == "invalid", ack
        assert (await stats(api, sid))["tip_count"] == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to_user_id": "someone-else"}, "invalid"),
        ({"currency": "EUR"}, "invalid"),
        ({"client_tip_id": ""}, "invalid"),
        ({"client_tip_id": "x" * 65}, "invalid"),
        ({"message": "x" * 501}, "invalid"),
        ({"amount": None}, "invalid"),
    ],
)
async def test_bad_tip_fields_are_refused(fields, code, api, clients, base_url, token, stream):
    sid = stream["id"]
    _, c = await joined_viewer(clients, base_url, token, sid)
    ack = await c.call("send_tip", {"stream_id": sid, "amount": 5, **fields})
    assert ack["error"]["code"] == code
    assert (await stats(api, sid))["tip_count"] == 0
    await still_works(c, sid)


async def test_missing_amount_is_invalid(clients, base_url, token, stream):
    _, c = await joined_viewer(clients, base_url, token, stream["id"])
    assert (await c.call("send_tip", {"stream_id": stream["id"]}))["error"]["code"] == "invalid"


async def test_streamer_cannot_tip_their_own_stream(clients, base_url, stream):
    c = await clients(base_url, stream["token"])
    await c.call("join_stream", {"stream_id": stream["id"]})
    assert (await c.call("send_tip", {"stream_id": stream["id"], "amount": 5}))["error"][
        "code"
    ] == "forbidden"
    await still_works(c, stream["id"])


async def test_client_tip_id_charges_once_per_user(api, clients, base_url, token, stream):
    sid = stream["id"]
    _, a = await joined_viewer(clients, base_url, token, sid)
    _, b = await joined_viewer(clients, base_url, token, sid)
    first = await a.call("send_tip", {"stream_id": sid, "amount": 4, "client_tip_id": "same"})
    again = await a.call("send_tip", {"stream_id": sid, "amount": 4, "client_tip_id": "same"})
    assert again["tip"] == first["tip"] and again["message_id"] == first["message_id"]
    other = await b.call("send_tip", {"stream_id": sid, "amount": 4, "client_tip_id": "same"})
    assert other["tip"]["tip_id"] != first["tip"]["tip_id"]
    s = await stats(api, sid)
    assert (s["tip_count"], s["tips_total"]) == (2, 8)


# -- ending, transports, raw frames ---------------------------------------------------


async def test_stream_ended_empties_the_room(api, clients, base_url, token, stream):
    sid = stream["id"]
    _, c = await joined_viewer(clients, base_url, token, sid)
    status, _ = await api.request("POST", f"{sid}/end", stream["token"])
    assert status == 200
    ended = await c.wait_for("stream_ended")
    assert set(ended) == {"stream_id", "duration"} and ended["stream_id"] == sid
    assert (await c.call("send_message", {"stream_id": sid, "message": "x"}))["error"]["code"] == "not_joined"
    other = await api.create_stream(token(unique("streamer"), "streamer"))
    assert (await c.call("join_stream", {"stream_id": other["stream_id"]}))["success"]


async def test_polling_transport_works(clients, base_url, token, stream):
    c = await clients(base_url, token(unique("viewer")), transport="polling")
    assert (await c.call("join_stream", {"stream_id": stream["id"]}))["success"]
    await still_works(c, stream["id"])


@pytest.mark.parametrize(
    "frame",
    [
        '42/streaming,["send_message",{bad json',
        "42/streaming,not json at all",
        '42/streaming,{"not": "a list"}',
        "42/streaming,[]",
        '42/streaming,[42, "x"]',
        "4X",
        "9",
    ],
)
async def test_malformed_frames_do_not_hurt_the_worker(frame, http, base_url, clients, token, stream):
    ws_url = base_url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with http.ws_connect(ws_url) as ws:
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40/streaming,")
        assert (await ws.receive_str()).startswith("40/streaming,")
        await ws.send_str(frame)
        # the same socket still answers an event with an acknowledgement
        await ws.send_str('42/streaming,7["leave_stream"]')
        reply = await ws.receive(timeout=5)
        while reply.type == aiohttp.WSMsgType.TEXT and not reply.data.startswith("43/streaming,7"):
            reply = await ws.receive(timeout=5)
        assert reply.type == aiohttp.WSMsgType.TEXT, reply
        assert json.loads(reply.data.removeprefix("43/streaming,7")) == [{"success": True, "stream_id": None}]
    _, c = await joined_viewer(clients, base_url, token, stream["id"])
    await still_works(c, stream["id"])


async def test_an_oversized_event_is_refused_and_the_socket_stays(clients, base_url, token, stream, api):
    _, c = await joined_viewer(clients, base_url, token, stream["id"])
    before = (await stats(api, stream["id"]))["message_count"]
    ack = await c.call("send_message", {"stream_id": stream["id"], "message": "x" * 20_000})
    assert ack["success"] is False and ack["error"]["code"] == "payload_too_large", ack
    error = await c.wait_for("error", lambda e: e["code"] == "payload_too_large")
    assert error["event"] == "send_message"
    # Without an ack id too: the error event alone.
    await c.emit("send_tip", {"stream_id": stream["id"], "amount": 5, "message": "é" * 9_000})
    await c.wait_for("error", lambda e: e["code"] == "payload_too_large" and e["event"] == "send_tip")
    assert (await stats(api, stream["id"]))["message_count"] == before
    await still_works(c, stream["id"])


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("size", [100_000, 1_000_000])
async def test_an_event_up_to_a_mebibyte_is_payload_too_large_and_the_socket_stays(
    size, transport, api, clients, base_url, token, stream
):
    """PROTOCOL §7: below the transport's 1 MiB a Socket.IO client expects an answer, not a
    closed connection."""
    c = await clients(base_url, token(unique("viewer")), transport)
    assert (await c.call("join_stream", {"stream_id": stream["id"]}))["success"]
    ack = await c.call("send_message", {"stream_id": stream["id"], "message": "x" * (size - 100)})
    assert ack["success"] is False and ack["error"]["code"] == "payload_too_large", ack
    error = await c.wait_for("error", lambda e: e["code"] == "payload_too_large")
    assert error["event"] == "send_message"
    assert (await stats(api, stream["id"]))["message_count"] == 0
    await still_works(c, stream["id"])


async def test_a_message_over_the_transport_limit_closes_that_connection(clients, base_url, token, stream):
    _, c = await joined_viewer(clients, base_url, token, stream["id"])
    try:
        await c.emit("send_message", {"stream_id": stream["id"], "message": "x" * 1_100_000})
    except Exception:
        pass

    async def gone() -> bool:
        return not c.sio.connected

    await eventually(gone, 10, "the oversized sender disconnected")
    _, fresh = await joined_viewer(clients, base_url, token, stream["id"])
    await still_works(fresh, stream["id"])


async def test_a_long_polling_post_over_the_transport_limit_is_answered_and_closes(
    api, raw, token, stream, caplog
):
    """400 at once and the session closed, its viewer gone with it; not a POST left waiting."""
    caplog.set_level(logging.INFO)
    s = await raw(token(unique("viewer")), "polling")
    await s.send(join_packet(1, stream["id"]))
    assert (await s.ack(1))["success"]
    caplog.clear()
    big = "x" * 1_100_000
    status = await asyncio.wait_for(s.send(f'2/streaming,2["send_message",{{"message":"{big}"}}]'), DEADLINE)
    assert status == 400
    assert await viewer_count(api, stream["id"]) == 0
    assert len(worker_lines(caplog)) <= 1


@pytest.mark.parametrize("event", ["send_message", "join_stream"])
async def test_a_token_that_expires_mid_session_is_refused_then_disconnected(
    event, clients, base_url, token, stream
):
    """Chat, and joining too, once the connection's token has expired: unauthorized, then the
    socket is disconnected."""
    c = await clients(base_url, token(unique("brief"), ttl=2))
    assert (await c.call("join_stream", {"stream_id": stream["id"]}))["success"]
    payload = (
        {"stream_id": stream["id"], "message": "tick"}
        if event == "send_message"
        else {"stream_id": stream["id"]}
    )
    refusals = []

    async def refused() -> bool:
        ack = await c.call(event, payload)
        if not ack["success"]:
            refusals.append(ack)
        return bool(refusals)

    await eventually(refused, 10, f"{event} refused once the token expired", every=0.25)
    assert refusals[0]["error"]["code"] == "unauthorized"

    async def disconnected() -> bool:
        return not c.sio.connected

    await eventually(disconnected, 5, "the socket disconnected")


@pytest.mark.parametrize("event", ["connect", "disconnect", "connect_error", "__disconnect_final"])
async def test_client_events_named_like_lifecycle_events_change_nothing(
    event, api, clients, base_url, token, stream
):
    sid = stream["id"]
    uid, c = await joined_viewer(clients, base_url, token, sid)
    _, watcher = await joined_viewer(clients, base_url, token, sid)
    await c.emit(event, {"stream_id": sid})
    await still_works(c, sid)  # still signed in, still joined
    assert all(e["user_id"] != uid for e in watcher.events["viewer_left"])
    assert (await stats(api, sid))["viewer_count"] == 2


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("wait", [True, False], ids=["after-stream-ended", "racing-the-end"])
async def test_chat_and_tips_after_the_end_are_not_joined(wait, transport, api, clients, base_url, token):
    """Once the stream has ended its room is empty: a socket that was in it is not joined,
    whether it heard stream_ended yet or not."""
    streamer = token(unique("streamer"), "streamer")
    sid = (await api.create_stream(streamer))["stream_id"]
    c = await clients(base_url, token(unique("viewer")), transport)
    assert (await c.call("join_stream", {"stream_id": sid}))["success"]
    status, body = await api.request("POST", f"{sid}/end", streamer)
    assert status == 200, body
    if wait:
        await c.wait_for("stream_ended")
    chat = await c.call("send_message", {"stream_id": sid, "message": "still here?"})
    tip = await c.call("send_tip", {"stream_id": sid, "amount": 5})
    assert chat["error"]["code"] == "not_joined", chat
    assert tip["error"]["code"] == "not_joined", tip


async def test_a_socket_the_end_has_not_reached_yet_is_not_joined(api, token, settings, rds):
    """This worker has not heard of the end yet (its close order still on the way, or a join
    that raced the end): Redis's word that the stream is over makes the socket not joined, and
    it watches nothing from then on."""
    streamer = token(unique("streamer"), "streamer")
    sid = (await api.create_stream(streamer))["stream_id"]
    pool = await create_pool(settings.mysql, maxsize=1)
    state = State(rds, settings)
    presence = Presence(state)
    hub = Hub(settings, state, History(pool), presence)
    await presence.take_leases()  # as a worker does before it accepts connections
    try:
        conn = Conn(unique("sock"), Verifier(settings).verify(token(unique("viewer"))))
        presence.add(conn)
        assert (await hub.join(conn, Join.parse({"stream_id": sid})))["success"]
        status, body = await api.request("POST", f"{sid}/end", streamer)
        assert status == 200, body
        for attempt in (
            lambda: hub.chat(conn, Chat.parse({"stream_id": sid, "message": "hi"})),
            lambda: hub.tip(conn, Tip.parse({"stream_id": sid, "amount": 5}, settings)),
        ):
            presence.watch(conn, sid, "someone", "member")  # the worker's view: still watching
            with pytest.raises(HubError) as refused:
                await attempt()
            assert refused.value.code == "not_joined"
            assert conn.stream_id is None and sid not in presence.rooms
    finally:
        await state.drop_leases()
        pool.close()
        await pool.wait_closed()


# -- one event at a time per socket, on every transport -------------------------------


def join_packet(ack_id: int, stream_id: str) -> str:
    return f'2/streaming,{ack_id}["join_stream",{{"stream_id":"{stream_id}"}}]'


async def viewer_count(api, stream_id: str) -> int:
    status, body = await api.request("GET", stream_id)
    assert status == 200, body
    return body["stream"]["viewer_count"]


async def flushed(s, ack_id: int) -> None:
    """Everything written to the socket before now has been received: a refused event's ack
    comes after it."""
    await s.send(f'2/streaming,{ack_id}["send_tip",{{}}]')
    assert (await s.ack(ack_id))["error"]["code"] == "invalid"


async def watching_and_connections(api) -> tuple[float, float]:
    status, text = await api.request("GET", "/metrics")
    figures = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("hub_watching ", "hub_connections "))
    }
    return figures["hub_watching"], figures["hub_connections"]


async def test_two_joins_in_two_polling_posts_at_once_leave_one_room(
    api, clients, base_url, token, raw, server
):
    """Two long-polling POSTs in flight at once, each with a join: handled one after the other,
    so each socket ends in exactly one room, counted in that stream only, hearing that stream
    only; a ban from a stream takes every socket of the user out of its room."""
    from hub.worker import WORKER

    streams = {}
    for name in ("a", "b"):
        streamer = unique("streamer")
        streams[name] = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
        streams[name + "_token"] = token(streamer, "streamer")
    a, b = streams["a"], streams["b"]
    users = [unique("racer") for _ in range(20)]
    socks = [await raw(token(user), "polling") for user in users]

    async def race(s) -> None:
        assert await asyncio.gather(s.send(join_packet(1, a)), s.send(join_packet(2, b))) == [200, 200]
        assert (await s.ack(1))["success"] and (await s.ack(2))["success"]

    await asyncio.gather(*(race(s) for s in socks))
    rooms = server.app[WORKER].server.manager.rooms[NAMESPACE]
    where = {}
    for s in socks:
        inside = [room for room in (a, b) if s.sid in rooms.get(room, {})]
        assert len(inside) == 1, f"{s.sid} is in {len(inside)} stream rooms"
        where[s.sid] = inside[0]
    in_a = [s for s in socks if where[s.sid] == a]
    in_b = [s for s in socks if where[s.sid] == b]
    assert (await viewer_count(api, a), await viewer_count(api, b)) == (len(in_a), len(in_b))
    watching, connections = await watching_and_connections(api)
    assert watching <= connections

    # Each socket hears the stream it is counted in, and only that one.
    _, speaker_a = await joined_viewer(clients, base_url, token, a)
    _, speaker_b = await joined_viewer(clients, base_url, token, b)
    said_a = (await speaker_a.call("send_message", {"stream_id": a, "message": "to a"}))["message"][
        "message_id"
    ]
    said_b = (await speaker_b.call("send_message", {"stream_id": b, "message": "to b"}))["message"][
        "message_id"
    ]
    await speaker_a.wait_for("chat_message", lambda m: m["message_id"] == said_a)
    await speaker_b.wait_for("chat_message", lambda m: m["message_id"] == said_b)
    for n, s in enumerate(socks):
        heard = said_a if where[s.sid] == a else said_b
        await s.event("chat_message", lambda m, heard=heard: m["message_id"] == heard)
        await flushed(s, 10 + n)
        ids = [m["message_id"] for m in s.events("chat_message")]
        assert (said_a in ids, said_b in ids) == (where[s.sid] == a, where[s.sid] == b), s.sid

    # A ban from stream a reaches every socket of those users in a's room, and only them.
    for user in users:
        status, body = await api.request("POST", f"{a}/bans", streams["a_token"], json={"user_id": user})
        assert status == 200, body
    for s in in_a:
        assert (await s.event("banned"))["stream_id"] == a
    after = (await speaker_a.call("send_message", {"stream_id": a, "message": "after the bans"}))["message"]
    await speaker_a.wait_for("chat_message", lambda m: m["message_id"] == after["message_id"])
    for n, s in enumerate(socks):
        await flushed(s, 40 + n)
        assert after["message_id"] not in [m["message_id"] for m in s.events("chat_message")]
        assert s.sid not in rooms.get(a, {})
    assert [s for s in in_b if s.events("banned")] == []
    assert await viewer_count(api, a) == 1  # the speaker


async def test_a_join_and_a_disconnect_in_two_polling_posts_at_once_leave_no_ghost(
    api, base_url, token, raw, stream
):
    """A namespace disconnect waits for the join in progress; nothing of the join outlives it."""
    sid = stream["id"]
    before = await viewer_count(api, sid)
    socks = [await raw(token(unique("leaver")), "polling") for _ in range(20)]

    async def race(s) -> None:
        statuses = await asyncio.gather(s.send(join_packet(1, sid)), s.send("1/streaming,"))
        assert statuses == [200, 200]

    await asyncio.gather(*(race(s) for s in socks))
    # Both POSTs were answered, so both packets were handled: no viewer is left behind.
    assert await viewer_count(api, sid) == before
    watching, connections = await watching_and_connections(api)
    assert watching <= connections, (watching, connections)


async def test_an_event_dispatched_after_its_socket_disconnected_leaves_no_turn(server, token, raw, stream):
    """An event python-socketio hands the namespace once its socket's disconnect is done (one
    that passed the connected check just before) is refused ``unauthorized``, and leaves no
    turn behind for a socket that will never disconnect again."""
    from hub.worker import WORKER

    namespace = server.app[WORKER].namespace
    s = await raw(token(unique("late")), "polling")
    assert await s.send(join_packet(1, stream["id"])) == 200
    assert (await s.ack(1))["success"]
    assert await s.send("1/streaming,") == 200  # answered once the disconnect has run

    async def gone() -> bool:
        return s.sid not in namespace.presence.conns and s.sid not in namespace._turns

    await eventually(gone, what="the socket gone")
    late = await namespace.trigger_event(
        "send_message", s.sid, {"stream_id": stream["id"], "message": "late"}
    )
    assert late["error"]["code"] == "unauthorized"
    assert s.sid not in namespace._turns


async def test_a_ban_takes_the_users_sockets_out_of_the_room_whatever_presence_says(
    api, clients, base_url, token, server, stream
):
    """Socket.IO's room is the truth: a socket in the room that this worker's presence has
    watching another stream (or nothing) still leaves it on a ban, and hears no more of it."""
    from hub.worker import WORKER

    sio = server.app[WORKER].server
    other = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    uid = unique("drifter")
    c = await clients(base_url, token(uid))
    assert (await c.call("join_stream", {"stream_id": other}))["success"]
    _, speaker = await joined_viewer(clients, base_url, token, stream["id"])
    sid = c.sio.get_sid(NAMESPACE)
    await sio.enter_room(sid, stream["id"], namespace=NAMESPACE)  # presence: watching `other` only
    status, body = await api.request("POST", f"{stream['id']}/bans", stream["token"], json={"user_id": uid})
    assert status == 200, body
    assert (await c.wait_for("banned"))["stream_id"] == stream["id"]
    assert sid not in sio.manager.rooms[NAMESPACE].get(stream["id"], {})
    said = (await speaker.call("send_message", {"stream_id": stream["id"], "message": "after"}))["message"]
    await speaker.wait_for("chat_message", lambda m: m["message_id"] == said["message_id"])
    assert (await c.call("send_tip", {}))["error"]["code"] == "invalid"  # all written before it arrived
    assert all(m["message_id"] != said["message_id"] for m in c.events["chat_message"])
    assert (await c.call("send_message", {"stream_id": other, "message": "still in my stream"}))["success"]


# -- packets that cannot be read: an answer, the socket stays, one log line at most ----

ONCE = "(further occurrences of this error will be logged with level INFO)"


def worker_lines(caplog) -> list[str]:
    """What the worker logged, one entry per line (a traceback is many), the test server's
    access log aside, and python-engineio's lines it logs once in a worker's life (a request
    for a session already closed, say)."""
    formatter = logging.Formatter("%(name)s %(message)s")
    return [
        line
        for record in caplog.records
        if record.name != "aiohttp.access" and not record.getMessage().endswith(ONCE)
        for line in formatter.format(record).splitlines()
    ]


NESTED = "[" * 500 + "]" * 500
# Event packets python-socketio cannot read, or that name no event: (body after the ack id,
# the event name the error event carries).
UNREADABLE = {
    "infinite number": ('["send_tip",{{"stream_id":"{sid}","amount":1e309}}]', "send_tip"),
    "NaN": ('["send_tip",{{"stream_id":"{sid}","amount":NaN}}]', "send_tip"),
    "lone surrogate": ('["send_message",{{"stream_id":"{sid}","message":"\\ud800 hi"}}]', "send_message"),
    "nested 500 deep": ('["send_message",' + NESTED + "]", "send_message"),
    "nested 2000 deep": ('["send_message",' + "[" * 2000 + "]" * 2000 + "]", "send_message"),
    "not a list": ('{{"stream_id":"{sid}"}}', None),
    "no such event": ('["no_such_event",{{}}]', "no_such_event"),
    "a lifecycle name": ('["disconnect",{{}}]', "disconnect"),
    "a number for a name": ("[42,{{}}]", None),
}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("kind", list(UNREADABLE), ids=lambda kind: kind.replace(" ", "-"))
async def test_an_unreadable_event_is_answered_invalid_and_the_socket_stays(
    kind, transport, raw, token, stream, caplog
):
    caplog.set_level(logging.INFO)
    sid = stream["id"]
    s = await raw(token(unique("viewer")), transport)
    await s.send(join_packet(1, sid))
    assert (await s.ack(1))["success"]
    caplog.clear()
    body, event = UNREADABLE[kind]
    body = body.format(sid=sid)
    await s.send("2/streaming,2" + body)
    ack = await s.ack(2)
    assert ack["success"] is False and ack["error"]["code"] == "invalid" and ack["error"]["message"], ack
    assert await s.event("error") == {**ack["error"], "event": event}
    await s.send("2/streaming," + body)  # no ack id: the error event alone
    await s.next(lambda p: len(s.events("error")) == 2)
    # The socket still works.
    await s.send(f'2/streaming,3["send_message",{{"stream_id":"{sid}","message":"still here"}}]')
    assert (await s.ack(3))["success"]
    lines = worker_lines(caplog)
    assert len(lines) <= 1 and all(len(line) < 200 for line in lines), lines


async def test_a_flood_of_unreadable_events_logs_one_line(raw, caplog):
    """200 frames of 1.25 KB from one anonymous socket: 200 answers, the first logged, the rest
    summarised (a line a minute at most)."""
    caplog.set_level(logging.INFO)
    s = await raw()
    padding = "x" * 1200
    for n in range(200):
        await s.send(f'2/streaming,{n + 1}["send_message",{{"message":"{padding}","amount":1e309}}]')
    for n in range(200):
        assert (await s.ack(n + 1))["error"]["code"] == "invalid"
    lines = worker_lines(caplog)
    assert len(lines) <= 1 and all(len(line) < 200 for line in lines), lines[:3]


async def test_binary_and_non_socketio_messages_are_answered_invalid(raw, token, stream, caplog):
    caplog.set_level(logging.INFO)
    s = await raw(token(unique("viewer")))
    await s.send_bytes(b"\x00\x01binary")
    await s.raw_send('4"\\ud800"')  # an Engine.IO message that is a JSON string, no Socket.IO packet
    await s.raw_send("4")
    await s.send('51-/streaming,7["send_message",{"_placeholder":true,"num":5}]')  # binary event
    await s.send("4/streaming,")  # a connect_error, which only the server sends
    await s.next(lambda p: len(s.events("error")) == 5)
    assert {(e["code"], e["event"]) for e in s.events("error")} == {("invalid", None)}
    await s.send(join_packet(8, stream["id"]))
    assert (await s.ack(8))["success"]
    assert len(worker_lines(caplog)) <= 1


async def test_an_unreadable_connect_is_answered_connect_error(raw, caplog):
    caplog.set_level(logging.INFO)
    s = await raw(connect=False)
    await s.send('0/streaming,{"token":1e309}')
    refusal = json.loads((await s.next(lambda p: p.startswith("4/streaming,"))).removeprefix("4/streaming,"))
    assert refusal["message"] == "invalid" and refusal["data"]["code"] == "invalid"
    await s.send("0/streaming,")
    assert (await s.next(lambda p: p.startswith("0/streaming,"))).startswith("0/streaming,")
    assert len(worker_lines(caplog)) <= 1


@pytest.mark.parametrize(
    ("transport", "junk"),
    [
        pytest.param("websocket", "X", id="ws-no-type"),
        pytest.param("websocket", "", id="ws-empty"),
        pytest.param("websocket", "4" + "[" * 5000 + "]" * 5000, id="ws-nested-json-message"),
        pytest.param("websocket", '4{"a":1}', id="ws-json-message"),
        pytest.param("websocket", "b!!!", id="ws-base64"),
        pytest.param("polling", "X", id="polling-no-type"),
        pytest.param("polling", "4" + "[" * 5000 + "]" * 5000, id="polling-nested-json-message"),
        pytest.param("polling", "\x1e".join(["6"] * 17), id="polling-17-packets"),
        pytest.param("polling", b"42/streaming,\xff\xfe", id="polling-not-utf8"),
    ],
)
async def test_what_engineio_cannot_take_closes_the_connection_with_one_line(
    transport, junk, api, raw, token, stream, caplog
):
    """Text that is no Engine.IO packet: the connection closes (no answer can be framed), its
    viewer leaves at once, and the worker logs one line."""
    caplog.set_level(logging.INFO)
    s = await raw(token(unique("viewer")), transport)
    await s.send(join_packet(1, stream["id"]))
    assert (await s.ack(1))["success"]
    assert await viewer_count(api, stream["id"]) == 1
    caplog.clear()
    if isinstance(junk, bytes):
        await s.post(junk)
    else:
        await s.raw_send(junk)
    await s.wait_closed()

    async def left() -> bool:
        return await viewer_count(api, stream["id"]) == 0

    await eventually(left, 2, "the closed connection's viewer left")  # not after its pings run out
    lines = worker_lines(caplog)
    assert len(lines) <= 1 and all(len(line) < 200 for line in lines), lines


async def test_names_and_messages_lose_bidi_and_invisible_characters_but_keep_emoji(
    clients, base_url, token, stream
):
    sid = stream["id"]
    _, watcher = await joined_viewer(clients, base_url, token, sid)
    uid = unique("spoofer")
    c = await clients(base_url, token(uid, name="\u202eAdmin\u200b\u2066 ❤️"))
    assert (await c.call("join_stream", {"stream_id": sid}))["success"]
    joined = await watcher.wait_for("viewer_joined", lambda e: e["user_id"] == uid)
    assert joined["username"] == "Admin ❤️"
    ack = await c.call(
        "send_message",
        {"stream_id": sid, "message": "\u2067hi\u2069 the\u00adre \u200b👨\u200d👩\u200d👧 ❤️\ufeff"},
    )
    m = ack["message"]
    assert (m["username"], m["message"]) == ("Admin ❤️", "hi there 👨\u200d👩\u200d👧 ❤️")
    assert await watcher.wait_for("chat_message", lambda x: x["message_id"] == m["message_id"]) == m
    tip = (await c.call("send_tip", {"stream_id": sid, "amount": 5, "message": "gg\u202e"}))["tip"]
    assert (tip["from_username"], tip["message"]) == ("Admin ❤️", "gg")
