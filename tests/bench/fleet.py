"""The load client: a few processes, each holding many lean sockets, driven over pipes.

The benchmark process asks every client process the same questions (open these sockets,
reset the counters, send for S seconds, wait until this many messages arrived, close) and
merges the answers. Client processes start with ``spawn`` so none inherits an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import jwt
import uvloop

from tests.bench.sio import Histogram, Sock, Tally

TOKEN_TTL = 6 * 3600


@dataclass(frozen=True)
class Spec:
    """One socket to open: which worker, signed in as whom, joined to which stream, and from
    which loopback address (None: the kernel's choice, 127.0.0.1)."""

    url: str
    user: str | None
    stream_id: str | None
    sender: bool = False
    source: str | None = None


def mint(secret: str, user: str, roles: list[str] | None = None) -> str:
    now = int(time.time())
    claims = {"sub": user, "name": user, "roles": roles or [], "iat": now, "exp": now + TOKEN_TTL}
    return jwt.encode(claims, secret, algorithm="HS256")


def _error_key(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:120]}"


class Child:
    """One client process: its sockets, its tally, and the commands it answers."""

    def __init__(self, conn: Connection, secret: str) -> None:
        self.conn = conn
        self.secret = secret
        self.socks: list[Sock] = []
        self.senders: list[Sock] = []
        self.tally = Tally()
        self.origin: dict[Sock, tuple[Spec, str | None]] = {}  # what each socket was opened as
        self.follow: Follow | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        def receive() -> None:
            """Commands read in a thread: uvloop makes a descriptor given to add_reader
            non-blocking, and a command larger than the pipe's buffer then reads half."""
            while True:
                try:
                    command = self.conn.recv()
                except (EOFError, OSError):
                    command = None
                loop.call_soon_threadsafe(inbox.put_nowait, command)
                if command is None or command[0] == "exit":
                    return

        threading.Thread(target=receive, name="commands", daemon=True).start()
        try:
            while (command := await inbox.get()) is not None and command[0] != "exit":
                name, args = command
                try:
                    reply: tuple[str, Any] = ("ok", await getattr(self, f"do_{name}")(*args))
                except Exception:
                    reply = ("error", traceback.format_exc())
                self.conn.send(reply)
        finally:
            await self.do_close()

    # -- commands -----------------------------------------------------------------
    async def do_open(self, specs: list[Spec], concurrency: int, timeout: float) -> dict[str, Any]:
        """Open (and join) every socket, ``concurrency`` at a time; time each one."""
        tokens = [mint(self.secret, s.user) if s.user else None for s in specs]
        gate = asyncio.Semaphore(concurrency)
        connected, joined = Histogram(), Histogram()
        errors: Counter[str] = Counter()

        async def one(spec: Spec, token: str | None) -> Sock | None:
            sock: Sock | None = None
            async with gate:
                start = time.monotonic_ns()
                try:
                    async with asyncio.timeout(timeout):
                        sock = await Sock.open(spec.url, token, self.tally, source=spec.source)
                        connected.record_ns(time.monotonic_ns() - start)
                        if spec.stream_id is not None:
                            await sock.join(spec.stream_id)
                    joined.record_ns(time.monotonic_ns() - start)
                except Exception as exc:
                    errors[_error_key(exc)] += 1
                    if sock is not None:
                        await sock.close()
                    return None
            if spec.sender:
                self.senders.append(sock)
            return sock

        t0 = time.monotonic_ns()
        socks = await asyncio.gather(*(one(s, t) for s, t in zip(specs, tokens, strict=True)))
        t1 = time.monotonic_ns()
        for sock, spec, token in zip(socks, specs, tokens, strict=True):
            if sock is not None:
                self.socks.append(sock)
                self.origin[sock] = (spec, token)
        return {
            "opened": sum(s is not None for s in socks),
            "failed": sum(errors.values()),
            "errors": dict(errors.most_common(5)),
            "t0": t0,
            "t1": t1,
            "connect": connected.sparse(),
            "join": joined.sparse(),
        }

    async def do_follow(self, url: str, delay: float, jitter: float, delay_max: float, attempts: int) -> None:
        """From now on every socket the server (or the network) closes reconnects as a
        Socket.IO client does (``reconnectionDelay``, ``randomizationFactor``,
        ``reconnectionDelayMax``, ``reconnectionAttempts``): after ``delay`` s, ± ``jitter`` of
        it, doubling after each failed attempt up to ``delay_max``, with its token and from its
        source address, and joins its stream again. It reconnects to ``url``: where a load
        balancer sends it once the closed worker's /readyz fails."""
        self.follow = Follow(url, delay, jitter, delay_max, attempts)
        for sock in self.socks:
            if sock.closed:
                continue
            sock.on_lost = self._lost

    def _lost(self, sock: Sock) -> None:
        follow = self.follow
        origin = self.origin.pop(sock, None)
        if follow is None or origin is None:
            return
        follow.lost += 1
        follow.first_lost = follow.first_lost or time.monotonic_ns()
        task = asyncio.ensure_future(self._reconnect(follow, origin[0], origin[1], time.monotonic_ns()))
        follow.tasks.add(task)
        task.add_done_callback(follow.tasks.discard)

    async def _reconnect(self, follow: Follow, spec: Spec, token: str | None, lost_ns: int) -> None:
        delay = follow.delay
        for _ in range(follow.attempts):
            # The client's backoff: time passing is the point, nothing is waited for.
            await asyncio.sleep(delay * (1 + follow.jitter * (2 * random.random() - 1)))
            sock: Sock | None = None
            try:
                sock = await Sock.open(follow.url, token, self.tally, source=spec.source)
                if spec.stream_id is not None:
                    await sock.join(spec.stream_id)
            except Exception as exc:
                follow.errors[_error_key(exc)] += 1
                if sock is not None:
                    await sock.close()
                delay = min(delay * 2, follow.delay_max)
                continue
            now = time.monotonic_ns()
            follow.rejoined += 1
            follow.last_rejoin = max(follow.last_rejoin, now)
            follow.took.record_ns(now - lost_ns)
            self.socks.append(sock)
            self.origin[sock] = (Spec(follow.url, spec.user, spec.stream_id, spec.sender, spec.source), token)
            if spec.sender:
                self.senders.append(sock)
            sock.on_lost = self._lost
            return
        follow.gave_up += 1

    async def do_followed(self) -> dict[str, Any]:
        """How the reconnecting went so far (no waiting); the sockets the server closed are
        forgotten once every one of them is back or given up."""
        follow = self.follow
        if follow is None:
            return {"lost": 0, "rejoined": 0, "gave_up": 0, "errors": {}}
        if follow.lost == follow.rejoined + follow.gave_up:
            self.socks = [s for s in self.socks if not s.closed]
            self.senders = [s for s in self.senders if not s.closed]
        return {
            "lost": follow.lost,
            "rejoined": follow.rejoined,
            "gave_up": follow.gave_up,
            "errors": dict(follow.errors.most_common(5)),
            "first_lost": follow.first_lost,
            "last_rejoin": follow.last_rejoin,
            "took": follow.took.sparse(),
            "open_sockets": sum(not s.closed for s in self.socks),
        }

    async def do_reset(self) -> None:
        self.tally.reset()
        for sock in self.socks:
            sock.chat = 0

    async def do_send(self, rate: float | None, seconds: float, timeout: float) -> dict[str, Any]:
        """Every sender chats for ``seconds``: ``rate`` messages/s each, or, with ``rate``
        None, as fast as acks come back (one message in flight per sender)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        acks = Histogram()
        accepted: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        pending: list[asyncio.Future[Any]] = []

        def settle(stream_id: str, sent_ns: int) -> Callable[[asyncio.Future[Any]], None]:
            def done(future: asyncio.Future[Any]) -> None:
                reply = None if future.cancelled() or future.exception() else future.result()
                if isinstance(reply, dict) and reply.get("success"):
                    accepted[stream_id] += 1
                    acks.record_ns(time.monotonic_ns() - sent_ns)
                else:
                    code = (reply or {}).get("error", {}).get("code") if isinstance(reply, dict) else None
                    refused[str(code or "no_ack")] += 1

            return done

        async def chat(sock: Sock, seq: int) -> asyncio.Future[Any]:
            sent = time.monotonic_ns()
            future = await sock.emit_with_ack(
                "send_message", {"stream_id": sock.stream_id, "message": f"bench {sent} {seq}"}
            )
            future.add_done_callback(settle(str(sock.stream_id), sent))
            return future

        async def paced(sock: Sock, per_second: float, offset: float) -> None:
            interval, seq = 1.0 / per_second, 0
            due = loop.time() + offset * interval
            while due < end:
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)  # pacing, not waiting for a condition
                pending.append(await chat(sock, seq))
                seq, due = seq + 1, due + interval

        async def closed_loop(sock: Sock) -> None:
            seq = 0
            while loop.time() < end and not sock.closed:
                future = await chat(sock, seq)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(future, timeout)
                seq += 1

        first = time.monotonic_ns()
        n = len(self.senders)
        if rate is None:
            await asyncio.gather(*(closed_loop(s) for s in self.senders))
        else:
            await asyncio.gather(*(paced(s, rate, i / max(n, 1)) for i, s in enumerate(self.senders)))
        last = time.monotonic_ns()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return {
            "accepted": dict(accepted),
            "refused": dict(refused),
            "ack": acks.sparse(),
            "t_first": first,
            "t_last_send": last,
            "senders": n,
        }

    async def do_expect(self, targets: dict[str, int], stall: float) -> dict[str, Any]:
        """Wait until every socket got the chat messages of its stream, or until none arrived
        for ``stall`` seconds (a slow hub is waited for, a lost message is not), then report
        what arrived."""
        tally = self.tally
        expected = sum(targets.get(s.stream_id or "", 0) for s in self.socks)
        tally.target = expected
        await self._until_done_or_stalled(stall)
        missing = extra = short = 0
        for sock in self.socks:
            want = targets.get(sock.stream_id or "", 0)
            missing += max(0, want - sock.chat)
            extra += max(0, sock.chat - want)
            short += sock.chat < want
        return {
            "sockets": len(self.socks),
            "received": tally.received,
            "expected": expected,
            "missing": missing,
            "extra": extra,
            "short_sockets": short,
            "closed_sockets": sum(s.closed for s in self.socks),
            "closed_by": dict(Counter(s.close_reason for s in self.socks if s.closed)),
            "latency": tally.latency.sparse(),
            "last_rx": tally.last_rx,
            "events": dict(tally.events),
        }

    async def _until_done_or_stalled(self, stall: float) -> None:
        tally = self.tally
        seen, quiet_since = tally.received, time.monotonic()
        while tally.received < tally.target:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tally.done.wait(), 0.5)
            if tally.received != seen:
                seen, quiet_since = tally.received, time.monotonic()
            elif time.monotonic() - quiet_since > stall:
                return

    async def do_count(self) -> dict[str, Any]:
        """Open sockets and events seen so far (no waiting)."""
        return {
            "sockets": len(self.socks),
            "closed_sockets": sum(s.closed for s in self.socks),
            "received": self.tally.received,
            "events": dict(self.tally.events),
        }

    async def do_close(self) -> None:
        follow, self.follow = self.follow, None
        if follow is not None:
            for task in list(follow.tasks):
                task.cancel()
        self.origin = {}
        socks, self.socks, self.senders = self.socks, [], []
        gate = asyncio.Semaphore(200)

        async def close(sock: Sock) -> None:
            async with gate:
                await sock.close()

        await asyncio.gather(*(close(s) for s in socks), return_exceptions=True)
        self.tally.reset()


@dataclass
class Follow:
    """Where and how a client process's sockets reconnect, and how it went (``do_follow``)."""

    url: str
    delay: float
    jitter: float
    delay_max: float
    attempts: int
    lost: int = 0
    rejoined: int = 0
    gave_up: int = 0
    first_lost: int = 0  # monotonic ns (system-wide: comparable across processes)
    last_rejoin: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    took: Histogram = field(default_factory=Histogram)  # from the loss to the join's answer
    tasks: set[asyncio.Future[None]] = field(default_factory=set)


def child_main(conn: Connection, secret: str) -> None:
    """Entry point of a client process; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(Child(conn, secret).serve())


class Fleet:
    """The client processes, seen from the benchmark process."""

    def __init__(self, procs: int, secret: str) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        for i in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=child_main, args=(child, secret), daemon=True, name=f"bench-client-{i}")
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def __len__(self) -> int:
        return len(self.procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    async def ask(self, i: int, name: str, *args: Any, timeout: float = 120.0) -> Any:
        loop = asyncio.get_running_loop()
        conn, fd = self.conns[i], self.conns[i].fileno()
        answer: asyncio.Future[Any] = loop.create_future()

        def readable() -> None:
            loop.remove_reader(fd)
            try:
                answer.set_result(conn.recv())
            except (EOFError, OSError) as exc:
                proc = self.procs[i]
                proc.join(1)
                answer.set_exception(
                    RuntimeError(f"client process {i} died ({exc!r}, exit code {proc.exitcode})")
                )

        loop.add_reader(fd, readable)
        self._waiting[fd] = (loop, answer)
        try:
            conn.send((name, args))
            status, value = await asyncio.wait_for(answer, timeout)
        finally:
            loop.remove_reader(fd)
            self._waiting.pop(fd, None)
        if status == "error":
            raise RuntimeError(f"client process {i}, {name}:\n{value}")
        return value

    async def ask_all(self, name: str, *args: Any, timeout: float = 120.0) -> list[Any]:
        return await self.ask_each(name, [args] * len(self), timeout)

    async def ask_each(self, name: str, per_proc: list[tuple[Any, ...]], timeout: float = 120.0) -> list[Any]:
        """Each process gets its own arguments. Every answer is awaited before the first
        failure is raised, so no question is left pending."""
        answers = await asyncio.gather(
            *(self.ask(i, name, *args, timeout=timeout) for i, args in enumerate(per_proc)),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return list(answers)

    def stop(self) -> None:
        """Terminate the client processes now: one may be in the middle of a command, and
        its sockets need no goodbye (the kernel closes them)."""
        for fd, (loop, answer) in list(self._waiting.items()):
            loop.remove_reader(fd)  # before the descriptor number is closed and reused
            if not answer.done():
                answer.set_exception(RuntimeError("client processes stopped"))
        self._waiting.clear()
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
