"""The room bus: one Redis channel per stream, subscribed while this worker has a socket in
the stream's room, read with python-socketio's own channel by one listener that resubscribes
by itself; and ``HubRedisManager``, python-socketio's client manager on top of it.

What the bus offers the rest of the worker (``RoomBus``):

- ``watch(room)``: receive the stream's channel from now on (returns once Redis confirmed);
- ``unwatch_idle()``: stop receiving the streams no local socket is in any more;
- ``deliver(room, items)``: room messages this worker made, handled as if they came on the
  stream's channel;
- ``listen()``: the listener (python-socketio's channel is what it yields);
- ``publish(channel, data)``, ``subscribed``, ``room_messages`` and ``close()``.

What it calls: ``write(room, skip_sid, texts)`` for a channel's events, ``on_close_room(room)``
and ``on_banned(room, user_id, reason)`` for its orders (``hub.frames`` reads both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from typing import Any

from socketio.async_pubsub_manager import AsyncPubSubManager

from hub.frames import Events, read_room_messages
from hub.settings import ClusterSettings
from hub.storage.keys import NAMESPACE, Keys
from hub.transport.pubsub import Link, open_link

log = logging.getLogger(__name__)

Write = Callable[[str, str | None, list[bytes]], None]
OnCloseRoom = Callable[[str], Awaitable[None]]
OnBanned = Callable[[str, str, str | None], Awaitable[None]]


class RoomBus:
    """The stream channels of one worker (sharded ones on Redis Cluster, ``hub.transport.pubsub``),
    and one other channel whose messages the listener hands over as they are
    (``passthrough``, python-socketio's).

    A channel's room is the one it was subscribed for (a channel -> room map built by
    ``watch``); its messages are read by ``hub.frames.read_room_messages``, their events
    written undecoded (``write``): the room events of one read go out together, one write per
    socket per room."""

    RETRY_FIRST = 0.25
    RETRY_MAX = 5.0
    CONFIRM_TIMEOUT = 5.0

    def __init__(
        self,
        connect: Callable[[], Link],
        keys: Keys,
        passthrough: str,
        local_rooms: Callable[[], Container[str]],
        write: Write,
        on_close_room: OnCloseRoom,
        on_banned: OnBanned,
    ) -> None:
        self._connect = connect
        self._keys = keys
        self._passthrough = passthrough
        self._passthrough_bytes = passthrough.encode()
        self._local_rooms = local_rooms
        self._write = write
        self._on_close_room = on_close_room
        self._on_banned = on_banned
        self._channels: dict[str, str] = {}  # watched room -> its channel
        self._rooms: dict[bytes, str] = {}  # a watched room's channel -> the room
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._link: Link | None = None
        self._listener: asyncio.Task[Any] | None = None
        self.closing = False
        self.room_messages = 0

    @property
    def watched(self) -> set[str]:
        """The rooms whose channels the bus subscribes to."""
        return set(self._channels)

    @property
    def subscribed(self) -> bool:
        """Whether the listener holds its subscriptions now."""
        return self._link is not None and self._link.subscriber.subscribed

    async def watch(self, room: str) -> None:
        """Receive this stream's events from now on: returns once Redis has confirmed the
        subscription, so nothing published after it is missed."""
        channel = self._channels.get(room)
        if channel is not None:
            pending = self._confirmations.get(channel.encode())
            if pending is not None:
                await asyncio.wait_for(asyncio.shield(pending), self.CONFIRM_TIMEOUT)
            return
        channel = self._keys.of(room).room(room)
        self._channels[room] = channel
        self._rooms[channel.encode()] = room
        link = self._link
        if link is None:
            return  # the listener subscribes to every watched room when it (re)connects
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel.encode()] = confirmed
        try:
            await link.subscriber.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(confirmed), self.CONFIRM_TIMEOUT)
        finally:
            if self._confirmations.get(channel.encode()) is confirmed:
                del self._confirmations[channel.encode()]

    async def unwatch_idle(self) -> None:
        """Stop receiving the streams this worker no longer has a socket watching."""
        local = self._local_rooms()
        idle = [room for room in self._channels if room not in local]
        if not idle:
            return
        channels = [self._channels.pop(room) for room in idle]
        for channel in channels:
            self._rooms.pop(channel.encode(), None)
        if self._link is not None:
            await self._link.subscriber.unsubscribe(*channels)

    async def deliver(self, room: str, items: list[bytes]) -> None:
        """Room messages this worker made itself, handled as if they had come on the room's
        channel (``hub.domain.recovery`` tells its own watchers that a stream ended, whether or
        not this listener was subscribed when the stream's channel carried the news)."""
        await self._room_messages(room, items)

    async def publish(self, channel: str, data: str | bytes) -> int:
        """Publish on the listener's connection; ConnectionError while it has none."""
        if self._link is None:
            raise ConnectionError("the room bus is not connected to Redis")
        return await self._link.publish(channel, data)

    async def listen(self) -> AsyncIterator[bytes]:
        """The listener: subscribe, read, and on any failure close the connection and start
        over with capped backoff, until ``close``. Yields the passthrough channel's messages.
        A closing bus stops here even if redis-py turned the cancellation into a connection
        error."""
        self._listener = asyncio.current_task()
        retry = self.RETRY_FIRST
        while not self.closing:
            try:
                await self._disconnect()
                link = self._link = self._connect()
                await link.subscriber.subscribe(self._passthrough, *self._channels.values())
                retry = self.RETRY_FIRST
                while not self.closing:
                    async for data in self._read(link):
                        yield data
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._disconnect()
                if self.closing:
                    break
                log.warning("pub/sub listener lost Redis (%s); resubscribing in %.2fs", exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.RETRY_MAX)

    async def close(self) -> None:
        """Stop the listener and close its connection."""
        self.closing = True
        listener = self._listener
        if listener is not None and listener is not asyncio.current_task():
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(listener), 3)
        await self._disconnect()

    async def _read(self, link: Link) -> AsyncIterator[bytes]:
        """One read: the next message (a bounded wait, so a stop is seen within a second even
        when the cancellation is lost inside the Redis client's blocking read), then everything
        already received, without waiting; the rooms' messages handled after it, in order."""
        rooms: dict[str, list[bytes]] = {}
        message = await link.subscriber.get_message(timeout=1.0)
        while message is not None:
            kind, channel = message["type"], message["channel"]
            if kind == "message":
                if channel == self._passthrough_bytes:
                    yield message["data"]
                else:
                    room = self._rooms.get(channel)
                    if room is not None:
                        rooms.setdefault(room, []).append(message["data"])
            elif kind == "subscribe":
                confirmed = self._confirmations.get(channel)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
            if len(rooms) > 256:
                break
            message = await link.subscriber.get_message(timeout=0)
        for room, items in rooms.items():
            await self._room_messages(room, items)

    async def _room_messages(self, room: str, items: list[bytes]) -> None:
        """One room's messages of one read, in order: runs of events for every socket are
        written together; an event that skips a socket, and an order, go on their own."""
        self.room_messages += len(items)
        try:
            for message in read_room_messages(items):
                if isinstance(message, Events):
                    self._write(room, message.skip, message.texts)
                elif message.kind == "close":
                    await self._on_close_room(room)
                elif message.kind == "ban" and message.user_id is not None:
                    await self._on_banned(room, message.user_id, message.reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("room messages on %s failed", room)

    async def _disconnect(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.aclose()


class HubRedisManager(AsyncPubSubManager):
    """python-socketio's pub/sub client manager, on the room bus: its channel is the bus's
    passthrough (``_listen``, ``_publish``), and every way into or out of a room (a join, a
    leave, a ban, a closed room, a disconnect) comes through ``basic_enter_room`` and
    ``basic_leave_room``: a paced room's held events go out before its members change
    (``hub.transport.fanout.Pacer``), and each socket's stream rooms are indexed as they
    change. A stream's ``!close`` order empties its room here, then ``on_close_room``."""

    def __init__(
        self,
        url: str,
        *,
        channel: str,
        keys: Keys,
        on_close_room: OnCloseRoom,
        on_banned: OnBanned,
        cluster: ClusterSettings | None = None,
        redis_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(channel=channel)
        self._on_close_room = on_close_room
        self._streams_of: dict[str, set[str]] = {}
        options = dict(redis_options or {})
        self.bus = RoomBus(
            lambda: open_link(url, cluster, options),
            keys,
            channel,
            self._local_rooms,
            self._write,
            self._room_closed,
            on_banned,
        )

    # -- what python-socketio needs -----------------------------------------------------
    async def _listen(self) -> AsyncIterator[bytes]:
        """python-socketio's channel, as the bus's listener reads it. When the bus closes, the
        listener ends as a cancelled one (python-socketio logs any other end as an error)."""
        async for data in self.bus.listen():
            yield data
        raise asyncio.CancelledError

    async def _publish(self, data: Any) -> Any:
        """python-socketio's messages to the other workers, two attempts."""
        for retries_left in (1, 0):
            try:
                return await self.bus.publish(self.channel, self.json.dumps(data))
            except Exception as exc:
                log.error("cannot publish to Redis (%s)%s", exc, ", retrying" if retries_left else "")
        return None

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
        if rooms is not None and room is not None:
            rooms.discard(room)
            if not rooms:
                del self._streams_of[sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's, without its scan of every room of the namespace (one per socket)
        for the socket's own: on ``/streaming`` a socket's rooms are the namespace's (None),
        its sid's and its stream rooms (``_streams_of``). Other namespaces keep upstream's."""
        rooms = self.rooms.get(namespace)
        if namespace != NAMESPACE or rooms is None:
            super().basic_disconnect(sid, namespace, **kwargs)
            return
        for room in (None, sid, *self._streams_of.get(sid, ())):
            if room in rooms and sid in rooms[room]:
                self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    # -- the rooms ----------------------------------------------------------------------
    def stream_rooms(self, sid: str) -> set[str]:
        """The stream rooms of ``/streaming`` the socket is in, as Socket.IO's own rooms say
        (python-socketio finds a socket's rooms by scanning every room)."""
        return set(self._streams_of.get(sid, ()))

    def members(self, room: str) -> list[str]:
        """The sids of this worker's sockets in a stream's room."""
        return list(self.rooms.get(NAMESPACE, {}).get(room, ()))

    def _local_rooms(self) -> Container[str]:
        return self.rooms.get(NAMESPACE, {})

    def _write(self, room: str, skip_sid: str | None, texts: list[bytes]) -> None:
        self.server.broadcast(room, skip_sid, texts)

    async def _room_closed(self, room: str) -> None:
        """The stream ended: its room is emptied here (not told to the other workers, whose
        own channel carries the order), then the namespace hears of it."""
        self.basic_close_room(room, NAMESPACE)
        await self._on_close_room(room)
