"""A price book value that is an int of more than 4,300 digits is refused with a
``PriceBookError`` naming the field (formatting the message raised Python's bare "Exceeds
the limit (4300 digits) for integer string conversion"), and a tier ``above`` no prompt can
pass (10^16 tokens or more, ``MAX_TOKENS``) is refused instead of accepted silently."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from costledger import PriceBookError, Pricer, Usage

HUGE = 10**5000  # 5,001 digits: str() and repr() refuse it
SOURCE = "override: mapping"


@pytest.mark.parametrize(
    ("book", "message"),
    [
        (
            {"m": {"input": HUGE, "output": 1}},
            f"{SOURCE}: model 'm' field 'input' is 10^12 or more, too large to be a price, "
            'got <int of 5001 digits> (USD per million tokens, e.g. "0.15")',
        ),
        (
            {"m": {"input": 1, "output": -HUGE}},
            f"{SOURCE}: model 'm' field 'output' must not be negative, got <negative int of "
            '5001 digits> (USD per million tokens, e.g. "0.15")',
        ),
        (
            {"m": {"input": 1, "output": 1, "max_output_tokens": HUGE}},
            f"{SOURCE}: model 'm' field 'max_output_tokens' must be a positive whole number of "
            "tokens up to 10,000,000,000,000,000, got <int of 5001 digits>",
        ),
        (
            {"m": {"input": 1, "output": 1, "colour": [HUGE, "x"]}},
            f"{SOURCE}: model 'm' has unknown field 'colour' (value [<int of 5001 digits>, "
            "'x']); known fields: ",
        ),
        (
            {"m": [HUGE]},
            f"{SOURCE}: model 'm' must map fields to prices, got [<int of 5001 digits>]",
        ),
        (
            {HUGE: {"input": 1, "output": 1}},
            f"{SOURCE}: model names must be non-empty strings, got <int of 5001 digits>",
        ),
        (
            {"m": {"input": 1, "output": 1, "tiers": [{"above": HUGE, "input": 2, "output": 2}]}},
            f"{SOURCE}: model 'm' field 'tiers[0].above' must be below 10,000,000,000,000,000 "
            "prompt tokens (no call's prompt is larger, so the tier could never apply), got "
            "<int of 5001 digits>",
        ),
        (
            {"m": {"input": 1, "output": 1, "tiers": [{"above": 10**16, "input": 2, "output": 2}]}},
            f"{SOURCE}: model 'm' field 'tiers[0].above' must be below 10,000,000,000,000,000 "
            "prompt tokens (no call's prompt is larger, so the tier could never apply), got "
            "10000000000000000",
        ),
    ],
)
def test_a_huge_value_is_a_price_book_error_naming_the_field(
    book: dict[Any, Any], message: str
) -> None:
    with pytest.raises(PriceBookError, match=f"^{re.escape(message)}"):
        Pricer(overrides=book)


def test_the_highest_tier_a_prompt_can_pass_is_accepted() -> None:
    top = 10**16 - 1
    tiers = [{"above": top, "input": "2", "output": "2"}]
    pricer = Pricer(overrides={"m": {"input": "1", "output": "1", "tiers": tiers}})
    at = datetime(2026, 6, 1, tzinfo=timezone.utc)
    below = pricer.price("m", Usage(input_tokens=top, output_tokens=1), at=at)
    above = pricer.price("m", Usage(input_tokens=10**16, output_tokens=1), at=at)
    # (10^16 - 1) x $1 + 1 x $1, per MTok: the base rates
    assert (below.input, below.output) == (Decimal("9999999999.999999"), Decimal("0.000001"))
    assert below.total == Decimal("10000000000")
    assert above.total == Decimal("20000000000.000002")  # 10^16 x $2 + 1 x $2, per MTok
