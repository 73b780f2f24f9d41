"""Pricer: hand-checked exact totals, price books, unknown models, names, sources, limits."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import pytest

from costledger import Cost, PriceBookError, Usage, UsageEvent
from costledger._pricing import Pricer, RateCard

# the source the pricer names: the installed genai-prices (0.2 on Python >= 3.11,
# 0.1.13 or newer on 3.10, which genai-prices 0.2 does not support)
GENAI = f"genai-prices {version('genai-prices')}"

D = Decimal
UTC = timezone.utc
NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EXAMPLE_BOOK = Path(__file__).resolve().parents[1] / "examples" / "price_book.toml"


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer()


def _components(cost: Cost) -> tuple[Decimal | None, ...]:
    return (cost.input, cost.cache_read, cost.cache_write, cost.output, cost.audio, cost.total)


# -- hand-checked totals (rates per MTok from genai-prices 0.2.3) ------------------------------


def test_gpt_4o_with_cached_input(pricer: Pricer) -> None:
    # gpt-4o: input 2.50, cached input 1.25, output 10.00
    cost = pricer.price(
        "gpt-4o", Usage(input_tokens=1000, cache_read_tokens=400, output_tokens=200), at=NOON
    )
    assert cost.status == "priced"
    assert _components(cost) == (
        D("0.0015"),  # 600 uncached x 2.50 / 1e6
        D("0.0005"),  # 400 cached x 1.25 / 1e6
        D("0"),
        D("0.002"),  # 200 x 10 / 1e6
        D("0"),
        D("0.004"),
    )
    assert (cost.provider, cost.model, cost.currency) == ("openai", "gpt-4o", "USD")
    assert cost.source == GENAI


def test_claude_sonnet_4_with_5m_and_1h_cache_writes(pricer: Pricer) -> None:
    # claude-sonnet-4: input 3, output 15, cache read 0.30, write 5m 3.75, write 1h 6
    usage = Usage(
        input_tokens=10_000,
        cache_read_tokens=2_000,
        cache_write_tokens=3_000,
        cache_write_1h_tokens=1_000,
        output_tokens=500,
    )
    cost = pricer.price("claude-sonnet-4-20250514", usage, at=NOON)
    assert cost.input == D("0.015")  # 5000 x 3
    assert cost.cache_read == D("0.0006")  # 2000 x 0.30
    assert cost.cache_write == D("0.0135")  # 2000 x 3.75 + 1000 x 6
    assert cost.output == D("0.0075")  # 500 x 15
    assert cost.total == D("0.0366")
    assert (cost.provider, cost.model) == ("anthropic", "claude-sonnet-4-0")


def test_long_context_tier_counts_cache_tokens_and_reprices_the_whole_call(
    pricer: Pricer,
) -> None:
    # claude-sonnet-4-5: base 3 / 15 / 0.30 / 3.75; above 200k prompt 6 / 22.5 / 0.60 / 7.50.
    # 150k uncached alone is under the threshold; with 40k cache reads and 20k cache
    # writes the prompt is 210k, so every token takes the higher rate.
    below = Usage(input_tokens=150_000, output_tokens=1_000)
    assert pricer.price("claude-sonnet-4-5", below, at=NOON).total == D("0.465")
    above = Usage(
        input_tokens=210_000,
        cache_read_tokens=40_000,
        cache_write_tokens=20_000,
        output_tokens=1_000,
    )
    cost = pricer.price("claude-sonnet-4-5", above, at=NOON)
    assert cost.input == D("0.9")  # 150000 x 6
    assert cost.cache_read == D("0.024")  # 40000 x 0.60
    assert cost.cache_write == D("0.15")  # 20000 x 7.50
    assert cost.output == D("0.0225")  # 1000 x 22.5
    assert cost.total == D("1.0965")


def test_gemini_2_5_pro_tier_boundary_is_strictly_above_200k(pricer: Pricer) -> None:
    # gemini-2.5-pro: 1.25 / 10 / 0.125; above 200k: 2.50 / 15 / 0.25
    at_threshold = Usage(input_tokens=200_000, cache_read_tokens=50_000, output_tokens=1_000)
    cost = pricer.price("gemini-2.5-pro", at_threshold, at=NOON)
    assert cost.total == D("0.20375")  # 150k x 1.25 + 50k x 0.125 + 1k x 10
    one_more = Usage(input_tokens=200_001, cache_read_tokens=50_000, output_tokens=1_000)
    cost = pricer.price("gemini-2.5-pro", one_more, at=NOON)
    assert cost.input == D("0.3750025")  # 150001 x 2.50
    assert cost.cache_read == D("0.0125")  # 50000 x 0.25
    assert cost.output == D("0.015")  # 1000 x 15
    assert cost.total == D("0.4025025")


def test_deepseek_off_peak_price_follows_the_call_time(pricer: Pricer) -> None:
    # deepseek-chat: 0.27 / 1.10 from 00:30 to 16:30 UTC, 0.135 / 0.55 otherwise
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    day = datetime(2026, 1, 15, tzinfo=UTC)
    peak = pricer.price("deepseek-chat", usage, at=day.replace(hour=12))
    off_peak = pricer.price("deepseek-chat", usage, at=day.replace(hour=17))
    assert peak.total == D("1.37")
    assert off_peak.total == D("0.685")
    # The interval is [00:30, 16:30): its end is off-peak, its start is peak.
    assert pricer.price("deepseek-chat", usage, at=day.replace(hour=16, minute=30)).total == D(
        "0.685"
    )
    assert pricer.price("deepseek-chat", usage, at=day.replace(minute=30)).total == D("1.37")
    # A call at 18:00 in UTC+2 happened at 16:00 UTC: peak.
    plus_two = timezone(timedelta(hours=2))
    assert pricer.price(
        "deepseek-chat", usage, at=datetime(2026, 1, 15, 18, 0, tzinfo=plus_two)
    ).total == D("1.37")


def test_date_effective_prices(pricer: Pricer) -> None:
    # deepseek-v4-pro: 0.435 / 0.87 until 2026-08-16, 0.66 / 1.98 from 2026-08-17 (UTC dates)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    before = pricer.price("deepseek-v4-pro", usage, at=datetime(2026, 8, 16, 23, 59, tzinfo=UTC))
    after = pricer.price("deepseek-v4-pro", usage, at=datetime(2026, 8, 17, 0, 0, tzinfo=UTC))
    assert before.total == D("1.305")
    assert after.total == D("2.64")
    # 2026-08-17 01:30 in UTC+3 is still 2026-08-16 in UTC
    east = timezone(timedelta(hours=3))
    early = pricer.price("deepseek-v4-pro", usage, at=datetime(2026, 8, 17, 1, 30, tzinfo=east))
    assert early.total == D("1.305")


def test_naive_call_time_is_refused(pricer: Pricer) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pricer.price("gpt-4o", Usage(input_tokens=1), at=datetime(2026, 1, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        pricer.price("deepseek-chat", Usage(input_tokens=1), at=datetime(2026, 1, 1, 12, 0))


def test_default_time_is_now(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    now = datetime.now(UTC)
    expected = pricer.price("deepseek-chat", usage, at=now).total
    # Skip the instant the clock crosses a price boundary between the two calls.
    if now.replace(second=0, microsecond=0) == datetime.now(UTC).replace(second=0, microsecond=0):
        assert pricer.price("deepseek-chat", usage).total == expected


def test_audio_tokens_take_audio_rates(pricer: Pricer) -> None:
    # gpt-realtime: text 4 / 16, cached 0.40, audio in 32, audio out 64
    usage = Usage(
        input_tokens=5_000, input_audio_tokens=1_000, output_tokens=2_000, output_audio_tokens=500
    )
    cost = pricer.price("gpt-realtime", usage, at=NOON)
    assert cost.input == D("0.016")  # 4000 text x 4
    assert cost.output == D("0.024")  # 1500 text x 16
    assert cost.audio == D("0.064")  # 1000 x 32 + 500 x 64
    assert cost.total == D("0.104")


def test_audio_that_was_read_from_cache_is_not_billed_as_negative_text(pricer: Pricer) -> None:
    # 1000 input of which 800 cached and 500 audio: at least 300 audio tokens came from the
    # cache. They are billed as cached audio (0.40), never as -300 text tokens.
    usage = Usage(input_tokens=1_000, cache_read_tokens=800, input_audio_tokens=500)
    cost = pricer.price("gpt-realtime", usage, at=NOON)
    assert cost.input == D("0")
    assert cost.cache_read == D("0.0002")  # 500 cached text x 0.40
    assert cost.audio == D("0.00652")  # 300 cached audio x 0.40 + 200 audio x 32
    assert cost.total == D("0.00672")


def test_per_request_fee_is_in_the_total(pricer: Pricer) -> None:
    # perplexity sonar: 1 / 1 per MTok plus 12 per thousand requests
    cost = pricer.price("sonar", Usage(input_tokens=1000, output_tokens=500), provider="perplexity")
    assert cost.total == D("0.0135")  # 0.001 + 0.0005 + 0.012
    assert cost.input == D("0.001")
    assert cost.output == D("0.0005")
    assert cost.request == D("0.012")  # the fee, named: the components plus it are the total
    plain = pricer.price("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500), at=NOON)
    assert plain.request == 0


def test_cost_request_is_exact_and_none_without_components() -> None:
    # 38 significant digits: a 28-digit default context would round this difference
    total = D("12345678901234567890.123456789012345678")
    cost = Cost(status="priced", total=total, input=D("0.000000000000000001"))
    assert cost.request == D("12345678901234567890.123456789012345677")
    assert Cost(status="priced", total=D("0.5")).request is None  # a reported total alone
    assert Cost.unknown("m").request is None
    assert Cost.zero(source="cache").request == 0


def test_money_is_decimal_and_exact_for_huge_counts(pricer: Pricer) -> None:
    big = 10**15 + 7
    cost = pricer.price("gpt-4o-mini", Usage(input_tokens=big, output_tokens=big), at=NOON)
    assert cost.total == D(big) * D("0.15") / 10**6 + D(big) * D("0.6") / 10**6
    for value in _components(cost):
        assert type(value) is Decimal


# -- names: prefixes, aliases, snapshots ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "expected_provider", "expected_model"),
    [
        ("openai/gpt-4.1", None, "openai", "gpt-4.1"),
        ("gpt-4.1", "openai", "openai", "gpt-4.1"),
        ("azure/gpt-4.1", None, "azure", "gpt-4.1"),
        ("gpt-4.1", "azure", "azure", "gpt-4.1"),
        ("anthropic/claude-sonnet-4-20250514", None, "anthropic", "claude-sonnet-4-0"),
        ("claude-4-sonnet-20250514", None, "anthropic", "claude-sonnet-4-0"),
        (
            "bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0",
            None,
            "aws",
            "regional.anthropic.claude-sonnet-4-20250514-v1:0",
        ),
        ("vertex_ai/gemini-2.5-pro", None, "google", "gemini-2.5-pro"),
        ("gemini-2.5-pro", "vertex_ai", "google", "gemini-2.5-pro"),
        (
            "openrouter/anthropic/claude-3.5-sonnet",
            None,
            "openrouter",
            "anthropic/claude-3.5-sonnet",
        ),
        ("anthropic/claude-3.5-sonnet", "openrouter", "openrouter", "anthropic/claude-3.5-sonnet"),
        ("gpt-4o", "litellm", "openai", "gpt-4o"),
        ("GPT-4O", None, "openai", "gpt-4o"),
    ],
)
def test_provider_prefixes_and_aliases(
    pricer: Pricer,
    model: str,
    provider: str | None,
    expected_provider: str,
    expected_model: str,
) -> None:
    cost = pricer.price(
        model, Usage(input_tokens=100, output_tokens=10), provider=provider, at=NOON
    )
    assert cost.status == "priced"
    assert (cost.provider, cost.model) == (expected_provider, expected_model)
    assert cost.source == GENAI


def test_prefix_gives_the_same_price_as_the_bare_name(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1234, cache_read_tokens=1000, output_tokens=99)
    assert (
        pricer.price("openai/gpt-4.1", usage, at=NOON).total
        == pricer.price("gpt-4.1", usage, at=NOON).total
        == D("0.00176")  # 234 x 2 + 1000 x 0.5 + 99 x 8
    )


def test_dated_snapshot_known_to_genai_prices(pricer: Pricer) -> None:
    cost = pricer.price("gpt-4o-mini-2024-07-18", Usage(input_tokens=1000, output_tokens=1000))
    assert (cost.model, cost.source) == ("gpt-4o-mini", GENAI)
    assert cost.total == D("0.00075")


@pytest.mark.parametrize("model", ["gpt-5-2099-01-01", "gpt-5-20990101", "openai/gpt-5-2099-01-01"])
def test_unknown_dated_snapshot_falls_back_to_its_base_model_visibly(
    pricer: Pricer, model: str
) -> None:
    cost = pricer.price(model, Usage(input_tokens=1000, output_tokens=1000), at=NOON)
    assert cost.status == "priced"
    assert cost.model == "gpt-5"
    assert cost.source is not None
    assert cost.source.startswith(f"{GENAI} (dated snapshot ")
    assert "priced as 'gpt-5'" in cost.source
    assert cost.total == D("0.01125")  # 1000 x 1.25 + 1000 x 10


# -- unknown models -------------------------------------------------------------------------


def test_unknown_model_is_never_priced_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    pricer = Pricer()
    usage = Usage(input_tokens=1000, output_tokens=1000)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        first = pricer.price("acme-brain-7", usage, provider="acme")
        second = pricer.price("acme-brain-7", usage, provider="acme")
        other = pricer.price("acme-brain-8", usage)
    for cost in (first, second):
        assert cost.status == "unknown_model"
        assert cost.total is None
        assert _components(cost) == (None,) * 6
        assert (cost.model, cost.provider) == ("acme-brain-7", "acme")
    assert other.status == "unknown_model"
    # (another test's call finished on the background worker may log meanwhile)
    warnings = [
        r for r in caplog.records if r.name == "costledger" and "acme-brain" in r.getMessage()
    ]
    assert len(warnings) == 2
    assert "'acme-brain-7'" in warnings[0].getMessage()
    assert "'acme'" in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert getattr(warnings[0], "costledger_model", None) == "acme-brain-7"
    assert getattr(warnings[0], "costledger_provider", None) == "acme"
    assert pricer.rate_card("acme-brain-7", provider="acme") is None
    assert pricer.max_output_tokens("acme-brain-7") is None


def test_known_provider_does_not_borrow_another_providers_price(pricer: Pricer) -> None:
    # Bedrock does not list gpt-4o; it must not be priced at OpenAI's rate.
    cost = pricer.price("gpt-4o", Usage(input_tokens=10), provider="bedrock")
    assert cost.status == "unknown_model"


def test_empty_model_name_is_unknown(pricer: Pricer) -> None:
    assert pricer.price("", Usage(input_tokens=10)).status == "unknown_model"


def test_unknown_model_can_be_repriced_once_a_price_exists() -> None:
    usage = Usage(input_tokens=2000, output_tokens=1000)
    event = UsageEvent(
        model="acme-brain-7",
        usage=usage,
        cost=Pricer().price("acme-brain-7", usage),
        timestamp=NOON,
    )
    assert event.cost.status == "unknown_model"
    repriced = Pricer(overrides={"acme-brain-7": {"input": "1", "output": "3"}}).reprice(event)
    assert repriced.cost.status == "priced"
    assert repriced.cost.total == D("0.005")
    assert repriced.id == event.id


# -- price books ----------------------------------------------------------------------------


def test_override_mapping_takes_precedence_and_keeps_values_exact() -> None:
    pricer = Pricer(
        overrides={
            "gpt-4o": {
                "input": "2.25",
                "output": Decimal("9"),
                "cache_read": 1,
                "cache_write": 0.1,
                "provider": "openai",
            }
        }
    )
    usage = Usage(
        input_tokens=3000, cache_read_tokens=1000, cache_write_tokens=1000, output_tokens=1000
    )
    cost = pricer.price("openai/gpt-4o", usage)
    assert _components(cost) == (
        D("0.00225"),
        D("0.001"),
        D("0.0001"),  # the float 0.1 is read as the decimal 0.1, not 0.1000000000000000055...
        D("0.009"),
        D("0"),
        D("0.01235"),
    )
    assert cost.source == "override: mapping"
    assert (cost.model, cost.provider) == ("gpt-4o", "openai")


def test_missing_cache_prices_are_charged_at_the_input_rate() -> None:
    pricer = Pricer(overrides={"m": {"input": "2", "output": "4"}})
    usage = Usage(
        input_tokens=4000,
        cache_read_tokens=1000,
        cache_write_tokens=1000,
        cache_write_1h_tokens=500,
        output_tokens=0,
    )
    cost = pricer.price("m", usage)
    assert (cost.input, cost.cache_read, cost.cache_write) == (D("0.004"), D("0.002"), D("0.002"))
    card = pricer.rate_card("m")
    assert card is not None
    assert (card.cache_read, card.cache_write, card.cache_write_1h) == (D("2"), D("2"), None)


def test_cache_input_is_a_synonym_of_cache_read() -> None:
    pricer = Pricer(overrides={"m": {"input": "1", "output": "1", "cache_input": "0.1"}})
    cost = pricer.price("m", Usage(input_tokens=1000, cache_read_tokens=1000))
    assert cost.cache_read == D("0.0001")
    assert cost.input == D("0")


def test_zero_price_is_a_price_not_missing() -> None:
    pricer = Pricer(
        overrides={
            "local-llama": {"input": 0, "output": "0"},
            "cheap-cache": {"input": "3", "output": "15", "cache_read": "0", "cache_write": 0},
        }
    )
    free = pricer.price("local-llama", Usage(input_tokens=10_000, output_tokens=5_000))
    assert free.status == "priced"
    assert free.total == 0
    cached = pricer.price(
        "cheap-cache",
        Usage(input_tokens=3000, cache_read_tokens=1000, cache_write_tokens=1000),
    )
    assert cached.cache_read == 0
    assert cached.cache_write == 0
    assert cached.total == D("0.003")


def test_override_1h_cache_writes_audio_and_currency() -> None:
    pricer = Pricer(
        overrides={
            "m": {
                "input": "1",
                "output": "2",
                "cache_write": "1.25",
                "cache_write_1h": "2",
                "input_audio": "10",
                "output_audio": "20",
                "currency": "eur",
            }
        }
    )
    usage = Usage(
        input_tokens=10_000,
        cache_write_tokens=4_000,
        cache_write_1h_tokens=1_000,
        input_audio_tokens=1_000,
        output_tokens=3_000,
        output_audio_tokens=1_000,
    )
    cost = pricer.price("m", usage)
    assert cost.currency == "EUR"
    assert cost.input == D("0.005")  # 5000 text x 1
    assert cost.cache_write == D("0.00575")  # 3000 x 1.25 + 1000 x 2
    assert cost.output == D("0.004")  # 2000 text x 2
    assert cost.audio == D("0.03")  # 1000 x 10 + 1000 x 20
    assert cost.total == D("0.04475")


def test_override_names_match_after_prefix_stripping_and_ignore_case() -> None:
    pricer = Pricer(overrides={"Support-Bot-Prod": {"input": "2.5", "output": "10"}})
    usage = Usage(input_tokens=1000)
    for name in ("support-bot-prod", "azure/support-bot-prod", "SUPPORT-BOT-PROD"):
        assert pricer.price(name, usage).total == D("0.0025"), name
    # a key written with its prefix matches the name as given
    pricer = Pricer(overrides={"azure/support-bot": {"input": "1", "output": "1"}})
    assert pricer.price("azure/support-bot", usage).status == "priced"


def test_override_with_a_provider_applies_only_to_that_provider() -> None:
    pricer = Pricer(overrides={"gpt-4o": {"input": "1", "output": "1", "provider": "azure"}})
    usage = Usage(input_tokens=1_000_000)
    assert pricer.price("gpt-4o", usage, provider="azure").total == D("1")
    assert pricer.price("azure/gpt-4o", usage).total == D("1")
    assert pricer.price("gpt-4o", usage).total == D("1")  # no provider said: the book applies
    assert pricer.price("gpt-4o", usage, provider="openai").total == D("2.5")  # genai-prices


def test_price_book_from_toml_file(tmp_path: Path) -> None:
    book = tmp_path / "prices.toml"
    book.write_text(
        '["my-model"]\ninput = 0.1\noutput = "0.4"\ncache_input = 0.025\nmax_output_tokens = 8192\n'
    )
    pricer = Pricer(overrides=book)
    cost = pricer.price(
        "my-model", Usage(input_tokens=3000, cache_read_tokens=1000, output_tokens=1000)
    )
    assert cost.total == D("0.000625")  # 2000 x 0.1 + 1000 x 0.025 + 1000 x 0.4
    assert cost.source == f"override: {book}"
    assert pricer.max_output_tokens("my-model") == 8192


def test_price_book_from_json_file(tmp_path: Path) -> None:
    book = tmp_path / "prices.json"
    book.write_text(json.dumps({"my-model": {"input": 0.1, "output": "0.4"}}))
    cost = Pricer(overrides=str(book)).price("my-model", Usage(input_tokens=3, output_tokens=7))
    assert cost.total == D("0.0000031")
    assert cost.input == D("0.0000003")


def test_example_price_book_loads() -> None:
    pricer = Pricer(overrides=EXAMPLE_BOOK)
    cost = pricer.price(
        "azure/support-bot-prod", Usage(input_tokens=1000, cache_read_tokens=100, output_tokens=100)
    )
    assert cost.total == D("0.003375")
    assert cost.provider == "azure"
    eur = pricer.price("mistral-large-eu", Usage(input_tokens=1000))
    assert (eur.currency, eur.total) == ("EUR", D("0.0018"))


@pytest.mark.parametrize(
    ("book", "match"),
    [
        (
            {"m": {"input": "-1", "output": "1"}},
            r"'m' field 'input' must not be negative, got '-1'",
        ),
        ({"m": {"input": "abc", "output": "1"}}, r"'m' field 'input' is not a number, got 'abc'"),
        ({"m": {"input": True, "output": "1"}}, r"'m' field 'input' must be a number, got True"),
        ({"m": {"input": [1], "output": "1"}}, r"'m' field 'input' must be a number"),
        ({"m": {"input": "NaN", "output": "1"}}, r"'m' field 'input' must be a finite number"),
        ({"m": {"input": float("inf"), "output": "1"}}, r"field 'input' must be a finite number"),
        ({"m": {"output": "1"}}, r"model 'm' has no 'input' price"),
        ({"m": {"input": "1"}}, r"model 'm' has no 'output' price"),
        ({"m": {"input": "1", "output": "1", "inptu": "1"}}, r"unknown field 'inptu'"),
        (
            {"m": {"input": "1", "output": "1", "cache_read": "1", "cache_input": "1"}},
            r"both 'cache_read' and its synonym 'cache_input'",
        ),
        ({"m": {"input": "1", "output": "1", "currency": "dollars"}}, r"'currency'.*'dollars'"),
        ({"m": {"input": "1", "output": "1", "provider": ""}}, r"'provider'"),
        ({"m": {"input": "1", "output": "1", "max_output_tokens": 0}}, r"'max_output_tokens'"),
        ({"m": "cheap"}, r"model 'm' must map fields to prices, got 'cheap'"),
        ({"": {"input": "1", "output": "1"}}, r"non-empty strings"),
        ({"M": {"input": 1, "output": 1}, "m": {"input": 1, "output": 1}}, r"listed twice"),
    ],
)
def test_malformed_price_book_is_refused_naming_model_field_and_value(
    book: dict[str, object], match: str
) -> None:
    with pytest.raises(PriceBookError, match=match):
        Pricer(overrides=book)  # type: ignore[arg-type]  # malformed on purpose


def test_malformed_price_book_files(tmp_path: Path) -> None:
    nan = tmp_path / "nan.json"
    nan.write_text('{"m": {"input": NaN, "output": 1}}')
    with pytest.raises(PriceBookError, match="finite"):
        Pricer(overrides=nan)
    broken = tmp_path / "broken.toml"
    broken.write_text("[m\ninput = 1")
    with pytest.raises(PriceBookError, match="not valid toml"):
        Pricer(overrides=broken)
    yaml = tmp_path / "prices.yaml"
    yaml.write_text("m: {}")
    with pytest.raises(PriceBookError, match=r"unknown format '\.yaml'"):
        Pricer(overrides=yaml)
    with pytest.raises(PriceBookError, match="cannot be read"):
        Pricer(overrides=tmp_path / "missing.toml")
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(PriceBookError, match="must map model names"):
        Pricer(overrides=listing)
    negative = tmp_path / "neg.toml"
    negative.write_text('["m"]\ninput = -0.5\noutput = 1\n')
    with pytest.raises(PriceBookError, match=r"'m' field 'input' must not be negative"):
        Pricer(overrides=negative)


def test_book_alone_without_default_sources() -> None:
    pricer = Pricer(overrides={"m": {"input": 1, "output": 1}}, genai_prices=False, litellm=False)
    assert pricer.price("m", Usage(input_tokens=1)).status == "priced"
    assert pricer.price("gpt-4o", Usage(input_tokens=1)).status == "unknown_model"


# -- LiteLLM's price map --------------------------------------------------------------------


def test_litellm_fills_a_model_genai_prices_lacks(pricer: Pricer) -> None:
    # LiteLLM lists Azure's EU data-zone price (per token 1.65e-07 / 6.6e-07); genai-prices
    # does not.
    cost = pricer.price("azure/eu/gpt-4o-mini", Usage(input_tokens=1000, output_tokens=1000))
    assert cost.status == "priced"
    assert cost.source == "litellm 1.110.2"
    assert (cost.provider, cost.model) == ("azure", "azure/eu/gpt-4o-mini")
    assert cost.total == D("0.000825")  # 1000 x 0.165 + 1000 x 0.66 per MTok


def test_litellm_tiers_and_1h_cache_writes(pricer: Pricer) -> None:
    # Bedrock EU claude-sonnet-4-5 (LiteLLM only, without a provider): base 3.3 / 16.5 /
    # 0.33 / 4.125 / 1h 6.6; above 200k: 6.6 / 24.75 / 0.66 / 8.25 / 1h 13.2
    model = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
    small = Usage(
        input_tokens=10_000,
        cache_read_tokens=2_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=1_000,
        output_tokens=1_000,
    )
    cost = pricer.price(model, small)
    assert cost.source == "litellm 1.110.2"
    # 6000 x 3.3 + 2000 x 0.33 + 1000 x 4.125 + 1000 x 6.6 + 1000 x 16.5
    assert cost.total == D("0.047685")
    large = Usage(
        input_tokens=201_000,
        cache_read_tokens=100_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=1_000,
        output_tokens=1_000,
    )
    cost = pricer.price(model, large)
    assert cost.input == D("0.6534")  # 99000 x 6.6
    assert cost.cache_read == D("0.066")  # 100000 x 0.66
    assert cost.cache_write == D("0.02145")  # 1000 x 8.25 + 1000 x 13.2
    assert cost.output == D("0.02475")
    assert cost.total == D("0.7656")
    card = pricer.rate_card(model)
    assert card is not None
    assert card.max_output_tokens == 64000


def test_pricing_never_imports_litellm() -> None:
    code = (
        "import sys\n"
        "import costledger._pricing as p\n"
        "assert 'litellm' not in sys.modules and 'genai_prices' not in sys.modules\n"
        "from costledger import Usage\n"
        "pricer = p.Pricer()\n"
        "cost = pricer.price('azure/eu/gpt-4o-mini', Usage(input_tokens=1))\n"
        "assert cost.source.startswith('litellm'), cost\n"
        "assert pricer.max_output_tokens('gpt-4o') == 16384\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- rate cards ------------------------------------------------------------------------------


def test_rate_card_for_guards(pricer: Pricer) -> None:
    card = pricer.rate_card("claude-sonnet-4-5", at=NOON)
    assert isinstance(card, RateCard)
    assert (card.input, card.output, card.cache_read, card.cache_write) == (
        D("3"),
        D("15"),
        D("0.3"),
        D("3.75"),
    )
    assert card.cache_write_1h == D("6")
    assert card.currency == "USD"
    assert card.source == GENAI
    assert card.max_output_tokens == 64000
    assert card.max_input_tokens == 200000
    assert [t.above for t in card.tiers] == [200_000]
    assert card.rates_for(200_001).input == D("6")
    assert card.rates_for(200_000).input == D("3")
    # the worst case: every input token a one-hour cache write ($6 / MTok, 2x input)
    assert card.estimate(1000, 1000) == D("0.021")
    assert card.estimate(300_000, 1000) == D("3.6225")  # the tier follows the prompt ($12)
    with pytest.raises(AttributeError):
        card.input = D("0")  # type: ignore[misc]  # frozen on purpose
    assert pricer.max_output_tokens("gpt-4o") == 16384


def test_rate_card_cost_equals_price(pricer: Pricer) -> None:
    usage = Usage(input_tokens=5000, cache_read_tokens=4096, output_tokens=800)
    card = pricer.rate_card("gpt-4o", at=NOON)
    assert card is not None
    assert card.cost(usage) == pricer.price("gpt-4o", usage, at=NOON)


def test_rate_card_follows_time_of_day(pricer: Pricer) -> None:
    day = datetime(2026, 1, 15, tzinfo=UTC)
    peak = pricer.rate_card("deepseek-chat", at=day.replace(hour=12))
    off = pricer.rate_card("deepseek-chat", at=day.replace(hour=20))
    assert peak is not None
    assert off is not None
    assert (peak.input, off.input) == (D("0.27"), D("0.135"))


# -- sharing and threads ---------------------------------------------------------------------


def test_default_is_one_shared_instance() -> None:
    seen: list[Pricer] = []
    threads = [threading.Thread(target=lambda: seen.append(Pricer.default())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(p) for p in seen}) == 1
    assert seen[0] is Pricer.default()


def test_pricing_from_many_threads_gives_the_same_answers() -> None:
    cases = [
        ("gpt-4o", None, Usage(input_tokens=5000, cache_read_tokens=4096, output_tokens=800)),
        ("claude-sonnet-4-5", None, Usage(input_tokens=250_000, cache_read_tokens=100_000)),
        ("deepseek-chat", None, Usage(input_tokens=3000, output_tokens=500)),
        ("azure/eu/gpt-4o-mini", None, Usage(input_tokens=100, output_tokens=50)),
        ("acme-unknown", "acme", Usage(input_tokens=1)),
        ("gpt-5-2099-01-01", None, Usage(input_tokens=10, output_tokens=10)),
    ]
    expected = [Pricer().price(m, u, provider=p, at=NOON) for m, p, u in cases]
    shared = Pricer()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(50):
                for (m, p, u), want in zip(cases, expected, strict=True):
                    assert shared.price(m, u, provider=p, at=NOON) == want
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_preload_then_price_without_loading() -> None:
    pricer = Pricer()
    pricer.preload(litellm=True)
    cost = pricer.price("azure/eu/gpt-4o-mini", Usage(input_tokens=1_000_000))
    assert cost.total == D("0.165")


def test_fast_cost_constructor_builds_an_ordinary_cost() -> None:
    from costledger._pricing._card import _new_cost

    values = ("priced", D("3"), D("1"), D("0"), D("0"), D("2"), D("0"), "USD", "p", "m", "s")
    fast = _new_cost(*values)
    slow = Cost(
        status="priced",
        total=D("3"),
        input=D("1"),
        cache_read=D("0"),
        cache_write=D("0"),
        output=D("2"),
        audio=D("0"),
        currency="USD",
        provider="p",
        model="m",
        source="s",
    )
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    with pytest.raises(AttributeError):
        fast.total = D("0")  # type: ignore[misc]  # still frozen
