"""Chat history is exactly what was accepted: every message in id order, none missing or
doubled, whatever order the workers' messages reached Redis in and however far the flusher is
behind."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import redis.asyncio as aioredis

from hub import frames
from hub.codec import dumps, iso_ms, uuid7, uuid7_ms
from hub.storage.keys import Keys
from hub.storage.state import ChatItem, State
from tests.conftest import Api, unique


async def page_all(api: Api, sid: str, limit: int = 50) -> list[str]:
    """Every message id of the stream's /chat, paged back from the newest with ``before``."""
    ids: list[str] = []
    before = ""
    while True:
        status, body = await api.request("GET", f"{sid}/chat?limit={limit}{before}")
        assert status == 200, body
        page = [m["message_id"] for m in body["messages"]]
        assert page == sorted(page), "a page is oldest first"
        if not page:
            return ids
        ids = page + ids
        before = f"&before={page[0]}"


async def accept_out_of_order(state: State, sid: str, n: int) -> list[str]:
    """``n`` messages made in id order and accepted in the reverse order (each its own call), as
    when a worker's messages reach Redis after the newer ones of another worker. Returns their
    ids, sorted."""
    made = []
    for i in range(n):
        message_id = uuid7()
        message = {
            "message_id": message_id,
            "stream_id": sid,
            "user_id": unique("late"),
            "username": None,
            "message": f"m{i}",
            "message_type": "TEXT",
            "tip_amount": None,
            "created_at": iso_ms(uuid7_ms(message_id)),
        }
        made.append(message)
    for message in reversed(made):
        encoded = dumps(message)
        await state.chat(
            ChatItem(
                stream_id=sid,
                user_id=message["user_id"],
                is_admin=False,
                is_alert=False,
                message_id=message["message_id"],
                message_json=encoded,
                frame=frames.event("chat_message", encoded),
            )
        )
    return [m["message_id"] for m in made]


async def test_history_holds_messages_that_reached_redis_out_of_id_order(
    server, api, token, clients, base_url, settings, rds, flusher, sql
):
    """260 messages accepted newest first, the flusher not running: /chat pages and
    recent_messages hold each exactly once, in id order, before and after the flush."""
    streamer = token(unique("streamer"), "streamer")
    sid = (await api.create_stream(streamer))["stream_id"]
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        ids = await accept_out_of_order(State(client, settings), sid, 260)
    finally:
        await client.aclose()
    keys = Keys.of_settings(settings).of(sid)
    assert await rds.zcard(keys.recent(sid)) <= settings.recent_size * 11 // 10
    assert await page_all(api, sid) == ids
    assert await page_all(api, sid, limit=7) == ids

    viewer = await clients(base_url)
    joined = await viewer.call("join_stream", {"stream_id": sid})
    assert [m["message_id"] for m in joined["recent_messages"]] == ids[-50:]
    assert joined["has_more"] is True
    # After an id older than the recent set: the newest 200 after it, and word of the rest.
    again = await viewer.call("join_stream", {"stream_id": sid, "last_message_id": ids[9]})
    assert [m["message_id"] for m in again["recent_messages"]] == ids[-200:]
    assert again["has_more"] is True
    again = await viewer.call("join_stream", {"stream_id": sid, "last_message_id": ids[100]})
    assert [m["message_id"] for m in again["recent_messages"]] == ids[101:]
    assert again["has_more"] is False

    # A message only the unflushed set still holds is deleted: it stays out everywhere.
    status, body = await api.request("DELETE", f"{sid}/chat/{ids[3]}", streamer)
    assert status == 200, body
    kept = ids[:3] + ids[4:]
    assert await page_all(api, sid) == kept

    await flusher.drain()
    assert await rds.zrange(keys.unflushed(sid), 0, -1) == []  # emptied as MySQL took them
    assert await page_all(api, sid) == kept
    rows = sql(
        "SELECT message_id FROM chat_messages WHERE stream_id = %s AND deleted_at IS NULL "
        "ORDER BY message_id",
        sid,
    )
    assert [r["message_id"] for r in rows] == kept
    again = await viewer.call("join_stream", {"stream_id": sid, "last_message_id": ids[2]})
    assert [m["message_id"] for m in again["recent_messages"]] == kept[-200:]

    # Cleared: nothing before the clear, in Redis or MySQL.
    status, body = await api.request("POST", f"{sid}/chat/clear", streamer)
    assert status == 200, body
    assert await page_all(api, sid) == []
    again = await viewer.call("join_stream", {"stream_id": sid, "last_message_id": ids[2]})
    assert again["recent_messages"] == [] and again["has_more"] is False


async def test_history_while_the_flusher_is_stopped_is_every_accepted_message(
    server, api, token, clients, base_url, settings, rds, flusher
):
    """With nothing flushed, messages older than the recent set are read from the unflushed
    set; a page that spans both is whole."""
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    sent: list[str] = []
    for n in range(13):  # 260 messages, 20 per user (the rate)
        c = await clients(base_url, token(unique("chatter")))
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        acks = await asyncio.gather(
            *(c.call("send_message", {"stream_id": sid, "message": f"{n}-{i}"}) for i in range(20))
        )
        assert all(a["success"] for a in acks), acks
        sent.extend(a["message"]["message_id"] for a in acks)
    ids = sorted(sent)
    assert len(set(ids)) == 260
    assert await page_all(api, sid) == ids
    status, body = await api.request("GET", f"{sid}/chat?limit=100&before={ids[120]}")
    assert [m["message_id"] for m in body["messages"]] == ids[20:120]
    await flusher.drain()
    assert await page_all(api, sid, limit=200) == ids


async def test_two_workers_interleaved_history_is_whole(workers, connect, http, token, flusher):
    """30 users on two workers send 600 messages in 20 concurrent rounds while the flusher runs:
    /chat pages, and recent_messages on join, hold exactly the acked messages."""
    w1, w2 = await workers(2)
    api1 = Api(http, w1.url)
    sid = (await api1.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    users = [await connect((w1, w2)[i % 2].url, token(unique("chatter"))) for i in range(30)]
    for u in users:
        assert (await u.call("join_stream", {"stream_id": sid}))["success"]
    running = asyncio.ensure_future(flusher.run())
    acked: list[str] = []
    try:
        for r in range(20):
            order = random.sample(users, len(users))
            acks: list[Any] = await asyncio.gather(
                *(u.call("send_message", {"stream_id": sid, "message": f"r{r}"}) for u in order)
            )
            assert all(a["success"] for a in acks), acks
            acked.extend(a["message"]["message_id"] for a in acks)
    finally:
        flusher.stop()
        await running
    ids = sorted(acked)
    assert len(set(ids)) == 600
    assert await page_all(api1, sid) == ids
    assert await page_all(Api(http, w2.url), sid, limit=37) == ids
    late = await connect(w2.url, token(unique("late")))
    joined = await late.call("join_stream", {"stream_id": sid})
    assert [m["message_id"] for m in joined["recent_messages"]] == ids[-50:]
    again = await late.call("join_stream", {"stream_id": sid, "last_message_id": ids[450]})
    assert [m["message_id"] for m in again["recent_messages"]] == ids[451:]
