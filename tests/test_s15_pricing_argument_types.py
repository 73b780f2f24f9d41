"""``Pricer.price`` refuses an argument of the wrong type with a ``TypeError`` naming the
argument and showing the value (it raised an ``AttributeError`` from deep inside)."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from costledger import Pricer, Usage

AT = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
USAGE = Usage(input_tokens=10_000, output_tokens=1_000)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            ("gpt-4o", {"prompt_tokens": 10, "completion_tokens": 5}),
            {},
            "Pricer.price: usage must be a costledger.Usage (extract_usage(response) reads "
            "one), got dict {'prompt_tokens': 10, 'completion_tokens': 5}",
        ),
        (
            ("gpt-4o", USAGE),
            {"at": date(2026, 1, 1)},
            "Pricer.price: at must be a timezone-aware datetime or None, got date "
            "datetime.date(2026, 1, 1)",
        ),
        (
            ("gpt-4o", USAGE),
            {"at": "2026-01-01"},
            "Pricer.price: at must be a timezone-aware datetime or None, got str '2026-01-01'",
        ),
        (
            ("gpt-4o", USAGE),
            {"provider": 5},
            "Pricer.price: provider must be a provider name (str) or None, got int 5",
        ),
        (
            (b"gpt-4o", USAGE),
            {},
            "Pricer.price: model must be a model name (str), got bytes b'gpt-4o'",
        ),
        (
            ("gpt-4o", USAGE),
            {"requested_model": 4},
            "Pricer.price: requested_model must be a model name (str) or None, got int 4",
        ),
    ],
)
def test_a_wrong_argument_type_is_a_type_error_naming_it(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    for pricer in (Pricer(), Pricer(overrides={"gpt-4o": {"input": "1", "output": "1"}})):
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            pricer.price(*args, **{"at": AT, **kwargs})


def test_a_long_value_is_shortened_in_the_message() -> None:
    with pytest.raises(TypeError) as info:
        Pricer().price("gpt-4o", {"usage": "x" * 1000})  # type: ignore[arg-type]
    shown = repr({"usage": "x" * 1000})[:197] + "..."  # 200 characters
    assert str(info.value) == (
        "Pricer.price: usage must be a costledger.Usage (extract_usage(response) reads one), "
        f"got dict {shown}"
    )


def test_subclasses_are_accepted_and_a_naive_time_is_still_a_value_error() -> None:
    class Name(str):
        pass

    class Moment(datetime):
        pass

    pricer = Pricer(overrides={"m": {"input": "2", "output": "8"}})
    at = Moment(2026, 6, 1, tzinfo=timezone.utc)
    cost = pricer.price(Name("m"), USAGE, provider=Name("acme"), at=at)
    assert cost.total == Decimal("0.028")  # 10000 x $2 + 1000 x $8, per MTok
    with pytest.raises(ValueError, match="at must be a timezone-aware datetime"):
        pricer.price("m", USAGE, at=datetime(2026, 6, 1))
