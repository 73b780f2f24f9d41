"""``money_text`` takes ``str()`` of a Decimal when it writes no exponent: the very text of
the ``"f"`` format (plain positional notation), for every Decimal, at a third of the cost."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from costledger._cost import money_text


@settings(max_examples=3000)
@given(
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.builds(
        lambda sign, digits, exponent: Decimal((sign, digits, exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=30).map(tuple),
        st.integers(-40, 40),
    )
)
def test_money_text_is_the_f_format_of_every_decimal(value: Decimal) -> None:
    assert money_text(value) == format(value, "f")


def test_small_and_large_amounts_are_written_in_plain_notation() -> None:
    assert money_text(Decimal("2E-7")) == "0.0000002"
    assert money_text(Decimal("1E+2")) == "100"
    assert money_text(Decimal("0.000100")) == "0.000100"
    assert money_text(Decimal("-0")) == "-0"
    assert money_text(Decimal("0E-18")) == "0.000000000000000000"


def test_a_context_writing_lowercase_exponents_still_gets_plain_notation() -> None:
    from decimal import localcontext

    with localcontext() as context:
        context.capitals = 0  # str() would write "1.5e-7"
        assert money_text(Decimal("1.5E-7")) == "0.00000015"
        assert money_text(Decimal("2.5E+3")) == "2500"


def test_ingest_writes_an_amount_in_plain_notation_under_such_a_context() -> None:
    # the converter's one-amount path takes money_text too (it had its own copy of the
    # str()-then-format rule, which let "1.5e-7" through)
    from decimal import localcontext

    from costledger._ingest._convert import Converter
    from costledger._pricing import Pricer

    converter = Converter(Pricer({}, genai_prices=False, litellm=False))
    with localcontext() as context:
        context.capitals = 0
        assert converter._decimal_text("cost.total", Decimal("1.5E-7")) == "0.00000015"
