"""Validation of every inbound payload into a typed record, or an ``invalid`` HubError.

Fields that name a user (``user_id``, ``username``, ``from_user_id``, ``userId``) are
ignored: identity comes from the token only.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlparse

from hub.codec import is_uuid, now_ms, parse_iso
from hub.errors import HubError, invalid
from hub.money import exact_decimal, to_cents
from hub.settings import Settings

MESSAGE_MAX = 500
TITLE_MAX = 200
DESCRIPTION_MAX = 5000
CATEGORY_MAX = 64
URL_MAX = 2048
CLIENT_TIP_ID_MAX = 64
STATUSES = ("LIVE", "ENDED", "SCHEDULED")
SCHEDULE_HORIZON_MS = 366 * 24 * 3600 * 1000


# -- text a client gives: names, messages, titles ---------------------------------------------
# Removed: control characters, line and paragraph separators, lone surrogates, and the invisible
# characters (Unicode's default-ignorables): the format characters (Cf: bidi embeddings,
# overrides, isolates and marks, zero-width space and joiners, word joiner, BOM, soft hyphen,
# tags), the Hangul fillers, the combining grapheme joiner. Kept where an emoji sequence needs
# them: a ZWJ between two pictographs (👨‍👩‍👧), a variation selector after a pictograph, a keycap's
# base or any other non-ASCII character (❤️, #️⃣), the tags of a flag (🏴󠁧󠁢󠁳󠁣󠁴󠁿).
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_INVISIBLE = frozenset({0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0})
_ASCII_CONTROLS = dict.fromkeys([*range(32), 127])
_PICTOGRAPHS_BMP = frozenset({0xA9, 0xAE, 0x203C, 0x2049, 0x2139, 0x3030, 0x303D, 0x3297, 0x3299})
ZWJ = "\u200d"
BLACK_FLAG, CANCEL_TAG = 0x1F3F4, 0xE007F


def _pictograph(ch: str) -> bool:
    """An emoji's base, near enough (Extended_Pictographic is not in ``unicodedata``): the
    supplementary emoji blocks, the BMP's symbols and arrows, a few more."""
    cp = ord(ch)
    return (
        0x1F000 <= cp <= 0x1FAFF
        or cp in _PICTOGRAPHS_BMP
        or (0x2100 <= cp <= 0x2BFF and unicodedata.category(ch) in ("So", "Sm"))
    )


def _variation_selector(cp: int) -> bool:
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF or cp in (0x180B, 0x180C, 0x180D, 0x180F)


def _selectable(ch: str) -> bool:
    """Whether a variation selector may follow ``ch``: a keycap's base, or a visible non-ASCII
    character (a pictograph, an ideograph) that is no joiner or selector itself."""
    if ch.isascii():
        return ch in "0123456789#*"
    return not ch.isspace() and ch != ZWJ and not _variation_selector(ord(ch))


def _flag_tags(value: str, start: int) -> int:
    """The end of a flag's tag sequence (tags, then CANCEL TAG) starting at ``start``, or
    ``start`` if there is none."""
    end = start
    while end < len(value) and 0xE0020 <= ord(value[end]) <= 0xE007E:
        end += 1
    return end + 1 if start < end < len(value) and ord(value[end]) == CANCEL_TAG else start


def clean_text(value: str) -> str:
    """Control, bidi and invisible characters removed (emoji sequences kept whole), then trimmed."""
    if value.isascii():
        return value.translate(_ASCII_CONTROLS).strip()
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        cp = ord(ch)
        i += 1
        if cp == BLACK_FLAG and (end := _flag_tags(value, i)) > i:
            out.append(value[i - 1 : end])
            i = end
        elif ch == ZWJ:
            if out and (_pictograph(out[-1][-1]) or out[-1] == "\ufe0f") and i < n and _pictograph(value[i]):
                out.append(ch)
        elif _variation_selector(cp):
            if out and _selectable(out[-1][-1]):
                out.append(ch)
        elif cp not in _INVISIBLE and unicodedata.category(ch) not in _DROPPED_CATEGORIES:
            out.append(ch)
    return "".join(out).strip()


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

    Inbound JSON numbers arrive as exact Decimals (``codec.loads_exact``); a float (from a
    caller that decoded JSON itself) is read from its shortest repr.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid("'amount' must be a finite number.")
    try:
        amount = exact_decimal(value)
    except (ValueError, InvalidOperation) as exc:
        raise invalid("'amount' must be a number.") from exc
    if not amount.is_finite() or amount <= 0:
        raise invalid("'amount' must be a positive number.")
    # The range first: normalizing 1e9999999 would overflow the decimal context.
    if not settings.tip_min <= amount <= settings.tip_max:
        raise invalid(f"'amount' must be between {settings.tip_min} and {settings.tip_max}.")
    exponent = amount.normalize().as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -2:
        raise invalid("'amount' must have at most two decimals.")
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
            0 < len(client_tip_id) <= CLIENT_TIP_ID_MAX
            and client_tip_id.isprintable()
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
            try:
                parsed = urlparse(thumbnail)
            except ValueError:  # e.g. an unclosed [ in the host
                parsed = None
            if (
                parsed is None
                or len(thumbnail) > URL_MAX
                or parsed.scheme not in ("http", "https")
                or not parsed.netloc
            ):
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


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")


def query_int(query: Any, name: str, default: int, low: int, high: int) -> int:
    """A whole number in ASCII digits (int() would also take "١٠", "１０", "1_0", "+5", " 5")."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not _WHOLE_NUMBER.fullmatch(raw):
        raise invalid(f"'{name}' must be a whole number.")
    value = int(raw)
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


USER_ID_MAX = 191
REASON_MAX = 500
TIMEOUT_MAX = 14 * 24 * 3600
SLOW_MODE_MAX = 3600
SYMBOL_MAX = 16
PRICE_DIGITS = 15
PRICE_DECIMALS = 8
PRICE_MAX = Decimal("1e12")


# What moderate.lua changes for an action: delete a message, time a user out, ban one, lift
# either, clear the chat, set slow mode, name or drop a moderator.
Change = Literal["delete", "timeout", "ban", "lift", "clear", "slow", "add_moderator", "remove_moderator"]


@dataclass(frozen=True)
class Route:
    """How REST exposes a moderation action: its method and path under ``/{stream_id}``
    (``{name}`` parts are payload fields taken from the path), the OpenAPI schema of its body
    (None: no body, or an ignored one on POST) and the operation's summary."""

    method: str
    path: str
    body: str | None
    summary: str

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{(\w+)\}", self.path))


@dataclass(frozen=True)
class ModerationAction:
    """One moderation action of PROTOCOL §8, as every layer reads it from ``MODERATION``.

    ``name`` is its Socket.IO event and the action recorded; ``needs`` the payload fields it
    needs besides ``stream_id``; ``seconds`` the range of its ``seconds``; ``reason`` whether it
    takes one. ``owner_only``: only the streamer or an admin may do it (else its moderators
    too); ``on_self``: the actor may be its target. ``change`` names what ``moderate.lua`` does
    to the stream's live state. ``event`` is the room event that tells it, with the record's
    ``announced`` fields (None: the moderators after the change, which only the script knows);
    ``recorded`` the fields its record always holds; ``conflicts``: it may be refused as a
    conflict (e.g. banning a banned user)."""

    name: str
    needs: tuple[str, ...]
    change: Change
    event: str
    announced: tuple[str, ...] | None
    recorded: tuple[str, ...]
    route: Route
    seconds: tuple[int, int] | None = None
    reason: bool = False
    owner_only: bool = False
    on_self: bool = False
    conflicts: bool = False


_USER = ("user_id",)
MODERATION = {
    action.name: action
    for action in (
        ModerationAction(
            name="delete_message",
            needs=("message_id",),
            change="delete",
            event="message_deleted",
            announced=("message_id",),
            recorded=("message_id",),
            route=Route(
                "DELETE",
                "/chat/{message_id}",
                None,
                "Delete a message (404 when the stream has no such message)",
            ),
        ),
        ModerationAction(
            name="timeout_user",
            needs=("user_id", "seconds"),
            change="timeout",
            event="user_timed_out",
            announced=("user_id", "until"),
            recorded=("user_id", "seconds", "until"),
            route=Route(
                "POST", "/timeouts", "Timeout", "Time a user out (not the streamer, a moderator or yourself)"
            ),
            seconds=(1, TIMEOUT_MAX),
            reason=True,
            conflicts=True,
        ),
        ModerationAction(
            name="ban_user",
            needs=_USER,
            change="ban",
            event="user_banned",
            announced=_USER,
            recorded=_USER,
            route=Route("POST", "/bans", "Ban", "Ban a user from the stream"),
            reason=True,
            conflicts=True,
        ),
        ModerationAction(
            name="unban_user",
            needs=_USER,
            change="lift",
            event="user_unbanned",
            announced=_USER,
            recorded=_USER,
            route=Route("DELETE", "/bans/{user_id}", None, "Lift a ban or a timeout"),
            conflicts=True,
        ),
        ModerationAction(
            name="clear_chat",
            needs=(),
            change="clear",
            event="chat_cleared",
            announced=(),
            recorded=(),
            route=Route("POST", "/chat/clear", None, "Hide every message so far"),
        ),
        ModerationAction(
            name="set_slow_mode",
            needs=("seconds",),
            change="slow",
            event="slow_mode",
            announced=("seconds",),
            recorded=("seconds",),
            route=Route("PUT", "/slow-mode", "SlowMode", "Turn slow mode on or off"),
            seconds=(0, SLOW_MODE_MAX),
        ),
        ModerationAction(
            name="add_moderator",
            needs=_USER,
            change="add_moderator",
            event="moderators_changed",
            announced=None,
            recorded=_USER,
            route=Route("POST", "/moderators", "Moderator", "Name a moderator (streamer or admin)"),
            owner_only=True,
            conflicts=True,
        ),
        ModerationAction(
            name="remove_moderator",
            needs=_USER,
            change="remove_moderator",
            event="moderators_changed",
            announced=None,
            recorded=_USER,
            route=Route("DELETE", "/moderators/{user_id}", None, "Drop a moderator (streamer or admin)"),
            owner_only=True,
            on_self=True,
        ),
    )
}
MODERATION_ACTIONS = tuple(MODERATION)


def target_user(data: dict[str, Any]) -> str:
    """The user a moderation action is about: a non-empty id without control characters."""
    value = _string(data, "user_id", required=True)
    assert value is not None
    if (
        not 0 < len(value) <= USER_ID_MAX
        or value != value.strip()
        or any(unicodedata.category(ch) == "Cc" for ch in value)
    ):
        raise invalid(
            f"'user_id' must be 1 to {USER_ID_MAX} characters without control characters "
            "or surrounding spaces."
        )
    return value


def whole_seconds(data: dict[str, Any], low: int, high: int) -> int:
    value = data.get("seconds")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise invalid("'seconds' must be a whole number.")
    if not (math.isfinite(value) and low <= value <= high):  # the range first: 1e999999 is no int
        raise invalid(f"'seconds' must be between {low} and {high}.")
    if value != int(value):
        raise invalid("'seconds' must be a whole number.")
    return int(value)


@dataclass(frozen=True)
class Moderation:
    """One moderation action of PROTOCOL §8 (the acting user comes from the token)."""

    action: str
    stream_id: str
    user_id: str = ""
    message_id: str = ""
    seconds: int | None = None
    reason: str | None = None

    @property
    def kind(self) -> ModerationAction:
        return MODERATION[self.action]

    @classmethod
    def parse(cls, action: str, data: Any) -> Moderation:
        data = _object(data)
        sid = stream_id(data)
        kind = MODERATION[action]
        user = target_user(data) if "user_id" in kind.needs else ""
        message_id = ""
        if "message_id" in kind.needs:
            raw = data.get("message_id")
            if not is_uuid(raw):
                raise invalid("'message_id' must be a message id.")
            message_id = raw.lower()
        seconds = None if kind.seconds is None else whole_seconds(data, *kind.seconds)
        reason = _text(data, "reason", REASON_MAX) if kind.reason else None
        return cls(action, sid, user, message_id, seconds, reason or None)


def price(value: Any) -> Decimal:
    """A trade price: positive, at most 15 significant digits and 8 decimals, below 10^12."""
    try:
        exact = exact_decimal(value)
    except (ValueError, InvalidOperation) as exc:
        raise invalid("'price' must be a number.") from exc
    if not exact.is_finite() or exact <= 0 or exact >= PRICE_MAX:
        raise invalid("'price' must be a positive number below 10^12.")
    exact = exact.normalize()
    digits, exponent = exact.as_tuple().digits, exact.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -PRICE_DECIMALS or len(digits) > PRICE_DIGITS:
        raise invalid(
            f"'price' may have at most {PRICE_DECIMALS} decimals and {PRICE_DIGITS} significant digits."
        )
    return exact if exponent <= 0 else exact.quantize(Decimal(1))


@dataclass(frozen=True)
class Alert:
    """The streamer's trade alert: a chat message of type ALERT with symbol, side and price."""

    stream_id: str
    message: str
    symbol: str | None
    side: str | None
    price: Decimal | None

    @classmethod
    def parse(cls, data: Any) -> Alert:
        data = _object(data)
        sid = stream_id(data)
        message = _text(data, "message", MESSAGE_MAX, required=True)
        symbol = _string(data, "symbol")
        if symbol is not None:
            symbol = symbol.strip().upper()
            if not 0 < len(symbol) <= SYMBOL_MAX or not all(
                ch.isascii() and (ch.isalnum() or ch in "._:/-") for ch in symbol
            ):
                raise invalid(f"'symbol' must be 1 to {SYMBOL_MAX} letters, digits or . _ : / -.")
        side = data.get("side")
        if side is not None:
            if not isinstance(side, str) or side.upper() not in ("BUY", "SELL"):
                raise invalid("'side' must be BUY or SELL.")
            side = side.upper()
        raw_price = data.get("price")
        assert message is not None
        return cls(sid, message, symbol, side, None if raw_price is None else price(raw_price))
