"""Per-user limits are sliding windows, exact across workers: at most N accepted in any
W-second window, and a refusal's retry_after is the time until the oldest accepted event
leaves the window."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import Api, unique

LIMITS = {
    "HUB_CHAT_RATE": "5",
    "HUB_CHAT_PERIOD": "30",
    "HUB_TIP_RATE": "3",
    "HUB_TIP_PERIOD": "30",
    "HUB_JOIN_RATE": "4",
    "HUB_JOIN_PERIOD": "30",
}


async def test_one_users_chat_over_two_workers_gets_the_window_and_the_oldests_wait(
    workers, connect, http, token
):
    w1, w2 = await workers(2, **LIMITS)
    sid = (await Api(http, w1.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    who = token(unique("chatter"))
    tabs = [await connect(w.url, who) for w in (w1, w2)]
    for tab in tabs:
        assert (await tab.call("join_stream", {"stream_id": sid}))["success"]
    acks = await asyncio.gather(
        *(tab.call("send_message", {"stream_id": sid, "message": f"{i}"}) for i in range(4) for tab in tabs)
    )
    assert sum(a["success"] for a in acks) == 5
    refusals = [a["error"] for a in acks if not a["success"]]
    assert [r["code"] for r in refusals] == ["rate_limited"] * 3
    # The oldest accepted message leaves the window 30 s after it was sent, not a refill later.
    assert all(28 <= r["retry_after"] <= 30 for r in refusals), refusals
    again = await tabs[0].call("send_message", {"stream_id": sid, "message": "later"})
    assert again["error"]["code"] == "rate_limited" and again["error"]["retry_after"] >= 28


async def test_no_window_of_the_period_holds_more_than_the_limit(workers, connect, http, token):
    """A sender that keeps trying for three periods: counted in any 2-second window, never more
    than 4 accepted (a refilling bucket lets one more through every half second)."""
    (w1,) = await workers(1, HUB_CHAT_RATE="4", HUB_CHAT_PERIOD="2")
    sid = (await Api(http, w1.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    c = await connect(w1.url, token(unique("chatter")))
    assert (await c.call("join_stream", {"stream_id": sid}))["success"]
    accepted: list[float] = []
    start = time.monotonic()
    while time.monotonic() - start < 6:
        ack = await c.call("send_message", {"stream_id": sid, "message": "tick"})
        if ack["success"]:
            accepted.append(time.monotonic())
        await asyncio.sleep(0.05)  # the sender's pace, not a wait for a condition
    assert len(accepted) >= 8  # it did get through again as the window moved
    for i, t in enumerate(accepted):
        in_window = [u for u in accepted[i:] if u - t < 1.95]  # a little under 2 s: clock skew
        assert len(in_window) <= 4, (i, [round(u - start, 2) for u in accepted])


async def test_tips_and_joins_get_the_window_too(workers, connect, http, token):
    w1, w2 = await workers(2, **LIMITS)
    streamer = token(unique("streamer"), "streamer")
    sid = (await Api(http, w1.url).create_stream(streamer))["stream_id"]
    who = token(unique("tipper"))
    tabs = [await connect(w.url, who) for w in (w1, w2)]
    joins = [await tabs[i % 2].call("join_stream", {"stream_id": sid}) for i in range(5)]
    assert [j["success"] for j in joins] == [True] * 4 + [False]
    assert joins[4]["error"]["code"] == "rate_limited" and joins[4]["error"]["retry_after"] >= 28
    tips = await asyncio.gather(
        *(tabs[i % 2].call("send_tip", {"stream_id": sid, "amount": 1}) for i in range(4))
    )
    assert sum(t["success"] for t in tips) == 3
    refused = next(t["error"] for t in tips if not t["success"])
    assert refused["code"] == "rate_limited" and 28 <= refused["retry_after"] <= 30, refused


async def test_tip_ids_of_two_users_never_share_a_key(workers, connect, http, token):
    """User 'X:x' with tip id '1' and user 'X' with tip id 'x:1' (and ids with braces) are four
    tips, not duplicates of one another."""
    (w1,) = await workers(1)
    sid = (await Api(http, w1.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    base = unique("bob")
    pairs = [(f"{base}:x", "1", 1), (base, "x:1", 500), (f"{base}{{x}}", "1", 7), (base + "{x", "}1", 9)]
    acks = []
    for user, tip_id, amount in pairs:
        c = await connect(w1.url, token(user))
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        acks.append(await c.call("send_tip", {"stream_id": sid, "amount": amount, "client_tip_id": tip_id}))
    assert [a.get("duplicate", False) for a in acks] == [False] * 4, acks
    assert [a["tip"]["amount"] for a in acks] == [1, 500, 7, 9]
    status, body = await Api(http, w1.url).request("GET", f"{sid}/stats")
    assert body["stats"]["tip_count"] == 4 and body["stats"]["tips_total"] == 517


async def test_moderation_actions_get_the_window_per_actor(workers, connect, http, token):
    w1, w2 = await workers(2, HUB_MODERATION_RATE="3", HUB_MODERATION_PERIOD="30")
    streamer = token(unique("streamer"), "streamer")
    sid = (await Api(http, w1.url).create_stream(streamer))["stream_id"]
    tab = await connect(w2.url, streamer)
    for seconds in (5, 0):
        assert (await tab.call("set_slow_mode", {"stream_id": sid, "seconds": seconds}))["success"]
    status, body = await Api(http, w1.url).request("PUT", f"{sid}/slow-mode", streamer, json={"seconds": 9})
    assert status == 200, body
    status, body = await Api(http, w1.url).request("PUT", f"{sid}/slow-mode", streamer, json={"seconds": 7})
    assert status == 429 and body["error"]["code"] == "rate_limited", body
    assert 28 <= body["error"]["retry_after"] <= 30
    refused = await tab.call("clear_chat", {"stream_id": sid})
    assert refused["error"]["code"] == "rate_limited" and refused["error"]["retry_after"] >= 28
    # Another moderator of the stream has a window of its own.
    admin = await connect(w1.url, token(unique("admin"), "admin"))
    assert (await admin.call("set_slow_mode", {"stream_id": sid, "seconds": 1}))["success"]
