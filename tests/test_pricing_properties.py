"""Hypothesis properties of ``Pricer.price``: exact Decimal money, never negative,
components that add up, and additivity in tokens where no tier or per-call fee applies."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from costledger import Cost, Usage
from costledger._pricing import Pricer

AT = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
PRICER = Pricer(
    overrides={
        "book-model": {
            "input": "0.123456789",
            "output": "7",
            "cache_read": "0",
            "cache_write": "1.0000001",
            "cache_write_1h": "2",
            "input_audio": "11.5",
            "output_audio": "23",
        }
    }
)
# (model, provider): no tiers, no per-call fee
FLAT = [
    ("gpt-4o", None),
    ("gpt-4o-mini", None),
    ("claude-sonnet-4-20250514", None),
    ("gpt-realtime", None),
    ("amazon.nova-sonic-v1:0", "bedrock"),
    ("book-model", None),
    ("azure/eu/gpt-4o-mini", None),  # LiteLLM's map
    ("deepseek-chat", None),
]
TIERED = [("claude-sonnet-4-5", None), ("gemini-2.5-pro", None)]
WITH_FEE = [("sonar-pro", "perplexity")]

counts = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def usages(draw: st.DrawFn, small: bool = False) -> Usage:
    n = st.integers(min_value=0, max_value=24_000) if small else counts  # 2 x 4 x 24k < 200k
    uncached, cache_read, cache_5m, cache_1h, output = (draw(n) for _ in range(5))
    return Usage(
        input_tokens=uncached + cache_read + cache_5m + cache_1h,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_5m + cache_1h,
        cache_write_1h_tokens=cache_1h,
        input_audio_tokens=draw(st.integers(0, uncached)),
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output)),
        output_audio_tokens=draw(st.integers(0, output)),
    )


def parts(cost: Cost) -> list[Decimal]:
    values = [cost.input, cost.cache_read, cost.cache_write, cost.output, cost.audio]
    assert all(v is not None for v in values)
    return [v for v in values if v is not None]


@settings(max_examples=400, deadline=None)
@given(model=st.sampled_from(FLAT + TIERED + WITH_FEE), usage=usages())
def test_money_is_decimal_non_negative_and_adds_up(
    model: tuple[str, str | None], usage: Usage
) -> None:
    name, provider = model
    cost = PRICER.price(name, usage, provider=provider, at=AT)
    assert cost.status == "priced"
    assert cost.total is not None
    for value in [*parts(cost), cost.total]:
        assert type(value) is Decimal
        assert value.is_finite()
        assert value >= 0
    card = PRICER.rate_card(name, provider=provider, at=AT)
    assert card is not None
    assert cost.total == sum(parts(cost), Decimal(0)) + card.request


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(FLAT), a=usages(), b=usages())
def test_additive_in_tokens_without_tiers(
    model: tuple[str, str | None], a: Usage, b: Usage
) -> None:
    name, provider = model
    whole = PRICER.price(name, a + b, provider=provider, at=AT)
    left = PRICER.price(name, a, provider=provider, at=AT)
    right = PRICER.price(name, b, provider=provider, at=AT)
    assert whole.total == left.total + right.total  # type: ignore[operator]
    for w, x, y in zip(parts(whole), parts(left), parts(right), strict=True):
        assert w == x + y


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(TIERED), a=usages(small=True), b=usages(small=True))
def test_additive_below_the_tier_threshold(
    model: tuple[str, str | None], a: Usage, b: Usage
) -> None:
    # each prompt stays under 200k together, so all three calls take base rates
    name, provider = model
    whole = PRICER.price(name, a + b, provider=provider, at=AT)
    assert whole.total == (
        PRICER.price(name, a, provider=provider, at=AT).total  # type: ignore[operator]
        + PRICER.price(name, b, provider=provider, at=AT).total
    )


@settings(max_examples=200, deadline=None)
@given(a=usages(), b=usages())
def test_per_call_fee_is_charged_once_per_call(a: Usage, b: Usage) -> None:
    fee = Decimal("0.014")  # sonar-pro: 14 per thousand requests
    whole = PRICER.price("sonar-pro", a + b, provider="perplexity", at=AT).total
    left = PRICER.price("sonar-pro", a, provider="perplexity", at=AT).total
    right = PRICER.price("sonar-pro", b, provider="perplexity", at=AT).total
    assert whole is not None
    assert left is not None
    assert right is not None
    assert whole + fee == left + right


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(FLAT + TIERED), usage=usages(), extra=st.integers(1, 10_000))
def test_more_output_never_costs_less(
    model: tuple[str, str | None], usage: Usage, extra: int
) -> None:
    name, provider = model
    more = Usage(**{**usage.as_dict(), "output_tokens": usage.output_tokens + extra})
    assert PRICER.price(name, more, provider=provider, at=AT).total >= (  # type: ignore[operator]
        PRICER.price(name, usage, provider=provider, at=AT).total
    )
