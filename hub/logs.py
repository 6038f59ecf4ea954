"""Logging: plain text by default, one JSON object per line with ``HUB_LOG_FORMAT=json``.

Whatever a line is about is bound once where the work starts (a Socket.IO event, a REST
request) and added to every line logged while it runs: ``stream_id``, ``user_id``, ``sid``,
``event``, ``request``. Lines never carry message bodies or tokens: the hub logs ids, codes
and counts, and what it binds is checked to be an id-sized string.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

import orjson

FIELDS = ("stream_id", "user_id", "sid", "event", "request")

# What the running task's lines are about: a dict of fields (a REST request), or a Socket.IO
# event's (event, sid, conn, args), turned into fields only when a line is logged.
CONTEXT: ContextVar[Any] = ContextVar("hub_log_context", default=None)


def _id_like(value: Any) -> str | None:
    """A bound value is kept only if it looks like an id (a client controls some of them)."""
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None


def _fields(source: Any) -> dict[str, Any]:
    if source is None:
        return {}
    if isinstance(source, tuple):  # a Socket.IO event: (event, sid, conn, args)
        event, sid, conn, args = source
        identity = getattr(conn, "identity", None)
        data = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
        return {
            "event": event,
            "sid": sid,
            "user_id": identity.user_id if identity else None,
            "stream_id": data.get("stream_id") or getattr(conn, "stream_id", None),
        }
    return source


class Repeats:
    """Log lines about something a client can repeat at will (a refused frame), summarised per
    key: the first is logged, later ones are counted and logged as one line with the count at
    most once per ``every`` seconds. Only the newest ``keep`` keys are remembered, so a flood of
    keys costs bounded memory (a forgotten key's next line is logged as a first again)."""

    def __init__(self, logger: logging.Logger, every: float = 60.0, keep: int = 4096) -> None:
        self.logger = logger
        self.every = every
        self.keep = keep
        self._seen: OrderedDict[str, list[float]] = OrderedDict()  # key -> [logged at, count since]

    def note(self, key: str, what: str) -> None:
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None:
            self.logger.info("%s from %s", what, key)
            self._seen[key] = [now, 0]
            if len(self._seen) > self.keep:
                self._seen.popitem(last=False)
            return
        self._seen.move_to_end(key)
        seen[1] += 1
        if now - seen[0] >= self.every:
            self.logger.info("%s from %s (%d like it in the last %.0f s)", what, key, seen[1], now - seen[0])
            seen[0], seen[1] = now, 0


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (fields given with ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields(CONTEXT.get()).items():
            value = _id_like(value)
            if value is not None and not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        bound_fields = " ".join(
            f"{key}={getattr(record, key)}" for key in FIELDS if getattr(record, key, None) is not None
        )
        return f"{text} [{bound_fields}]" if bound_fields else text


def setup(level: str, fmt: str) -> None:
    """The root logger writes to stderr in ``fmt`` (text or json) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
