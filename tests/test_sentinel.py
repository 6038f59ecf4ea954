"""Redis behind Sentinel: the URL form, then a real failover under two workers and a flusher.

The cluster is private (a primary, its replica and three sentinels on free loopback ports,
under the test's own folder) and always stopped, whatever the test did.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from hub.settings import SentinelSettings, Settings, SettingsError
from hub.storage.connections import redacted
from hub.storage.keys import Keys
from tests.conftest import ROOT, Api, Client, free_port, unique
from tests.faults import FlusherProcess, until

# -- the URL --------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    s = Settings.from_env(
        {"REDIS_URL": "redis+sentinel://:p%40ss@10.0.0.1:26379,sentinel-b:26380,[::1]:26381/2/hubtest"}
    )
    assert s.redis_sentinel == SentinelSettings(
        sentinels=(("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)),
        service="hubtest",
        db=2,
        username=None,
        password="p@ss",
    )
    assert Settings.from_env({}).redis_sentinel is None  # a plain URL stays a plain URL


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379/0",  # no service
        "redis+sentinel://127.0.0.1:26379/hubtest",  # no database
        "redis+sentinel://127.0.0.1:26379/x/hubtest",  # a database that is not a number
        "redis+sentinel://127.0.0.1/0/hubtest",  # a sentinel without its port
        "redis+sentinel://127.0.0.1:26379,:26380/0/hubtest",
        "redis+sentinel://127.0.0.1:99999/0/hubtest",
    ],
)
def test_a_bad_sentinel_url_stops_the_process_naming_redis_url(url):
    with pytest.raises(SettingsError, match=r"^REDIS_URL: "):
        Settings.from_env({"REDIS_URL": url})


def test_the_password_of_a_sentinel_url_is_never_shown():
    assert (
        redacted("redis+sentinel://:s3cret@h1:26379,h2:26379/0/hubtest")
        == "redis+sentinel://:***@h1:26379,h2:26379/0/hubtest"
    )
    assert (
        redacted("redis+sentinel://app:s3cret@h1:26379/0/hubtest")
        == "redis+sentinel://app:***@h1:26379/0/hubtest"
    )


# -- a private cluster ----------------------------------------------------------------


class SentinelCluster:
    """A primary, one replica and three sentinels (quorum 1, down after 1 s), all with a
    password. The URL lists a sentinel that does not exist first: it is skipped."""

    SERVICE = "hubtest"
    PASSWORD = "sentinel-test-password"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        hosts = ",".join(f"127.0.0.1:{p}" for p in [free_port(), *self.sentinel_ports])
        self.url = f"redis+sentinel://:{self.PASSWORD}@{hosts}/0/{self.SERVICE}"

    def client(self, port: int) -> aioredis.Redis:
        return aioredis.Redis(
            port=port,
            password=self.PASSWORD,
            decode_responses=True,
            socket_connect_timeout=1,
            socket_timeout=2,
        )

    def _redis(self, name: str, port: int, *extra: str) -> None:
        folder = self.folder / name
        folder.mkdir(parents=True)
        self.procs[name] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--logfile",
                str(folder / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                self.PASSWORD,
                "--masterauth",
                self.PASSWORD,
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _sentinel(self, n: int, port: int) -> None:
        folder = self.folder / f"sentinel-{n}"
        folder.mkdir(parents=True)
        conf = folder / "sentinel.conf"  # sentinel rewrites it, so one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel auth-pass {self.SERVICE} {self.PASSWORD}\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
        )
        self.procs[f"sentinel-{n}"] = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def start(self) -> None:
        self._redis("primary", self.primary_port)
        self._redis("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        # The sentinels learn the replica from the primary's INFO: start them once it is linked.
        await until(
            lambda: self._replication(self.replica_port, "master_link_status", "up"),
            15,
            "the replica linked to the primary",
        )
        for n, port in enumerate(self.sentinel_ports):
            self._sentinel(n, port)
        await until(self._sentinels_ready, 20, "three sentinels that know the replica and each other")

    async def _replication(self, port: int, field_name: str, value: str) -> bool:
        client = self.client(port)
        try:
            return str((await client.info("replication")).get(field_name)) == value
        except Exception:
            return False
        finally:
            await client.aclose()

    async def _sentinel_state(self, port: int) -> dict[str, Any]:
        client = aioredis.Redis(port=port, decode_responses=True, socket_connect_timeout=1, socket_timeout=2)
        try:
            return (await client.sentinel_masters()).get(self.SERVICE) or {}
        except Exception:
            return {}
        finally:
            await client.aclose()

    async def _sentinels_ready(self) -> bool:
        states = [await self._sentinel_state(p) for p in self.sentinel_ports]
        return all(s.get("num-other-sentinels") == 2 and s.get("num-slaves") == 1 for s in states)

    async def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            client = aioredis.Redis(port=port, decode_responses=True, socket_connect_timeout=1)
            try:
                address = await client.sentinel_get_master_addr_by_name(self.SERVICE)
                return int(address[1]) if address else None
            except Exception:
                continue
            finally:
                await client.aclose()
        return None

    def kill_primary(self) -> None:
        proc = self.procs["primary"]
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SentinelCluster]:
    servers = SentinelCluster(tmp_path / "cluster")
    try:
        await servers.start()
        yield servers
    finally:
        servers.stop()


# -- traffic --------------------------------------------------------------------------


@dataclass
class Chatter:
    """A viewer chatting at a steady pace; every attempt is recorded with its times."""

    client: Client
    stream_id: str
    tag: str
    attempts: list[tuple[float, float, str | None, str]] = field(default_factory=list)

    async def send(self, text: str) -> str | None:
        started = time.monotonic()
        try:
            ack = await self.client.call("send_message", {"stream_id": self.stream_id, "message": text})
        except Exception as exc:  # no ack at all: not accepted
            ack = {"success": False, "error": {"code": type(exc).__name__}}
        accepted = ack["message"]["message_id"] if ack.get("success") else None
        self.attempts.append(
            (started, time.monotonic(), accepted, "ok" if accepted else ack["error"]["code"])
        )
        return accepted

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            await self.send(f"{self.tag} {n}")
            n += 1
            await asyncio.sleep(0.05)  # the pace of the traffic, not a wait for a condition

    def acked(self, started_after: float = 0.0, received_before: float = float("inf")) -> set[str]:
        return {
            mid
            for start, end, mid, _ in self.attempts
            if mid is not None and start > started_after and end < received_before
        }


async def recent_ids(cluster: SentinelCluster, port: int, keys: Keys, stream_id: str) -> list[str]:
    client = cluster.client(port)
    try:
        return [orjson.loads(m)["message_id"] for m in await client.zrange(keys.recent(stream_id), 0, -1)]
    finally:
        await client.aclose()


async def ready(api: Api) -> bool:
    try:
        status, _ = await api.request("GET", "/readyz")
    except Exception:
        return False
    return status == 200


def hub_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- the failover ---------------------------------------------------------------------


async def test_primary_killed_mid_chat_sentinel_promotes_the_replica_and_the_hub_follows(
    cluster, settings, env, workers, http, connect, token, sql, tmp_path
):
    # A presence TTL longer than a failover, as in production (15 s): viewers are not dropped.
    overrides = {
        "REDIS_URL": cluster.url,
        "HUB_CHAT_RATE": "100000",
        "HUB_RECENT_SIZE": "10000",
        "HUB_PRESENCE_TTL": "10",
    }
    hub_env = {**env, **overrides}
    keys = Keys(env["HUB_REDIS_PREFIX"])
    w1, w2 = await workers(2, **overrides)
    flusher = FlusherProcess(hub_env, tmp_path / "flusher.log")
    try:
        await flusher.ready()
        api1, api2 = Api(http, w1.url), Api(http, w2.url)
        sid = (await api1.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
        a = await connect(w1.url, token(unique("a")))
        b = await connect(w2.url, token(unique("b")))
        for c in (a, b):
            assert (await c.call("join_stream", {"stream_id": sid}))["viewer_count"] >= 1
        chat_a, chat_b = Chatter(a, sid, "a"), Chatter(b, sid, "b")

        # Chat crosses workers through the primary.
        for sender, receiver in ((chat_a, b), (chat_b, a)):
            mid = await sender.send("hello across")
            assert mid is not None
            await receiver.wait_for("chat_message", lambda m, mid=mid: m["message_id"] == mid)
        for n in range(10):
            assert await (chat_a, chat_b)[n % 2].send(f"before {n}") is not None
        # A write of our own, then WAIT: the replica has everything acked so far.
        primary = cluster.client(cluster.primary_port)
        await primary.incr(keys.prefix + "sentinel-test-mark")
        assert await primary.execute_command("WAIT", 1, 5000) == 1
        await primary.aclose()
        replicated = chat_a.acked() | chat_b.acked()

        stop = asyncio.Event()
        traffic = [asyncio.create_task(c.run(stop)) for c in (chat_a, chat_b)]
        try:
            await until(lambda: _acked_more(chat_a, chat_b, replicated, 5), 10, "chat flowing")
            kill_at = time.monotonic()
            cluster.kill_primary()  # SIGKILL, mid-chat
            killed_at = time.monotonic()

            async def promoted() -> bool:
                return await cluster.master_port() == cluster.replica_port

            failover = await until(promoted, 30, "sentinel promoting the replica")

            async def writing_again() -> bool:
                return all(len(c.acked(started_after=killed_at)) >= 5 for c in (chat_a, chat_b))

            await until(writing_again, 30, "chat accepted again on both workers")
        finally:
            stop.set()
            await asyncio.gather(*traffic)
        refused = [code for c in (chat_a, chat_b) for _, _, mid, code in c.attempts if mid is None]
        first_ack = (
            min(
                start
                for c in (chat_a, chat_b)
                for start, _, mid, _ in c.attempts
                if mid is not None and start > killed_at
            )
            - killed_at
        )

        # What the new master holds: everything replicated before the kill, everything acked
        # after it, each once. Acked writes the replica had not received yet may be lost.
        present = await recent_ids(cluster, cluster.replica_port, keys, sid)
        assert len(present) == len(set(present)), "a message stored twice"
        after = chat_a.acked(started_after=killed_at) | chat_b.acked(started_after=killed_at)
        assert replicated <= set(present), "an acked, replicated message was lost"
        assert after <= set(present), "a message acked by the new master was lost"
        window = (chat_a.acked(received_before=kill_at) | chat_b.acked(received_before=kill_at)) - replicated
        lost = window - set(present)

        # Pub/sub resubscribed on the new master: chat crosses both ways again.
        for sender, receiver in ((chat_a, b), (chat_b, a)):
            sent: set[str] = set()

            async def crossed(sender=sender, receiver=receiver, sent=sent) -> bool:
                mid = await sender.send("after failover")
                if mid is not None:
                    sent.add(mid)
                return any(m["message_id"] in sent for m in receiver.events["chat_message"])

            await until(crossed, 20, "chat crossing workers after the failover")
        for api in (api1, api2):
            await until(lambda api=api: ready(api), 20, "/readyz 200 after the failover")

        # Presence and rooms still work: both viewers still counted (were they swept during a
        # long failover, their workers' next refresh re-asserts them), and a new viewer on
        # worker 2 is announced on worker 1.
        async def counted(n: int) -> bool:
            status, body = await api1.request("GET", sid)
            return status == 200 and body["stream"]["viewer_count"] == n

        await until(lambda: counted(2), 10, "both viewers counted after the failover")
        dropped = len(a.events["viewer_left"]) + len(b.events["viewer_left"])
        c_id = unique("c")
        c = await connect(w2.url, token(c_id))
        joined = await c.call("join_stream", {"stream_id": sid})
        assert joined["viewer_count"] == 3, joined
        await a.wait_for("viewer_joined", lambda e: e["user_id"] == c_id)
        assert await counted(3)

        # The command line follows the sentinels too, and never shows the password.
        check = await asyncio.to_thread(hub_command, hub_env, "check")
        assert check.returncode == 0, check.stderr
        assert f"master 127.0.0.1:{cluster.replica_port}" in check.stdout
        assert cluster.PASSWORD not in check.stdout + check.stderr and ":***@" in check.stdout
        inspect = await asyncio.to_thread(hub_command, hub_env, "inspect", sid, "--json")
        assert inspect.returncode == 0, inspect.stderr
        shown = orjson.loads(inspect.stdout)
        assert shown["stream_id"] == sid and shown["viewer_count"] == 3

        # The flusher, reconnected to the new master, writes every surviving message once.
        survived = set(await recent_ids(cluster, cluster.replica_port, keys, sid))

        async def flushed() -> bool:
            rows = sql("SELECT message_id FROM chat_messages WHERE stream_id = %s", sid)
            return survived <= {r["message_id"] for r in rows}

        await until(flushed, 30, "the flusher writing every surviving message")
        assert flusher.proc.poll() is None, "the flusher died during the failover"
        print(
            f"failover {failover + killed_at - kill_at:.2f}s after the kill; first write accepted "
            f"{first_ack:.2f}s after it; {len(replicated)} replicated, {len(window)} acked in the "
            f"last moment before the kill ({len(lost)} of them lost), {len(after)} acked after; "
            f"{len(refused)} refused during the failover ({sorted(set(refused))}); "
            f"{dropped} viewer_left seen"
        )
    finally:
        flusher.stop()


async def _acked_more(chat_a: Chatter, chat_b: Chatter, before: set[str], n: int) -> bool:
    return all(len(c.acked() - before) >= n for c in (chat_a, chat_b))
