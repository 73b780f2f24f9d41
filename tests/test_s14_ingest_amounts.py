"""A priced cost's amounts are written with ``str`` (their ``"f"`` format whenever they have
no exponent, at a third of its cost): the texts stored are still exactly those of the
ledger's own money check, or its error, for amounts with and without exponents."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from costledger import Cost
from costledger._ingest._convert import Converter
from costledger._ledger._store import _text_money
from costledger._pricing import Pricer

from .ingest_support import UTC

_CONVERTER = Converter(Pricer(), now=datetime(2025, 7, 1, tzinfo=UTC))
_FIELDS = ("total", "input", "cache_read", "cache_write", "output", "audio")

_amount = st.one_of(
    # plain, as the pricer makes them
    st.integers(0, 20).flatmap(
        lambda places: st.decimals(
            min_value=Decimal("-99999999999999999999"),
            max_value=Decimal("99999999999999999999"),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    ),
    # any sign, coefficient and exponent: 1E-7, 0E-8, 1E+2, 21 digits, 30 places...
    st.builds(
        lambda sign, digits, exponent: Decimal((sign, tuple(map(int, str(digits))), exponent)),
        st.integers(0, 1),
        st.integers(0, 10**24),
        st.integers(-30, 6),
    ),
    st.sampled_from(
        [Decimal("0"), Decimal("-0"), Decimal("0E-8"), Decimal("0E+30"), Decimal("1E+19")]
    ),
)


def _expected(values: list[Decimal]) -> Any:
    try:
        return [_text_money(f"cost.{f}", v) for f, v in zip(_FIELDS, values, strict=True)]
    except ValueError as exc:
        return str(exc)


@settings(max_examples=500, deadline=None)
@given(st.lists(_amount, min_size=6, max_size=6))
def test_six_amounts_are_stored_as_the_ledger_stores_them(values: list[Decimal]) -> None:
    cost = _as_priced(*values)
    try:
        got: Any = list(_CONVERTER._cost_texts(cost))
    except ValueError as exc:
        got = str(exc)
    assert got == _expected(values)


@settings(max_examples=500, deadline=None)
@given(_amount)
def test_an_amount_is_stored_as_the_ledger_stores_it(value: Decimal) -> None:
    try:
        got: Any = _CONVERTER._decimal_text("reported_cost", value)
    except ValueError as exc:
        got = str(exc)
    try:
        expected: Any = _text_money("reported_cost", value)
    except ValueError as exc:
        expected = str(exc)
    assert got == expected


def test_plain_amounts_take_str() -> None:
    amounts = ["0.00094605", "0.00041025", "0", "0", "0.0005358", "0"]
    cost = Cost(status="priced", **dict(zip(_FIELDS, map(Decimal, amounts), strict=True)))
    assert list(_CONVERTER._cost_texts(cost)) == amounts


def _as_priced(*amounts: Decimal) -> Cost:
    """A priced cost of these six amounts as the pricer builds one: without ``Cost``'s
    range check, so that an amount past the ledger's range (an extreme price-book rate
    times a huge count) reaches the conversion under test."""
    from costledger._pricing._card import _new_cost

    return _new_cost("priced", *amounts, "USD", None, None, None)
