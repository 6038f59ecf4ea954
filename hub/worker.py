"""The web worker. ``Worker`` is everything one worker runs, built in dependency order when it
starts and closed in reverse; ``create_app(settings)`` is the aiohttp application that starts
one, used by ``serve`` and the tests."""

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
from typing import Any

import aiomysql
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from hub import metrics as m
from hub.domain.auth import Verifier
from hub.domain.presence import Presence, every
from hub.domain.recovery import Recovery
from hub.domain.service import Hub
from hub.frames import NAMESPACE
from hub.settings import Settings
from hub.storage.connections import AsyncRedis, StartupError, connect_mysql, connect_redis, redacted
from hub.storage.heartbeats import heartbeat
from hub.storage.keys import Keys
from hub.storage.mysql import History
from hub.storage.outbox import outbox_lag
from hub.storage.persistence import persistence_warning
from hub.storage.state import State
from hub.transport import console, rest
from hub.transport.namespace import StreamingNamespace
from hub.transport.roombus import HubRedisManager, RoomBus
from hub.transport.server import HubPacket, HubServer

log = logging.getLogger(__name__)


def say(line: str) -> None:
    """Start-up lines for the operator's console."""
    print(line, file=sys.stdout, flush=True)


class Worker:
    """One web worker, built in dependency order: settings → Redis client and MySQL pool →
    State, History, Presence → Hub → the ``/streaming`` namespace → the room bus and the
    Socket.IO server. ``start`` connects and builds it, then begins its background tasks;
    ``close`` stops them and closes the rest in reverse."""

    def __init__(self, settings: Settings, redis: AsyncRedis, pool: aiomysql.Pool) -> None:
        self.settings = settings
        self.id = _worker_id()
        self.keys = Keys.of_settings(settings)
        self.redis = redis
        self.pool = pool
        self.state = State(redis, settings)
        self.history = History(pool)
        self.presence = Presence(self.state)
        self.hub = Hub(settings, self.state, self.history, self.presence)
        self.verifier = Verifier(settings)
        self.namespace = StreamingNamespace(settings, self.verifier, self.hub, self.presence)
        self.manager = HubRedisManager(
            settings.redis_url,
            channel=self.keys.channel,
            keys=self.keys,
            cluster=settings.redis_cluster,
            on_close_room=self.namespace.stream_closed,
            on_banned=self.namespace.banned,
            redis_options={"health_check_interval": 10},
        )
        self.bus = self.manager.bus
        self.server = _socketio_server(settings, self.namespace, self.manager)
        self.recovery = Recovery(settings, redis, self.history, self.presence, self.bus.deliver, self.id)
        self.fanout = CollectorRegistry()
        self.fanout.register(FanoutCounters(self.server, self.bus))
        self.started_ms = int(time.time() * 1000)
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, settings: Settings) -> Worker:
        """Connect to Redis and MySQL, build the worker on them and begin its work."""
        redis = await connect_redis(settings, socket_timeout=5)
        say(f"✅ Redis connected at {redacted(settings.redis_url)} (prefix {settings.redis_prefix!r})")
        warning = await persistence_warning(redis)
        if warning:
            log.warning(warning)
        try:
            pool = await connect_mysql(settings, maxsize=5)
        except StartupError:
            await redis.aclose()
            raise
        say(f"✅ MySQL connected at {redacted(settings.mysql.url)}")
        worker = cls(settings, redis, pool)
        try:
            await worker._begin()
        except BaseException:
            await worker.close()
            raise
        return worker

    async def _begin(self) -> None:
        """The presence leases are taken, the room bus listens, the first heartbeat is written,
        and the loops start."""
        await self.presence.take_leases()
        self.server.manager_initialized = True
        self.manager.initialize()
        say(f"✅ Socket.IO streaming initialized on {NAMESPACE}")
        say(f"✅ Streaming routes loaded at {rest.PREFIX}")
        await self.beat()
        if self.settings.live_idle_end:
            given = await self.state.idle_backfill()
            if given:
                log.info("%d live stream(s) without an idle end given one", given)
        refresh = self.settings.presence_refresh
        self.tasks = [
            asyncio.create_task(every(refresh, self.beat, "heartbeat")),
            # Each refresh after a look at the epoch markers (hub.domain.recovery): a Redis that
            # lost its data is healed before the refresh would find the streams gone.
            asyncio.create_task(
                every(refresh, self.recovery.guard(self.refresh_presence), "presence refresh")
            ),
            asyncio.create_task(self.recovery.watch()),
            asyncio.create_task(self.presence.reap_loop(self.settings.reap_interval)),
            asyncio.create_task(every(self.settings.reap_interval, self.sweep_due, "due sweep")),
            asyncio.create_task(every(refresh, self.bus.unwatch_idle, "room unsubscribe")),
        ]

    async def close(self) -> None:
        """``start`` undone in reverse: the loops, the room bus, this worker's viewers (who leave
        at once instead of waiting for the sweep), its heartbeat, MySQL, Redis."""
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):  # a task that ignores its cancellation is left
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 5)
        await self.bus.close()
        for conn in list(self.presence.conns.values()):
            with contextlib.suppress(Exception):
                await self.hub.disconnect(conn)
        with contextlib.suppress(Exception):  # and what its leases still hold (the sessions)
            await self.state.drop_leases()
        with contextlib.suppress(Exception):
            await self.redis.delete(self.keys.worker(self.id))
        self.pool.close()
        await self.pool.wait_closed()
        await self.redis.aclose()

    async def refresh_presence(self) -> None:
        """This worker's leases renewed (what a lapsed one held re-asserted); the watchers of a
        stream found no longer live leave its room."""
        await self.presence.refresh_once(self.namespace.stream_gone)

    async def sweep_due(self) -> None:
        """What has come due in each shard, read from its indexes a bounded call at a time:
        kept viewer events sent, idle streams ended."""
        for k in self.keys.all:
            more = True
            while more:
                due = await self.state.due(k)
                for stream_id, streamer_id in due.idle:
                    await self.hub.streams.end_idle(stream_id, streamer_id)
                more = due.more

    async def beat(self) -> None:
        """What this worker tells ``python -m hub inspect``, every HUB_PRESENCE_REFRESH seconds."""
        streams = {stream_id: len(sids) for stream_id, sids in self.presence.rooms.items() if sids}
        await heartbeat(
            self.redis,
            self.keys,
            self.id,
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_ms": self.started_ms,
                "updated_ms": int(time.time() * 1000),
                "connections": len(self.presence.conns),
                "watching": sum(streams.values()),
                "streams": orjson.dumps(streams).decode(),
            },
            int(self.settings.presence_ttl * 1000),
        )

    async def checks(self) -> dict[str, str]:
        """What ``/readyz`` reports: Redis, MySQL and the room bus's subscription, each up or
        down, and ``worker: draining`` once the worker stops."""
        checks = {
            "redis": await _up(self.redis.ping()),
            "mysql": await _up(self.history.ping()),
            "pubsub": "up" if self.bus.subscribed else "down",
        }
        if self.namespace.draining:
            checks["worker"] = "draining"
        return checks

    async def read_gauges(self) -> None:
        """The figures cheaper to read than to count, read when ``/metrics`` is scraped."""
        m.CONNECTIONS.set(len(self.presence.conns))
        m.WATCHING.set(sum(len(s) for s in self.presence.rooms.values()))
        m.STREAMS_WATCHED.set(sum(1 for s in self.presence.rooms.values() if s))
        with contextlib.suppress(Exception):  # a scrape while Redis is down keeps the last figures
            m.set_outbox(await asyncio.wait_for(outbox_lag(self.redis, self.keys), 2))


def _worker_id() -> str:
    """Host, process and a random tail: unique even when pids repeat across containers."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _socketio_server(
    settings: Settings, namespace: StreamingNamespace, manager: HubRedisManager
) -> HubServer:
    """The worker's Socket.IO server, with its namespace and its client manager (the room bus)."""
    server = HubServer(
        streaming=namespace,
        send_queue_limit=settings.send_queue_limit,
        send_buffer_limit=settings.send_buffer_limit,
        fanout_interval=settings.fanout_interval,
        fanout_pace_above=settings.fanout_pace_above,
        namespace_timeout=settings.namespace_timeout,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
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
    if settings.admin_username and settings.admin_password:
        # The Socket.IO Admin UI on the /admin namespace (off unless both are set). Production
        # mode: server statistics only, no per-event hooks; read-only: no emit/join/disconnect.
        server.instrument(
            auth={"username": settings.admin_username, "password": settings.admin_password},
            mode=settings.admin_mode,
            read_only=True,
            namespace="/admin",
        )
        # Its statistics count the sockets of the namespaces in ``handlers`` only (python-socketio
        # 5.18's InstrumentedAsyncServer): the namespace class is listed there, with no handler.
        server.handlers.setdefault(namespace.namespace, {})
    return server


async def _up(check: Awaitable[object]) -> str:
    """``up`` when the check answers within 2 s: a readiness probe must not hang."""
    try:
        await asyncio.wait_for(check, 2)
        return "up"
    except Exception:
        return "down"


class FanoutCounters:
    """Counters kept by one worker's fan-out path itself (its server's writer and pacer, its
    room bus), served from the worker's own registry (``Worker.fanout``)."""

    def __init__(self, server: HubServer, bus: RoomBus) -> None:
        self.server = server
        self.bus = bus

    def collect(self) -> Iterator[CounterMetricFamily]:
        writer, pacer = self.server.writer, self.server.pacer
        for name, doc, value in (
            ("hub_deliveries", "Room and direct events handed to this worker's sockets", writer.deliveries),
            (
                "hub_socket_writes",
                "Writes to WebSocket transports (one may carry several events)",
                writer.writes,
            ),
            ("hub_cut_off", "Connections cut off for not reading", writer.cut_off),
            ("hub_paced_events", "Room events held for a paced room's next write", pacer.held),
            (
                "hub_room_messages",
                "Room messages received from the streams' Redis channels",
                self.bus.room_messages,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)


# -- the aiohttp application ---------------------------------------------------------------

WORKER = web.AppKey("worker", Worker)


def create_app(settings: Settings) -> web.Application:
    """One worker's application: its routes now; the worker itself once the application
    starts (``app[WORKER]``, and for the REST routes its service, ``rest.HUB``)."""
    app = web.Application(
        client_max_size=settings.max_payload,
        middlewares=[rest.log_context, rest.cors(settings), rest.errors],
    )
    app[rest.SETTINGS] = settings
    # The Engine.IO endpoint, as python-engineio's aiohttp driver would route it.
    app.router.add_get("/socket.io/", socketio_request)
    app.router.add_post("/socket.io/", socketio_request)
    app.router.add_route("OPTIONS", "/socket.io/", socketio_request)
    rest.setup_routes(app)
    console.setup_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_running)
    return app


async def _running(app: web.Application) -> AsyncIterator[None]:
    """The worker, from the application's start to its cleanup."""
    worker = await Worker.start(app[rest.SETTINGS])
    app[WORKER] = worker
    app[rest.HUB] = worker.hub
    app[rest.VERIFIER] = worker.verifier
    try:
        yield
    finally:
        await worker.close()


async def socketio_request(request: web.Request) -> Any:
    """Engine.IO's requests, answered by the worker's Socket.IO server: the route is the
    application's from the start, the server the worker's once it has started."""
    return await request.app[WORKER].server.handle_request(request)


async def healthz(request: web.Request) -> web.Response:
    return rest.json_response({"success": True, "status": "up"})


async def readyz(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    checks = await worker.checks()
    ready = all(v == "up" for v in checks.values())
    body: dict[str, object] = {"success": ready, "checks": checks}
    if checks["redis"] == "up":
        body["outbox"] = await outbox_lag(worker.redis, worker.keys)
    return rest.json_response(body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    await worker.read_gauges()
    return web.Response(
        body=generate_latest() + generate_latest(worker.fanout),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


async def serve(settings: Settings, sockets: list[socket.socket], on_listening: Callable[[], None]) -> None:
    """Run one worker on ``sockets`` (already listening: ``hub.startup.listen`` took the port
    before the worker connects or registers anything) until SIGTERM or SIGINT, then drain it:
    /readyz turns 503 and new connections are refused, its presence goes at once, its
    connections close over HUB_DRAIN_SECONDS, and it exits within HUB_SHUTDOWN_DEADLINE."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
    started = False
    try:
        await runner.setup()  # the worker starts
        started = True
        for sock in sockets:
            await web.SockSite(runner, sock).start()
    except BaseException:
        if started:
            await runner.cleanup()  # the worker stops: its loops end before the event loop does
        for sock in sockets:
            sock.close()
        raise
    on_listening()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    deadline = loop.time() + settings.shutdown_deadline
    worker = app[WORKER]
    log.info(
        "draining: refusing new connections, closing %d over %.1fs",
        len(worker.presence.conns),
        settings.drain_seconds,
    )
    try:
        await asyncio.wait_for(worker.namespace.drain(settings.drain_seconds), settings.shutdown_deadline / 2)
    except TimeoutError:
        log.warning("drain did not finish in time; stopping anyway")
    try:
        await asyncio.wait_for(runner.cleanup(), max(0.5, deadline - loop.time()))
    except TimeoutError:
        log.warning("shutdown deadline reached; exiting")
