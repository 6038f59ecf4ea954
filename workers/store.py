"""Idempotent batch writes into MySQL: one transaction, one multi-row statement per table.

Every statement is ``INSERT ... ON DUPLICATE KEY UPDATE`` keyed by the record's UUID, so a
batch replayed after a crash changes nothing. Stream rows carry absolute figures and a
version; an older version never overwrites a newer one. Each record is checked against its
columns as it is folded into a batch, before any SQL (``workers.columns``): a malformed one
raises ``BadRecord``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiomysql
import orjson
from pymysql.converters import escape_item, escape_string

from hub.money import decimal_json, from_cents
from workers import columns as col
from workers.columns import BadRecord

__all__ = ["BadRecord", "Batch", "Store"]

STREAM_COLUMNS = (
    "stream_id",
    "streamer_id",
    "streamer_name",
    "title",
    "description",
    "thumbnail_url",
    "status",
    "category",
    "is_recording",
    "recording_url",
    "peak_viewers",
    "unique_viewers",
    "message_count",
    "tip_count",
    "tips_total",
    "platform_fees_total",
    "scheduled_at",
    "started_at",
    "ended_at",
    "duration_seconds",
    "created_at",
    "updated_at",
    "version",
)
MESSAGE_COLUMNS = (
    "message_id",
    "stream_id",
    "user_id",
    "username",
    "message",
    "message_type",
    "tip_amount",
    "alert",
    "created_at",
)
TIP_COLUMNS = (
    "tip_id",
    "stream_id",
    "from_user_id",
    "to_user_id",
    "amount",
    "platform_fee",
    "streamer_share",
    "currency",
    "message",
    "client_tip_id",
    "created_at",
)
SESSION_COLUMNS = ("session_id", "stream_id", "user_id", "joined_at", "left_at", "watch_seconds")
ACTION_COLUMNS = (
    "action_id",
    "stream_id",
    "action",
    "by_user",
    "user_id",
    "message_id",
    "seconds",
    "reason",
    "ends_at",
    "created_at",
)


Upsert = tuple[str, str]  # the statement's text before its rows, and after them


def _upsert(table: str, columns: tuple[str, ...], update: str) -> Upsert:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ", f" ON DUPLICATE KEY UPDATE {update}"


_guarded = ", ".join(f"{c} = IF(VALUES(version) >= version, VALUES({c}), {c})" for c in STREAM_COLUMNS[1:-1])
UPSERT_STREAMS = _upsert(
    "streams", STREAM_COLUMNS, _guarded + ", version = GREATEST(version, VALUES(version))"
)
UPSERT_MESSAGES = _upsert(
    "chat_messages",
    MESSAGE_COLUMNS,
    "message = VALUES(message), username = VALUES(username), "
    "tip_amount = VALUES(tip_amount), alert = VALUES(alert)",
)
UPSERT_TIPS = _upsert(
    "tips",
    TIP_COLUMNS,
    "amount = VALUES(amount), platform_fee = VALUES(platform_fee), streamer_share = VALUES(streamer_share)",
)
UPSERT_SESSIONS = _upsert(
    "viewing_sessions",
    SESSION_COLUMNS,
    "left_at = GREATEST(left_at, VALUES(left_at)), "
    "watch_seconds = GREATEST(watch_seconds, VALUES(watch_seconds))",
)

INSERT_ACTIONS = _upsert("moderation_actions", ACTION_COLUMNS, "action_id = action_id")
# A deleted message, and every message older than a clear, is marked, never erased.
MARK_DELETED = (
    "UPDATE chat_messages SET deleted_at = %s, deleted_by = %s "
    "WHERE message_id = %s AND stream_id = %s AND deleted_at IS NULL"
)
MARK_CLEARED = (
    "UPDATE chat_messages SET deleted_at = %s, deleted_by = %s "
    "WHERE stream_id = %s AND message_id < %s AND deleted_at IS NULL"
)
# Messages written after the deletion or clear that hides them (another flusher wrote the
# action first): marked from the recorded actions.
MODERATED_STREAMS = (
    "SELECT DISTINCT stream_id FROM moderation_actions WHERE stream_id IN ({}) "
    "AND action IN ('delete_message', 'clear_chat')"
)
MARK_LATE_DELETED = (
    "UPDATE chat_messages m JOIN moderation_actions a ON a.message_id = m.message_id "
    "AND a.stream_id = m.stream_id AND a.action = 'delete_message' "
    "SET m.deleted_at = a.created_at, m.deleted_by = a.by_user "
    "WHERE m.message_id IN ({}) AND m.deleted_at IS NULL"
)
MARK_LATE_CLEARED = (
    "UPDATE chat_messages m JOIN moderation_actions a ON a.stream_id = m.stream_id "
    "AND a.action = 'clear_chat' AND a.action_id > m.message_id "
    "SET m.deleted_at = a.created_at, m.deleted_by = a.by_user "
    "WHERE m.message_id IN ({}) AND m.deleted_at IS NULL"
)


def _literal(value: Any) -> str:
    """One SQL literal, as pymysql writes it, without its per-value dispatch for the common
    types. Strings are backslash-escaped: the pool's sql_mode (``hub.storage.db.INIT_COMMAND``) leaves
    NO_BACKSLASH_ESCAPES off, and the connection's charset is utf8mb4."""
    kind = type(value)
    if kind is str:
        return "'" + escape_string(value) + "'"
    if value is None:
        return "NULL"
    if kind is int:
        return str(value)
    if kind is Decimal:
        return format(value, "f")
    return str(escape_item(value, "utf8mb4"))


def _rows_sql(upsert: Upsert, rows: list[tuple[Any, ...]]) -> list[str]:
    """``INSERT … VALUES (…), (…) ON DUPLICATE KEY UPDATE …`` for many rows, as statements of
    at most about 1 MB each (built before a connection is taken, so the flusher builds the
    next batch's while MySQL writes the current one)."""
    head, tail = upsert
    statements, values, size = [], [], 0
    for row in rows:
        text = "(" + ",".join([_literal(v) for v in row]) + ")"
        values.append(text)
        size += len(text) + 1
        if size > 1_000_000:
            statements.append(head + ",".join(values) + tail)
            values, size = [], 0
    if values:
        statements.append(head + ",".join(values) + tail)
    return statements


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


def stream_row(d: dict[str, Any]) -> tuple[Any, ...]:
    duration = d.get("duration_seconds")
    return (
        col.uuid(d["stream_id"], "stream_id"),
        col.text(d["streamer_id"], "streamer_id", ID),
        col.text(d.get("streamer_name") or None, "streamer_name", NAME, null=True),
        col.text(d["title"], "title", TITLE),
        col.long_text(d.get("description") or "", "description"),
        col.text(d.get("thumbnail_url") or None, "thumbnail_url", URL, null=True),
        col.choice(d["status"], "status", STATUSES),
        col.text(d.get("category") or "", "category", CATEGORY),
        d.get("is_recording") == "1",
        col.text(d.get("recording_url") or None, "recording_url", URL, null=True),
        _count(d, "peak_viewers"),
        _count(d, "unique_viewers"),
        _count(d, "message_count"),
        _count(d, "tip_count"),
        _money(d, "tips_cents"),
        _money(d, "fees_cents"),
        col.ms_time(d.get("scheduled_at"), "scheduled_at", null=True),
        col.ms_time(d.get("started_at"), "started_at", null=True),
        col.ms_time(d.get("ended_at"), "ended_at", null=True),
        None if duration in (None, "") else col.whole(duration, "duration_seconds", 0, col.INT_UNSIGNED),
        col.ms_time(d["created_at"], "created_at"),
        col.ms_time(d["updated_at"], "updated_at"),
        _count(d, "version", col.BIGINT_UNSIGNED),
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


def message_row(d: dict[str, Any]) -> tuple[Any, ...]:
    return (
        col.uuid(d["message_id"], "message_id"),
        col.uuid(d["stream_id"], "stream_id"),
        col.text(d["user_id"], "user_id", ID),
        col.text(d.get("username"), "username", NAME, null=True),
        col.text(d["message"], "message", MESSAGE),
        col.choice(d["message_type"], "message_type", MESSAGE_TYPES),
        col.money(d.get("tip_amount"), "tip_amount"),
        _alert_json(d.get("alert")),
        col.iso_time(d["created_at"], "created_at"),
    )


def tip_row(d: dict[str, Any]) -> tuple[Any, ...]:
    amount = col.cents(d["amount_cents"], "amount_cents", 1)
    fee = col.cents(d["fee_cents"], "fee_cents", 0, amount)
    return (
        col.uuid(d["tip_id"], "tip_id"),
        col.uuid(d["stream_id"], "stream_id"),
        col.text(d["from_user_id"], "from_user_id", ID),
        col.text(d["to_user_id"], "to_user_id", ID),
        from_cents(amount),
        from_cents(fee),
        from_cents(amount - fee),
        col.code(d["currency"], "currency", 3),
        col.text(d.get("message") or "", "message", MESSAGE),
        col.text(d.get("client_tip_id"), "client_tip_id", CLIENT_TIP_ID, null=True),
        col.iso_time(d["created_at"], "created_at"),
    )


def session_row(d: dict[str, Any]) -> tuple[Any, ...]:
    return (
        col.uuid(d["session_id"], "session_id"),
        col.uuid(d["stream_id"], "stream_id"),
        col.text(d.get("user_id"), "user_id", ID, null=True),
        col.ms_time(d["joined_at"], "joined_at"),
        col.ms_time(d["left_at"], "left_at"),
        col.whole(d["watch_seconds"], "watch_seconds", 0, col.INT_UNSIGNED),
    )


def action_row(d: dict[str, Any]) -> tuple[Any, ...]:
    seconds = d.get("seconds")
    return (
        col.uuid(d["action_id"], "action_id"),
        col.uuid(d["stream_id"], "stream_id"),
        col.text(d["action"], "action", ACTION),
        col.text(d["by"], "by", ID),
        col.text(d.get("user_id"), "user_id", ID, null=True),
        col.uuid(d.get("message_id"), "message_id", null=True),
        None if seconds is None else col.whole(seconds, "seconds", 0, col.INT_UNSIGNED),
        col.text(d.get("reason"), "reason", MESSAGE, null=True),
        col.iso_time(d.get("until"), "until", null=True),
        col.iso_time(d["created_at"], "created_at"),
    )


@dataclass
class Batch:
    """Outbox records of one read, folded so each key appears once."""

    streams: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    messages: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    tips: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    sessions: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    actions: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    _statements: list[str] | None = field(default=None, repr=False)

    def add(self, kind: str, data: str | dict[str, Any]) -> None:
        """One record (its type and JSON data) as a row of the batch; ``BadRecord`` if it is
        malformed."""
        try:
            d = data if isinstance(data, dict) else orjson.loads(data)
            if not isinstance(d, dict):
                raise BadRecord("the record's data is not a JSON object")
            if kind == "stream":
                row = stream_row(d)
                old = self.streams.get(row[0])
                if old is None or old[-1] <= row[-1]:
                    self.streams[row[0]] = row
            elif kind == "message":
                self.messages[d["message_id"]] = message_row(d)
            elif kind == "tip":
                self.tips[d["tip_id"]] = tip_row(d)
            elif kind == "session":
                row = session_row(d)
                old = self.sessions.get(row[0])
                if old is None or old[4] <= row[4]:
                    self.sessions[row[0]] = row
            elif kind == "moderation":
                self.actions[d["action_id"]] = action_row(d)
            else:
                raise BadRecord(f"unknown record type {kind!r}")
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

    def statements(self) -> list[str]:
        """The batch's rows as SQL text (what the moderation actions mark comes after)."""
        if self._statements is None:
            self._statements = [
                statement
                for upsert, rows in (
                    (UPSERT_STREAMS, self.streams),
                    (UPSERT_MESSAGES, self.messages),
                    (UPSERT_TIPS, self.tips),
                    (UPSERT_SESSIONS, self.sessions),
                    (INSERT_ACTIONS, self.actions),
                )
                if rows
                for statement in _rows_sql(upsert, list(rows.values()))
            ]
        return self._statements

    def tables(self) -> dict[str, int]:
        """Rows of the batch by MySQL table."""
        return {
            "streams": len(self.streams),
            "chat_messages": len(self.messages),
            "tips": len(self.tips),
            "viewing_sessions": len(self.sessions),
            "moderation_actions": len(self.actions),
        }

    def __len__(self) -> int:
        return (
            len(self.streams) + len(self.messages) + len(self.tips) + len(self.sessions) + len(self.actions)
        )


class Store:
    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def write(self, batch: Batch) -> None:
        """All of the batch in one transaction, or nothing."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    for statement in batch.statements():
                        await cur.execute(statement)
                    await self._moderate(cur, batch)
                await conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise

    @staticmethod
    async def _moderate(cur: Any, batch: Batch) -> None:
        """Mark what the batch's actions (written with its rows) delete, in this batch and
        before it."""
        if batch.actions:
            rows = list(batch.actions.values())
            # row: action_id, stream_id, action, by_user, user_id, message_id, ..., created_at
            deleted = [(r[9], r[3], r[5], r[1]) for r in rows if r[2] == "delete_message"]
            cleared = [(r[9], r[3], r[1], r[0]) for r in rows if r[2] == "clear_chat"]
            if deleted:
                await cur.executemany(MARK_DELETED, deleted)
            if cleared:
                await cur.executemany(MARK_CLEARED, cleared)
        if not batch.messages:
            return
        streams = sorted({row[1] for row in batch.messages.values()})
        await cur.execute(MODERATED_STREAMS.format(", ".join(["%s"] * len(streams))), streams)
        moderated = {r["stream_id"] if isinstance(r, dict) else r[0] for r in await cur.fetchall()}
        ids = [row[0] for row in batch.messages.values() if row[1] in moderated]
        if ids:
            marks = ", ".join(["%s"] * len(ids))
            await cur.execute(MARK_LATE_DELETED.format(marks), ids)
            await cur.execute(MARK_LATE_CLEARED.format(marks), ids)
