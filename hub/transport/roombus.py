"""The room bus: one Redis channel per stream, subscribed while this worker has a socket in
the stream's room, and python-socketio's own channel, on one listener that resubscribes by
itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio

from hub.settings import ClusterSettings, SentinelSettings, is_sentinel_url
from hub.storage.connections import cluster_client, master_client
from hub.storage.keys import NAMESPACE, Keys
from hub.transport.pubsub import ShardedSubscriber

log = logging.getLogger(__name__)


class HubRedisManager(socketio.AsyncRedisManager):
    """python-socketio's Redis manager with a listener that reconnects by itself and stops when
    told, extended with the hub's own channels on the same connection:

    one channel per stream (``room:{id}``, in the stream's shard), subscribed only while this
    worker has a socket in that stream's room. Its events are written to the sockets without
    being decoded (``HubServer.broadcast``); its orders go to the namespace: ``!close`` (the
    stream ended, the room is emptied) and ``!ban {"user_id", "reason"}`` (the user's sockets
    leave the room). On Redis Cluster every channel, python-socketio's own included, is a
    sharded one (``SSUBSCRIBE``/``SPUBLISH``, ``hub.transport.pubsub``)."""

    RETRY_MAX = 5.0

    def __init__(
        self,
        *args: Any,
        keys: Keys,
        on_close_room: Callable[[str], Awaitable[None]],
        on_banned: Callable[[str, str, str | None], Awaitable[None]],
        cluster: ClusterSettings | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.keys = keys
        self.cluster = cluster
        self._channel_bytes = self.channel.encode()
        self._on_close_room = on_close_room
        self._on_banned = on_banned
        self.closing = False
        self.watched: set[str] = set()
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._streams_of: dict[str, set[str]] = {}
        self.room_messages = 0

    # -- room membership --------------------------------------------------------------
    # Every way into or out of a room (a join, a leave, a ban, a closed room, a disconnect)
    # comes through these two: a paced room's held events go out before its members change,
    # and each socket's stream rooms are indexed as they change.
    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        self.server.pacer.release(room)
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if namespace == NAMESPACE and room is not None and room != sid:
            self._streams_of.setdefault(sid, set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        self.server.pacer.release(room)
        super().basic_leave_room(sid, namespace, room)
        rooms = self._streams_of.get(sid) if namespace == NAMESPACE else None
        if rooms is not None:
            rooms.discard(room)  # type: ignore[arg-type]
            if not rooms:
                del self._streams_of[sid]

    def stream_rooms(self, sid: str) -> set[str]:
        """The stream rooms of ``/streaming`` the socket is in, as Socket.IO's own rooms say
        (python-socketio finds a socket's rooms by scanning every room)."""
        return set(self._streams_of.get(sid, ()))

    def members(self, room: str) -> list[str]:
        """The sids of this worker's sockets in a stream's room."""
        return list(self.rooms.get(NAMESPACE, {}).get(room, ()))

    # -- per-stream channels ----------------------------------------------------------
    async def watch(self, room: str) -> None:
        """Receive this stream's events from now on: returns once Redis has confirmed the
        subscription, so nothing published after it is missed."""
        channel = self.keys.of(room).room(room)
        if room in self.watched:
            pending = self._confirmations.get(channel.encode())
            if pending is not None:
                await asyncio.wait_for(asyncio.shield(pending), 5)
            return
        self.watched.add(room)
        if self.pubsub is None or not self.connected:
            return  # the listener subscribes to every watched room when it (re)connects
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel.encode()] = confirmed
        try:
            await self.pubsub.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(confirmed), 5)
        finally:
            if self._confirmations.get(channel.encode()) is confirmed:
                del self._confirmations[channel.encode()]

    async def unwatch_idle(self) -> None:
        """Stop receiving the streams this worker no longer has a socket watching."""
        rooms = self.rooms.get(NAMESPACE, {})
        idle = [room for room in self.watched if room not in rooms]
        if not idle:
            return
        self.watched.difference_update(idle)
        if self.pubsub is not None and self.connected:
            await self.pubsub.unsubscribe(*(self.keys.of(room).room(room) for room in idle))

    async def _room_messages(self, channel: bytes, items: list[bytes]) -> None:
        """One room's messages of one read, in order: runs of events for every socket are
        written together; an event that skips a socket, and an order, go on their own."""
        room = channel[channel.rindex(b":") + 1 :].decode()  # ``…room:{stream id}``
        texts: list[bytes] = []
        for data in items:
            self.room_messages += 1
            if data[:1] == b"\n":
                texts.extend(data[1:].split(b"\n"))
                continue
            if texts:
                self.server.broadcast(room, None, texts)
                texts = []
            if data[:1] == b"!":
                await self._order(room, data)
            else:
                skip, _, rest = data.partition(b"\n")
                self.server.broadcast(room, skip.decode(), rest.split(b"\n"))
        if texts:
            self.server.broadcast(room, None, texts)

    async def deliver(self, room: str, items: list[bytes]) -> None:
        """Room messages this worker made itself, handled as if they had come on the room's
        channel (``hub.domain.recovery`` tells its own watchers that a stream ended, whether or not
        this listener was subscribed when the stream's channel carried the news)."""
        await self._room_messages(self.keys.of(room).room(room).encode(), items)

    # -- the listener -----------------------------------------------------------------
    def _redis_connect(self) -> None:
        """python-socketio's, except behind sentinels: the hub's own master client, whose
        Sentinel is closed with it, so each reconnect of the listener asks the sentinels which
        server is the master now (after a failover, the promoted replica). On a cluster, a
        cluster client, and a subscriber with a connection per node."""
        if self.cluster is not None:
            self.redis = cluster_client(self.cluster, decode_responses=False)
            self.pubsub = ShardedSubscriber(self.redis, self.cluster.username, self.cluster.password)
            self.connected = True
            return
        if not is_sentinel_url(self.redis_url):
            super()._redis_connect()
            return
        self.redis = master_client(SentinelSettings.from_url(self.redis_url), **self.redis_options)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _publish(self, data: Any) -> Any:
        """python-socketio's, except on a cluster: SPUBLISH, to the node of its channel's slot."""
        if self.cluster is None:
            return await super()._publish(data)
        for retries_left in (1, 0):
            try:
                if not self.connected:
                    self._redis_connect()
                return await self.redis.spublish(self.channel, self.json.dumps(data))
            except Exception as exc:
                log.error("cannot publish to Redis (%s)%s", exc, ", retrying" if retries_left else "")
                self.connected = False
        return None

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        """Subscribe, listen, and on any failure close the old connection and start over with
        capped backoff. A closing worker stops here even if redis-py turned the cancellation
        into a connection error."""
        retry = 0.25
        while not self.closing:
            try:
                await self._close_connections()
                self._redis_connect()
                self.pubsub.ignore_subscribe_messages = False  # confirmations end watch()
                await self.pubsub.subscribe(
                    self.channel, *(self.keys.of(room).room(room) for room in self.watched)
                )
                self.connected = True
                retry = 0.25
                while not self.closing:
                    # A bounded wait, so a stop is seen within a second even when the
                    # cancellation is lost inside the Redis client's blocking read.
                    message = await self.pubsub.get_message(timeout=1.0)
                    # Then everything already received, without waiting: the room events of
                    # one read go out together, one write per socket per room.
                    rooms: dict[bytes, list[bytes]] = {}
                    while message is not None:
                        kind, channel = message["type"], message["channel"]
                        if kind == "message":
                            if channel != self._channel_bytes:
                                rooms.setdefault(channel, []).append(message["data"])
                            else:
                                yield message
                        elif kind == "subscribe":
                            confirmed = self._confirmations.get(channel)
                            if confirmed is not None and not confirmed.done():
                                confirmed.set_result(None)
                        if len(rooms) > 256:
                            break
                        message = await self.pubsub.get_message(timeout=0)
                    for channel, items in rooms.items():
                        await self._room_messages(channel, items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                if self.closing:
                    break
                log.warning("pub/sub listener lost Redis (%s); resubscribing in %.2fs", exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.RETRY_MAX)

    async def _order(self, room: str, data: bytes) -> None:
        try:
            if data == b"!close":
                await socketio.AsyncManager.close_room(self, room, NAMESPACE)
                await self._on_close_room(room)
            elif data.startswith(b"!ban "):
                order = self.json.loads(data[5:])
                await self._on_banned(room, str(order["user_id"]), order.get("reason"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("order %r on room %s failed", data[:40], room)

    async def _close_connections(self) -> None:
        pubsub, client = self.pubsub, self.redis
        self.pubsub = self.redis = None
        self.connected = False
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()

    async def close(self) -> None:
        """Stop the listener and close its connections."""
        self.closing = True
        listener = getattr(self, "thread", None)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(listener), 3)
        await self._close_connections()
