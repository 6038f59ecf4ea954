"""hub.storage.mysql: what the flusher writes comes back from MySQL as it was sent, in either
``sql_mode`` (with or without NO_BACKSLASH_ESCAPES), one statement per table per batch."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import pymysql
import pytest
import redis.asyncio as aioredis

from hub.settings import Settings
from hub.storage.keys import Keys
from hub.storage.mysql import Rows, Writer, create_pool, literal
from tests.conftest import unique
from workers.flusher import Flusher

CREATED = "2025-01-02T03:04:05.678Z"
CREATED_MS = 1735787045678
MODES = {"default": "", "no_backslash_escapes": ",NO_BACKSLASH_ESCAPES"}
# Every character MySQL or its clients treat specially, SQL that must stay text, astral emoji.
SPECIAL = "'\"\\\x00\n\r\x1a\t%_`😀🏳️‍🌈é \\' \\\\ '' \\0 \\n x'; DROP TABLE streams; -- /*"
# The same without a backslash or NUL: quoted as it is, with the quotes doubled.
QUOTED = "it's ''\"quoted\"'' 100%_ `ticks` \n\r\x1a\t 😀 é"


def _mysql_connection(settings: Settings, mode: str) -> pymysql.Connection:
    """A connection of its own whose session sql_mode gains ``mode``."""
    m = settings.mysql
    conn = pymysql.connect(
        host=m.host, port=m.port, user=m.user, password=m.password, charset="utf8mb4", autocommit=True
    )
    with conn.cursor() as cur:
        cur.execute(f"SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, '{mode}')")
    return conn


@pytest.fixture(params=sorted(MODES))
async def flusher_in_mode(
    request: pytest.FixtureRequest, settings: Settings, rds: aioredis.Redis
) -> AsyncIterator[Flusher]:
    """A flusher whose one MySQL session runs in the sql_mode of the parameter."""
    pool = await create_pool(settings.mysql, maxsize=1)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(f"SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, '{MODES[request.param]}')")
    flusher = Flusher(settings, rds, Writer(pool), consumer=unique("mode-flusher"))
    await flusher.ensure_group()
    yield flusher
    async with pool.acquire() as conn, conn.cursor() as cur:  # the session kept its mode throughout
        await cur.execute("SELECT @@SESSION.sql_mode AS mode")
        assert ("NO_BACKSLASH_ESCAPES" in (await cur.fetchone())["mode"]) == bool(MODES[request.param])
    pool.close()
    await pool.wait_closed()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_literal_reads_back_as_itself_in_either_mode(mode: str, settings: Settings) -> None:
    texts = [chr(c) for c in range(0x180)] + [SPECIAL, QUOTED, "", "\\", "'", "\\'", "''", "😀\x00😀"]
    others = [None, 0, -7, 2**64 - 1, Decimal("12.30"), Decimal("-0.01"), True, False]
    others += [datetime(2025, 1, 2, 3, 4, 5, 678000), datetime(1000, 1, 1)]
    conn = _mysql_connection(settings, MODES[mode])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT " + ", ".join(literal(value) for value in texts + others))
            row = cur.fetchone()
    finally:
        conn.close()
    assert list(row[: len(texts)]) == texts
    numbers = [None, 0, -7, 2**64 - 1, Decimal("12.30"), Decimal("-0.01"), 1, 0]
    times = ["2025-01-02 03:04:05.678000", "1000-01-01 00:00:00"]  # the texts a DATETIME(3) reads
    assert list(row[len(texts) :]) == [*numbers, *times]


def test_a_value_of_no_known_type_is_refused() -> None:
    for value in (1.5, b"bytes", datetime.fromisoformat("2025-01-02T03:04:05+00:00"), ["x"]):
        with pytest.raises(TypeError):
            literal(value)


def _records(sid: str, text: str) -> dict[str, dict[str, Any]]:
    """One record of each kind with ``text`` in every text column (cut to the column)."""
    mid = str(uuid.uuid4())
    return {
        "stream": {
            "stream_id": sid,
            "streamer_id": text,
            "streamer_name": text,
            "title": text,
            "description": text * 3,
            "thumbnail_url": "https://example.com/" + text,
            "status": "LIVE",
            "category": text[:64],
            "started_at": str(CREATED_MS),
            "created_at": str(CREATED_MS),
            "updated_at": str(CREATED_MS),
            "version": "1",
        },
        "message": {
            "message_id": mid,
            "stream_id": sid,
            "user_id": text,
            "username": text,
            "message": text,
            "message_type": "ALERT",
            "tip_amount": None,
            "alert": {"symbol": text, "side": "buy", "price": 1.25},
            "created_at": CREATED,
        },
        "tip": {
            "tip_id": str(uuid.uuid4()),
            "stream_id": sid,
            "from_user_id": text,
            "to_user_id": text,
            "amount_cents": 500,
            "fee_cents": 25,
            "currency": "USD",
            "message": text,
            "client_tip_id": text[:64],
            "created_at": CREATED,
        },
        "session": {
            "session_id": str(uuid.uuid4()),
            "stream_id": sid,
            "user_id": text,
            "joined_at": CREATED_MS,
            "left_at": CREATED_MS + 5000,
            "watch_seconds": 5,
        },
        "moderation": {
            "action_id": str(uuid.uuid4()),
            "stream_id": sid,
            "action": "delete_message",
            "by": text,  # written by the mark of the deleted message too, as a parameter
            "user_id": text,
            "message_id": mid,
            "reason": text,
            "created_at": "2025-01-02T03:04:06.000Z",
        },
    }


@pytest.mark.parametrize("text", [SPECIAL, QUOTED], ids=["backslash_and_nul", "quotes_only"])
async def test_text_of_every_column_is_written_as_sent_in_either_mode(
    text: str,
    flusher_in_mode: Flusher,
    rds: aioredis.Redis,
    settings: Settings,
    sql: Callable[..., list[dict[str, Any]]],
) -> None:
    sid = str(uuid.uuid4())
    records = _records(sid, text)
    outbox = Keys.of_settings(settings).of(sid).outbox
    for kind, record in records.items():
        await rds.xadd(outbox, {"t": kind, "d": orjson.dumps(record).decode()})
    await flusher_in_mode.drain()

    [stream] = sql("SELECT * FROM streams WHERE stream_id = %s", sid)
    assert [stream[c] for c in ("streamer_id", "streamer_name", "title", "description", "category")] == [
        text,
        text,
        text,
        text * 3,
        text[:64],
    ]
    assert stream["thumbnail_url"] == "https://example.com/" + text
    [message] = sql("SELECT * FROM chat_messages WHERE stream_id = %s", sid)
    assert [message[c] for c in ("user_id", "username", "message", "deleted_by")] == [text] * 4
    assert orjson.loads(message["alert"]) == {"symbol": text, "side": "buy", "price": 1.25}
    [tip] = sql("SELECT * FROM tips WHERE stream_id = %s", sid)
    assert [tip[c] for c in ("from_user_id", "to_user_id", "message", "client_tip_id")] == [text] * 3 + [
        text[:64]
    ]
    [session] = sql("SELECT user_id FROM viewing_sessions WHERE stream_id = %s", sid)
    assert session["user_id"] == text
    [action] = sql("SELECT by_user, user_id, reason FROM moderation_actions WHERE stream_id = %s", sid)
    assert action == {"by_user": text, "user_id": text, "reason": text}


async def test_a_lone_surrogate_is_dead_lettered_and_the_rest_written(
    flusher: Flusher, rds: aioredis.Redis, settings: Settings, sql: Callable[..., list[dict[str, Any]]]
) -> None:
    sid = str(uuid.uuid4())
    good = _records(sid, QUOTED)["message"]
    bad = orjson.dumps(dict(good, message_id=str(uuid.uuid4()), message="@")).decode().replace("@", "\\ud800")
    keys = Keys.of_settings(settings).of(sid)
    bad_id = await rds.xadd(keys.outbox, {"t": "message", "d": bad})
    await rds.xadd(keys.outbox, {"t": "message", "d": orjson.dumps(good).decode()})
    await flusher.drain()
    assert [r["message"] for r in sql("SELECT message FROM chat_messages WHERE stream_id = %s", sid)] == [
        QUOTED
    ]
    assert [f["d"] for _, f in await rds.xrange(keys.outbox_dead) if f.get("entry") == bad_id] == [bad]


async def test_a_batch_is_one_statement_per_table_whatever_its_size(settings: Settings) -> None:
    from workers.batch import Batch

    sid = str(uuid.uuid4())
    batch = Batch()
    for n in range(300):
        records = _records(sid, f"{QUOTED} {n}")
        for kind in ("message", "tip"):
            batch.add(kind, orjson.dumps(dict(records[kind], stream_id=sid)).decode())
    assert batch.tables()["chat_messages"] == batch.tables()["tips"] == 300
    pool = await create_pool(settings.mysql, maxsize=1)
    try:
        inserts = await _inserts(pool)
        await Writer(pool).write(batch)
        assert await _inserts(pool) - inserts == 2
        await Writer(pool).write(Rows())  # nothing to write: no statement
        assert await _inserts(pool) - inserts == 2
    finally:
        pool.close()
        await pool.wait_closed()


async def _inserts(pool: Any) -> int:
    """The INSERT statements the pool's one session has run."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SHOW SESSION STATUS LIKE 'Com_insert'")
        return int((await cur.fetchone())["Value"])
