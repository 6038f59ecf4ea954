"""The wire format, in one place: what the hub writes to sockets and to a stream's channel, and
the little it reads of what clients send before python-socketio decodes it.

Out: a server event is an Engine.IO message whose payload is a Socket.IO EVENT packet on the
hub's namespace, ``42/streaming,["chat_message",{...}]`` (``event``). It is encoded once, where
the event happens, and written as is to every socket of every worker in the room.

On a stream's channel (``Keys.room``) each Redis message is one of:

- events for every socket in the room: ``\\n`` then the event texts, one per line
  (``room_message``);
- events for every socket but one: the socket id to skip, ``\\n``, then the event texts
  (``room_message(..., skip=sid)``);
- an order to every worker (``!`` first): ``!close``, the stream ended and its room is emptied
  (``CLOSE``); ``!ban {"user_id","reason"}``, the user's sockets leave the room (``ban``).

JSON never holds a raw newline, so the lines cannot be confused. Lua scripts publish these
bytes as Python made them; the few events whose data only a script knows (viewer counts, the
moderator list, a stream's duration) are built from ``lua_prelude``, written here, or from an
``Around`` Python made.

In: ``read_head`` reads a client packet's type, namespace, ack id and event name without
decoding its JSON, to answer a packet the hub refuses unread.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

import orjson

NAMESPACE = "/streaming"

_EVENT_PREFIX = b"42" + NAMESPACE.encode() + b","
_EVERYONE = b"\n"
_ORDER = b"!"
CLOSE = b"!close"
_BAN = b"!ban "


def event(name: str, data_json: bytes) -> bytes:
    """A server event's Engine.IO text: ``42/streaming,["name",data]``; ``data_json`` is the
    event's data already encoded as JSON."""
    return _EVENT_PREFIX + b"[" + orjson.dumps(name) + b"," + data_json + b"]"


def room_message(*texts: bytes, skip: str | None = None) -> bytes:
    """Event texts for a stream's channel: to every socket in the room, or every one but
    ``skip``."""
    return (skip.encode() if skip else b"") + _EVERYONE + b"\n".join(texts)


def ban(user_id: str, reason: str | None) -> bytes:
    """The order that takes a banned user's sockets out of the room on every worker."""
    return _BAN + orjson.dumps({"user_id": user_id, "reason": reason})


class Around(NamedTuple):
    """A room message with one hole, filled by a Lua script with JSON only it knows (the
    moderators after a change): the script publishes ``head .. value .. tail`` and reads
    neither."""

    head: bytes
    tail: bytes


def around(name: str, data_head: bytes, data_tail: bytes) -> Around:
    """A room message of event ``name`` whose data is ``data_head``, the hole, ``data_tail``."""
    whole = room_message(event(name, data_head + b"\x00" + data_tail))
    head, _, tail = whole.partition(b"\x00")
    return Around(head, tail)


class Events(NamedTuple):
    """Events of a channel message for the room's sockets (but ``skip``, when set)."""

    skip: str | None
    texts: list[bytes]


class Order(NamedTuple):
    """An order of a channel message: ``close`` (``user_id`` None) or ``ban``."""

    kind: str
    user_id: str | None = None
    reason: str | None = None


def read_room_messages(items: list[bytes]) -> Iterator[Events | Order]:
    """One room's channel messages of one read, in order, with consecutive events for every
    socket merged into one ``Events`` (written together, one write per socket)."""
    texts: list[bytes] = []
    for data in items:
        if data[:1] == _EVERYONE:
            texts.extend(data[1:].split(b"\n"))
            continue
        if texts:
            yield Events(None, texts)
            texts = []
        if data[:1] == _ORDER:
            yield _order(data)
        else:
            skip, _, rest = data.partition(b"\n")
            yield Events(skip.decode(), rest.split(b"\n"))
    if texts:
        yield Events(None, texts)


def _order(data: bytes) -> Order:
    if data == CLOSE:
        return Order("close")
    if data.startswith(_BAN):
        body = orjson.loads(data[len(_BAN) :])
        return Order("ban", str(body["user_id"]), body.get("reason"))
    return Order(data[1:].split(b" ", 1)[0].decode(errors="replace"))


def lua_prelude() -> str:
    """Lua functions the scripts publish with, so that the format above is written here only.

    ``frame(event, data)`` is an event's text, ``publish_events(channel, skip, texts)`` sends
    texts to a room, ``publish_order(channel, order)`` sends an order (``CLOSE``)."""
    return (
        f"local FRAME_PREFIX = '{_EVENT_PREFIX.decode()}'\n"
        f"local ORDER_CLOSE = '{CLOSE.decode()}'\n"
        "local function frame(event, data) return FRAME_PREFIX .. cjson.encode({event, data}) end\n"
        "local function publish_events(channel, skip, texts)\n"
        "  redis.call(PUBLISH, channel, (skip or '') .. '\\n' .. table.concat(texts, '\\n'))\n"
        "end\n"
        "local function publish_order(channel, order) redis.call(PUBLISH, channel, order) end\n"
    )


class Head(NamedTuple):
    """What ``read_head`` reads of a client's Socket.IO packet."""

    packet_type: str
    namespace: str
    ack_id: int | None
    event: str | None


# A packet's head: type, attachments, namespace, ack id, and the event name if it comes first.
_HEAD = re.compile(r'([0-9])(?:\d{1,10}-)?(/[^,\[]{0,100},)?(\d{1,12})?(?:\["([^"\\]{1,64})")?')


def read_head(data: str) -> Head | None:
    """The head of a Socket.IO packet (its first 200 characters at most), or None when it does
    not start with a packet type. The ack id and event name are only an EVENT's."""
    head = _HEAD.match(data, 0, 200)
    if head is None:
        return None
    is_event = head.group(1) == "2"
    return Head(
        head.group(1),
        (head.group(2) or "/,")[:-1],
        int(head.group(3)) if is_event and head.group(3) is not None else None,
        head.group(4) if is_event else None,
    )
