"""``python -m hub inspect``: what an operator sees of live streams, workers and the outbox."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from tests.conftest import ROOT, Api, Client, eventually, unique


async def inspect(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        "inspect",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_inspect_shows_streams_workers_viewers_and_chat(workers, http, token, env):
    w1, w2 = await workers(2)
    streamer_id = unique("streamer")
    sid = (await Api(http, w1.url).create_stream(token(streamer_id, "streamer"), title="Inspect me"))[
        "stream_id"
    ]
    a, b = Client(), Client()
    try:
        await a.connect(w1.url, token(unique("a")))
        await b.connect(w2.url, token(unique("b")))
        for c in (a, b):
            assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        sent = await a.call("send_message", {"stream_id": sid, "message": "seen by inspect"})
        assert sent["success"]

        async def beating() -> bool:  # both workers' heartbeats count their viewer
            code, out, _ = await inspect(env, "--json")
            return code == 0 and sum(w["streams"].get(sid, 0) for w in json.loads(out)["workers"]) == 2

        await eventually(beating, what="both workers' heartbeats show their viewer")
        code, out, _ = await inspect(env, "--json")
        overview = json.loads(out)
        [live] = [s for s in overview["live_streams"] if s["stream_id"] == sid]
        assert (live["viewer_count"], live["message_count"], live["title"]) == (2, 1, "Inspect me")
        assert len(overview["workers"]) == 2 and all(w["connections"] >= 1 for w in overview["workers"])
        assert {"entries", "pending", "oldest_age_seconds", "dead_letters"} <= overview["outbox"].keys()

        code, out, _ = await inspect(env, sid, "--json")
        assert code == 0
        one = json.loads(out)
        assert one["viewer_count"] == 2 and one["streamer_id"] == streamer_id
        assert sorted(one["connections_per_worker"].values()) == [1, 1]
        assert [m["message"] for m in one["recent_messages"]] == ["seen by inspect"]

        code, text, _ = await inspect(env)
        assert code == 0 and sid in text and "Workers: 2" in text and "Outbox:" in text
        code, text, _ = await inspect(env, sid)
        assert code == 0 and "seen by inspect" in text and "viewers 2" in text
    finally:
        await a.close()
        await b.close()


async def test_inspect_answers_unknown_and_malformed_streams_clearly(env, settings):
    code, _, err = await inspect(env, str(uuid.uuid4()))
    assert code == 1 and "No stream" in err
    code, _, err = await inspect(env, "not-an-id")
    assert code == 2 and "not a stream id" in err
    code, _, err = await inspect({**env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert code == 1 and "Redis at redis://127.0.0.1:1/0" in err


async def test_inspect_writes_money_as_the_hub_does(workers, http, token, env):
    """Tips and alert prices with their decimals as written (``10.50``, never ``10.5``, an
    ``orjson.Fragment`` or a float's exponent), in the text and in ``--json``."""
    [w] = await workers(1, HUB_TIP_MIN="0.05", HUB_TIP_MAX="100000", HUB_PLATFORM_FEE="0.10")
    streamer = token(unique("streamer"), "streamer")
    sid = (await Api(http, w.url).create_stream(streamer, title="Money"))["stream_id"]
    viewer, host = Client(), Client()
    try:
        await viewer.connect(w.url, token(unique("tipper")))
        await host.connect(w.url, streamer)
        assert (await viewer.call("join_stream", {"stream_id": sid}))["success"]
        for amount in ("10.50", "0.05", "64250.50"):
            ack = await viewer.call("send_tip", {"stream_id": sid, "amount": amount})
            assert ack["success"], ack
        alert = {"stream_id": sid, "message": "in", "symbol": "btc-usd", "side": "buy", "price": "0.00001234"}
        assert (await host.call("send_alert", alert))["success"]

        code, text, _ = await inspect(env, sid)
        assert code == 0
        assert "tips 3 totalling 64261.05 (fees 6426.11)" in text, text
        tips = [line for line in text.splitlines() if "[TIP " in line]
        assert [line.split("[TIP ")[1].split("]")[0] for line in tips] == ["10.50", "0.05", "64250.50"], text
        assert "BTC-USD" in text and "0.00001234" in text, text

        code, text, _ = await inspect(env)
        [line] = [line for line in text.splitlines() if sid in line]
        assert "3 tips (64261.05)" in line, text

        code, out, _ = await inspect(env, sid, "--json")
        assert '"tips_total": 64261.05' in out and '"tip_amount": 10.50' in out, out
        assert '"price": 0.00001234' in out, out
    finally:
        await viewer.close()
        await host.close()
