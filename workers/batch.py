"""Outbox records as MySQL rows: each checked against its columns as it is folded into a batch.

A record becomes the ``NamedTuple`` of its table (``hub.storage.mysql``), its fields taken by
name from the record and checked in Python before any SQL (``workers.columns``): a malformed one
raises ``BadRecord``. A batch holds each key once: a stream's newest version, a viewing
session's latest end, the last copy of anything else. ``hub.storage.mysql.Writer`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from hub.money import decimal_json, from_cents
from hub.storage.mysql import ActionRow, MessageRow, Rows, SessionRow, StreamRow, TipRow
from workers import columns as col
from workers.columns import BadRecord

__all__ = ["BadRecord", "Batch"]

# Column limits of sql/*.sql that the rows below are checked against (workers.columns).
ID, NAME, MESSAGE, CLIENT_TIP_ID, TITLE, CATEGORY, URL, ACTION = 191, 191, 500, 64, 200, 64, 2048, 32
STATUSES = ("LIVE", "ENDED", "SCHEDULED")
MESSAGE_TYPES = ("TEXT", "EMOJI", "TIP", "ALERT")
ALERT_MAX = 1024  # an alert is a symbol, a side and a price


def _count(d: dict[str, Any], name: str, high: int = col.INT_UNSIGNED) -> int:
    """An unsigned counter of a stream hash; missing or empty is 0."""
    value = d.get(name)
    return 0 if value in (None, "") else col.whole(value, name, 0, high)


def _money(d: dict[str, Any], name: str) -> Decimal:
    """A stream hash's total in integer cents (its decimal text), as a DECIMAL(12,2)."""
    value = d.get(name)
    return from_cents(0 if value in (None, "") else col.cents(value, name, digits=True))


def stream_row(d: dict[str, Any]) -> StreamRow:
    """A stream record: the stream's hash as the hub holds it (text fields, times in ms)."""
    duration = d.get("duration_seconds")
    return StreamRow(
        stream_id=col.uuid(d["stream_id"], "stream_id"),
        streamer_id=col.text(d["streamer_id"], "streamer_id", ID),
        streamer_name=col.text(d.get("streamer_name") or None, "streamer_name", NAME, null=True),
        title=col.text(d["title"], "title", TITLE),
        description=col.long_text(d.get("description") or "", "description"),
        thumbnail_url=col.text(d.get("thumbnail_url") or None, "thumbnail_url", URL, null=True),
        status=col.choice(d["status"], "status", STATUSES),
        category=col.text(d.get("category") or "", "category", CATEGORY),
        is_recording=d.get("is_recording") == "1",
        recording_url=col.text(d.get("recording_url") or None, "recording_url", URL, null=True),
        peak_viewers=_count(d, "peak_viewers"),
        unique_viewers=_count(d, "unique_viewers"),
        message_count=_count(d, "message_count"),
        tip_count=_count(d, "tip_count"),
        tips_total=_money(d, "tips_cents"),
        platform_fees_total=_money(d, "fees_cents"),
        scheduled_at=col.ms_time(d.get("scheduled_at"), "scheduled_at", null=True),
        started_at=col.ms_time(d.get("started_at"), "started_at", null=True),
        ended_at=col.ms_time(d.get("ended_at"), "ended_at", null=True),
        duration_seconds=(
            None if duration in (None, "") else col.whole(duration, "duration_seconds", 0, col.INT_UNSIGNED)
        ),
        created_at=col.ms_time(d["created_at"], "created_at"),
        updated_at=col.ms_time(d["updated_at"], "updated_at"),
        version=_count(d, "version", col.BIGINT_UNSIGNED),
    )


def _alert_json(alert: Any) -> str | None:
    """An alert for its JSON column, its price written as the exact decimal text."""
    if alert is None:
        return None
    if not isinstance(alert, dict):
        raise BadRecord("an alert must be an object")
    price = alert.get("price")
    if price is not None:
        alert = dict(alert, price=decimal_json(col.number(price, "the alert's price")))
    text = orjson.dumps(alert).decode()
    if len(text) > ALERT_MAX:
        raise BadRecord(f"the alert is longer than {ALERT_MAX} characters")
    return text


def message_row(d: dict[str, Any]) -> MessageRow:
    return MessageRow(
        message_id=col.uuid(d["message_id"], "message_id"),
        stream_id=col.uuid(d["stream_id"], "stream_id"),
        user_id=col.text(d["user_id"], "user_id", ID),
        username=col.text(d.get("username"), "username", NAME, null=True),
        message=col.text(d["message"], "message", MESSAGE),
        message_type=col.choice(d["message_type"], "message_type", MESSAGE_TYPES),
        tip_amount=col.money(d.get("tip_amount"), "tip_amount"),
        alert=_alert_json(d.get("alert")),
        created_at=col.iso_time(d["created_at"], "created_at"),
    )


def tip_row(d: dict[str, Any]) -> TipRow:
    """A tip record: money in integer cents, the streamer's share what the fee leaves."""
    amount = col.cents(d["amount_cents"], "amount_cents", 1)
    fee = col.cents(d["fee_cents"], "fee_cents", 0, amount)
    return TipRow(
        tip_id=col.uuid(d["tip_id"], "tip_id"),
        stream_id=col.uuid(d["stream_id"], "stream_id"),
        from_user_id=col.text(d["from_user_id"], "from_user_id", ID),
        to_user_id=col.text(d["to_user_id"], "to_user_id", ID),
        amount=from_cents(amount),
        platform_fee=from_cents(fee),
        streamer_share=from_cents(amount - fee),
        currency=col.code(d["currency"], "currency", 3),
        message=col.text(d.get("message") or "", "message", MESSAGE),
        client_tip_id=col.text(d.get("client_tip_id"), "client_tip_id", CLIENT_TIP_ID, null=True),
        created_at=col.iso_time(d["created_at"], "created_at"),
    )


def session_row(d: dict[str, Any]) -> SessionRow:
    return SessionRow(
        session_id=col.uuid(d["session_id"], "session_id"),
        stream_id=col.uuid(d["stream_id"], "stream_id"),
        user_id=col.text(d.get("user_id"), "user_id", ID, null=True),
        joined_at=col.ms_time(d["joined_at"], "joined_at"),
        left_at=col.ms_time(d["left_at"], "left_at"),
        watch_seconds=col.whole(d["watch_seconds"], "watch_seconds", 0, col.INT_UNSIGNED),
    )


def action_row(d: dict[str, Any]) -> ActionRow:
    """A moderation record: its ``by`` is the column ``by_user``, its ``until`` ``ends_at``."""
    seconds = d.get("seconds")
    return ActionRow(
        action_id=col.uuid(d["action_id"], "action_id"),
        stream_id=col.uuid(d["stream_id"], "stream_id"),
        action=col.text(d["action"], "action", ACTION),
        by_user=col.text(d["by"], "by", ID),
        user_id=col.text(d.get("user_id"), "user_id", ID, null=True),
        message_id=col.uuid(d.get("message_id"), "message_id", null=True),
        seconds=None if seconds is None else col.whole(seconds, "seconds", 0, col.INT_UNSIGNED),
        reason=col.text(d.get("reason"), "reason", MESSAGE, null=True),
        ends_at=col.iso_time(d.get("until"), "until", null=True),
        created_at=col.iso_time(d["created_at"], "created_at"),
    )


@dataclass
class Batch(Rows):
    """Outbox records of one read as rows, folded so each key appears once; with the text of
    each chat message by stream, as the hub wrote it (its member in the stream's unflushed set,
    taken out once the batch is written)."""

    message_texts: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, data: str | dict[str, Any]) -> None:
        """One record (its type and JSON data) as a row of the batch; ``BadRecord`` if it is
        malformed."""
        try:
            d = data if isinstance(data, dict) else orjson.loads(data)
            if not isinstance(d, dict):
                raise BadRecord("the record's data is not a JSON object")
            self._add_row(kind, d, data if isinstance(data, str) else None)
        except BadRecord:
            raise
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            ArithmeticError,
            orjson.JSONDecodeError,
        ) as exc:
            raise BadRecord(f"{type(exc).__name__}: {exc}") from exc

    def _add_row(self, kind: str, d: dict[str, Any], text: str | None) -> None:
        """The record's row in its table, unless the batch holds a later one of the same key."""
        if kind == "stream":
            stream = stream_row(d)
            old_stream = self.streams.get(stream.stream_id)
            if old_stream is None or old_stream.version <= stream.version:
                self.streams[stream.stream_id] = stream
        elif kind == "message":
            message = message_row(d)
            self.messages[message.message_id] = message
            if text is not None:
                self.message_texts.setdefault(message.stream_id, []).append(text)
        elif kind == "tip":
            tip = tip_row(d)
            self.tips[tip.tip_id] = tip
        elif kind == "session":
            session = session_row(d)
            old_session = self.sessions.get(session.session_id)
            if old_session is None or old_session.left_at <= session.left_at:
                self.sessions[session.session_id] = session
        elif kind == "moderation":
            action = action_row(d)
            self.actions[action.action_id] = action
        else:
            raise BadRecord(f"unknown record type {kind!r}")
