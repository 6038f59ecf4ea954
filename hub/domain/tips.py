"""Tipping a stream's streamer: the money (cents, the platform's fee), the TIP chat message,
the ack kept for a retry with the same ``client_tip_id``; all applied by ``State.tip`` as one
``TipRecord`` (``tip.lua``)."""

from __future__ import annotations

from typing import Any

import orjson

from hub import frames
from hub.codec import dumps, iso_ms, loads, uuid7, uuid7_ms
from hub.domain import guards
from hub.domain.auth import Identity
from hub.domain.payloads import Tip
from hub.domain.presence import Conn, Presence
from hub.errors import HubError
from hub.money import fee_cents, from_cents, money_json
from hub.settings import Settings
from hub.storage.state import Stale, State, TipRecord


class TipService:
    def __init__(self, settings: Settings, state: State, presence: Presence) -> None:
        self.settings = settings
        self.state = state
        self.presence = presence

    async def tip(self, conn: Conn, payload: Tip) -> dict[str, Any]:
        identity = guards.speaker(conn, payload.stream_id, self.settings)
        streamer = conn.streamer_id or ""
        if identity.user_id == streamer:
            raise HubError("forbidden", "You cannot tip your own stream.")
        if payload.to_user_id is not None and payload.to_user_id != streamer:
            raise HubError("invalid", "'to_user_id' must be the stream's streamer.")
        fee = fee_cents(payload.amount_cents, self.settings.platform_fee)
        tip_id, message_id = uuid7(), uuid7()
        created = iso_ms(uuid7_ms(tip_id))
        received_json = dumps(self._received(identity, payload, streamer, tip_id, fee, created))
        record_json = dumps(
            {
                "tip_id": tip_id,
                "stream_id": payload.stream_id,
                "from_user_id": identity.user_id,
                "to_user_id": streamer,
                "amount_cents": payload.amount_cents,
                "fee_cents": fee,
                "currency": payload.currency,
                "message": payload.message,
                "client_tip_id": payload.client_tip_id,
                "created_at": created,
            }
        )
        while True:
            ack_json = dumps(
                {"success": True, "tip": orjson.Fragment(received_json), "message_id": message_id}
            )
            message_json = dumps(self._message(identity, payload, message_id, created))
            tip = TipRecord(
                stream_id=payload.stream_id,
                user_id=identity.user_id,
                client_tip_id=payload.client_tip_id,
                amount_cents=payload.amount_cents,
                fee_cents=fee,
                message_id=message_id,
                ack_json=ack_json,
                tip_json=record_json,
                message_json=message_json,
                room_message=frames.room_message(
                    frames.event("tip_received", received_json), frames.event("chat_message", message_json)
                ),
            )
            try:
                first = await self.state.tip(tip)
            except Stale as exc:  # the chat was cleared after this id was made: a later id
                message_id = uuid7(after=exc.cleared)
                continue
            except HubError as exc:
                if exc.code == "stream_not_live":
                    raise guards.ended(self.presence, conn) from None
                raise
            if first is not None:
                return dict(loads(first), duplicate=True)
            return orjson.Fragment(ack_json)  # type: ignore[return-value]  # encoded once

    @staticmethod
    def _received(
        identity: Identity, payload: Tip, streamer: str, tip_id: str, fee: int, created: str | None
    ) -> dict[str, Any]:
        """The tip_received event's data, also the ack's ``tip``."""
        return {
            "tip_id": tip_id,
            "stream_id": payload.stream_id,
            "from_user": identity.user_id,
            "from_username": identity.name,
            "to_user": streamer,
            "amount": money_json(payload.amount_cents),
            "platform_fee": money_json(fee),
            "currency": payload.currency,
            "message": payload.message,
            "created_at": created,
        }

    @staticmethod
    def _message(identity: Identity, payload: Tip, message_id: str, created: str | None) -> dict[str, Any]:
        """The tip's TIP chat message: the tipper's words, or what was tipped."""
        return {
            "message_id": message_id,
            "stream_id": payload.stream_id,
            "user_id": identity.user_id,
            "username": identity.name,
            "message": payload.message or f"Tipped {from_cents(payload.amount_cents)} {payload.currency}",
            "message_type": "TIP",
            "tip_amount": money_json(payload.amount_cents),
            "created_at": created,
        }
