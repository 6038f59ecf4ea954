"""Moderation (PROTOCOL §8): an action's row of ``payloads.MODERATION`` says what it needs,
who may take it, what it changes and what it tells the room; here it becomes the record and
broadcast that ``State.moderate`` applies as one ``ModerationRecord`` (``moderate.lua``).
Also the stream's moderation log."""

from __future__ import annotations

import logging
from typing import Any

from hub import frames
from hub.codec import dumps, iso_ms, loads, uuid7, uuid7_ms
from hub.domain import guards, records
from hub.domain.auth import Identity
from hub.domain.payloads import Moderation, ModerationAction
from hub.errors import HubError
from hub.settings import Settings
from hub.storage.mysql import History
from hub.storage.state import MessageMissing, ModerationRecord, NoStream, State

log = logging.getLogger(__name__)


class ModerationService:
    def __init__(self, settings: Settings, state: State, history: History) -> None:
        self.settings = settings
        self.state = state
        self.history = history

    async def moderate(self, identity: Identity | None, m: Moderation) -> dict[str, Any]:
        """One action: checked, applied, recorded and broadcast in one script."""
        who = guards.current(identity, self.settings)
        action_id = uuid7()
        created_ms = uuid7_ms(action_id)
        record: dict[str, Any] = {
            "action_id": action_id,
            "action": m.action,
            "stream_id": m.stream_id,
            "by": who.user_id,
            "created_at": iso_ms(created_ms),
        }
        for name in records.ACTION_FIELDS:
            if getattr(m, name) not in (None, ""):
                record[name] = getattr(m, name)
        value = _value(m, action_id, created_ms, record)
        call = ModerationRecord(
            stream_id=m.stream_id,
            actor=who.user_id,
            is_admin=who.is_admin,
            change=m.kind.change,
            owner_only=m.kind.owner_only,
            on_self=m.kind.on_self,
            target=m.user_id,
            message_id=m.message_id,
            value=value,
            record_json=dumps(record),
            broadcast=_broadcast(m.kind, record),
            ban_order=frames.ban(m.user_id, m.reason) if m.kind.change == "ban" else b"",
        )
        moderators = await self._apply(call)
        log.info("moderation: %s", m.action, extra={"stream_id": m.stream_id, "user_id": who.user_id})
        ack: dict[str, Any] = {"success": True, "action": record}
        if moderators is not None:
            ack["moderators"] = loads(moderators)
        return ack

    async def _apply(self, call: ModerationRecord) -> str | None:
        """The action applied; a message to delete that Redis no longer holds is looked for
        in MySQL first, and a stream without live state is told apart from no stream."""
        try:
            try:
                return await self.state.moderate(call)
            except MessageMissing:
                if not await self.history.has_message(call.stream_id, call.message_id):
                    raise HubError("not_found", "No such message.") from None
                return await self.state.moderate(call, found=True)
        except NoStream:
            if await self.history.stream(call.stream_id) is not None:
                raise HubError("stream_not_live", "The stream has ended.") from None
            raise HubError("not_found") from None

    async def moderation_log(self, identity: Identity, stream_id: str, limit: int) -> list[dict[str, Any]]:
        """The stream's moderation actions, newest first: those still in Redis (maybe not
        flushed yet) merged with MySQL's. For the streamer, its moderators and admins."""
        streamer, moderator = await self.state.standing(stream_id, identity.user_id)
        if streamer is None:
            row = await self.history.stream(stream_id)
            if row is None:
                raise HubError("not_found")
            streamer = row["streamer_id"]
        if not (identity.user_id == streamer or identity.is_admin or moderator):
            raise HubError("forbidden", "Only the streamer, its moderators or an admin may read this.")
        merged = {
            r["action_id"]: records.action_from_row(r)
            for r in await self.history.moderation_actions(stream_id, limit)
        }
        for item in await self.state.moderation_log(stream_id):
            action = loads(item)
            merged[action["action_id"]] = action
        return sorted(merged.values(), key=lambda a: a["action_id"], reverse=True)[:limit]


def _value(m: Moderation, action_id: str, created_ms: int, record: dict[str, Any]) -> str:
    """What the action's change writes: a timeout's end (ms; also recorded as ``until``), the
    clear's watermark (every message with an older id is cleared) or the slow-mode interval."""
    change = m.kind.change
    if change == "timeout":
        assert m.seconds is not None
        ends = created_ms + m.seconds * 1000
        record["until"] = iso_ms(ends)
        return str(ends)
    if change == "clear":
        return action_id
    if change == "slow":
        return str(m.seconds)
    return ""


def _broadcast(kind: ModerationAction, record: dict[str, Any]) -> frames.Around:
    """The room message that tells the action: its event with the record's announced fields
    and the actor, or the moderators after the change, which the script fills in."""
    if kind.announced is None:
        head = b'{"stream_id":' + dumps(record["stream_id"]) + b',"moderators":'
        return frames.around(kind.event, head, b"}")
    data = {"stream_id": record["stream_id"], **{f: record[f] for f in kind.announced}, "by": record["by"]}
    return frames.Around(frames.room_message(frames.event(kind.event, dumps(data))), b"")
