"""What a process says when it cannot start, in one line a newcomer can act on: a port already
in use (and the setting that moves it, with a port free now), a service not answering where its
URL says (and the usual command that starts it there, on that port)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from urllib.parse import urlparse

from hub.settings import MySQLSettings, Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""})
BACKLOG = 128  # aiohttp's TCPSite's


class CannotListen(Exception):
    """``host:port`` cannot be listened on: another program listens there (or the host is not
    this machine's, or the port is privileged). ``line`` says so in one line."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(f"{host}:{port}: {cause}")
        self.host = host
        self.port = port
        self.cause = cause

    def line(self, what: str, change: Callable[[str], str]) -> str:
        """``what`` cannot listen, why, and for a port in use (or one only root may take)
        ``change(port)``: the setting that moves it, given a port free now (or ``…``)."""
        where = f"{what} cannot listen on {self.host or '*'}"
        if self.cause.errno == errno.EADDRINUSE:
            why = f"port {self.port} is in use by another program"
        elif self.cause.errno == errno.EACCES:
            why = f"port {self.port} is reserved for root"
        else:  # a host that is not this machine's, or not a host at all
            return f"{where}:{self.port}: {self.cause.strerror or self.cause}"
        return f"{where}: {why}; choose another: {change(free_port_after(self.host, self.port))}"


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on ``host:port``, one per address the host names (as asyncio's
    ``create_server`` binds them), taken before a process connects or registers anything:
    a port in use is found before there is anything to undo. Connections that come before
    the process serves wait in the backlog."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise CannotListen(host, port, exc) from exc
    return sockets


def free_port_after(host: str, port: int, tries: int = 50) -> str:
    """The first of the next ``tries`` ports that ``host`` can listen on now, or ``…``."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        try:
            for sock in listen(host, candidate):
                sock.close()
        except CannotListen:
            continue
        return str(candidate)
    return "…"


# -- services not answering ------------------------------------------------------------------


def redis_hint(settings: Settings, auth_failed: bool = False) -> str:
    """What to do when Redis does not answer at REDIS_URL: the command that starts it there."""
    if auth_failed:
        return "check the password in REDIS_URL"
    if settings.redis_cluster is not None:
        return "start the cluster's nodes REDIS_URL names, or set REDIS_URL"
    if settings.redis_sentinel is not None:
        return "start the sentinels REDIS_URL names (and the master they watch), or set REDIS_URL"
    url = urlparse(settings.redis_url)
    if url.scheme == "unix":
        return f"start it: redis-server --port 0 --unixsocket {url.path} --daemonize yes, or set REDIS_URL"
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if host in LOCAL_HOSTS:
        return f"start it: redis-server --port {port} --daemonize yes, or set REDIS_URL"
    return f"is Redis running on {host}:{port}, and reachable from here? Or set REDIS_URL"


# MySQL's error codes that say something other than "nothing answers there": access denied
# (to the server, to a user without a password, to the database), an unknown database.
ACCESS_DENIED = frozenset({1045, 1698, 1044})
UNKNOWN_DATABASE = 1049


def mysql_hint(mysql: MySQLSettings, exc: BaseException | None = None) -> str:
    """What to do when MySQL refuses or does not answer at MYSQL_URL."""
    code = exc.args[0] if exc is not None and exc.args and isinstance(exc.args[0], int) else None
    if code in ACCESS_DENIED:
        return "check the user and password in MYSQL_URL"
    if code == UNKNOWN_DATABASE:
        return f"create {mysql.database}: python -m hub migrate (make migrate)"
    if mysql.host not in LOCAL_HOSTS:
        return f"is MariaDB running on {mysql.host}:{mysql.port}, and reachable from here? Or set MYSQL_URL"
    if mysql.port == 3306:
        return "start it: service mariadb start, or set MYSQL_URL"
    return f"start it: service mariadb start (with port = {mysql.port} under [mysqld]), or set MYSQL_URL"
