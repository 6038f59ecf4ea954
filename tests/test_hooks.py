"""The private python-socketio and python-engineio parts the hub hooks (``hub.transport.hooks``)
are still there as they were checked, and every override still runs in a real app."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import time
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import aiohttp
import pytest

from hub.settings import Settings
from hub.storage.keys import NAMESPACE
from hub.transport.fanout import _Deadline
from hub.transport.hooks import CHECKED_WITH, HOOKS, Hook, problems, resolve
from hub.worker import WORKER, create_app
from tests.conftest import Api, Client, eventually, unique


@pytest.mark.parametrize("hook", HOOKS, ids=[hook.upstream for hook in HOOKS])
def test_the_hooked_upstream_code_is_as_it_was_checked(hook: Hook) -> None:
    found = problems(hook)
    installed = {name: version(name) for name in CHECKED_WITH}
    assert not found, f"checked with {CHECKED_WITH}, installed {installed}:\n" + "\n".join(found)


def overrides() -> Iterator[str]:
    """The hub's methods that take the place of an upstream one of the same name."""
    for hook in HOOKS:
        name = hook.upstream.rsplit(".", 1)[1].lstrip("_")
        for where in hook.where:
            if where.rsplit(".", 1)[1].lstrip("_") == name:
                yield where


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every override wrapped, before the app is made, to count its calls."""
    calls: Counter[str] = Counter()
    for where in overrides():
        owner_name, attribute = where.rsplit(".", 1)
        owner, original = resolve(owner_name), resolve(where)

        def wrapper(*args: Any, _original: Any = original, _where: str = where, **kwargs: Any) -> Any:
            calls[_where] += 1
            return _original(*args, **kwargs)

        async def async_wrapper(
            *args: Any, _original: Any = original, _where: str = where, **kwargs: Any
        ) -> Any:
            calls[_where] += 1
            return await _original(*args, **kwargs)

        # python-engineio runs coroutine functions and plain ones differently: each keeps its kind
        counting = async_wrapper if inspect.iscoroutinefunction(original) else wrapper
        monkeypatch.setattr(owner, attribute, functools.wraps(original)(counting))
    return calls


async def test_a_client_session_runs_every_override(
    counted: Counter[str], aiohttp_server: Any, settings: Settings, token: Any
) -> None:
    server = await aiohttp_server(create_app(settings))
    base = str(server.make_url("")).rstrip("/")
    sio = server.app[WORKER].server
    streamer = unique("streamer")
    async with aiohttp.ClientSession() as http:
        stream = await Api(http, base).create_stream(token(streamer, "streamer", name="Streamer"))
    viewer, poller = Client(), Client()
    try:
        await viewer.connect(base, token(unique("viewer")))
        ack = await viewer.call("join_stream", {"stream_id": stream["stream_id"]})
        assert ack["success"], ack
        await poller.connect(base, transport="polling")
        await sio.emit("noop", {}, to=unique("nobody"), namespace=NAMESPACE)  # to the other workers too
        viewer_sid = viewer.sio.get_sid(NAMESPACE)
        await sio.emit("noop", {}, to=viewer_sid, namespace=NAMESPACE)  # python-socketio's own emit
    finally:
        await viewer.close()
        await poller.close()

    async def all_ran() -> bool:
        return all(counted[where] for where in overrides())

    with contextlib.suppress(AssertionError):
        await eventually(all_ran, what="every override run")
    assert not [where for where in overrides() if not counted[where]], f"never ran; ran: {dict(counted)}"


async def test_a_websocket_read_loop_wait_is_cut_after_the_time_allowed() -> None:
    """DirectWebSocket._serve's one timer per connection (fanout._Deadline) stands for
    upstream's wait_for per frame: a wait longer than allowed is cut; a loop that keeps
    getting frames, or is busy with one, is not."""

    async def reader(frames: asyncio.Queue[int | None], allowed: float) -> tuple[bool, int]:
        deadline = _Deadline(allowed)
        got = 0
        try:
            while True:
                deadline.wait()
                try:
                    frame = await frames.get()
                except asyncio.CancelledError:
                    if deadline.cut:
                        return True, got
                    raise
                deadline.done()
                if frame is None:
                    return False, got
                got += 1
                if frame < 0:  # a message whose handling takes longer than a wait may
                    await asyncio.sleep(-frame)
        finally:
            deadline.cancel()

    silent: asyncio.Queue[int | None] = asyncio.Queue()
    started = time.monotonic()
    assert await asyncio.wait_for(reader(silent, 0.2), 5) == (True, 0)
    assert time.monotonic() - started >= 0.2

    busy: asyncio.Queue[int | None] = asyncio.Queue()
    task = asyncio.ensure_future(reader(busy, 0.3))
    for _ in range(8):  # frames 0.1 s apart for longer than 0.3 s, then one handled for 0.5 s
        busy.put_nowait(1)
        await asyncio.sleep(0.1)
    busy.put_nowait(-0.5)
    await asyncio.sleep(0.6)
    busy.put_nowait(None)
    assert await asyncio.wait_for(task, 5) == (False, 9)


async def test_a_joins_event_and_ack_leave_in_one_write(
    aiohttp_server: Any, settings: Settings, token: Any
) -> None:
    """Writer.send holds a socket's packets until the loop turn ends: joined_stream and the
    join's ack are one write to the socket."""
    server = await aiohttp_server(create_app(settings))
    base = str(server.make_url("")).rstrip("/")
    sio = server.app[WORKER].server
    streamer = unique("streamer")
    async with aiohttp.ClientSession() as http:
        stream = await Api(http, base).create_stream(token(streamer, "streamer", name="Streamer"))
    viewer = Client()
    try:
        await viewer.connect(base, token(unique("viewer")))
        writes, deliveries = sio.writer.writes, sio.writer.deliveries
        ack = await viewer.call("join_stream", {"stream_id": stream["stream_id"]})
        assert ack["success"], ack
        await viewer.wait_for("joined_stream")
        assert sio.writer.deliveries - deliveries == 2
        assert sio.writer.writes - writes == 1
    finally:
        await viewer.close()


# -- the sweep that takes the place of python-engineio's service task ------------------------


async def _quick_heartbeat_app(aiohttp_server: Any, settings: Settings) -> tuple[str, Any]:
    """A worker pinging every second and waiting a second for the pong; sessions with no
    namespace are left alone (HUB_NAMESPACE_TIMEOUT) so that only the heartbeat closes them."""
    quick = dataclasses.replace(settings, ping_interval=1.0, ping_timeout=1.0, namespace_timeout=60.0)
    server = await aiohttp_server(create_app(quick))
    return str(server.make_url("")).rstrip("/"), server.app[WORKER].server


async def test_a_long_polling_client_that_vanished_is_closed_when_its_pong_is_overdue(
    aiohttp_server: Any, settings: Settings
) -> None:
    base, sio = await _quick_heartbeat_app(aiohttp_server, settings)
    assert sio.eio.start_service_task is False  # python-engineio's own task never starts
    async with aiohttp.ClientSession() as http, http.get(f"{base}/socket.io/?EIO=4&transport=polling") as r:
        handshake = await r.text()
    sid = json.loads(handshake[1:])["sid"]
    assert sid in sio.eio.sockets
    # The client never polls again: the ping it is sent is never answered.

    async def gone() -> bool:
        return sid not in sio.eio.sockets

    await eventually(gone, what="the vanished long-polling session closed and forgotten")


async def test_a_websocket_that_answers_its_pings_stays_open_pinged_by_the_worker(
    aiohttp_server: Any, settings: Settings
) -> None:
    base, sio = await _quick_heartbeat_app(aiohttp_server, settings)
    url = f"{base.replace('http', 'ws', 1)}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        handshake = await ws.receive_str(timeout=10)
        sid = json.loads(handshake[1:])["sid"]
        assert json.loads(handshake[1:])["pingInterval"] == 1000
        pings = 0
        while pings < 4:  # four heartbeats: over the timeout and several sweeps
            if await ws.receive_str(timeout=10) == "2":
                pings += 1
                await ws.send_str("3")
        eio_socket = sio.eio.sockets.get(sid)
        assert eio_socket is not None and not eio_socket.closed and not eio_socket.closing

        async def pong_taken() -> bool:  # the next ping is scheduled
            return eio_socket.last_ping is None

        await eventually(pong_taken, what="the last pong taken")
        # The pings come from the worker's Pinger: no task per session sleeps until its next one.
        assert not [t for t in asyncio.all_tasks() if "_send_ping" in repr(t.get_coro())]
