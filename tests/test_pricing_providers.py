"""A provider genai-prices does not know is priced at that provider's own price.

genai-prices' matching does not narrow on a provider it does not know (SambaNova,
Snowflake, DashScope, Vercel's AI gateway, ...), so the bare model name those providers
answer with (``DeepSeek-R1``) matched the model at any provider: DeepSeek's own price
for a SambaNova call. LiteLLM's map lists these providers' prices
(``sambanova/DeepSeek-R1``); that entry now comes before a genai-prices match at
another provider. A provider genai-prices knows keeps genai-prices first.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from costledger import Usage
from costledger._pricing import Pricer
from costledger._pricing import _litellm as litellm_source
from costledger._pricing._genai import GenaiPrices, Match
from costledger._pricing._names import GENAI_PROVIDER, ModelName

AT = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
USAGE = Usage(input_tokens=12_000, cache_read_tokens=2_000, output_tokens=3_000)
MILLION = Decimal(1_000_000)


def _price_map() -> dict[str, Any]:
    path = litellm_source._price_file()
    if path is None:
        pytest.skip("litellm is not installed")
    with path.open("rb") as f:
        data: dict[str, Any] = json.load(f, parse_float=Decimal)
    return data


PRICE_MAP = _price_map()


def map_cost(key: str, usage: Usage = USAGE) -> Decimal:
    """``usage`` priced by hand from LiteLLM's entry ``key``: uncached input, cache reads
    (at the input rate where the entry has no cache price) and output."""
    entry = PRICE_MAP.get(key)
    if entry is None:
        pytest.skip(f"LiteLLM's map no longer lists {key!r}")
    assert not any("above" in k or k == "tiered_pricing" for k in entry), key
    rate_in = entry["input_cost_per_token"]
    rate_cache = entry.get("cache_read_input_token_cost", rate_in)
    uncached = usage.input_tokens - usage.cache_read_tokens
    total: Decimal = (
        uncached * rate_in
        + usage.cache_read_tokens * rate_cache
        + usage.output_tokens * entry["output_cost_per_token"]
    )
    return total


def test_deepseek_r1_on_sambanova_is_sambanovas_price_not_deepseeks() -> None:
    # Hand-checked from LiteLLM 1.110.2's map: sambanova/DeepSeek-R1 is $5 / $7 per
    # million tokens; DeepSeek's own deepseek-reasoner is $0.55 / $2.19.
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    cost = Pricer().price("DeepSeek-R1", usage, provider="sambanova", at=AT)
    assert cost.status == "priced"
    assert cost.total == Decimal("0.012")  # 1000 x 5 + 1000 x 7, per million
    assert cost.input == Decimal("0.005")
    assert cost.output == Decimal("0.007")
    assert str(cost.source).startswith("litellm ")
    assert cost.provider == "sambanova"
    assert cost.model == "sambanova/DeepSeek-R1"
    card = Pricer().rate_card("DeepSeek-R1", provider="sambanova", at=AT)
    assert card is not None
    assert (card.input, card.output) == (Decimal(5), Decimal(7))
    assert card.max_output_tokens == 32_768
    # The prefixed name, as LiteLLM's Router names the deployment, says the same.
    assert Pricer().price("sambanova/DeepSeek-R1", usage, at=AT).total == cost.total


@pytest.mark.parametrize(
    ("model", "provider", "key"),
    [
        ("DeepSeek-R1", "sambanova", "sambanova/DeepSeek-R1"),
        ("claude-4-opus", "snowflake", "snowflake/claude-4-opus"),
        ("deepseek-v4-pro", "dashscope", "dashscope/deepseek-v4-pro"),
        ("deepseek-r1-671b", "lambda_ai", "lambda_ai/deepseek-r1-671b"),
        # the gateway's model id carries the upstream provider: not split off
        ("zai/glm-4.6", "vercel_ai_gateway", "vercel_ai_gateway/zai/glm-4.6"),
        ("command-a-plus-05-2026", "aihubmix", "aihubmix/command-a-plus-05-2026"),
        ("tencent/hy4", "gmi", "gmi/tencent/hy4"),
        # provider names ignore case, as everywhere
        ("DeepSeek-R1", "SambaNova", "sambanova/DeepSeek-R1"),
    ],
)
def test_bare_model_at_a_provider_genai_prices_lacks(model: str, provider: str, key: str) -> None:
    expected = map_cost(key)
    pricer = Pricer()
    cost = pricer.price(model, USAGE, provider=provider, at=AT)
    assert cost.status == "priced"
    assert cost.total == expected
    assert str(cost.source).startswith("litellm ")
    assert cost.model == key
    assert cost.provider == PRICE_MAP[key]["litellm_provider"]
    # cached: the same price again
    assert pricer.price(model, USAGE, provider=provider, at=AT).total == expected


def test_unknown_prefix_names_its_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    # genai-prices' data matches no ``sambanova/...`` name today; were it to match one
    # at another provider (as it matches the bare name), LiteLLM's key for SambaNova's
    # model still comes first. Simulated: genai-prices matching every name to DeepSeek.
    deepseek = GenaiPrices().find(ModelName("deepseek-reasoner", "deepseek-reasoner", None, False))
    assert deepseek is not None

    def find(self: GenaiPrices, name: ModelName) -> Match:
        return deepseek

    monkeypatch.setattr(GenaiPrices, "find", find)
    pricer = Pricer()
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    cost = pricer.price("sambanova/DeepSeek-R1", usage, at=AT)
    assert cost.total == Decimal("0.012")
    assert (cost.model, cost.provider) == ("sambanova/DeepSeek-R1", "sambanova")
    # a first segment that is no provider LiteLLM lists the name at changes nothing
    other = pricer.price("meta-llama/DeepSeek-R1", usage, at=AT)
    assert str(other.source).startswith("genai-prices ")
    # nor does a provider genai-prices knows
    known = pricer.price("gpt-4o", usage, provider="openai", at=AT)
    assert (known.provider, str(known.source)[:12]) == ("deepseek", "genai-prices")


def test_litellm_alone_prefers_the_providers_own_entry() -> None:
    # Without genai-prices, LiteLLM's bare ``zai/glm-4.6`` (Z.ai's $0.6 / $2.2) and
    # ``command-a-plus-05-2026`` (Cohere, $0) were taken before the provider's own entry.
    pricer = Pricer(genai_prices=False)
    for model, provider, key in [
        ("zai/glm-4.6", "vercel_ai_gateway", "vercel_ai_gateway/zai/glm-4.6"),
        ("command-a-plus-05-2026", "aihubmix", "aihubmix/command-a-plus-05-2026"),
    ]:
        cost = pricer.price(model, USAGE, provider=provider, at=AT)
        assert (cost.total, cost.model) == (map_cost(key), key)
    # Hand-checked: $0.45 / $1.8 per million, cache reads $0.11.
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    cost = pricer.price("zai/glm-4.6", usage, provider="vercel_ai_gateway", at=AT)
    assert cost.total == Decimal("0.00225")


def test_litellms_provider_spellings_find_the_entry() -> None:
    # LiteLLM's ``watsonx_text`` provider is listed in the map under ``watsonx``.
    key = "watsonx/mistralai/mistral-large"
    cost = Pricer().price("mistralai/mistral-large", USAGE, provider="watsonx_text", at=AT)
    assert (cost.total, cost.model, cost.provider) == (map_cost(key), key, "watsonx")
    assert str(cost.source).startswith("litellm ")


def test_price_book_still_first_and_provider_scoped() -> None:
    book = {
        "DeepSeek-R1": {"input": "1", "output": "2", "provider": "deepseek"},
        "claude-4-opus": {"input": "3", "output": "4", "provider": "snowflake"},
    }
    pricer = Pricer(overrides=book)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    # the book's entry is for another provider: SambaNova's own price, not DeepSeek's
    sambanova = pricer.price("DeepSeek-R1", usage, provider="sambanova", at=AT)
    assert sambanova.total == Decimal(12)
    assert str(sambanova.source).startswith("litellm ")
    # the book's entry for this provider wins over LiteLLM's
    snowflake = pricer.price("claude-4-opus", usage, provider="snowflake", at=AT)
    assert snowflake.total == Decimal(7)
    assert snowflake.source == "override: mapping"


def test_provider_genai_prices_knows_keeps_genai_prices_first() -> None:
    # Perplexity is a genai-prices provider: its own price (with the per-request fee)
    # stays, though LiteLLM lists perplexity/sonar too. SambaNova changed with the fix.
    pricer = Pricer()
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    sonar = pricer.price("sonar", usage, provider="perplexity", at=AT)
    assert str(sonar.source).startswith("genai-prices ")
    assert sonar.provider == "perplexity"
    gpt = pricer.price("gpt-4o", usage, provider="openai", at=AT)
    assert str(gpt.source).startswith("genai-prices ")
    samba = pricer.price("DeepSeek-R1", usage, provider="sambanova", at=AT)
    assert str(samba.source).startswith("litellm ")


def test_provider_known_by_genai_prices_match_only_prefers_its_litellm_entry() -> None:
    # genai-prices matches ``bedrock_mantle`` to AWS, where it does not list this model;
    # LiteLLM lists it both at bedrock_mantle and, bare, at bedrock_converse: the call
    # is attributed to the provider it was made at.
    key = "bedrock_mantle/openai.gpt-oss-safeguard-120b"
    cost = Pricer().price("openai.gpt-oss-safeguard-120b", USAGE, provider="bedrock_mantle", at=AT)
    assert (cost.model, cost.provider) == (key, "bedrock_mantle")
    assert cost.total == map_cost(key)


def _genai_unknown_providers() -> set[str]:
    """LiteLLM's providers that neither costledger's table nor genai-prices knows."""
    from genai_prices.data_snapshot import find_provider_by_id, get_snapshot

    known = get_snapshot().providers
    providers = {
        entry["litellm_provider"].lower()
        for entry in PRICE_MAP.values()
        if isinstance(entry, dict) and isinstance(entry.get("litellm_provider"), str)
    }
    return {
        p for p in providers if p not in GENAI_PROVIDER and find_provider_by_id(known, p) is None
    }


def test_every_litellm_entry_at_a_provider_genai_prices_lacks() -> None:
    """Each chat entry LiteLLM lists under a provider genai-prices does not know, priced
    by its bare name with that provider (what a live call reports), costs what the entry
    says. An entry without a token price is left out: it is priced as before."""
    unknown = _genai_unknown_providers()
    assert {"sambanova", "snowflake", "dashscope", "vercel_ai_gateway"} <= unknown
    assert "perplexity" not in unknown
    assert "together_ai" not in unknown
    reader = litellm_source.LiteLLMPrices()
    pricer = Pricer()
    checked, wrong = 0, []
    for key, entry in PRICE_MAP.items():
        if not isinstance(entry, dict) or entry.get("mode") not in ("chat", "completion"):
            continue
        provider = entry.get("litellm_provider")
        if not isinstance(provider, str) or provider.lower() not in unknown:
            continue
        card = reader.compile(key, entry)
        if card is None:
            continue
        bare = key[len(provider) + 1 :] if key.startswith(provider + "/") else key
        cost = pricer.price(bare, USAGE, provider=provider, at=AT)
        checked += 1
        if cost.total != card.cost(USAGE).total or not str(cost.source).startswith("litellm "):
            wrong.append((key, cost.total, cost.source, cost.model))
    assert checked > 1_000
    assert wrong == []
