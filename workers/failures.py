"""Failed writes: what kind of trouble a MySQL error is, and a log that says so once a minute.

Every error MySQL (or the network to it) returns while the flusher writes a batch is the
database's: the records were checked in Python first (``workers.columns``). So each is retried
until the batch commits; its kind is what an operator needs to act on, in the metrics
(``hub_flusher_mysql_errors_total{kind}``) and in the log.
"""

from __future__ import annotations

import logging
import time

import pymysql

KINDS = (
    "connection",
    "schema",
    "permission",
    "read_only",
    "deadlock",
    "lock_timeout",
    "too_many_connections",
    "disk_full",
    "data",
    "other",
)

# MySQL and MariaDB error codes (server 1xxx, client 2xxx) by kind.
_CODES: dict[int, str] = {
    **dict.fromkeys(
        (
            1053,
            1077,
            1152,
            1154,
            1155,
            1156,
            1157,
            1158,
            1159,
            1160,
            1161,
            1184,
            1317,
            1927,
            2002,
            2003,
            2005,
            2006,
            2011,
            2012,
            2013,
            2014,
            2026,
            2055,
        ),
        "connection",
    ),
    **dict.fromkeys((1049, 1051, 1054, 1109, 1136, 1146, 1364, 1932), "schema"),
    **dict.fromkeys((1044, 1045, 1142, 1143, 1227, 1370, 1698), "permission"),
    **dict.fromkeys((1290, 1792, 1836), "read_only"),
    1213: "deadlock",
    1205: "lock_timeout",
    **dict.fromkeys((1040, 1203, 1226), "too_many_connections"),
    **dict.fromkeys((1021, 1114), "disk_full"),
    # About a value: Python's checks should have refused the record (a gap in workers.columns).
    # Still retried, never dead-lettered: the record may be fine and the schema changed.
    **dict.fromkeys((1048, 1264, 1265, 1292, 1366, 1406, 3140, 4025), "data"),
}


def kind_of(exc: BaseException) -> str:
    """The kind of a failed write (one of KINDS), from the MySQL error code."""
    if isinstance(exc, pymysql.MySQLError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if code in _CODES:
            return _CODES[code]
        if isinstance(exc, pymysql.err.InterfaceError) or code == 0:
            return "connection"  # pymysql's own: the connection was closed under it
        return "other"
    if isinstance(exc, OSError):
        return "connection"
    return "other"


class FailureLog:
    """Logs a kind of failure at most once per ``every`` seconds, with how many were not logged."""

    def __init__(self, log: logging.Logger, every: float = 60.0) -> None:
        self.log = log
        self.every = every
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def failed(self, kind: str, exc: BaseException, records: int, stalled: float) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.every) < self.every:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        quiet = self._quiet.pop(kind, 0)
        self._last[kind] = now
        self.log.error(
            "MySQL write failed (%s: %s); a batch of %d records is retried until it commits "
            "(failing for %.0fs%s)",
            kind,
            exc,
            records,
            stalled,
            f", {quiet} more {kind} errors since the last such line" if quiet else "",
        )
