"""The AsyncAPI description of namespace /streaming (``hub/transport/asyncapi.py``, served at
/api/v1/asyncapi.json): a valid AsyncAPI 3.0 document, checked against the official schema
vendored beside this file (``tests/asyncapi/``, no network); it documents exactly the events
the live namespace handles and the events the code emits; its examples hold to its schemas; and
a real Socket.IO client's acks, broadcasts and connect refusal hold to it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import socketio

from hub.domain import payloads
from hub.errors import HTTP_STATUS
from hub.storage.keys import NAMESPACE
from hub.transport import asyncapi
from hub.worker import WORKER
from tests.conftest import ROOT, Client, unique

ASYNCAPI = "/api/v1/asyncapi.json"
SCHEMA = Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0.schema.json"
DRAFT7 = "http://json-schema.org/draft-07/schema#"


@cache
def document() -> dict[str, Any]:
    """The document as served (its bytes, decoded)."""
    return json.loads(asyncapi.encoded())


def messages() -> dict[str, Any]:
    return document()["channels"][asyncapi.CHANNEL]["messages"]


def resolve(pointer: str) -> Any:
    """A local ``$ref`` of the document."""
    assert pointer.startswith("#/"), pointer
    node: Any = document()
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def operation_messages(action: str) -> dict[str, dict[str, Any]]:
    """Event name -> its message, of the operations the hub ``receive``s or ``send``s."""
    found = {}
    for op in document()["operations"].values():
        if op["action"] == action:
            for ref in op["messages"]:
                message = resolve(ref["$ref"])
                found[message["name"]] = message
    return found


@cache
def validator(message_key: str) -> Any:
    """A validator of one message's payload, its ``$ref``s resolved in the document."""
    payload = messages()[message_key]["payload"]
    root = {"$schema": DRAFT7, "allOf": [payload], "components": document()["components"]}
    return jsonschema_rs.validator_for(root, offline=True)


def errors(message_key: str, data: Any) -> list[str]:
    return [f"{list(e.instance_path)}: {e.message[:200]}" for e in validator(message_key).iter_errors(data)]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


# -- the document -----------------------------------------------------------------------


async def test_the_served_document_is_valid_asyncapi_30(server, http, base_url):
    async with http.get(base_url + ASYNCAPI) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        served = await resp.json()
    assert served == document()
    official = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()), offline=True)
    assert official.is_valid({"asyncapi": "3.0.0", "info": {"title": "t"}}) is False  # it does check
    assert [f"{list(e.instance_path)}: {e.message[:300]}" for e in official.iter_errors(served)] == []
    unresolved = [r for r in set(refs(served)) if not r.startswith("#/")]
    assert unresolved == []
    for pointer in set(refs(served)):
        resolve(pointer)  # every reference names something in the document


def test_every_payload_schema_is_draft_07_and_every_example_holds_to_it():
    meta = jsonschema_rs.Draft7Validator({"$ref": DRAFT7}, offline=True)
    for name, schema in document()["components"]["schemas"].items():
        assert meta.is_valid(schema), name
    for key, message in messages().items():
        if "payload" not in message:
            continue
        assert meta.is_valid(message["payload"]), key
        assert message.get("examples"), f"{key} has no example"
        for example in message["examples"]:
            assert errors(key, example["payload"]) == [], key


def test_every_documented_refusal_code_is_a_code_of_the_hub():
    codes = [choice["const"] for choice in document()["components"]["schemas"]["ErrorCode"]["oneOf"]]
    assert sorted(codes) == sorted(HTTP_STATUS)
    for event in operation_messages("receive"):
        ack = messages()[f"{event}.ack"]
        refused = ack["payload"]["oneOf"][1]["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
        assert set(refused) <= set(codes) and {"invalid", "unauthorized"} <= set(refused), event
        assert errors(f"{event}.ack", {"success": False, "error": {"code": "no_such", "message": "m"}})


# -- the document against the code -----------------------------------------------------


async def test_the_client_events_are_exactly_those_the_live_namespace_handles(server):
    namespace = server.app[WORKER].namespace
    handled = set(namespace.actions)
    assert {"join_stream", "send_message"} <= handled and "chat_message" not in handled
    documented = set(operation_messages("receive"))
    assert handled - documented == set(), "handled but not documented"
    assert documented - handled == set(), "documented but not handled"
    assert all(namespace.handles(event) for event in documented)


# Where the hub names an event it emits: python-socketio's emit, the frames built in Python
# (``frames.event``/``frames.around``), the Lua scripts' ``frame`` and their viewer events.
PY_EMITS = re.compile(r"(?:\.emit|frames\.event|frames\.around)\(\s*([^,)]+)")
LUA_FRAMES = re.compile(r"\bframe\(\s*([^,)]+)")
LUA_VIEWER_EVENTS = re.compile(r"\bviewer_event\((?:\s*[^,']+,)+\s*'(\w+)'")
# Call sites whose event name is not written there: where it comes from instead.
DYNAMIC = {
    "kind.event": {action.event for action in payloads.MODERATION.values()},  # hub/domain/moderation.py
    "event": set(),  # common.lua's viewer_event(shard, stream, event, ...): its callers are scanned
    "kept[1]": set(),  # common.lua's flush of a kept viewer event: one of viewer_event's
}


def emitted_events() -> set[str]:
    """Every event name the hub's Python and Lua sources emit, read off the sources."""
    names: set[str] = set()
    sources = [(p, PY_EMITS) for p in (ROOT / "hub").rglob("*.py")]
    sources += [(p, LUA_FRAMES) for p in (ROOT / "hub" / "storage" / "lua").glob("*.lua")]
    for path, pattern in sources:
        source = path.read_text()
        if path.name == "frames.py":  # the Lua prelude's definition of frame(), not a use
            continue
        for argument in pattern.findall(source):
            argument = argument.strip()
            literal = re.fullmatch(r"""b?["'](\w+)["']""", argument)
            if literal:
                names.add(literal.group(1))
            else:
                assert argument in DYNAMIC, f"{path.name}: an event named by {argument!r}, unread"
                names |= DYNAMIC[argument]
        if path.suffix == ".lua":
            names.update(LUA_VIEWER_EVENTS.findall(source))
    return names


def test_the_server_events_are_exactly_those_the_code_emits():
    emitted = emitted_events()
    assert {"chat_message", "viewer_joined", "viewer_left", "stream_ended", "error", "user_banned"} <= emitted
    documented = set(operation_messages("send"))
    assert emitted - documented == set(), "emitted but not documented"
    assert documented - emitted == set(), "documented but never emitted"


# -- a live worker against the document ---------------------------------------------------


def assert_documented(client: Client, *skip: str) -> int:
    """Every event ``client`` received holds to its documented message; how many there were."""
    server_events = operation_messages("send")
    seen = 0
    for event, received in client.events.items():
        if event in ("connect_error", *skip):
            continue
        assert event in server_events, f"received an undocumented event {event!r}"
        for data in received:
            assert errors(event, data) == [], (event, data)
            seen += 1
    return seen


async def call(client: Client, event: str, data: Any = None, ok: bool = True) -> Any:
    """The event's ack, held to its documented reply."""
    ack = await client.call(event, data)
    assert errors(f"{event}.ack", ack) == [], (event, ack)
    assert ack["success"] is ok, ack
    return ack


async def test_a_live_workers_acks_and_broadcasts_hold_to_the_document(server, base_url, api, token, clients):
    streamer_id, fan_id = unique("streamer"), unique("fan")
    streamer_token = token(streamer_id, "streamer", name="Streamer")
    sid = (await api.create_stream(streamer_token))["stream_id"]
    fan = await clients(base_url, token(fan_id, name="Fan"))
    anonymous = await clients(base_url)
    streamer = await clients(base_url, streamer_token)

    await call(fan, "join_stream", {"stream_id": sid})
    await fan.wait_for("joined_stream")
    await call(anonymous, "join_stream", {"stream_id": sid})
    await fan.wait_for("viewer_joined", lambda e: e["user_id"] is None)
    await call(fan, "send_message", {"stream_id": sid, "message": "gm", "message_type": "EMOJI"})
    tip = {"stream_id": sid, "amount": "5.00", "message": "nice", "client_tip_id": unique("tip")}
    await call(fan, "send_tip", tip)
    assert (await call(fan, "send_tip", tip))["duplicate"] is True
    await call(streamer, "send_alert", {"stream_id": sid, "message": "long", "side": "buy", "price": 97000.5})
    await anonymous.wait_for("chat_message", lambda m: m["message_type"] == "ALERT")
    await anonymous.wait_for("tip_received")

    refused = await call(anonymous, "send_message", {"stream_id": sid, "message": "hi"}, ok=False)
    assert refused["error"]["code"] == "unauthorized"
    await anonymous.wait_for("error", lambda e: e["event"] == "send_message")
    await call(fan, "join_stream", {"stream_id": "no-such-stream"}, ok=False)

    troll = unique("troll")
    await call(streamer, "timeout_user", {"stream_id": sid, "user_id": troll, "seconds": 60})
    await call(streamer, "unban_user", {"stream_id": sid, "user_id": troll})
    await call(streamer, "add_moderator", {"stream_id": sid, "user_id": fan_id})
    await call(streamer, "set_slow_mode", {"stream_id": sid, "seconds": 0})
    await call(fan, "ban_user", {"stream_id": sid, "user_id": streamer_id}, ok=False)
    await fan.wait_for("moderators_changed")
    await fan.wait_for("slow_mode")

    await call(anonymous, "leave_stream")
    await fan.wait_for("viewer_left", lambda e: e["user_id"] is None)
    status, _ = await api.request("POST", f"{sid}/end", streamer_token)
    assert status == 200
    await fan.wait_for("stream_ended")

    fan_heard, anonymous_heard, _ = (assert_documented(c) for c in (fan, anonymous, streamer))
    assert fan_heard > 10 and anonymous_heard > 5
    heard = set(fan.events)
    assert {"joined_stream", "viewer_joined", "chat_message", "tip_received", "user_timed_out"} <= heard
    assert {"user_unbanned", "moderators_changed", "slow_mode", "viewer_left", "stream_ended"} <= heard


@pytest.mark.parametrize("bad", ["not-a-jwt", "expired"])
async def test_a_refused_connect_holds_to_the_documented_connect_error(server, base_url, token, bad):
    client = Client()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(base_url, token(unique("late"), ttl=-120) if bad == "expired" else bad)
    finally:
        await client.close()
    [refusal] = client.events["connect_error"]
    assert refusal["message"] == "unauthorized" == refusal["data"]["code"]
    connect = document()["channels"][asyncapi.CHANNEL]["x-connect"]
    root = {"$schema": DRAFT7, "allOf": [connect["refusal"]], "components": document()["components"]}
    assert list(jsonschema_rs.validator_for(root, offline=True).iter_errors(refusal)) == []
    assert refusal["message"] in connect["codes"]


def test_the_namespace_documented_is_the_hubs():
    assert document()["channels"][asyncapi.CHANNEL]["address"] == NAMESPACE


def test_the_readable_page_names_every_event_and_code():
    """docs/api.md, the page a person reads, keeps up with the document."""
    page = (ROOT / "docs" / "api.md").read_text()
    named = set(re.findall(r"`(\w+)`", page))
    events = set(operation_messages("receive")) | set(operation_messages("send"))
    assert events - named == set(), "events docs/api.md does not name"
    assert set(HTTP_STATUS) - named == set(), "error codes docs/api.md does not name"
    assert {ASYNCAPI, "/api/v1/openapi.json"} <= set(re.findall(r"`(/api/v1/[\w.]+)`", page))
