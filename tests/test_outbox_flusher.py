"""Outbox -> flusher -> MySQL: rows land exact and exactly once, through replays and crashes."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal

import orjson
import pytest

from hub.storage.keys import OUTBOX_GROUP, Keys
from tests.conftest import ROOT, unique
from workers.flusher import Flusher


async def live_stream(api, clients, base_url, token, viewers: int = 1):
    streamer = unique("streamer")
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    socks = []
    for _ in range(viewers):
        c = await clients(base_url, token(unique("viewer"), name="Viewer"))
        await c.call("join_stream", {"stream_id": sid})
        socks.append(c)
    return streamer, sid, socks


async def outbox_entries(rds, settings) -> list[tuple[str, dict[str, str]]]:
    """Every shard's outbox entries (one outbox unless TEST_REDIS_SHARDS is set)."""
    return [e for shard in Keys.of_settings(settings).all for e in await rds.xrange(shard.outbox)]


async def test_rows_land_with_exact_values(api, clients, base_url, token, flusher, sql):
    streamer, sid, (c,) = await live_stream(api, clients, base_url, token)
    anon = await clients(base_url)
    await anon.call("join_stream", {"stream_id": sid})
    await c.call("send_message", {"stream_id": sid, "message": "🚀 to the moon", "message_type": "EMOJI"})
    tip = await c.call(
        "send_tip", {"stream_id": sid, "amount": "19.99", "message": "gg", "client_tip_id": "k1"}
    )
    await anon.call("leave_stream")
    await api.request("POST", f"{sid}/end", token(streamer, "streamer"))
    await flusher.drain()

    tips = sql("SELECT * FROM tips WHERE stream_id = %s", sid)
    assert len(tips) == 1
    t = tips[0]
    assert (t["tip_id"], t["amount"], t["platform_fee"], t["streamer_share"]) == (
        tip["tip"]["tip_id"],
        Decimal("19.99"),
        Decimal("1.00"),
        Decimal("18.99"),
    )
    assert (t["currency"], t["message"], t["client_tip_id"], t["to_user_id"]) == ("USD", "gg", "k1", streamer)
    messages = sql(
        "SELECT message, message_type, tip_amount FROM chat_messages WHERE stream_id = %s "
        "ORDER BY message_id",
        sid,
    )
    assert messages == [
        {"message": "🚀 to the moon", "message_type": "EMOJI", "tip_amount": None},
        {"message": "gg", "message_type": "TIP", "tip_amount": Decimal("19.99")},
    ]
    sessions = sql(
        "SELECT user_id, watch_seconds, left_at >= joined_at AS ordered "
        "FROM viewing_sessions WHERE stream_id = %s ORDER BY user_id",
        sid,
    )
    assert [s["user_id"] for s in sessions] == [None, sessions[1]["user_id"]]
    assert sessions[1]["user_id"].startswith("viewer-")
    assert all(s["ordered"] == 1 and s["watch_seconds"] >= 0 for s in sessions)
    stream = sql("SELECT * FROM streams WHERE stream_id = %s", sid)[0]
    assert (stream["status"], stream["peak_viewers"], stream["unique_viewers"]) == ("ENDED", 2, 2)
    assert (stream["tips_total"], stream["platform_fees_total"], stream["tip_count"]) == (
        Decimal("19.99"),
        Decimal("1.00"),
        1,
    )
    assert stream["message_count"] == 2 and stream["ended_at"] is not None


async def test_a_replayed_batch_changes_nothing(api, clients, base_url, token, flusher, sql, rds, settings):
    streamer, sid, (c,) = await live_stream(api, clients, base_url, token)
    for n in range(5):
        await c.call("send_message", {"stream_id": sid, "message": f"m{n}"})
    await c.call("send_tip", {"stream_id": sid, "amount": 7.5})
    await api.request("POST", f"{sid}/end", token(streamer, "streamer"))
    entries = await outbox_entries(rds, settings)
    await flusher.drain()

    def snapshot():
        return (
            sql("SELECT * FROM chat_messages WHERE stream_id = %s ORDER BY message_id", sid),
            sql("SELECT * FROM tips WHERE stream_id = %s", sid),
            sql("SELECT * FROM viewing_sessions WHERE stream_id = %s", sid),
            sql("SELECT * FROM streams WHERE stream_id = %s", sid),
        )

    before = snapshot()
    assert [len(t) for t in before] == [6, 1, 1, 1]
    outbox = Keys.of_settings(settings).all[0].outbox
    for _, fields in entries:  # the whole batch again, as after a crash between commit and ack
        await rds.xadd(outbox, fields)
    await flusher.drain()
    assert snapshot() == before


async def test_an_older_stream_version_never_overwrites_a_newer(api, token, flusher, sql, rds, settings):
    streamer = unique("streamer")
    stream = await api.create_stream(token(streamer, "streamer"))
    sid = stream["stream_id"]
    created = [
        f
        for _, f in await outbox_entries(rds, settings)
        if f["t"] == "stream" and orjson.loads(f["d"])["stream_id"] == sid
    ]
    await api.request("POST", f"{sid}/end", token(streamer, "streamer"))
    await flusher.drain()
    await rds.xadd(Keys.of_settings(settings).all[0].outbox, created[0])  # version 1, LIVE, arrives late
    await flusher.drain()
    row = sql("SELECT status, version FROM streams WHERE stream_id = %s", sid)[0]
    assert row == {"status": "ENDED", "version": 2}


async def test_a_flusher_that_dies_before_commit_leaves_entries_to_the_next(
    api, clients, base_url, token, flusher, sql, rds, settings
):
    _, sid, (c,) = await live_stream(api, clients, base_url, token)
    ids = [
        (await c.call("send_message", {"stream_id": sid, "message": f"x{n}"}))["message"]["message_id"]
        for n in range(4)
    ]
    dead = Flusher(settings, rds, flusher.writer, consumer=unique("dead-flusher"))
    taken = await dead.read(None)  # read, then "crash": no write, no ack
    assert len(taken) >= 4
    keys = Keys.of_settings(settings).of(sid)
    pending = await rds.xpending(keys.outbox, OUTBOX_GROUP)
    assert pending["pending"] >= 4
    assert await rds.xlen(keys.outbox) >= 4  # nothing trimmed while unacknowledged
    await flusher.drain()  # claims them once idle past HUB_FLUSH_CLAIM_IDLE_MS
    rows = sql("SELECT message_id FROM chat_messages WHERE stream_id = %s", sid)
    assert sorted(r["message_id"] for r in rows) == sorted(ids)
    assert (await rds.xpending(keys.outbox, OUTBOX_GROUP))["pending"] == 0


async def test_a_flusher_that_dies_after_commit_writes_nothing_twice(
    api, clients, base_url, token, flusher, sql, rds, settings
):
    _, sid, (c,) = await live_stream(api, clients, base_url, token)
    await c.call("send_tip", {"stream_id": sid, "amount": 2})
    dead = Flusher(settings, rds, flusher.writer, consumer=unique("dead-flusher"))
    taken = await dead.read(None)
    batch, bad = dead._fold(taken)
    assert not bad
    await dead.writer.write(batch)  # committed, then "crash" before the ack
    await flusher.drain()
    assert len(sql("SELECT * FROM tips WHERE stream_id = %s", sid)) == 1
    assert len(sql("SELECT * FROM chat_messages WHERE stream_id = %s", sid)) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"t": "message", "d": "{not json"},
        {"t": "mystery", "d": "{}"},
        {"t": "tip", "d": '{"tip_id": "x"}'},
        {"d": "{}"},
        {"t": "message", "d": "[]"},
        {"t": "message", "d": "null"},
        {
            "t": "message",
            "d": '{"message_id": "m", "stream_id": "s", "user_id": "u", "message": "x", '
            '"message_type": "TEXT", "created_at": 1735787045678}',
        },
    ],
)
async def test_an_undecodable_entry_is_dead_lettered_and_the_batch_goes_on(
    fields, api, clients, base_url, token, flusher, sql, rds, settings
):
    _, sid, (c,) = await live_stream(api, clients, base_url, token)
    keys = Keys.of_settings(settings).of(sid)
    bad_id = await rds.xadd(keys.outbox, fields)
    ack = await c.call("send_message", {"stream_id": sid, "message": "still written"})
    await flusher.drain()
    assert sql("SELECT message FROM chat_messages WHERE message_id = %s", ack["message"]["message_id"]) == [
        {"message": "still written"}
    ]
    dead = await rds.xrange(keys.outbox_dead)
    assert any(f.get("entry") == bad_id for _, f in dead)
    assert await rds.xlen(keys.outbox) == 0


async def test_a_row_too_long_for_its_column_is_dead_lettered_and_the_rest_written(
    api, clients, base_url, token, flusher, sql, rds, settings
):
    _, sid, (c,) = await live_stream(api, clients, base_url, token)
    keys = Keys.of_settings(settings).of(sid)
    good = await c.call("send_message", {"stream_id": sid, "message": "fine"})
    record = dict(good["message"], message_id=unique("x")[:36].ljust(36, "0"), message="y" * 600)
    bad_id = await rds.xadd(keys.outbox, {"t": "message", "d": orjson.dumps(record).decode()})
    await flusher.drain()
    assert len(sql("SELECT * FROM chat_messages WHERE message_id = %s", good["message"]["message_id"])) == 1
    assert sql("SELECT * FROM chat_messages WHERE message_id = %s", record["message_id"]) == []
    assert any(f.get("entry") == bad_id for _, f in await rds.xrange(keys.outbox_dead))


async def test_flusher_process_in_burst_mode_drains_and_exits(
    api, clients, base_url, token, sql, env, rds, settings
):
    _, sid, (c,) = await live_stream(api, clients, base_url, token)
    ack = await c.call("send_message", {"stream_id": sid, "message": "via the process"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.flusher",
        "--burst",
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert sql("SELECT message FROM chat_messages WHERE message_id = %s", ack["message"]["message_id"]) == [
        {"message": "via the process"}
    ]
    assert await rds.xlen(Keys.of_settings(settings).of(sid).outbox) == 0


async def test_one_bad_record_of_a_batched_entry_is_dead_lettered_alone(
    api, clients, base_url, token, flusher, sql, rds, settings
):
    """Chat messages of one event-loop tick share one outbox entry (t = messages); a record
    too long for its column, or one that cannot be read, goes to the dead letters by itself."""
    _, sid, (c,) = await live_stream(api, clients, base_url, token)
    keys = Keys.of_settings(settings).of(sid)
    good = (await c.call("send_message", {"stream_id": sid, "message": "fine"}))["message"]
    await flusher.drain()
    others = [
        dict(good, message_id=f"{good['message_id'][:-4]}{i:04d}", message=f"other {i}") for i in range(3)
    ]
    refused = dict(good, message_id=f"{good['message_id'][:-4]}9999", message="y" * 600)
    entry = await rds.xadd(
        keys.outbox,
        {"t": "messages", "d": orjson.dumps([others[0], refused, others[1], 42, others[2]]).decode()},
    )
    await flusher.drain()
    stored = {r["message_id"] for r in sql("SELECT message_id FROM chat_messages WHERE stream_id = %s", sid)}
    assert stored == {good["message_id"]} | {m["message_id"] for m in others}
    dead = [f for _, f in await rds.xrange(keys.outbox_dead) if f.get("entry") == entry]
    assert sorted(f["d"] for f in dead) == sorted([orjson.dumps(refused).decode(), "42"])
    assert {f["t"] for f in dead} == {"message"}
    assert await rds.xlen(keys.outbox) == 0
