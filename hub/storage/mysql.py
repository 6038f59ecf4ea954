"""MySQL: every statement against the schema of ``sql/*.sql``, beside it.

- the connection pool and the schema's migration (``python -m hub migrate``);
- ``History``: the web worker's reads (older chat pages, ended streams, a streamer's list, and
  what a Redis that lost its data is healed from);
- the rows the flusher writes (one ``NamedTuple`` per table, its fields named and ordered like
  the table's columns) and ``Writer``, which writes them from the outbox.

No text of a record is ever read as SQL. Reads and the few moderation updates pass their
values as parameters, which the driver quotes for the connection's own ``sql_mode``. The rows of
a batch go as one multi-row ``INSERT … ON DUPLICATE KEY UPDATE`` per table (split only past
about 1 MB), one round trip each, its text built before a connection is taken (so the flusher
builds the next batch's while MySQL writes the current one) by ``literal``, whose every literal
MySQL reads the same with or without ``NO_BACKSLASH_ESCAPES``. (``executemany`` sends the same
statements, but quotes each value through the driver while the connection waits: measured, it
took a batch of 2,000 chat messages from about 40-60 ms to write to 70-110 ms.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, NamedTuple

import aiomysql
import pymysql

from hub.settings import MySQLSettings

# The migrations, read from the installed package (not the working directory), applied by name order.
SQL_DIR = resources.files(__package__) / "sql"

# UTC everywhere, and strict mode so that a value out of range is an error, never clamped.
INIT_COMMAND = "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"


async def create_pool(mysql: MySQLSettings, maxsize: int = 5) -> aiomysql.Pool:
    return await aiomysql.create_pool(
        host=mysql.host,
        port=mysql.port,
        user=mysql.user,
        password=mysql.password,
        db=mysql.database,
        minsize=1,
        maxsize=maxsize,
        autocommit=False,
        charset="utf8mb4",
        cursorclass=aiomysql.DictCursor,
        init_command=INIT_COMMAND,
        connect_timeout=5,
        pool_recycle=3600,
    )


# -- the schema -------------------------------------------------------------------------------


def migrate(mysql: MySQLSettings, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Create the database and apply every ``sql/*.sql`` not applied yet; idempotent."""
    conn = pymysql.connect(
        host=mysql.host,
        port=mysql.port,
        user=mysql.user,
        password=mysql.password,
        charset="utf8mb4",
        autocommit=True,
        connect_timeout=5,
    )
    applied: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS `{mysql.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
            cur.execute(f"USE `{mysql.database}`")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name VARCHAR(191) NOT NULL PRIMARY KEY,"
                " applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))"
            )
            cur.execute("SELECT name FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for path in sorted(sql_dir.iterdir(), key=lambda p: p.name):
                if not path.name.endswith(".sql") or path.name in done:
                    continue
                for statement in _statements(path.read_text(encoding="utf-8")):
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                applied.append(path.name)
    finally:
        conn.close()
    return applied


def _statements(text: str) -> list[str]:
    """A migration file's statements: its ``--`` comment lines dropped, split at semicolons."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# -- the rows the flusher writes ----------------------------------------------------------------
# A time of a record is a datetime, or MySQL's own text of one ("YYYY-MM-DD hh:mm:ss.fff"), naive UTC.
Time = datetime | str


class StreamRow(NamedTuple):
    stream_id: str
    streamer_id: str
    streamer_name: str | None
    title: str
    description: str
    thumbnail_url: str | None
    status: str
    category: str
    is_recording: bool
    recording_url: str | None
    peak_viewers: int
    unique_viewers: int
    message_count: int
    tip_count: int
    tips_total: Decimal
    platform_fees_total: Decimal
    scheduled_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: int | None
    created_at: datetime
    updated_at: datetime
    version: int


class MessageRow(NamedTuple):
    message_id: str
    stream_id: str
    user_id: str
    username: str | None
    message: str
    message_type: str
    tip_amount: Decimal | None
    alert: str | None  # JSON
    created_at: Time


class TipRow(NamedTuple):
    tip_id: str
    stream_id: str
    from_user_id: str
    to_user_id: str
    amount: Decimal
    platform_fee: Decimal
    streamer_share: Decimal
    currency: str
    message: str
    client_tip_id: str | None
    created_at: Time


class SessionRow(NamedTuple):
    session_id: str
    stream_id: str
    user_id: str | None
    joined_at: datetime
    left_at: datetime
    watch_seconds: int


class ActionRow(NamedTuple):
    action_id: str
    stream_id: str
    action: str
    by_user: str
    user_id: str | None
    message_id: str | None
    seconds: int | None
    reason: str | None
    ends_at: Time | None
    created_at: Time


@dataclass
class Rows:
    """The rows of one transaction by table, each keyed by its primary key (so once each)."""

    streams: dict[str, StreamRow] = field(default_factory=dict)
    messages: dict[str, MessageRow] = field(default_factory=dict)
    tips: dict[str, TipRow] = field(default_factory=dict)
    sessions: dict[str, SessionRow] = field(default_factory=dict)
    actions: dict[str, ActionRow] = field(default_factory=dict)
    _statements: list[str] | None = field(default=None, init=False, repr=False)

    def statements(self) -> list[str]:
        """The rows as SQL text: one upsert per table with rows (more past about 1 MB), in the
        order ``Writer`` sends them; built once, the rows complete."""
        if self._statements is None:
            self._statements = [
                statement
                for upsert, table in (
                    (UPSERT_STREAMS, self.streams),
                    (UPSERT_MESSAGES, self.messages),
                    (UPSERT_TIPS, self.tips),
                    (UPSERT_SESSIONS, self.sessions),
                    (INSERT_ACTIONS, self.actions),
                )
                if table
                for statement in upsert.statements(table.values())
            ]
        return self._statements

    def tables(self) -> dict[str, int]:
        """How many rows go to each MySQL table."""
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


def literal(value: object) -> str:
    """A row's value as an SQL literal that MySQL reads the same in every ``sql_mode``.

    A string is quoted with each ``'`` doubled, which MySQL reads as one ``'`` with and without
    ``NO_BACKSLASH_ESCAPES``; every other character inside the quotes is then taken as it is,
    but for a backslash (an escape only without that mode) and NUL: a string holding either is
    written in hex instead, as UTF-8. Numbers, NULL and times hold neither. Other types are
    refused rather than guessed at."""
    if type(value) is str:
        if "\\" in value or "\x00" in value:
            return "_utf8mb4 X'" + value.encode().hex() + "'"
        return "'" + value.replace("'", "''") + "'"
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    if type(value) is Decimal:
        return format(value, "f")
    if type(value) is bool:
        return "1" if value else "0"
    if type(value) is datetime and value.tzinfo is None:
        return "'" + value.isoformat(" ") + "'"
    raise TypeError(f"no SQL literal for {value!r}")


STATEMENT_SIZE = 1_000_000  # characters of values: far within MySQL's max_allowed_packet (16 MB)


class Upsert(NamedTuple):
    """An ``INSERT … ON DUPLICATE KEY UPDATE`` of many rows: its text before the rows, and after."""

    head: str
    tail: str

    @classmethod
    def of(cls, table: str, columns: tuple[str, ...], update: str) -> Upsert:
        return cls(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ", f" ON DUPLICATE KEY UPDATE {update}"
        )

    def statements(self, rows: Iterable[tuple[object, ...]]) -> list[str]:
        """The statements that write these rows: one, or one per STATEMENT_SIZE of values."""
        statements, values, size = [], [], 0
        for row in rows:
            text = "(" + ",".join([literal(v) for v in row]) + ")"
            values.append(text)
            size += len(text) + 1
            if size > STATEMENT_SIZE:
                statements.append(self.head + ",".join(values) + self.tail)
                values, size = [], 0
        if values:
            statements.append(self.head + ",".join(values) + self.tail)
        return statements


# Every write is keyed by the record's UUID, so a batch replayed after a crash changes nothing.
# A stream row carries absolute figures and a version: an older version never overwrites a newer.
_guarded = ", ".join(
    f"{c} = IF(VALUES(version) >= version, VALUES({c}), {c})" for c in StreamRow._fields[1:-1]
)
UPSERT_STREAMS = Upsert.of(
    "streams", StreamRow._fields, _guarded + ", version = GREATEST(version, VALUES(version))"
)
UPSERT_MESSAGES = Upsert.of(
    "chat_messages",
    MessageRow._fields,
    "message = VALUES(message), username = VALUES(username), "
    "tip_amount = VALUES(tip_amount), alert = VALUES(alert)",
)
UPSERT_TIPS = Upsert.of(
    "tips",
    TipRow._fields,
    "amount = VALUES(amount), platform_fee = VALUES(platform_fee), streamer_share = VALUES(streamer_share)",
)
UPSERT_SESSIONS = Upsert.of(
    "viewing_sessions",
    SessionRow._fields,
    "left_at = GREATEST(left_at, VALUES(left_at)), "
    "watch_seconds = GREATEST(watch_seconds, VALUES(watch_seconds))",
)
INSERT_ACTIONS = Upsert.of("moderation_actions", ActionRow._fields, "action_id = action_id")

# A deleted message, and every message older than a clear, is marked, never erased. Both take an
# ActionRow's fields by name.
MARK_DELETED = (
    "UPDATE chat_messages SET deleted_at = %(created_at)s, deleted_by = %(by_user)s "
    "WHERE message_id = %(message_id)s AND stream_id = %(stream_id)s AND deleted_at IS NULL"
)
MARK_CLEARED = (
    "UPDATE chat_messages SET deleted_at = %(created_at)s, deleted_by = %(by_user)s "
    "WHERE stream_id = %(stream_id)s AND message_id < %(action_id)s AND deleted_at IS NULL"
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


def _marks(values: Sequence[object]) -> str:
    """The ``%s, %s, …`` of an ``IN (…)`` list of these values."""
    return ", ".join(["%s"] * len(values))


class Writer:
    """The flusher's writes: a batch of rows in one transaction, one round trip per table."""

    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def write(self, rows: Rows) -> None:
        """All of the rows in one transaction, or nothing: their upserts (``Rows.statements``,
        built already if the caller had time), then the marks of their moderation actions."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    for statement in rows.statements():
                        await cur.execute(statement)
                    await self._moderate(cur, rows)
                await conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise

    @staticmethod
    async def _moderate(cur: Any, rows: Rows) -> None:
        """Mark what the rows' actions (written with them) delete, in these rows and before
        them; and the rows' messages that actions written earlier delete."""
        actions = rows.actions.values()
        deleted = [a._asdict() for a in actions if a.action == "delete_message"]
        cleared = [a._asdict() for a in actions if a.action == "clear_chat"]
        if deleted:
            await cur.executemany(MARK_DELETED, deleted)
        if cleared:
            await cur.executemany(MARK_CLEARED, cleared)
        if not rows.messages:
            return
        streams = sorted({m.stream_id for m in rows.messages.values()})
        await cur.execute(MODERATED_STREAMS.format(_marks(streams)), streams)
        moderated = {r["stream_id"] for r in await cur.fetchall()}
        ids = [m.message_id for m in rows.messages.values() if m.stream_id in moderated]
        if ids:
            await cur.execute(MARK_LATE_DELETED.format(_marks(ids)), ids)
            await cur.execute(MARK_LATE_CLEARED.format(_marks(ids)), ids)


# -- the web worker's reads -----------------------------------------------------------------------

MESSAGE_COLUMNS = ", ".join(MessageRow._fields)
UNFINISHED = "SELECT * FROM streams WHERE status IN ('LIVE', 'SCHEDULED')"
UNFINISHED_OF = "SELECT * FROM streams WHERE stream_id IN ({}) AND status IN ('LIVE', 'SCHEDULED')"
MESSAGE_COUNTS = (
    "SELECT stream_id, COUNT(*) AS n FROM chat_messages WHERE stream_id IN ({}) GROUP BY stream_id"
)
TIP_SUMS = (
    "SELECT stream_id, COUNT(*) AS n, SUM(amount) AS amount, SUM(platform_fee) AS fees "
    "FROM tips WHERE stream_id IN ({}) GROUP BY stream_id"
)
# Everyone who chatted or tipped had joined (an alert is the one message sent without joining);
# an anonymous viewer is known only by its viewing sessions, each counted as one.
VIEWERS = (
    "SELECT stream_id, CONCAT('u:', user_id) AS viewer FROM viewing_sessions "
    "WHERE stream_id IN ({0}) AND user_id IS NOT NULL "
    "UNION SELECT stream_id, CONCAT('a:', session_id) FROM viewing_sessions "
    "WHERE stream_id IN ({0}) AND user_id IS NULL "
    "UNION SELECT stream_id, CONCAT('u:', user_id) FROM chat_messages "
    "WHERE stream_id IN ({0}) AND message_type <> 'ALERT'"
)


class TipSums(NamedTuple):
    """A stream's tips as MySQL sums them."""

    tips: int = 0
    amount: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)


class History:
    """Reads of what the flusher has written: older chat pages, ended streams, a streamer's list,
    and the rows a stream whose live state Redis lost is healed from."""

    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of one read, its transaction ended at once."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, tuple(args))
            rows = await cur.fetchall()
            await conn.commit()
            return list(rows)

    async def stream(self, stream_id: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT * FROM streams WHERE stream_id = %s", (stream_id,))
        return rows[0] if rows else None

    async def streamer_streams(self, user_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT * FROM streams WHERE streamer_id = %s"
        args: tuple[Any, ...] = (user_id,)
        if status:
            sql += " AND status = %s"
            args += (status,)
        return await self._fetch(sql + " ORDER BY created_at DESC LIMIT %s", (*args, limit))

    async def messages_before(
        self, stream_id: str, before: str | None, limit: int, after: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` kept messages older than ``before`` (and newer than ``after``),
        newest first."""
        sql = f"SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE stream_id = %s AND deleted_at IS NULL"
        args: tuple[Any, ...] = (stream_id,)
        if before:
            sql += " AND message_id < %s"
            args += (before,)
        if after:
            sql += " AND message_id > %s"
            args += (after,)
        return await self._fetch(sql + " ORDER BY message_id DESC LIMIT %s", (*args, limit))

    async def has_message(self, stream_id: str, message_id: str) -> bool:
        rows = await self._fetch(
            "SELECT 1 FROM chat_messages WHERE message_id = %s AND stream_id = %s AND deleted_at IS NULL",
            (message_id, stream_id),
        )
        return bool(rows)

    async def moderation_actions(self, stream_id: str, limit: int) -> list[dict[str, Any]]:
        """The stream's newest ``limit`` moderation actions, newest first."""
        return await self._fetch(
            "SELECT * FROM moderation_actions WHERE stream_id = %s ORDER BY action_id DESC LIMIT %s",
            (stream_id, limit),
        )

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    # -- what a lost Redis is healed from --------------------------------------------------------

    async def unfinished_streams(self, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The streams MySQL holds as LIVE or SCHEDULED (every one, or those of ``ids``)."""
        if ids is None:
            return await self._fetch(UNFINISHED)
        return await self._fetch(UNFINISHED_OF.format(_marks(ids)), ids) if ids else []

    async def message_counts(self, ids: Sequence[str]) -> dict[str, int]:
        """How many chat messages each of these streams has (deleted ones too); none: absent."""
        rows = await self._fetch(MESSAGE_COUNTS.format(_marks(ids)), ids) if ids else []
        return {r["stream_id"]: int(r["n"]) for r in rows}

    async def tip_sums(self, ids: Sequence[str]) -> dict[str, TipSums]:
        """The tips of each of these streams, counted and summed; none: absent."""
        rows = await self._fetch(TIP_SUMS.format(_marks(ids)), ids) if ids else []
        return {r["stream_id"]: TipSums(int(r["n"]), r["amount"], r["fees"]) for r in rows}

    async def viewers(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """The viewers known of each of these streams (``u:USER``, or ``a:SESSION`` for an
        anonymous one); none: absent."""
        rows = await self._fetch(VIEWERS.format(_marks(ids)), [*ids, *ids, *ids]) if ids else []
        found: dict[str, list[str]] = {}
        for r in rows:
            found.setdefault(r["stream_id"], []).append(r["viewer"])
        return found
