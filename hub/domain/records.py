"""The contract's objects (stream, stats, message, tip), built from Redis hashes and MySQL rows."""

from __future__ import annotations

import json
from datetime import UTC
from decimal import Decimal
from typing import Any

from hub.codec import iso_ms
from hub.money import decimal_json, money_json


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _str_or_none(value: str | None) -> str | None:
    return value if value not in (None, "") else None


def stream_from_hash(h: dict[str, str], viewer_count: int) -> dict[str, Any]:
    """The stream object from its Redis hash (times in epoch ms, money in cents)."""
    started = _int_or_none(h.get("started_at"))
    ended = _int_or_none(h.get("ended_at"))
    return {
        "stream_id": h["stream_id"],
        "streamer_id": h["streamer_id"],
        "streamer_name": _str_or_none(h.get("streamer_name")),
        "title": h.get("title", ""),
        "description": h.get("description", ""),
        "thumbnail_url": _str_or_none(h.get("thumbnail_url")),
        "status": h["status"],
        "viewer_count": viewer_count if h["status"] == "LIVE" else 0,
        "peak_viewers": int(h.get("peak_viewers") or 0),
        "started_at": iso_ms(started),
        "ended_at": iso_ms(ended),
        "duration_seconds": _int_or_none(h.get("duration_seconds")),
        "category": h.get("category", ""),
        "is_recording": h.get("is_recording") == "1",
        "recording_url": _str_or_none(h.get("recording_url")),
        "scheduled_at": iso_ms(_int_or_none(h.get("scheduled_at"))),
        "created_at": iso_ms(_int_or_none(h.get("created_at"))),
        "updated_at": iso_ms(_int_or_none(h.get("updated_at"))),
    }


def stats_from_hash(h: dict[str, str], viewer_count: int, unique_viewers: int, now: int) -> dict[str, Any]:
    started = _int_or_none(h.get("started_at"))
    duration = _int_or_none(h.get("duration_seconds"))
    if h["status"] == "LIVE" and started is not None:
        duration = max(0, (now - started) // 1000)
    return {
        "stream_id": h["stream_id"],
        "status": h["status"],
        "viewer_count": viewer_count if h["status"] == "LIVE" else 0,
        "peak_viewers": int(h.get("peak_viewers") or 0),
        "unique_viewers": unique_viewers,
        "message_count": int(h.get("message_count") or 0),
        "tip_count": int(h.get("tip_count") or 0),
        "tips_total": money_json(int(h.get("tips_cents") or 0)),
        "platform_fees_total": money_json(int(h.get("fees_cents") or 0)),
        "duration_seconds": duration,
    }


def _ms(value: Any) -> int | None:
    """A MySQL DATETIME(3) (naive UTC) as epoch ms."""
    if value is None:
        return None
    return int(value.replace(tzinfo=UTC).timestamp() * 1000)


def _cents(value: Any) -> int:
    return int(value * 100)


def stream_from_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream_id": r["stream_id"],
        "streamer_id": r["streamer_id"],
        "streamer_name": r["streamer_name"],
        "title": r["title"],
        "description": r["description"] or "",
        "thumbnail_url": r["thumbnail_url"],
        "status": r["status"],
        "viewer_count": 0,
        "peak_viewers": r["peak_viewers"],
        "started_at": iso_ms(_ms(r["started_at"])),
        "ended_at": iso_ms(_ms(r["ended_at"])),
        "duration_seconds": r["duration_seconds"],
        "category": r["category"] or "",
        "is_recording": bool(r["is_recording"]),
        "recording_url": r["recording_url"],
        "scheduled_at": iso_ms(_ms(r["scheduled_at"])),
        "created_at": iso_ms(_ms(r["created_at"])),
        "updated_at": iso_ms(_ms(r["updated_at"])),
    }


def stats_from_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "stream_id": r["stream_id"],
        "status": r["status"],
        "viewer_count": 0,
        "peak_viewers": r["peak_viewers"],
        "unique_viewers": r["unique_viewers"],
        "message_count": r["message_count"],
        "tip_count": r["tip_count"],
        "tips_total": money_json(_cents(r["tips_total"])),
        "platform_fees_total": money_json(_cents(r["platform_fees_total"])),
        "duration_seconds": r["duration_seconds"],
    }


def message_from_row(r: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": r["message_id"],
        "stream_id": r["stream_id"],
        "user_id": r["user_id"],
        "username": r["username"],
        "message": r["message"],
        "message_type": r["message_type"],
        "tip_amount": None if r["tip_amount"] is None else money_json(_cents(r["tip_amount"])),
        "created_at": iso_ms(_ms(r["created_at"])),
    }
    if r["message_type"] == "ALERT":
        message["alert"] = alert_from_json(r.get("alert"))
    return message


def alert_from_json(text: str | bytes | None) -> dict[str, Any]:
    """An alert column (JSON text) with its price read exactly, never through a float."""
    alert = json.loads(text, parse_float=Decimal) if text else {}
    price = alert.get("price")
    return {
        "symbol": alert.get("symbol"),
        "side": alert.get("side"),
        "price": None if price is None else decimal_json(Decimal(price)),
    }


ACTION_FIELDS = ("user_id", "message_id", "seconds", "reason")


def action_from_row(r: dict[str, Any]) -> dict[str, Any]:
    """A moderation action as ``GET /{streamId}/moderation`` lists it."""
    action: dict[str, Any] = {
        "action_id": r["action_id"],
        "action": r["action"],
        "stream_id": r["stream_id"],
        "by": r["by_user"],
        "created_at": iso_ms(_ms(r["created_at"])),
    }
    for name in ACTION_FIELDS:
        if r.get(name) is not None:
            action[name] = r[name]
    if r.get("ends_at") is not None:
        action["until"] = iso_ms(_ms(r["ends_at"]))
    return action
