"""How the room bus reaches Redis pub/sub: a ``Link`` is one connection to it, a client to
publish with and a subscriber to listen with, made new each time the bus's listener
(re)connects (``open_link``).

On one Redis, or behind sentinels, the subscriber is redis-py's ``PubSub``. On Redis Cluster
every channel is a sharded one (``SSUBSCRIBE``/``SPUBLISH``), served by the node that holds
its slot, so a worker holds one subscriber connection per node that has a channel it listens
to (``ShardedSubscriber``). redis-py's own cluster pub/sub polls its nodes' connections one
after another, each for the whole timeout; here each node's connection is read by a task of
its own and what they read is handed over in arrival order, so an event is written as soon as
it arrives whichever node it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from hub.settings import ClusterSettings, SentinelSettings, is_sentinel_url
from hub.storage.connections import cluster_client, master_client


@dataclass
class Link:
    """One connection of the room bus to Redis."""

    client: aioredis.Redis | RedisCluster
    subscriber: PubSub | ShardedSubscriber

    async def publish(self, channel: str, data: str | bytes) -> int:
        """PUBLISH, or on a cluster SPUBLISH to the node of the channel's slot."""
        if isinstance(self.client, RedisCluster):
            return int(await self.client.spublish(channel, data))
        return int(await self.client.publish(channel, data))

    async def aclose(self) -> None:
        """Close the subscriber and the client; a connection already lost is no error."""
        with contextlib.suppress(Exception):
            await self.subscriber.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


def open_link(url: str, cluster: ClusterSettings | None, options: dict[str, Any]) -> Link:
    """A new link to the Redis of ``url`` (``options``: the client's connection options).

    Behind sentinels the client is the hub's own master client, whose Sentinel is closed with
    it, so each new link asks the sentinels which server is the master now (after a failover,
    the promoted replica). On a cluster, a cluster client, and a subscriber with a connection
    per node. The subscriber reports subscriptions: they are what confirms a new one."""
    if cluster is not None:
        client = cluster_client(cluster, decode_responses=False)
        return Link(client, ShardedSubscriber(client, cluster.username, cluster.password))
    if is_sentinel_url(url):
        plain = master_client(SentinelSettings.from_url(url), **options)
    else:
        plain = aioredis.Redis.from_url(url, **options)
    return Link(plain, plain.pubsub())


TYPES = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}


class ShardedSubscriber:
    """Sharded channels on a Redis Cluster, read as one ``PubSub`` would be: ``subscribe``,
    ``unsubscribe``, ``get_message`` (``smessage`` read as ``message``, ``ssubscribe`` as
    ``subscribe``), ``subscribed`` and ``aclose``."""

    def __init__(self, cluster: RedisCluster, username: str | None, password: str | None) -> None:
        self.cluster = cluster
        self._username = username
        self._password = password
        self._pubsubs: dict[str, PubSub] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._where: dict[bytes, str] = {}  # channel -> the node it was subscribed on
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        # One command at a time on the subscriber connections: redis-py's PubSub opens its
        # connection on its first command, and first commands that overlap each open one, of
        # which only the last is read (the others' subscriptions are never confirmed).
        self._lock = asyncio.Lock()

    async def subscribe(self, *channels: str) -> None:
        """SSUBSCRIBE each channel on the node that holds its slot now."""
        async with self._lock:
            await self._subscribe(channels)

    async def _subscribe(self, channels: tuple[str, ...]) -> None:
        await self.cluster.initialize()
        by_node: dict[str, list[str]] = {}
        addresses: dict[str, tuple[str, int]] = {}
        for channel in channels:
            node = self.cluster.get_node_from_key(channel)
            if node is None:
                raise RedisConnectionError(f"no cluster node holds the slot of {channel!r}")
            addresses[node.name] = (node.host, int(node.port))
            by_node.setdefault(node.name, []).append(channel)
        for name, names in by_node.items():
            pubsub = self._pubsub(name, *addresses[name])
            for channel in names:
                self._where[channel.encode()] = name
            for same_slot in self._by_slot(names):  # one command names channels of one slot
                await pubsub.ssubscribe(*same_slot)
            self._read(name, pubsub)

    @property
    def subscribed(self) -> bool:
        return any(pubsub.subscribed for pubsub in self._pubsubs.values())

    async def unsubscribe(self, *channels: str) -> None:
        async with self._lock:
            await self._unsubscribe(channels)

    async def _unsubscribe(self, channels: tuple[str, ...]) -> None:
        by_node: dict[str, list[str]] = {}
        for channel in channels:
            name = self._where.pop(channel.encode(), None)
            if name is not None:
                by_node.setdefault(name, []).append(channel)
        for name, names in by_node.items():
            for same_slot in self._by_slot(names):
                await self._pubsubs[name].sunsubscribe(*same_slot)

    def _by_slot(self, channels: list[str]) -> list[list[str]]:
        slots: dict[int, list[str]] = {}
        for channel in channels:
            slots.setdefault(self.cluster.keyslot(channel), []).append(channel)
        return list(slots.values())

    async def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """The next message from any node, waiting up to ``timeout`` seconds. A node's lost
        connection, or a channel the cluster dropped (its slot moved to another node), raises
        ConnectionError: the listener then subscribes everything again from scratch."""
        try:
            if timeout:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            else:
                item = self._queue.get_nowait()
        except (TimeoutError, asyncio.QueueEmpty):
            return None
        if isinstance(item, BaseException):
            raise item
        kind = TYPES.get(item["type"], item["type"])
        item["type"] = kind
        if kind == "unsubscribe" and item["channel"] in self._where:
            raise RedisConnectionError(
                f"the cluster dropped the subscription to {item['channel']!r} (its slot moved)"
            )
        return item

    def _pubsub(self, name: str, host: str, port: int) -> PubSub:
        pubsub = self._pubsubs.get(name)
        if pubsub is None:
            client = aioredis.Redis(
                host=host,
                port=port,
                socket_connect_timeout=5,
                health_check_interval=10,
                username=self._username,
                password=self._password,
            )
            pubsub = self._pubsubs[name] = client.pubsub()
        return pubsub

    def _read(self, name: str, pubsub: PubSub) -> None:
        """One task per node reads its connection into the shared queue, so no node's
        messages wait for another's read timeout."""
        if name in self._readers:
            return

        async def read() -> None:
            try:
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._queue.put_nowait(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._queue.put_nowait(exc)

        self._readers[name] = asyncio.ensure_future(read())

    async def aclose(self) -> None:
        for task in self._readers.values():
            task.cancel()
        for task in self._readers.values():
            with contextlib.suppress(BaseException):
                await task
        for pubsub in self._pubsubs.values():
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await pubsub.connection_pool.disconnect()
        self._readers.clear()
        self._pubsubs.clear()
        self._where.clear()
