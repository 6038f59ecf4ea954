"""Start-up as a newcomer meets it: a port already taken, a service not running, a fresh
database. Each failure is one line saying what is wrong and what to change, exit status 1, and
nothing written to Redis by a process that never started."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import Iterator

import pymysql
import pytest
import redis.asyncio as aioredis

from hub.settings import MySQLSettings, Settings
from hub.startup import mysql_hint, redis_hint
from hub.storage.mysql import SQL_DIR
from tests.conftest import ROOT, free_port, unique

DEADLINE = 30.0


async def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    """``python ARGS`` in the repository with ``env``: its exit status and its output (stdout and
    stderr together), killed and failed if it has not exited within DEADLINE."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"{' '.join(args)} still running after {DEADLINE}s: {out.decode()!r}") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def one_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {out!r}"
    return lines[0]


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def private(env: dict[str, str], settings: Settings) -> dict[str, str]:
    """The test run's environment with a key prefix of this test's own (inside the run's, which
    the ``settings`` fixture cleans)."""
    return {**env, "HUB_REDIS_PREFIX": f"{env['HUB_REDIS_PREFIX']}{unique('startup')}:"}


async def written(rds: aioredis.Redis, env: dict[str, str]) -> list[str]:
    return sorted([key async for key in rds.scan_iter(match=env["HUB_REDIS_PREFIX"] + "*")])


# -- a port already in use ------------------------------------------------------------------


async def test_serve_on_a_port_in_use_says_so_and_registers_nothing(private, taken, rds):
    code, out = await run(private, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(taken))
    line = one_line(out)
    assert code == 1
    assert f"port {taken}" in line and "in use" in line and "--port" in line, line
    assert await written(rds, private) == []  # no heartbeat, no worker in the workers set


async def test_make_run_on_a_port_in_use_names_make_runs_variable(private, taken, rds):
    code, out = await run(private, "-m", "hub", "run-local", "--host", "127.0.0.1", "--port", str(taken))
    line = one_line(out)
    assert code == 1
    assert f"port {taken}" in line and "make run PORT=" in line, line
    assert await written(rds, private) == []  # nor a flusher's consumer group


async def test_the_flusher_on_a_metrics_port_in_use_says_so_and_stops(private, taken, rds):
    env = {**private, "HUB_FLUSHER_METRICS_PORT": str(taken)}
    code, out = await run(env, "-m", "workers.flusher")
    line = one_line(out)
    assert code == 1
    assert f"port {taken}" in line and "HUB_FLUSHER_METRICS_PORT" in line, line
    assert await written(rds, env) == []


async def test_make_run_with_the_flushers_metrics_port_in_use_starts_neither(private, taken, rds):
    env = {**private, "HUB_FLUSHER_METRICS_PORT": str(taken)}
    port = free_port()
    code, out = await run(env, "-m", "hub", "run-local", "--host", "127.0.0.1", "--port", str(port))
    line = one_line(out)
    assert code == 1
    assert f"port {taken}" in line and "HUB_FLUSHER_METRICS_PORT=" in line and "make run" in line, line
    assert await written(rds, env) == []


# -- services not running -------------------------------------------------------------------


async def test_the_hints_follow_the_urls_host_and_port(private):
    redis_port, mysql_port = free_port(), free_port()  # nothing listens there
    env = {
        **private,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MYSQL_URL": f"mysql://root@127.0.0.1:{mysql_port}/hub",
    }
    code, out = await run(env, "-m", "hub", "check")
    assert code == 1
    [redis_line] = [line for line in out.splitlines() if "redis-server" in line]
    assert f"redis-server --port {redis_port}" in redis_line and "6379" not in out, out
    [mysql_line] = [line for line in out.splitlines() if "service mariadb start" in line]
    assert str(mysql_port) in mysql_line and "start-stop-daemon" not in out, out

    code, out = await run(env, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(free_port()))
    line = one_line(out)
    assert code == 1 and f"redis-server --port {redis_port}" in line, line


# -- the schema -------------------------------------------------------------------------------


@pytest.fixture
def fresh_database(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The run's environment naming a database that does not exist yet; dropped afterwards."""
    name = f"hub_fresh_{uuid.uuid4().hex[:10]}"
    url = env["MYSQL_URL"].rsplit("/", 1)[0] + "/" + name
    yield {**env, "MYSQL_URL": url}
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


async def test_migrate_says_what_it_applied_then_that_it_is_up_to_date(fresh_database):
    files = sorted(p.name for p in SQL_DIR.iterdir() if p.name.endswith(".sql"))
    code, out = await run(fresh_database, "-m", "hub", "migrate")
    line = one_line(out)
    assert code == 0 and f"applied {', '.join(files)}" in line and "up to date" not in line, line
    code, out = await run(fresh_database, "-m", "hub", "migrate")
    line = one_line(out)
    assert code == 0 and "up to date" in line and "applied" not in line, line


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("redis://127.0.0.1:6379/0", "start it: redis-server --port 6379 --daemonize yes"),
        ("redis://localhost:6390/2", "start it: redis-server --port 6390 --daemonize yes"),
        ("unix:///run/redis.sock", "redis-server --port 0 --unixsocket /run/redis.sock"),
        ("redis://cache.internal:6380/0", "is Redis running on cache.internal:6380"),
        ("redis+sentinel://127.0.0.1:26379/0/hub", "start the sentinels"),
    ],
)
def test_the_redis_hint_names_the_urls_server(url, hint):
    assert hint in redis_hint(Settings.from_env({"REDIS_URL": url}))


@pytest.mark.parametrize(
    ("url", "error", "hint"),
    [
        ("mysql://root@127.0.0.1:3306/hub", None, "start it: service mariadb start, or set MYSQL_URL"),
        ("mysql://root@127.0.0.1:3307/hub", None, "service mariadb start (with port = 3307 under [mysqld])"),
        ("mysql://root@db.internal:3306/hub", None, "is MariaDB running on db.internal:3306"),
        ("mysql://root@127.0.0.1:3306/hub", (1045, "Access denied"), "check the user and password"),
        ("mysql://bob@127.0.0.1:3306/hub", (1698, "Access denied"), "check the user and password"),
        ("mysql://root@127.0.0.1:3306/hub", (1049, "Unknown database"), "python -m hub migrate"),
    ],
)
def test_the_mysql_hint_follows_the_url_and_the_refusal(url, error, hint):
    exc = pymysql.err.OperationalError(*error) if error else None
    assert hint in mysql_hint(MySQLSettings.from_url(url), exc)
