"""Watching a stream: joining (with the messages a viewer missed) and leaving it, and the
connections' admission and release that bound each address and user."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any

from hub.codec import now_ms, uuid7
from hub.domain import guards, records
from hub.domain.history import HistoryService
from hub.domain.payloads import Join
from hub.domain.presence import Conn, Presence
from hub.errors import HubError
from hub.settings import Settings
from hub.storage.state import Holding, State

RECENT_ON_JOIN = 50


class WatchService:
    def __init__(self, settings: Settings, state: State, presence: Presence, history: HistoryService) -> None:
        self.settings = settings
        self.state = state
        self.presence = presence
        self.history = history

    async def join(self, conn: Conn, payload: Join) -> dict[str, Any]:
        if conn.identity is not None:
            guards.current(
                conn.identity, self.settings
            )  # a token that expired since the connect may not join
        again = conn.stream_id == payload.stream_id and conn.member is not None
        leases = self.state.lease_changes
        # Joining again keeps the same presence (no viewer events).
        member = conn.member if again and conn.member else f"{uuid7()}|{now_ms()}|{conn.viewer}"
        # The newest 50, or the newest of those after last_message_id up to the recent size;
        # one more to tell whether older ones were left out.
        limit = self.settings.recent_size if payload.last_message_id else RECENT_ON_JOIN
        count, h, recent = await self.state.join(
            payload.stream_id,
            member,
            conn.sid,
            conn.username,
            conn.viewer,
            limit + 1,
            payload.last_message_id,
        )
        if not again and conn.stream_id is not None:
            await self.leave(conn)  # only once the new stream has accepted the join
        self.presence.watch(conn, payload.stream_id, h["streamer_id"], member)
        if self.state.lease_changes != leases:
            # A lease was taken meanwhile, maybe after this join was written under the old one,
            # and maybe after this stream's connections were re-asserted: this one is now.
            with contextlib.suppress(HubError):  # ended meanwhile: its close order follows
                await self.state.refresh(payload.stream_id, [(member, conn.sid, conn.username)])
        messages = await self.history.messages(
            payload.stream_id,
            None,
            payload.last_message_id,
            limit + 1,
            held=recent,
            floor=h.get("recent_floor"),
        )
        return {
            "success": True,
            "stream": records.stream_from_hash(h, count),
            "viewer_count": count,
            "recent_messages": messages[:limit][::-1],
            "has_more": len(messages) > limit,
        }

    async def leave(self, conn: Conn) -> dict[str, Any]:
        stream_id, member = conn.stream_id, conn.member
        self.presence.unwatch(conn)
        if stream_id is not None and member is not None:
            await self.state.leave(stream_id, member)
        return {"success": True, "stream_id": stream_id}

    async def admit_transport(self, address: str, eio_sid: str) -> None:
        """An Engine.IO session opens: counted against its address's limits."""
        held = Holding("a", address, eio_sid)
        await self._hold(held, self.state.admit_transport(address, eio_sid))
        self.presence.transports[eio_sid] = address

    async def release_transport(self, eio_sid: str) -> None:
        address = self.presence.transports.pop(eio_sid, None)
        if address is not None:
            await self.state.release(Holding("a", address, eio_sid))

    async def admit(self, conn: Conn) -> None:
        """A connection to the namespace: a signed-in one counted against its user's limit."""
        if conn.identity is not None:
            held = Holding("u", conn.identity.user_id, conn.sid)
            await self._hold(held, self.state.admit_user(conn.identity.user_id, conn.sid))

    async def disconnect(self, conn: Conn) -> None:
        if conn.stream_id is not None:
            await self.leave(conn)
        if conn.identity is not None:
            await self.state.release(Holding("u", conn.identity.user_id, conn.sid))

    async def _hold(self, held: Holding, admit: Awaitable[None]) -> None:
        """``admit``; then, should a lease have been taken meanwhile (the connection may have
        been written under the old one after the others were re-asserted), re-asserted."""
        leases = self.state.lease_changes
        await admit
        if self.state.lease_changes != leases:
            await self.state.hold(self.state.keys.shard_of(held.id), [held])
