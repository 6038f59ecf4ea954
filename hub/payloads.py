"""Validation of every inbound payload into a typed record, or an ``invalid`` HubError.

Fields that name a user (``user_id``, ``username``, ``from_user_id``, ``userId``) are
ignored: identity comes from the token only.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlparse

from hub.codec import is_uuid, now_ms, parse_iso
from hub.errors import HubError, invalid
from hub.money import to_cents
from hub.settings import Settings

MESSAGE_MAX = 500
TITLE_MAX = 200
DESCRIPTION_MAX = 5000
CATEGORY_MAX = 64
URL_MAX = 2048
CLIENT_TIP_ID_MAX = 64
STATUSES = ("LIVE", "ENDED", "SCHEDULED")
SCHEDULE_HORIZON_MS = 366 * 24 * 3600 * 1000


def clean_text(value: str) -> str:
    """Control characters removed, then trimmed."""
    return "".join(ch for ch in value if unicodedata.category(ch) != "Cc").strip()


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise invalid("The payload must be a JSON object.")
    return data


def _string(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise invalid(f"'{name}' is required.")
        return None
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string.")
    return value


def stream_id(data: dict[str, Any], name: str = "stream_id") -> str:
    """A stream id: a string is required; one that is no UUID names no stream."""
    value = _string(data, name, required=True)
    assert value is not None
    if not is_uuid(value):
        raise HubError("not_found")
    return value.lower()


def path_stream_id(value: str) -> str:
    if not is_uuid(value):
        raise HubError("not_found")
    return value.lower()


def _text(data: dict[str, Any], name: str, limit: int, *, required: bool = False) -> str | None:
    raw = _string(data, name, required=required)
    if raw is None:
        return None
    text = clean_text(raw)
    if required and not text:
        raise invalid(f"'{name}' must not be empty.")
    if len(text) > limit:
        raise invalid(f"'{name}' must be at most {limit} characters.")
    return text


def amount_cents(value: Any, settings: Settings) -> int:
    """A positive amount with at most two decimals within the configured range, in cents.

    JSON numbers arrive as floats; their shortest repr is the text the client wrote, so
    ``Decimal(repr(x))`` recovers it exactly before any arithmetic.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid("'amount' must be a number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid("'amount' must be a finite number.")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise invalid("'amount' must be a number.") from exc
    if not amount.is_finite() or amount <= 0:
        raise invalid("'amount' must be a positive number.")
    exponent = amount.normalize().as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -2:
        raise invalid("'amount' must have at most two decimals.")
    if not settings.tip_min <= amount <= settings.tip_max:
        raise invalid(f"'amount' must be between {settings.tip_min} and {settings.tip_max}.")
    return to_cents(amount)


@dataclass(frozen=True)
class Join:
    stream_id: str
    last_message_id: str | None

    @classmethod
    def parse(cls, data: Any) -> Join:
        data = _object(data)
        last = data.get("last_message_id")
        if last is not None and not is_uuid(last):
            raise invalid("'last_message_id' must be a message id.")
        return cls(stream_id(data), last.lower() if last else None)


@dataclass(frozen=True)
class Chat:
    stream_id: str
    message: str
    message_type: str

    @classmethod
    def parse(cls, data: Any) -> Chat:
        data = _object(data)
        sid = stream_id(data)
        message = _text(data, "message", MESSAGE_MAX, required=True)
        kind = data.get("message_type", "TEXT")
        if kind is None:
            kind = "TEXT"
        if kind not in ("TEXT", "EMOJI"):
            raise invalid("'message_type' must be TEXT or EMOJI.")
        assert message is not None
        return cls(sid, message, kind)


@dataclass(frozen=True)
class Tip:
    stream_id: str
    amount_cents: int
    message: str
    to_user_id: str | None
    currency: str
    client_tip_id: str | None

    @classmethod
    def parse(cls, data: Any, settings: Settings) -> Tip:
        data = _object(data)
        sid = stream_id(data)
        if "amount" not in data:
            raise invalid("'amount' is required.")
        cents = amount_cents(data["amount"], settings)
        message = _text(data, "message", MESSAGE_MAX) or ""
        to_user = _string(data, "to_user_id")
        currency = (_string(data, "currency") or settings.currency).upper()
        if currency != settings.currency:
            raise invalid(f"'currency' must be {settings.currency}.")
        client_tip_id = _string(data, "client_tip_id")
        if client_tip_id is not None and not (
            0 < len(client_tip_id) <= CLIENT_TIP_ID_MAX and client_tip_id.isprintable()
            and " " not in client_tip_id
        ):
            raise invalid(f"'client_tip_id' must be 1 to {CLIENT_TIP_ID_MAX} printable characters.")
        return cls(sid, cents, message, to_user, currency, client_tip_id)


@dataclass(frozen=True)
class CreateStream:
    title: str
    description: str
    category: str
    thumbnail_url: str | None
    scheduled_at: int | None

    @classmethod
    def parse(cls, data: Any) -> CreateStream:
        data = _object(data)
        title = _text(data, "title", TITLE_MAX, required=True)
        description = _text(data, "description", DESCRIPTION_MAX) or ""
        category = _text(data, "category", CATEGORY_MAX) or ""
        if category and not all(ch.isalnum() or ch in "-_ ." for ch in category):
            raise invalid("'category' may hold letters, digits, spaces and - _ . only.")
        thumbnail = _string(data, "thumbnail_url")
        if thumbnail is not None:
            parsed = urlparse(thumbnail)
            if len(thumbnail) > URL_MAX or parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise invalid("'thumbnail_url' must be an http(s) URL.")
        scheduled = _string(data, "scheduled_at")
        scheduled_ms = None
        if scheduled is not None:
            try:
                scheduled_ms = parse_iso(scheduled)
            except (ValueError, OverflowError) as exc:
                raise invalid("'scheduled_at' must be an ISO 8601 time.") from exc
            if scheduled_ms > now_ms() + SCHEDULE_HORIZON_MS:
                raise invalid("'scheduled_at' must be within a year from now.")
            if scheduled_ms <= now_ms():
                scheduled_ms = None
        assert title is not None
        return cls(title, description, category, thumbnail, scheduled_ms)


def query_int(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise invalid(f"'{name}' must be a whole number.") from exc
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low} and {high}.")
    return value


def query_status(query: Any) -> str | None:
    raw = query.get("status")
    if raw is None or raw == "":
        return None
    status = raw.upper()
    if status not in STATUSES:
        raise invalid("'status' must be LIVE, ENDED or SCHEDULED.")
    return status


def query_message_id(query: Any, name: str) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not is_uuid(raw):
        raise invalid(f"'{name}' must be a message id.")
    return raw.lower()
