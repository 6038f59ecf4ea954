"""Room broadcasts, encoded once and written as the same bytes to every local socket.

A room broadcast reaches a worker on its stream's Redis channel as ``skip_sid\\n`` followed by
the Engine.IO texts of one or more Socket.IO events, one per line
(``42/streaming,["chat_message",{...}]``), encoded once by whichever worker or script produced
them. The worker never decodes them: it builds their WebSocket frames once (server frames are
not masked, and the hub's WebSockets do not compress, so every socket gets the same bytes) and
writes them to each socket's transport in one write, without a task, a queue or an encoder per
socket. Long-polling sockets, and sockets still upgrading to WebSocket, get the packets through
Engine.IO's queue.

A busy large room is paced (``Pacer``): its events are written at most once per interval, so
each socket gets several events in one write instead of one write per event. A write costs
the same few microseconds of system time whatever it carries, so this is what brings the cost
of a delivery under the cost of a write.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

import engineio
from engineio.async_drivers.aiohttp import WebSocket as EngineIOWebSocket

log = logging.getLogger(__name__)

_LEN2 = struct.Struct("!BBH")
_LEN8 = struct.Struct("!BBQ")

Run = tuple[str | None, list[bytes]]  # events for every socket of a room but one, or none


def ws_frame(payload: bytes) -> bytes:
    """One final, unmasked WebSocket text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return _LEN2.pack(0x81, 126, n) + payload
    return _LEN8.pack(0x81, 127, n) + payload


class DirectWebSocket(EngineIOWebSocket):
    """Engine.IO's aiohttp WebSocket, without per-message compression (so one frame serves
    every socket), that leaves its transport on the Engine.IO socket for direct writes. It
    replaces the driver's private ``__call__`` (``hub.transport.hooks``)."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        from aiohttp.web import WebSocketResponse

        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await self._sock.prepare(request)
        self.environ = environ
        eio_socket = getattr(self.handler, "__self__", None)
        if eio_socket is not None:
            eio_socket.hub_transport = request.transport
        try:
            if eio_socket is not None and not eio_socket.connected:
                await self._serve(eio_socket)  # a WebSocket from the start: the hub's loop
            else:
                await self.handler(self)  # an upgrade from long-polling: python-engineio's
        finally:
            if eio_socket is not None:
                eio_socket.hub_transport = None
        return self._sock

    async def _serve(self, eio_socket: Any) -> None:
        """python-engineio's ``AsyncSocket._websocket_handler`` for a session that opened on
        WebSocket, without its task and ``wait_for`` per frame read: the frames are read in
        this task, and the wait for a frame is cut after ``ping_interval + ping_timeout`` (as
        upstream) by one timer per connection, moved on only when it fires. Each message is
        handled before the next frame is read (``run_async=False``; the namespace takes a
        socket's events one at a time in any case): no task per message either."""
        server = eio_socket.server
        eio_socket.connected = True
        eio_socket.upgraded = True
        writer = asyncio.ensure_future(self._write_queued(eio_socket))
        deadline = _Deadline(server.ping_interval + server.ping_timeout)
        limit = server.max_http_buffer_size
        try:
            while True:
                deadline.wait()
                try:
                    data = await self.wait()
                except asyncio.CancelledError:
                    if not deadline.cut:
                        raise
                    break
                except Exception:
                    break
                deadline.done()
                if data is None or (data and len(data) > limit):
                    break
                try:
                    await self._take(eio_socket, engineio.packet.Packet(encoded_packet=data))
                except engineio.exceptions.SocketIsClosedError:
                    break
        finally:
            deadline.cancel()
            await eio_socket.queue.put(None)  # the writer ends
            await writer
            await eio_socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)

    @staticmethod
    async def _take(eio_socket: Any, pkt: Any) -> None:
        """One packet from the client, as ``AsyncSocket.receive`` takes it, but a message is
        handled in this task (``_trigger_event`` with ``run_async=False``)."""
        try:
            if pkt.packet_type == engineio.packet.MESSAGE:
                await eio_socket.server._trigger_event("message", eio_socket.sid, pkt.data, run_async=False)
            else:
                await eio_socket.receive(pkt)
        except (engineio.exceptions.SocketIsClosedError, asyncio.CancelledError):
            raise
        except engineio.exceptions.UnknownPacketError:
            pass
        except Exception:
            log.exception("%s: a packet could not be handled", eio_socket.sid)

    async def _write_queued(self, eio_socket: Any) -> None:
        """Packets put on the Engine.IO socket's queue (its open packet, pings, close), written
        as upstream's writer does; the hub's own packets go straight to the transport."""
        while True:
            try:
                packets = await eio_socket.poll()
            except engineio.exceptions.QueueEmpty:
                break
            if not packets:
                break
            try:
                for pkt in packets:
                    await self.send(pkt.encode())
            except Exception:
                break
        await self.close()


class _Deadline:
    """How long a WebSocket read loop waits for a client's next frame: a wait of more than
    ``allowed`` seconds is cut (the reading task cancelled, ``cut`` set), as upstream's
    ``wait_for`` per frame does, but with one timer per connection, moved on when it fires."""

    def __init__(self, allowed: float) -> None:
        self.allowed = allowed
        self.cut = False
        self._waiting = False
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()
        self._timer = self._loop.call_later(allowed, self._due)

    def wait(self) -> None:
        """A wait for a frame starts."""
        self._waiting = True
        self._since = self._loop.time()

    def done(self) -> None:
        """The frame came (or the wait ended otherwise)."""
        self._waiting = False

    def _due(self) -> None:
        waited = self._loop.time() - self._since
        if not self._waiting or waited < self.allowed:
            self._timer = self._loop.call_later(
                self.allowed - waited if self._waiting else self.allowed, self._due
            )
        elif self._task is not None:
            self.cut = True
            self._task.cancel()

    def cancel(self) -> None:
        self._timer.cancel()


class Writer:
    """Writes Engine.IO text to this worker's sockets: straight to the transport of an upgraded
    WebSocket, through Engine.IO's queue otherwise. A socket whose unsent bytes pass
    ``buffer_limit`` (or, polling, whose queue passes ``queue_limit`` packets) stopped reading:
    it is cut off, never waited for."""

    def __init__(self, eio: Any, buffer_limit: int, queue_limit: int) -> None:
        self.eio = eio
        self.buffer_limit = buffer_limit
        self.queue_limit = queue_limit
        self.cut_off = 0
        self.deliveries = 0  # events handed to sockets
        self.writes = 0  # transport writes (one may carry several events)
        self._closing: set[asyncio.Task[None]] = set()
        self._held: dict[Any, tuple[str, list[bytes]]] = {}  # transport -> (eio sid, frames)

    def send(self, eio_sid: str, text: bytes) -> None:
        """One Engine.IO message (``4…``) to one socket. To a WebSocket it is held until the
        event loop is done with what is ready now, with any other message to that socket
        meanwhile (a join's ``joined_stream`` event and its ack; a room's events that come
        in the same turn), then written in one write: a write costs the same whatever it
        carries. Nothing is written out of order: a broadcast to a socket with held messages
        is held behind them, and python-engineio's own packets (open, ping, close) are
        written by a task that runs after the flush."""
        eio_socket = self.eio.sockets.get(eio_sid)
        if eio_socket is None:
            return
        transport = getattr(eio_socket, "hub_transport", None)
        if transport is None or not eio_socket.upgraded or eio_socket.upgrading:
            self._deliver(eio_sid, eio_socket, [text], b"")
            return
        held = self._held.get(transport)
        if held is None:
            if not self._held:
                asyncio.get_running_loop().call_soon(self._flush)
            self._held[transport] = (eio_sid, [ws_frame(text)])
        else:
            held[1].append(ws_frame(text))
        self.deliveries += 1

    def _flush(self) -> None:
        """The held messages, one write per socket."""
        held, self._held = self._held, {}
        for transport, (eio_sid, frames) in held.items():
            self._write(eio_sid, transport, b"".join(frames) if len(frames) > 1 else frames[0])

    def broadcast(self, members: Any, skip_sid: str | None, texts: list[bytes]) -> None:
        """Engine.IO messages to every socket of a room (``members``: sid -> eio sid), their
        frames built once for all."""
        frames = b"".join(ws_frame(text) for text in texts)
        sockets = self.eio.sockets
        for sid, eio_sid in list(members.items()):
            if sid != skip_sid:
                eio_socket = sockets.get(eio_sid)
                if eio_socket is not None:
                    self._deliver(eio_sid, eio_socket, texts, frames)

    def broadcast_runs(self, members: Any, runs: list[Run]) -> None:
        """Several runs of events, in order, each for every socket but its own skipped one:
        one write per socket. Only the few skipped sockets get frames of their own."""
        if len(runs) == 1:
            self.broadcast(members, runs[0][0], runs[0][1])
            return
        framed = [(skip, texts, b"".join(ws_frame(text) for text in texts)) for skip, texts in runs]
        all_texts = [text for _, texts, _ in framed for text in texts]
        all_frames = b"".join(frames for _, _, frames in framed)
        skipped = {skip for skip, _, _ in framed if skip is not None}
        sockets = self.eio.sockets
        for sid, eio_sid in list(members.items()):
            eio_socket = sockets.get(eio_sid)
            if eio_socket is None:
                continue
            if sid not in skipped:
                self._deliver(eio_sid, eio_socket, all_texts, all_frames)
                continue
            mine = [(texts, frames) for skip, texts, frames in framed if skip != sid]
            if mine:
                self._deliver(
                    eio_sid,
                    eio_socket,
                    [text for texts, _ in mine for text in texts],
                    b"".join(frames for _, frames in mine),
                )

    def _deliver(self, eio_sid: str, eio_socket: Any, texts: list[bytes], frames: bytes) -> None:
        transport = getattr(eio_socket, "hub_transport", None)
        if transport is None or not eio_socket.upgraded or eio_socket.upgrading:
            for text in texts:
                self._queue(eio_sid, eio_socket, text)
        else:
            held = self._held.get(transport) if self._held else None
            if held is not None:  # behind the messages held for it (``send``)
                held[1].append(frames)
            else:
                self._write(eio_sid, transport, frames)
        self.deliveries += len(texts)

    def _write(self, eio_sid: str, transport: Any, frames: bytes) -> None:
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.buffer_limit:
            self._abort(eio_sid, transport)
            return
        transport.write(frames)
        self.writes += 1

    def _queue(self, eio_sid: str, eio_socket: Any, text: bytes) -> None:
        """Onto the Engine.IO socket's own queue, as its ``send`` does but without a wait, so a
        broadcast never yields between sockets (a private hook, ``hub.transport.hooks``)."""
        if eio_socket.closed:
            return
        if eio_socket.queue.qsize() >= self.queue_limit:
            self._abort(eio_sid, None, eio_socket)
            return
        eio_socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.MESSAGE, data=text[1:].decode()))

    def _abort(self, eio_sid: str, transport: Any, eio_socket: Any = None) -> None:
        """Cut off a socket that stopped reading: its connection is dropped, and the usual
        disconnect follows (at once for polling, when the WebSocket handler sees the close)."""
        self.cut_off += 1
        log.warning("connection %s stopped reading; cut off", eio_sid)
        if transport is not None:
            transport.abort()
        elif eio_socket is not None and not eio_socket.closing:
            task = asyncio.ensure_future(eio_socket.close(wait=False, abort=True))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


class Pacer:
    """Writes the events of a room of more than ``above`` local sockets at most once per
    ``interval`` seconds. An event that finds the room written less than ``interval`` ago is
    held, with any that follow, until the interval is up, then all go in one write per socket.
    A quiet room is written at once; a busy one waits at most ``interval``.

    Held events are released before the room's membership changes (``release``, which the
    manager calls whenever a socket enters or leaves a room), so a socket gets exactly the
    events it would have got had they been written when they arrived: none from before it
    entered the room, all from before it left. Order within a room is kept."""

    def __init__(
        self, write: Callable[[str, list[Run]], None], size: Callable[[str], int], interval: float, above: int
    ) -> None:
        self._write = write
        self._size = size
        self.interval = interval
        self.above = above
        self._last: dict[str, float] = {}  # room -> when it was last written, large rooms only
        self._held: dict[str, list[Run]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.held = 0  # events that waited

    def events(self, room: str, skip_sid: str | None, texts: list[bytes]) -> None:
        held = self._held.get(room)
        if held is not None:
            self.held += len(texts)
            if skip_sid is None and held[-1][0] is None:
                held[-1][1].extend(texts)
            else:
                held.append((skip_sid, list(texts)))
            return
        if self.interval <= 0 or self._size(room) <= self.above:
            self._write(room, [(skip_sid, texts)])
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._last.get(room)
        if last is None or now - last >= self.interval:
            self._last[room] = now
            if len(self._last) > 4096:
                self._forget(now)
            self._write(room, [(skip_sid, texts)])
            return
        self.held += len(texts)
        self._held[room] = [(skip_sid, list(texts))]
        self._timers[room] = loop.call_at(last + self.interval, self.release, room)

    def release(self, room: str) -> None:
        """Write the room's held events now, if it has any."""
        held = self._held.pop(room, None)
        timer = self._timers.pop(room, None)
        if timer is not None:
            timer.cancel()
        if held is not None:
            self._last[room] = asyncio.get_running_loop().time()
            self._write(room, held)

    def _forget(self, now: float) -> None:
        for room, last in list(self._last.items()):
            if now - last >= self.interval and room not in self._held:
                del self._last[room]
