"""MySQL: the connection pool, the schema migration, and the web worker's history reads.

Writes happen only in the flusher (``workers/store.py``), from the outbox.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiomysql
import pymysql

from hub.settings import MySQLSettings

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent / "sql"

# UTC everywhere, and strict mode so that a value out of range is an error, never clamped.
INIT_COMMAND = "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"

MESSAGE_COLUMNS = (
    "message_id, stream_id, user_id, username, message, message_type, tip_amount, alert, created_at"
)


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


def migrate(mysql: MySQLSettings, sql_dir: Path = SQL_DIR) -> list[str]:
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
            for path in sorted(sql_dir.glob("*.sql")):
                if path.name in done:
                    continue
                for statement in _statements(path.read_text()):
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                applied.append(path.name)
    finally:
        conn.close()
    return applied


def _statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class History:
    """Reads of what the flusher has written: older chat pages, ended streams, a streamer's list."""

    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of one read, its transaction ended at once."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            rows = await cur.fetchall()
            await conn.commit()
            return list(rows)

    async def stream(self, stream_id: str) -> dict[str, Any] | None:
        rows = await self.fetch("SELECT * FROM streams WHERE stream_id = %s", (stream_id,))
        return rows[0] if rows else None

    async def streamer_streams(self, user_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT * FROM streams WHERE streamer_id = %s"
        args: tuple[Any, ...] = (user_id,)
        if status:
            sql += " AND status = %s"
            args += (status,)
        return await self.fetch(sql + " ORDER BY created_at DESC LIMIT %s", (*args, limit))

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
        return await self.fetch(sql + " ORDER BY message_id DESC LIMIT %s", (*args, limit))

    async def has_message(self, stream_id: str, message_id: str) -> bool:
        rows = await self.fetch(
            "SELECT 1 FROM chat_messages WHERE message_id = %s AND stream_id = %s AND deleted_at IS NULL",
            (message_id, stream_id),
        )
        return bool(rows)

    async def moderation_actions(self, stream_id: str, limit: int) -> list[dict[str, Any]]:
        """The stream's newest ``limit`` moderation actions, newest first."""
        return await self.fetch(
            "SELECT * FROM moderation_actions WHERE stream_id = %s ORDER BY action_id DESC LIMIT %s",
            (stream_id, limit),
        )

    async def ping(self) -> None:
        await self.fetch("SELECT 1", ())
