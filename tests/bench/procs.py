"""The hub under test: its environment, its processes, and what they cost.

Everything here belongs to one benchmark run: a Redis prefix ``hubbench:<run>:`` and a
MySQL database ``hub_bench_<run>``, both removed at the end, and the worker and flusher
processes, which are stopped even when the run fails (and get SIGTERM if this process dies,
through PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pymysql
import redis

from hub.storage.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench-secret-" + "x" * 40
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(every)


# -- /proc --------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Meter:
    """CPU seconds of named groups of processes between two snapshots."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups

    def snap(self) -> tuple[float, dict[str, int]]:
        return time.monotonic(), {
            name: sum(cpu_ticks(p) for p in pids) for name, pids in self.groups().items()
        }

    @staticmethod
    def delta(a: tuple[float, dict[str, int]], b: tuple[float, dict[str, int]]) -> dict[str, float]:
        out = {name: round((b[1].get(name, 0) - ticks) / CLK_TCK, 3) for name, ticks in a[1].items()}
        out["wall"] = round(b[0] - a[0], 3)
        return out


# -- environment ----------------------------------------------------------------------


@dataclass
class HubEnv:
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    redis_url: str = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    mysql_server: str = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306")
    cluster: bool = False  # redis_url names a private cluster (thrown away at the end)
    redis_shards: int = 1

    @property
    def prefix(self) -> str:
        return f"hubbench:{self.run_id}:"

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix, self.redis_shards)

    @property
    def database(self) -> str:
        return f"hub_bench_{self.run_id}"

    @property
    def mysql_url(self) -> str:
        return f"{self.mysql_server.rstrip('/')}/{self.database}"

    def env(self) -> dict[str, str]:
        """Like tests/conftest.py's env(), with limits high enough not to throttle the load."""
        return {
            "REDIS_URL": self.redis_url,
            "MYSQL_URL": self.mysql_url,
            "HUB_REDIS_PREFIX": self.prefix,
            "HUB_JWT_SECRET": SECRET,
            "HUB_CONN_RATE": "1000000",
            "HUB_CONN_PERIOD": "1",
            "HUB_JOIN_RATE": "1000000",
            "HUB_JOIN_PERIOD": "1",
            "HUB_CHAT_RATE": "100000",
            "HUB_CHAT_PERIOD": "1",
            "HUB_ADDRESS_MAX_CONNS": "10000000",
            "HUB_USER_MAX_CONNS": "100000",
            "HUB_DRAIN_SECONDS": "0",
            "HUB_SHUTDOWN_DEADLINE": "10",
            "HUB_LOG_LEVEL": "WARNING",
            "HUB_FLUSHER_METRICS_PORT": "0",
            **({"HUB_REDIS_SHARDS": str(self.redis_shards)} if self.cluster else {}),
        }

    def migrate(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "hub", "migrate"],
            cwd=ROOT,
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {done.stdout}{done.stderr}")

    def mysql(self, database: str | None = None) -> pymysql.Connection:
        from urllib.parse import urlparse

        u = urlparse(self.mysql_server)
        return pymysql.connect(
            host=u.hostname or "127.0.0.1",
            port=u.port or 3306,
            user=u.username or "root",
            password=u.password or "",
            database=database,
            autocommit=True,
        )

    def cleanup(self) -> None:
        """Drop this run's database and unlink this run's keys (nothing else; a private
        cluster's keys go with the cluster)."""
        with contextlib.suppress(Exception):
            conn = self.mysql()
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
            conn.close()
        if self.cluster:
            return
        with contextlib.suppress(Exception):
            r = redis.Redis.from_url(self.redis_url)
            batch: list[bytes] = []
            for key in r.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    r.unlink(*batch)
                    batch = []
            if batch:
                r.unlink(*batch)
            r.close()


def redis_server_pid(client: redis.Redis) -> int | None:
    """redis-server's pid from INFO, if it is a process this machine can see."""
    pid = int(client.info("server")["process_id"])
    return pid if comm(pid).startswith("redis") else None


def mysql_server_pid(env: HubEnv) -> int | None:
    with contextlib.suppress(Exception):
        conn = env.mysql()
        with conn.cursor() as cur:
            cur.execute("SELECT @@pid_file")
            row = cur.fetchone()
        conn.close()
        pid = int(Path(str(row[0]) if row else "").read_text().strip())
        return pid if comm(pid).startswith(("mariadbd", "mysqld")) else None
    return None


# -- processes ------------------------------------------------------------------------


def _child_setup() -> None:
    """In the child before exec: SIGTERM when the benchmark dies (with ``start_new_session``
    a Ctrl-C reaches only the benchmark, which then stops its children itself)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Proc:
    """A hub process (web worker or flusher) with its output in a log file."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], logdir: Path, executable: str = sys.executable
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [executable, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_child_setup,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_size(self) -> int:
        with contextlib.suppress(OSError):
            return self.log_path.stat().st_size
        return 0

    def log_text(self, start: int = 0, end: int | None = None) -> str:
        """The log between two byte offsets."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as fh:
            fh.seek(start)
            return fh.read(-1 if end is None else max(0, end - start)).decode(errors="replace")
        return ""

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


NODE_PEER = ROOT / "tests" / "bench" / "node"
NODE_PACKAGES = ("socket.io", "@socket.io/redis-adapter", "redis")


def node_peer_asked() -> bool:
    """BENCH_SERVER=node: the workloads the Node.js socket.io peer (node/server.mjs) can do run
    against it too, each right after the hub."""
    return os.environ.get("BENCH_SERVER") == "node"


def node_peer_problem() -> str | None:
    """Why the Node.js peer cannot run on this machine, or None when it can: its packages are
    installed with npm the first time."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    return npm_installed(NODE_PEER, NODE_PACKAGES)


def npm_installed(folder: Path, packages: tuple[str, ...]) -> str | None:
    """Why ``packages`` cannot be had in ``folder``'s node_modules, or None once they are there
    (``npm install`` in the folder the first time)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed on this machine"
    if all((folder / "node_modules" / name).is_dir() for name in packages):
        return None
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return f"npm install in {folder.name} took over 300 s (registry unreachable?)"
    if done.returncode != 0:
        return f"npm install in {folder.name} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


class Worker(Proc):
    """A hub web worker, or with ``node`` the Node.js peer in its place."""

    def __init__(self, index: int, env: dict[str, str], logdir: Path, node: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if node:
            super().__init__(
                f"node-{index}-{self.port}",
                [str(NODE_PEER / "server.mjs"), "--port", str(self.port)],
                env,
                logdir,
                executable="node",
            )
            return
        super().__init__(
            f"worker-{index}-{self.port}",
            ["-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env,
            logdir,
        )

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        async def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                async with session.get(f"{self.url}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, timeout, f"{self.name} ready")


class Flusher(Proc):
    def __init__(self, env: dict[str, str], logdir: Path, generation: int) -> None:
        super().__init__(f"flusher-{generation}", ["-m", "workers.flusher"], env, logdir)


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (commands run inside scripts included)."""
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}
