"""A lean Socket.IO v5 / Engine.IO v4 client over a bare WebSocket, for load generation.

Only what the benchmark needs: the WebSocket handshake (RFC 6455, text frames, no extensions),
the ``/streaming`` namespace connect (with a token), events with acknowledgements, Engine.IO
ping/pong, and counting received ``chat_message`` events with the send-to-receive latency read
from the message text. Each socket is an asyncio protocol that parses frames as bytes arrive:
no task, future or message object per frame. One python-socketio AsyncClient costs far more per
connection and per packet; thousands of these fit in one process, and the load client takes
as little as it can of the machine it shares with the hub.

Packet formats (python-socketio ``packet.py``, python-engineio ``packet.py``):
``0{...}`` open, ``2``/``3`` ping/pong, ``40/streaming,{auth}`` connect, ``40/streaming,{"sid"}``
connected, ``44/streaming,{...}`` refused, ``42/streaming,[event, data]`` event,
``42/streaming,ID[event, data]`` event with ack, ``43/streaming,ID[reply]`` ack, ``41/streaming,``
namespace disconnect, ``1`` close.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

NAMESPACE = "/streaming"
CONNECT = "40" + NAMESPACE + ","
REFUSED = "44" + NAMESPACE + ","
EVENT = "42" + NAMESPACE + ","
ACK = "43" + NAMESPACE + ","
DISCONNECT = "41" + NAMESPACE
CHAT = EVENT + '["chat_message",'
# Benchmark chat texts are "bench <monotonic ns at send> <seq>".
MARK = '"message":"bench '
BUCKET_NS = 100_000  # latency histograms count 0.1 ms buckets
BUCKETS = 600_000  # up to 60 s; later ones land in the last bucket


class Histogram:
    """Latencies counted in 0.1 ms buckets: cheap to record, small to ship between processes."""

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS

    def record_ns(self, ns: int) -> None:
        b = ns // BUCKET_NS
        self.counts[b if 0 <= b < BUCKETS else (0 if b < 0 else BUCKETS - 1)] += 1

    def sparse(self) -> dict[int, int]:
        return {i: c for i, c in enumerate(self.counts) if c}


def merge(hists: list[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = defaultdict(int)
    for h in hists:
        for b, c in h.items():
            total[int(b)] += c
    return dict(total)


def percentile_ms(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a sparse histogram, in milliseconds (bucket upper bound)."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank, seen = q * n, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return (b + 1) * BUCKET_NS / 1e6
    return (max(hist) + 1) * BUCKET_NS / 1e6


class Tally:
    """What one client process saw, shared by its sockets."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.reset()

    def reset(self) -> None:
        self.latency = Histogram()
        self.received = 0  # benchmark chat_message events, all sockets
        self.target = -1  # the received count that sets ``done``
        self.done.clear()
        self.last_rx = 0  # monotonic ns of the last chat_message
        self.events: dict[str, int] = defaultdict(int)


class Refused(Exception):
    """The namespace connect was refused (``44``) or the handshake failed."""


_LEN2, _LEN8 = struct.Struct("!H"), struct.Struct("!Q")
_NO_MASK = b"\0\0\0\0"  # a zero masking key leaves the payload as it is


def _client_frame(text: str, opcode: int = 0x1) -> bytes:
    """One final, masked (with a zero key) client frame."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _LEN2.pack(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _LEN8.pack(n)
    return head + _NO_MASK + payload


class Sock(asyncio.Protocol):
    """One Engine.IO WebSocket connected to ``/streaming``."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.chat = 0
        self.closed = False
        self.close_reason = ""  # who ended the connection, when it was not us
        self.stream_id: str | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._waiter: asyncio.Future[str] | None = None  # the next text, during the handshake
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._ours = False  # closed by this side (close()), not by the server or the network
        # Called once when the server or the network ends the connection (a reconnecting
        # client's cue, ``fleet.Child.do_follow``); never for a close of this side's.
        self.on_lost: Callable[[Sock], None] | None = None

    @classmethod
    async def open(
        cls, url: str, token: str | None, tally: Tally, timeout: float = 10.0, source: str | None = None
    ) -> Sock:
        """Connect to ``/streaming``; from the loopback address ``source`` when given (each
        address has its own ephemeral ports, and the hub its own per-address limits)."""
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        local = (source, 0) if source is not None else None
        _, sock = await loop.create_connection(
            lambda: cls(tally), parts.hostname, parts.port, local_addr=local
        )
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock._waiter = loop.create_future()
            sock.transport.write(  # type: ignore[union-attr]
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            await sock._expect("0", timeout)
            auth = orjson.dumps({"token": token}).decode() if token else ""
            sock._waiter = loop.create_future()
            sock.send(CONNECT + auth)
            reply = await sock._expect("4", timeout)
            if not reply.startswith(CONNECT):
                raise Refused(reply)
        except BaseException:
            sock.abort()
            raise
        return sock

    async def _expect(self, first: str, timeout: float) -> str:
        """The next text frame, which must start with ``first``."""
        assert self._waiter is not None
        try:
            text = await asyncio.wait_for(self._waiter, timeout)
        finally:
            self._waiter = None
        if not text.startswith(first):
            raise Refused(f"expected a {first!r} packet, got {text[:200]!r}")
        return text

    # -- sending --------------------------------------------------------------------
    def send(self, text: str) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(_client_frame(text))

    async def call(self, event: str, data: Any, timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(await self.emit_with_ack(event, data), timeout)

    async def emit_with_ack(self, event: str, data: Any) -> asyncio.Future[Any]:
        """Send the event; the returned future holds the ack's first argument."""
        self._next_id += 1
        ack_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(ConnectionError("socket closed"))
            return future
        self._acks[ack_id] = future
        self.send(f"{EVENT}{ack_id}" + orjson.dumps([event, data]).decode())
        return future

    async def join(self, stream_id: str, timeout: float = 10.0) -> dict[str, Any]:
        reply = await self.call("join_stream", {"stream_id": stream_id}, timeout)
        if not isinstance(reply, dict) or not reply.get("success"):
            raise Refused(f"join_stream: {reply}")
        self.stream_id = stream_id
        return reply

    async def close(self) -> None:
        self._ours = True
        if self.transport is not None and not self.closed:
            self.transport.write(_client_frame("", 0x8))
        self.abort()

    def abort(self) -> None:
        self._closed()
        if self.transport is not None:
            self.transport.close()

    # -- receiving ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.close_reason = "connection lost"
        self._closed()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None and not self._ours:
            on_lost(self)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self._fail(Refused(f"websocket handshake: {status.decode(errors='replace')}"))
                return
            self._upgraded = True
        pos, n = 0, len(buf)
        while n - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - start < 2:
                    break
                length = _LEN2.unpack_from(buf, start)[0]
                start += 2
            elif length == 127:
                if n - start < 8:
                    break
                length = _LEN8.unpack_from(buf, start)[0]
                start += 8
            if n - start < length:
                break
            pos = start + length
            if opcode == 0x1:
                self._text(buf[start:pos].decode())
            elif opcode == 0x8:
                self.close_reason = "websocket close"
                self.abort()
                return
            elif opcode == 0x9:
                self.transport.write(_client_frame(buf[start:pos].decode(), 0xA))  # type: ignore[union-attr]
        if pos:
            del buf[:pos]

    def _text(self, data: str) -> None:
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(data)
            return
        if data.startswith(CHAT):
            self._on_chat(data, self.tally)
        elif data == "2":
            self.send("3")
        elif data.startswith(ACK):
            self._on_ack(data)
        elif data.startswith(EVENT):
            self.tally.events[data[15 : data.find('"', 15)]] += 1
        elif data.startswith(DISCONNECT) or data == "1":
            self.close_reason = "namespace disconnect" if data != "1" else "engine.io close"
            self.abort()

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close_reason = str(exc)[:120]
        self.abort()

    def _closed(self) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("socket closed"))
        for future in self._acks.values():
            if not future.done():
                future.set_exception(ConnectionError("socket closed"))
        self._acks.clear()

    def _on_chat(self, data: str, tally: Tally) -> None:
        now = time.monotonic_ns()
        i = data.find(MARK)
        if i < 0:
            return
        i += len(MARK)
        sent = int(data[i : data.index(" ", i)])
        tally.latency.record_ns(now - sent)
        self.chat += 1
        tally.received += 1
        tally.last_rx = now
        if tally.received == tally.target:
            tally.done.set()

    def _on_ack(self, data: str) -> None:
        i = len(ACK)
        j = i
        while data[j].isdigit():
            j += 1
        future = self._acks.pop(int(data[i:j]), None)
        if future is not None and not future.done():
            args = orjson.loads(data[j:])
            future.set_result(args[0] if args else None)
