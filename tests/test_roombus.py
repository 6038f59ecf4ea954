"""The room bus on its own, on the test Redis: what it subscribes, what it writes and calls,
how it comes back after losing its connection, and how it stops."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from hub import frames
from hub.settings import Settings
from hub.storage.keys import Keys
from hub.transport.pubsub import open_link
from hub.transport.roombus import RoomBus
from tests.conftest import eventually


class Recorder:
    """What the bus wrote and called, in order, and the rooms it is told are local."""

    def __init__(self) -> None:
        self.local: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []
        self.passed: list[bytes] = []

    def write(self, room: str, skip: str | None, texts: list[bytes]) -> None:
        self.calls.append(("events", room, skip, texts))

    async def closed(self, room: str) -> None:
        self.calls.append(("close", room))

    async def banned(self, room: str, user_id: str, reason: str | None) -> None:
        self.calls.append(("ban", room, user_id, reason))


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[tuple[RoomBus, Recorder, str]]:
    """A bus listening on the test Redis, its connections named so a test can cut them."""
    name = f"roombus-{uuid.uuid4().hex[:8]}"
    keys = Keys.of_settings(settings)
    recorder = Recorder()
    room_bus = RoomBus(
        lambda: open_link(settings.redis_url, None, {"client_name": name}),
        keys,
        f"{keys.channel}:{name}",
        lambda: recorder.local,
        recorder.write,
        recorder.closed,
        recorder.banned,
    )

    async def listen() -> None:
        async for data in room_bus.listen():
            recorder.passed.append(data)

    listener = asyncio.create_task(listen())
    await eventually(lambda: _true(room_bus.subscribed), what="the bus subscribed")
    yield room_bus, recorder, name
    await room_bus.close()
    with contextlib.suppress(asyncio.CancelledError):
        await listener


async def _true(value: bool) -> bool:
    return value


def channel(settings: Settings, room: str) -> str:
    return Keys.of_settings(settings).of(room).room(room)


async def until_recorded(recorder: Recorder, entry: tuple[Any, ...], what: str) -> None:
    await eventually(lambda: _true(entry in recorder.calls), what=what)


async def test_watch_returns_subscribed_and_messages_reach_the_room_they_were_subscribed_for(
    bus: tuple[RoomBus, Recorder, str], settings: Settings, rds: aioredis.Redis
) -> None:
    room_bus, recorder, _ = bus
    room = f"with:colons:{uuid.uuid4().hex[:6]}"  # the room is the one watched, not a cut name
    await room_bus.watch(room)
    ((_, count),) = await rds.pubsub_numsub(channel(settings, room))
    assert count == 1
    event = frames.event("chat_message", b'{"n":1}')
    await rds.publish(channel(settings, room), frames.room_message(event))
    await rds.publish(channel(settings, room), frames.room_message(event, skip="sid-1"))
    await until_recorded(recorder, ("events", room, "sid-1", [event]), "the skipping event")
    assert recorder.calls == [("events", room, None, [event]), ("events", room, "sid-1", [event])]
    assert room_bus.room_messages == 2


async def test_orders_call_the_bus_callbacks(
    bus: tuple[RoomBus, Recorder, str], settings: Settings, rds: aioredis.Redis
) -> None:
    room_bus, recorder, _ = bus
    room = uuid.uuid4().hex
    await room_bus.watch(room)
    await rds.publish(channel(settings, room), frames.ban("u-1", "spam"))
    await rds.publish(channel(settings, room), frames.CLOSE)
    await until_recorded(recorder, ("close", room), "the close order")
    assert recorder.calls == [("ban", room, "u-1", "spam"), ("close", room)]


async def test_deliver_handles_own_messages_as_the_channel_would(
    bus: tuple[RoomBus, Recorder, str],
) -> None:
    room_bus, recorder, _ = bus
    first, second = frames.event("a", b"1"), frames.event("b", b"2")
    await room_bus.deliver("r", [frames.room_message(first), frames.room_message(second), frames.CLOSE])
    assert recorder.calls == [("events", "r", None, [first, second]), ("close", "r")]


async def test_unwatch_idle_drops_the_rooms_no_local_socket_is_in(
    bus: tuple[RoomBus, Recorder, str], settings: Settings, rds: aioredis.Redis
) -> None:
    room_bus, recorder, _ = bus
    kept, idle = uuid.uuid4().hex, uuid.uuid4().hex
    await room_bus.watch(kept)
    await room_bus.watch(idle)
    recorder.local.add(kept)
    await room_bus.unwatch_idle()
    assert room_bus.watched == {kept}

    async def unsubscribed() -> bool:
        ((_, count),) = await rds.pubsub_numsub(channel(settings, idle))
        return count == 0

    await eventually(unsubscribed, what="the idle room's channel unsubscribed")
    event = frames.event("x", b"0")
    await rds.publish(channel(settings, kept), frames.room_message(event))
    await until_recorded(recorder, ("events", kept, None, [event]), "the kept room's event")
    assert all(call[1] != idle for call in recorder.calls)


async def test_the_passthrough_channel_is_yielded_by_the_listener(
    bus: tuple[RoomBus, Recorder, str], settings: Settings, rds: aioredis.Redis
) -> None:
    room_bus, recorder, name = bus
    keys = Keys.of_settings(settings)
    await room_bus.publish(f"{keys.channel}:{name}", b"for python-socketio")
    await eventually(lambda: _true(recorder.passed == [b"for python-socketio"]), what="the passthrough")


async def test_a_lost_connection_is_resubscribed_with_every_watched_room(
    bus: tuple[RoomBus, Recorder, str], settings: Settings, rds: aioredis.Redis
) -> None:
    room_bus, recorder, name = bus
    room = uuid.uuid4().hex
    await room_bus.watch(room)
    clients = await rds.client_list()
    ids = [c["id"] for c in clients if c.get("name") == name]
    assert ids
    for client_id in ids:
        await rds.client_kill_filter(_id=client_id)
    event = frames.event("after", b"0")

    async def received() -> bool:  # published until the resubscribed listener hears it
        await rds.publish(channel(settings, room), frames.room_message(event))
        return ("events", room, None, [event]) in recorder.calls

    await eventually(received, what="the room's events after the reconnect", every=0.1)


async def test_close_stops_the_listener(settings: Settings) -> None:
    keys = Keys.of_settings(settings)
    recorder = Recorder()
    room_bus = RoomBus(
        lambda: open_link(settings.redis_url, None, {}),
        keys,
        keys.channel,
        lambda: recorder.local,
        recorder.write,
        recorder.closed,
        recorder.banned,
    )
    ended: list[str] = []

    async def listen() -> None:
        try:
            async for _ in room_bus.listen():
                pass
            ended.append("returned")
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    listener = asyncio.create_task(listen())
    await eventually(lambda: _true(room_bus.subscribed), what="the bus subscribed")
    await room_bus.close()
    assert listener.done() and ended == ["cancelled"]
    assert not room_bus.subscribed
