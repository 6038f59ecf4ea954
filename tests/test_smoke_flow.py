"""The whole data flow once: create, join, chat, tip, end, flush."""

from __future__ import annotations

from decimal import Decimal

from tests.conftest import unique


async def test_stream_lifecycle_reaches_mysql(api, clients, base_url, token, flusher, sql):
    streamer, viewer = unique("streamer"), unique("viewer")
    stream = await api.create_stream(token(streamer, "streamer"))
    sid = stream["stream_id"]
    c = await clients(base_url, token(viewer, name="Viewer"))
    joined = await c.call("join_stream", {"stream_id": sid})
    assert joined["success"] and joined["viewer_count"] == 1
    sent = await c.call("send_message", {"stream_id": sid, "message": "gm"})
    assert sent["success"]
    tip = await c.call("send_tip", {"stream_id": sid, "amount": 12.34})
    assert tip["success"] and tip["tip"]["platform_fee"] == 0.62
    status, body = await api.request("POST", f"{sid}/end", token(streamer, "streamer"))
    assert status == 200 and body["stream"]["status"] == "ENDED"
    await c.wait_for("stream_ended", lambda d: d["stream_id"] == sid)
    await flusher.drain()
    row = sql("SELECT * FROM streams WHERE stream_id = %s", sid)[0]
    assert row["status"] == "ENDED" and row["tips_total"] == Decimal("12.34")
    assert row["platform_fees_total"] == Decimal("0.62") and row["message_count"] == 2
    assert len(sql("SELECT * FROM chat_messages WHERE stream_id = %s", sid)) == 2
    assert len(sql("SELECT * FROM viewing_sessions WHERE stream_id = %s", sid)) == 1
