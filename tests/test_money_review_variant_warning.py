"""A price context that no variant of the model's card prices (a tier or speed the price data
does not list: genai-prices 0.1.13, the last release for Python 3.10, has no ``speed=fast``)
is priced at the standard price, and says so once on the ``costledger`` logger."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from costledger import Pricer, Usage

AT = datetime(2026, 12, 1, tzinfo=timezone.utc)
USAGE = Usage(input_tokens=10_000, output_tokens=2_000)
GPT_5 = Decimal("0.0325")  # 10000 x $1.25 + 2000 x $10, per MTok


def _no_variant_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "costledger" and "no price variant" in r.getMessage()
    ]


def test_a_context_no_card_has_warns_once_and_prices_the_standard_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tier = f"warp-{uuid.uuid4().hex[:8]}"  # a tier no price data lists (unique per run)
    pricer = Pricer()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        for _ in range(3):
            cost = pricer.price("gpt-5", USAGE, at=AT, price_context={"service_tier": tier})
            assert cost.total == GPT_5
            assert cost.source == pricer.price("gpt-5", USAGE, at=AT).source  # no variant named
        # a second pricer, same model and context: still the one line
        Pricer().price("gpt-5", USAGE, at=AT, price_context={"service_tier": tier})
    (line,) = _no_variant_lines(caplog)
    assert f"no price variant of model 'gpt-5' matches the price context service_tier={tier}" in (
        line
    )
    assert "standard price" in line


def test_no_warning_for_a_context_a_card_prices_or_the_standard_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pricer = Pricer()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        flex = pricer.price("gpt-5", USAGE, at=AT, price_context={"service_tier": "flex"})
        assert flex.total == Decimal("0.01625")
        for context in ({"service_tier": "default"}, {"service_tier": "standard"}):
            assert pricer.price("gpt-4o-mini", USAGE, at=AT, price_context=context).priced
        # a price book entry without variants is one price whatever the context (documented)
        book = Pricer(overrides={"acme-7": {"input": "1", "output": "2"}})
        cost = book.price("acme-7", USAGE, at=AT, price_context={"service_tier": "flex"})
        assert cost.total == Decimal("0.014")
    assert _no_variant_lines(caplog) == []


def test_a_book_entry_with_variants_warns_for_a_context_none_matches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = f"acme-{uuid.uuid4().hex[:8]}"
    book = {
        model: {
            "input": "1",
            "output": "2",
            "variants": [{"when": {"service_tier": "flex"}, "input": "0.5", "output": "1"}],
        }
    }
    pricer = Pricer(overrides=book)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        flex = pricer.price(model, USAGE, at=AT, price_context={"service_tier": "flex"})
        assert flex.total == Decimal("0.007")
        batch = pricer.price(model, USAGE, at=AT, price_context={"processing": "batch"})
        assert batch.total == Decimal("0.014")
    (line,) = _no_variant_lines(caplog)
    assert f"model {model!r} matches the price context processing=batch" in line
