"""Sending chat: a viewer's message or the streamer's trade alert, encoded once here and
accepted by ``State.chat`` as a ``ChatItem`` (``chat_batch.lua``: checks, the recent and
unflushed sets, the room, the outbox)."""

from __future__ import annotations

from typing import Any

import orjson

from hub import frames
from hub.codec import dumps, iso_ms, uuid7
from hub.domain import guards
from hub.domain.auth import Identity
from hub.domain.payloads import Alert, Chat
from hub.domain.presence import Conn, Presence
from hub.errors import HubError
from hub.money import decimal_json
from hub.settings import Settings
from hub.storage.state import ChatItem, Stale, State


def created_at(message_id: str) -> str:
    """``codec.iso_ms(codec.uuid7_ms(message_id))`` for a canonical UUIDv7 (as ``uuid7``
    makes them), without parsing the UUID, with the text up to the second made once per
    second: every message of a busy second shares it."""
    ms = int(message_id[:8] + message_id[9:13], 16)
    second = ms // 1000
    if _second[0] != second:
        _second[0], _second[1] = second, str(iso_ms(second * 1000))[:-4]
    return f"{_second[1]}{ms % 1000:03d}Z"


_second: list[Any] = [None, ""]  # the last second made by created_at, and its text


class ChatService:
    def __init__(self, settings: Settings, state: State, presence: Presence) -> None:
        self.settings = settings
        self.state = state
        self.presence = presence

    async def chat(self, conn: Conn, payload: Chat) -> dict[str, Any]:
        """A watching socket's message to its stream."""
        identity = guards.speaker(conn, payload.stream_id, self.settings)
        try:
            return await self._post(identity, payload.stream_id, payload.message, payload.message_type)
        except HubError as exc:
            if exc.code == "stream_not_live":
                raise guards.ended(self.presence, conn) from None
            raise

    async def alert(self, identity: Identity | None, payload: Alert) -> dict[str, Any]:
        """The streamer's trade alert: a chat message of type ALERT (the sender need not watch)."""
        identity = guards.current(identity, self.settings)
        alert = {"symbol": payload.symbol, "side": payload.side, "price": decimal_json(payload.price)}
        return await self._post(identity, payload.stream_id, payload.message, "ALERT", alert)

    async def _post(
        self,
        identity: Identity,
        stream_id: str,
        text: str,
        message_type: str,
        alert: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The message encoded once (for the sets, the outbox, the room and the ack) and
        accepted; made again with a later id when a chat clear came after its id."""
        message_id = uuid7()
        while True:
            message: dict[str, Any] = {
                "message_id": message_id,
                "stream_id": stream_id,
                "user_id": identity.user_id,
                "username": identity.name,
                "message": text,
                "message_type": message_type,
                "tip_amount": None,
                "created_at": created_at(message_id),
            }
            if alert is not None:
                message["alert"] = alert
            encoded = dumps(message)
            item = ChatItem(
                stream_id=stream_id,
                user_id=identity.user_id,
                is_admin=identity.is_admin,
                is_alert=alert is not None,
                message_id=message_id,
                message_json=encoded,
                frame=frames.event("chat_message", encoded),
            )
            try:
                await self.state.chat(item)
            except Stale as exc:  # the chat was cleared after this id was made: a later id
                message_id = uuid7(after=exc.cleared)
                continue
            return {"success": True, "message": orjson.Fragment(encoded)}  # encoded once
