"""This worker's own connections, and the loops that keep their presence in Redis true.

Presence costs per worker, not per connection: the worker holds a lease in every shard
(``Keys.leases``), taken before it accepts connections and renewed every
``HUB_PRESENCE_REFRESH`` for ``HUB_PRESENCE_TTL`` by one call per shard. Each connection that
watches a stream is a member of the stream's ``conns`` sorted set, and each open connection a
member of its user's or address's set, scored by the number of the lease that holds it and
listed in that lease's registry (``Keys.lease_held``). A worker that dies stops renewing; once
its lease lapses any worker's sweep removes what it held and tells the rooms (``viewer_left``).
A worker whose lease lapsed while it lived (it froze, its loop stalled, Redis lost its data)
takes a new one and re-asserts everything it holds in that shard under it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from hub.domain.auth import Identity
from hub.errors import HubError
from hub.storage.state import Holding, State

log = logging.getLogger(__name__)


@dataclass
class Conn:
    """One Socket.IO connection on this worker."""

    sid: str
    identity: Identity | None
    address: str = "unknown"
    stream_id: str | None = None
    streamer_id: str | None = None
    member: str | None = None

    @property
    def viewer(self) -> str:
        """Who counts as one viewer: a signed-in user, or this anonymous connection."""
        return f"u:{self.identity.user_id}" if self.identity else f"a:{self.sid}"

    @property
    def username(self) -> str:
        return self.identity.name if self.identity else ""


class Presence:
    def __init__(self, state: State) -> None:
        self.state = state
        self.conns: dict[str, Conn] = {}
        self.transports: dict[str, str] = {}  # Engine.IO session id -> its client address
        self.rooms: dict[str, set[str]] = defaultdict(set)
        self.withdrawn = False

    def add(self, conn: Conn) -> None:
        self.conns[conn.sid] = conn

    def remove(self, sid: str) -> Conn | None:
        return self.conns.pop(sid, None)

    def watch(self, conn: Conn, stream_id: str, streamer_id: str, member: str) -> None:
        conn.stream_id, conn.streamer_id, conn.member = stream_id, streamer_id, member
        self.rooms[stream_id].add(conn.sid)

    def unwatch(self, conn: Conn) -> None:
        if conn.stream_id is not None:
            room = self.rooms.get(conn.stream_id)
            if room is not None:
                room.discard(conn.sid)
                if not room:
                    del self.rooms[conn.stream_id]
        conn.stream_id = conn.streamer_id = conn.member = None

    def forget_stream(self, stream_id: str) -> list[Conn]:
        """The stream ended: its local watchers watch nothing now (their presence is gone)."""
        sids = self.rooms.pop(stream_id, set())
        gone = [self.conns[sid] for sid in sids if sid in self.conns]
        for conn in gone:
            conn.stream_id = conn.streamer_id = conn.member = None
        return gone

    async def withdraw(self) -> None:
        """Remove every local connection's presence now (the worker is stopping), then drop its
        leases with what they still hold; the connections keep their local state until they
        close, and refreshing stops."""
        self.withdrawn = True
        for conn in list(self.conns.values()):
            if conn.stream_id is not None and conn.member is not None:
                try:
                    await self.state.leave(conn.stream_id, conn.member)
                except (HubError, RedisError, OSError) as exc:
                    log.warning("withdrawing %s failed: %s", conn.sid, exc)
        await self.state.drop_leases()

    async def take_leases(self) -> None:
        """A lease in every shard, before the worker accepts connections."""
        await self.state.renew()

    def holdings(self, shard: int) -> list[Holding]:
        """The open connections this worker counts in the shard's address and user sets."""
        of = self.state.keys.shard_of
        return [
            *(Holding("a", a, eio_sid) for eio_sid, a in list(self.transports.items()) if of(a) == shard),
            *(
                Holding("u", c.identity.user_id, c.sid)
                for c in list(self.conns.values())
                if c.identity is not None and of(c.identity.user_id) == shard
            ),
        ]

    def _members(self, stream_id: str) -> list[tuple[str, str, str]]:
        return [
            (c.member, c.sid, c.username)
            for c in (self.conns.get(sid) for sid in list(self.rooms.get(stream_id, ())))
            if c is not None and c.member is not None
        ]

    async def refresh_once(self, stream_gone: Callable[[str, list[Conn]], Awaitable[None]]) -> int:
        """Renew this worker's leases; where one lapsed, re-assert under the new one what the
        worker holds in that shard. Returns how many connections watch again after a sweep.
        A watched stream that ended since (its room's close order missed) is forgotten, and
        ``stream_gone`` told of its watchers."""
        if self.withdrawn:
            return 0
        reasserted = 0
        for renewal in await self.state.renew():
            for stream_id in renewal.ended:
                if stream_id in self.rooms:
                    await stream_gone(stream_id, self.forget_stream(stream_id))
            if renewal.fresh:
                reasserted += await self.reassert(renewal.shard, stream_gone)
        return reasserted

    async def reassert(self, shard: int, stream_gone: Callable[[str, list[Conn]], Awaitable[None]]) -> int:
        """Everything this worker holds in the shard, under its lease there now."""
        await self.state.hold(shard, self.holdings(shard))
        reasserted = 0
        for stream_id in [s for s in list(self.rooms) if self.state.keys.shard_of(s) == shard]:
            members = self._members(stream_id)
            if not members:
                continue
            try:
                reasserted += await self.state.refresh(stream_id, members)
            except HubError:
                await stream_gone(stream_id, self.forget_stream(stream_id))
        if reasserted:
            log.warning(
                "shard %d: %d connection(s) swept while the lease lapsed watch again", shard, reasserted
            )
        return reasserted

    async def reap_loop(self, interval: float) -> None:
        await every(interval, self.state.reap, "presence sweep")


async def every(interval: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``step`` every ``interval`` seconds; a failure is logged and retried with backoff."""
    delay = interval
    task = asyncio.current_task()
    while True:
        await asyncio.sleep(delay)
        try:
            await step()
            delay = interval
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            delay = min(delay * 2, 10.0)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
        except Exception:
            delay = min(delay * 2, 10.0)
            log.exception("%s failed; retrying in %.1fs", what, delay)
        # redis-py can turn a cancellation into a connection error: a loop told to stop stops.
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
