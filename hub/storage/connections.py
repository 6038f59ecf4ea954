"""Connections to Redis and MySQL, and the start of every process; shared by the web worker,
the flusher and the command line."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlparse

import aiomysql
import redis
import redis.asyncio as aioredis
import redis.cluster
import redis.retry
import redis.sentinel
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ReadOnlyError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub import logs
from hub.settings import ClusterSettings, SentinelSettings, Settings, SettingsError
from hub.startup import mysql_hint, redis_hint
from hub.storage.mysql import create_pool

T = TypeVar("T")


class StartupError(RuntimeError):
    """A backing service is unreachable at start; the message says which, where, and what to do."""


def run(main: Coroutine[Any, Any, T], gc_thresholds: tuple[int, int, int] | None = None) -> T:
    """Run a process's main coroutine on uvloop (faster sockets and timers) when installed.

    With ``gc_thresholds``, what is loaded so far is moved out of the cyclic collector's sight
    (``gc.freeze``) and it runs less often: with Python's thresholds, a worker whose
    connections keep growing pauses for a full collection each time they grow by a quarter,
    each pause as long as the heap is large (the joins' p99 went from 217 ms to 69 ms)."""
    if gc_thresholds is not None:
        gc.freeze()
        gc.set_threshold(*gc_thresholds)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def redacted(url: str) -> str:
    password = urlparse(url).password
    return url.replace(f":{password}@", ":***@") if password else url


def settings_or_exit() -> Settings | int:
    """The settings from the environment with logging set up, or exit code 2 after one line."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_format)
    return settings


REDIS_MAX_CONNECTIONS = 64

# The asyncio client ``connect_redis`` gives: one server's (REDIS_URL, or the master its sentinels
# name) or a cluster's. Their commands are alike but their classes are not related.
AsyncRedis: TypeAlias = aioredis.Redis | RedisCluster
# The blocking client ``sync_redis`` gives the command line, on the same terms.
SyncRedis: TypeAlias = redis.Redis | redis.cluster.RedisCluster


async def connect_redis(settings: Settings, socket_timeout: float) -> AsyncRedis:
    """A client whose pool waits (up to 5 s) for a free connection when all are busy, rather
    than failing the call (redis-py's default pool raises "Too many connections"). With
    sentinels in REDIS_URL, the same pool on whichever server they name the master; with a
    cluster, a cluster client (``cluster_client``)."""
    options: dict[str, Any] = dict(
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=5,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        health_check_interval=10,
    )
    sentinel, cluster = settings.redis_sentinel, settings.redis_cluster
    client: AsyncRedis
    if cluster is not None:
        client = cluster_client(cluster, socket_timeout=socket_timeout)
    elif sentinel is not None:
        client = master_client(sentinel, **options)
    else:
        pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, **options)
        client = aioredis.Redis.from_pool(pool)  # closing the client closes its pool
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise StartupError(
            f"Redis is not reachable at {redacted(settings.redis_url)} ({exc}); "
            + redis_hint(settings, isinstance(exc, AuthenticationError))
        ) from exc
    return client


# -- Redis Cluster ------------------------------------------------------------------------

_TURN: contextvars.ContextVar[bool] = contextvars.ContextVar("hub_cluster_turn", default=False)


class WaitingCluster(RedisCluster):
    """redis-py's asyncio cluster client, which refuses a command at once (MaxConnectionsError)
    when all of a node's connections are busy, made to wait for one as the hub's plain pool does:
    at most ``max_connections`` commands and pipelines are under way at once (each holds at most
    one connection per node), the others wait up to POOL_WAIT seconds for their turn. A command a
    pipeline sends again after a redirection runs on the pipeline's turn."""

    POOL_WAIT = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turns = asyncio.Semaphore(kwargs.get("max_connections", REDIS_MAX_CONNECTIONS))

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if _TURN.get():
            yield
            return
        try:
            await asyncio.wait_for(self.turns.acquire(), self.POOL_WAIT)
        except TimeoutError:
            raise RedisConnectionError(f"no free Redis connection within {self.POOL_WAIT:g}s") from None
        token = _TURN.set(True)
        try:
            yield
        finally:
            _TURN.reset(token)
            self.turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        # redis-py's command mixins declare an event dispatcher that its own ClusterPipeline never
        # sets and no pipeline command reads, so to mypy every cluster pipeline class is abstract.
        return WaitingPipeline(self, transaction)  # type: ignore[abstract]


class WaitingPipeline(ClusterPipeline):
    """A cluster pipeline that sends its commands on one turn of its ``WaitingCluster``."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        client = self.cluster_client
        assert isinstance(client, WaitingCluster)
        async with client.turn():
            return await super().execute(*args, **kwargs)


def cluster_client(
    target: ClusterSettings, socket_timeout: float | None = None, decode_responses: bool = True
) -> RedisCluster:
    """An asyncio Redis Cluster client that waits for a free connection (``WaitingCluster``).
    MOVED and ASK redirections are followed (the command did not run); a lost connection is not
    retried, for the same reason as behind sentinels: a script may have run, so the call fails
    and the client is told ``unavailable``."""
    return WaitingCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        decode_responses=decode_responses,
        max_connections=REDIS_MAX_CONNECTIONS,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )


# -- Redis behind Sentinel --------------------------------------------------------------

# How long a connection keeps trying to reach the master while the sentinels fail over: the
# old master refusing, or the sentinels naming none yet. Nothing has been sent, so trying again
# is always safe; past this the call fails and the client is told `unavailable`.
MASTER_PATIENCE = 2.0
# The sentinels are asked once each, in turn, without redis-py's retries (ten by default).
SENTINEL_TIMEOUT = 2.0


class MasterDemoted(RedisConnectionError):
    """The server we took for the master answered READONLY: it was demoted (a failover, or a
    partition healed) and refused the command, which therefore never ran."""


class FailoverConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name now, asked again at every (re)connect.

    Connecting is retried for up to MASTER_PATIENCE. A READONLY refusal closes the connection
    and raises MasterDemoted, which the client's retry policy (``COMMAND_RETRY``) answers by
    sending the command once more, on a connection to the new master. Nothing else is retried:
    a connection lost after a command was sent leaves its outcome unknown (a script may have
    run), so that call fails and the client is told ``unavailable``."""

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MASTER_PATIENCE
        delay = 0.05
        while True:
            try:
                await self._connect_retry()
                return
            except AuthenticationError:
                raise  # a wrong password stays wrong
            except (RedisConnectionError, RedisTimeoutError):  # MasterNotFoundError included
                await self.disconnect()
                if loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # redis-py reconnects here to the address it last used; ask the sentinels instead.
        if not self.is_connected:
            await self.connect()
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await Connection.read_response(self, *args, **kwargs)
        except ReadOnlyError as exc:
            await self.disconnect()
            raise MasterDemoted(f"{self.host}:{self.port} is no longer the master") from exc


class FailoverPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's sentinel pool, blocking like the hub's plain pool (waits ``timeout`` seconds
    for a free connection when all are busy). Each pool has its own Sentinel, closed with it."""

    async def get_master_address(self) -> tuple[str, int]:
        try:
            return await super().get_master_address()
        except MasterNotFoundError:
            raise _no_master(self.service_name) from None

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


# Only a refusal that proves the command did not run is sent again.
COMMAND_RETRY = Retry(NoBackoff(), 1, supported_errors=(MasterDemoted,))


def master_client(target: SentinelSettings, **options: Any) -> aioredis.Redis:
    """An asyncio client of the master that ``target``'s sentinels name; ``options`` are the
    connection and pool options (``max_connections``, ``timeout``, ``socket_timeout``…)."""
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=_sentinel_options(Retry(NoBackoff(), 0)))
    return sentinel.master_for(
        target.service,
        connection_pool_class=FailoverPool,
        connection_class=FailoverConnection,
        retry=COMMAND_RETRY,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )


def sync_redis(settings: Settings, **options: Any) -> SyncRedis:
    """A blocking client for the command line (``check``, ``inspect``): from REDIS_URL, or of
    the server its sentinels name the master (asked once: a command lasts a moment), or a
    cluster client."""
    cluster = settings.redis_cluster
    if cluster is not None:
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in cluster.nodes],
            username=cluster.username,
            password=cluster.password,
            **options,
        )
    target = settings.redis_sentinel
    if target is None:
        return redis.Redis.from_url(settings.redis_url, **options)
    sentinel = redis.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=_sentinel_options(redis.retry.Retry(NoBackoff(), 0))
    )
    try:
        host, port = sentinel.discover_master(target.service)
    except redis.sentinel.MasterNotFoundError:
        raise _no_master(target.service) from None
    finally:
        sentinel.close()
    return redis.Redis(
        host=host, port=port, db=target.db, username=target.username, password=target.password, **options
    )


def _no_master(service: str) -> MasterNotFoundError:
    """redis-py's own text lists every sentinel client's settings; this one says what is wrong."""
    return MasterNotFoundError(
        f"no sentinel named a master for {service!r} (sentinels unreachable, "
        "a failover under way, or another service name)"
    )


def _sentinel_options(no_retry: Any) -> dict[str, Any]:
    return {"socket_connect_timeout": SENTINEL_TIMEOUT, "socket_timeout": SENTINEL_TIMEOUT, "retry": no_retry}


async def connect_mysql(settings: Settings, maxsize: int) -> aiomysql.Pool:
    try:
        return await create_pool(settings.mysql, maxsize=maxsize)
    except Exception as exc:
        raise StartupError(
            f"MySQL is not reachable at {redacted(settings.mysql.url)} ({exc}); "
            + mysql_hint(settings.mysql, exc)
        ) from exc
