"""Fixtures: real Redis and MariaDB, a private key prefix and database per test run.

Nothing is mocked. Each run gets its own Redis prefix and its own database, and cleans
only those. Waits poll for a condition under a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pymysql
import pytest
import redis
import redis.asyncio as aioredis
import socketio

from hub.domain.auth import mint
from hub.settings import Settings
from hub.storage.keys import NAMESPACE
from hub.storage.mysql import Writer, create_pool, migrate
from tests.bench.procs import npm_installed
from workers.flusher import Flusher

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-" + "x" * 40
DEADLINE = 10.0


def next_month() -> str:
    """A scheduled_at a month ahead, at a whole second, as an ISO 8601 UTC time."""
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def env(run_id: str) -> dict[str, str]:
    """The environment of this test run, for in-process settings and for worker processes."""
    return {
        "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "MYSQL_URL": f"mysql://root@127.0.0.1:3306/hub_test_{run_id}",
        "HUB_REDIS_PREFIX": f"hubtest:{run_id}:",
        # TEST_REDIS_SHARDS=4 runs the suite on one Redis with the live state in four shards.
        "HUB_REDIS_SHARDS": os.environ.get("TEST_REDIS_SHARDS", "1"),
        "HUB_JWT_SECRET": SECRET,
        "HUB_PRESENCE_TTL": "3",
        "HUB_PRESENCE_REFRESH": "1",
        "HUB_REAP_INTERVAL": "0.5",
        "HUB_FLUSH_CLAIM_IDLE_MS": "500",
        "HUB_JWT_LEEWAY": "0",
        "HUB_CONN_RATE": "100000",
        "HUB_ADDRESS_MAX_CONNS": "100000",
        "HUB_JOIN_RATE": "1000",
        "HUB_FLUSHER_METRICS_PORT": "0",  # a test that reads them gives a free port
    }


@pytest.fixture(scope="session")
def settings(env: dict[str, str]) -> Iterator[Settings]:
    s = Settings.from_env(env)
    migrate(s.mysql)
    yield s
    conn = pymysql.connect(
        host=s.mysql.host, port=s.mysql.port, user=s.mysql.user, password=s.mysql.password, autocommit=True
    )
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{s.mysql.database}`")
    conn.close()
    r = redis.Redis.from_url(s.redis_url)
    for key in r.scan_iter(match=f"{s.redis_prefix}*", count=1000):
        r.unlink(key)
    r.close()


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    def make(user_id: str, *roles: str, name: str | None = None, ttl: int = 3600) -> str:
        return mint(settings, user_id, name, list(roles), ttl)

    return make


# -- the web worker in this process ---------------------------------------------------


@pytest.fixture
async def server(aiohttp_server: Any, settings: Settings) -> Any:
    from hub.worker import create_app

    return await aiohttp_server(create_app(settings))


@pytest.fixture
def base_url(server: Any) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    """REST calls against one worker."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.base + path if path.startswith("/") else f"{self.base}/api/v1/streaming/{path}"
        async with self.session.request(method, url, headers=headers, **kwargs) as resp:
            text = await resp.text()
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = text
            return resp.status, body

    async def create_stream(self, token: str, **fields: Any) -> dict[str, Any]:
        payload = {"title": "Live trading", "category": "crypto", **fields}
        status, body = await self.request("POST", "create", token, json=payload)
        assert status == 201, body
        return body["stream"]


@pytest.fixture
def api(http: aiohttp.ClientSession, base_url: str) -> Api:
    return Api(http, base_url)


# -- Socket.IO clients ----------------------------------------------------------------


class Client:
    """A real python-socketio AsyncClient on ``/streaming`` that records every event."""

    def __init__(self, source: str | None = None) -> None:
        """``source``: a loopback address to connect from (127.0.0.2, …), for per-address limits."""
        self._session = None
        if source is not None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
        self.sio = socketio.AsyncClient(reconnection=False, http_session=self._session)
        self.events: dict[str, list[Any]] = defaultdict(list)
        self._changed = asyncio.Event()
        self.sio.on("*", self._record, namespace=NAMESPACE)
        self.sio.on(
            "connect_error", lambda data=None: self.events["connect_error"].append(data), namespace=NAMESPACE
        )

    async def _record(self, event: str, data: Any = None) -> None:
        self.events[event].append(data)
        self._changed.set()

    async def connect(self, url: str, token: str | None = None, transport: str = "websocket") -> None:
        await self.sio.connect(
            url,
            namespaces=[NAMESPACE],
            auth={"token": token} if token else None,
            transports=[transport],
            wait_timeout=DEADLINE,
        )

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data, namespace=NAMESPACE, timeout=DEADLINE)

    async def emit(self, event: str, *args: Any) -> None:
        await self.sio.emit(event, args if len(args) != 1 else args[0], namespace=NAMESPACE)

    async def wait_for(
        self, event: str, match: Callable[[Any], bool] = lambda _: True, timeout: float = DEADLINE
    ) -> Any:
        """The first recorded ``event`` whose payload matches, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for data in self.events[event]:
                if match(data):
                    return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} matching within {timeout}s; got {dict(self.events)}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)
        if self._session is not None:
            await self._session.close()


@pytest.fixture
async def clients(server: Any) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Socket.IO clients, closed before the in-process worker stops."""
    made: list[Client] = []

    async def connect(url: str, token: str | None = None, transport: str = "websocket") -> Client:
        client = Client()
        await client.connect(url, token, transport)
        made.append(client)
        return client

    yield connect
    for client in made:
        await client.close()


EVENT = "2/streaming,"  # an event packet's head on /streaming, before its JSON


class RawSocket:
    """One Socket.IO connection on /streaming spoken by hand, Engine.IO packet by packet, over
    WebSocket or long-polling: for frames no real client sends, and for two long-polling POSTs
    in flight at once. Every packet received is kept, in order; pings are answered."""

    def __init__(self, base_url: str, transport: str = "websocket") -> None:
        self.url = f"{base_url}/socket.io/?EIO=4&transport={transport}"
        self.transport = transport
        self.http = aiohttp.ClientSession()
        self.received: list[str] = []
        self.closed = False
        self.sid: str | None = None  # the /streaming sid
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def open(self, token: str | None = None, connect: bool = True) -> RawSocket:
        """Handshake, then (unless told not to) connect the namespace, with ``token`` if given."""
        if self.transport == "websocket":
            self._ws = await self.http.ws_connect(self.url.replace("http", "ws", 1))
            handshake = await self._ws.receive_str(timeout=DEADLINE)
        else:
            async with self.http.get(self.url) as resp:
                handshake = await resp.text()
        assert handshake.startswith("0"), handshake
        self.url += "&sid=" + json.loads(handshake[1:])["sid"]
        self._reader = asyncio.create_task(self._read())
        if not connect:
            return self
        await self.send("0/streaming," + (json.dumps({"token": token}) if token else ""))
        connected = await self.next(lambda p: p.startswith(("0/streaming,", "4/streaming,")))
        assert connected.startswith("0/streaming,"), connected
        self.sid = json.loads(connected.removeprefix("0/streaming,"))["sid"]
        return self

    async def send(self, *packets: str) -> int:
        """Socket.IO packets as Engine.IO messages (``"4" + packet``); ``raw_send`` for any text."""
        return await self.raw_send(*("4" + p for p in packets))

    async def send_bytes(self, data: bytes) -> None:
        """One binary WebSocket frame."""
        assert self._ws is not None
        await self._ws.send_bytes(data)

    async def raw_send(self, *texts: str) -> int:
        """Engine.IO packets as they are: WebSocket frames, or one long-polling POST. Returns the
        POST's status (200 over WebSocket)."""
        if self._ws is not None:
            for text in texts:
                await self._ws.send_str(text)
            return 200
        return await self.post("\x1e".join(texts).encode())

    async def post(self, body: bytes) -> int:
        """One long-polling POST of any body; returns its status."""
        async with self.http.post(self.url, data=body) as resp:
            if resp.status != 200:
                self.closed = True
            return resp.status

    async def _read(self) -> None:
        try:
            while not self.closed:
                if self._ws is not None:
                    message = await self._ws.receive()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    packets = [message.data]
                else:
                    async with self.http.get(self.url) as resp:
                        if resp.status != 200:
                            break
                        packets = (await resp.text()).split("\x1e")
                for packet in packets:
                    if packet == "2":
                        await self.raw_send("3")
                    elif packet == "1":
                        self.closed = True
                    elif packet != "6":
                        self.received.append(packet[1:] if packet.startswith("4") else packet)
                self._changed.set()
        except aiohttp.ClientError:
            pass
        finally:
            self.closed = True
            self._changed.set()

    async def next(self, match: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """The first Socket.IO packet received (without Engine.IO's ``4``) that matches, waiting
        up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for packet in self.received:
                if match(packet):
                    return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError(
                    f"no matching packet within {timeout}s (closed: {self.closed}); "
                    f"got {[p[:120] for p in self.received]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def ack(self, ack_id: int, timeout: float = DEADLINE) -> Any:
        prefix = f"3/streaming,{ack_id}["
        packet = await self.next(lambda p: p.startswith(prefix), timeout)
        return json.loads(packet[len(prefix) - 1 :])[0]

    def events(self, name: str) -> list[Any]:
        """The payloads of every ``name`` event received so far."""
        prefix = f'2/streaming,["{name}",'
        return [json.loads(p[len(EVENT) :])[1] for p in self.received if p.startswith(prefix)]

    async def event(
        self, name: str, match: Callable[[Any], bool] = lambda _: True, timeout: float = DEADLINE
    ) -> Any:
        prefix = f'2/streaming,["{name}",'
        packet = await self.next(
            lambda p: p.startswith(prefix) and match(json.loads(p[len(EVENT) :])[1]), timeout
        )
        return json.loads(packet[len(EVENT) :])[1]

    async def wait_closed(self, timeout: float = DEADLINE) -> None:
        async def closed() -> bool:
            return self.closed

        await eventually(closed, timeout, "the connection closed")

    async def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                await self.raw_send("1")
        self.closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        await self.http.close()


@pytest.fixture
async def raw(base_url: str) -> AsyncIterator[Callable[..., Awaitable[RawSocket]]]:
    """Hand-spoken Socket.IO connections to the in-process worker, closed afterwards."""
    made: list[RawSocket] = []

    async def open_raw(
        token: str | None = None, transport: str = "websocket", connect: bool = True
    ) -> RawSocket:
        socket_ = RawSocket(base_url, transport)
        made.append(socket_)
        return await socket_.open(token, connect)

    yield open_raw
    for socket_ in made:
        await socket_.close()


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout: float = DEADLINE,
    what: str = "condition",
    every: float = 0.05,
) -> None:
    """Poll ``check`` every ``every`` seconds until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(every)


# -- Redis, MySQL and the flusher -----------------------------------------------------


@pytest.fixture
async def rds(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def flusher(settings: Settings, rds: aioredis.Redis) -> AsyncIterator[Flusher]:
    pool = await create_pool(settings.mysql, maxsize=2)
    f = Flusher(settings, rds, Writer(pool), consumer=unique("test-flusher"))
    await f.ensure_group()
    yield f
    pool.close()
    await pool.wait_closed()


@pytest.fixture
def sql(settings: Settings) -> Iterator[Callable[..., list[dict[str, Any]]]]:
    m = settings.mysql
    conn = pymysql.connect(
        host=m.host,
        port=m.port,
        user=m.user,
        password=m.password,
        database=m.database,
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
    )

    def query(statement: str, *args: Any) -> list[dict[str, Any]]:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())

    yield query
    conn.close()


# -- worker processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """A ``python -m hub serve`` process on loopback."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log_path.read_text()}")
            try:
                async with session.get(f"{self.url}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, 20, f"worker on port {self.port} ready")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str, str], Awaitable[Client]]]:
    """Socket.IO clients of the worker processes, closed afterwards (conftest's ``clients``
    would also start an in-process worker this test has no use for)."""
    made: list[Client] = []

    async def open_client(url: str, token: str) -> Client:
        client = Client()
        made.append(client)
        await client.connect(url, token)
        return client

    yield open_client
    for client in made:
        await client.close()


@pytest.fixture
async def workers(
    env: dict[str, str], http: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[list[Worker]]]]:
    started: list[Worker] = []

    async def start(n: int, **overrides: str) -> list[Worker]:
        worker_env = {**env, **overrides}
        batch = [
            Worker(worker_env, free_port(), tmp_path / f"worker-{len(started) + i}.log") for i in range(n)
        ]
        started.extend(batch)
        for w in batch:
            await w.ready(http)
        return batch

    yield start
    for w in started:
        w.stop()


JS = Path(__file__).resolve().parent / "js"


def socket_io_client() -> Path:
    """tests/js with socket.io-client installed (npm install on first use); the test is skipped
    where node or npm is missing or the install fails."""
    problem = npm_installed(JS, ("socket.io-client",))
    if problem:
        pytest.skip(problem)
    return JS
