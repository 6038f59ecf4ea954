"""The benchmark suite end to end at tiny sizes (``--smoke``), as a subprocess: it exits 0,
prints one JSON line per workload with its figures, loses no chat message and no outbox row,
and leaves no Redis key and no database behind; with ``--cluster`` (two workloads), counts
every node's commands and leaves no cluster node running, and with ``--private-redis`` leaves
no redis-server running; with BENCH_SERVER=node, runs the Node.js peer right after the hub
where it can, or says why it cannot. No timing target is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from tests.bench.procs import node_peer_problem

ROOT = Path(__file__).resolve().parents[2]
COMMON = {
    "workload",
    "interval_s",
    "hub_cpu_s",
    "hub_cpu_us_per_op",
    "client_cpu_s",
    "client_cpu_us_per_op",
    "cpu_s",
}
DELIVERY = {
    "messages",
    "deliveries",
    "expected_deliveries",
    "missing",
    "extra",
    "closed_sockets",
    "deliveries_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
}
EXPECTED = {
    "fanout": DELIVERY | {"viewers", "offered_deliveries_per_s"},
    "streams": DELIVERY | {"pubsub_msgs_per_worker", "pubsub_needed_per_worker", "pubsub_channels"},
    "joins": {"joins", "joins_per_s", "join_p50_ms", "join_p99_ms", "kib_per_viewer"},
    "ingress": DELIVERY
    | {"accepted_msgs_per_s", "ack_p99_ms", "redis_evalsha_per_msg", "redis_calls_per_msg"},
    "ingress-spread": DELIVERY
    | {"accepted_msgs_per_s", "ack_p99_ms", "redis_evalsha_per_msg", "redis_calls_per_msg"},
    "flush": {"rows", "rows_stored", "rows_missing", "rows_per_s", "lag_p50_s", "lag_p99_s", "lag_missing"},
    "sweep": {
        "live_streams",
        "sweep_us_p50",
        "due_us_max",
        "reap_us_max",
        "reap_before_us_p50",
        "due_commands",
    },
    "idle": {
        "connections",
        "closed_sockets",
        "source_addresses",
        "worker_rss_kib_per_conn",
        "redis_calls_per_conn_s",
        "redis_calls_top_per_conn_s",
    },
    "capacity": {
        "connections",
        "closed_sockets",
        "worker_rss_kib_per_conn",
        "worker_cpu_pct",
        "worker_cpu_pct_at_100k",
        "redis_cmds_per_s",
        "steps",
    },
    "drain": {"viewers", "rejoined", "gave_up", "failed_attempts", "seconds_to_all_rejoined", "away_p99_ms"},
}
# Workloads whose figures are no per-operation CPU (curves, times).
NO_CPU = {"capacity", "drain"}


def _results(stdout: str) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            if "floor" in result:  # the machine's cost of one socket write, not a workload
                assert result["us_per_write"] > 0
                continue
            assert result["workload"] not in results, f"two lines for {result['workload']}"
            results[result["workload"]] = result
    return results


def _run_id(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("hub bench: run "), first
    return first.split()[3].rstrip(",")


def bench(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m tests.bench.run ARGS`` with ``env`` added to the environment; one still
    running 20 s before ``timeout`` prints its threads' stacks, and a run over ``timeout``
    fails with what it printed."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "tests.bench.run", *args],
            cwd=ROOT,
            env={**os.environ, "BENCH_STACKS_AFTER": str(timeout - 20), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out, err = (
            x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (exc.stdout, exc.stderr)
        )
        raise AssertionError(
            f"bench {args} still running after {timeout}s\n{out[-3000:]}\n{err[-20000:]}"
        ) from None


@pytest.mark.timeout(240)
def test_bench_smoke_reports_every_workload_without_loss() -> None:
    done = bench("--smoke", timeout=220)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    results = _results(done.stdout)
    assert set(results) == set(EXPECTED), done.stdout
    for name, keys in EXPECTED.items():
        keys = keys if name in NO_CPU else keys | COMMON
        assert keys <= results[name].keys(), (name, sorted(keys - results[name].keys()))
    for name in ("fanout", "streams", "ingress", "ingress-spread"):
        r = results[name]
        assert r["messages"] > 0, r
        assert r["deliveries"] == r["expected_deliveries"] > 0, r
        assert r["missing"] == r["extra"] == r["closed_sockets"] == 0, r
    assert results["joins"]["joins"] == 100
    assert results["flush"]["rows_stored"] == results["flush"]["rows"] == 2000
    assert results["flush"]["rows_missing"] == results["flush"]["lag_missing"] == 0
    idle = results["idle"]
    assert idle["connections"] == idle["source_addresses"] == 40 and idle["closed_sockets"] == 0, idle
    assert idle["interval_s"] >= 2 and idle["redis_calls_per_conn_s"] > 0, idle
    capacity = results["capacity"]
    assert [s["connections"] for s in capacity["steps"]] == [20, 40], capacity
    assert all(s["closed_sockets"] == 0 and s["worker_rss_kib_per_conn"] > 0 for s in capacity["steps"])
    assert all(s["interval_s"] >= 1 and s["redis_cmds_per_s"] > 0 for s in capacity["steps"]), capacity
    drain = results["drain"]
    assert drain["viewers"] == drain["rejoined"] == drain["open_sockets"] == 40, drain
    assert drain["gave_up"] == drain["failed_attempts"] == 0 and drain["seconds_to_all_rejoined"] > 0, drain
    _assert_cleaned_up(_run_id(done.stdout))


@pytest.mark.timeout(150)
def test_bench_smoke_on_a_private_cluster_counts_every_node_and_stops_it() -> None:
    done = bench("--smoke", "--cluster", "--workload", "ingress-spread", "flush", timeout=130)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    results = _results(done.stdout)
    assert set(results) == {"ingress-spread", "flush"}, done.stdout
    [line] = [line for line in done.stdout.splitlines() if line.startswith("cluster: nodes ")]
    nodes = line.removeprefix("cluster: nodes ").split(" (")[0].split(", ")
    r = results["ingress-spread"]
    assert EXPECTED["ingress-spread"] | COMMON <= r.keys()
    assert r["messages"] > 0 and r["deliveries"] == r["expected_deliveries"] > 0, r
    assert r["missing"] == r["extra"] == r["closed_sockets"] == 0, r
    assert list(r["redis_node_share"]) == nodes and len(nodes) == 3, (r["redis_node_share"], nodes)
    assert abs(sum(r["redis_node_share"].values()) - 1) < 0.01, r["redis_node_share"]
    assert all(r["cpu_s"][f"redis {node}"] >= 0 for node in nodes), r["cpu_s"]
    f = results["flush"]
    assert f["rows_stored"] == f["rows"] == 2000 and f["rows_missing"] == f["lag_missing"] == 0, f
    _assert_cleaned_up(_run_id(done.stdout))
    for node in nodes:  # the cluster went with the run
        host, _, port = node.rpartition(":")
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=host, port=int(port), socket_connect_timeout=1).ping()


def _assert_cleaned_up(run_id: str) -> None:
    r = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        assert not list(r.scan_iter(match=f"hubbench:{run_id}:*", count=1000))
    finally:
        r.close()
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (f"hub_bench_{run_id}",))
            assert cur.fetchall() == ()
    finally:
        conn.close()


@pytest.mark.timeout(150)
def test_bench_runs_the_node_peer_right_after_the_hub_for_what_it_can_do() -> None:
    if (problem := node_peer_problem()) is not None:
        pytest.skip(f"the Node.js peer cannot run here: {problem}")
    done = bench(
        "--smoke", "--workload", "joins", "ingress", "idle", "flush", timeout=130, BENCH_SERVER="node"
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"workload"')]
    order = [(r["workload"], r["server"]) for r in lines]
    assert order == [
        ("joins", "hub"),
        ("joins", "node"),
        ("ingress", "hub"),
        ("ingress", "node"),
        ("idle", "hub"),
        ("idle", "node"),
        ("flush", "hub"),
    ], order
    for r in lines:
        assert EXPECTED[r["workload"]] | COMMON <= r.keys(), r
    node = {r["workload"]: r for r in lines if r["server"] == "node"}
    assert node["joins"]["joins"] == 100 and node["idle"]["closed_sockets"] == 0, node
    assert node["ingress"]["messages"] > 0 and node["ingress"]["missing"] == 0, node["ingress"]
    assert {"joins · node", "ingress · node", "idle · node"} <= _table_names(done.stdout)
    _assert_cleaned_up(_run_id(done.stdout))


@pytest.mark.timeout(90)
def test_bench_without_node_says_so_and_measures_the_hub_alone(tmp_path: Path) -> None:
    done = bench("--smoke", "--workload", "idle", timeout=70, BENCH_SERVER="node", PATH=str(tmp_path))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "BENCH_SERVER=node: the Node.js peer is skipped: node is not on PATH" in done.stdout
    assert set(_results(done.stdout)) == {"idle"} and _table_names(done.stdout) == {"idle"}
    _assert_cleaned_up(_run_id(done.stdout))


@pytest.mark.timeout(90)
def test_bench_on_a_private_redis_counts_its_commands_alone_and_stops_it() -> None:
    done = bench("--smoke", "--private-redis", "--workload", "idle", timeout=70)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    [line] = [line for line in done.stdout.splitlines() if line.startswith("private redis: ")]
    port = int(line.split()[2].rsplit(":", 1)[1].split("/")[0])
    idle = _results(done.stdout)["idle"]
    assert idle["connections"] == 40 and idle["closed_sockets"] == 0, idle
    assert idle["redis_calls"] > 0 and idle["cpu_s"]["redis"] >= 0, idle
    _assert_cleaned_up(_run_id(done.stdout))
    with pytest.raises(redis.ConnectionError):  # the server went with the run
        redis.Redis(port=port, socket_connect_timeout=1).ping()


def _table_names(stdout: str) -> set[str]:
    """The first column of the table's rows."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("workload "))
    rows = lines[start + 2 :]
    return {row.split("  ")[0] for row in rows if not row.startswith("machine floor")}
