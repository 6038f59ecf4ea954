"""Room broadcasts, encoded once and written as the same bytes to every local socket.

A room broadcast reaches a worker on its stream's Redis channel as ``skip_sid\\n`` followed by
the Engine.IO texts of one or more Socket.IO events, one per line
(``42/streaming,["chat_message",{...}]``), encoded once by whichever worker or script produced
them. The worker never decodes them: it builds their WebSocket frames once (server frames are
not masked, and the hub's WebSockets do not compress, so every socket gets the same bytes) and
writes them to each socket's transport in one write, without a task, a queue or an encoder per
socket. Long-polling sockets, and sockets still upgrading to WebSocket, get the packets through
Engine.IO's queue.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import engineio
from engineio.async_drivers.aiohttp import WebSocket as EngineIOWebSocket

log = logging.getLogger(__name__)

_LEN2 = struct.Struct("!BBH")
_LEN8 = struct.Struct("!BBQ")


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
    every socket), that leaves its transport on the Engine.IO socket for direct writes."""

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
            await self.handler(self)
        finally:
            if eio_socket is not None:
                eio_socket.hub_transport = None
        return self._sock


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

    def send(self, eio_sid: str, text: bytes) -> None:
        """One Engine.IO message (``4…``) to one socket."""
        eio_socket = self.eio.sockets.get(eio_sid)
        if eio_socket is not None:
            self._deliver(eio_sid, eio_socket, [text], ws_frame(text))

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

    def _deliver(self, eio_sid: str, eio_socket: Any, texts: list[bytes], frames: bytes) -> None:
        transport = getattr(eio_socket, "hub_transport", None)
        if transport is None or not eio_socket.upgraded or eio_socket.upgrading:
            for text in texts:
                self._queue(eio_sid, eio_socket, text)
        elif transport.is_closing():
            return
        elif transport.get_write_buffer_size() > self.buffer_limit:
            self._abort(eio_sid, transport)
            return
        else:
            transport.write(frames)
            self.writes += 1
        self.deliveries += len(texts)

    def _queue(self, eio_sid: str, eio_socket: Any, text: bytes) -> None:
        if eio_socket.closed:
            return
        if eio_socket.queue.qsize() >= self.queue_limit:
            self._abort(eio_sid, None, eio_socket)
            return
        eio_socket.queue.put_nowait(
            engineio.packet.Packet(engineio.packet.MESSAGE, data=text[1:].decode()))

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
