"""Private servers that fault tests may stop, kill and restart: never the machine's own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from tests.conftest import ROOT, free_port


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not up within {timeout}s")
        time.sleep(0.05)


class PrivateRedis:
    """A redis-server on its own port and directory, with append-only persistence; with
    ``persistence=False``, none at all (no append-only log, no snapshots): restarted, it comes
    back empty, as a Redis configured like that does after a crash."""

    def __init__(self, folder: Path, persistence: bool = True) -> None:
        self.persistence = persistence
        self.port = free_port()
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                *(
                    ("--appendonly", "yes", "--appendfsync", "always")
                    if self.persistence
                    else ("--appendonly", "no")
                ),
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: redis.Redis(port=self.port).ping(), 10, "private redis")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class PrivateMariaDB:
    """A mariadbd on its own port and data directory (no grant tables: loopback only)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.dir = folder / "data"
        self.socket = folder / "mysqld.sock"
        self.url = f"mysql://root@127.0.0.1:{self.port}/hub_faults"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "mariadb.log"
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.dir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.dir}",
                f"--port={self.port}",
                f"--socket={self.socket}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-grant-tables",
                "--innodb-buffer-pool-size=32M",
                f"--log-error={self.log}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(
            lambda: pymysql.connect(host="127.0.0.1", port=self.port, user="root").close() is None,
            60,
            "private mariadb",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FlusherProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.flusher"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        """Started: connected to Redis and MySQL and reading the outbox."""

        async def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"flusher exited: {self.log_path.read_text()}")
            return "✅ Flusher" in self.log_path.read_text()

        await until(started, 30, "the flusher started")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def until(check, timeout: float, what: str) -> float:
    """Poll an async check until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


class ClusterNodes:
    """Three primaries, no replicas, every slot assigned. The URL lists two of them: the
    third is learned from the cluster's own layout. With ``persistence=False`` the nodes keep
    no append-only log (the benchmark's, like the local Redis): a restarted node then comes
    back with its slots but without its data."""

    def __init__(self, folder: Path, persistence: bool = True) -> None:
        self.folder = folder
        self.persistence = persistence
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.by_port: dict[int, subprocess.Popen[bytes]] = {}
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def _launch(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(folder),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(folder / "nodes.conf"),
                    "--cluster-port",
                    str(free_port()),  # the bus; port + 10000 may not exist
                    "--cluster-node-timeout",
                    "2000",
                    "--logfile",
                    str(folder / "redis.log"),
                    "--save",
                    "",
                    *(
                        ("--appendonly", "yes", "--appendfsync", "always")
                        if self.persistence
                        else ("--appendonly", "no")
                    ),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.by_port[port] = self.procs[-1]

    async def restart(self, port: int) -> None:
        """SIGKILL one node and start it again on its own files (its append-only log and
        nodes.conf): it comes back with its slots and its data."""
        proc = self.by_port[port]
        proc.kill()
        proc.wait()
        self._launch(port)
        await until(lambda: self._answers(port), 15, f"cluster node {port} answering again")
        await until(self._ok, 30, "the cluster state ok again")

    async def start(self) -> None:
        for port in self.ports:
            self._launch(port)
        for port in self.ports:
            await until(lambda port=port: self._answers(port), 15, f"cluster node {port} answering")
        create = await asyncio.create_subprocess_exec(
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in self.ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(create.communicate(), 60)
        assert create.returncode == 0, out.decode()
        await until(self._ok, 30, "every node seeing the cluster state ok")

    async def _answers(self, port: int) -> bool:
        client = aioredis.Redis(port=port, socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    async def _ok(self) -> bool:
        for port in self.ports:
            client = aioredis.Redis(port=port, decode_responses=True, socket_connect_timeout=1)
            try:
                info = await client.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_known_nodes:3" not in info:
                    return False
            except Exception:
                return False
            finally:
                await client.aclose()
        return True

    def client(self) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", self.ports[0])], decode_responses=True)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
