"""A lean Socket.IO v5 / Engine.IO v4 client on one aiohttp websocket, for load generation.

Only what the benchmark needs: the websocket handshake, the ``/streaming`` namespace connect
(with a token), events with acknowledgements, Engine.IO ping/pong, and counting received
``chat_message`` events with the send-to-receive latency read from the message text. One
python-socketio AsyncClient costs far more per connection and per packet; thousands of these
fit in one process.

Packet formats (python-socketio ``packet.py``, python-engineio ``packet.py``):
``0{...}`` open, ``2``/``3`` ping/pong, ``40/streaming,{auth}`` connect, ``40/streaming,{"sid"}``
connected, ``44/streaming,{...}`` refused, ``42/streaming,[event, data]`` event,
``42/streaming,ID[event, data]`` event with ack, ``43/streaming,ID[reply]`` ack, ``41/streaming,``
namespace disconnect, ``1`` close.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import aiohttp
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


class Sock:
    """One Engine.IO websocket connected to ``/streaming``."""

    __slots__ = ("_acks", "_next_id", "_reader", "chat", "close_reason", "closed", "stream_id", "tally",
                 "ws")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
        self.ws = ws
        self.tally = tally
        self.chat = 0
        self.closed = False
        self.close_reason = ""  # who ended the connection, when it was not us
        self.stream_id: str | None = None
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str, token: str | None,
                   tally: Tally, timeout: float = 10.0) -> Sock:
        ws = await session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket",
                                      autoping=True, max_msg_size=0)
        try:
            await _expect(ws, "0", timeout)
            auth = orjson.dumps({"token": token}).decode() if token else ""
            await ws.send_str(CONNECT + auth)
            reply = await _expect(ws, "4", timeout)
            if not reply.startswith(CONNECT):
                raise Refused(reply)
        except BaseException:
            await ws.close()
            raise
        sock = cls(ws, tally)
        sock._reader = asyncio.create_task(sock._read())
        return sock

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
        await self.ws.send_str(f"{EVENT}{ack_id}" + orjson.dumps([event, data]).decode())
        return future

    async def join(self, stream_id: str, timeout: float = 10.0) -> dict[str, Any]:
        reply = await self.call("join_stream", {"stream_id": stream_id}, timeout)
        if not isinstance(reply, dict) or not reply.get("success"):
            raise Refused(f"join_stream: {reply}")
        self.stream_id = stream_id
        return reply

    async def close(self) -> None:
        self.closed = True
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        ws, tally = self.ws, self.tally
        try:
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                        self.close_reason = f"websocket {msg.type.name.lower()}"
                        return
                    continue
                data: str = msg.data
                if data.startswith(CHAT):
                    self._on_chat(data, tally)
                elif data == "2":
                    await ws.send_str("3")
                elif data.startswith(ACK):
                    self._on_ack(data)
                elif data.startswith(EVENT):
                    tally.events[data[15:data.find('"', 15)]] += 1
                elif data.startswith(DISCONNECT) or data == "1":
                    self.close_reason = "namespace disconnect" if data != "1" else "engine.io close"
                    return
        except Exception as exc:
            self.close_reason = type(exc).__name__
            raise
        finally:
            self.closed = True
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
        sent = int(data[i:data.index(" ", i)])
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


async def _expect(ws: aiohttp.ClientWebSocketResponse, first: str, timeout: float) -> str:
    """The next text frame, which must start with ``first``."""
    msg = await ws.receive(timeout)
    if msg.type is not aiohttp.WSMsgType.TEXT or not msg.data.startswith(first):
        raise Refused(f"expected a {first!r} packet, got {msg.type.name} {str(msg.data)[:200]!r}")
    return str(msg.data)
