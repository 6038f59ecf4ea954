"""This worker's own connections, and the loops that keep their presence in Redis true.

Each connection that watches a stream is a member of the stream's ``conns`` sorted set,
scored by an expiry this worker keeps pushing forward. A worker that dies stops pushing;
any worker's sweep then removes its connections and tells the room (``viewer_left``).
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
from hub.storage.state import State

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
        """Remove every local connection's presence now (the worker is stopping); the
        connections keep their local state until they close, and refreshing stops."""
        self.withdrawn = True
        for conn in list(self.conns.values()):
            if conn.stream_id is not None and conn.member is not None:
                try:
                    await self.state.leave(conn.stream_id, conn.member)
                except (HubError, RedisError, OSError) as exc:
                    log.warning("withdrawing %s failed: %s", conn.sid, exc)

    async def refresh_once(self, stream_gone: Callable[[str, list[Conn]], Awaitable[None]]) -> int:
        """Push every local connection's expiry forward; returns how many were re-asserted.
        A stream found no longer live is forgotten, and ``stream_gone`` told of its watchers."""
        reasserted = 0
        if self.withdrawn:
            return 0
        await self.state.touch(
            [
                *(
                    (self.state.address_holder(address), eio_sid)
                    for eio_sid, address in list(self.transports.items())
                ),
                *(
                    (self.state.user_holder(c.identity.user_id), c.sid)
                    for c in list(self.conns.values())
                    if c.identity is not None
                ),
            ]
        )
        for stream_id, sids in list(self.rooms.items()):
            members = [
                (c.member, c.sid, c.username)
                for c in (self.conns.get(sid) for sid in list(sids))
                if c is not None and c.member is not None
            ]
            if not members:
                continue
            try:
                reasserted += await self.state.refresh(stream_id, members)
            except HubError:
                await stream_gone(stream_id, self.forget_stream(stream_id))
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
