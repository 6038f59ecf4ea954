"""Parsing inbound payloads into records: money exact, text cleaned, bad input refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hub.codec import uuid7, uuid7_ms
from hub.errors import HubError
from hub.money import fee_cents, to_cents
from hub.payloads import Chat, Tip, amount_cents, clean_text, price, query_int
from hub.settings import Settings

SETTINGS = Settings.from_env({})
SID = "01a20e30-9e9c-70f1-ae30-1464091bfe06"


@pytest.mark.parametrize(("value", "cents"), [
    (1, 100), (10.05, 1005), (1.1, 110), ("10.50", 1050), (9999.99, 999999),
    (10000, 1000000), ("1", 100), (2.3, 230), (1.15, 115),
])
def test_amounts_are_exact(value, cents):
    assert amount_cents(value, SETTINGS) == cents


# Text that Python's int() and Decimal() take but that is no number in ASCII digits.
NOT_ASCII_DIGITS = ["１０", "1_0", "+5", "٥", "١٠.٥٠", "5\u00a0", "\u20035", "1e1_0", "1E٣", "𝟓",
                    ".5", "5.", " 5", "5 ", "0x10"]


@pytest.mark.parametrize("value", [
    0, -1, -0.01, 10.005, "abc", True, False, None, [], {}, "NaN", "Infinity", float("nan"),
    float("inf"), 1e20, 10000.01, 0.99, "1e2.5", "", " ", "1e9999999", "1E+999999999999",
    *NOT_ASCII_DIGITS,
])
def test_bad_amounts_are_invalid(value):
    with pytest.raises(HubError) as err:
        amount_cents(value, SETTINGS)
    assert err.value.code == "invalid"


@pytest.mark.parametrize("value", ["5", "10.50", "1e1", "2.5E+1", "0010"])
def test_amount_text_in_ascii_digits_is_read(value):
    assert amount_cents(value, SETTINGS) == int(Decimal(value) * 100)


@pytest.mark.parametrize("value", NOT_ASCII_DIGITS)
def test_prices_and_query_integers_take_ascii_digits_only(value):
    with pytest.raises(HubError) as err:
        price(value)
    assert err.value.code == "invalid"
    with pytest.raises(HubError) as err:
        query_int({"limit": value}, "limit", 50, 1, 100)
    assert err.value.code == "invalid"
    assert query_int({"limit": "0010"}, "limit", 50, 1, 100) == 10


@pytest.mark.parametrize(("cents", "fee"), [
    (100, 5), (1005, 50), (1234, 62), (10, 1), (30, 2), (1000000, 50000), (1050, 53), (1010, 51),
])
def test_fee_is_rounded_half_up_to_the_cent(cents, fee):
    assert fee_cents(cents, Decimal("0.05")) == fee


def test_to_cents_refuses_fractions_of_a_cent():
    from decimal import Inexact, localcontext

    with localcontext() as ctx:
        ctx.traps[Inexact] = True
        with pytest.raises(Inexact):
            to_cents(Decimal("1.005"))


def test_text_is_cleaned_of_control_characters():
    assert clean_text("  a\x00b\x1fc\x7f\n ") == "abc"
    assert clean_text("é 🚀") == "é 🚀"


def test_chat_ignores_spoofed_identity_fields():
    chat = Chat.parse({"stream_id": SID, "message": "hi", "user_id": "mallory", "username": "Admin"})
    assert chat == Chat(SID, "hi", "TEXT")


@pytest.mark.parametrize("data", [
    None, "text", 42, [], {"stream_id": SID}, {"stream_id": SID, "message": ""},
    {"stream_id": SID, "message": "   "}, {"stream_id": SID, "message": "x" * 501},
    {"stream_id": SID, "message": 5}, {"stream_id": SID, "message": "hi", "message_type": "TIP"},
    {"stream_id": 7, "message": "hi"}, {"message": "hi"},
])
def test_bad_chat_payloads_are_invalid(data):
    with pytest.raises(HubError) as err:
        Chat.parse(data)
    assert err.value.code == "invalid"


def test_tip_currency_and_client_tip_id_are_checked():
    tip = Tip.parse({"stream_id": SID, "amount": "5", "currency": "usd", "client_tip_id": "abc-1"}, SETTINGS)
    assert (tip.amount_cents, tip.currency, tip.client_tip_id) == (500, "USD", "abc-1")
    for bad in ({"currency": "EUR"}, {"client_tip_id": ""}, {"client_tip_id": "a b"},
                {"client_tip_id": "x" * 65}, {"to_user_id": 5}):
        with pytest.raises(HubError):
            Tip.parse({"stream_id": SID, "amount": 5, **bad}, SETTINGS)


def test_ids_sort_by_creation_time():
    ids = [uuid7() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid7_ms(i) > 0 for i in ids[:3])
