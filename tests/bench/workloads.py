"""The eight workloads of the benchmark. Each starts fresh web workers, measures, tears down,
and returns one flat-ish dict: the figures its target names, plus CPU per operation."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from hub.settings import Settings
from hub.storage.keys import Keys
from hub.storage.scripts import checked, load_script, prelude
from hub.storage.state import DUE_MOST, State
from tests.bench.cluster import node_share
from tests.bench.fleet import Spec
from tests.bench.harness import Bench, Round, cpu_figures, redis_figures, total_calls
from tests.bench.procs import CLK_TCK, ROOT, commandstats, cpu_ticks, eventually, rss_kib
from tests.bench.sio import merge, percentile_ms

Workload = Callable[[Bench], Awaitable[dict[str, Any]]]


def _chat_result(name: str, r: Round, extra: dict[str, Any]) -> dict[str, Any]:
    figures = r.figures()
    return {
        "workload": name,
        **extra,
        **figures,
        **cpu_figures(r.cpu, figures["deliveries"]),
        "hub_cpu_us_per_msg": round(_hub(r.cpu) * 1e6 / r.messages, 2) if r.messages else None,
        **redis_figures(r.redis_calls, r.messages, r.redis_nodes),
    }


def _hub(cpu: dict[str, float]) -> float:
    return cpu.get("workers", 0.0) + cpu.get("redis", 0.0) + cpu.get("flusher", 0.0)


# -- 1. fan-out -----------------------------------------------------------------------


async def fanout(b: Bench) -> dict[str, Any]:
    """N viewers of one stream, half on each worker; a few senders at a fixed total rate.
    Viewers sign in as ``fanout_users`` users so that opening them does not broadcast
    N²/2 viewer_joined events (the joins workload measures joins)."""
    z = b.sizes
    workers = await b.fresh_workers()
    [stream] = await b.create_streams(1, "fanout")
    senders = [
        Spec(workers[k % 2].url, f"fanout-sender-{k}", stream, sender=True) for k in range(z.fanout_senders)
    ]
    viewers = [
        Spec(workers[i % 2].url, f"fanout-viewer-{i % z.fanout_users}", stream)
        for i in range(z.fanout_viewers)
    ]
    await b.open(senders + viewers)
    r = await b.chat_round(z.fanout_rate / z.fanout_senders, z.seconds)
    return _chat_result(
        "fanout",
        r,
        {
            "viewers": z.fanout_viewers,
            "senders": z.fanout_senders,
            "offered_msgs_per_s": z.fanout_rate,
            "offered_deliveries_per_s": z.fanout_rate * (z.fanout_viewers + z.fanout_senders),
        },
    )


# -- 2. many streams ------------------------------------------------------------------


async def streams(b: Bench) -> dict[str, Any]:
    """Many small streams; each stream's viewers and sender on one worker, alternating, so
    a worker needs the traffic of half the streams only."""
    z = b.sizes
    workers = await b.fresh_workers()
    ids = await b.create_streams(z.streams, "streams")
    specs = []
    for s, stream in enumerate(ids):
        url = workers[s % 2].url
        specs.append(Spec(url, f"streams-sender-{s}", stream, sender=True))
        specs += [Spec(url, f"streams-viewer-{s}-{v}", stream) for v in range(z.stream_viewers)]
    await b.open(specs)
    r = await b.chat_round(z.stream_rate, z.seconds, pubsub=True)
    numsub = b.numsub(list(r.pubsub))
    received = sum(n * numsub.get(ch, 0) for ch, n in r.pubsub.items())
    accepted = r.accepted
    needed = [
        sum(accepted.get(stream, 0) for s, stream in enumerate(ids) if s % 2 == w)
        for w in range(len(workers))
    ]
    per_worker = received / len(workers)
    return _chat_result(
        "streams",
        r,
        {
            "streams": z.streams,
            "viewers_per_stream": z.stream_viewers,
            "offered_msgs_per_s": z.stream_rate * z.streams,
            "pubsub_channels": {
                ch.removeprefix(b.env.prefix): {"messages": n, "subscribers": numsub.get(ch, 0)}
                for ch, n in r.pubsub.items()
            },
            "pubsub_msgs_per_worker": round(per_worker, 1),
            "pubsub_needed_per_worker": round(sum(needed) / len(workers), 1),
            "pubsub_unneeded_fraction": round(1 - sum(needed) / received, 3) if received else None,
        },
    )


# -- 3. joins -------------------------------------------------------------------------


async def joins(b: Bench) -> dict[str, Any]:
    """Distinct signed-in viewers connect and join as fast as the hub answers (closed loop,
    ``join_concurrency`` in flight per client process), spread over ``join_streams`` streams."""
    z = b.sizes
    assert b.fleet is not None
    workers = await b.fresh_workers()
    ids = await b.create_streams(z.join_streams, "joins")
    specs = [Spec(workers[i % 2].url, f"joins-viewer-{i}", ids[i % len(ids)]) for i in range(z.joins)]
    await b.fleet.ask_all("reset")
    rss0 = b.worker_rss_kib()
    counts0, snap0 = b.command_counts(), b.meter.snap()
    replies = await b.open(specs, z.join_concurrency)
    snap1, counts1 = b.meter.snap(), b.command_counts()
    calls0, calls1 = total_calls(counts0), total_calls(counts1)
    b.mark_logs()
    rss1 = b.worker_rss_kib()
    counts = await b.fleet.ask_all("count")
    n = sum(r["opened"] for r in replies)
    seconds = (max(r["t1"] for r in replies) - min(r["t0"] for r in replies)) / 1e9
    join_hist, connect_hist = merge([r["join"] for r in replies]), merge([r["connect"] for r in replies])
    cpu = b.meter.delta(snap0, snap1)
    return {
        "workload": "joins",
        "joins": n,
        "streams": z.join_streams,
        "concurrency": z.join_concurrency * len(b.fleet),
        "joins_per_s": round(n / seconds, 1),
        "join_p50_ms": percentile_ms(join_hist, 0.5),
        "join_p99_ms": percentile_ms(join_hist, 0.99),
        "join_max_ms": percentile_ms(join_hist, 1.0),
        "connect_p50_ms": percentile_ms(connect_hist, 0.5),
        "connect_p99_ms": percentile_ms(connect_hist, 0.99),
        "worker_rss_kib_before": rss0,
        "worker_rss_kib_after": rss1,
        "kib_per_viewer": round((rss1 - rss0) / n, 2) if n else None,
        "viewer_joined_received": sum(c["events"].get("viewer_joined", 0) for c in counts),
        **cpu_figures(cpu, n),
        "redis_calls_per_join": round((sum(calls1.values()) - sum(calls0.values())) / n, 2) if n else None,
        "redis_calls_breakdown_per_join": {
            k: round((v - calls0.get(k, 0)) / n, 2)
            for k, v in sorted(calls1.items(), key=lambda kv: calls0.get(kv[0], 0) - kv[1])[:12]
        }
        if n
        else {},
        **(
            {"redis_node_share": node_share(b.calls_between(counts0, counts1)[1])}
            if b.cluster is not None
            else {}
        ),
    }


# -- 4. chat ingress ------------------------------------------------------------------


async def _ingress(b: Bench, name: str, streams: int, senders: int) -> dict[str, Any]:
    """``senders`` per stream (on alternating workers), each with one message in flight, for
    ``seconds``; the stream's sender is its only viewer of another sender's messages."""
    workers = await b.fresh_workers()
    ids = await b.create_streams(streams, name)
    specs = [
        Spec(workers[k % 2].url, f"{name}-sender-{s}-{k}", stream, sender=True)
        for s, stream in enumerate(ids)
        for k in range(senders)
    ]
    await b.open(specs)
    r = await b.chat_round(None, b.sizes.seconds)
    result = _chat_result(name, r, {"streams": streams, "senders": streams * senders})
    result["accepted_msgs_per_s"] = round(r.messages / r.send_seconds, 1) if r.send_seconds else None
    return result


async def ingress(b: Bench) -> dict[str, Any]:
    """Many senders, few viewers: the chat of a few busy streams, so that one batch holds
    several messages of a stream."""
    return await _ingress(b, "ingress", b.sizes.ingress_streams, b.sizes.ingress_senders)


async def ingress_spread(b: Bench) -> dict[str, Any]:
    """The same senders spread over many streams, two each: a batch holds about one message
    per stream, so the per-stream commands (the stream's state, counter, recent list and
    channel) are not shared; RPUSH and PUBLISH alone make two commands per message."""
    return await _ingress(b, "ingress-spread", b.sizes.spread_streams, b.sizes.spread_senders)


# -- 5. flush -------------------------------------------------------------------------


def _uuid7() -> str:
    ms = time.time_ns() // 1_000_000
    rand = uuid.uuid4().int
    value = (
        (ms << 80) | (0x7 << 76) | (((rand >> 64) & 0xFFF) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    )
    return str(uuid.UUID(int=value))


def _message_record(stream_id: str, i: int) -> bytes:
    """A chat message record exactly as hub/service.py's chat() puts it in the outbox."""
    message_id = _uuid7()
    now = datetime.now(UTC)
    return orjson.dumps(
        {
            "message_id": message_id,
            "stream_id": stream_id,
            "user_id": f"flush-user-{i % 100}",
            "username": f"flush-user-{i % 100}",
            "message": f"backlog message {i}",
            "message_type": "TEXT",
            "tip_amount": None,
            "created_at": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        }
    )


def _backlog(b: Bench, stream_id: str, rows: int, batch: int = 5000) -> None:
    """XADD ``rows`` message records (``t message d <json>``) to the stream's shard's outbox
    while no flusher runs."""
    outbox = b.keys.of(stream_id).outbox
    for start in range(0, rows, batch):
        with b.redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(rows, start + batch)):
                pipe.xadd(outbox, {"t": "message", "d": _message_record(stream_id, i)})
            pipe.execute()


async def flush(b: Bench) -> dict[str, Any]:
    """An outbox backlog of ``flush_rows`` message records, then a fresh flusher: rows/s into
    MySQL. Then chat at ``lag_rate`` with the flusher running: outbox oldest-entry age."""
    result = {"workload": "flush", **await _flush_backlog(b)}
    result.update(await _flush_lag(b))
    return result


async def _flush_backlog(b: Bench) -> dict[str, Any]:
    z = b.sizes
    await b.outbox_drained(60)
    b.stop_flusher()
    stream_id = _uuid7()
    _backlog(b, stream_id, z.flush_rows)
    b.start_flusher()

    async def started() -> bool:
        return await b.outbox_len() < z.flush_rows

    await eventually(started, 60, "flusher started", every=0.01)
    counts0 = b.command_counts() if b.cluster is not None else {}
    snap0, rows0, t0 = b.meter.snap(), await b.outbox_len(), time.monotonic()
    await b.outbox_drained(600)
    t1, snap1 = time.monotonic(), b.meter.snap()
    nodes = b.calls_between(counts0, b.command_counts())[1] if b.cluster is not None else {}
    stored = _count_rows(b, stream_id)
    cpu = b.meter.delta(snap0, snap1)
    mysql = cpu.get("mysql")
    return {
        "rows": z.flush_rows,
        "rows_measured": rows0,
        "rows_stored": stored,
        "rows_missing": z.flush_rows - stored,
        "rows_per_s": round(rows0 / (t1 - t0), 1),
        **cpu_figures(cpu, rows0),
        "mysql_cpu_us_per_row": round(mysql * 1e6 / rows0, 2) if mysql is not None and rows0 else None,
        **({"redis_node_share": node_share(nodes)} if nodes else {}),
    }


def _count_rows(b: Bench, stream_id: str) -> int:
    conn = b.env.mysql(b.env.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM chat_messages WHERE stream_id = %s", (stream_id,))
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


async def _flush_lag(b: Bench) -> dict[str, Any]:
    z = b.sizes
    workers = await b.fresh_workers()
    ids = await b.create_streams(z.lag_streams, "lag")
    await b.open(
        [Spec(workers[s % 2].url, f"lag-sender-{s}", stream, sender=True) for s, stream in enumerate(ids)]
    )
    r = await b.chat_round(z.lag_rate / z.lag_streams, z.seconds, lag=True)
    ages = sorted(r.lag)

    def q(p: float) -> float | None:
        return round(ages[min(len(ages) - 1, int(p * len(ages)))], 3) if ages else None

    return {
        "lag_msgs": r.messages,
        "lag_offered_msgs_per_s": z.lag_rate,
        "lag_samples": len(ages),
        "lag_hub_cpu_us_per_msg": round(_hub(r.cpu) * 1e6 / r.messages, 2) if r.messages else None,
        "lag_p50_s": q(0.5),
        "lag_p99_s": q(0.99),
        "lag_max_s": ages[-1] if ages else None,
        "lag_missing": r.figures()["missing"],
    }


# -- 6. idle viewers ------------------------------------------------------------------


def loopback_source(n: int) -> str:
    """The ``n``-th client address, from 127.1.0.0 on (the workers listen on 127.0.0.1)."""
    return f"127.{1 + n // 65536}.{n // 256 % 256}.{n % 256}"


async def idle(b: Bench) -> dict[str, Any]:
    """``idle`` signed-in viewers joined to ``idle_streams`` streams, half on each worker, each
    from its own loopback address (``idle_per_address`` share one), then left alone for
    ``idle_seconds``: what holding a connection costs while nothing happens. Per connection and
    second: Redis commands (INFO commandstats before and after the window) and hub CPU; per
    connection: the workers' RSS, before connecting and once all joined. The hub's presence
    refresh runs every HUB_PRESENCE_REFRESH (5 s) on each worker, so a window may catch one
    refresh more or less: twelve periods (60 s) keep that within a twelfth."""
    z = b.sizes
    assert b.fleet is not None
    workers = await b.fresh_workers()
    ids = await b.create_streams(z.idle_streams, "idle")
    specs = [
        Spec(
            workers[i % 2].url,
            f"idle-viewer-{i}",
            ids[i % len(ids)],
            source=loopback_source(i // z.idle_per_address),
        )
        for i in range(z.idle)
    ]
    rss0 = b.worker_rss_kib()
    replies = await b.open(specs)
    await b.outbox_drained(60)
    rss1 = b.worker_rss_kib()
    await b.fleet.ask_all("reset")
    counts0, snap0 = b.command_counts(), b.meter.snap()
    await asyncio.sleep(z.idle_seconds)  # the measured window: the load is time passing
    snap1, counts1 = b.meter.snap(), b.command_counts()
    b.mark_logs()
    counts = await b.fleet.ask_all("count")
    n = sum(r["opened"] for r in replies)
    cpu = b.meter.delta(snap0, snap1)
    calls, nodes = b.calls_between(counts0, counts1)
    return {
        "workload": "idle",
        "connections": n,
        "streams": z.idle_streams,
        "source_addresses": -(-n // z.idle_per_address),
        "closed_sockets": sum(c["closed_sockets"] for c in counts),
        "worker_rss_kib_before": rss0,
        "worker_rss_kib_after": rss1,
        "worker_rss_kib_per_conn": round((rss1 - rss0) / n, 2) if n else None,
        "per_op": "connection-second",
        **cpu_figures(cpu, n * cpu["wall"]),
        **_idle_redis(calls, n * cpu["wall"]),
        **({"redis_node_share": node_share(nodes)} if nodes else {}),
    }


def _idle_redis(calls: dict[str, int], conn_seconds: float) -> dict[str, Any]:
    """Redis commands per connection and second, in all and for the busiest commands (the
    Redis is shared: anything else using it during the window is counted too)."""
    if not conn_seconds:
        return {}
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
    return {
        "redis_calls": sum(calls.values()),
        "redis_calls_per_conn_s": round(sum(calls.values()) / conn_seconds, 3),
        "redis_calls_top_per_conn_s": {k: round(v / conn_seconds, 3) for k, v in top},
    }


# -- 7. capacity: one worker, many idle viewers ----------------------------------------


def capacity_steps(text: str) -> list[int]:
    """``--capacity-steps``: totals of viewers, comma-separated, in increasing order."""
    steps = [int(part) for part in text.split(",") if part.strip()]
    if not steps or any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] <= 0:
        raise ValueError(f"capacity steps must increase from above 0: {text!r}")
    return steps


async def capacity(b: Bench) -> dict[str, Any]:
    """One web worker; signed-in viewers spread over ``capacity_streams`` streams, each from
    its own loopback address, added up to each total of ``capacity_steps``. At each step, once
    every viewer joined and the outbox is drained, a window of ``capacity_seconds`` in which
    nothing happens but time: the worker's RSS per connection (its growth since before the
    first viewer, over the viewers), its CPU in percent of one core, redis-server's, and the
    Redis commands per second. The window should hold at least one ping interval (25 s, or
    ``capacity_ping_interval``), so that every socket's ping falls in it."""
    z = b.sizes
    assert b.fleet is not None
    steps = capacity_steps(z.capacity_steps)
    ping = {"HUB_PING_INTERVAL": str(z.capacity_ping_interval)} if z.capacity_ping_interval else {}
    [worker] = await b.fresh_workers(1, [ping])
    ids = await b.create_streams(z.capacity_streams, "capacity")
    await b.outbox_drained(60)
    rss0 = rss_kib(worker.pid)
    curve: list[dict[str, Any]] = []
    opened = 0
    for total in steps:
        specs = [
            Spec(worker.url, f"capacity-viewer-{i}", ids[i % len(ids)], source=loopback_source(i))
            for i in range(opened, total)
        ]
        t0 = time.monotonic()
        # As many in flight as the joins workload: more only queue (and one worker's accept
        # queue, 128 connections, overflows, which costs a connection seconds of retransmits).
        replies = await b.open(specs, z.join_concurrency)
        open_s = time.monotonic() - t0
        opened += sum(r["opened"] for r in replies)
        await b.outbox_drained(120)
        counts0, snap0 = b.command_counts(), b.meter.snap()
        await asyncio.sleep(z.capacity_seconds)  # the measured window: the load is time passing
        snap1, counts1 = b.meter.snap(), b.command_counts()
        rss = rss_kib(worker.pid)
        cpu = b.meter.delta(snap0, snap1)
        calls, _ = b.calls_between(counts0, counts1)
        wall = cpu["wall"]
        counts = await b.fleet.ask_all("count")
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:4]
        curve.append(
            {
                "connections": opened,
                "closed_sockets": sum(c["closed_sockets"] for c in counts),
                "open_s": round(open_s, 1),
                "worker_rss_kib": rss,
                "worker_rss_kib_per_conn": round((rss - rss0) / opened, 2),
                "worker_cpu_pct": round(cpu.get("workers", 0.0) * 100 / wall, 2),
                "redis_cpu_pct": round(cpu.get("redis", 0.0) * 100 / wall, 2),
                "flusher_cpu_pct": round(cpu.get("flusher", 0.0) * 100 / wall, 2),
                "redis_cmds_per_s": round(sum(calls.values()) / wall, 1),
                "redis_cmds_top_per_s": {k: round(v / wall, 1) for k, v in top},
                "interval_s": wall,
            }
        )
        print(f"capacity: {json.dumps(curve[-1])}", flush=True)
    b.mark_logs()
    last = curve[-1]
    return {
        "workload": "capacity",
        "streams": z.capacity_streams,
        "ping_interval_s": z.capacity_ping_interval or None,
        "worker_rss_kib_before": rss0,
        **last,
        # What the last step's idle CPU comes to at 100,000 connections, were it linear in them.
        "worker_cpu_pct_at_100k": round(last["worker_cpu_pct"] * 100_000 / last["connections"], 1),
        "steps": curve,
    }


# -- 8. drain: a worker's viewers move to another --------------------------------------


async def drain(b: Bench) -> dict[str, Any]:
    """Two workers; ``drain_viewers`` signed-in viewers, each from its own loopback address,
    joined to ``drain_streams`` streams on worker A. Every client then reconnects as a
    Socket.IO client does once its connection is lost (``Child.do_follow``), to worker B (where
    a load balancer sends it once A's /readyz fails), and joins its stream again. A gets
    SIGTERM: it drains (its connections closed over ``drain_seconds``, HUB_DRAIN_SECONDS) and
    exits. Measured: from the SIGTERM until the last viewer's join on B was answered, failed
    attempts, viewers that gave up, and how long each viewer was away."""
    z = b.sizes
    assert b.fleet is not None
    a, b_worker = await b.fresh_workers(2, [{"HUB_DRAIN_SECONDS": str(z.drain_seconds)}, {}])
    ids = await b.create_streams(z.drain_streams, "drain")
    specs = [
        Spec(a.url, f"drain-viewer-{i}", ids[i % len(ids)], source=loopback_source(i))
        for i in range(z.drain_viewers)
    ]
    replies = await b.open(specs, z.join_concurrency)
    n = sum(r["opened"] for r in replies)
    await b.outbox_drained(120)
    await b.fleet.ask_all(
        "follow",
        b_worker.url,
        z.reconnect_delay,
        z.reconnect_jitter,
        z.reconnect_delay_max,
        z.reconnect_attempts,
    )
    b_cpu0, b_rss0 = cpu_ticks(b_worker.pid), rss_kib(b_worker.pid)
    t0_ns = time.monotonic_ns()
    a.popen.send_signal(signal.SIGTERM)
    states: list[dict[str, Any]] = []

    async def back() -> bool:
        nonlocal states
        assert b.fleet is not None
        states = await b.fleet.ask_all("followed")
        return sum(s["rejoined"] + s["gave_up"] for s in states) >= n

    await eventually(back, z.drain_timeout, f"{n} viewers back on worker B", every=0.1)
    b_cpu1 = cpu_ticks(b_worker.pid)

    async def exited() -> bool:
        return not a.alive()

    await eventually(exited, 30, "worker A exited")
    b.mark_logs()
    errors: Counter[str] = Counter()
    for s in states:
        errors.update(s["errors"])
    rejoined = sum(s["rejoined"] for s in states)
    last = max(s["last_rejoin"] for s in states)
    took = merge([s["took"] for s in states])
    seconds = (last - t0_ns) / 1e9
    return {
        "workload": "drain",
        "viewers": n,
        "streams": z.drain_streams,
        "drain_seconds": z.drain_seconds,
        "lost": sum(s["lost"] for s in states),
        "rejoined": rejoined,
        "gave_up": sum(s["gave_up"] for s in states),
        "failed_attempts": sum(errors.values()),
        "errors": dict(errors.most_common(5)),
        "seconds_to_all_rejoined": round(seconds, 2),
        "rejoins_per_s": round(rejoined / seconds, 1) if seconds > 0 else None,
        "away_p50_ms": percentile_ms(took, 0.5),
        "away_p99_ms": percentile_ms(took, 0.99),
        "away_max_ms": percentile_ms(took, 1.0),
        "worker_b_cpu_s": round((b_cpu1 - b_cpu0) / CLK_TCK, 2),
        "worker_b_rss_kib_per_conn": round((rss_kib(b_worker.pid) - b_rss0) / rejoined, 2)
        if rejoined
        else None,
        "open_sockets": sum(s["open_sockets"] for s in states),
    }


# -- 9. the sweep ----------------------------------------------------------------------

# The reap.lua every worker ran each HUB_REAP_INTERVAL before the sweep read indexes: it walked
# every LIVE stream of its shard.
OLD_REAP = "e8a4c66:hub/storage/lua/reap.lua"


async def live_streams(client: aioredis.Redis, settings: Settings, n: int, chunk: int = 1000) -> list[str]:
    """``n`` LIVE streams of as many streamers, made by the hub's create.lua in pipelines of
    ``chunk`` calls, their fields as ``StreamService.create_stream`` writes them."""
    state = State(client, settings)
    create = load_script(client, settings, "create")
    ids: list[str] = []
    for first in range(0, n, chunk):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + chunk, n)):
                streamer = f"sweep-streamer-{i}"
                sid = state.new_stream_id(streamer)
                now = str(int(time.time() * 1000))
                k = state.keys.of(sid)
                fields = {
                    **dict.fromkeys(("description", "thumbnail_url", "recording_url", "scheduled_at"), ""),
                    **dict.fromkeys(("ended_at", "duration_seconds"), ""),
                    **dict.fromkeys(
                        ("peak_viewers", "message_count", "tip_count", "tips_cents", "fees_cents"), "0"
                    ),
                    "stream_id": sid,
                    "streamer_id": streamer,
                    "streamer_name": streamer,
                    "title": f"sweep {i}",
                    "status": "LIVE",
                    "category": "bench",
                    "is_recording": "0",
                    "started_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                keys = [
                    k.stream(sid),
                    k.unique(sid),
                    k.streamer_live(streamer),
                    k.streamer_streams(streamer),
                    k.streamer_scheduled(streamer),
                    k.create_rate(streamer),
                    k.live,
                    k.outbox,
                    k.live_idle,
                ]
                args = [k.prefix, sid, "LIVE", now, 1000, 3_600_000, 10, 0, 100, 3600]
                await create(
                    keys=keys, args=[*args, *(x for pair in fields.items() for x in pair)], client=pipe
                )
                ids.append(sid)
            for reply in await pipe.execute():
                checked(reply)
    return ids


async def sweep(b: Bench) -> dict[str, Any]:
    """``sweep_streams`` LIVE streams, none with anything due (no viewer, no kept viewer event,
    the idle end an hour away), then each shard's sweep called ``sweep_calls`` times as the
    workers call it: due.lua and the reap.lua of the tree, and for comparison the reap.lua of
    before (``OLD_REAP``, which walked every live stream). Then due.lua's heaviest call: as many
    held viewer events and idle streams due as one call takes (``DUE_MOST`` each). Each call's Redis time, and the
    commands one due.lua call runs, are read from INFO commandstats. No worker runs meanwhile,
    and the flusher is stopped: on --private-redis nothing else touches Redis (on the local one
    a call during which another client ran a script is measured again). CPU per op: per call."""
    if b.cluster is not None:
        raise RuntimeError("the sweep workload runs on one Redis (the local one or --private-redis)")
    z = b.sizes
    b.stop_workers()
    settings = Settings.from_env(b.env.env())
    ids = await live_streams(b.aredis, settings, z.sweep_streams)
    await b.outbox_drained(300)
    b.stop_flusher()
    try:
        state = State(b.aredis, settings)
        old_reap = b.aredis.register_script(prelude(settings) + "\n" + _old_reap())
        k = b.keys

        async def due() -> None:
            found = await state.due(k)
            if found.idle or found.viewer_events:
                raise RuntimeError(f"something was due: {found}")

        async def reap() -> None:
            await state.reap()

        async def reap_before() -> None:
            await old_reap(keys=[k.live, k.outbox], args=[k.prefix, 1000])

        async def due_full() -> None:
            await _make_due(b.aredis, k, ids[:DUE_MOST])
            found = await state.due(k)
            if (found.viewer_events, len(found.idle)) != (DUE_MOST, DUE_MOST):
                raise RuntimeError(f"not everything made due was found: {found}")

        calls = {"due": due, "reap": reap, "reap_before": reap_before, "due_full": due_full}
        counts0 = commandstats(b.redis)
        await due()
        due_commands = b.calls_between({"redis": counts0}, {"redis": commandstats(b.redis)})[0]
        snap0 = b.meter.snap()
        times = {name: await _redis_us(b, call, z.sweep_calls) for name, call in calls.items()}
        cpu = b.meter.delta(snap0, b.meter.snap())
    finally:
        b.start_flusher()
    await _end_all(b.aredis, settings, ids)
    sweep_us = [d + r for d, r in zip(times["due"], times["reap"], strict=True)]
    return {
        "workload": "sweep",
        "live_streams": len(ids),
        "shards": len(b.keys.all),
        "calls": z.sweep_calls,
        "sweep_us_p50": _median(sweep_us),
        "sweep_us_max": max(sweep_us),
        **{f"{name}_us_p50": _median(us) for name, us in times.items()},
        **{f"{name}_us_max": max(us) for name, us in times.items()},
        "due_commands": {name: n for name, n in due_commands.items() if name not in _OURS},
        "due_full_streams": f"{DUE_MOST}+{DUE_MOST}",
        **cpu_figures(cpu, len(calls) * z.sweep_calls),
    }


async def _make_due(client: aioredis.Redis, k: Keys, ids: list[str]) -> None:
    """A held viewer event due now in each of these streams, and each stream's idle end come."""
    held = orjson.dumps(["viewer_joined", "sweep-viewer", "Sweep viewer", None])
    async with client.pipeline(transaction=False) as pipe:
        for sid in ids:
            pipe.hset(k.stream(sid), mapping={"viewer_event_kept": held, "viewer_event_ms": 0})
            pipe.zadd(k.viewer_events_due, {sid: 0})
            pipe.zadd(k.live_idle, {sid: 0})
        await pipe.execute()


def _old_reap() -> str:
    """The text of ``OLD_REAP``, from git."""
    done = subprocess.run(["git", "show", OLD_REAP], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


# The commands of the measurement itself, not of the script measured.
_OURS = frozenset({"evalsha", "eval", "info", "script|load"})


async def _redis_us(b: Bench, call: Callable[[], Awaitable[None]], n: int) -> list[int]:
    """The Redis time (µs) of each of ``n`` calls: INFO commandstats' EVALSHA time before and
    after each (a script's time includes the commands it runs). A call during which anything
    else ran a script is taken again."""
    await call()  # loads the script: a first EVALSHA refused with NOSCRIPT is not measured
    us: list[int] = []
    for _ in range(n * 5):
        before = _evalsha(b)
        await call()
        after = _evalsha(b)
        if after[0] - before[0] == 1:
            us.append(after[1] - before[1])
        if len(us) == n:
            return us
    raise RuntimeError(f"only {len(us)} of {n} calls measured alone: Redis is busy with other scripts")


def _evalsha(b: Bench) -> tuple[int, int]:
    """EVALSHA's calls and µs so far."""
    stats = b.redis.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2])


async def _end_all(client: aioredis.Redis, settings: Settings, ids: list[str]) -> None:
    """The workload's streams ended, so that the next workload's sweeps do not see them."""
    state = State(client, settings)
    for first in range(0, len(ids), 50):  # 50 calls in flight at a time
        await asyncio.gather(
            *(
                state.end_stream(sid, f"sweep-streamer-{i}")
                for i, sid in enumerate(ids[first : first + 50], first)
            )
        )


WORKLOADS: dict[str, Workload] = {
    "fanout": fanout,
    "streams": streams,
    "joins": joins,
    "ingress": ingress,
    "ingress-spread": ingress_spread,
    "flush": flush,
    "idle": idle,
    "capacity": capacity,
    "drain": drain,
    "sweep": sweep,
}
