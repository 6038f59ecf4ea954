"""What each MySQL column takes, checked in Python before any SQL is sent.

A record of the outbox is either written or, when it is itself malformed, set aside in the
dead letters. That is decided here, from the record alone and before any SQL, against the
types, lengths and ranges of ``sql/*.sql``; so an error MySQL returns is always the database's
(the flusher retries it), never the record's.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, overload

from hub.codec import parse_iso
from hub.money import CENT, exact_decimal


class BadRecord(ValueError):
    """An outbox record that cannot be turned into a row: it goes to the dead letters."""


INT_UNSIGNED = 2**32 - 1
BIGINT_UNSIGNED = 2**64 - 1
CENTS_MAX = 10**12 - 1  # DECIMAL(12,2)
MONEY_MAX = Decimal("9999999999.99")
TEXT_BYTES = 65_535
# DATETIME(3) holds 1000-01-01 to 9999-12-31, here as epoch milliseconds.
FIRST_MS, LAST_MS = -30_610_224_000_000, 253_402_300_799_999

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"-?[0-9]{1,20}")
_HUB_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@overload
def uuid(value: Any, name: str, *, null: Literal[False] = False) -> str: ...
@overload
def uuid(value: Any, name: str, *, null: bool) -> str | None: ...
def uuid(value: Any, name: str, *, null: bool = False) -> str | None:
    """A CHAR(36) id: a UUID's text."""
    if value is None and null:
        return None
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise BadRecord(f"{name} is not a UUID")
    return value


@overload
def text(value: Any, name: str, limit: int, *, null: Literal[False] = False) -> str: ...
@overload
def text(value: Any, name: str, limit: int, *, null: bool) -> str | None: ...
def text(value: Any, name: str, limit: int, *, null: bool = False) -> str | None:
    """A VARCHAR(limit) (characters, as utf8mb4 counts them)."""
    if value is None and null:
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{name} is not a string")
    if len(value) > limit:
        raise BadRecord(f"{name} is longer than {limit} characters")
    return value


def long_text(value: Any, name: str, limit_bytes: int = TEXT_BYTES) -> str:
    """A TEXT column, whose limit is in bytes."""
    if not isinstance(value, str):
        raise BadRecord(f"{name} is not a string")
    if len(value) * 4 > limit_bytes and len(value.encode()) > limit_bytes:
        raise BadRecord(f"{name} is longer than {limit_bytes} bytes")
    return value


def choice(value: Any, name: str, options: Collection[str]) -> str:
    """An ENUM's value."""
    if not isinstance(value, str) or value not in options:
        raise BadRecord(f"{name} is not one of {', '.join(options)}")
    return value


def code(value: Any, name: str, size: int) -> str:
    """A CHAR(size) code of letters (a currency)."""
    if not isinstance(value, str) or len(value) != size or not (value.isascii() and value.isalpha()):
        raise BadRecord(f"{name} is not a code of {size} letters")
    return value


def whole(value: Any, name: str, low: int, high: int) -> int:
    """An integer column's value: a JSON integer (or a float that is one, as Redis's cjson may
    write a large number), or the decimal text a Redis hash holds."""
    if isinstance(value, bool):
        raise BadRecord(f"{name} is not a whole number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if not isinstance(value, int):
        raise BadRecord(f"{name} is not a whole number")
    if not low <= value <= high:
        raise BadRecord(f"{name} is not between {low} and {high}")
    return value


def cents(value: Any, name: str, low: int = 0, high: int = CENTS_MAX, *, digits: bool = False) -> int:
    """Money in integer cents, never a float: a JSON integer, or (``digits``) a Redis hash's
    decimal text."""
    if isinstance(value, str) and digits and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRecord(f"{name} is not a whole number of cents")
    if not low <= value <= high:
        raise BadRecord(f"{name} is not between {low} and {high} cents")
    return value


def money(value: Any, name: str) -> Decimal | None:
    """A DECIMAL(12,2) amount from JSON: the exact decimal it was written as, in whole cents
    (a JSON float's repr is the text that was sent)."""
    if value is None:
        return None
    amount = exact_decimal(value)
    if not amount.is_finite() or abs(amount) > MONEY_MAX or amount != amount.quantize(CENT):
        raise BadRecord(f"{name} is not an amount of whole cents below {MONEY_MAX}")
    return amount.quantize(CENT)


def number(value: Any, name: str) -> Decimal:
    """A finite decimal from JSON, exactly as written (an alert's price, kept in a JSON column)."""
    found = exact_decimal(value)
    if not found.is_finite():
        raise BadRecord(f"{name} is not a finite number")
    return found


@overload
def ms_time(value: Any, name: str, *, null: Literal[False] = False) -> datetime: ...
@overload
def ms_time(value: Any, name: str, *, null: bool) -> datetime | None: ...
def ms_time(value: Any, name: str, *, null: bool = False) -> datetime | None:
    """A DATETIME(3) from epoch milliseconds (a Redis hash's text, or a JSON number)."""
    if value in (None, "") and null:
        return None
    ms = whole(value, name, FIRST_MS, LAST_MS)
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


@overload
def iso_time(value: Any, name: str, *, null: Literal[False] = False) -> datetime | str: ...
@overload
def iso_time(value: Any, name: str, *, null: bool) -> datetime | str | None: ...
def iso_time(value: Any, name: str, *, null: bool = False) -> datetime | str | None:
    """A DATETIME(3) from an ISO 8601 time. The hub's own form (``…T…\\.mmmZ``) becomes MySQL's
    text directly, once Python has read it as a date that exists; any other is parsed."""
    if value is None and null:
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{name} is not an ISO 8601 string")
    if _HUB_ISO.fullmatch(value):
        try:
            datetime.fromisoformat(value[:23])
        except ValueError:
            raise BadRecord(f"{name} is not a date that exists") from None
        if value < "1000":
            raise BadRecord(f"{name} is before the year 1000")
        return f"{value[:10]} {value[11:23]}"
    try:
        ms = parse_iso(value)
    except ValueError:
        raise BadRecord(f"{name} is not an ISO 8601 time") from None
    return ms_time(ms, name)
