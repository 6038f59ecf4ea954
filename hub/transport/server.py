"""python-socketio's server as the hub runs it: packets written straight to transports,
bounded buffers, and every client packet answered or its connection closed."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import engineio
import engineio.payload
import socketio
from engineio.async_drivers import aiohttp as engineio_aiohttp
from engineio.async_socket import AsyncSocket

from hub import logs, metrics
from hub.codec import json_module
from hub.errors import HubError
from hub.frames import NAMESPACE, read_head
from hub.transport.fanout import DirectWebSocket, Pacer, Run, Writer

log = logging.getLogger(__name__)


class Unreadable(ValueError):
    """A Socket.IO packet python-socketio cannot decode (see ``HubPacket.decode``)."""


class HubPacket(socketio.packet.Packet):
    """Socket.IO packets of the hub's server only, decoded with exact decimals.

    Setting ``json`` on this subclass (rather than passing ``json=`` to the server, which
    python-socketio assigns to the shared Packet class and to engine.io's) leaves every other
    Socket.IO user in the process, a test's client included, with its own JSON module."""

    json = json_module

    def decode(self, encoded_packet: Any) -> Any:
        """python-socketio's, raising Unreadable for a packet it cannot read: bad JSON, a number
        no double holds (``1e309``), NaN, a lone surrogate, nesting deeper than
        ``codec.MAX_DEPTH``, an id of more than 100 digits."""
        try:
            return super().decode(encoded_packet)
        except ValueError as exc:
            raise Unreadable(str(exc)) from exc


# -- Engine.IO text the hub refuses before python-engineio reads it -------------------------


def engineio_readable(text: str) -> bool:
    """Whether python-engineio can take this client text packet without harm: a packet type
    digit, then a Socket.IO packet (a digit first) or a payload with no JSON array or object in
    it. (python-engineio decodes any other payload as JSON, raising on text that starts with no
    digit and recursing without bound on nesting.) Binary (``b``…) is refused: the hub's
    protocol has no binary events."""
    if not text or not "0" <= text[0] <= "9":
        return False
    return len(text) == 1 or "0" <= text[1] <= "9" or ("[" not in text and "{" not in text)


class Junk(OSError):
    """A WebSocket frame python-engineio cannot take: an OSError, which its read loop takes for
    a lost connection, so the connection closes and the usual disconnect follows."""


class JunkBody(engineio.exceptions.EngineIOError):
    """A long-polling body python-engineio cannot take: it answers 400 and closes the session."""


class HubWebSocket(DirectWebSocket):
    """The hub's WebSocket transport: a frame that is no Engine.IO packet closes the connection
    (one log line) instead of escaping python-engineio's read loop as an exception, which left
    the connection half open and its namespace connected until its pings ran out."""

    async def wait(self) -> Any:
        data = await super().wait()
        if isinstance(data, str) and not engineio_readable(data):
            log.info("closed a WebSocket: a frame that is no Engine.IO packet")
            eio_socket = getattr(self.handler, "__self__", None)
            if eio_socket is not None and eio_socket.upgraded:
                # Closed here, not by the end of python-engineio's read loop: aiohttp cancels
                # the handler once this side has closed the connection, before the loop ends.
                await eio_socket.close(
                    wait=False, abort=True, reason=eio_socket.server.reason.TRANSPORT_ERROR
                )
            raise Junk
        return data


class WholeBody:
    """A long-polling POST's body for python-engineio, read whole (aiohttp's ``read(n)`` may
    return only the part received so far, cutting a large body short) and checked: within the
    transport limit, UTF-8, at most ``Payload.max_decode_packets`` packets, each one
    python-engineio can take. A body that fails closes the session (``close``) before
    python-engineio answers it 400."""

    def __init__(self, content: Any, too_long: bool, close: Callable[[], Awaitable[None]]) -> None:
        self._content = content
        self._too_long = too_long
        self._close = close

    async def read(self, length: int) -> bytes:
        if self._too_long:
            await self._refuse("a body over the transport limit")
            raise JunkBody
        try:
            body = await self._content.readexactly(length)
            packets = body.decode().split("\x1e") if body else []
        except (asyncio.IncompleteReadError, UnicodeDecodeError) as exc:
            await self._refuse("a body cut short or not UTF-8")
            raise JunkBody from exc
        if len(packets) > engineio.payload.Payload.max_decode_packets or not all(
            engineio_readable(packet) for packet in packets
        ):
            await self._refuse("a body that is no Engine.IO payload")
            raise JunkBody
        return body

    async def _refuse(self, why: str) -> None:
        log.info("closed a long-polling session: %s", why)
        # Closed here, with no wait for the client to fetch the close packet: python-engineio's
        # own close on JunkBody waits for that, and a client whose next poll comes once the
        # session is marked closed never fetches it, leaving the POST unanswered for good.
        await self._close()


class Sweeper:
    """python-engineio's service task without its cost per connection: that task visits each
    Engine.IO session in turn, with a task, a timer and a cancellation per session, over every
    ``ping_timeout`` (at 20,000 idle connections, a thousand of each per second); this visits
    them in slices, one plain callback a second, as often. A session closed is forgotten; one
    whose pong is overdue (``AsyncSocket.check_ping_timeout``'s test) is closed as that closes
    it. (A WebSocket's own read loop ends a silent connection too; a long-polling client that
    vanished has nothing else to close it.)"""

    TICK = 1.0  # seconds between slices

    def __init__(self, eio: Any) -> None:
        self.eio = eio
        eio.start_service_task = False  # python-engineio starts its own at the first connection
        self._due: list[Any] = []  # the sessions of this round not visited yet
        self._slice = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        """Sweep from now on (idempotent): once the event loop runs, at the first connection."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.TICK, self._tick)

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.TICK, self._tick)
        if not self._due:
            self._due = list(self.eio.sockets.values())
            self._slice = math.ceil(len(self._due) * self.TICK / max(self.eio.ping_timeout, self.TICK))
        cut = max(0, len(self._due) - self._slice)
        batch, self._due = self._due[cut:], self._due[:cut]
        sockets, timeout, now = self.eio.sockets, self.eio.ping_timeout, time.time()
        for s in batch:
            if s.closed:
                if sockets.get(s.sid) is s:
                    del sockets[s.sid]
            elif not s.closing and s.last_ping and now - s.last_ping > timeout:
                task = asyncio.ensure_future(s.check_ping_timeout())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)


class Pinger:
    """Engine.IO's pings of every session, from one callback a second: python-engineio keeps a
    task per session asleep for the ping interval (a task, its coroutine, a timer and a context
    per session). Here a session whose pong came is put in the second its next ping is due
    (``HubSocket.schedule_ping``), and the ping goes on its queue as python-engineio's
    ``_send_ping`` puts it there; ``last_ping`` is set as it sets it, for the Sweeper."""

    PACKET = engineio.packet.Packet(engineio.packet.PING)

    def __init__(self, eio: Any) -> None:
        self.eio = eio
        self._wheel: defaultdict[int, list[Any]] = defaultdict(list)  # whole second -> sessions
        self._timer: asyncio.TimerHandle | None = None

    def schedule(self, eio_socket: Any) -> None:
        loop = asyncio.get_running_loop()
        # In the whole second it falls in: up to a second early, never late (python-engineio closes
        # a WebSocket that has sent nothing for ping_interval + ping_timeout).
        self._wheel[math.floor(loop.time() + self.eio.ping_interval)].append(eio_socket)
        if self._timer is None:
            self._timer = loop.call_at(math.ceil(loop.time()), self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for second in [second for second in self._wheel if second <= now]:
            for eio_socket in self._wheel.pop(second):
                self._ping(eio_socket)
        self._timer = loop.call_at(math.floor(now) + 1, self._tick) if self._wheel else None

    def _ping(self, s: Any) -> None:
        if s.closing or s.closed:
            return
        s.last_ping = time.time()
        # As python-engineio's send() does, without its await. Through the queue even for a
        # WebSocket: its writer task ends when its queue stays empty for a ping interval and a
        # timeout, closing the connection.
        s.queue.put_nowait(self.PACKET)


class HubSocket(AsyncSocket):
    """python-engineio's session, whose next ping the worker's Pinger sends. A session becomes
    one when it opens (``HubServer._handle_eio_connect``), before its first ping is scheduled."""

    def schedule_ping(self) -> None:
        # python-engineio's test: only once the previous ping's pong came (or at the start)
        session: Any = self
        if session.last_ping:
            session.last_ping = None
            session.server.hub_pinger.schedule(session)


class Streaming(Protocol):
    """The namespace the hub's clients connect to (``hub.transport.namespace``), as its server
    sees it: what admits and releases Engine.IO sessions, and which events a client may send."""

    namespace: str

    def handles(self, event: str) -> bool: ...

    async def open_transport(self, eio_sid: str, environ: dict[str, Any]) -> dict[str, Any] | None: ...

    async def close_transport(self, eio_sid: str) -> None: ...


class HubServer(socketio.AsyncServer):
    """python-socketio's server whose packets to a WebSocket are written straight to its
    transport (``hub.transport.fanout.Writer``), with a bounded send buffer per connection: a client that
    stops reading is cut off instead of holding an ever-growing buffer, and the other clients
    are never made to wait for it. Busy large rooms are paced (``hub.transport.fanout.Pacer``).

    Every packet a client sends gets an answer or closes its connection, and none makes the
    worker log more than one line: what cannot be read is refused ``invalid`` (an ack when it
    has an ack id, and an ``error`` event), what python-engineio cannot take closes the
    connection (``HubWebSocket``, ``WholeBody``); refusals are logged summarised per connection.

    The server is made with its one namespace (``streaming``), which it registers: a client
    address's limits are checked at the Engine.IO handshake, before any namespace
    (``Streaming.open_transport``), and an event the namespace does not handle is refused
    before python-socketio dispatches it. A session that connects no namespace within
    ``namespace_timeout`` seconds is closed.

    It overrides private methods of python-socketio and python-engineio; each is listed, with
    why and the versions it was checked against, in ``hub.transport.hooks``."""

    # The largest message the transport reads (python-engineio's max_http_buffer_size): what a
    # Socket.IO client allows by default (maxHttpBufferSize, 1e6 bytes) and a little more, so an
    # event up to 1 MiB is answered payload_too_large by the hub rather than cut off.
    TRANSPORT_LIMIT = 1 << 20

    def __init__(
        self,
        *args: Any,
        streaming: Streaming,
        send_queue_limit: int,
        send_buffer_limit: int,
        event_limit: int,
        fanout_interval: float = 0.0,
        fanout_pace_above: int = 0,
        namespace_timeout: float = 5.0,
        **kwargs: Any,
    ) -> None:
        # The transport limit is the hub's (PROTOCOL §7), whatever a caller passes; an event
        # limit (HUB_MAX_PAYLOAD) raised above it raises it too.
        kwargs["max_http_buffer_size"] = max(self.TRANSPORT_LIMIT, event_limit)
        super().__init__(*args, **kwargs)
        self.event_limit = event_limit
        self.eio._async = dict(
            self.eio._async, websocket=HubWebSocket, translate_request=self._translate_request
        )
        self.writer = Writer(self.eio, send_buffer_limit, send_queue_limit)
        self.pacer = Pacer(self._write_runs, self._room_size, fanout_interval, fanout_pace_above)
        self._fanout_size = metrics.BROADCAST_SOCKETS.observe
        self.refusals = logs.Repeats(log)
        self.namespace_timeout = namespace_timeout
        self._closing: set[asyncio.Task[None]] = set()
        self.sweeper = Sweeper(self.eio)
        self.eio.hub_pinger = Pinger(self.eio)
        self.streaming = streaming
        self.register_namespace(streaming)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        """A new Engine.IO session: refused at the handshake (HTTP 401 with the error body) when
        its client address is over its connection rate or holds too many sessions."""
        self.sweeper.start()
        eio_socket = self.eio.sockets.get(eio_sid)
        if type(eio_socket) is AsyncSocket:
            eio_socket.__class__ = HubSocket  # before python-engineio schedules its first ping
        refusal = await self.streaming.open_transport(eio_sid, environ)
        if refusal is not None:
            return refusal
        await super()._handle_eio_connect(eio_sid, environ)
        asyncio.get_running_loop().call_later(self.namespace_timeout, self._namespace_due, eio_sid)
        return None

    def _namespace_due(self, eio_sid: str) -> None:
        """Close a session still connected to no namespace."""
        if eio_sid not in self.eio.sockets:
            return
        if any(self.manager.sid_from_eio_sid(eio_sid, ns) for ns in list(self.manager.get_namespaces())):
            return
        task = asyncio.ensure_future(self.eio.disconnect(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        await self.streaming.close_transport(eio_sid)

    def _translate_request(self, request: Any) -> dict[str, Any]:
        """python-engineio's aiohttp request environ, with the body read whole and checked."""
        environ: dict[str, Any] = engineio_aiohttp.translate_request(request)
        too_long = (request.content_length or 0) > self.eio.max_http_buffer_size
        if too_long:
            # Refused by WholeBody, not by python-engineio's own length check, whose close
            # waits for the client to fetch the close packet (see WholeBody._refuse).
            environ["CONTENT_LENGTH"] = "0"
        close = partial(self._close_polling, request.query.get("sid"))
        environ["wsgi.input"] = WholeBody(request.content, too_long, close)
        return environ

    async def _close_polling(self, eio_sid: str | None) -> None:
        eio_socket = self.eio.sockets.get(eio_sid)
        if eio_socket is not None and not eio_socket.closing:
            await eio_socket.close(wait=False, reason=self.eio.reason.TRANSPORT_ERROR)

    def send_event(self, sid: str, text: bytes) -> None:
        """An encoded event of the hub's namespace (``frames.event``) to one of its sockets,
        written as ``_send_packet`` writes, without python-socketio's emit (which encodes
        the packet again and makes a task per recipient)."""
        eio_sid = self.manager.eio_sid_from_sid(sid, NAMESPACE)
        if eio_sid is not None:
            self.writer.send(eio_sid, text)

    def broadcast(self, room: str, skip_sid: str | None, texts: list[bytes]) -> None:
        """Encoded room events (Engine.IO texts) to this worker's sockets in ``room``."""
        self.pacer.events(room, skip_sid, texts)

    def _room_size(self, room: str) -> int:
        return len(self.manager.rooms.get(NAMESPACE, {}).get(room) or ())

    def _write_runs(self, room: str, runs: list[Run]) -> None:
        members = self.manager.rooms.get(NAMESPACE, {}).get(room)
        if members:
            self._fanout_size(len(members))
            self.writer.broadcast_runs(members, runs)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """Every Socket.IO packet from a client. An event larger than ``event_limit`` is
        answered ``payload_too_large`` without being decoded; one that cannot be read (or is
        binary, or of a type a client may not send) is answered ``invalid``; the connection
        stays open either way. (The transport closes a connection whose message exceeds its
        own, larger, limit.)"""
        if not isinstance(data, str):  # binary, or an Engine.IO message that was JSON
            await self._refuse(eio_sid, "", HubError("invalid", "Events are Socket.IO text packets."))
        elif len(data) * 4 > self.event_limit and len(data.encode(errors="replace")) > self.event_limit:
            await self._refuse(
                eio_sid,
                data,
                HubError("payload_too_large", f"Events may be at most {self.event_limit} bytes."),
            )
        elif data[:1] not in ("0", "1", "2", "3"):  # 4 is the server's; 5 and 6 are binary
            await self._refuse(eio_sid, data, HubError("invalid", "No such packet type here."))
        else:
            try:
                await super()._handle_eio_message(eio_sid, data)
            except Unreadable as exc:
                await self._refuse(
                    eio_sid,
                    data,
                    HubError("invalid", "The packet is not valid JSON the hub reads."),
                    str(exc),
                )

    async def _refuse(self, eio_sid: str, data: str, exc: HubError, why: str = "") -> None:
        """Answer a packet refused unread, from what its head shows: a CONNECT with
        ``connect_error``, anything else as ``_refuse_event`` does."""
        head = read_head(data)
        if head is None:  # not even a packet type: an error event on the hub's namespace
            await self._refuse_event(eio_sid, NAMESPACE, None, None, exc, why)
            return
        if head.packet_type == "0":
            self.refusals.note(eio_sid, f"refused a connect ({exc.code}{': ' + why[:80] if why else ''})")
            metrics.error(exc.code, "connect")
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    socketio.packet.CONNECT_ERROR,
                    namespace=head.namespace,
                    data={"message": exc.code, "data": exc.body()},
                ),
            )
            return
        await self._refuse_event(eio_sid, head.namespace, head.ack_id, head.event, exc, why)

    async def _refuse_event(
        self,
        eio_sid: str,
        namespace: str,
        ack_id: int | None,
        event: str | None,
        exc: HubError,
        why: str = "",
    ) -> None:
        """An ``error`` event ``{code, message, event}`` to a socket connected on ``namespace``
        and, with an ack id, the refusal as the ack; the refusal logged, summarised."""
        self.refusals.note(eio_sid, f"refused a packet ({exc.code}{': ' + why[:80] if why else ''})")
        metrics.error(exc.code, "socket")
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return
        body = exc.body()
        await self.emit("error", dict(body, event=event), to=sid, namespace=namespace, ignore_queue=True)
        if ack_id is not None:
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    socketio.packet.ACK,
                    namespace=namespace,
                    id=ack_id,
                    data=[{"success": False, "error": body}],
                ),
            )

    # Names python-socketio dispatches to the lifecycle handlers; a client may not send them.
    RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        """An event whose data is no ``[name, ...]`` list, or whose name is no event the hub's
        namespace handles (a lifecycle name included: a client event named "disconnect" must not
        run the disconnect handler), is refused ``invalid``."""
        namespace = namespace or "/"
        name = data[0] if isinstance(data, list) and data else None
        if (
            not isinstance(name, str)
            or name in self.RESERVED_EVENTS
            or (namespace == self.streaming.namespace and not self.streaming.handles(name))
        ):
            shown = name if isinstance(name, str) and len(name) <= 64 else None
            await self._refuse_event(eio_sid, namespace, id, shown, HubError("invalid", "No such event."))
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, list):  # binary attachments: Engine.IO's own path
            await super()._send_packet(eio_sid, pkt)
            return
        self.writer.send(eio_sid, b"4" + encoded.encode())

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        if eio_pkt.packet_type == engineio.packet.MESSAGE and isinstance(eio_pkt.data, str):
            self.writer.send(eio_sid, b"4" + eio_pkt.data.encode())
            return
        await self.eio.send_packet(eio_sid, eio_pkt)
