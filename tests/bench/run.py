"""``python -m tests.bench.run [--workload NAME ...] [--seconds S] [--smoke] [--idle N]
[--capacity-steps N,N,...] [--drain N] [--set name=value] [--cluster | --private-redis]``

Starts two web workers and a flusher on a private Redis prefix and MySQL database, drives
them from lean websocket clients on loopback, and prints one JSON line per workload, then a
table. Hub CPU is the user+sys time of the web workers, redis-server and the flusher over the
measured interval (/proc/<pid>/stat); client CPU is this process and the client processes.
Every process, key and the database are removed at the end, on failure and on Ctrl-C too.

With ``--cluster`` the hub's Redis is a private three-node Redis Cluster (no persistence, like
the local Redis) that the run starts and always stops, with HUB_REDIS_SHARDS=16: Redis
commands are counted on every node (each node's share is shown), and redis-server CPU is the
three nodes'.

With ``--private-redis`` the hub's Redis is a redis-server of the run's own (no persistence),
started and always stopped by the run: on the local Redis, anything else using it during a
measurement is counted too, which matters most for the idle workload's small figures.

With ``BENCH_SERVER=node`` the workloads the Node.js socket.io peer (``tests/bench/node/server.mjs``)
can do (fanout, joins, ingress, idle) run against it too, each right after the hub's, and the
table shows its row under the hub's; without Node.js or its packages the run says so and goes
on without the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.floor import measure as measure_floor
from tests.bench.harness import SMOKE, Bench, Sizes
from tests.bench.procs import node_peer_asked, node_peer_problem
from tests.bench.workloads import WORKLOADS, capacity_steps

# What the Node.js peer can do like the hub: join a room, broadcast and acknowledge.
PEER_WORKLOADS = ("fanout", "joins", "ingress", "idle")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workload",
        action="extend",
        nargs="+",
        choices=list(WORKLOADS),
        dest="workloads",
        metavar="NAME",
        help=f"run only these ({', '.join(WORKLOADS)}); default: all, in that order",
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per workload (idle's window too)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, about a second each")
    parser.add_argument("--idle", type=int, metavar="N", help="connections the idle workload holds")
    parser.add_argument(
        "--capacity-steps",
        metavar="N,N,...",
        help="viewer totals the capacity workload measures at (default 2000,5000,10000,15000,19000)",
    )
    parser.add_argument("--drain", type=int, metavar="N", help="viewers the drain workload moves")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a size, e.g. --set fanout_rate=50 (see harness.Sizes)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run on a private three-node Redis Cluster (16 shards) instead of the local Redis",
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="run on a redis-server of the run's own instead of the local Redis, so that Redis "
        "commands and redis-server CPU are the hub's alone",
    )
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = SMOKE if args.smoke else Sizes()
    changes: dict[str, Any] = {}
    defaults = {f.name: getattr(sizes, f.name) for f in dataclasses.fields(Sizes)}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in defaults:
            raise SystemExit(f"--set: no size named {name!r}; one of {', '.join(defaults)}")
        changes[name] = type(defaults[name])(value)
    if args.seconds is not None:
        changes["seconds"] = changes["idle_seconds"] = changes["capacity_seconds"] = args.seconds
    if args.idle is not None:
        changes["idle"] = args.idle
    if args.capacity_steps is not None:
        capacity_steps(args.capacity_steps)  # a bad list stops the run here
        changes["capacity_steps"] = args.capacity_steps
    if args.drain is not None:
        changes["drain_viewers"] = args.drain
    return dataclasses.replace(sizes, **changes)


# -- the table ------------------------------------------------------------------------


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _le(value: Any, limit: float) -> bool:
    return value is not None and value <= limit


def _ge(value: Any, limit: float) -> bool:
    return value is not None and value >= limit


Row = tuple[str, str, str, str, str, str, str, str, str]


def _fanout(r: dict[str, Any]) -> Row:
    met = (
        _ge(r["deliveries_per_s"], 150_000)
        and _le(r["latency_p99_ms"], 50)
        and _le(r["hub_cpu_us_per_op"], 6)
        and r["missing"] == 0
    )
    return (
        f"{_n(r['deliveries_per_s'])} deliv/s",
        _n(r["latency_p50_ms"]),
        _n(r["latency_p99_ms"]),
        _n(r["hub_cpu_us_per_op"]),
        _n(r["client_cpu_us_per_op"]),
        _n(r["missing"]),
        f"{r['viewers']} viewers, offered {_n(r['offered_deliveries_per_s'])}/s",
        "≥150k deliv/s, p99≤50ms, ≤6µs/deliv",
        "yes" if met else "no",
    )


def _streams(r: dict[str, Any]) -> Row:
    needed, got = r["pubsub_needed_per_worker"], r["pubsub_msgs_per_worker"]
    met = needed is not None and got <= needed * 1.02 + 10
    return (
        f"{_n(r['deliveries_per_s'])} deliv/s",
        _n(r["latency_p50_ms"]),
        _n(r["latency_p99_ms"]),
        _n(r["hub_cpu_us_per_op"]),
        _n(r["client_cpu_us_per_op"]),
        _n(r["missing"]),
        f"pub/sub per worker {_n(got)} (needed {_n(needed)})",
        "no pub/sub for streams without viewers",
        "yes" if met else "no",
    )


def _joins(r: dict[str, Any]) -> Row:
    met = _ge(r["joins_per_s"], 1500) and _le(r["join_p99_ms"], 100) and _le(r["kib_per_viewer"], 50)
    return (
        f"{_n(r['joins_per_s'])} joins/s",
        _n(r["join_p50_ms"]),
        _n(r["join_p99_ms"]),
        _n(r["hub_cpu_us_per_op"]),
        _n(r["client_cpu_us_per_op"]),
        "0",
        f"{_n(r['kib_per_viewer'])} KiB/viewer, {r['joins']} joins",
        "≥1500 joins/s, p99≤100ms, ≤50KiB/viewer",
        "yes" if met else "no",
    )


def _ingress(r: dict[str, Any]) -> Row:
    met = _le(r.get("redis_evalsha_per_msg"), 1) and _le(r.get("redis_calls_per_msg"), 2)
    return (
        f"{_n(r['accepted_msgs_per_s'])} msgs/s",
        _n(r["ack_p50_ms"]),
        _n(r["ack_p99_ms"]),
        _n(r["hub_cpu_us_per_msg"]),
        _n(r["client_cpu_us_per_op"]),
        _n(r["missing"]),
        f"evalsha/msg {_n(r.get('redis_evalsha_per_msg'), 2)}, "
        f"calls/msg {_n(r.get('redis_calls_per_msg'), 2)}",
        "≤1 round trip, ≤2 commands/msg",
        "yes" if met else "no",
    )


def _nodes(r: dict[str, Any]) -> str:
    """On a cluster: each node's share of the Redis commands, in percent (node order)."""
    share = r.get("redis_node_share")
    return f"; nodes {'/'.join(f'{v * 100:.0f}' for v in share.values())}%" if share else ""


def _flush(r: dict[str, Any]) -> Row:
    met = _ge(r["rows_per_s"], 50_000) and _le(r["lag_p99_s"], 2)

    def lag(seconds: float | None) -> str:
        return _n(seconds * 1000 if seconds is not None else None)

    return (
        f"{_n(r['rows_per_s'])} rows/s",
        lag(r["lag_p50_s"]),
        lag(r["lag_p99_s"]),
        _n(r["hub_cpu_us_per_op"]),
        _n(r["client_cpu_us_per_op"]),
        _n(r["rows_missing"]),
        f"lag at {_n(r['lag_offered_msgs_per_s'])} msgs/s; mysqld {_n(r['mysql_cpu_us_per_row'])} µs/row",
        "≥50k rows/s, lag p99≤2s",
        "yes" if met else "no",
    )


def _idle(r: dict[str, Any]) -> Row:
    """Per connection-second: hub and client CPU (µs) and Redis commands; per connection: RSS."""
    top = r.get("redis_calls_top_per_conn_s", {})
    return (
        f"{r['connections']:,} conns idle",
        "-",
        "-",
        _n(r["hub_cpu_us_per_op"], 2),
        _n(r["client_cpu_us_per_op"], 2),
        _n(r["closed_sockets"]),
        f"per conn: {_n(r.get('redis_calls_per_conn_s'), 2)} Redis cmds/s "
        f"({', '.join(f'{k} {v:.2f}' for k, v in list(top.items())[:3])}), "
        f"{_n(r['worker_rss_kib_per_conn'])} KiB; µs/op per conn-second over {_n(r['interval_s'])}s",
        "a baseline: cost while nothing happens",
        "-",
    )


def _capacity(r: dict[str, Any]) -> Row:
    """The last step: RSS per connection, idle CPU (and what it comes to at 100k if linear)."""
    met = _le(r["worker_rss_kib_per_conn"], 20) and _le(r["worker_cpu_pct_at_100k"], 10)
    return (
        f"{r['connections']:,} conns, 1 worker",
        "-",
        "-",
        "-",
        "-",
        _n(r["closed_sockets"]),
        f"{_n(r['worker_rss_kib_per_conn'])} KiB/conn, worker idle {_n(r['worker_cpu_pct'], 2)}% "
        f"(at 100k: {_n(r['worker_cpu_pct_at_100k'])}%), {_n(r['redis_cmds_per_s'])} Redis cmds/s",
        "≤20KiB/conn, ≤10% core idle at 100k",
        "yes" if met else "no",
    )


def _drain(r: dict[str, Any]) -> Row:
    met = _le(r["seconds_to_all_rejoined"], 30) and r["failed_attempts"] == 0 and r["gave_up"] == 0
    return (
        f"{_n(r['rejoins_per_s'])} rejoins/s",
        _n(r["away_p50_ms"]),
        _n(r["away_p99_ms"]),
        "-",
        "-",
        _n(r["gave_up"]),
        f"{r['rejoined']:,} back in {_n(r['seconds_to_all_rejoined'], 2)}s, "
        f"{_n(r['failed_attempts'])} failed attempts; ms: time away",
        "all back ≤30s, no error",
        "yes" if met else "no",
    )


def _sweep(r: dict[str, Any]) -> Row:
    """One sweep (due.lua and reap.lua of each shard) with nothing due: its Redis time."""
    worst = max(r["due_us_max"], r["reap_us_max"], r["due_full_us_max"])
    met = _le(r["sweep_us_p50"], 500) and _le(worst, 2000)
    return (
        f"{r['live_streams']:,} live streams",
        _n(r["sweep_us_p50"] / 1000, 3),
        _n(r["sweep_us_max"] / 1000, 3),
        "-",
        "-",
        "-",
        f"Redis µs per call p50/max: due {_n(r['due_us_p50'], 0)}/{_n(r['due_us_max'], 0)}, "
        f"reap {_n(r['reap_us_p50'], 0)}/{_n(r['reap_us_max'], 0)}, reap before "
        f"{_n(r['reap_before_us_p50'], 0)}/{_n(r['reap_before_us_max'], 0)}; due runs "
        f"{sum(r['due_commands'].values())} cmds; due with {r['due_full_streams']} due "
        f"{_n(r['due_full_us_p50'], 0)}/{_n(r['due_full_us_max'], 0)}",
        "sweep ≤0.5 ms, no call >2 ms",
        "yes" if met else "no",
    )


ROWS: dict[str, Callable[[dict[str, Any]], Row]] = {
    "fanout": _fanout,
    "streams": _streams,
    "joins": _joins,
    "ingress": _ingress,
    "ingress-spread": _ingress,
    "flush": _flush,
    "idle": _idle,
    "capacity": _capacity,
    "drain": _drain,
    "sweep": _sweep,
}
HEAD = (
    "workload",
    "throughput",
    "p50 ms",
    "p99 ms",
    "hub µs/op",
    "client µs/op",
    "lost",
    "notes",
    "target",
    "met",
)


def table(results: list[dict[str, Any]]) -> str:
    rows = [HEAD]
    for r in results:
        name = r["workload"] if r.get("server", "hub") == "hub" else f"{r['workload']} · {r['server']}"
        if "error" in r:
            rows.append((name, "ERROR", "", "", "", "", "", r["error"][:60], "", ""))
            continue
        row = ROWS[r["workload"]](r)
        if name == r["workload"]:
            rows.append((name, *row[:6], row[6] + _nodes(r), *row[7:]))
        else:  # the peer's row: the hub's targets are not its
            rows.append((name, *row[:7], "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEAD))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------


async def run(bench: Bench, names: list[str], peer: bool = False) -> list[dict[str, Any]]:
    """Each workload against the hub, and with ``peer`` right after against the Node.js peer
    when it can do it, so both figures come from the same minutes of the machine."""
    results: list[dict[str, Any]] = []
    try:
        await bench.start()
        if bench.cluster is not None:
            shards = bench.cluster.shards_per_node(bench.keys)
            print(
                f"cluster: nodes {', '.join(bench.cluster.names)} (no persistence); "
                f"HUB_REDIS_SHARDS={bench.keys.shards}, shards per node "
                f"{'/'.join(str(shards.get(n, 0)) for n in bench.cluster.names)}",
                flush=True,
            )
        for name in names:
            servers = ("hub", "node") if peer and name in PEER_WORKLOADS else ("hub",)
            for server in servers:
                bench.use(server)
                result = await run_one(bench, name)
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        await bench.aclose()
    return results


async def run_one(bench: Bench, name: str) -> dict[str, Any]:
    """One workload against ``bench.server``; a failure is its result, and the next workload
    starts clean."""
    try:
        result = await WORKLOADS[name](bench)
        result["server"] = bench.server
        result["hub_log"] = await bench.teardown()
    except Exception as exc:
        traceback.print_exc()
        result = {"workload": name, "server": bench.server, "error": f"{type(exc).__name__}: {exc}"}
        await bench.reset()
    return result


def _peer_ready(names: list[str]) -> bool:
    """BENCH_SERVER=node: whether the Node.js peer runs, said either way."""
    problem = node_peer_problem()
    if problem is not None:
        print(f"BENCH_SERVER=node: the Node.js peer is skipped: {problem}", flush=True)
        return False
    print(
        "BENCH_SERVER=node: "
        f"{', '.join(n for n in names if n in PEER_WORKLOADS) or 'no workload of this run'} "
        "also run against the Node.js socket.io 4.8 peer (tests/bench/node/server.mjs)",
        flush=True,
    )
    return True


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("BENCH_STACKS_AFTER"):
        # A run still going after this many seconds prints every thread's stack to stderr once
        # (and goes on): what a run stuck somewhere was doing, for whoever reads its output.
        faulthandler.dump_traceback_later(float(os.environ["BENCH_STACKS_AFTER"]), exit=False)
    sizes = sizes_from(args)
    names = args.workloads or list(WORKLOADS)
    if args.cluster and args.private_redis:
        raise SystemExit("--cluster and --private-redis: one or the other")
    if args.cluster and node_peer_asked():
        raise SystemExit("--cluster: the Node.js peer (BENCH_SERVER=node) speaks to one Redis only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, _interrupt)
    logdir = Path(tempfile.mkdtemp(prefix="hubbench-"))
    bench = Bench(sizes, logdir, cluster=args.cluster, private_redis=args.private_redis)
    print(
        f"hub bench: run {bench.env.run_id}, prefix {bench.env.prefix}, database {bench.env.database}, "
        f"{sizes.seconds:g}s per workload, {sizes.client_procs} client processes, logs in {logdir}",
        flush=True,
    )
    if bench.private_redis is not None:
        print(f"private redis: {bench.env.redis_url} (no persistence), stopped at the end", flush=True)
    peer = node_peer_asked() and _peer_ready(names)
    floor = measure_floor(100, 20) if args.smoke else measure_floor()
    print(json.dumps({"floor": "one 200-byte write to a loopback socket", **floor}), flush=True)
    ok = False
    try:
        results = asyncio.run(run(bench, names, peer))
        print()
        print(table(results), flush=True)
        print(
            f"machine floor: {floor['us_per_write']} µs of CPU per write to a loopback socket "
            f"(user {floor['user_us']}, system {floor['sys_us']}); a delivery costs at least that",
            flush=True,
        )
        ok = all("error" not in r for r in results)
    except KeyboardInterrupt:
        print("interrupted; stopping the hub's processes and cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.close()
        if ok:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            print(f"logs kept in {logdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
