"""Two worker processes on loopback sharing one Redis: delivery, counts and endings cross them."""

from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal

from hub.storage.keys import Keys
from tests.conftest import Api, eventually, unique


async def test_message_tip_counts_and_end_cross_workers(workers, http, clients, token, flusher, sql):
    w1, w2 = await workers(2)
    streamer, alice, bob = unique("streamer"), unique("alice"), unique("bob")
    api1, api2 = Api(http, w1.url), Api(http, w2.url)
    sid = (await api1.create_stream(token(streamer, "streamer")))["stream_id"]

    a = await clients(w1.url, token(alice, name="Alice"))
    b = await clients(w2.url, token(bob, name="Bob"))
    assert (await a.call("join_stream", {"stream_id": sid}))["viewer_count"] == 1
    assert (await b.call("join_stream", {"stream_id": sid}))["viewer_count"] == 2
    joined = await a.wait_for("viewer_joined", lambda d: d["user_id"] == bob)
    assert joined == {"stream_id": sid, "viewer_count": 2, "user_id": bob, "username": "Bob"}

    # Bob's second tab, on the other worker, does not count again.
    b2 = await clients(w1.url, token(bob, name="Bob"))
    assert (await b2.call("join_stream", {"stream_id": sid}))["viewer_count"] == 2

    sent = await b.call("send_message", {"stream_id": sid, "message": "from worker 2"})
    mid = sent["message"]["message_id"]
    for c in (a, b, b2):
        got = await c.wait_for("chat_message", lambda m: m["message_id"] == mid)
        assert got["message"] == "from worker 2" and got["user_id"] == bob

    tip = await a.call("send_tip", {"stream_id": sid, "amount": 3.33, "message": "nice"})
    tip_id = tip["tip"]["tip_id"]
    received = await b.wait_for("tip_received", lambda t: t["tip_id"] == tip_id)
    assert received["amount"] == 3.33 and received["platform_fee"] == 0.17
    assert received["from_user"] == alice and received["to_user"] == streamer
    await b.wait_for("chat_message", lambda m: m["message_type"] == "TIP" and m["tip_amount"] == 3.33)

    # Bob closes one tab: still a viewer. Closes the other: Alice sees him leave.
    await b2.close()
    await b.close()
    left = await a.wait_for("viewer_left", lambda d: d["user_id"] == bob)
    assert left == {"stream_id": sid, "viewer_count": 1, "user_id": bob}
    assert len([e for e in a.events["viewer_left"] if e["user_id"] == bob]) == 1

    status, body = await api2.request("POST", f"{sid}/end", token(streamer, "streamer"))
    assert status == 200
    ended = await a.wait_for("stream_ended")
    assert ended["stream_id"] == sid and ended["duration"] >= 0
    for api in (api1, api2):
        status, body = await api.request("GET", sid)
        assert body["stream"]["status"] == "ENDED"
    refused = await a.call("send_message", {"stream_id": sid, "message": "too late"})
    assert refused["error"]["code"] in ("not_joined", "stream_not_live")

    await flusher.drain()
    row = sql(
        "SELECT tip_count, tips_total, message_count, peak_viewers FROM streams WHERE stream_id=%s", sid
    )
    assert row == [
        {"tip_count": 1, "tips_total": row[0]["tips_total"], "message_count": 2, "peak_viewers": 2}
    ]
    assert str(row[0]["tips_total"]) == "3.33"


async def test_killed_worker_viewers_leave_within_the_expiry(workers, http, clients, token):
    w1, w2 = await workers(2)
    streamer, survivor, doomed = unique("streamer"), unique("survivor"), unique("doomed")
    sid = (await Api(http, w1.url).create_stream(token(streamer, "streamer")))["stream_id"]
    s = await clients(w1.url, token(survivor))
    await s.call("join_stream", {"stream_id": sid})
    d = await clients(w2.url, token(doomed))
    anon = await clients(w2.url)
    await d.call("join_stream", {"stream_id": sid})
    await anon.call("join_stream", {"stream_id": sid})
    await s.wait_for("viewer_joined", lambda e: e["viewer_count"] == 3)

    killed_at = time.monotonic()
    w2.kill()
    left = await s.wait_for("viewer_left", lambda e: e["user_id"] == doomed, timeout=30)
    await s.wait_for("viewer_left", lambda e: e["user_id"] is None, timeout=30)
    took = time.monotonic() - killed_at
    print(f"killed worker's viewers left after {took:.2f}s")
    assert left["stream_id"] == sid and took < 30

    async def counted_once() -> bool:
        status, body = await Api(http, w1.url).request("GET", sid)
        return body["stream"]["viewer_count"] == 1

    await eventually(counted_once, 10, "viewer count back to 1")


async def test_same_client_tip_id_on_both_workers_is_one_tip(workers, http, clients, token, flusher, sql):
    w1, w2 = await workers(2)
    streamer, fan = unique("streamer"), unique("fan")
    api = Api(http, w1.url)
    sid = (await api.create_stream(token(streamer, "streamer")))["stream_id"]
    c1 = await clients(w1.url, token(fan))
    c2 = await clients(w2.url, token(fan))
    await c1.call("join_stream", {"stream_id": sid})
    await c2.call("join_stream", {"stream_id": sid})
    tip = {"stream_id": sid, "amount": 5, "client_tip_id": "once-only"}
    acks = await asyncio.gather(*(c.call("send_tip", tip) for c in (c1, c2, c1, c2)))
    assert all(a["success"] for a in acks)
    assert len({a["tip"]["tip_id"] for a in acks}) == 1
    status, body = await api.request("GET", f"{sid}/stats")
    assert body["stats"]["tip_count"] == 1 and body["stats"]["tips_total"] == 5
    await flusher.drain()
    assert len(sql("SELECT * FROM tips WHERE stream_id = %s", sid)) == 1


async def test_every_acked_message_and_tip_is_in_mysql_once(workers, http, clients, token, flusher, sql):
    w1, w2 = await workers(2)
    streamer = unique("streamer")
    sid = (await Api(http, w1.url).create_stream(token(streamer, "streamer")))["stream_id"]
    senders = []
    for i in range(6):
        c = await clients((w1, w2)[i % 2].url, token(unique(f"sender{i}")))
        await c.call("join_stream", {"stream_id": sid})
        senders.append(c)

    async def burst(c) -> tuple[set[str], set[str]]:
        messages, tips = set(), set()
        for n in range(15):
            ack = await c.call("send_message", {"stream_id": sid, "message": f"m{n}"})
            if ack["success"]:
                messages.add(ack["message"]["message_id"])
        for n in range(3):
            ack = await c.call("send_tip", {"stream_id": sid, "amount": f"{n + 1}.25"})
            if ack["success"]:
                messages.add(ack["message_id"])
                tips.add(ack["tip"]["tip_id"])
        return messages, tips

    results = await asyncio.gather(*(burst(c) for c in senders))
    acked_messages = set().union(*(m for m, _ in results))
    acked_tips = set().union(*(t for _, t in results))
    assert len(acked_messages) == 6 * 18 and len(acked_tips) == 6 * 3
    await flusher.drain()
    stored = sql("SELECT message_id FROM chat_messages WHERE stream_id = %s", sid)
    stored_tips = sql("SELECT tip_id, amount FROM tips WHERE stream_id = %s", sid)
    assert sorted(r["message_id"] for r in stored) == sorted(acked_messages)
    assert sorted(r["tip_id"] for r in stored_tips) == sorted(acked_tips)
    assert sum(r["amount"] for r in stored_tips) == Decimal("6.75") * 6


async def test_a_worker_subscribes_only_to_the_streams_it_has_viewers_of(workers, http, token, rds, settings):
    w1, w2 = await workers(2)
    api = Api(http, w1.url)
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    channel = Keys.of_settings(settings).of(sid).room(sid)

    async def subscribers(n: int) -> bool:
        ((_, count),) = await rds.pubsub_numsub(channel)
        return count == n

    assert await subscribers(0)
    from tests.conftest import Client

    a, b = Client(), Client()
    try:
        await a.connect(w1.url, token(unique("a")))
        assert (await a.call("join_stream", {"stream_id": sid}))["success"]
        assert await subscribers(1)  # subscribed before the join's ack
        await b.connect(w2.url, token(unique("b")))
        assert (await b.call("join_stream", {"stream_id": sid}))["success"]
        assert await subscribers(2)
        sent = await a.call("send_message", {"stream_id": sid, "message": "routed"})
        await b.wait_for("chat_message", lambda m: m["message_id"] == sent["message"]["message_id"])
        await b.call("leave_stream")
        await eventually(lambda: subscribers(1), what="worker 2 unsubscribed once its viewer left")
    finally:
        await a.close()
        await b.close()


async def test_viewer_events_of_a_large_stream_are_coalesced_and_end_exact(workers, http, token):
    (w,) = await workers(1, HUB_VIEWER_EVENTS_COALESCE_ABOVE="3", HUB_VIEWER_EVENTS_INTERVAL="1")
    api = Api(http, w.url)
    sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    from tests.conftest import Client

    watcher = Client()
    viewers = [Client() for _ in range(12)]
    try:
        await watcher.connect(w.url, token(unique("watcher")))
        assert (await watcher.call("join_stream", {"stream_id": sid}))["success"]
        for c in viewers:
            await c.connect(w.url, token(unique("v")))
            assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        # Below the threshold every join is told; above it, at most one per second, and the
        # sweep sends the last one kept, with the count of that moment.
        last = await watcher.wait_for("viewer_joined", lambda e: e["viewer_count"] == 13)
        assert set(last) == {"stream_id", "viewer_count", "user_id", "username"}
        assert len(watcher.events["viewer_joined"]) < 12
        assert [e["viewer_count"] for e in watcher.events["viewer_joined"][:2]] == [2, 3]
        for c in viewers[:6]:
            await c.close()
        await watcher.wait_for("viewer_left", lambda e: e["viewer_count"] == 7)
    finally:
        await watcher.close()
        for c in viewers:
            await c.close()


async def test_a_paced_room_keeps_order_and_who_gets_what(workers, http, token):
    """Pacing every room (threshold 0) with a long interval: events held for a room go out in
    order, before anyone enters or leaves it, so each socket gets exactly the events sent while
    it was in the room."""
    w1, w2 = await workers(2, HUB_FANOUT_PACE_ABOVE="0", HUB_FANOUT_INTERVAL="1")
    streamer = token(unique("streamer"), "streamer")
    sid = (await Api(http, w1.url).create_stream(streamer))["stream_id"]
    from tests.conftest import Client

    async def held() -> int:
        async with http.get(f"{w2.url}/metrics") as r:
            text = await r.text()
        return int(float(re.search(r"^hub_paced_events_total (\S+)$", text, re.M).group(1)))

    async def say(text: str) -> str:
        sent = await s.call("send_message", {"stream_id": sid, "message": text})
        assert sent["success"], sent
        return sent["message"]["message_id"]

    async def say_held(text: str) -> str:
        before = await held()
        message_id = await say(text)

        async def waiting() -> bool:
            return await held() > before

        await eventually(waiting, what=f"{text!r} held on worker 2")
        return message_id

    def chat(c: Client) -> list[str]:
        return [m["message_id"] for m in c.events["chat_message"]]

    s, a, b = Client(), Client(), Client()
    try:
        await s.connect(w1.url, streamer)
        assert (await s.call("join_stream", {"stream_id": sid}))["success"]
        await a.connect(w2.url, token(unique("a")))
        assert (await a.call("join_stream", {"stream_id": sid}))["success"]
        sent = [await say(f"m{i}") for i in range(1, 4)]  # the first written, then held
        await a.wait_for("chat_message", lambda m: m["message_id"] == sent[-1])
        assert chat(a) == sent
        # Held when b enters: a gets it, b does not (it is in b's recent messages instead).
        sent.append(await say_held("before b"))
        b_id = unique("b")
        await b.connect(w2.url, token(b_id))
        joined = await b.call("join_stream", {"stream_id": sid})
        assert sent[-1] in [m["message_id"] for m in joined["recent_messages"]]
        sent.append(await say("with b"))
        await b.wait_for("chat_message", lambda m: m["message_id"] == sent[-1])
        await a.wait_for("chat_message", lambda m: m["message_id"] == sent[-1])
        assert chat(a) == sent
        assert chat(b) == sent[-1:]
        # a is told b joined; b, skipped, is not.
        await a.wait_for("viewer_joined", lambda e: e["user_id"] == b_id)
        assert not [e for e in b.events["viewer_joined"] if e["user_id"] == b_id]
        # Held when a leaves: a still gets it; what follows, only b.
        sent.append(await say_held("before a leaves"))
        assert (await a.call("leave_stream"))["success"]
        assert chat(a) == sent
        sent.append(await say("after a left"))
        await b.wait_for("chat_message", lambda m: m["message_id"] == sent[-1])
        assert chat(b) == sent[-3:]
        assert chat(a) == sent[:-1]
        # Held when the stream ends: the room is emptied only after it went out.
        sent.append(await say_held("last words"))
        status, _ = await Api(http, w1.url).request("POST", f"/api/v1/streaming/{sid}/end", streamer)
        assert status == 200
        await b.wait_for("stream_ended")
        assert chat(b) == sent[-4:]
    finally:
        for c in (s, a, b):
            await c.close()
