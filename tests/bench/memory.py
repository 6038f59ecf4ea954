"""``python -m tests.bench.memory [--conns N] [--warm N] [--frames F] [--top K]``

Where a worker's memory per idle connection goes: one web worker runs with tracemalloc on
(``F`` frames per trace) and a probe thread; ``--warm`` signed-in viewers join first (so that
one-time allocations are behind), then the probe takes a snapshot (tracemalloc's and a count of
the objects the cyclic collector sees, by type), ``--conns`` more viewers join, and it takes
another. Printed: the RSS and the traced memory each connection added, the ``K`` source lines
that allocated most of it, and the object types whose count grew, per connection.

tracemalloc makes the worker slower and larger; the split between lines is what counts, not the
totals (the capacity workload measures those without it). The probe thread answers requests
left as files in a folder of the run's (``tests/bench/memory.py worker``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from tests.bench.fleet import Spec
from tests.bench.harness import Bench, Sizes
from tests.bench.procs import Proc, Worker, eventually, free_port, rss_kib
from tests.bench.workloads import loopback_source

PROBE_DIR = "BENCH_MEMORY_PROBE"  # the environment variable naming the probe's folder


# -- in the worker ------------------------------------------------------------------------


def _type_counts() -> dict[str, int]:
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return dict(counts)


def _probe(folder: Path) -> None:
    """Answer each ``<name>.want`` file with ``<name>.snap`` (tracemalloc) and
    ``<name>.json`` (object counts), then ``<name>.done``."""
    while True:
        for want in folder.glob("*.want"):
            name = want.stem
            gc.collect()
            tracemalloc.take_snapshot().dump(str(folder / f"{name}.snap"))
            (folder / f"{name}.json").write_text(json.dumps(_type_counts()))
            want.unlink()
            (folder / f"{name}.done").touch()
        time.sleep(0.1)  # a probe's polling period: it waits for requests, not for a result


def worker_main(argv: list[str]) -> int:
    folder = Path(os.environ[PROBE_DIR])
    threading.Thread(target=_probe, args=(folder,), name="memory-probe", daemon=True).start()
    from hub.__main__ import main

    return main(["serve", *argv])


# -- the driver -----------------------------------------------------------------------------


class ProbedWorker(Worker):
    """A hub web worker with tracemalloc on and the probe thread."""

    def __init__(self, env: dict[str, str], logdir: Path, folder: Path, frames: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        Proc.__init__(
            self,
            f"probed-worker-{self.port}",
            ["-m", "tests.bench.memory", "worker", "--host", "127.0.0.1", "--port", str(self.port)],
            {**env, PROBE_DIR: str(folder), "PYTHONTRACEMALLOC": str(frames)},
            logdir,
        )
        self.folder = folder

    async def snapshot(self, name: str) -> tuple[tracemalloc.Snapshot, dict[str, int], int]:
        (self.folder / f"{name}.want").touch()

        async def done() -> bool:
            return (self.folder / f"{name}.done").exists()

        await eventually(done, 600, f"memory snapshot {name}", every=0.2)
        counts = json.loads((self.folder / f"{name}.json").read_text())
        return tracemalloc.Snapshot.load(str(self.folder / f"{name}.snap")), counts, rss_kib(self.pid)


async def probe(b: Bench, warm: int, conns: int, streams: int, frames: int, top: int) -> None:
    folder = b.logdir / "probe"
    folder.mkdir()
    await b.start()
    assert b.http is not None
    worker = ProbedWorker(b.env.env(), b.logdir, folder, frames)
    b.workers = [worker]
    await worker.ready(b.http, timeout=300)  # tracemalloc slows its start-up a lot
    ids = await b.create_streams(streams, "memory")

    def specs(start: int, stop: int) -> list[Spec]:
        return [
            Spec(worker.url, f"memory-viewer-{i}", ids[i % len(ids)], source=loopback_source(i))
            for i in range(start, stop)
        ]

    await b.open(specs(0, warm), 4)  # the traced worker is slow: few at a time
    await b.outbox_drained(120)
    snap0, counts0, rss0 = await worker.snapshot("before")
    await b.open(specs(warm, warm + conns), 4)
    await b.outbox_drained(120)
    snap1, counts1, rss1 = await worker.snapshot("after")
    filters = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    snap0, snap1 = snap0.filter_traces(filters), snap1.filter_traces(filters)
    traced = sum(s.size for s in snap1.statistics("filename")) - sum(
        s.size for s in snap0.statistics("filename")
    )
    print(f"{conns} idle viewers joined after {warm}, over {streams} streams; per connection:")
    print(f"  RSS {(rss1 - rss0) / conns:.2f} KiB, traced by tracemalloc {traced / 1024 / conns:.2f} KiB")
    print(f"\nthe {top} source lines that allocated most (bytes and blocks per connection):")
    for stat in snap1.compare_to(snap0, "lineno")[:top]:
        frame = stat.traceback[0]
        where = _short(frame.filename)
        print(f"  {stat.size_diff / conns:8.1f} B {stat.count_diff / conns:6.2f}  {where}:{frame.lineno}")
    print(f"\nthe {top} call paths ({frames} frames) that allocated most, bytes per connection:")
    for stat in snap1.compare_to(snap0, "traceback")[:top]:
        path = " < ".join(f"{_short(f.filename)}:{f.lineno}" for f in stat.traceback)
        print(f"  {stat.size_diff / conns:8.1f} B  {path}")
    grown = sorted(((k, v - counts0.get(k, 0)) for k, v in counts1.items()), key=lambda kv: -kv[1])[:top]
    print("\nobjects the cyclic collector tracks, by type, per connection:")
    for kind, n in grown:
        print(f"  {n / conns:6.2f}  {kind}")
    b.stop_workers()


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/hub/", "/lib/python3"):
        if marker in filename:
            return (
                filename.split(marker, 1)[1] if marker != "/hub/" else "hub/" + filename.split(marker, 1)[1]
            )
    return filename


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tests.bench.memory", description=__doc__)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logdir = Path(tempfile.mkdtemp(prefix="hubmemory-"))
    bench = Bench(Sizes(), logdir, private_redis=True)
    ok = False
    try:

        async def run() -> None:
            try:
                await probe(bench, args.warm, args.conns, args.streams, args.frames, args.top)
            finally:
                await bench.aclose()

        asyncio.run(run())
        ok = True
    finally:
        bench.close()
        if ok:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            print(f"logs kept in {logdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
