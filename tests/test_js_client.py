"""The contract against the real JavaScript client: socket.io-client 4.x across two workers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import socket_io_client, unique


@pytest.fixture(scope="module")
def node_client() -> Path:
    return socket_io_client() / "cross_worker.mjs"


async def test_js_client_joins_chats_and_tips_across_two_workers(node_client, workers, api, token):
    w1, w2 = await workers(2)
    streamer = unique("streamer")
    api.base = w1.url
    stream = await api.create_stream(token(streamer, "streamer"))
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(node_client),
        w1.url,
        w2.url,
        stream["stream_id"],
        token(unique("js-a")),
        token(unique("js-b")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen == {
        "joinedA": True,
        "joinedB": True,
        "viewerCountB": 2,
        "transportA": "websocket",
        "chatOnA": "hello from B",
        "tipOnB": 2.5,
        "feeOnB": 0.13,
        "badCode": "invalid",
    }
