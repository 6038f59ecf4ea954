"""Behind a load balancer: a real nginx running deploy/nginx.conf in front of two worker processes.

The nginx is this test's own (its config, prefix, pid and logs under tmp_path, on a free loopback
port), started and stopped here; only the shipped file's ports and paths are swapped. Clients
come from different loopback addresses (127.0.0.2, …) so that nginx's sticky hash and the
workers' per-address limits see different clients. Which worker a client landed on is read from
nginx's access log (the `upstream=` field of deploy/nginx.conf's log format).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from hub.settings import Settings
from hub.storage.keys import NAMESPACE, Keys
from tests.conftest import DEADLINE, ROOT, Api, Client, Worker, eventually, free_port, unique

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
TRUSTED = {"HUB_TRUSTED_PROXIES": "127.0.0.1"}


# -- nginx ------------------------------------------------------------------------------


def _nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """nginx, installed by scripts/ensure-test-tools.sh when missing (as `make test` does first)."""
    if _nginx_binary() is None:
        subprocess.run(["sh", str(ROOT / "scripts" / "ensure-test-tools.sh")], check=False, timeout=600)
    found = _nginx_binary()
    if found is None:
        pytest.skip(
            "nginx is not installed and scripts/ensure-test-tools.sh could not install it "
            "(it needs root and apt-get); install nginx to run the load-balancer tests"
        )
    return found


def render(conf: str, workers: list[Worker], port: int, prefix: Path) -> str:
    """deploy/nginx.conf with the test's worker ports, listening port and file paths. Each part
    must match exactly as often as expected, so a reshaped file fails here, not silently."""
    ports = iter(w.port for w in workers)
    swaps: list[tuple[str, Callable[[re.Match[str]], str], int]] = [
        (
            r"(?m)^(\s*server\s+)127\.0\.0\.1:\d+",
            lambda m: f"{m.group(1)}127.0.0.1:{next(ports)}",
            len(workers),
        ),
        (r"(?m)^(\s*listen\s+)80;", lambda m: f"{m.group(1)}127.0.0.1:{port};", 1),
        (r"(?m)^pid\s+[^;]+;", lambda m: f"pid {prefix}/nginx.pid;", 1),
        (r"(?m)^error_log\s+\S+", lambda m: f"error_log {prefix}/error.log", 1),
        (r"(?m)^(\s*access_log\s+)\S+", lambda m: f"{m.group(1)}{prefix}/access.log", 1),
        # Temporary files under the prefix too, not in /var/lib/nginx.
        (
            r"(?m)^http \{",
            lambda m: (
                "http {\n"
                + "".join(
                    f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                )
            ),
            1,
        ),
    ]
    for pattern, swap, expected in swaps:
        conf, found = re.subn(pattern, swap, conf)
        assert found == expected, f"deploy/nginx.conf: {pattern!r} matched {found} times, not {expected}"
    return conf


class Nginx:
    """`nginx -p PREFIX -c CONF -g 'daemon off;'` in front of the given workers."""

    def __init__(self, binary: str, workers: list[Worker], prefix: Path) -> None:
        prefix.mkdir()
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = prefix / "access.log"
        conf = prefix / "nginx.conf"
        conf.write_text(render(NGINX_CONF.read_text(), workers, self.port, prefix))
        # As root, nginx's workers would run as nobody, who cannot enter pytest's tmp_path.
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        usage = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10)
        early_log = ["-e", str(prefix / "error.log")] if "-e filename" in usage.stderr + usage.stdout else []
        self._log = open(prefix / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), *early_log, "-g", directives],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _failure(self) -> str:
        logs = [
            p.read_text(errors="replace")
            for p in (self.prefix / "stderr.log", self.prefix / "error.log")
            if p.exists()
        ]
        return "nginx failed: " + "\n".join(logs)

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def up() -> bool:
            assert self.proc.poll() is None, self._failure()
            try:
                async with session.get(f"{self.url}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, DEADLINE, "nginx answering /healthz from a worker")

    def upstream_of(self, source: str) -> int | None:
        """The worker port that nginx last sent a request from ``source`` to."""
        port = None
        for line in self.access_log.read_text().splitlines():
            hit = re.match(r"(\S+) .* upstream=(.*?) upstream_status=", line)
            if hit and hit.group(1) == source and hit.group(2) != "-":
                port = int(hit.group(2).split(",")[-1].rsplit(":", 1)[1])
        return port

    async def worker_of(self, source: str, workers: list[Worker]) -> Worker:
        async def logged() -> bool:
            return self.upstream_of(source) is not None

        await eventually(logged, DEADLINE, f"nginx logged a request from {source}")
        (worker,) = [w for w in workers if w.port == self.upstream_of(source)]
        return worker

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown, its workers included
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture
async def nginx(
    nginx_binary: str, tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[Callable[[list[Worker]], Awaitable[Nginx]]]:
    started: list[Nginx] = []

    async def start(workers: list[Worker]) -> Nginx:
        proxy = Nginx(nginx_binary, workers, tmp_path / f"nginx-{len(started)}")
        started.append(proxy)
        await proxy.ready(http)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


# -- clients ----------------------------------------------------------------------------


class Browser(Client):
    """A client as a browser connects: long-polling first, then the upgrade to a WebSocket.

    ``reconnect``: python-socketio's own reconnection, which starts when a transport drops.
    ``like_js``: also what socket.io-client does and python-engineio does not, reconnect after
    the server closed the Engine.IO session with a ``close`` packet. The hub's drain sends none
    (it drops the transport), so both kinds reconnect; the test runs both."""

    def __init__(self, source: str | None = None, reconnect: bool = False, like_js: bool = False) -> None:
        super().__init__(source)
        self.sio.reconnection = reconnect
        self.sio.reconnection_delay = 0.2
        self.sio.reconnection_delay_max = 1
        self.sio.randomization_factor = 0.1
        self.like_js = like_js
        self.connects = 0
        self._reconnecting: asyncio.Task[None] | None = None
        self.sio.on("connect", self._connected, namespace=NAMESPACE)
        self.sio.on("disconnect", self._disconnected, namespace=NAMESPACE)

    async def _connected(self) -> None:
        self.connects += 1

    async def _disconnected(self, reason: str | None = None) -> None:
        # The session closed by the server (not a namespace-level disconnect): Engine.IO is
        # no longer connected, and python-socketio's own reconnection will not start.
        if (
            self.like_js
            and reason == self.sio.reason.SERVER_DISCONNECT
            and self.sio.eio.state != "connected"
            and self._reconnecting is None
        ):
            self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.2
        while not self.sio.connected:
            await asyncio.sleep(delay)  # the back-off between attempts, as socket.io-client's
            delay = min(delay * 2, 1.0)
            with contextlib.suppress(socketio.exceptions.ConnectionError, ValueError):
                await self.sio.connect(
                    self.sio.connection_url,
                    headers=self.sio.connection_headers,
                    auth=self.sio.connection_auth,
                    transports=self.sio.connection_transports,
                    namespaces=self.sio.connection_namespaces,
                    wait_timeout=DEADLINE,
                )
        self._reconnecting = None

    async def open(
        self,
        url: str,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        transports: tuple[str, ...] = ("polling", "websocket"),
    ) -> Browser:
        await self.sio.connect(
            url,
            namespaces=[NAMESPACE],
            auth={"token": token} if token else None,
            transports=list(transports),
            headers=headers or {},
            wait_timeout=DEADLINE,
        )
        return self

    async def close(self) -> None:
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        await super().close()


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[..., Browser]]:
    made: list[Browser] = []

    def make(source: str | None = None, reconnect: bool = False, like_js: bool = False) -> Browser:
        made.append(Browser(source, reconnect, like_js))
        return made[-1]

    yield make
    for b in made:
        await b.close()


async def refused(client: Browser, url: str, **kwargs: Any) -> str:
    """The code of the connect_error that refuses this connection."""
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.open(url, **kwargs)
    return str(client.events["connect_error"][0]["data"]["code"])


async def counted_as(rds: aioredis.Redis, settings: Settings, client: Browser) -> list[str]:
    """The client addresses whose open-connection set holds this client's Engine.IO session
    (counted at its handshake)."""
    sid = client.sio.eio.sid
    found = []
    for keys in Keys.of_settings(settings).all:
        head, tail = keys.address_conns("\0").split("\0")
        async for key in rds.scan_iter(match=keys.address_conns("*"), count=1000):
            if await rds.zscore(key, sid) is not None:
                found.append(key[len(head) : -len(tail)])
    return found


# -- through the proxy ------------------------------------------------------------------


async def test_a_browser_connects_through_nginx_upgrades_and_chats(workers, nginx, browsers, http, token):
    w1, w2 = await workers(2, **TRUSTED)
    proxy = await nginx([w1, w2])
    sid = (await Api(http, proxy.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    # A same-origin page: Engine.IO compares Origin with the Host that nginx passes on.
    viewer = await browsers("127.0.0.2").open(
        proxy.url, token(unique("viewer"), name="Vi"), headers={"Origin": proxy.url}
    )

    async def upgraded() -> bool:
        return viewer.sio.transport() == "websocket"

    await eventually(upgraded, DEADLINE, "the polling session upgraded to a WebSocket through nginx")
    joined = await viewer.call("join_stream", {"stream_id": sid})
    assert joined["success"] and joined["viewer_count"] == 1
    sent = await viewer.call("send_message", {"stream_id": sid, "message": "hello through nginx"})
    got = await viewer.wait_for("chat_message", lambda m: m["message_id"] == sent["message"]["message_id"])
    assert got["username"] == "Vi"
    print(f"127.0.0.2 is served by the worker on port {proxy.upstream_of('127.0.0.2')}")


async def test_chat_through_nginx_reaches_the_other_worker(workers, nginx, browsers, http, token):
    w1, w2 = await workers(2, **TRUSTED)
    proxy = await nginx([w1, w2])
    sid = (await Api(http, proxy.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    sender = await browsers("127.0.0.2").open(proxy.url, token(unique("sender")))
    home = await proxy.worker_of("127.0.0.2", [w1, w2])
    other = w2 if home is w1 else w1
    # A client on the sender's worker and one on the other, connected straight to each.
    near = await browsers().open(home.url, token(unique("near")), transports=("websocket",))
    far = await browsers().open(other.url, token(unique("far")), transports=("websocket",))
    for c in (sender, near, far):
        assert (await c.call("join_stream", {"stream_id": sid}))["success"]

    sent = await sender.call("send_message", {"stream_id": sid, "message": "across workers"})
    for c in (near, far):
        await c.wait_for("chat_message", lambda m: m["message_id"] == sent["message"]["message_id"])
    reply = await far.call("send_message", {"stream_id": sid, "message": "and back"})
    await sender.wait_for("chat_message", lambda m: m["message_id"] == reply["message"]["message_id"])


@pytest.mark.parametrize(
    "like_js",
    [
        pytest.param(True, id="socket.io-client"),
        pytest.param(False, id="python-socketio"),
    ],
)
async def test_a_draining_workers_clients_reconnect_through_nginx_to_the_other(
    like_js, workers, nginx, browsers, http, token
):
    w1, w2 = await workers(2, **TRUSTED, HUB_DRAIN_SECONDS="0.5", HUB_SHUTDOWN_DEADLINE="5")
    proxy = await nginx([w1, w2])
    sid = (await Api(http, proxy.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    mover = await browsers("127.0.0.2", reconnect=True, like_js=like_js).open(
        proxy.url, token(unique("mover"))
    )
    doomed = await proxy.worker_of("127.0.0.2", [w1, w2])
    survivor = w2 if doomed is w1 else w1
    watcher = await browsers().open(survivor.url, token(unique("watcher")), transports=("websocket",))
    await watcher.call("join_stream", {"stream_id": sid})
    await mover.call("join_stream", {"stream_id": sid})
    before = await mover.call("send_message", {"stream_id": sid, "message": "before the drain"})
    await watcher.wait_for("chat_message", lambda m: m["message_id"] == before["message"]["message_id"])

    signalled = time.monotonic()
    doomed.kill(signal.SIGTERM)
    # nginx keeps sending 127.0.0.2 to the draining worker, which refuses new sessions, until it
    # has exited; then its connections fail and nginx passes them to the other worker.
    assert await asyncio.to_thread(doomed.proc.wait, 10) == 0

    async def reconnected() -> bool:
        return mover.connects >= 2 and mover.sio.connected

    await eventually(reconnected, 5, "the drained worker's client reconnected through nginx")
    took = time.monotonic() - signalled
    assert proxy.upstream_of("127.0.0.2") == survivor.port
    # The client joins again, from where it left off, and keeps chatting.
    joined = await mover.call(
        "join_stream", {"stream_id": sid, "last_message_id": before["message"]["message_id"]}
    )
    assert joined["success"] and joined["viewer_count"] == 2
    after = await mover.call("send_message", {"stream_id": sid, "message": "after the drain"})
    await watcher.wait_for("chat_message", lambda m: m["message_id"] == after["message"]["message_id"])
    print(f"reconnected to the other worker {took:.2f}s after SIGTERM")


async def test_address_limits_count_the_client_behind_the_proxy(workers, nginx, browsers, settings, rds):
    w1, w2 = await workers(2, **TRUSTED, HUB_ADDRESS_MAX_CONNS="1")
    proxy = await nginx([w1, w2])
    # Two clients behind the one proxy address, one connection each: both admitted.
    first = await browsers("127.0.0.2").open(proxy.url)
    second = await browsers("127.0.0.3").open(proxy.url)
    assert await counted_as(rds, settings, first) == ["127.0.0.2"]
    assert await counted_as(rds, settings, second) == ["127.0.0.3"]
    # A second connection from 127.0.0.2 is over its limit, whatever X-Forwarded-For it sends:
    # nginx appends the real address, and the worker takes the rightmost untrusted entry.
    assert await refused(browsers("127.0.0.2"), proxy.url) == "rate_limited"
    assert (
        await refused(browsers("127.0.0.2"), proxy.url, headers={"X-Forwarded-For": "203.0.113.9"})
        == "rate_limited"
    )

    # Straight to a worker from an untrusted address, a forged header changes nothing: the
    # connection counts against its own address, and cannot dodge that address's limit.
    direct = await browsers("127.0.0.4").open(
        w1.url, headers={"X-Forwarded-For": "127.0.0.5"}, transports=("websocket",)
    )
    assert await counted_as(rds, settings, direct) == ["127.0.0.4"]
    assert (
        await refused(
            browsers("127.0.0.4"),
            w1.url,
            headers={"X-Forwarded-For": "203.0.113.10"},
            transports=("polling",),
        )
        == "rate_limited"
    )  # a WebSocket handshake has no body


# What the worker counts a connection as, by the peer it comes from and the X-Forwarded-For it
# carries, with HUB_TRUSTED_PROXIES=127.0.0.1,127.0.1.0/24.
ADDRESS_RULE = [
    ("127.0.0.1", None, "127.0.0.1"),  # a trusted peer, no header
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),  # the proxy's client
    ("127.0.0.1", "203.0.113.1, 198.51.100.7", "198.51.100.7"),  # left entries: the client's own words
    ("127.0.0.1", "198.51.100.7, 127.0.1.5", "198.51.100.7"),  # through two trusted proxies
    ("127.0.0.1", "127.0.1.6, 127.0.1.5", "127.0.1.6"),  # only proxies: the farthest
    ("127.0.0.1", "198.51.100.7, not-an-address", "127.0.0.1"),  # garbage stops at the last proxy
    ("127.0.0.1", "2001:db8::7", "2001:db8::7"),  # IPv6 clients
    ("127.0.0.2", "198.51.100.7", "127.0.0.2"),  # an untrusted peer: header ignored
    ("127.0.0.2", None, "127.0.0.2"),
]


async def test_the_client_address_rule(workers, browsers, settings, rds):
    (w1,) = await workers(1, HUB_TRUSTED_PROXIES="127.0.0.1, 127.0.1.0/24")
    for source, forwarded, expected in ADDRESS_RULE:
        client = await browsers(source).open(
            w1.url, headers={"X-Forwarded-For": forwarded} if forwarded else {}, transports=("websocket",)
        )
        assert await counted_as(rds, settings, client) == [expected], (source, forwarded)
        await client.close()


def test_the_haproxy_example_is_valid():
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    if haproxy is None:
        pytest.skip("haproxy is not installed; deploy/haproxy.cfg is checked where it is")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
