"""The web worker: one factory, ``create_app(settings)``, used by ``serve`` and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis
import socketio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily

from hub import metrics as m
from hub.domain.auth import Verifier
from hub.domain.presence import Presence, every
from hub.domain.recovery import Recovery
from hub.domain.service import Hub
from hub.settings import Settings
from hub.storage.connections import StartupError, connect_mysql, connect_redis, redacted
from hub.storage.keys import NAMESPACE, Keys
from hub.storage.mysql import History
from hub.storage.state import State, heartbeat, outbox_lag, persistence_warning
from hub.transport import console, rest
from hub.transport.namespace import StreamingNamespace
from hub.transport.roombus import HubRedisManager
from hub.transport.server import HubPacket, HubServer

log = logging.getLogger(__name__)


class FanoutCollector:
    """Counters kept by the fan-out path itself, read when /metrics is scraped."""

    def __init__(self) -> None:
        self.sio: HubServer | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        sio = self.sio
        if sio is None:
            return
        manager = sio.manager
        for name, doc, value in (
            (
                "hub_deliveries",
                "Room and direct events handed to this worker's sockets",
                sio.writer.deliveries,
            ),
            (
                "hub_socket_writes",
                "Writes to WebSocket transports (one may carry several events)",
                sio.writer.writes,
            ),
            ("hub_cut_off", "Connections cut off for not reading", sio.writer.cut_off),
            ("hub_paced_events", "Room events held for a paced room's next write", sio.pacer.held),
            (
                "hub_room_messages",
                "Room messages received from the streams' Redis channels",
                getattr(manager, "room_messages", 0),
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)


FANOUT = FanoutCollector()
REGISTRY.register(FANOUT)  # type: ignore[arg-type]


@dataclass
class Runtime:
    """What a worker holds while it runs; built at start, closed at exit."""

    hub: Hub | None = None
    presence: Presence | None = None
    redis: aioredis.Redis | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    worker_id: str = field(default_factory=lambda: _worker_id())

    def require_hub(self) -> Hub:
        if self.hub is None:
            raise RuntimeError("the worker is not started")
        return self.hub

    def require_presence(self) -> Presence:
        if self.presence is None:
            raise RuntimeError("the worker is not started")
        return self.presence


def _worker_id() -> str:
    """Host, process and a random tail: unique even when pids repeat across containers."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


RUNTIME = web.AppKey("runtime", Runtime)
SIO = web.AppKey("sio", socketio.AsyncServer)


def say(line: str) -> None:
    """Start-up lines for the operator's console."""
    print(line, file=sys.stdout, flush=True)


def create_app(settings: Settings) -> web.Application:
    runtime = Runtime()
    keys = Keys.of_settings(settings)
    app = web.Application(
        client_max_size=settings.max_payload,
        middlewares=[rest.log_context, rest.cors(settings), rest.errors],
    )
    app[rest.SETTINGS] = settings
    app[rest.VERIFIER] = Verifier(settings)
    app[RUNTIME] = runtime
    app[rest.HUB] = runtime.require_hub

    holder: list[StreamingNamespace] = []

    async def close_room(room: str) -> None:
        await holder[0].stream_closed(room)

    async def banned(room: str, user_id: str, reason: str | None) -> None:
        await holder[0].banned(room, user_id, reason)

    manager = HubRedisManager(
        settings.redis_url,
        channel=keys.channel,
        keys=keys,
        cluster=settings.redis_cluster,
        on_close_room=close_room,
        on_banned=banned,
        redis_options={"health_check_interval": 10},
    )
    sio = HubServer(
        send_queue_limit=settings.send_queue_limit,
        send_buffer_limit=settings.send_buffer_limit,
        fanout_interval=settings.fanout_interval,
        fanout_pace_above=settings.fanout_pace_above,
        namespace_timeout=settings.namespace_timeout,
        async_mode="aiohttp",
        client_manager=manager,
        serializer=HubPacket,
        cors_allowed_origins=list(settings.cors_origins) or None,
        # Events over HUB_MAX_PAYLOAD get payload_too_large; a message over
        # HubServer.TRANSPORT_LIMIT (1 MiB) closes the connection, before it is read whole.
        event_limit=settings.max_payload,
        async_handlers=False,
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app, socketio_path="socket.io")
    if settings.admin_username and settings.admin_password:
        # The Socket.IO Admin UI on the /admin namespace (off unless both are set). Production
        # mode: server statistics only, no per-event hooks; read-only: no emit/join/disconnect.
        sio.instrument(
            auth={"username": settings.admin_username, "password": settings.admin_password},
            mode=settings.admin_mode,
            read_only=True,
            namespace="/admin",
        )
    FANOUT.sio = sio
    app[SIO] = sio
    holder.append(
        StreamingNamespace(sio, settings, app[rest.VERIFIER], runtime.require_hub, runtime.require_presence)
    )
    rest.setup_routes(app)
    console.setup_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_resources)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings, runtime, sio = app[rest.SETTINGS], app[RUNTIME], app[SIO]
    manager = sio.manager
    assert isinstance(manager, HubRedisManager)
    client = await connect_redis(settings, socket_timeout=5)
    say(f"✅ Redis connected at {redacted(settings.redis_url)} (prefix {settings.redis_prefix!r})")
    warning = await persistence_warning(client)
    if warning:
        log.warning(warning)
    try:
        pool = await connect_mysql(settings, maxsize=5)
    except StartupError:
        await client.aclose()
        raise
    say(f"✅ MySQL connected at {redacted(settings.mysql.url)}")
    state = State(client, settings)
    presence = Presence(state)
    runtime.redis, runtime.presence = client, presence
    history = History(pool)
    runtime.hub = Hub(settings, state, history, presence)
    namespace = _namespace(sio)
    presence.on_stream_gone = namespace.stream_gone
    sio.manager_initialized = True
    sio.manager.initialize()
    say(f"✅ Socket.IO streaming initialized on {NAMESPACE}")
    say(f"✅ Streaming routes loaded at {rest.PREFIX}")
    recovery = Recovery(settings, client, history, presence, manager.deliver, runtime.worker_id)
    beat = _heartbeat(settings, client, presence, runtime)
    await beat()
    runtime.tasks = [
        asyncio.create_task(every(settings.presence_refresh, beat, "heartbeat")),
        # Each refresh after a look at the epoch markers (hub.domain.recovery): a Redis that lost its
        # data is healed before the refresh would find the streams gone.
        asyncio.create_task(
            every(settings.presence_refresh, recovery.guard(presence.refresh_once), "presence refresh")
        ),
        asyncio.create_task(recovery.watch()),
        asyncio.create_task(presence.reap_loop(settings.reap_interval)),
        asyncio.create_task(every(settings.presence_refresh, manager.unwatch_idle, "room unsubscribe")),
    ]
    try:
        yield
    finally:
        for task in runtime.tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):  # a task that ignores its cancellation is left
            await asyncio.wait_for(asyncio.gather(*runtime.tasks, return_exceptions=True), 5)
        await manager.close()
        await _leave_all(runtime)
        with contextlib.suppress(Exception):
            await client.delete(Keys.of_settings(settings).worker(runtime.worker_id))
        pool.close()
        await pool.wait_closed()
        await client.aclose()


def _heartbeat(
    settings: Settings, client: aioredis.Redis, presence: Presence, runtime: Runtime
) -> Callable[[], Awaitable[None]]:
    """What this worker tells ``python -m hub inspect``, every HUB_PRESENCE_REFRESH seconds."""
    keys = Keys.of_settings(settings)
    started_ms = int(time.time() * 1000)
    host = socket.gethostname()

    async def beat() -> None:
        streams = {stream_id: len(sids) for stream_id, sids in presence.rooms.items() if sids}
        await heartbeat(
            client,
            keys,
            runtime.worker_id,
            {
                "host": host,
                "pid": os.getpid(),
                "started_ms": started_ms,
                "updated_ms": int(time.time() * 1000),
                "connections": len(presence.conns),
                "watching": sum(streams.values()),
                "streams": orjson.dumps(streams).decode(),
            },
            int(settings.presence_ttl * 1000),
        )

    return beat


def _namespace(sio: socketio.AsyncServer) -> StreamingNamespace:
    handler = sio.handlers[NAMESPACE]["connect"]
    namespace = handler.__self__
    assert isinstance(namespace, StreamingNamespace)
    return namespace


async def _leave_all(runtime: Runtime) -> None:
    """On a clean exit this worker's viewers leave at once instead of waiting for the sweep."""
    if runtime.hub is None or runtime.presence is None:
        return
    for conn in list(runtime.presence.conns.values()):
        with contextlib.suppress(Exception):
            await runtime.hub.disconnect(conn)


async def serve(settings: Settings, host: str, port: int, on_listening: Callable[[], None]) -> None:
    """Run one worker until SIGTERM or SIGINT, then drain it: /readyz turns 503 and new
    connections are refused, its presence goes at once, its connections close over
    HUB_DRAIN_SECONDS, and it exits within HUB_SHUTDOWN_DEADLINE."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    on_listening()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    deadline = loop.time() + settings.shutdown_deadline
    log.info(
        "draining: refusing new connections, closing %d over %.1fs",
        len(app[RUNTIME].presence.conns) if app[RUNTIME].presence else 0,
        settings.drain_seconds,
    )
    try:
        await asyncio.wait_for(
            _namespace(app[SIO]).drain(settings.drain_seconds), settings.shutdown_deadline / 2
        )
    except TimeoutError:
        log.warning("drain did not finish in time; stopping anyway")
    try:
        await asyncio.wait_for(runner.cleanup(), max(0.5, deadline - loop.time()))
    except TimeoutError:
        log.warning("shutdown deadline reached; exiting")


async def healthz(request: web.Request) -> web.Response:
    return rest.json_response({"success": True, "status": "up"})


async def readyz(request: web.Request) -> web.Response:
    runtime, sio = request.app[RUNTIME], request.app[SIO]
    checks: dict[str, str] = {}
    try:
        assert runtime.redis is not None
        await asyncio.wait_for(runtime.redis.ping(), 2)
        checks["redis"] = "up"
    except Exception:
        checks["redis"] = "down"
    try:
        hub = runtime.require_hub()
        await asyncio.wait_for(hub.history.ping(), 2)
        checks["mysql"] = "up"
    except Exception:
        checks["mysql"] = "down"
    pubsub = getattr(sio.manager, "pubsub", None)
    checks["pubsub"] = "up" if pubsub is not None and pubsub.subscribed else "down"
    if _namespace(sio).draining:
        checks["worker"] = "draining"
    ready = all(v == "up" for v in checks.values())
    body: dict[str, object] = {"success": ready, "checks": checks}
    if checks["redis"] == "up" and runtime.redis is not None:
        body["outbox"] = await outbox_lag(runtime.redis, Keys.of_settings(request.app[rest.SETTINGS]))
    return rest.json_response(body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.presence is not None:
        m.CONNECTIONS.set(len(runtime.presence.conns))
        m.WATCHING.set(sum(len(s) for s in runtime.presence.rooms.values()))
        m.STREAMS_WATCHED.set(sum(1 for s in runtime.presence.rooms.values() if s))
    if runtime.redis is not None:
        with contextlib.suppress(Exception):  # a scrape while Redis is down keeps the last figures
            m.set_outbox(
                await asyncio.wait_for(
                    outbox_lag(runtime.redis, Keys.of_settings(request.app[rest.SETTINGS])), 2
                )
            )
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
