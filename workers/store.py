"""Idempotent batch writes into MySQL: one transaction, one multi-row statement per table.

Every statement is ``INSERT ... ON DUPLICATE KEY UPDATE`` keyed by the record's UUID, so a
batch replayed after a crash changes nothing. Stream rows carry absolute figures and a
version; an older version never overwrites a newer one.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiomysql
import orjson
from pymysql.converters import escape_item, escape_string

from hub.codec import parse_iso
from hub.money import decimal_json, exact_decimal, from_cents

STREAM_COLUMNS = (
    "stream_id", "streamer_id", "streamer_name", "title", "description", "thumbnail_url",
    "status", "category", "is_recording", "recording_url", "peak_viewers", "unique_viewers",
    "message_count", "tip_count", "tips_total", "platform_fees_total", "scheduled_at",
    "started_at", "ended_at", "duration_seconds", "created_at", "updated_at", "version",
)
MESSAGE_COLUMNS = ("message_id", "stream_id", "user_id", "username", "message", "message_type",
                   "tip_amount", "alert", "created_at")
TIP_COLUMNS = ("tip_id", "stream_id", "from_user_id", "to_user_id", "amount", "platform_fee",
               "streamer_share", "currency", "message", "client_tip_id", "created_at")
SESSION_COLUMNS = ("session_id", "stream_id", "user_id", "joined_at", "left_at", "watch_seconds")
ACTION_COLUMNS = ("action_id", "stream_id", "action", "by_user", "user_id", "message_id", "seconds",
                  "reason", "ends_at", "created_at")


Upsert = tuple[str, str]  # the statement's text before its rows, and after them


def _upsert(table: str, columns: tuple[str, ...], update: str) -> Upsert:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ", f" ON DUPLICATE KEY UPDATE {update}"


_guarded = ", ".join(f"{c} = IF(VALUES(version) >= version, VALUES({c}), {c})"
                     for c in STREAM_COLUMNS[1:-1])
UPSERT_STREAMS = _upsert("streams", STREAM_COLUMNS,
                         _guarded + ", version = GREATEST(version, VALUES(version))")
UPSERT_MESSAGES = _upsert("chat_messages", MESSAGE_COLUMNS,
                          "message = VALUES(message), username = VALUES(username), "
                          "tip_amount = VALUES(tip_amount), alert = VALUES(alert)")
UPSERT_TIPS = _upsert("tips", TIP_COLUMNS,
                      "amount = VALUES(amount), platform_fee = VALUES(platform_fee), "
                      "streamer_share = VALUES(streamer_share)")
UPSERT_SESSIONS = _upsert("viewing_sessions", SESSION_COLUMNS,
                          "left_at = GREATEST(left_at, VALUES(left_at)), "
                          "watch_seconds = GREATEST(watch_seconds, VALUES(watch_seconds))")

INSERT_ACTIONS = _upsert("moderation_actions", ACTION_COLUMNS, "action_id = action_id")
# A deleted message, and every message older than a clear, is marked, never erased.
MARK_DELETED = ("UPDATE chat_messages SET deleted_at = %s, deleted_by = %s "
                "WHERE message_id = %s AND stream_id = %s AND deleted_at IS NULL")
MARK_CLEARED = ("UPDATE chat_messages SET deleted_at = %s, deleted_by = %s "
                "WHERE stream_id = %s AND message_id < %s AND deleted_at IS NULL")
# Messages written after the deletion or clear that hides them (another flusher wrote the
# action first): marked from the recorded actions.
MODERATED_STREAMS = ("SELECT DISTINCT stream_id FROM moderation_actions WHERE stream_id IN ({}) "
                     "AND action IN ('delete_message', 'clear_chat')")
MARK_LATE_DELETED = (
    "UPDATE chat_messages m JOIN moderation_actions a ON a.message_id = m.message_id "
    "AND a.stream_id = m.stream_id AND a.action = 'delete_message' "
    "SET m.deleted_at = a.created_at, m.deleted_by = a.by_user "
    "WHERE m.message_id IN ({}) AND m.deleted_at IS NULL")
MARK_LATE_CLEARED = (
    "UPDATE chat_messages m JOIN moderation_actions a ON a.stream_id = m.stream_id "
    "AND a.action = 'clear_chat' AND a.action_id > m.message_id "
    "SET m.deleted_at = a.created_at, m.deleted_by = a.by_user "
    "WHERE m.message_id IN ({}) AND m.deleted_at IS NULL")


class BadRecord(ValueError):
    """An outbox entry that cannot be turned into a row."""


def _dt(ms: Any) -> datetime | None:
    if ms in (None, ""):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).replace(tzinfo=None)


_HUB_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _iso(text: str) -> datetime | str:
    """An ISO 8601 time for a DATETIME(3) column. The hub's own form (``…T…\\.mmmZ``) becomes
    MySQL's text directly (strict mode refuses an impossible date); any other is parsed."""
    if not isinstance(text, str):
        raise ValueError("a time must be an ISO 8601 string")
    if _HUB_ISO.fullmatch(text):
        return f"{text[:10]} {text[11:23]}"
    return datetime.fromtimestamp(parse_iso(text) / 1000, tz=UTC).replace(tzinfo=None)


def _literal(value: Any) -> str:
    """One SQL literal, as pymysql writes it, without its per-value dispatch for the common
    types. Strings are backslash-escaped: the pool's sql_mode (``hub.db.INIT_COMMAND``) leaves
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


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _exact(value: Any) -> Decimal | None:
    """A money value from JSON (a float whose repr is the text that was sent), exactly."""
    if value is None:
        return None
    return Decimal(repr(value) if isinstance(value, float) else str(value)).quantize(Decimal("0.01"))


def stream_row(d: dict[str, Any]) -> tuple[Any, ...]:
    return (
        d["stream_id"], d["streamer_id"], d.get("streamer_name") or None, d["title"],
        d.get("description") or "", d.get("thumbnail_url") or None, d["status"],
        d.get("category") or "", d.get("is_recording") == "1", d.get("recording_url") or None,
        _int(d.get("peak_viewers")) or 0, _int(d.get("unique_viewers")) or 0,
        _int(d.get("message_count")) or 0, _int(d.get("tip_count")) or 0,
        from_cents(_int(d.get("tips_cents")) or 0), from_cents(_int(d.get("fees_cents")) or 0),
        _dt(d.get("scheduled_at")), _dt(d.get("started_at")), _dt(d.get("ended_at")),
        _int(d.get("duration_seconds")), _dt(d["created_at"]), _dt(d["updated_at"]),
        _int(d.get("version")) or 0,
    )


def _alert_json(alert: Any) -> str | None:
    """An alert for its JSON column, its price written as the exact decimal text."""
    if alert is None:
        return None
    if not isinstance(alert, dict):
        raise ValueError("an alert must be an object")
    price = alert.get("price")
    if price is not None:
        alert = dict(alert, price=decimal_json(exact_decimal(price)))
    return orjson.dumps(alert).decode()


def message_row(d: dict[str, Any]) -> tuple[Any, ...]:
    return (
        d["message_id"], d["stream_id"], d["user_id"], d.get("username"), d["message"],
        d["message_type"], _exact(d.get("tip_amount")), _alert_json(d.get("alert")),
        _iso(d["created_at"]),
    )


def tip_row(d: dict[str, Any]) -> tuple[Any, ...]:
    amount, fee = int(d["amount_cents"]), int(d["fee_cents"])
    return (
        d["tip_id"], d["stream_id"], d["from_user_id"], d["to_user_id"], from_cents(amount),
        from_cents(fee), from_cents(amount - fee), d["currency"], d.get("message") or "",
        d.get("client_tip_id"), _iso(d["created_at"]),
    )


def session_row(d: dict[str, Any]) -> tuple[Any, ...]:
    return (
        d["session_id"], d["stream_id"], d.get("user_id"), _dt(d["joined_at"]), _dt(d["left_at"]),
        int(d["watch_seconds"]),
    )


def action_row(d: dict[str, Any]) -> tuple[Any, ...]:
    seconds = d.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        raise ValueError("seconds must be a whole number")
    until = d.get("until")
    return (
        d["action_id"], d["stream_id"], d["action"], d["by"], d.get("user_id"), d.get("message_id"),
        seconds, d.get("reason"), None if until is None else _iso(until), _iso(d["created_at"]),
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
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError,
                orjson.JSONDecodeError) as exc:
            raise BadRecord(f"{type(exc).__name__}: {exc}") from exc

    def statements(self) -> list[str]:
        """The batch's rows as SQL text (what the moderation actions mark comes after)."""
        if self._statements is None:
            self._statements = [
                statement
                for upsert, rows in ((UPSERT_STREAMS, self.streams), (UPSERT_MESSAGES, self.messages),
                                     (UPSERT_TIPS, self.tips), (UPSERT_SESSIONS, self.sessions),
                                     (INSERT_ACTIONS, self.actions))
                if rows
                for statement in _rows_sql(upsert, list(rows.values()))
            ]
        return self._statements

    def tables(self) -> dict[str, int]:
        """Rows of the batch by MySQL table."""
        return {"streams": len(self.streams), "chat_messages": len(self.messages), "tips": len(self.tips),
                "viewing_sessions": len(self.sessions), "moderation_actions": len(self.actions)}

    def __len__(self) -> int:
        return (len(self.streams) + len(self.messages) + len(self.tips) + len(self.sessions)
                + len(self.actions))


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
