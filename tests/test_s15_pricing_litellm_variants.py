"""LiteLLM's price map lists service-tier rates beyond ``_priority`` / ``_flex`` /
``_batches`` (``_balanced``, ``_ultrafast``, ``_decisions``): ``service_tier=X`` selects the
``_X`` rates of a model priced from the map. They were ignored (the standard price, with a
warning saying the data does not list the variant)."""

from __future__ import annotations

import importlib.metadata
import logging
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from costledger import Pricer, Usage

pytest.importorskip("litellm")
SRC = f"litellm {importlib.metadata.version('litellm')}"  # Cost.source of the map

AT = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
KIMI = "moonshotai/Kimi-K2.6"  # at Sail: LiteLLM only, with _balanced and _flex rates
# 800,000 uncached input, 200,000 cache reads, 500,000 output
USAGE = Usage(input_tokens=1_000_000, cache_read_tokens=200_000, output_tokens=500_000)


def test_service_tier_selects_the_maps_rates_of_that_tier(caplog: pytest.LogCaptureFixture) -> None:
    pricer = Pricer()
    standard = pricer.price(KIMI, USAGE, provider="sail", at=AT)
    # $1 / $4 per MTok, cache reads $0.2: 0.8 + 0.04 + 2
    assert (standard.total, standard.source) == (Decimal("2.84"), SRC)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        balanced = pricer.price(
            KIMI, USAGE, provider="sail", at=AT, price_context={"service_tier": "balanced"}
        )
    # $0.45 / $3 per MTok, cache reads $0.2: 0.36 + 0.04 + 1.5
    assert balanced.total == Decimal("1.9")
    assert (balanced.input, balanced.cache_read, balanced.output) == (
        Decimal("0.36"),
        Decimal("0.04"),
        Decimal("1.5"),
    )
    assert balanced.source == f"{SRC} [service_tier=balanced]"
    assert "no price variant" not in caplog.text
    flex = pricer.price(KIMI, USAGE, provider="sail", at=AT, price_context={"service_tier": "flex"})
    assert flex.total == Decimal("1.3")  # $0.35 / $2, cache $0.1: 0.28 + 0.02 + 1
    # a context entry that selects nothing is not named in the source: Kimi has no batch
    # rates, so flex alone priced this call
    both = pricer.price(
        KIMI,
        USAGE,
        provider="sail",
        at=AT,
        price_context={"service_tier": "flex", "processing": "batch"},
    )
    assert (both.total, both.source) == (Decimal("1.3"), f"{SRC} [service_tier=flex]")


def test_ultrafast_rates_with_their_long_context_tier() -> None:
    pricer = Pricer()
    model = "bedrock_mantle/openai.gpt-6-astra"
    fast = {"service_tier": "ultrafast"}
    short = Usage(input_tokens=100_000, output_tokens=10_000)
    long = Usage(input_tokens=300_000, output_tokens=10_000)
    # standard: $11 / $55, above 272k $22 / $82.5 per MTok
    assert pricer.price(model, short, at=AT).total == Decimal("1.65")
    assert pricer.price(model, long, at=AT).total == Decimal("7.425")
    # ultrafast: $66 / $330, above 272k $132 / $495 per MTok
    cost = pricer.price(model, short, at=AT, price_context=fast)
    assert (cost.total, cost.source) == (Decimal("9.9"), f"{SRC} [service_tier=ultrafast]")
    assert pricer.price(model, long, at=AT, price_context=fast).total == Decimal("44.55")


def test_the_existing_variants_are_unchanged() -> None:
    pricer = Pricer(genai_prices=False)
    usage = Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=1_000)
    # gpt-4o from LiteLLM's map: $2.5 / $10, cache reads $1.25
    assert pricer.price("gpt-4o", usage, at=AT).total == Decimal("0.0325")
    priority = pricer.price("gpt-4o", usage, at=AT, price_context={"service_tier": "priority"})
    # priority: $4.25 / $17, cache reads $2.125
    assert (priority.total, priority.source) == (
        Decimal("0.05525"),
        f"{SRC} [service_tier=priority]",
    )
    batch = pricer.price("gpt-4o", usage, at=AT, price_context={"processing": "batch"})
    # batch: $1.25 / $5; cache reads at the standard $1.25 (the map has no batch cache rate)
    assert (batch.total, batch.source) == (Decimal("0.0175"), f"{SRC} [processing=batch]")


def test_a_tier_name_that_is_part_of_another_rates_key_selects_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pricer = Pricer()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    model = "deepseek/deepseek-coder"  # LiteLLM: input_cost_per_token_cache_hit is no tier
    with caplog.at_level(logging.WARNING, logger="costledger"):
        cost = pricer.price(model, usage, at=AT, price_context={"service_tier": "hit"})
    assert (cost.total, cost.source) == (Decimal("0.42"), SRC)  # $0.14 + $0.28
    assert "matches the price context service_tier=hit" in caplog.text
    # a tier name of more than one word names no suffix
    kimi = pricer.price(
        "moonshotai/Kimi-K2.6", usage, provider="sail", at=AT, price_context={"service_tier": "x_y"}
    )
    assert (kimi.total, kimi.source) == (Decimal("5"), SRC)
    # genai-prices' term for a batch is processing=batch; service_tier=batches is no alias
    gpt = Pricer(genai_prices=False).price(
        "gpt-4o", usage, at=AT, price_context={"service_tier": "batches"}
    )
    assert (gpt.total, gpt.source) == (Decimal("12.5"), SRC)  # $2.5 + $10, standard
