"""The Socket.IO API, namespace ``/streaming``, as an AsyncAPI 3.0 document, served at
``GET /api/v1/asyncapi.json``.

The document is written from the hub's point of view: a client event is an operation the hub
``receive``s, its acknowledgement the operation's ``reply``; a server event one it ``send``s.
Each event is one entry of ``client_events()`` or ``server_events()``; the moderation events
are generated from ``payloads.MODERATION``, the limits from ``hub.domain.payloads`` and the
objects both APIs carry (stream, message, moderation action) from the OpenAPI document, so that
neither can drift from the code that enforces or builds them. ``tests/test_asyncapi.py`` checks
the document against the official AsyncAPI 3.0 schema, against the namespace's handlers and the
events the code emits, and holds a live worker's acks and broadcasts to it.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import orjson

from hub.domain import payloads
from hub.frames import NAMESPACE
from hub.settings import Settings
from hub.transport import openapi
from hub.transport.openapi import closed, ref, text

Schema = dict[str, Any]

PATH = openapi.ASYNCAPI_PATH
CHANNEL = "streaming"

_DEFAULT: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}  # the limits by default
# What each error code means; every code of ``hub.errors.HTTP_STATUS``, and no other.
CODES = {
    "invalid": "Malformed packet or payload: not JSON, wrong types, out-of-range values.",
    "unauthorized": "No token where one is needed, or a bad or expired one. An event refused because "
    "the token expired since the connect is followed by a disconnect: connect again with a new token.",
    "forbidden": "Signed in but not allowed: not the streamer, not a moderator, tipping yourself.",
    "not_found": "No such stream (any stream id that is no UUID included), or no such message.",
    "conflict": "The action does not fit the state: the user is already banned, not sanctioned, …",
    "stream_not_live": "The stream is not LIVE (scheduled or ended).",
    "not_joined": "Chat or tip without watching that stream (or the stream ended meanwhile).",
    "payload_too_large": f"The event is over HUB_MAX_PAYLOAD ({_DEFAULT['max_payload'] // 1024} KiB by "
    "default); the socket stays open.",
    "rate_limited": "Over a per-user or per-address rate; `retry_after` says how long to wait.",
    "banned": "Banned from the stream by its streamer, a moderator or an admin.",
    "timed_out": "Timed out in the stream; `retry_after` says how many seconds are left.",
    "slow_mode": "Slow mode is on and your last message is too recent; `retry_after` says how long.",
    "unavailable": "A backing service is unavailable, or the worker is shutting down: try again.",
}
WITH_RETRY_AFTER = ("rate_limited", "timed_out", "slow_mode")
# Any event may be refused with these: a packet the hub cannot read, a connection gone or whose
# token expired, an event over the size limit, Redis unreachable.
COMMON_CODES = ("invalid", "unauthorized", "payload_too_large", "unavailable")
# The objects the REST API carries too, as the OpenAPI document defines them.
SHARED = (
    "Id",
    "Time",
    "TimeOrNull",
    "Money",
    "Status",
    "Stream",
    "Message",
    "Alert",
    "ModerationAction",
    "TargetUser",
)


@dataclass(frozen=True)
class ClientEvent:
    """An event a client sends, with the ack the hub answers: ``payload`` None for an event
    without one; ``ack`` the success's fields besides ``success``; ``codes`` the refusals it
    may answer besides ``COMMON_CODES``; ``example`` a payload and ``ack_example`` its ack."""

    name: str
    summary: str
    payload: Schema | None
    ack: Schema
    codes: tuple[str, ...]
    example: Any
    ack_example: Any
    description: str = ""


@dataclass(frozen=True)
class ServerEvent:
    """An event the hub emits: ``to`` who gets it, ``payload`` its data's schema."""

    name: str
    summary: str
    to: str
    payload: Schema
    example: Any
    description: str = ""


# -- examples ---------------------------------------------------------------------------

STREAM_ID = "01935f6e-8a20-7c4e-9d51-2b7a9c0e4f11"
MESSAGE_ID = "01935f70-1b3c-7a2d-8e4f-5a6b7c8d9e0f"
TIP_ID = "01935f71-2c4d-7b3e-9f50-6b7c8d9e0f1a"
ACTION_ID = "01935f72-3d5e-7c4f-8a61-7c8d9e0f1a2b"
AT = "2026-12-03T06:00:00.000Z"


def _stream_example() -> dict[str, Any]:
    return {
        "stream_id": STREAM_ID,
        "streamer_id": "alice",
        "streamer_name": "Alice",
        "title": "Live trading",
        "description": "",
        "thumbnail_url": None,
        "status": "LIVE",
        "viewer_count": 12,
        "peak_viewers": 15,
        "started_at": AT,
        "ended_at": None,
        "duration_seconds": None,
        "category": "crypto",
        "is_recording": False,
        "recording_url": None,
        "scheduled_at": None,
        "created_at": AT,
        "updated_at": AT,
    }


def _message_example(**fields: Any) -> dict[str, Any]:
    return {
        "message_id": MESSAGE_ID,
        "stream_id": STREAM_ID,
        "user_id": "bob",
        "username": "Bob",
        "message": "gm",
        "message_type": "TEXT",
        "tip_amount": None,
        "created_at": AT,
        **fields,
    }


def _tip_example() -> dict[str, Any]:
    return {
        "tip_id": TIP_ID,
        "stream_id": STREAM_ID,
        "from_user": "bob",
        "from_username": "Bob",
        "to_user": "alice",
        "amount": 5.0,
        "platform_fee": 0.25,
        "currency": "USD",
        "message": "great call",
        "created_at": AT,
    }


def _joined_example() -> dict[str, Any]:
    return {
        "success": True,
        "stream": _stream_example(),
        "viewer_count": 12,
        "recent_messages": [_message_example()],
        "has_more": False,
    }


# -- payload schemas --------------------------------------------------------------------

STREAM = {
    "type": "string",
    "format": "uuid",
    "description": "The stream's id, a UUID in any case; anything else names no stream (`not_found`).",
}
USER = {"type": "string", "description": "A user id (a token's `sub`)."}
USER_OR_NULL = {"type": ["string", "null"], "description": "A user id; null for an anonymous viewer."}
COUNT = {"type": "integer", "minimum": 0}


def request(required: list[str], properties: dict[str, Schema], description: str = "") -> Schema:
    """An event's payload: an object; fields it does not name are ignored (those naming a
    user, ``user_id`` but for moderation, ``username``, ``from_user_id``, among them)."""
    schema: Schema = {"type": "object", "required": required, "properties": properties}
    if description:
        schema["description"] = description
    return schema


def _amount() -> Schema:
    low, high = _DEFAULT["tip_min"], _DEFAULT["tip_max"]
    return {
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01},
            {
                "type": "string",
                "pattern": r"^(?:[0-9]*[1-9][0-9]*(?:\.[0-9]{1,2})?|0+\.(?:[1-9][0-9]?|0[1-9]))$",
            },
        ],
        "description": "An exact amount with at most two decimals, as a JSON number or its decimal "
        f'text (`"5.00"`); between HUB_TIP_MIN and HUB_TIP_MAX inclusive ({low} and {high} by '
        "default). Read as a decimal, never through a binary float.",
    }


def _client_tip_id() -> Schema:
    most = payloads.CLIENT_TIP_ID_MAX
    return {
        "type": ["string", "null"],
        "pattern": f"^[^\\x00-\\x20\\x7f-\\xa0]{{1,{most}}}$",
        "description": f"1 to {most} printable characters without spaces, chosen by the client: "
        "the same id from the same user answers the first tip's ack again (with `duplicate: true`) "
        "and charges nothing twice.",
    }


@functools.cache
def _openapi_schemas() -> dict[str, Schema]:
    """The OpenAPI document's schemas (which do not depend on the REST prefix)."""
    schemas: dict[str, Schema] = openapi.document("")["components"]["schemas"]
    return schemas


def _alert_request() -> Schema:
    fields = _openapi_schemas()["AlertRequest"]["properties"]
    return request(["stream_id", "message"], {"stream_id": STREAM, **fields})


def _moderation_payload(action: payloads.ModerationAction) -> Schema:
    fields: dict[str, Schema] = {"stream_id": STREAM}
    if "user_id" in action.needs:
        fields["user_id"] = ref("TargetUser")
    if "message_id" in action.needs:
        fields["message_id"] = {"type": "string", "format": "uuid", "description": "The message's id."}
    if action.seconds is not None:
        low, high = action.seconds
        fields["seconds"] = {"type": "integer", "minimum": low, "maximum": high}
    if action.reason:
        fields["reason"] = text(payloads.REASON_MAX, required=False, description="Why, recorded.")
    return request(["stream_id", *action.needs], fields)


def _moderation_ack(action: payloads.ModerationAction) -> Schema:
    ack: Schema = {"action": ref("ModerationAction")}
    if action.announced is None:
        ack["moderators"] = {"type": "array", "items": USER, "description": "The moderators now."}
    return ack


def _moderation_example(action: payloads.ModerationAction) -> dict[str, Any]:
    example: dict[str, Any] = {"stream_id": STREAM_ID}
    if "user_id" in action.needs:
        example["user_id"] = "troll"
    if "message_id" in action.needs:
        example["message_id"] = MESSAGE_ID
    if action.seconds is not None:
        low, high = action.seconds
        example["seconds"] = min(max(600, low), high)
    if action.reason:
        example["reason"] = "spam"
    return example


def _moderation_ack_example(action: payloads.ModerationAction) -> dict[str, Any]:
    payload = _moderation_example(action)
    record = {"action_id": ACTION_ID, "action": action.name, "by": "alice", "created_at": AT, **payload}
    if "until" in action.recorded:
        record["until"] = "2026-12-03T06:10:00.000Z"
    ack: dict[str, Any] = {"success": True, "action": record}
    if action.announced is None:
        ack["moderators"] = ["troll"] if action.change == "add_moderator" else []
    return ack


_WHO = {True: "the streamer or an admin", False: "the streamer, its moderators or an admin"}


# -- the events -------------------------------------------------------------------------


def client_events() -> tuple[ClientEvent, ...]:
    """Every event the namespace handles, in the order a client meets them."""
    chat_codes = ("not_joined", "not_found", "banned", "timed_out", "slow_mode", "rate_limited")
    message_ack = {"message": ref("Message")}
    return (
        ClientEvent(
            name="join_stream",
            summary="Watch a LIVE stream (and stop watching the one watched before)",
            payload=request(
                ["stream_id"],
                {
                    "stream_id": STREAM,
                    "last_message_id": {
                        "type": ["string", "null"],
                        "format": "uuid",
                        "description": "The last message the client has: the recent messages are "
                        "those after it. Without it, the last 50.",
                    },
                },
            ),
            ack=_joined_fields(),
            codes=("not_found", "stream_not_live", "banned", "rate_limited"),
            example={"stream_id": STREAM_ID},
            ack_example=_joined_example(),
            description="Anonymous connections may join. The ack is also emitted as "
            "`joined_stream`; the room hears `viewer_joined` when the count of distinct viewers rises.",
        ),
        ClientEvent(
            name="leave_stream",
            summary="Stop watching",
            payload=None,
            ack={"stream_id": {"anyOf": [ref("Id"), {"type": "null"}], "description": "The stream left."}},
            codes=(),
            example=None,
            ack_example={"success": True, "stream_id": STREAM_ID},
        ),
        ClientEvent(
            name="send_message",
            summary="Chat in the stream the socket watches",
            payload=request(
                ["stream_id", "message"],
                {
                    "stream_id": STREAM,
                    "message": text(payloads.MESSAGE_MAX, required=True),
                    "message_type": {"enum": ["TEXT", "EMOJI", None], "description": "TEXT when absent."},
                },
            ),
            ack=message_ack,
            codes=chat_codes,
            example={"stream_id": STREAM_ID, "message": "gm"},
            ack_example={"success": True, "message": _message_example()},
            description="Signed in and joined to that stream. The room, sender included, gets the "
            "message as `chat_message`.",
        ),
        ClientEvent(
            name="send_tip",
            summary="Tip the streamer of the stream the socket watches",
            payload=request(
                ["stream_id", "amount"],
                {
                    "stream_id": STREAM,
                    "amount": _amount(),
                    "message": text(payloads.MESSAGE_MAX, required=False),
                    "to_user_id": {
                        "type": ["string", "null"],
                        "description": "If given, the stream's streamer (else `invalid`).",
                    },
                    "currency": {
                        "type": ["string", "null"],
                        "description": f"The configured currency, HUB_CURRENCY ({_DEFAULT['currency']} by "
                        "default), in any case.",
                    },
                    "client_tip_id": _client_tip_id(),
                },
            ),
            ack={
                "tip": ref("Tip"),
                "message_id": {**ref("Id"), "description": "The tip's TIP chat message."},
                "duplicate": {"const": True, "description": "A retry: this is the first tip's ack."},
            },
            codes=("forbidden", "not_joined", "not_found", "banned", "timed_out", "rate_limited"),
            example={
                "stream_id": STREAM_ID,
                "amount": "5.00",
                "message": "great call",
                "client_tip_id": "t-1",
            },
            ack_example={"success": True, "tip": _tip_example(), "message_id": MESSAGE_ID},
            description="Signed in, joined, not your own stream. The room gets `tip_received` and "
            "the tip as a `chat_message` of type TIP.",
        ),
        ClientEvent(
            name="send_alert",
            summary="The streamer's trade alert",
            payload=_alert_request(),
            ack=message_ack,
            codes=("forbidden", "not_found", "stream_not_live", "rate_limited"),
            example={
                "stream_id": STREAM_ID,
                "message": "long",
                "symbol": "BTC",
                "side": "BUY",
                "price": 97000.5,
            },
            ack_example={
                "success": True,
                "message": _message_example(
                    user_id="alice",
                    username="Alice",
                    message="long",
                    message_type="ALERT",
                    alert={"symbol": "BTC", "side": "BUY", "price": 97000.5},
                ),
            },
            description="The stream's streamer only (the socket need not watch it). The room gets "
            "a `chat_message` of type ALERT with `alert: {symbol, side, price}`.",
        ),
        ClientEvent(
            name="refresh_token",
            summary="Swap the socket's token for a newer one of the same user",
            payload=request(
                ["token"], {"token": {"type": "string", "minLength": 1, "description": "A JWT."}}
            ),
            ack={
                "expires_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "The new token's expiry.",
                }
            },
            codes=("forbidden",),
            example={"token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl"},
            ack_example={"success": True, "expires_at": AT},
            description="Without reconnecting: a token of another user is `forbidden`, one that does "
            "not verify `unauthorized`; either way the socket keeps its old identity. Answers "
            "`token_expiring`.",
        ),
        *(
            ClientEvent(
                name=action.name,
                summary=action.route.summary,
                payload=_moderation_payload(action),
                ack=_moderation_ack(action),
                codes=(
                    "forbidden",
                    "not_found",
                    "stream_not_live",
                    "rate_limited",
                    *(("conflict",) if action.conflicts else ()),
                ),
                example=_moderation_example(action),
                ack_example=_moderation_ack_example(action),
                description=f"Moderation, by {_WHO[action.owner_only]}; the socket need not watch "
                f"the stream. The room gets `{action.event}`.",
            )
            for action in payloads.MODERATION.values()
        ),
    )


def _joined_fields() -> Schema:
    return {
        "stream": ref("Stream"),
        "viewer_count": COUNT,
        "recent_messages": {
            "type": "array",
            "items": ref("Message"),
            "description": "Oldest first: the last 50, or those after `last_message_id`.",
        },
        "has_more": {"type": "boolean", "description": "Older messages were left out (`GET …/chat`)."},
    }


def server_events() -> tuple[ServerEvent, ...]:
    """Every event the hub emits on the namespace."""
    return (
        ServerEvent(
            name="joined_stream",
            summary="The join succeeded",
            to="the joining socket",
            payload=acked(_joined_fields()),
            example=_joined_example(),
            description="The same object as `join_stream`'s ack.",
        ),
        ServerEvent(
            name="viewer_joined",
            summary="A new viewer",
            to="the room but the joiner",
            payload=closed(
                ["stream_id", "viewer_count", "user_id", "username"],
                {"stream_id": ref("Id"), "viewer_count": COUNT, "user_id": USER_OR_NULL, "username": NAME},
            ),
            example={"stream_id": STREAM_ID, "viewer_count": 13, "user_id": "bob", "username": "Bob"},
            description="Only when the count of distinct viewers rises. In a large stream, at most "
            "one viewer event a moment: the last one is sent with the count then.",
        ),
        ServerEvent(
            name="viewer_left",
            summary="A viewer's last connection left",
            to="the room",
            payload=closed(
                ["stream_id", "viewer_count", "user_id"],
                {"stream_id": ref("Id"), "viewer_count": COUNT, "user_id": USER_OR_NULL},
            ),
            example={"stream_id": STREAM_ID, "viewer_count": 12, "user_id": "bob"},
            description="On leave, disconnect, ban, or within 30 s of its worker dying.",
        ),
        ServerEvent(
            name="chat_message",
            summary="A chat message, tip message or trade alert",
            to="the room, sender included",
            payload=ref("Message"),
            example=_message_example(),
        ),
        ServerEvent(
            name="tip_received",
            summary="A tip",
            to="the room",
            payload=ref("Tip"),
            example=_tip_example(),
            description="Followed by the tip's `chat_message` of type TIP.",
        ),
        ServerEvent(
            name="stream_ended",
            summary="The stream ended; the room is emptied after it",
            to="the room",
            payload=closed(
                ["stream_id", "duration"],
                {"stream_id": ref("Id"), "duration": {**COUNT, "description": "Seconds it was live."}},
            ),
            example={"stream_id": STREAM_ID, "duration": 3600},
        ),
        ServerEvent(
            name="token_expiring",
            summary="The socket's token expires in about a minute",
            to="the signed-in socket",
            payload=closed(
                ["expires_at", "seconds_left"],
                {"expires_at": {"type": "string", "format": "date-time"}, "seconds_left": COUNT},
            ),
            example={"expires_at": AT, "seconds_left": 60},
            description="Once per token, a minute before it expires (at once if less is left); "
            "send `refresh_token` to keep the connection's identity.",
        ),
        ServerEvent(
            name="banned",
            summary="You were banned from the stream",
            to="the banned user's sockets in the room",
            payload=closed(
                ["stream_id", "reason"], {"stream_id": ref("Id"), "reason": {"type": ["string", "null"]}}
            ),
            example={"stream_id": STREAM_ID, "reason": "spam"},
            description="The sockets leave the room and watch nothing; the room hears `user_banned`.",
        ),
        *_moderation_events(),
        ServerEvent(
            name="error",
            summary="An event was refused",
            to="the sending socket alone",
            payload=_error_event(),
            example={"code": "not_joined", "message": "Join the stream first.", "event": "send_message"},
            description="Beside the error ack, for clients that send without an ack callback.",
        ),
    )


NAME = {"type": ["string", "null"], "description": "The user's display name (the token's `name`)."}
_FIELDS: dict[str, Schema] = {
    "user_id": USER,
    "message_id": ref("Id"),
    "until": {**ref("Time"), "description": "When the timeout ends."},
    "seconds": {**COUNT, "description": "Seconds between two messages of a viewer; 0: off."},
}


def _moderation_events() -> list[ServerEvent]:
    """One event per distinct ``event`` of ``payloads.MODERATION``: the action's announced
    fields and its actor, or the moderators after a change of them."""
    events: dict[str, ServerEvent] = {}
    for action in payloads.MODERATION.values():
        if action.event in events:
            continue
        record = _moderation_ack_example(action)["action"]
        if action.announced is None:
            fields: dict[str, Schema] = {"moderators": {"type": "array", "items": USER}}
            example = {"stream_id": STREAM_ID, "moderators": ["troll"]}
        else:
            fields = {
                **{name: _FIELDS[name] for name in action.announced},
                "by": {**USER, "description": "Who acted."},
            }
            example = {name: record[name] for name in ("stream_id", *fields)}
        after = " or ".join(a.name for a in payloads.MODERATION.values() if a.event == action.event)
        events[action.event] = ServerEvent(
            name=action.event,
            summary=f"Moderation: after {after}",
            to="the room",
            payload=closed(["stream_id", *fields], {"stream_id": ref("Id"), **fields}),
            example=example,
        )
    return list(events.values())


# -- errors -----------------------------------------------------------------------------


def _error_body(extra: dict[str, Schema] | None = None) -> Schema:
    fields = {
        "code": ref("ErrorCode"),
        "message": {"type": "string", "minLength": 1, "description": "For humans; may change."},
        "retry_after": {"type": "integer", "minimum": 1, "description": "Seconds to wait."},
        **(extra or {}),
    }
    return closed(
        ["code", "message", *(extra or {})],
        fields,
        allOf=[
            {
                "if": {"properties": {"code": {"enum": list(WITH_RETRY_AFTER)}}},
                "then": {"required": ["retry_after"]},
            }
        ],
    )


def _error_event() -> Schema:
    return _error_body(
        {"event": {"type": ["string", "null"], "description": "The refused event (null: unreadable)."}}
    )


def acked(fields: Schema) -> Schema:
    """A success ack: ``success: true`` and ``fields``, all present but ``OPTIONAL`` ones."""
    required = ["success", *(name for name in fields if name not in OPTIONAL)]
    return closed(required, {"success": {"const": True}, **fields})


OPTIONAL = ("duplicate",)


def refusal(codes: tuple[str, ...]) -> Schema:
    """An error ack whose ``error.code`` is one of ``codes``."""
    return {
        "allOf": [ref("Refusal"), {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}}]
    }


def _schemas() -> dict[str, Schema]:
    shared = _openapi_schemas()
    return {
        **{name: shared[name] for name in SHARED},
        "Tip": closed(
            [
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
            ],
            {
                "tip_id": ref("Id"),
                "stream_id": ref("Id"),
                "from_user": USER,
                "from_username": NAME,
                "to_user": {**USER, "description": "The streamer."},
                "amount": ref("Money"),
                "platform_fee": {**ref("Money"), "description": "amount × HUB_PLATFORM_FEE, half-up."},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "message": {"type": "string"},
                "created_at": ref("Time"),
            },
        ),
        "ErrorCode": {
            "oneOf": [{"const": code, "description": meaning} for code, meaning in CODES.items()],
            "description": "Every refusal's code.",
        },
        "ErrorBody": _error_body(),
        "Refusal": closed(
            ["success", "error"],
            {"success": {"const": False}, "error": ref("ErrorBody")},
            description="Every error ack.",
        ),
        "ConnectAuth": {
            "type": ["object", "null"],
            "properties": {"token": {"type": "string", "description": "A JWT (HS256, RS256 or ES256)."}},
            "description": "The Socket.IO connect `auth` payload. Without a token (or with none at "
            "all) the connection is an anonymous viewer: it may join and watch, not chat, tip or "
            "moderate. A bearer `Authorization` header on the handshake is read when `auth` has none.",
        },
        "ConnectError": closed(
            ["message", "data"],
            {"message": ref("ErrorCode"), "data": ref("ErrorBody")},
            description="A refused connection's `connect_error`: the code, and the error body.",
        ),
    }


# -- the document -----------------------------------------------------------------------


def _message(
    name: str, summary: str, payload: Schema | None, examples: list[Any], description: str
) -> Schema:
    message: Schema = {"name": name, "title": name, "summary": summary}
    if payload is not None:  # else none is read (any given is ignored)
        message["payload"] = payload
        message["examples"] = [{"payload": example} for example in examples]
    if description:
        message["description"] = description
    return message


def _ack(event: ClientEvent) -> Schema:
    codes = tuple(dict.fromkeys((*COMMON_CODES, *event.codes)))
    refused = {
        "success": False,
        "error": {"code": "invalid", "message": "The payload must be a JSON object."},
    }
    return _message(
        f"{event.name}.ack",
        f"The acknowledgement of {event.name}",
        {"oneOf": [acked(event.ack), refusal(codes)]},
        [event.ack_example, refused],
        f"What the ack callback of `{event.name}` gets. Refusal codes: "
        + ", ".join(f"`{code}`" for code in codes)
        + "; a refusal is also emitted as `error` to the socket.",
    )


def _messages() -> dict[str, Schema]:
    messages: dict[str, Schema] = {}
    for event in client_events():
        example = [] if event.example is None else [event.example]
        messages[event.name] = _message(event.name, event.summary, event.payload, example, event.description)
        messages[f"{event.name}.ack"] = _ack(event)
    for sent in server_events():
        description = f"To {sent.to}. {sent.description}".strip()
        messages[sent.name] = _message(sent.name, sent.summary, sent.payload, [sent.example], description)
    return messages


def _operations() -> dict[str, Schema]:
    channel = {"$ref": f"#/channels/{CHANNEL}"}

    def message(key: str) -> Schema:
        return {"$ref": f"#/channels/{CHANNEL}/messages/{key}"}

    operations: dict[str, Schema] = {}
    for event in client_events():
        operations[event.name] = {
            "action": "receive",
            "channel": channel,
            "summary": event.summary,
            "messages": [message(event.name)],
            "reply": {"channel": channel, "messages": [message(f"{event.name}.ack")]},
        }
    for sent in server_events():
        operations[sent.name] = {
            "action": "send",
            "channel": channel,
            "summary": sent.summary,
            "messages": [message(sent.name)],
        }
    return operations


DESCRIPTION = (
    "The Socket.IO side of the streaming hub (the REST side is described by `/api/v1/openapi.json`). "
    "Clients connect with Socket.IO v4 (Engine.IO 4) to the path `/socket.io/` and the namespace "
    "`/streaming`, the token in the connect `auth` payload `{token}`; without one the connection is "
    "an anonymous viewer. A refused connection gets `connect_error` (`ConnectError`).\n\n"
    "Operations are the hub's: `receive` is an event a client sends, its `reply` the ack the "
    "callback gets, `{success: true, …}` or `{success: false, error: {code, message, retry_after?}}`; "
    "`send` is an event the hub emits. Identity comes from the token only: payload fields naming "
    "the sender are ignored. Money is exact: amounts are JSON numbers with at most two decimals "
    "(read them as decimals), and an inbound amount may also be its decimal text."
)


def document() -> Schema:
    """The whole AsyncAPI 3.0 document of namespace ``/streaming``."""
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Streaming hub Socket.IO API", "version": "1", "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "hub": {
                "host": "{host}",
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "Any web worker (behind the load balancer); long-polling over http(s) "
                "works too. Signing in is optional: see the channel's `x-connect`.",
                "variables": {"host": {"default": "localhost:8080", "description": "host[:port]"}},
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            }
        },
        "channels": {
            CHANNEL: {
                "address": NAMESPACE,
                "title": "The /streaming namespace",
                "description": "A socket watches at most one stream; a stream's room gets its "
                "broadcasts, from every worker. Events are handled one at a time per socket, in order.",
                "messages": _messages(),
                "x-connect": {
                    "auth": ref("ConnectAuth"),
                    "refusal": ref("ConnectError"),
                    "codes": ["unauthorized", "rate_limited", "unavailable"],
                },
            }
        },
        "operations": _operations(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT in the Socket.IO connect `auth` payload, `{token}`, or else in "
                    "the handshake's `Authorization: Bearer` header. Claims: `sub` (user id), `name`, "
                    "`roles` (`streamer`, `admin`), `exp`. Optional: without it, an anonymous viewer.",
                }
            },
        },
    }


@functools.cache
def encoded() -> bytes:
    return orjson.dumps(document())
