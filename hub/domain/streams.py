"""A stream's life (create, start, cancel, end) and what is read of streams: one, its stats,
the live ones, a streamer's."""

from __future__ import annotations

import logging
from typing import Any

from hub.codec import now_ms
from hub.domain import records
from hub.domain.auth import Identity
from hub.domain.guards import may_act
from hub.domain.payloads import CreateStream
from hub.errors import HubError
from hub.storage.keys import STREAMER_STREAMS_KEPT
from hub.storage.mysql import History
from hub.storage.state import State

log = logging.getLogger(__name__)


class StreamService:
    def __init__(self, state: State, history: History) -> None:
        self.state = state
        self.history = history

    async def create_stream(self, identity: Identity, payload: CreateStream) -> dict[str, Any]:
        if not identity.is_streamer:
            raise HubError("forbidden", "Only streamers may create streams.")
        stream_id, now = self.state.new_stream_id(identity.user_id), now_ms()
        status = "SCHEDULED" if payload.scheduled_at else "LIVE"
        fields = {
            "stream_id": stream_id,
            "streamer_id": identity.user_id,
            "streamer_name": identity.name,
            "title": payload.title,
            "description": payload.description,
            "thumbnail_url": payload.thumbnail_url or "",
            "status": status,
            "category": payload.category,
            "is_recording": "0",
            "recording_url": "",
            "scheduled_at": str(payload.scheduled_at or ""),
            "started_at": str(now) if status == "LIVE" else "",
            "ended_at": "",
            "duration_seconds": "",
            "peak_viewers": "0",
            "message_count": "0",
            "tip_count": "0",
            "tips_cents": "0",
            "fees_cents": "0",
            "created_at": str(now),
            "updated_at": str(now),
        }
        await self.state.create_stream(fields)
        log.info("stream created (%s)", status, extra={"stream_id": stream_id, "user_id": identity.user_id})
        return records.stream_from_hash(fields, 0)

    async def _owned(self, identity: Identity, stream_id: str) -> dict[str, str]:
        """The stream's hash, when the identity may manage it and it has not ended."""
        found = await self.state.stream(stream_id)
        if found is None:
            row = await self.history.stream(stream_id)
            if row is None:
                raise HubError("not_found")
            may_act(identity, row["streamer_id"])  # someone else's ended stream: forbidden
            raise HubError("conflict", "The stream has ended.")
        h = found[0]
        may_act(identity, h["streamer_id"])
        return h

    async def start_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        h = await self._owned(identity, stream_id)
        await self.state.start_stream(stream_id, h["streamer_id"])
        log.info("stream started", extra={"stream_id": stream_id, "user_id": identity.user_id})
        return await self.get_stream(stream_id)

    async def cancel_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        """A SCHEDULED stream ends without going live."""
        h = await self._owned(identity, stream_id)
        await self.state.cancel_stream(stream_id, h["streamer_id"])
        log.info("stream cancelled", extra={"stream_id": stream_id, "user_id": identity.user_id})
        return await self.get_stream(stream_id)

    async def end_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        h = await self._owned(identity, stream_id)
        try:
            await self.state.end_stream(stream_id, h["streamer_id"])
        except HubError as exc:
            if exc.code == "conflict":
                raise HubError("conflict", "The stream is not live.") from exc
            raise
        log.info("stream ended", extra={"stream_id": stream_id, "user_id": identity.user_id})
        stream = await self.get_stream(stream_id)
        stats = await self.stats(stream_id)
        return dict(stream, **{k: v for k, v in stats.items() if k not in stream})

    async def end_idle(self, stream_id: str, streamer_id: str) -> None:
        """End a LIVE stream the sweep found idle (``HUB_LIVE_IDLE_END``: no socket of its
        streamer watching, no activity) as its streamer's own end would: final figures to the
        outbox, ``stream_ended`` to the room, the room closed."""
        try:
            duration = await self.state.end_stream(stream_id, streamer_id)
        except HubError as exc:
            if exc.code not in ("conflict", "not_found"):  # else ended meanwhile (its streamer, a heal)
                log.warning("ending an idle stream failed: %s", exc.code, extra={"stream_id": stream_id})
            return
        log.info(
            "idle stream ended after %ds live",
            duration,
            extra={"stream_id": stream_id, "user_id": streamer_id},
        )

    async def get_stream(self, stream_id: str) -> dict[str, Any]:
        found = await self.state.stream(stream_id)
        if found is not None:
            return records.stream_from_hash(found[0], found[1])
        row = await self.history.stream(stream_id)
        if row is None:
            raise HubError("not_found")
        return records.stream_from_row(row)

    async def stats(self, stream_id: str) -> dict[str, Any]:
        found = await self.state.stream(stream_id)
        if found is not None:
            h, count, unique = found
            return records.stats_from_hash(h, count, unique, now_ms())
        row = await self.history.stream(stream_id)
        if row is None:
            raise HubError("not_found")
        return records.stats_from_row(row)

    async def live(self, category: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        ids = await self.state.live_ids(category, offset, limit)
        pairs = await self.state.streams(ids)
        return [records.stream_from_hash(h, count) for h, count in pairs if h["status"] == "LIVE"]

    async def user_streams(self, user_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Streams held in Redis (the newest, maybe not flushed yet) merged with MySQL's."""
        # The newest `limit` held in Redis (all those kept when filtering by status) and MySQL's
        # newest `limit`: the cost follows the limit, not how many streams the user ever had.
        ids = await self.state.streamer_stream_ids(user_id, STREAMER_STREAMS_KEPT if status else limit)
        pairs = await self.state.streams(ids)
        held = {h["stream_id"] for h, _ in pairs}
        await self.state.forget_streamer_streams(user_id, [i for i in ids if i not in held])
        merged = {h["stream_id"]: records.stream_from_hash(h, count) for h, count in pairs}
        for row in await self.history.streamer_streams(user_id, status, limit):
            merged.setdefault(row["stream_id"], records.stream_from_row(row))
        streams = [s for s in merged.values() if status is None or s["status"] == status]
        streams.sort(key=lambda s: s["created_at"] or "", reverse=True)
        return streams[:limit]
