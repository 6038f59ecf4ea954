"""Outbox -> flusher -> MySQL when something fails: an error of the database is retried until
it passes (counted by kind, logged once a minute), only a malformed record is dead-lettered,
decided before any SQL; an operator lists and replays dead letters; idle consumers go."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pymysql
import pytest

from hub import metrics
from hub.storage.keys import OUTBOX_GROUP, Keys
from tests.conftest import ROOT, eventually, unique
from workers.failures import kind_of

CREATED = "2025-01-02T03:04:05.678Z"
CREATED_MS = 1735787045678


# -- helpers ----------------------------------------------------------------------------------


def mysql_errors(kind: str | None = None) -> float:
    """The flusher's count of MySQL errors of one kind, or of every kind."""
    total = 0.0
    for family in metrics.MYSQL_ERRORS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and kind in (None, sample.labels["kind"]):
                total += sample.value
    return total


async def live_stream(api, clients, base_url, token) -> tuple[str, Any]:
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    viewer = await clients(base_url, token(unique("viewer"), name="Viewer"))
    assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
    return sid, viewer


async def dead_letters_of(rds, keys: Keys, needle: str) -> list[tuple[str, dict[str, str]]]:
    return [(i, f) for i, f in await rds.xrange(keys.outbox_dead) if needle in f.get("d", "")]


def tip(sid: str, **changes: Any) -> dict[str, Any]:
    return {
        "tip_id": str(uuid.uuid4()),
        "stream_id": sid,
        "from_user_id": "fan",
        "to_user_id": "star",
        "amount_cents": 500,
        "fee_cents": 25,
        "currency": "USD",
        "message": "gg",
        "client_tip_id": None,
        "created_at": CREATED,
        **changes,
    }


def message(sid: str, **changes: Any) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "stream_id": sid,
        "user_id": "fan",
        "username": "Fan",
        "message": "hello",
        "message_type": "TEXT",
        "tip_amount": None,
        "created_at": CREATED,
        **changes,
    }


def session(sid: str, **changes: Any) -> dict[str, Any]:
    return {
        "session_id": str(uuid.uuid4()),
        "stream_id": sid,
        "user_id": "fan",
        "joined_at": CREATED_MS,
        "left_at": CREATED_MS + 5000,
        "watch_seconds": 5,
        **changes,
    }


def stream(sid: str, **changes: Any) -> dict[str, Any]:
    """A stream record as Redis's cjson writes the stream hash: every value a string."""
    return {
        "stream_id": str(uuid.uuid4()),
        "streamer_id": "star",
        "streamer_name": "Star",
        "title": "Live",
        "description": "",
        "thumbnail_url": "",
        "status": "ENDED",
        "category": "crypto",
        "is_recording": "0",
        "recording_url": "",
        "peak_viewers": "3",
        "unique_viewers": 4,
        "message_count": "2",
        "tip_count": "1",
        "tips_cents": "500",
        "fees_cents": "25",
        "scheduled_at": "",
        "started_at": str(CREATED_MS),
        "ended_at": str(CREATED_MS + 60_000),
        "duration_seconds": "60",
        "created_at": str(CREATED_MS),
        "updated_at": str(CREATED_MS + 60_000),
        "version": "3",
        **changes,
    }


def moderation(sid: str, **changes: Any) -> dict[str, Any]:
    return {
        "action_id": str(uuid.uuid4()),
        "stream_id": sid,
        "action": "timeout_user",
        "by": "star",
        "user_id": "fan",
        "seconds": 60,
        "reason": "calm down",
        "until": "2025-01-02T03:05:05.678Z",
        "created_at": CREATED,
        **changes,
    }


RECORDS: dict[str, Callable[..., dict[str, Any]]] = {
    "tip": tip,
    "message": message,
    "session": session,
    "stream": stream,
    "moderation": moderation,
}
ID_OF = {
    "tip": "tip_id",
    "message": "message_id",
    "session": "session_id",
    "stream": "stream_id",
    "moderation": "action_id",
}
TABLE_OF = {
    "tip": "tips",
    "message": "chat_messages",
    "session": "viewing_sessions",
    "stream": "streams",
    "moderation": "moderation_actions",
}


async def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``python -m hub ARGS`` as an operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- what an error of MySQL is ------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, kind",
    [
        (pymysql.err.OperationalError(2013, "Lost connection to server during query"), "connection"),
        (pymysql.err.OperationalError(2003, "Can't connect to MySQL server"), "connection"),
        (pymysql.err.InterfaceError(0, ""), "connection"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection"),
        (pymysql.err.ProgrammingError(1146, "Table 'hub.tips' doesn't exist"), "schema"),
        (pymysql.err.OperationalError(1054, "Unknown column 'alert' in 'field list'"), "schema"),
        (pymysql.err.OperationalError(1142, "INSERT command denied to user"), "permission"),
        (
            pymysql.err.OperationalError(1290, "The MariaDB server is running with the --read-only option"),
            "read_only",
        ),
        (pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"), "deadlock"),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), "lock_timeout"),
        (pymysql.err.OperationalError(1040, "Too many connections"), "too_many_connections"),
        (pymysql.err.OperationalError(1021, "Disk full"), "disk_full"),
        (pymysql.err.DataError(1406, "Data too long for column 'message'"), "data"),
        (pymysql.err.InternalError(1105, "Unknown error"), "other"),
    ],
)
def test_each_mysql_error_has_a_kind(error: BaseException, kind: str) -> None:
    assert kind_of(error) == kind


# -- an error of the database is waited out ----------------------------------------------------


async def test_a_missing_table_is_waited_out_and_every_acked_tip_lands_once(
    api, clients, base_url, token, flusher, sql, rds, settings, caplog
):
    caplog.set_level(logging.INFO, logger="workers.flusher")
    sid, viewer = await live_stream(api, clients, base_url, token)
    keys = Keys.of_settings(settings).of(sid)
    tips: set[str] = set()
    messages: set[str] = set()

    async def send(n: int) -> None:
        sent = await viewer.call("send_tip", {"stream_id": sid, "amount": "2.50", "message": f"tip {n}"})
        assert sent["success"], sent
        tips.add(sent["tip"]["tip_id"])
        messages.add(sent["message_id"])
        said = await viewer.call("send_message", {"stream_id": sid, "message": f"chat {n}"})
        assert said["success"], said
        messages.add(said["message"]["message_id"])

    def renamed() -> bool:
        return bool(
            sql(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = 'tips_away'"
            )
        )

    def stored(table: str, column: str) -> list[str]:
        return [r[column] for r in sql(f"SELECT {column} FROM {table} WHERE stream_id = %s", sid)]

    task = asyncio.create_task(flusher.run())
    try:
        await send(0)

        async def first_written() -> bool:
            return stored("tips", "tip_id") == list(tips)

        await eventually(first_written, what="the first tip written")
        schema_errors = mysql_errors("schema")
        sql("RENAME TABLE tips TO tips_away")
        try:
            for n in range(1, 4):
                await send(n)

            async def retried() -> bool:
                return mysql_errors("schema") >= schema_errors + 3

            await eventually(retried, 15, "three failed writes counted as schema errors")
            status, ready = await api.request("GET", "/readyz")
            assert status == 200, ready
            lag = ready["outbox"]  # what waits shows in the outbox's lag
            assert lag["entries"] >= 6 and lag["pending"] >= 1 and lag["oldest_age_seconds"] > 0, ready
            assert await dead_letters_of(rds, keys, sid) == []
        finally:
            if renamed():
                sql("RENAME TABLE tips_away TO tips")

        async def all_written() -> bool:
            return sorted(stored("tips", "tip_id")) == sorted(tips) and sorted(
                stored("chat_messages", "message_id")
            ) == sorted(messages)

        await eventually(all_written, 15, "every acked tip and message written once the table is back")
        assert await dead_letters_of(rds, keys, sid) == []
        logged = [
            r
            for r in caplog.records
            if r.name == "workers.flusher" and "schema" in r.getMessage() and r.levelno >= logging.WARNING
        ]
        assert len(logged) == 1, [r.getMessage() for r in logged]  # once a minute, not once a retry
    finally:
        flusher.stop()
        await asyncio.wait_for(task, 10)
        if renamed():
            sql("RENAME TABLE tips_away TO tips")


# -- a malformed record is dead-lettered, before any SQL ----------------------------------------

BAD = [
    ("tip", {"amount_cents": 2.5}),
    ("tip", {"amount_cents": "500"}),
    ("tip", {"amount_cents": 10**12}),
    ("tip", {"amount_cents": 0}),
    ("tip", {"fee_cents": 600}),
    ("tip", {"tip_id": "not-a-uuid"}),
    ("tip", {"stream_id": 42}),
    ("tip", {"currency": "DOLLARS"}),
    ("tip", {"client_tip_id": "k" * 65}),
    ("tip", {"created_at": "2025-02-30T03:04:05.678Z"}),
    ("message", {"message": "y" * 501}),
    ("message", {"message_type": "SHOUT"}),
    ("message", {"tip_amount": 0.001}),
    ("message", {"tip_amount": 1e10}),
    ("message", {"username": "n" * 192}),
    ("message", {"user_id": None}),
    ("message", {"message_type": "ALERT", "alert": {"symbol": "BTC", "side": "buy", "price": "NaN"}}),
    ("session", {"watch_seconds": -1}),
    ("session", {"left_at": "yesterday"}),
    ("session", {"joined_at": 2**62}),
    ("stream", {"status": "PAUSED"}),
    ("stream", {"title": "t" * 201}),
    ("stream", {"peak_viewers": str(2**32)}),
    ("stream", {"tips_cents": "12.5"}),
    ("stream", {"thumbnail_url": "https://x/" + "a" * 2048}),
    ("moderation", {"seconds": 2**32}),
    ("moderation", {"message_id": "m1"}),
    ("moderation", {"action": "a" * 33}),
    ("moderation", {"until": "soon"}),
]


@pytest.mark.parametrize("kind, changes", BAD, ids=[f"{k}-{next(iter(c))}" for k, c in BAD])
async def test_a_malformed_record_is_dead_lettered_before_any_sql_and_the_batch_lands(
    kind, changes, api, clients, base_url, token, flusher, sql, rds, settings
):
    sid, viewer = await live_stream(api, clients, base_url, token)
    keys = Keys.of_settings(settings).of(sid)
    record = RECORDS[kind](sid, **changes)
    fields = {"t": kind, "d": orjson.dumps(record).decode()}

    _, batch, bad = flusher.prepare([("1-0", fields)])  # Python alone: no connection to MySQL
    assert (len(batch), [entry_id for entry_id, _ in bad]) == (0, ["1-0"])

    await flusher.drain()
    errors = mysql_errors()
    bad_id = await rds.xadd(keys.outbox, fields)
    ack = await viewer.call("send_message", {"stream_id": sid, "message": "still written"})
    await flusher.drain()
    assert sql("SELECT message FROM chat_messages WHERE message_id = %s", ack["message"]["message_id"]) == [
        {"message": "still written"}
    ]
    assert [f["entry"] for _, f in await rds.xrange(keys.outbox_dead) if f.get("entry") == bad_id] == [bad_id]
    assert mysql_errors() == errors  # MySQL never saw it
    record_id = record[ID_OF[kind]]
    if isinstance(record_id, str):
        assert sql(f"SELECT 1 FROM {TABLE_OF[kind]} WHERE {ID_OF[kind]} = %s", record_id) == []


@pytest.mark.parametrize("kind", sorted(RECORDS))
async def test_a_well_formed_record_of_each_kind_is_written(kind, flusher, sql, rds, settings):
    sid = str(uuid.uuid4())
    record = RECORDS[kind](sid)
    await rds.xadd(Keys.of_settings(settings).of(sid).outbox, {"t": kind, "d": orjson.dumps(record).decode()})
    await flusher.drain()
    column = ID_OF[kind]
    assert len(sql(f"SELECT 1 FROM {TABLE_OF[kind]} WHERE {column} = %s", record[column])) == 1


# -- an operator lists and replays dead letters ------------------------------------------------


async def test_dead_letters_are_listed_and_replayed_once(env, flusher, sql, rds, settings):
    sid = str(uuid.uuid4())
    keys = Keys.of_settings(settings).of(sid)
    shard = Keys.of_settings(settings).shard_of(sid)
    good = tip(sid)
    text = orjson.dumps(good).decode()
    # A well-formed tip set aside twice (as a flusher that took MySQL's errors for the record's
    # did), and a malformed one the flusher sets aside now.
    first = await rds.xadd(keys.outbox_dead, {"t": "tip", "d": text, "entry": "1-0"})
    second = await rds.xadd(keys.outbox_dead, {"t": "tip", "d": text, "entry": "1-1"})
    broken = await rds.xadd(keys.outbox, {"t": "tip", "d": orjson.dumps(tip(sid, amount_cents=2.5)).decode()})
    await flusher.drain()

    code, out, err = await run(env, "outbox", "dead", "--json")
    assert code == 0, err
    listed = {(d["shard"], d["id"]): d for d in orjson.loads(out)}
    assert listed[(shard, first)]["kind"] == "tip" and listed[(shard, first)]["entry"] == "1-0"
    assert listed[(shard, first)]["data"] == text
    [malformed] = [d for d in listed.values() if d["entry"] == broken]
    code, out, err = await run(env, "outbox", "dead")
    assert code == 0, err
    line = next(line for line in out.splitlines() if first in line)
    assert "tip" in line and "1-0" in line and good["tip_id"][:8] in line

    def rows() -> int:
        return len(sql("SELECT 1 FROM tips WHERE tip_id = %s", good["tip_id"]))

    code, out, err = await run(env, "outbox", "replay", first)
    assert code == 0 and first in out, (out, err)
    await flusher.drain()
    assert rows() == 1
    code, out, err = await run(env, "outbox", "replay", first)  # again: nothing left to do
    assert code == 0 and "not in the dead letters" in out, (out, err)
    code, out, err = await run(env, "outbox", "replay", f"{shard}/{second}")  # the same record again
    assert code == 0, (out, err)
    await flusher.drain()
    assert rows() == 1
    assert {first, second}.isdisjoint(i for i, _ in await rds.xrange(keys.outbox_dead))

    code, out, err = await run(env, "outbox", "replay", "--all")  # the malformed one comes back
    assert code == 0, (out, err)
    await flusher.drain()
    assert malformed["id"] not in [i for i, _ in await rds.xrange(keys.outbox_dead)]
    assert [f["d"] for _, f in await dead_letters_of(rds, keys, sid)] == [malformed["data"]]
    assert rows() == 1

    code, _, err = await run(env, "outbox", "replay", "not-an-id")
    assert code == 1 and "not-an-id" in err
    code, _, err = await run(env, "outbox", "replay")
    assert code == 1 and err.strip()
    code, _, err = await run({**env, "REDIS_URL": "redis://127.0.0.1:1/0"}, "outbox", "dead")
    assert code == 1 and "Redis at redis://127.0.0.1:1/0" in err


# -- consumers of flushers gone are removed ----------------------------------------------------


async def consumers(rds, outbox: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in await rds.xinfo_consumers(outbox, OUTBOX_GROUP)}


async def test_idle_consumers_with_nothing_pending_are_removed(flusher, sql, rds, settings):
    outboxes = flusher.outboxes
    gone, busy = unique("gone-flusher"), unique("busy-flusher")
    sid = str(uuid.uuid4())
    outbox = Keys.of_settings(settings).of(sid).outbox
    record = message(sid)
    for name in (gone, flusher.consumer):
        for each in outboxes:
            await rds.xgroup_createconsumer(each, OUTBOX_GROUP, name)
    await flusher.drain()  # nothing else waiting for the busy one to take
    await rds.xadd(outbox, {"t": "message", "d": orjson.dumps(record).decode()})
    taken = await rds.xreadgroup(OUTBOX_GROUP, busy, {outbox: ">"}, count=1)
    assert taken and len(taken[0][1]) == 1
    idle_ms = 10 * settings.flush_claim_idle_ms
    started = time.monotonic()

    async def all_idle() -> bool:
        found = await consumers(rds, outbox)
        return all(found[name]["idle"] > idle_ms for name in (gone, busy, flusher.consumer))

    await eventually(all_idle, idle_ms / 1000 + 10, "the consumers idle long enough", every=0.25)
    assert time.monotonic() - started >= idle_ms / 1000 - 0.5
    await flusher.forget_idle_consumers()
    for each in outboxes:
        found = await consumers(rds, each)
        assert gone not in found and flusher.consumer in found
    assert (await consumers(rds, outbox))[busy]["pending"] == 1  # kept: it holds an entry

    task = asyncio.create_task(flusher.run())  # claims the busy one's entry, then forgets it
    try:

        async def taken_over() -> bool:
            return (
                busy not in await consumers(rds, outbox)
                and len(sql("SELECT 1 FROM chat_messages WHERE message_id = %s", record["message_id"])) == 1
            )

        await eventually(taken_over, what="the entry written and its idle consumer forgotten")
        assert flusher.consumer in await consumers(rds, outbox)
    finally:
        flusher.stop()
        await asyncio.wait_for(task, 10)
