"""One benchmark run: the hub's processes, the load client, and the shared measuring steps.

The workloads (``tests/bench/workloads.py``) are written against this: fresh web workers,
streams made over REST, sockets opened by the client processes, one measured chat round
(CPU of every process, Redis command counts, pub/sub traffic, outbox lag), and a teardown
that leaves nothing behind for the next workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import redis
import redis.asyncio as aioredis

from tests.bench.cluster import SHARDS, BenchCluster, calls_delta, node_share
from tests.bench.fleet import Fleet, Spec, mint
from tests.bench.procs import (
    SECRET,
    Flusher,
    HubEnv,
    Meter,
    Worker,
    commandstats,
    eventually,
    mysql_server_pid,
    redis_server_pid,
    rss_kib,
)
from tests.bench.sio import merge, percentile_ms

if TYPE_CHECKING:
    from tests.faults import PrivateRedis

API = "/api/v1/streaming"
# Start-up warnings that say nothing about the load (the local Redis runs without AOF).
STARTUP_NOTICES = ("append-only persistence",)
# Commands the flusher sends (its pipeline runs in MULTI/EXEC).
FLUSHER_COMMANDS = frozenset({"xreadgroup", "xautoclaim", "xack", "xdel", "multi", "exec", "xgroup|create"})


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; ``--set name=value`` overrides any of them."""

    seconds: float = 10.0
    client_procs: int = 2
    open_concurrency: int = 100  # sockets being opened at once, per client process
    stall_timeout: float = 15.0  # deliveries still missing after this long without any are lost
    ack_timeout: float = 600.0  # how long a sender waits for its acks after the last send
    fanout_viewers: int = 2000
    fanout_users: int = 20  # viewers sign in as this many users (see workloads.fanout)
    fanout_senders: int = 2
    fanout_rate: float = 80.0  # messages/s, all senders together: 160,160 deliveries/s
    streams: int = 200
    stream_viewers: int = 10
    stream_rate: float = 5.0  # messages/s per stream
    joins: int = 3000
    join_streams: int = 100
    join_concurrency: int = 16  # per client process: 32 in flight saturate the hub (more only queue)
    ingress_streams: int = 10
    ingress_senders: int = 20  # per stream; each keeps one message in flight
    spread_streams: int = 100  # ingress-spread: the same 200 senders over more streams
    spread_senders: int = 2
    flush_rows: int = 200_000
    lag_streams: int = 20
    lag_rate: float = 1000.0  # messages/s, all streams together
    idle: int = 4000  # idle viewers, signed in and joined
    idle_streams: int = 40
    idle_per_address: int = 1  # viewers per loopback source address: real ones have their own
    idle_seconds: float = 60.0  # the measured window (--seconds sets it too)
    # capacity: one worker, idle viewers added up to each of these totals (--capacity-steps);
    # the worker's descriptor limit (RLIMIT_NOFILE, hard 20,000 here) bounds the last one.
    capacity_steps: str = "2000,5000,10000,15000,19000"
    capacity_streams: int = 100
    capacity_seconds: float = 30.0  # the idle window per step: more than one ping interval (25 s)
    capacity_ping_interval: float = 0.0  # the worker's HUB_PING_INTERVAL; 0: the hub's default (25 s)
    # drain: viewers of worker A reconnecting to worker B once A drains, as Socket.IO clients do.
    drain_viewers: int = 15000
    drain_streams: int = 100
    drain_seconds: float = 3.0  # A's HUB_DRAIN_SECONDS: the hub's default spread of the closes
    drain_timeout: float = 120.0  # how long the reconnects may take before the run gives up
    reconnect_delay: float = 1.0  # socket.io-client's reconnectionDelay (s)
    reconnect_jitter: float = 0.5  # its randomizationFactor
    reconnect_delay_max: float = 5.0  # its reconnectionDelayMax (s)
    reconnect_attempts: int = 10
    sweep_streams: int = 10_000  # LIVE streams, nothing due
    sweep_calls: int = 20  # each script's calls measured


SMOKE = Sizes(
    seconds=1.0,
    client_procs=2,
    stall_timeout=10.0,
    fanout_viewers=50,
    fanout_users=5,
    fanout_senders=1,
    fanout_rate=20.0,
    streams=20,
    stream_viewers=3,
    stream_rate=5.0,
    joins=100,
    join_streams=5,
    join_concurrency=16,
    ingress_streams=5,
    ingress_senders=4,
    spread_streams=10,
    spread_senders=2,
    flush_rows=2000,
    lag_streams=4,
    lag_rate=200.0,
    idle=40,
    idle_streams=4,
    idle_seconds=2.0,
    capacity_steps="20,40",
    capacity_streams=4,
    capacity_seconds=1.0,
    drain_viewers=40,
    drain_streams=4,
    drain_seconds=0.5,
    drain_timeout=30.0,
    reconnect_delay=0.2,
    sweep_streams=200,
    sweep_calls=5,
)


@dataclass
class Round:
    """What one measured chat round produced."""

    sends: list[dict[str, Any]]
    arrivals: list[dict[str, Any]]
    cpu: dict[str, float]
    redis_calls: dict[str, int]
    pubsub: dict[str, int] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)
    redis_nodes: dict[str, int] = field(default_factory=dict)  # calls per cluster node

    @property
    def accepted(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for s in self.sends:
            total.update(s["accepted"])
        return dict(total)

    @property
    def messages(self) -> int:
        return sum(self.accepted.values())

    @property
    def send_seconds(self) -> float:
        active = [s for s in self.sends if s["senders"]]
        if not active:
            return 0.0
        return (max(s["t_last_send"] for s in active) - min(s["t_first"] for s in active)) / 1e9

    def arrivals_total(self, key: str) -> int:
        return sum(a[key] for a in self.arrivals)

    def delivery_seconds(self) -> float:
        """From the first send to the last chat_message received anywhere."""
        first = min(s["t_first"] for s in self.sends if s["senders"])
        last = max((a["last_rx"] for a in self.arrivals), default=first)
        return max(last - first, 1) / 1e9

    def figures(self) -> dict[str, Any]:
        """Delivery and loss figures shared by the chat workloads."""
        refused: Counter[str] = Counter()
        for s in self.sends:
            refused.update(s["refused"])
        latency = merge([a["latency"] for a in self.arrivals])
        acks = merge([s["ack"] for s in self.sends])
        deliveries = self.arrivals_total("received")
        closed_by: Counter[str] = Counter()
        for a in self.arrivals:
            closed_by.update(a["closed_by"])
        return {
            "messages": self.messages,
            "refused": dict(refused),
            "deliveries": deliveries,
            "expected_deliveries": self.arrivals_total("expected"),
            "missing": self.arrivals_total("missing"),
            "extra": self.arrivals_total("extra"),
            "short_sockets": self.arrivals_total("short_sockets"),
            "closed_sockets": self.arrivals_total("closed_sockets"),
            "closed_by": dict(closed_by),
            "deliveries_per_s": round(deliveries / self.delivery_seconds(), 1),
            "latency_p50_ms": percentile_ms(latency, 0.50),
            "latency_p99_ms": percentile_ms(latency, 0.99),
            "latency_max_ms": percentile_ms(latency, 1.0),
            "ack_p50_ms": percentile_ms(acks, 0.50),
            "ack_p99_ms": percentile_ms(acks, 0.99),
        }


def cpu_figures(cpu: dict[str, float], ops: float) -> dict[str, Any]:
    """Hub CPU (workers + redis-server + flusher) and client CPU, totals and per operation."""
    hub = cpu.get("workers", 0.0) + cpu.get("redis", 0.0) + cpu.get("flusher", 0.0)
    client = cpu.get("client", 0.0)

    def per_op(seconds: float) -> float | None:
        return round(seconds * 1e6 / ops, 2) if ops else None

    return {
        "interval_s": cpu.get("wall"),
        "hub_cpu_s": round(hub, 3),
        "hub_cpu_us_per_op": per_op(hub),
        "client_cpu_s": round(client, 3),
        "client_cpu_us_per_op": per_op(client),
        "cpu_s": {k: v for k, v in cpu.items() if k != "wall"},
    }


def redis_figures(
    calls: dict[str, int], messages: int, nodes: dict[str, int] | None = None
) -> dict[str, Any]:
    """Redis commands per message, from INFO commandstats deltas (the Redis is shared:
    anything else using it in the same seconds is counted too). On a cluster ``nodes`` are
    the calls per node: each node's share of them is shown too."""
    if not messages:
        return {}
    evals = calls.get("evalsha", 0) + calls.get("eval", 0)
    hub_side = {k: v for k, v in calls.items() if k not in FLUSHER_COMMANDS}
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:12]
    return {
        "redis_evalsha_per_msg": round(evals / messages, 3),
        "redis_calls_per_msg": round(sum(calls.values()) / messages, 3),
        "redis_calls_per_msg_excl_flusher": round(sum(hub_side.values()) / messages, 3),
        "redis_calls_breakdown_per_msg": {k: round(v / messages, 3) for k, v in top},
        **({"redis_node_share": node_share(nodes)} if nodes else {}),
    }


def total_calls(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Calls per command summed over the nodes of ``Bench.command_counts()``."""
    total: Counter[str] = Counter()
    for calls in counts.values():
        total.update(calls)
    return dict(total)


def _private_redis(folder: Path) -> PrivateRedis:
    """A redis-server on a free loopback port, without persistence (``tests.faults``'s
    PrivateRedis, imported only when asked: it imports the test suite's conftest)."""
    from tests.faults import PrivateRedis

    return PrivateRedis(folder, persistence=False)


def log_summary(workers: list[Worker], marks: dict[int, int]) -> dict[str, Any]:
    """WARNING/ERROR lines the workers logged (connections cut off, Redis errors…), up to the
    end of the measurement (``marks``: log size per worker pid then), and during teardown."""
    during: Counter[str] = Counter()
    after = 0
    for w in workers:
        mark = marks.get(w.pid)
        during.update(_problems(w.log_text(0, mark)))
        if mark is not None:
            after += sum(_problems(w.log_text(mark)).values())
    return {"lines": sum(during.values()), "top": dict(during.most_common(3)), "teardown_lines": after}


def _problems(text: str) -> Counter[str]:
    lines: Counter[str] = Counter()
    for line in text.splitlines():
        parts = line.split(" ", 4)  # date time LEVEL logger message
        if (
            len(parts) == 5
            and parts[2] in ("WARNING", "ERROR", "CRITICAL")
            and not any(known in line for known in STARTUP_NOTICES)
        ):
            lines[f"{parts[2]} {parts[3]} {_shape(parts[4])}"] += 1
    return lines


def _shape(message: str) -> str:
    """A log message with ids and numbers blanked, so repeats count as one."""
    return " ".join("#" if any(c.isdigit() for c in word) else word for word in message.split())[:160]


class Bench:
    """``cluster=True``: the hub's Redis is a private three-node cluster (``BenchCluster``),
    started by start() and stopped by close(), and the hub keeps its keys in 16 shards.
    ``private_redis=True``: it is a redis-server of the run's own, without persistence, also
    started by start() and stopped by close(), so its command counts and CPU are the run's."""

    def __init__(
        self, sizes: Sizes, logdir: Path, cluster: bool = False, private_redis: bool = False
    ) -> None:
        self.sizes = sizes
        self.logdir = logdir
        self.cluster = BenchCluster(logdir / "cluster") if cluster else None
        self.private_redis = _private_redis(logdir / "redis") if private_redis else None
        if self.cluster is not None:
            self.env = HubEnv(redis_url=self.cluster.url, cluster=True, redis_shards=SHARDS)
        elif self.private_redis is not None:
            self.env = HubEnv(redis_url=self.private_redis.url)
        else:
            self.env = HubEnv()
        self.keys = self.env.keys
        self.workers: list[Worker] = []
        self.flusher: Flusher | None = None
        self._flushers = 0
        self.fleet: Fleet | None = None
        self.http: aiohttp.ClientSession | None = None
        # On a cluster both are cluster clients, made once the cluster is up (start()).
        self.redis: Any = None if cluster else redis.Redis.from_url(self.env.redis_url, decode_responses=True)
        self.aredis: Any = None
        self.redis_pids: dict[str, int] = {}  # "redis" or, on a cluster, each node's host:port
        self.mysql_pid: int | None = None
        self.streamers: dict[str, str] = {}  # stream id -> its streamer's token
        self.meter = Meter(self.groups)
        self.log_marks: dict[int, int] = {}  # worker pid -> log size when the measurement ended
        self.server = "hub"  # or "node": fresh_workers() starts the Node.js peer instead

    # -- life cycle ---------------------------------------------------------------
    async def start(self) -> None:
        if self.cluster is not None:
            await self.cluster.start()
            self.redis, self.aredis = self.cluster.redis, self.cluster.aredis
            self.redis_pids = self.cluster.pids()
        else:
            if self.private_redis is not None:
                self.private_redis.start()
            pid = redis_server_pid(self.redis)
            self.redis_pids = {"redis": pid} if pid else {}
        self.env.migrate()
        self.mysql_pid = mysql_server_pid(self.env)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50))
        if self.cluster is None:
            self.aredis = aioredis.from_url(self.env.redis_url, decode_responses=True)
        self.fleet = Fleet(self.sizes.client_procs, SECRET)
        self.start_flusher()

    def close(self) -> None:
        """Stop every process this run started and remove its keys and database. Safe to call
        twice and after a failure at any point."""
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        self.stop_workers()
        self.stop_flusher()
        self.env.cleanup()
        if self.cluster is not None:
            self.cluster.stop()
        else:
            with contextlib.suppress(Exception):
                self.redis.close()
        if self.private_redis is not None:
            self.private_redis.kill()

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.cluster is not None:
            await self.cluster.aclose()
        elif self.aredis is not None:
            await self.aredis.aclose()

    def groups(self) -> dict[str, list[int]]:
        groups = {
            "workers": [w.pid for w in self.workers],
            "redis": list(self.redis_pids.values()),
            "flusher": [self.flusher.pid] if self.flusher else [],
            "client": [os.getpid(), *(self.fleet.pids if self.fleet else [])],
        }
        if self.mysql_pid:
            groups["mysql"] = [self.mysql_pid]
        if self.cluster is not None:  # each node's CPU too, to see the load spread
            groups.update({f"redis {name}": [pid] for name, pid in self.redis_pids.items()})
        return groups

    # -- what the bench reads from Redis ------------------------------------------
    def command_counts(self) -> dict[str, dict[str, int]]:
        """INFO commandstats calls per command, per Redis node (the one Redis: "redis")."""
        if self.cluster is not None:
            return self.cluster.commandstats()
        return {"redis": commandstats(self.redis)}

    def calls_between(
        self, before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Calls per command over every node, and (on a cluster only) calls per node."""
        calls, nodes = calls_delta(before, after)
        return calls, nodes if self.cluster is not None else {}

    async def outbox_len(self) -> int:
        """Entries in the outbox (on a cluster, in every shard's outbox)."""
        if self.cluster is not None:
            return await self.cluster.outbox_len(self.keys)
        return int(await self.aredis.xlen(self.keys.outbox))

    def start_flusher(self) -> None:
        self._flushers += 1
        self.flusher = Flusher(self.env.env(), self.logdir, self._flushers)

    def stop_flusher(self) -> None:
        if self.flusher is not None:
            self.flusher.stop()
            self.flusher = None

    def use(self, server: str) -> None:
        """The next workloads run against ``server``: "hub", or "node", the Node.js peer, which
        has no outbox: the hub's flusher stops meanwhile, so its polling is not counted."""
        self.server = server
        if server == "node":
            self.stop_flusher()
        elif self.flusher is None:
            self.start_flusher()

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []
        self._subscribed = set()

    async def fresh_workers(self, n: int = 2, env: list[dict[str, str]] | None = None) -> list[Worker]:
        """Stop the previous workload's workers; start ``n`` new ones (hub web workers, or
        Node.js peers while ``server`` is "node") and wait until ready. ``env``: settings of
        each worker's own, over the run's."""
        self.stop_workers()
        node = self.server == "node"
        own = env or [{}] * n
        self.workers = [Worker(i, {**self.env.env(), **own[i]}, self.logdir, node) for i in range(n)]
        assert self.http is not None
        await asyncio.gather(*(w.ready(self.http) for w in self.workers))
        return self.workers

    # -- streams ------------------------------------------------------------------
    async def create_streams(self, n: int, tag: str) -> list[str]:
        gate = asyncio.Semaphore(20)

        async def create(i: int) -> str:
            token = mint(SECRET, f"{tag}-streamer-{i}", ["streamer"])
            url = f"{self.workers[i % len(self.workers)].url}{API}/create"
            async with gate:
                body = await self._post(url, token, {"title": f"bench {tag} {i}", "category": "bench"})
            stream_id = str(body["stream"]["stream_id"])
            self.streamers[stream_id] = token
            return stream_id

        return list(await asyncio.gather(*(create(i) for i in range(n))))

    async def end_streams(self) -> None:
        gate = asyncio.Semaphore(20)
        url = next(w.url for w in self.workers if w.alive())

        async def end(stream_id: str, token: str) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    await self._post(f"{url}{API}/{stream_id}/end", token, None)

        streamers, self.streamers = self.streamers, {}
        await asyncio.gather(*(end(s, t) for s, t in streamers.items()))

    async def _post(self, url: str, token: str, payload: Any) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.post(url, json=payload, headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json(content_type=None)
            if r.status >= 300:
                raise RuntimeError(f"POST {url}: {r.status} {body}")
            return dict(body)

    # -- sockets ------------------------------------------------------------------
    def split(self, specs: list[Spec]) -> list[list[Spec]]:
        """Round-robin over the client processes."""
        assert self.fleet is not None
        n = len(self.fleet)
        return [specs[i::n] for i in range(n)]

    async def open(self, specs: list[Spec], concurrency: int | None = None) -> list[dict[str, Any]]:
        """Open and join every socket; fail if any could not."""
        assert self.fleet is not None
        z = self.sizes
        replies = await self.fleet.ask_each(
            "open",
            [(part, concurrency or z.open_concurrency, 30.0) for part in self.split(specs)],
            timeout=300.0,
        )
        failed = sum(r["failed"] for r in replies)
        if failed:
            errors: Counter[str] = Counter()
            for r in replies:
                errors.update(r["errors"])
            raise RuntimeError(f"{failed} of {len(specs)} sockets failed to open/join: {dict(errors)}")
        return replies

    async def teardown(self) -> dict[str, Any]:
        """End the workload's streams (so the room empties at once rather than N leaves each
        telling N viewers), close the sockets, stop the workers, wait for the outbox to drain.
        Returns what the workers logged at WARNING and above."""
        if any(w.alive() for w in self.workers):  # a drained worker has gone already
            await self.end_streams()
        if self.fleet is not None:
            await self.fleet.ask_all("close", timeout=120.0)
        for w in self.workers:
            w.stop()
        log = log_summary(self.workers, self.log_marks)
        self.log_marks = {}
        self.workers = []
        await self.outbox_drained(300)
        return log

    async def reset(self) -> None:
        """After a failed workload: new client processes (the old ones may still be busy with
        a command), no workers, the outbox drained."""
        if self.fleet is not None:
            self.fleet.stop()
        self.fleet = Fleet(self.sizes.client_procs, SECRET)
        self.stop_workers()
        self.streamers = {}
        self.log_marks = {}
        await self.outbox_drained(300)

    async def outbox_drained(self, timeout: float) -> None:
        assert self.aredis is not None

        async def empty() -> bool:
            if self.flusher is not None and not self.flusher.alive():
                raise RuntimeError(f"flusher exited:\n{self.flusher.log_tail()}")
            return await self.outbox_len() == 0

        await eventually(empty, timeout, "outbox drained", every=0.05)

    # -- one measured chat round --------------------------------------------------
    async def chat_round(
        self, rate: float | None, seconds: float, *, pubsub: bool = False, lag: bool = False
    ) -> Round:
        """Every sender chats for ``seconds`` (``rate`` messages/s each, or closed loop), then
        every socket waits for its stream's accepted messages. CPU, Redis calls, pub/sub
        traffic and outbox lag are measured over the whole round."""
        assert self.fleet is not None
        await self.fleet.ask_all("reset")
        async with self._pubsub_counter(pubsub) as channels, self._lag_sampler(lag) as ages:
            calls0, snap0 = self.command_counts(), self.meter.snap()
            sends = await self.fleet.ask_all(
                "send", rate, seconds, self.sizes.ack_timeout, timeout=seconds + self.sizes.ack_timeout + 60
            )
            targets: Counter[str] = Counter()
            for s in sends:
                targets.update(s["accepted"])
            arrivals = await self.fleet.ask_all(
                "expect", dict(targets), self.sizes.stall_timeout, timeout=3600
            )
            snap1, calls1 = self.meter.snap(), self.command_counts()
            self.mark_logs()
        calls, nodes = self.calls_between(calls0, calls1)
        return Round(sends, arrivals, Meter.delta(snap0, snap1), calls, dict(channels), ages, nodes)

    @contextlib.asynccontextmanager
    async def _pubsub_counter(self, enabled: bool) -> AsyncIterator[Counter[str]]:
        """Messages per channel under this run's prefix, while the block runs (on a cluster:
        python-socketio's channel and the room channel of every stream of the workload)."""
        counts: Counter[str] = Counter()
        if not enabled:
            yield counts
            return
        if self.cluster is not None:
            channels = [self.keys.channel, *(self.keys.of(s).room(s) for s in self.streamers)]
            async with self.cluster.counter(channels) as counts:
                yield counts
            return
        assert self.aredis is not None
        pubsub = self.aredis.pubsub()
        await pubsub.psubscribe(f"{self.env.prefix}*")

        async def confirmed() -> bool:
            return await pubsub.get_message(timeout=0.1) is not None

        await eventually(confirmed, 10, "psubscribe confirmed", every=0)

        async def count() -> None:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "pmessage":
                    counts[message["channel"]] += 1

        task = asyncio.create_task(count())
        try:
            yield counts
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pubsub.aclose()

    @contextlib.asynccontextmanager
    async def _lag_sampler(self, enabled: bool, every: float = 0.1) -> AsyncIterator[list[float]]:
        """The outbox's oldest entry age (seconds), sampled every ``every`` seconds."""
        ages: list[float] = []
        if not enabled:
            yield ages
            return
        task = asyncio.create_task(self._sample_lag(ages, every))
        try:
            yield ages
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sample_lag(self, ages: list[float], every: float) -> None:
        assert self.aredis is not None
        outbox = self.keys.outbox
        while True:
            if self.cluster is not None:
                ages.append(await self.cluster.outbox_age(self.keys))
                await asyncio.sleep(every)  # a sampling period, not a wait for a condition
                continue
            async with self.aredis.pipeline(transaction=False) as pipe:
                pipe.xrange(outbox, count=1)
                pipe.time()
                first, now = await pipe.execute()
            now_ms = now[0] * 1000 + now[1] // 1000
            ages.append(max(0.0, (now_ms - int(first[0][0].split("-")[0])) / 1000) if first else 0.0)
            await asyncio.sleep(every)  # a sampling period, not a wait for a condition

    def numsub(self, channels: list[str]) -> dict[str, int]:
        if not channels:
            return {}
        if self.cluster is not None:
            return self.cluster.numsub(channels)
        return {str(ch): int(n) for ch, n in self.redis.pubsub_numsub(*channels)}

    def mark_logs(self) -> None:
        """The measurement ended: later worker log lines belong to the teardown."""
        self.log_marks = {w.pid: w.log_size() for w in self.workers}

    def worker_rss_kib(self) -> int:
        return sum(rss_kib(w.pid) for w in self.workers)
