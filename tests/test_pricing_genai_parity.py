"""The key correctness test: for every model genai-prices lists, ``Pricer.price`` equals
genai-prices' own ``calc_price`` to the last digit, for usages with cache reads, 5-minute
and 1-hour cache writes, reasoning and audio, a prompt that crosses a long-context tier
only through its cache tokens, and at several call times (date and time-of-day prices).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from decimal import Decimal
from importlib.metadata import version
from typing import Any

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price
from genai_prices.data import providers
from hypothesis import given, settings
from hypothesis import strategies as st

from costledger import Usage
from costledger._pricing import Pricer
from costledger._pricing._card import clean_rate
from costledger._pricing._genai import Match, free_by_evidence

# the source the pricer names: the installed genai-prices (0.2 on Python >= 3.11,
# 0.1.13 or newer on 3.10, which genai-prices 0.2 does not support)
GENAI = f"genai-prices {version('genai-prices')}"

UTC = timezone.utc
TIMES = (
    datetime(2025, 6, 1, 2, 0, tzinfo=UTC),  # before many date-effective changes; DeepSeek peak
    datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
    datetime(2027, 1, 1, 20, 59, tzinfo=UTC),  # off-peak
)
USAGES = (
    Usage(),
    Usage(input_tokens=1000, output_tokens=500),
    Usage(
        input_tokens=10_000,
        cache_read_tokens=6_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=500,
        output_tokens=700,
        reasoning_tokens=100,
    ),
    # 90k uncached: under a 200k tier; with cache tokens the prompt is 250k: over it
    Usage(
        input_tokens=250_000,
        cache_read_tokens=100_000,
        cache_write_tokens=60_000,
        output_tokens=1000,
    ),
    Usage(
        input_tokens=200_000, cache_read_tokens=50_000, output_tokens=3
    ),  # exactly on a threshold
    Usage(input_tokens=5000, input_audio_tokens=1000, output_tokens=2000, output_audio_tokens=500),
    Usage(
        input_tokens=1_200_001, cache_read_tokens=300_000, output_tokens=123_457, reasoning_tokens=3
    ),
)
PROVIDERS = {p.id: p for p in providers}


def genai_usage(u: Usage) -> GenaiUsage:
    """The same call in genai-prices' terms (its convention is ours: input includes cache)."""
    return GenaiUsage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
        output_reasoning_tokens=u.reasoning_tokens,
        input_audio_tokens=u.input_audio_tokens,
        output_audio_tokens=u.output_audio_tokens,
        cache_audio_read_tokens=0,  # Usage has no such field: audio is never a cache read here
    )


def reference(u: Usage, model: str, provider: str, at: datetime) -> Any:
    """genai-prices' answer, or None when it does not resolve ``model`` by its own id."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return calc_price(
                genai_usage(u), model, provider_id=provider, genai_request_timestamp=at
            )
    except LookupError:
        return None


def _clause_refs(clause: Any) -> list[str]:
    """Strings a match clause accepts as written (equals / starts_with / contains values)."""
    for attr in ("equals", "starts_with", "contains"):
        value = getattr(clause, attr, None)
        if isinstance(value, str):
            return [value]
    refs: list[str] = []
    for sub in getattr(clause, "or_", None) or ():
        refs += _clause_refs(sub)
    return refs


def model_ref(provider_id: str, model: Any) -> str | None:
    """A name that genai-prices resolves to exactly ``model`` at ``provider_id``."""
    for ref in [model.id, *_clause_refs(model.match)]:
        found = reference(Usage(input_tokens=1), ref, provider_id, TIMES[1])
        if found is not None and found.model is model:
            return str(ref)
    return None


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer(litellm=False)


def _token_priced(result: Any) -> bool:
    """Whether genai-prices' price has a token rate (or no rate at all: free)."""
    keys = {k for k, v in vars(result.model_price).items() if v is not None}
    return not keys or bool(keys & {"input_mtok", "output_mtok"})


def _unpriced(result: Any) -> bool:
    """No rate at all and nothing saying the model is free. genai-prices' calc_price reads
    such an entry as $0, but genai-prices also keeps delisted models of unknown price that
    way (Cerebras' qwen-3-coder-480b); costledger prices it as unknown_model (never a
    silent $0), so these entries, and only these, are left out of the $ comparison."""
    keys = {k for k, v in vars(result.model_price).items() if v is not None}
    return not keys and not free_by_evidence(Match(result.provider, result.model))


def _cleaned(value: Any, places: int = 12) -> Any:
    from genai_prices.types import Tier, TieredPrices

    if isinstance(value, Decimal):
        return clean_rate(value, places)
    if isinstance(value, TieredPrices):
        tiers = [Tier(start=t.start, price=clean_rate(t.price)) for t in value.tiers]
        return TieredPrices(base=clean_rate(value.base), tiers=tiers)
    return value


def expected_total(result: Any, u: Usage) -> Decimal:
    """genai-prices' total, computed on its rates cleaned of float noise as costledger
    cleans them (``clean_rate``: ``1.0399999999999998`` is 1.04); its own total when no
    rate carries noise (nearly every model)."""
    price = result.model_price
    values = {k: v for k, v in vars(price).items() if not k.startswith("_")}
    clean = {k: _cleaned(v, 15 if k == "requests_kcount" else 12) for k, v in values.items()}
    if clean == values:
        return Decimal(result.total_price)
    computed = type(price)(**clean).calc_price(genai_usage(u))
    total = computed["total_price"] if isinstance(computed, dict) else computed.total_price
    return Decimal(total)


@pytest.mark.slow
@pytest.mark.parametrize("provider_id", sorted(PROVIDERS))
def test_every_model_equals_genai_prices(pricer: Pricer, provider_id: str) -> None:
    compared = 0
    for model in PROVIDERS[provider_id].models:
        ref = model_ref(provider_id, model)
        if ref is None:
            continue  # shadowed by an earlier model's match: unreachable by any name
        for at in TIMES:
            for usage in USAGES:
                expected = reference(usage, ref, provider_id, at)
                assert expected is not None
                cost = pricer.price(ref, usage, provider=provider_id, at=at)
                if _unpriced(expected):
                    assert cost.status == "unknown_model", (model.id, at)
                    continue
                if not _token_priced(expected):
                    # priced per second / character / page only: a token count cannot be priced
                    assert cost.status == "unknown_model", (model.id, at)
                    continue
                where = (model.id, usage, at)
                assert cost.status == "priced", where
                assert cost.total == expected_total(expected, usage), where
                assert cost.model == expected.model.id, where
                assert cost.provider == expected.provider.id, where
                assert cost.source == GENAI
                compared += 1
    assert compared > 0 or provider_id in {"elevenlabs", "openai-decisions"}


def test_parity_covers_the_whole_data_set(pricer: Pricer) -> None:
    """Guard against the test above silently skipping most models."""
    resolvable = sum(1 for p in providers for m in p.models if model_ref(p.id, m) is not None)
    total = sum(len(p.models) for p in providers)
    assert total > 1500  # 1,808 models in genai-prices 0.1.13, 2,330 in 0.2.3
    assert resolvable / total > 0.9


counts = st.integers(min_value=0, max_value=3_000_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    uncached, cache_read, cache_5m, cache_1h = (draw(counts) for _ in range(4))
    output = draw(counts)
    return Usage(
        input_tokens=uncached + cache_read + cache_5m + cache_1h,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_5m + cache_1h,
        cache_write_1h_tokens=cache_1h,
        input_audio_tokens=draw(st.integers(0, uncached)),
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output // 2)),
        output_audio_tokens=draw(st.integers(0, output // 2)),
    )


PARITY_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-realtime"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("google", "gemini-2.5-pro"),
    ("deepseek", "deepseek-v4-pro"),
    ("perplexity", "sonar-deep-research"),
    ("perplexity", "sonar-pro"),
    ("aws", "amazon.nova-sonic-v1:0"),
    ("azure", "gpt-4.1"),
]


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(PARITY_MODELS),
    usage=usages(),
    at=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
    ),
)
def test_random_usages_equal_genai_prices(
    pricer: Pricer, model: tuple[str, str], usage: Usage, at: datetime
) -> None:
    provider_id, model_id = model
    expected = reference(usage, model_id, provider_id, at)
    assert expected is not None
    cost = pricer.price(model_id, usage, provider=provider_id, at=at)
    assert cost.total == expected_total(expected, usage)
    assert isinstance(cost.total, Decimal)
