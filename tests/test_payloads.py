"""Parsing inbound payloads into records: money exact, text cleaned, bad input refused."""

from __future__ import annotations

import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.codec import uuid7, uuid7_ms
from hub.domain.auth import identity_from_claims
from hub.domain.payloads import Chat, Tip, amount_cents, clean_text, price, query_int
from hub.errors import HubError
from hub.money import fee_cents, to_cents
from hub.settings import Settings

SETTINGS = Settings.from_env({})
SID = "01a20e30-9e9c-70f1-ae30-1464091bfe06"


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        (1, 100),
        (10.05, 1005),
        (1.1, 110),
        ("10.50", 1050),
        (9999.99, 999999),
        (10000, 1000000),
        ("1", 100),
        (2.3, 230),
        (1.15, 115),
    ],
)
def test_amounts_are_exact(value, cents):
    assert amount_cents(value, SETTINGS) == cents


# Text that Python's int() and Decimal() take but that is no number in ASCII digits.
NOT_ASCII_DIGITS = [
    "１０",
    "1_0",
    "+5",
    "٥",
    "١٠.٥٠",
    "5\u00a0",
    "\u20035",
    "1e1_0",
    "1E٣",
    "𝟓",
    ".5",
    "5.",
    " 5",
    "5 ",
    "0x10",
]


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        -0.01,
        10.005,
        "abc",
        True,
        False,
        None,
        [],
        {},
        "NaN",
        "Infinity",
        float("nan"),
        float("inf"),
        1e20,
        10000.01,
        0.99,
        "1e2.5",
        "",
        " ",
        "1e9999999",
        "1E+999999999999",
        *NOT_ASCII_DIGITS,
    ],
)
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


@pytest.mark.parametrize(
    ("cents", "fee"),
    [
        (100, 5),
        (1005, 50),
        (1234, 62),
        (10, 1),
        (30, 2),
        (1000000, 50000),
        (1050, 53),
        (1010, 51),
    ],
)
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


BIDI = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
]
INVISIBLE = [
    "\u200b",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u200c",
    "\u2061",
    "\u180e",
    "\U000e0041",
    "\u3164",
    "\u034f",
    "\u2028",
    "\u2029",
]
# Emoji sequences that hold joiners, selectors or tags, each of which must survive whole.
EMOJI = [
    "👨\u200d👩\u200d👧",
    "❤️",
    "❤️\u200d🔥",
    "🏳️\u200d🌈",
    "👁️\u200d🗨️",
    "🧑🏽\u200d💻",
    "🏃\u200d♀️",
    "🐻\u200d❄️",
    "#️⃣",
    "1️⃣",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "🇫🇷",
    "👍🏿",
    "☺︎",
    "©️",
]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\u202eevil.exe\u202c", "evil.exe"),
        ("Ad\u200bmin", "Admin"),
        ("\u2067\u0645\u0631\u062d\u0628\u0627\u2069 hi", "\u0645\u0631\u062d\u0628\u0627 hi"),
        ("\ufeffhello\u00ad", "hello"),
        ("a\u200db", "ab"),  # a joiner between letters: no emoji sequence
        ("\u200d👍", "👍"),  # nothing to join on the left
        ("👍\u200d", "👍"),  # nor on the right
        ("👍\u200d\u200b👍", "👍👍"),  # the joiner is not next to the second pictograph
        ("admin\ufe0f", "admin"),  # a selector after an ASCII letter hides nothing but itself
        ("👍\ufe0f\ufe0f", "👍\ufe0f"),
        ("\U000e0067\U000e0062", ""),  # tags with no flag
        ("\u3164", ""),  # a Hangul filler: an invisible name
        ("line\u2028break", "linebreak"),
    ],
)
def test_bidi_controls_and_invisible_characters_are_removed(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize("emoji", EMOJI)
def test_emoji_sequences_are_kept_whole(emoji):
    assert clean_text(emoji) == emoji
    assert clean_text(f"\u202e{emoji}\u200b and {emoji}\u2069") == f"{emoji} and {emoji}"


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(max_size=4), st.sampled_from(BIDI + INVISIBLE + EMOJI + ["\u200d", "\ufe0f"])),
        max_size=12,
    ).map("".join)
)
def test_cleaned_text_holds_no_bidi_or_invisible_character_outside_an_emoji_sequence(text):
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert cleaned == cleaned.strip()
    for n, ch in enumerate(cleaned):
        category = unicodedata.category(ch)
        assert ch not in BIDI and category not in ("Cc", "Cs", "Zl", "Zp"), (text, cleaned)
        if ch == "\u200d":  # only between symbols (a pictograph, a skin tone, a selector's)
            assert 0 < n < len(cleaned) - 1, (text, cleaned)
            assert unicodedata.category(cleaned[n + 1]) in ("So", "Sm", "Sk", "Po", "Pd"), (text, cleaned)
            assert cleaned[n - 1] == "\ufe0f" or unicodedata.category(cleaned[n - 1]) in (
                "So",
                "Sm",
                "Sk",
                "Po",
                "Pd",
            ), (text, cleaned)
        elif category == "Cf":
            assert 0xE0020 <= ord(ch) <= 0xE007F and "\U0001f3f4" in cleaned, (text, cleaned)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EMOJI),
    st.lists(st.sampled_from(BIDI + INVISIBLE + [" ", "a", "é"]), max_size=6).map("".join),
)
def test_an_emoji_sequence_survives_whatever_surrounds_it(emoji, noise):
    assert emoji in clean_text(noise + " " + emoji + " " + noise)


def test_a_token_name_is_cleaned_as_shown():
    claims = {"sub": "u1", "name": "\u202eAdmin\u200b 👨\u200d👩\u200d👧", "exp": 1}
    assert identity_from_claims(claims).name == "Admin 👨\u200d👩\u200d👧"
    assert identity_from_claims({"sub": "u1", "name": "\u200b\u202e", "exp": 1}).name == "u1"
    assert (
        identity_from_claims({"sub": "u1", "name": "x" * 99 + "👍\u200d👍", "exp": 1}).name == "x" * 99 + "👍"
    )


def test_chat_ignores_spoofed_identity_fields():
    chat = Chat.parse({"stream_id": SID, "message": "hi", "user_id": "mallory", "username": "Admin"})
    assert chat == Chat(SID, "hi", "TEXT")


@pytest.mark.parametrize(
    "data",
    [
        None,
        "text",
        42,
        [],
        {"stream_id": SID},
        {"stream_id": SID, "message": ""},
        {"stream_id": SID, "message": "   "},
        {"stream_id": SID, "message": "x" * 501},
        {"stream_id": SID, "message": 5},
        {"stream_id": SID, "message": "hi", "message_type": "TIP"},
        {"stream_id": 7, "message": "hi"},
        {"message": "hi"},
    ],
)
def test_bad_chat_payloads_are_invalid(data):
    with pytest.raises(HubError) as err:
        Chat.parse(data)
    assert err.value.code == "invalid"


def test_tip_currency_and_client_tip_id_are_checked():
    tip = Tip.parse({"stream_id": SID, "amount": "5", "currency": "usd", "client_tip_id": "abc-1"}, SETTINGS)
    assert (tip.amount_cents, tip.currency, tip.client_tip_id) == (500, "USD", "abc-1")
    for bad in (
        {"currency": "EUR"},
        {"client_tip_id": ""},
        {"client_tip_id": "a b"},
        {"client_tip_id": "x" * 65},
        {"to_user_id": 5},
    ):
        with pytest.raises(HubError):
            Tip.parse({"stream_id": SID, "amount": 5, **bad}, SETTINGS)


def test_ids_sort_by_creation_time():
    ids = [uuid7() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid7_ms(i) > 0 for i in ids[:3])
