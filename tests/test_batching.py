"""The per-tick batching of chat messages: one script call per event-loop turn."""

from __future__ import annotations

import asyncio

from hub.storage.batcher import Batcher
from tests.conftest import unique


async def test_calls_of_one_tick_go_together_and_each_gets_its_reply():
    sent: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        sent.append(items)
        return [i * 10 for i in items]

    batcher = Batcher(run, most=100)
    replies = await asyncio.gather(*(batcher.submit(i) for i in range(25)))
    assert replies == [i * 10 for i in range(25)] and sent == [list(range(25))]
    assert await batcher.submit(7) == 70 and sent[-1] == [7]  # a lone call goes alone
    replies = await asyncio.gather(*(batcher.submit(i) for i in range(250)))
    assert replies == [i * 10 for i in range(250)]
    assert [len(b) for b in sent[2:]] == [100, 100, 50]  # at most `most` per call


async def test_a_failed_call_fails_every_caller_of_its_batch_only():
    calls = 0

    async def run(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("Redis went away")
        return items

    batcher = Batcher(run, most=100)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 1, 2]


async def test_messages_from_many_sockets_at_once_are_each_checked(server, clients, base_url, token, api):
    """Many senders in one stream at once (so in few batches): every message is acked and
    broadcast once, and each user's rate is counted on its own."""
    streamer = unique("streamer")
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    senders = [await clients(base_url, token(unique("s"))) for _ in range(12)]
    for c in senders:
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]
    acks = await asyncio.gather(
        *(
            c.call("send_message", {"stream_id": sid, "message": f"m{i}"})
            for i, c in enumerate(senders)
            for _ in range(3)
        )
    )
    assert all(a["success"] for a in acks)
    ids = {a["message"]["message_id"] for a in acks}
    watcher = senders[0]
    await watcher.wait_for(
        "chat_message", lambda m: ids <= {e["message_id"] for e in watcher.events["chat_message"]}
    )
    assert sorted(e["message_id"] for e in watcher.events["chat_message"]) == sorted(ids)
    status, body = await api.request("GET", f"{sid}/stats")
    assert body["stats"]["message_count"] == 36


async def test_one_users_rate_holds_across_messages_of_one_batch(server, clients, base_url, token, api):
    """A user's two sockets send at once, so their messages share batches: the user still gets
    20 messages per 30 s in all, whichever batch each message is in."""
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    user_token = token(unique("twins"))
    tabs = [await clients(base_url, user_token) for _ in range(2)]
    for tab in tabs:
        assert (await tab.call("join_stream", {"stream_id": sid}))["success"]
    acks = await asyncio.gather(
        *(tab.call("send_message", {"stream_id": sid, "message": str(i)}) for i in range(11) for tab in tabs)
    )
    assert sum(a["success"] for a in acks) == 20
    assert [a["error"]["code"] for a in acks if not a["success"]] == ["rate_limited", "rate_limited"]
