"""``python -m hub serve|run-local|migrate|check|token|inspect|outbox``."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from hub.errors import HubError
from hub.settings import Settings
from hub.storage.connections import settings_or_exit

if TYPE_CHECKING:
    from hub.storage.connections import SyncRedis
    from hub.storage.keys import Keys

DEFAULT_PORT = 8080  # the Makefile's PORT too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub", description="The streaming hub.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one web worker")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    local = sub.add_parser("run-local", help="run a web worker and a flusher together (make run)")
    local.add_argument("--host", default="127.0.0.1")
    local.add_argument("--port", type=int, default=DEFAULT_PORT)
    sub.add_parser("migrate", help="create the database and apply sql/*.sql")
    sub.add_parser("check", help="check that Redis and MySQL are reachable")
    token = sub.add_parser("token", help="print a development token")
    token.add_argument("user_id")
    token.add_argument("--name")
    token.add_argument("--role", action="append", default=[], dest="roles")
    token.add_argument("--ttl", type=int, default=24 * 3600)
    inspect = sub.add_parser(
        "inspect", help="live streams, workers and outbox lag (or one stream), from Redis"
    )
    inspect.add_argument(
        "stream_id", nargs="?", help="one stream: its figures, viewers per worker, recent chat"
    )
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--chat", type=int, default=10, help="recent chat messages to show (default 10)")
    outbox = sub.add_parser("outbox", help="the outbox's dead letters (malformed records): list or replay")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    dead = outbox_sub.add_parser("dead", help="list every shard's dead letters")
    dead.add_argument("--json", action="store_true", help="print JSON instead of text")
    replay = outbox_sub.add_parser("replay", help="put dead letters back in their shard's outbox")
    replay.add_argument("ids", nargs="*", metavar="ID", help="a dead letter's id, or SHARD/ID")
    replay.add_argument("--all", action="store_true", help="every dead letter there now")
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    if isinstance(settings, int):
        return settings
    commands = {
        "serve": _serve,
        "run-local": _run_local,
        "migrate": _migrate,
        "check": _check,
        "token": _token,
        "inspect": _inspect,
        "outbox": _outbox,
    }
    return commands[args.command](settings, args)


def _serve(settings: Settings, args: argparse.Namespace, sockets: list[socket.socket] | None = None) -> int:
    """A web worker on ``sockets``, or on ``--host``/``--port``, taken before anything else is
    done: a port in use is one line and exit status 1, with nothing connected or registered."""
    from hub.startup import CannotListen, listen

    if sockets is None:
        try:
            sockets = listen(args.host, args.port)
        except CannotListen as exc:
            print(f"❌ {exc.line('The web worker', lambda port: f'--port {port}')}", file=sys.stderr)
            return 1
    from hub.storage.connections import StartupError, run
    from hub.worker import serve  # the web stack: imported once the port is ours

    port = sockets[0].getsockname()[1]  # --port 0: the one the system chose

    def listening() -> None:
        print(
            f"✅ Hub worker listening on http://{args.host}:{port} "
            f"(Socket.IO namespace /streaming, REST /api/v1/streaming)",
            flush=True,
        )
        print(
            f"🖥️  Web console: http://{args.host}:{port}/ (streams), /studio (go live)"
            + (", with a development-token button" if settings.console_dev_tokens else ""),
            flush=True,
        )

    try:
        run(serve(settings, sockets, listening), settings.gc_thresholds)
    except StartupError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return 1
    return 0


def _run_local(settings: Settings, args: argparse.Namespace) -> int:
    """The web worker in this process and a flusher beside it; both stop together."""
    sockets = _make_run_ports(settings, args)
    if sockets is None:
        return 1
    flusher = subprocess.Popen([sys.executable, "-m", "workers.flusher"])
    print(f"✅ Flusher started (pid {flusher.pid})", flush=True)
    if settings.jwt_secret:
        print(
            "🔑 Development tokens: make token ID=alice ROLE=streamer  (a viewer: make token ID=bob)"
            f"\n   or: HUB_JWT_SECRET={settings.jwt_secret} {sys.executable} -m hub token alice "
            "--role streamer",
            flush=True,
        )
    try:
        return _serve(settings, args, sockets)
    finally:
        flusher.send_signal(signal.SIGTERM)
        try:
            flusher.wait(10)
        except subprocess.TimeoutExpired:
            flusher.kill()


def _make_run_ports(settings: Settings, args: argparse.Namespace) -> list[socket.socket] | None:
    """The web worker's sockets, taken, and the flusher's metrics port found free, before either
    process starts; or None, after one line saying which port is in use and what to add to
    ``make run``."""
    from hub.startup import CannotListen, listen

    try:
        sockets = listen(args.host, args.port)
    except CannotListen as exc:
        print(f"❌ {exc.line('The web worker', lambda port: f'make run PORT={port}')}", file=sys.stderr)
        return None
    if not settings.flusher_metrics_port:
        return sockets
    try:
        for sock in listen(settings.flusher_metrics_host, settings.flusher_metrics_port):
            sock.close()  # free again for the flusher, a moment from now
    except CannotListen as exc:
        for sock in sockets:
            sock.close()
        web = "" if args.port == DEFAULT_PORT else f"PORT={args.port} "

        def change(port: str) -> str:
            return f"make run {web}HUB_FLUSHER_METRICS_PORT={port} (0: none)"

        print("❌ " + exc.line("The flusher's metrics", change), file=sys.stderr)
        return None
    return sockets


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    import pymysql

    from hub.startup import mysql_hint
    from hub.storage.connections import redacted
    from hub.storage.mysql import migrate

    try:
        applied = migrate(settings.mysql)
    except pymysql.MySQLError as exc:
        print(
            f"❌ MySQL at {redacted(settings.mysql.url)}: {exc}; {mysql_hint(settings.mysql, exc)}",
            file=sys.stderr,
        )
        return 1
    database = settings.mysql.database
    print(
        f"✅ Schema of {database}: applied {', '.join(applied)}"
        if applied
        else f"✅ Schema of {database} is up to date: nothing new to apply"
    )
    return 0


def _check(settings: Settings, _: argparse.Namespace) -> int:
    import pymysql
    import redis

    from hub.startup import mysql_hint, redis_hint
    from hub.storage.connections import redacted, sync_redis

    ok = True
    try:
        client = sync_redis(settings, socket_connect_timeout=3)
        client.ping()
        if isinstance(client, redis.cluster.RedisCluster):
            primaries = client.get_primaries()
            where = f" (cluster of {len(primaries)} primaries, {settings.redis_shards} shards)"
        elif settings.redis_sentinel is not None:
            server = client.connection_pool.connection_kwargs
            where = f" (master {server['host']}:{server['port']})"
        else:
            where = ""
        print(f"✅ Redis reachable at {redacted(settings.redis_url)}{where}")
    except redis.RedisError as exc:
        ok = False
        print(
            f"❌ Redis is not reachable at {redacted(settings.redis_url)}: {exc}\n"
            f"   {redis_hint(settings, isinstance(exc, redis.AuthenticationError))}",
            file=sys.stderr,
        )
    m = settings.mysql
    try:
        pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password, connect_timeout=3).close()
        print(f"✅ MySQL reachable at {redacted(m.url)}")
    except pymysql.MySQLError as exc:
        ok = False
        print(
            f"❌ MySQL is not reachable at {redacted(m.url)}: {exc}\n   {mysql_hint(m, exc)}", file=sys.stderr
        )
    return 0 if ok else 1


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from hub.domain.auth import mint
    from hub.errors import HubError

    try:
        print(mint(settings, args.user_id, args.name, args.roles, args.ttl))
    except HubError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    return 0


def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    import redis

    from hub import inspection
    from hub.domain.payloads import path_stream_id
    from hub.storage.connections import redacted, sync_redis
    from hub.storage.keys import Keys

    keys = Keys.of_settings(settings)
    try:
        client = sync_redis(settings, decode_responses=True, socket_connect_timeout=3)
        if args.stream_id is None:
            found: dict[str, Any] = inspection.overview(client, keys)
        else:
            try:
                stream_id = path_stream_id(args.stream_id)
            except HubError:
                print(f"❌ {args.stream_id!r} is not a stream id", file=sys.stderr)
                return 2
            one = inspection.stream(client, keys, stream_id, max(0, args.chat))
            if one is None:
                print(
                    f"❌ No stream {stream_id} in Redis (an ended stream's keys expire after "
                    f"HUB_ENDED_RETENTION; its rows are in MySQL)",
                    file=sys.stderr,
                )
                return 1
            found = one
    except redis.RedisError as exc:
        print(f"❌ Redis at {redacted(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(inspection.dumps(found))
    elif args.stream_id is None:
        print(inspection.overview_text(found))
    else:
        print(inspection.stream_text(found))
    return 0


def _outbox(settings: Settings, args: argparse.Namespace) -> int:
    """``outbox dead``: list the dead letters; ``outbox replay``: put them back in the outbox."""
    import redis

    from hub.storage.connections import redacted, sync_redis
    from hub.storage.keys import Keys

    keys = Keys.of_settings(settings)
    try:
        client = sync_redis(settings, decode_responses=True, socket_connect_timeout=3)
        if args.outbox_command == "dead":
            return _outbox_dead(client, keys, args.json)
        return _outbox_replay(client, keys, args.ids, args.all)
    except redis.RedisError as exc:
        print(f"❌ Redis at {redacted(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1


def _outbox_dead(client: SyncRedis, keys: Keys, as_json: bool) -> int:
    import orjson

    from hub import deadletters

    letters = deadletters.listing(client, keys)
    print(
        orjson.dumps(letters, option=orjson.OPT_INDENT_2).decode()
        if as_json
        else deadletters.listing_text(letters)
    )
    return 0


def _outbox_replay(client: SyncRedis, keys: Keys, ids: list[str], every: bool) -> int:
    from hub import deadletters

    if bool(ids) == every:
        print("❌ Name the dead letters to replay (ID or SHARD/ID), or --all", file=sys.stderr)
        return 1
    try:
        wanted = deadletters.targets(ids, len(keys.all))
    except ValueError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return 1
    done = deadletters.replay_all(client, keys) if every else deadletters.replay(client, keys, wanted)
    for shard, entry_id, entry in done:
        print(
            f"✅ {shard}/{entry_id} replayed as outbox entry {entry}"
            if entry is not None
            else f"ℹ️  {'' if shard is None else f'{shard}/'}{entry_id} is not in the dead letters "
            "(replayed already?): nothing done"
        )
    print(f"{sum(entry is not None for _, _, entry in done)} dead letters replayed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
