"""JSON, time and id helpers shared by the hub and the workers."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson


class OrjsonModule:
    """A ``json``-compatible module for python-socketio and engine.io, backed by orjson.

    python-socketio passes ``separators``; orjson always writes the compact form.
    """

    JSONDecodeError = orjson.JSONDecodeError

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj, default=_exact_number).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return loads_exact(data)


json_module = OrjsonModule()


def _exact_number(value: Any) -> Any:
    """orjson's fallback: a Decimal (from ``loads_exact``) is written as its exact text."""
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(format(value, "f").encode())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Inbound JSON nested deeper than this is refused: the hub's payloads are two levels deep, and
# nothing that walks a value (this module, a parser, a log line) need recurse further.
MAX_DEPTH = 32


class TooDeep(ValueError):
    """Inbound JSON nested deeper than MAX_DEPTH."""


def _has_float(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a float; TooDeep if it is nested deeper than MAX_DEPTH."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            raise TooDeep(f"JSON may be nested at most {MAX_DEPTH} levels deep")
        items = value.values() if isinstance(value, dict) else value
        found = False
        for item in items:
            # Every item is visited, so the depth is checked even past a float.
            found = _has_float(item, depth + 1) or found
        return found
    return False


def loads_exact(data: str | bytes) -> Any:
    """Inbound JSON with every non-integer number as the exact Decimal it was written as.

    orjson reads the common payload (no fractional numbers) fast; one that holds a float is read
    again with ``parse_float=Decimal``, so ``1.0000000000000001`` is not taken for ``1.0``.
    Raises ValueError (orjson's JSONDecodeError, or TooDeep) for what is no JSON the hub reads:
    bad syntax, a number no double can hold (``1e309``), NaN, a lone surrogate, nesting deeper
    than MAX_DEPTH.
    """
    value = orjson.loads(data)
    if _has_float(value):
        try:
            return json.loads(data, parse_float=Decimal)
        except ValueError:
            return value
    return value


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: str | bytes) -> Any:
    return orjson.loads(data)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a ``Z``, or None."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_iso(value: str) -> int:
    """ISO 8601 to epoch milliseconds; naive times are taken as UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


_lock = threading.Lock()
_last = [0, 0]


def uuid7(after: str | None = None) -> str:
    """A time-ordered UUID (RFC 9562 version 7), later than ``after`` if given.

    Ids sort by creation time, so ``before``/``after`` paging compares ids, in Redis and
    in MySQL alike. Within one millisecond a counter keeps one process's ids increasing.
    """
    with _lock:
        ms = now_ms()
        if after is not None:
            ms = max(ms, uuid7_ms(after) + 1)
        if ms <= _last[0]:
            ms = _last[0]
            _last[1] += 1
            if _last[1] > 0xFFF:
                ms += 1
                _last[1] = 0
        else:
            _last[1] = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last[0] = ms
        counter = _last[1]
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))


def uuid7_ms(value: str) -> int:
    return uuid.UUID(value).int >> 80


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False
