"""Property tests of every payload parser: arbitrary JSON in, a valid record or an error out."""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.payloads import (
    MESSAGE_MAX,
    MODERATION_ACTIONS,
    PRICE_DIGITS,
    Alert,
    Chat,
    CreateStream,
    Join,
    Moderation,
    Tip,
    amount_cents,
    price,
)
from hub.errors import HubError
from hub.settings import Settings

SETTINGS = Settings.from_env({})
SID = "01a20e30-9e9c-70f1-ae30-1464091bfe06"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "stream_id",
    "message",
    "message_type",
    "amount",
    "currency",
    "client_tip_id",
    "to_user_id",
    "title",
    "description",
    "category",
    "thumbnail_url",
    "scheduled_at",
    "last_message_id",
    "user_id",
    "message_id",
    "seconds",
    "reason",
    "symbol",
    "side",
    "price",
]
payloads = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(lambda d: {"stream_id": SID, **d}),
)


def parses_or_refuses(parse, data) -> object | None:
    try:
        return parse(data)
    except HubError as exc:
        assert exc.code in ("invalid", "not_found")
        return None


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_chat_parser(data):
    chat = parses_or_refuses(Chat.parse, data)
    if chat is not None:
        assert 1 <= len(chat.message) <= MESSAGE_MAX and chat.message == chat.message.strip()
        assert chat.message_type in ("TEXT", "EMOJI") and chat.stream_id == data["stream_id"]


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_tip_parser(data):
    tip = parses_or_refuses(lambda d: Tip.parse(d, SETTINGS), data)
    if tip is not None:
        assert 100 <= tip.amount_cents <= 1_000_000 and tip.currency == "USD"


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_join_and_create_parsers(data):
    parses_or_refuses(Join.parse, data)
    parses_or_refuses(CreateStream.parse, data)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(), st.integers(), st.text(max_size=20), st.decimals(allow_nan=True)))
def test_amounts_are_exact_or_refused(value):
    raw = str(value) if isinstance(value, Decimal) else value
    try:
        cents = amount_cents(raw, SETTINGS)
    except HubError as exc:
        assert exc.code == "invalid"
        return
    text = repr(raw) if isinstance(raw, float) else str(raw).strip()
    assert Decimal(text) * 100 == cents
    if isinstance(raw, float):
        assert math.isfinite(raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MODERATION_ACTIONS), payloads)
def test_moderation_parser(action, data):
    m = parses_or_refuses(lambda d: Moderation.parse(action, d), data)
    if m is None:
        return
    assert m.action == action and m.stream_id == data["stream_id"]
    if action in ("timeout_user", "ban_user", "unban_user", "add_moderator", "remove_moderator"):
        assert 0 < len(m.user_id) <= 191 and m.user_id == m.user_id.strip()
    if action == "timeout_user":
        assert m.seconds is not None and 1 <= m.seconds <= 14 * 24 * 3600
    if action == "set_slow_mode":
        assert m.seconds is not None and 0 <= m.seconds <= 3600
    if m.reason is not None:
        assert 0 < len(m.reason) <= 500


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_alert_parser(data):
    alert = parses_or_refuses(Alert.parse, data)
    if alert is not None:
        assert 1 <= len(alert.message) <= MESSAGE_MAX and alert.side in (None, "BUY", "SELL")
        assert alert.price is None or 0 < alert.price < Decimal("1e12")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(), st.integers(), st.text(max_size=20), st.decimals(allow_nan=True)))
def test_prices_are_exact_or_refused(value):
    raw = str(value) if isinstance(value, Decimal) else value
    try:
        exact = price(raw)
    except HubError as exc:
        assert exc.code == "invalid"
        return
    text = repr(raw) if isinstance(raw, float) else str(raw).strip()
    assert Decimal(text) == exact and len(exact.normalize().as_tuple().digits) <= PRICE_DIGITS
