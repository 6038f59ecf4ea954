"""``--cluster``: the bench's Redis is a private three-node Redis Cluster (``tests.faults``'s
ClusterNodes, three primaries on free loopback ports, without persistence like the local
Redis), started for the run and always stopped at the end; its files (each node's redis.log)
are in the run's log folder, kept when the run fails.

What the bench reads from Redis itself, read from the cluster: INFO commandstats of each
primary (summed, and each node's share), every shard's outbox, ``PUBSUB SHARDNUMSUB`` on the
node that holds a channel's slot, and the room channels counted with SSUBSCRIBE on their nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from hub.storage.keys import Keys
from tests.bench.procs import commandstats, eventually, redis_server_pid

SHARDS = 16


class BenchCluster:
    def __init__(self, folder: Path) -> None:
        from tests.faults import ClusterNodes  # imports the test suite's conftest: only when asked

        self.nodes = ClusterNodes(folder, persistence=False)
        self.clients: dict[str, redis.Redis] = {}  # "host:port" -> a client of that node alone
        self.redis: RedisCluster | None = None
        self.aredis: AsyncRedisCluster | None = None

    @property
    def url(self) -> str:
        return self.nodes.url

    @property
    def names(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.nodes.ports]

    async def start(self) -> None:
        await self.nodes.start()
        self.clients = {
            name: redis.Redis(port=port, decode_responses=True)
            for name, port in zip(self.names, self.nodes.ports, strict=True)
        }
        self.redis = RedisCluster(host="127.0.0.1", port=self.nodes.ports[0], decode_responses=True)
        self.aredis = self.nodes.client()

    async def aclose(self) -> None:
        if self.aredis is not None:
            await self.aredis.aclose()
            self.aredis = None

    def stop(self) -> None:
        """Close the clients and kill the nodes; safe to call twice, and before start()."""
        for client in [*self.clients.values(), *([self.redis] if self.redis is not None else [])]:
            with contextlib.suppress(Exception):
                client.close()
        self.clients, self.redis = {}, None
        self.nodes.stop()

    # -- what the bench reads -----------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """redis-server's pid of each node."""
        return {
            name: pid
            for name, client in self.clients.items()
            if (pid := redis_server_pid(client)) is not None
        }

    def node_of(self, key: str) -> str:
        assert self.redis is not None
        node = self.redis.get_node_from_key(key)
        return f"{node.host}:{node.port}"

    def shards_per_node(self, keys: Keys) -> dict[str, int]:
        return dict(Counter(self.node_of(k.outbox) for k in keys.all))

    def commandstats(self) -> dict[str, dict[str, int]]:
        """INFO commandstats calls per command, of each primary (every node is one)."""
        return {name: commandstats(client) for name, client in self.clients.items()}

    def numsub(self, channels: list[str]) -> dict[str, int]:
        """Subscribers of sharded channels, as the node holding each channel's slot counts them."""
        by_node: dict[str, list[str]] = {}
        for channel in channels:
            by_node.setdefault(self.node_of(channel), []).append(channel)
        counts: dict[str, int] = {}
        for name, names in by_node.items():
            reply = self.clients[name].execute_command("PUBSUB", "SHARDNUMSUB", *names)
            counts.update({str(ch): int(n) for ch, n in zip(reply[::2], reply[1::2], strict=True)})
        return counts

    async def outbox_len(self, keys: Keys) -> int:
        """Entries in every shard's outbox."""
        assert self.aredis is not None
        async with self.aredis.pipeline(transaction=False) as pipe:
            for k in keys.all:
                pipe.xlen(k.outbox)
            return sum(int(n) for n in await pipe.execute())

    async def outbox_age(self, keys: Keys) -> float:
        """The oldest entry's age (seconds) over every shard's outbox; 0 when all are empty."""
        assert self.aredis is not None
        async with self.aredis.pipeline(transaction=False) as pipe:
            for k in keys.all:
                pipe.xrange(k.outbox, count=1)
            firsts = await pipe.execute()
        now = await self.aredis.time()  # not in the pipeline: a cluster's pipelines take keyed commands
        oldest = [int(first[0][0].split("-")[0]) for first in firsts if first]
        now_ms = now[0] * 1000 + now[1] // 1000
        return max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0

    @contextlib.asynccontextmanager
    async def counter(self, channels: list[str]) -> AsyncIterator[Counter[str]]:
        """Messages per sharded channel while the block runs: SSUBSCRIBE on the node holding
        each channel's slot (one command per slot). At the end SUNSUBSCRIBE, confirmed, so a
        SHARDNUMSUB afterwards counts the hub's subscribers only."""
        assert self.redis is not None
        counts: Counter[str] = Counter()
        confirmed: Counter[str] = Counter()
        by_node: dict[str, dict[int, list[str]]] = {}
        for channel in set(channels):
            by_node.setdefault(self.node_of(channel), {}).setdefault(self.redis.keyslot(channel), []).append(
                channel
            )
        wanted = sum(len(names) for slots in by_node.values() for names in slots.values())
        clients: list[aioredis.Redis] = []
        pubsubs: list[tuple[Any, dict[int, list[str]]]] = []
        tasks: list[asyncio.Task[None]] = []

        async def read(pubsub: Any) -> None:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "smessage":
                    counts[message["channel"]] += 1
                else:
                    confirmed[message["type"]] += 1

        def all_confirmed(kind: str) -> Any:
            async def check() -> bool:
                return confirmed[kind] >= wanted

            return check

        try:
            for name, slots in by_node.items():
                host, _, port = name.rpartition(":")
                clients.append(aioredis.Redis(host=host, port=int(port), decode_responses=True))
                pubsub = clients[-1].pubsub()
                pubsubs.append((pubsub, slots))
                for same_slot in slots.values():
                    await pubsub.ssubscribe(*same_slot)
                tasks.append(asyncio.create_task(read(pubsub)))
            await eventually(all_confirmed("ssubscribe"), 10, "ssubscribe confirmed", every=0.01)
            yield counts
            for pubsub, slots in pubsubs:
                for same_slot in slots.values():
                    await pubsub.sunsubscribe(*same_slot)
            await eventually(all_confirmed("sunsubscribe"), 10, "sunsubscribe confirmed", every=0.01)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            for pubsub, _ in pubsubs:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()


def calls_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> tuple[dict[str, int], dict[str, int]]:
    """Calls per command over every node, and calls per node, between two commandstats."""
    calls: Counter[str] = Counter()
    nodes: dict[str, int] = {}
    for name, now in after.items():
        then = before.get(name, {})
        delta = {k: v - then.get(k, 0) for k, v in now.items()}
        calls.update(delta)
        nodes[name] = sum(delta.values())
    return {k: v for k, v in calls.items() if v > 0}, nodes


def node_share(nodes: dict[str, int]) -> dict[str, float]:
    """Each node's share of the commands."""
    total = sum(nodes.values())
    return {name: round(n / total, 3) if total else 0.0 for name, n in nodes.items()}
