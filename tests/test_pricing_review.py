"""Fixes from the pricing review: token bounds at extraction, non-ASCII digit counts,
genai-prices entries without a price, LiteLLM ``tiered_pricing`` and float noise, and
price books that could not be priced exactly or were not refused as PriceBookError.
"""

from __future__ import annotations

import json
import logging
from decimal import Context, Decimal, Inexact, localcontext
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costledger import PriceBookError, Usage, UsageError, extract_usage
from costledger._pricing import Pricer, RateCard
from costledger._pricing import _litellm as litellm_source
from costledger._usage import MAX_TOKENS, check_count

D = Decimal


# -- bug 1: the 10^16 bound holds for counts read from a payload -------------------------------


@pytest.mark.parametrize(
    ("payload", "field", "value"),
    [
        ({"prompt_tokens": 10**17, "completion_tokens": 0}, "prompt_tokens", 10**17),
        ({"prompt_tokens": 5, "completion_tokens": 10**16 + 1}, "completion_tokens", 10**16 + 1),
        (
            {"prompt_tokens": "20000000000000000", "completion_tokens": 0},
            "prompt_tokens",
            "20000000000000000",
        ),
        (
            {"usage": {"input_tokens": 10**20, "output_tokens": 0, "cache_read_input_tokens": 0}},
            "usage.input_tokens",
            10**20,
        ),
        (
            {"usage": {"input_tokens": 1, "output_tokens": 0, "cache_read_input_tokens": 10**17}},
            "usage.cache_read_input_tokens",
            10**17,
        ),
        (
            {"usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 10**17}},
            "usageMetadata.candidatesTokenCount",
            10**17,
        ),
        (
            {
                "prompt_tokens": 10**17,
                "completion_tokens": 0,
                "prompt_tokens_details": {"cached_tokens": 10**17},
            },
            "prompt_tokens_details.cached_tokens",  # the part first, then the whole
            10**17,
        ),
    ],
)
def test_extraction_refuses_a_count_past_max_tokens_naming_field_and_value(
    payload: dict[str, Any], field: str, value: object
) -> None:
    with pytest.raises(UsageError, match="10\\^16") as info:
        extract_usage(payload)
    assert (info.value.field, info.value.value) == (field, value)
    assert field in str(info.value)
    assert str(value) in str(info.value)


@pytest.mark.parametrize(
    ("payload", "field", "total"),
    [
        # Anthropic and Bedrock: input_tokens exclude the cache; each part is under the bound
        (
            {
                "usage": {
                    "input_tokens": 9 * 10**15,
                    "output_tokens": 0,
                    "cache_read_input_tokens": 9 * 10**15,
                }
            },
            "usage.input_tokens",
            18 * 10**15,
        ),
        (
            {
                "usage": {
                    "inputTokens": 9 * 10**15,
                    "outputTokens": 1,
                    "cacheWriteInputTokens": 9 * 10**15,
                }
            },
            "usage.inputTokens",
            18 * 10**15,
        ),
        # Gemini: thoughts are billed on top of the candidates
        (
            {
                "usageMetadata": {
                    "promptTokenCount": 1,
                    "candidatesTokenCount": 6 * 10**15,
                    "thoughtsTokenCount": 6 * 10**15,
                }
            },
            "usageMetadata.candidatesTokenCount",
            12 * 10**15,
        ),
    ],
)
def test_extraction_refuses_a_sum_past_max_tokens(
    payload: dict[str, Any], field: str, total: int
) -> None:
    with pytest.raises(UsageError, match=f"gives {total} .* tokens in all") as info:
        extract_usage(payload)
    assert (info.value.field, info.value.value) == (field, total)


def test_max_tokens_itself_is_a_count_one_more_is_not() -> None:
    usage = extract_usage({"prompt_tokens": MAX_TOKENS, "completion_tokens": MAX_TOKENS})
    assert (usage.input_tokens, usage.output_tokens) == (10**16, 10**16)
    anthropic = {"input_tokens": 10**16 - 5, "output_tokens": 0, "cache_read_input_tokens": 5}
    assert extract_usage(anthropic).input_tokens == 10**16
    anthropic["cache_read_input_tokens"] = 6
    with pytest.raises(UsageError) as info:
        extract_usage(anthropic)
    assert (info.value.field, info.value.value) == ("input_tokens", 10**16 + 1)


# -- bug 8: only ASCII digits are a count ------------------------------------------------------


@pytest.mark.parametrize("text", ["²", "١٢", "１２", " ³ "])
def test_non_ascii_digits_are_a_usage_error_naming_field_and_value(text: str) -> None:
    with pytest.raises(UsageError, match="whole number of tokens") as info:
        Usage(input_tokens=text)  # type: ignore[arg-type]  # a wrong type on purpose
    assert (info.value.field, info.value.value) == ("input_tokens", text)
    with pytest.raises(UsageError) as info:
        check_count("output_tokens", text)
    assert (info.value.field, info.value.value) == ("output_tokens", text)
    assert Usage(input_tokens=" 12 ").input_tokens == 12  # type: ignore[arg-type]  # ASCII


# -- bug 3: an empty genai-prices price is free only with evidence -----------------------------

SMALL = Usage(input_tokens=1_000_000, output_tokens=200_000)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("cerebras", "qwen-3-coder-480b"),  # delisted, "kept for historical usage"
        ("huggingface_together", "ServiceNow-AI/Apriel-1.6-15b-Thinker"),
        ("openrouter", "stealth/crouton-alpha"),
        ("openrouter", "google/lyria-3-clip-preview"),
    ],
)
def test_entry_without_a_price_is_unknown_not_free(
    provider: str, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="costledger"):
        cost = Pricer().price(model, SMALL, provider=provider)
    assert cost.status == "unknown_model"
    assert (cost.total, cost.input, cost.output, cost.source) == (None, None, None, None)
    warned = [
        getattr(r, "costledger_model", None)
        for r in caplog.records
        if getattr(r, "costledger_event", None) == "unknown_model"
    ]
    assert warned == [model]
    # the same empty price with evidence that the model is free: priced, at exactly 0
    for provider, model, canonical in [
        ("openrouter", "deepseek/deepseek-r1:free", "deepseek/deepseek-r1:free"),  # :free id
        ("github-copilot", "gpt-4o", "gpt-4o"),  # included in the subscription
        ("google", "gemma-3-27b-it", "gemma-3"),  # named "Gemma 3 (free)"
        ("openai", "omni-moderation-latest", "moderation"),  # "... are free of charge"
    ]:
        cost = Pricer(litellm=False).price(model, SMALL, provider=provider)
        assert (cost.status, cost.total, cost.model) == ("priced", D(0), canonical)


@pytest.fixture
def litellm_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A price map of our own in place of LiteLLM's (fill it before the first price)."""
    entries: dict[str, Any] = {}
    path = tmp_path / litellm_source._FILE

    def price_file() -> Path:
        path.write_text(json.dumps(entries))
        return path

    monkeypatch.setattr(litellm_source, "_price_file", price_file)
    return entries


def test_entry_without_a_price_falls_through_to_litellm(litellm_map: dict[str, Any]) -> None:
    litellm_map["cerebras/qwen-3-coder-480b"] = {
        "litellm_provider": "cerebras",
        "mode": "chat",
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 2e-06,
    }
    cost = Pricer().price("qwen-3-coder-480b", SMALL, provider="cerebras")
    assert cost.status == "priced"
    assert cost.source == f"litellm {version('litellm')}"
    assert cost.model == "cerebras/qwen-3-coder-480b"
    assert cost.total == D("2.4")  # 1M x 2 + 200k x 2 per MTok


# -- bug 2: LiteLLM's tiered_pricing -----------------------------------------------------------


def test_litellm_tiered_pricing_from_the_installed_map() -> None:
    pricer = Pricer()
    # opencode_go/claude-haiku-5-5: 0.1 / 0.5 up to 100k, 0.5 / 2.5 above
    cost = pricer.price(
        "opencode_go/claude-haiku-5-5", Usage(input_tokens=150_000, output_tokens=1000)
    )
    assert cost.total == D("0.0775")  # 150000 x 0.5 + 1000 x 2.5 per MTok
    # dashscope/qwen-plus-2025-07-28 lists only tiered_pricing: its own price, not qwen-plus's
    small = Usage(input_tokens=10_000, output_tokens=1000, reasoning_tokens=800)
    cost = pricer.price("dashscope/qwen-plus-2025-07-28", small)
    assert cost.model == "dashscope/qwen-plus-2025-07-28"
    assert cost.source == f"litellm {version('litellm')}"
    assert cost.total == D("0.00744")  # 10000 x 0.4 + 200 x 1.2 + 800 x 4 per MTok
    large = Usage(input_tokens=300_000, output_tokens=1000)
    assert pricer.price("dashscope/qwen-plus-2025-07-28", large).total == D("0.3636")


TIERED = {
    "litellm_provider": "zz",
    "mode": "chat",
    "output_cost_per_token": 9e-06,  # stands in for a tier without an output rate
    "input_cost_per_request": 0.001,
    "tiered_pricing": [
        {
            "range": [32000.0, 128000.0],
            "input_cost_per_token": 2e-06,
            "output_cost_per_token": 8e-06,
            "cache_read_input_token_cost": 2e-07,
            "cache_creation_input_token_cost": 2.5e-06,
            "output_cost_per_reasoning_token": 1.6e-05,
        },
        {"range": [0, 32000.0], "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06},
        {"range": [128000.0, 256000.0], "input_cost_per_token": 4e-06},
    ],
}


def test_litellm_tiered_pricing_compiles_into_the_card_tiers(
    litellm_map: dict[str, Any],
) -> None:
    litellm_map["zz-tiered"] = TIERED
    pricer = Pricer(genai_prices=False)
    card = pricer.rate_card("zz-tiered")
    assert isinstance(card, RateCard)
    assert (card.input, card.output, card.cache_read, card.cache_write) == (
        D(1),
        D(4),
        D(1),
        D(1),
    )  # a tier without cache rates bills them at its own input rate
    assert card.request == D("0.001")
    assert [tier.above for tier in card.tiers] == [32000, 128000]
    middle, top = card.tiers
    assert (middle.input, middle.output, middle.cache_read, middle.cache_write) == (
        D(2),
        D(8),
        D("0.2"),
        D("2.5"),
    )
    assert middle.reasoning == D(16)
    assert (top.input, top.output, top.cache_read, top.reasoning) == (D(4), D(9), D(4), None)

    def total(usage: Usage) -> Decimal | None:
        return pricer.price("zz-tiered", usage).total

    # exactly on a range end: still the lower tier (LiteLLM: start < prompt <= end)
    assert total(Usage(input_tokens=32_000, output_tokens=100)) == D("0.0334")
    # one past it, reached through cache tokens: the WHOLE request at the middle tier
    assert total(
        Usage(
            input_tokens=32_001,
            cache_read_tokens=20_000,
            cache_write_tokens=10_000,
            output_tokens=1000,
            reasoning_tokens=400,
        )
    ) == D("0.045202")  # 2001x2 + 20000x0.2 + 10000x2.5 + 600x8 + 400x16 per MTok + 0.001
    # past the last range: the last tier, whose output is the entry's own rate
    assert total(Usage(input_tokens=300_000, output_tokens=1000)) == D("1.210")


@pytest.mark.parametrize(
    "table",
    [
        [{"range": [1000, 32000], "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}],
        [  # a gap between ranges
            {"range": [0, 32000], "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            {
                "range": [64000, 128000],
                "input_cost_per_token": 2e-06,
                "output_cost_per_token": 2e-06,
            },
        ],
        [{"range": [0, 32000], "input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06}],
        [{"range": [0, 32000.5], "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}],
        [{"max_results_range": [0, 25], "input_cost_per_query": 0.005}],
        [{"range": [0, 32000], "output_cost_per_token": 1e-06}],
        [],
    ],
)
def test_known_entry_that_cannot_be_compiled_is_unknown_not_its_base_models_price(
    litellm_map: dict[str, Any], table: list[dict[str, Any]]
) -> None:
    litellm_map["zz-model"] = {
        "litellm_provider": "zz",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 1e-06,
    }
    litellm_map["zz-model-2025-07-28"] = {
        "litellm_provider": "zz",
        "mode": "chat",
        "tiered_pricing": table,
    }
    pricer = Pricer(genai_prices=False)
    assert pricer.price("zz-model", SMALL).total == D("1.2")
    cost = pricer.price("zz-model-2025-07-28", SMALL)
    assert cost.status == "unknown_model"
    assert (cost.model, cost.total) == ("zz-model-2025-07-28", None)
    # a dated name nobody lists still takes its base model's price, visibly
    assert pricer.price("zz-model-2026-01-01", SMALL).total == D("1.2")


# -- bug 9: LiteLLM's float noise stays out of money -------------------------------------------


def test_litellm_rates_are_rounded_to_15_significant_digits(
    litellm_map: dict[str, Any],
) -> None:
    litellm_map["zz-noisy"] = {
        "litellm_provider": "zz",
        "mode": "chat",
        "input_cost_per_token": 1.0000000000000001e-07,
        "output_cost_per_token": 1.6000000000000001e-06,
        "cache_read_input_token_cost": 5.0000000000000004e-08,
        "input_cost_per_token_above_200k_tokens": 4.0000000000000003e-07,
        "input_cost_per_request": 0.005000000000000001,
    }
    litellm_map["zz-exact"] = {
        "litellm_provider": "zz",
        "mode": "chat",
        "input_cost_per_token": 1.23456789012345e-02,  # 15 digits, 10 places: kept as written
        # 15 digits but 15 places per MTok: 12 places kept (18 per token, the ledger's scale)
        "output_cost_per_token": 1.23456789012345e-07,
    }
    pricer = Pricer(genai_prices=False)
    card = pricer.rate_card("zz-noisy")
    assert card is not None
    assert (card.input, card.output, card.cache_read) == (D("0.1"), D("1.6"), D("0.05"))
    assert card.tiers[0].input == D("0.4")
    assert card.request == D("0.005")
    cost = pricer.price("zz-noisy", Usage(input_tokens=10_000, output_tokens=1000))
    assert cost.total == D("0.0076")  # 10000 x 0.1 + 1000 x 1.6 per MTok + 0.005
    assert str(cost.input) == "0.0010000"
    exact = pricer.rate_card("zz-exact")
    assert exact is not None
    assert (exact.input, exact.output) == (D("12345.6789012345"), D("0.123456789012"))


def test_installed_map_noise_is_gone() -> None:
    card = Pricer().rate_card("opencode_go/claude-haiku-5-5")
    assert card is not None
    assert (card.input, card.cache_read) == (D("0.1"), D("0.01"))
    assert card.tiers[0].cache_read == D("0.05")


# -- bug 4: a price book is refused, not loaded and then unpriceable ---------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (Decimal(0.15), "55 significant digits"),  # noqa: RUF032  # a binary float through Decimal(float)
        ("0." + "1" * 31, "31 significant digits"),
        ("1e400", "10\\^12 or more"),
        ("1E+12", "10\\^12 or more"),
        ("1e-21", "below 10\\^-20"),
        ("1.5e-400", "below 10\\^-20"),
    ],
)
def test_book_price_that_cannot_stay_exact_is_refused(value: object, why: str) -> None:
    with pytest.raises(PriceBookError, match=why) as info:
        Pricer({"my-model": {"input": "1", "cache_read": value, "output": "1"}})
    message = str(info.value)
    assert "'my-model'" in message
    assert "'cache_read'" in message
    assert repr(value) in message


def test_book_prices_at_the_limits_are_accepted_and_priced_exactly() -> None:
    pricer = Pricer(
        {
            "m": {
                "input": "999999999999.999999999999999999",  # 30 digits, under 10^12
                "cache_read": "1e-20",
                "output": "0.15" + "0" * 40,  # trailing zeros are not significant
                "cache_write": "0E-500",
            }
        },
        genai_prices=False,
        litellm=False,
    )
    card = pricer.rate_card("m")
    assert card is not None
    assert (card.output, card.cache_write) == (D("0.15"), D(0))
    usage = Usage(
        input_tokens=MAX_TOKENS,
        cache_read_tokens=10**15,
        cache_write_tokens=10**15,
        output_tokens=MAX_TOKENS,
    )
    cost = pricer.price("m", usage)
    assert cost.input == D("7999999999999999999999.999999992")  # 8e15 x P / 1e6
    assert cost.cache_read == D("1E-11")
    assert cost.cache_write == D(0)
    assert cost.output == D(1_500_000_000)
    assert cost.total == D("8000000000001499999999.99999999201")
    with pytest.raises(PriceBookError, match="31 significant digits"):
        Pricer({"m": {"input": "9999999999999.999999999999999999", "output": 1}})


prices = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=0, places=None),
    st.builds(
        lambda digits, exponent: Decimal(f"{digits}E{exponent}"),
        st.integers(1, 10**40),
        st.integers(-60, 20),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    rates=st.lists(prices, min_size=4, max_size=4),
    counts=st.lists(st.integers(0, MAX_TOKENS), min_size=4, max_size=4),
)
def test_a_book_that_loads_always_prices(rates: list[Decimal], counts: list[int]) -> None:
    """Any price the book accepts, with any counts up to MAX_TOKENS, prices exactly."""
    entry = dict(zip(("input", "output", "cache_read", "cache_write"), rates, strict=True))
    try:
        pricer = Pricer({"m": entry}, genai_prices=False, litellm=False)
    except PriceBookError:
        return
    uncached, cache_read, cache_write, output = counts
    usage = Usage(
        input_tokens=(uncached + cache_read + cache_write) // 3,
        cache_read_tokens=cache_read // 3,
        cache_write_tokens=cache_write // 3,
        output_tokens=output,
    )
    try:
        cost = pricer.price("m", usage)
    except Inexact:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"{entry} loaded but cannot price {usage}")
    card = pricer.rate_card("m")
    assert card is not None
    with localcontext(Context(prec=200)):
        expected = (
            card.input * usage.uncached_input_tokens
            + card.cache_read * usage.cache_read_tokens
            + card.cache_write * usage.cache_write_tokens
            + card.output * usage.output_tokens
        )
    assert cost.total is not None
    with localcontext(Context(prec=200)):  # wide enough that nothing rounds
        assert cost.total == expected.scaleb(-6)


# -- bug 5: every bad price-book file is a PriceBookError naming the file ----------------------


def test_json_book_with_a_key_listed_twice_is_refused(tmp_path: Path) -> None:
    book = tmp_path / "dup.json"
    book.write_text(
        '{"m": {"input": "0.15", "output": "0.60"},\n "m": {"input": "15", "output": "60"}}'
    )
    with pytest.raises(PriceBookError, match="key 'm' is listed twice") as info:
        Pricer(book)
    assert str(book) in str(info.value)
    field = tmp_path / "dup_field.json"
    field.write_text('{"m": {"input": "0.15", "output": "0.60", "input": "15"}}')
    with pytest.raises(PriceBookError, match="key 'input' is listed twice"):
        Pricer(field)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("latin1.toml", '["m"]\ninput = 1\noutput = 2 # caf\xe9\n'.encode("latin-1")),
        ("latin1.json", '{"m\xe9": {"input": 1, "output": 2}}'.encode("latin-1")),
        ("bom16.json", b"\xff\xfe{"),
    ],
)
def test_book_that_is_not_text_is_a_price_book_error(
    tmp_path: Path, name: str, data: bytes
) -> None:
    book = tmp_path / name
    book.write_bytes(data)
    with pytest.raises(PriceBookError, match="cannot be decoded as text") as info:
        Pricer(book)
    assert str(book) in str(info.value)


def test_json_book_nan_names_the_file(tmp_path: Path) -> None:
    book = tmp_path / "nan.json"
    book.write_text('{"m": {"input": NaN, "output": 1}}')
    with pytest.raises(PriceBookError, match="finite numbers, got NaN") as info:
        Pricer(book)
    assert str(book) in str(info.value)


@pytest.mark.parametrize(
    "model",
    ["rerank-v3.5", "amazon.rerank-v1:0", "gemini/lyria-3-clip-preview", "parallel_ai/decision"],
)
def test_a_litellm_entry_priced_per_query_or_image_is_no_price_not_zero(model: str) -> None:
    # LiteLLM lists these with 0 per token and their real price per query / image: a
    # rerank call costs $0.002, never a silent $0.
    cost = Pricer(genai_prices=False).price(model, Usage(input_tokens=100))
    assert cost.status == "unknown_model"
    assert cost.total is None


def test_a_litellm_model_free_per_token_with_nothing_else_stays_free() -> None:
    pricer = Pricer(genai_prices=False)
    free = [
        name
        for name, (_, entry) in litellm_source.LiteLLMPrices()._load().items()
        if entry.get("input_cost_per_token") == 0
        and entry.get("output_cost_per_token") == 0
        and not any("per_" in k and "token" not in k and entry[k] for k in entry if "cost" in k)
    ]
    assert free, "LiteLLM's map has models free per token"
    cost = pricer.price(free[0], Usage(input_tokens=100, output_tokens=10))
    assert (cost.status, cost.total) == ("priced", Decimal(0))
