"""Every place the hub overrides, replaces or relies on a private part of python-socketio or
python-engineio, in one list (``HOOKS``), checked against the versions in ``CHECKED_WITH``.

Each ``Hook`` names the upstream part, the hub's code that hooks it, why, and the signature and
source fingerprint of the upstream code as it was checked. ``tests/test_hooks.py`` fails,
naming the hook, when an installed version no longer has that code, or its signature or source
changed: read the new upstream code, adapt the hub's hook, then record the new values
(``problems`` prints them). The same test makes every override run through a real app.

The room bus owns its Redis connection (``hub.transport.pubsub``), so python-socketio's
``AsyncRedisManager`` (``_redis_connect``, ``_redis_listen_with_retries``) is not hooked: the
hub's manager implements ``AsyncPubSubManager``'s two declared backend methods instead.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

CHECKED_WITH = {"python-socketio": "5.18.1", "python-engineio": "4.15.1"}


@dataclass(frozen=True)
class Hook:
    """One private upstream part the hub depends on.

    ``upstream``: its qualified name. ``where``: the hub's code that hooks it. ``code``: the
    upstream function whose ``signature`` and source ``fingerprint`` stand for it (the part
    itself when it is a function; for an attribute, the upstream code that defines or reads it,
    whose source must still contain ``text``)."""

    upstream: str
    where: tuple[str, ...]
    why: str
    signature: str
    fingerprint: str
    code: str = ""
    text: str = ""

    @property
    def checked(self) -> str:
        return self.code or self.upstream


SIO = "socketio.async_server.AsyncServer"
EIO = "engineio.async_server.AsyncServer"
EIO_WS = "engineio.async_drivers.aiohttp.WebSocket"
EIO_SOCKET = "engineio.async_socket.AsyncSocket"
MANAGER = "socketio.async_pubsub_manager.AsyncPubSubManager"
BASE_MANAGER = "socketio.base_manager.BaseManager"
SERVER = "hub.transport.server"
ROOMBUS = "hub.transport.roombus.HubRedisManager"
FANOUT = "hub.transport.fanout"

HOOKS: tuple[Hook, ...] = (
    # -- python-socketio's server ----------------------------------------------------
    Hook(
        f"{SIO}._handle_eio_connect",
        (f"{SERVER}.HubServer._handle_eio_connect",),
        "A client address over its connection rate or session count is refused at the "
        "Engine.IO handshake, before any namespace; a session that connects no namespace is "
        "closed after a while.",
        "(self, eio_sid, environ)",
        "76704886d944a7e6",
    ),
    Hook(
        f"{SIO}._handle_eio_disconnect",
        (f"{SERVER}.HubServer._handle_eio_disconnect",),
        "The closed session is released from its client address's count.",
        "(self, eio_sid, reason)",
        "9344593148b66fd9",
    ),
    Hook(
        f"{SIO}._handle_eio_message",
        (f"{SERVER}.HubServer._handle_eio_message",),
        "Every client packet is answered: one too large, binary, of a type a client may not "
        "send, or unreadable is refused from its head (hub.frames.read_head) without being "
        "decoded, and the connection stays open.",
        "(self, eio_sid, data)",
        "bef50fc0e1635921",
    ),
    Hook(
        f"{SIO}._handle_event",
        (f"{SERVER}.HubServer._handle_event",),
        "An event with no name, or a name that is no event of the namespace (lifecycle names "
        "included), is refused `invalid` instead of reaching a handler or being dropped.",
        "(self, eio_sid, namespace, id, data)",
        "65178105ef8b593d",
    ),
    Hook(
        f"{SIO}._send_packet",
        (f"{SERVER}.HubServer._send_packet",),
        "Packets to one socket are written straight to its transport (fanout.Writer), with "
        "its bounded buffer, not through Engine.IO's per-socket queue and task.",
        "(self, eio_sid, pkt)",
        "a00022b42c1c29e9",
    ),
    Hook(
        f"{SIO}._send_eio_packet",
        (f"{SERVER}.HubServer._send_eio_packet",),
        "python-socketio's room emits (encoded once) go the same direct way as _send_packet.",
        "(self, eio_sid, eio_pkt)",
        "64cf72a2ab7d75b1",
    ),
    Hook(
        "socketio.base_server.BaseServer.manager_initialized",
        ("hub.worker.Worker._begin",),
        "The client manager, and with it the room bus's listener, starts with the worker "
        "rather than at its first connection (which is when python-socketio starts it).",
        "(self, eio_sid, environ)",
        "76704886d944a7e6",
        code=f"{SIO}._handle_eio_connect",
        text="self.manager_initialized",
    ),
    Hook(
        "socketio.async_admin.InstrumentedAsyncServer._emit_server_stats",
        ("hub.worker._socketio_server",),
        "The Admin UI's statistics count the sockets of the namespaces listed in the server's "
        "handlers only; a namespace class is not listed there, so the worker lists it.",
        "(self)",
        "b4e4cc6bc0974aab",
        text="self.sio.handlers.keys()",
    ),
    Hook(
        "socketio.packet.Packet.decode",
        (f"{SERVER}.HubPacket.decode",),
        "A packet python-socketio cannot read raises Unreadable, answered `invalid`; the "
        "subclass's `json` (exact decimals) is the hub server's alone.",
        "(self, encoded_packet)",
        "61ad7904b539f472",
    ),
    # -- python-socketio's client manager --------------------------------------------
    Hook(
        f"{MANAGER}._listen",
        (f"{ROOMBUS}._listen",),
        "python-socketio's channel is read by the room bus's listener, with the stream "
        "channels on the same connection (one listener, one resubscription).",
        "(self)",
        "1fba9bbe5fb0c801",
    ),
    Hook(
        f"{MANAGER}._publish",
        (f"{ROOMBUS}._publish",),
        "python-socketio's messages to the other workers go out on the room bus's link "
        "(SPUBLISH on a cluster).",
        "(self, data)",
        "23e758d5094bdf74",
    ),
    Hook(
        f"{MANAGER}._thread",
        (f"{ROOMBUS}._listen",),
        "The listener task iterates _listen() and takes CancelledError as its stop; a closed "
        "room bus ends _listen with it (any other end is logged as an error).",
        "(self)",
        "fa8d075729aac64d",
    ),
    Hook(
        f"{BASE_MANAGER}.basic_enter_room",
        (f"{ROOMBUS}.basic_enter_room",),
        "Every way into a room passes here: a paced room's held events go out before its "
        "members change, and each socket's stream rooms are indexed.",
        "(self, sid, namespace, room, eio_sid=None)",
        "3f509586d2d7f47e",
    ),
    Hook(
        f"{BASE_MANAGER}.basic_leave_room",
        (f"{ROOMBUS}.basic_leave_room",),
        "Every way out of a room (leave, ban, closed room, disconnect) passes here: as basic_enter_room.",
        "(self, sid, namespace, room)",
        "e27f3eea06d1c6a6",
    ),
    Hook(
        f"{BASE_MANAGER}.basic_disconnect",
        (f"{ROOMBUS}.basic_disconnect",),
        "A socket's rooms on the hub's namespace are known (None, its sid's, its indexed stream "
        "rooms): a disconnect leaves them without scanning every room of the namespace, which "
        "costs a dict copy and one lookup per connected socket; the callbacks and pending "
        "lists are cleaned as upstream does.",
        "(self, sid, namespace, **kwargs)",
        "2933b50bc4b2ea7b",
    ),
    Hook(
        f"{BASE_MANAGER}.rooms",
        (f"{ROOMBUS}.members", f"{SERVER}.HubServer._write_runs", f"{SERVER}.HubServer._room_size"),
        "A room's local members (sid -> eio sid) are read where they are kept, once per "
        "broadcast, instead of copied per socket by get_participants.",
        "(self, sid, namespace, room, eio_sid=None)",
        "3f509586d2d7f47e",
        code=f"{BASE_MANAGER}.basic_enter_room",
        text="self.rooms[namespace][room][sid] = eio_sid",
    ),
    # -- python-engineio ---------------------------------------------------------------
    Hook(
        f"{EIO}._async['websocket']",
        (f"{SERVER}.HubServer.__init__",),
        "The WebSocket class of the aiohttp driver is replaced by the hub's (HubWebSocket).",
        "(self, environ)",
        "820b83efe96adb98",
        code=f"{EIO_SOCKET}._upgrade_websocket",
        text="self.server._async['websocket'](",
    ),
    Hook(
        f"{EIO}._async['translate_request']",
        (f"{SERVER}.HubServer.__init__", f"{SERVER}.HubServer._translate_request"),
        "A long-polling body is read whole and checked (WholeBody) before python-engineio decodes it.",
        "(self, *args, **kwargs)",
        "1a8c878e35166cfe",
        code=f"{EIO}.handle_request",
        text="self._async['translate_request']",
    ),
    Hook(
        "engineio.async_drivers.aiohttp.translate_request",
        (f"{SERVER}.HubServer._translate_request",),
        "The driver's own environ, with its body replaced.",
        "(request)",
        "20aa782740060790",
    ),
    Hook(
        f"{EIO_WS}.__call__",
        (f"{FANOUT}.DirectWebSocket.__call__",),
        "The WebSocket is opened without per-message compression (one frame serves every "
        "socket) and its transport is left on the Engine.IO socket (hub_transport) for "
        "direct writes; it sets the driver's _sock and environ as the original does.",
        "(self, environ)",
        "71f9a94476d737c3",
    ),
    Hook(
        f"{EIO_WS}.wait",
        (f"{SERVER}.HubWebSocket.wait",),
        "A frame that is no Engine.IO packet closes the connection instead of escaping "
        "python-engineio's read loop.",
        "(self)",
        "992c370917677d39",
    ),
    Hook(
        f"{EIO_SOCKET}._websocket_handler",
        (
            f"{FANOUT}.DirectWebSocket.__call__",
            f"{FANOUT}.DirectWebSocket._serve",
            f"{FANOUT}.DirectWebSocket._write_queued",
            f"{SERVER}.HubWebSocket.wait",
            f"{FANOUT}.Writer._deliver",
        ),
        "The WebSocket's handler is this bound method: its __self__ is the Engine.IO socket, "
        "whose upgraded/upgrading state tells the writer when a socket takes direct writes. "
        "For a session that opens on WebSocket (not yet connected) DirectWebSocket._serve "
        "takes its place, as its non-upgrade branch does (connected and upgraded set, a writer "
        "task for the queue, the read loop, the close), without a task and wait_for per frame "
        "read nor a task per message.",
        "(self, ws)",
        "27f120df4d717a24",
    ),
    Hook(
        f"{EIO}._trigger_event",
        (f"{FANOUT}.DirectWebSocket._take",),
        "A WebSocket message is handed to the server's message handler in the read loop's "
        "task (run_async=False), as AsyncSocket.receive does with run_async=True.",
        "(self, event, *args, **kwargs)",
        "4a09b6e47eb66532",
    ),
    Hook(
        f"{EIO_SOCKET}.receive",
        (f"{FANOUT}.DirectWebSocket._take",),
        "Every packet but a message (pong, upgrade, close) is still taken by upstream's receive.",
        "(self, pkt)",
        "a91ae36ec2fb5340",
    ),
    Hook(
        f"{EIO_SOCKET}.poll",
        (f"{FANOUT}.DirectWebSocket._write_queued",),
        "The writer task waits for the socket's queued packets as upstream's writer does: a "
        "list, empty once the socket closes, QueueEmpty after ping_interval + ping_timeout.",
        "(self)",
        "826f58a9f3606db2",
    ),
    Hook(
        f"{EIO_SOCKET}.queue",
        (f"{FANOUT}.Writer._queue",),
        "Packets for a polling or upgrading socket are put on its queue without send()'s "
        "await, so a room broadcast writes to every socket without yielding.",
        "(self, pkt)",
        "0437276ccba7ab09",
        code=f"{EIO_SOCKET}.send",
        text="self.queue.put(pkt)",
    ),
    Hook(
        f"{EIO}._service_task",
        (f"{SERVER}.Sweeper._tick",),
        "Not started (start_service_task is cleared before the first connection): the hub's "
        "Sweeper does its work, closing sessions whose pong is overdue and forgetting closed "
        "ones, without a task, a timer and a cancellation per session.",
        "(self)",
        "b6358bda51d0b34b",
    ),
    Hook(
        f"{EIO}.start_service_task",
        (f"{SERVER}.Sweeper.__init__",),
        "Cleared by the Sweeper, so python-engineio's service task never starts.",
        "(self, environ, transport, jsonp_index=None)",
        "5bd7edc1d1ae115a",
        code=f"{EIO}._handle_connect",
        text="if self.start_service_task:",
    ),
    Hook(
        f"{EIO_SOCKET}.check_ping_timeout",
        (f"{SERVER}.Sweeper._tick",),
        "Called by the Sweeper for a session whose pong is overdue (last_ping, set when a ping "
        "is sent and cleared by its pong, older than ping_timeout), to close it as python-engineio does.",
        "(self)",
        "77616d5ca7809257",
    ),
    Hook(
        f"{EIO_SOCKET}.schedule_ping",
        (f"{SERVER}.HubSocket.schedule_ping",),
        "The next ping is the worker's Pinger's to send, in the second it is due, not a task's "
        "asleep per session; the same test (last_ping set: the previous pong came) guards it.",
        "(self)",
        "fe316639159cd70d",
    ),
    Hook(
        f"{EIO_SOCKET}._send_ping",
        (f"{SERVER}.Pinger._ping",),
        "Not run (HubSocket.schedule_ping starts no task): the Pinger does what it does, "
        "last_ping set, then the ping on the session's queue (whose writer task ends when the "
        "queue stays empty for ping_interval + ping_timeout).",
        "(self)",
        "67db82a704ea49d0",
    ),
    Hook(
        f"{EIO}._handle_connect",
        (f"{SERVER}.HubServer._handle_eio_connect",),
        "A new session is made a HubSocket in the connect handler, which python-engineio runs "
        "after registering the session and before scheduling its first ping.",
        "(self, environ, transport, jsonp_index=None)",
        "5bd7edc1d1ae115a",
        text="s.schedule_ping()",
    ),
    Hook(
        "engineio.payload.Payload.max_decode_packets",
        (f"{SERVER}.WholeBody.read",),
        "A long-polling body is checked against the packet count python-engineio will decode.",
        "(self, encoded_payload)",
        "9c7975664d815d3d",
        code="engineio.payload.Payload.decode",
        text="self.max_decode_packets",
    ),
)


def resolve(name: str) -> Any:
    """The object a dotted name (``package.module.Class.attribute``) names."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            found = getattr(found, part)
        return found
    raise ImportError(name)


def fingerprint(code: Any) -> str:
    """The first 16 hex digits of the SHA-256 of an object's source."""
    return hashlib.sha256(inspect.getsource(code).encode()).hexdigest()[:16]


def problems(hook: Hook) -> list[str]:
    """What no longer holds of ``hook`` in the installed versions, each naming it."""
    try:
        code = resolve(hook.checked)
    except (ImportError, AttributeError) as exc:
        return [f"{hook.upstream}: {hook.checked} no longer exists ({exc})"]
    found: list[str] = []
    signature = str(inspect.signature(code))
    if signature != hook.signature:
        found.append(f"{hook.upstream}: {hook.checked} is now {signature}, was {hook.signature}")
    if fingerprint(code) != hook.fingerprint:
        found.append(f"{hook.upstream}: the source of {hook.checked} changed (now {fingerprint(code)})")
    if hook.text and hook.text not in inspect.getsource(code):
        found.append(f"{hook.upstream}: {hook.checked} no longer has {hook.text!r}")
    for where in hook.where:
        try:
            resolve(where)
        except (ImportError, AttributeError):
            found.append(f"{hook.upstream}: the hub's {where} is gone; update HOOKS")
    return found
