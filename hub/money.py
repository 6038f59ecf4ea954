"""Exact money: Decimal on the edges, integer cents in Redis counters."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import orjson

CENT = Decimal("0.01")
# A number's text as JSON writes one, in ASCII digits: Decimal() would also take other scripts'
# digits ("١٠", "１０"), underscores ("1_0"), a plus sign, spaces, ".5" and "5.".
NUMBER_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_exact())


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def fee_cents(amount_cents: int, rate: Decimal) -> int:
    """The platform fee on an amount, rounded half-up to the cent."""
    return int((Decimal(amount_cents) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def money_json(cents: int | None) -> orjson.Fragment | None:
    """An amount for the wire: a JSON number written from the exact decimal text (``10.50``),
    never through a binary float."""
    if cents is None:
        return None
    return orjson.Fragment(str(from_cents(cents)).encode())


def exact_decimal(value: object) -> Decimal:
    """A JSON number (Decimal, int, float, or its text in ASCII digits, ``NUMBER_TEXT``) as the
    exact decimal it was written as.

    A JSON float's shortest repr is the text the client sent when it has at most 15
    significant digits, which is why callers bound the digits they accept.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("not a number")
    if isinstance(value, str) and not NUMBER_TEXT.fullmatch(value):
        raise ValueError("not a number's text in ASCII digits")
    return Decimal(repr(value) if isinstance(value, float) else str(value))


def decimal_json(value: Decimal | None) -> orjson.Fragment | None:
    """A decimal for the wire as a plain JSON number (``0.00001234``, never ``1.234e-05``)."""
    if value is None:
        return None
    return orjson.Fragment(format(value, "f").encode())
