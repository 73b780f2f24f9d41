"""A price book key written with a provider prefix (``anthropic/claude-sonnet-4-5``,
``openai/gpt-4o``: the model string LiteLLM takes) prices a call that names its provider
apart (LiteLLM's logger, LangChain and the HTTP transport pass ``provider=``). It was
silently ignored: the call was priced at the list price."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before LiteLLM is imported

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from costledger import Pricer, Tracker, Usage
from costledger.testing import InMemoryLedger

AT = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
USAGE = Usage(input_tokens=10_000, output_tokens=1_000)
SONNET = "claude-sonnet-4-5-20250929"


def test_a_prefixed_key_prices_the_call_that_names_the_provider_apart() -> None:
    pricer = Pricer(overrides={f"anthropic/{SONNET}": {"input": "1", "output": "3"}})
    cost = pricer.price(SONNET, USAGE, provider="anthropic", at=AT)
    assert cost.total == Decimal("0.013")  # 10000 x $1 + 1000 x $3, per MTok
    assert (cost.source, cost.model, cost.provider) == (
        "override: mapping",
        f"anthropic/{SONNET}",
        "anthropic",
    )
    # the call written with the prefix, as before
    assert pricer.price(f"anthropic/{SONNET}", USAGE, at=AT).total == Decimal("0.013")
    # another provider, or none named, is not the key's: the list price
    # ($3 / $15 per MTok at Anthropic: 10000 x 3 + 1000 x 15)
    assert pricer.price(SONNET, USAGE, at=AT).total == Decimal("0.045")
    assert pricer.price(SONNET, USAGE, at=AT).source.startswith("genai-prices")
    bedrock = pricer.price(SONNET, USAGE, provider="bedrock", at=AT)
    assert bedrock.source.startswith("genai-prices")

    pricer = Pricer(overrides={"OpenAI/gpt-4o": {"input": "2", "output": "8"}})
    cost = pricer.price("gpt-4o", USAGE, provider="openai", at=AT)
    assert (cost.total, cost.source) == (Decimal("0.028"), "override: mapping")


def test_the_prefixed_key_wins_over_the_bare_one_for_its_provider() -> None:
    pricer = Pricer(
        overrides={
            "gpt-4o": {"input": "2", "output": "8"},  # 0.028
            "openai/gpt-4o": {"input": "1", "output": "4"},  # 0.014
        }
    )
    assert pricer.price("gpt-4o", USAGE, provider="openai", at=AT).total == Decimal("0.014")
    assert pricer.price("openai/gpt-4o", USAGE, at=AT).total == Decimal("0.014")
    assert pricer.price("gpt-4o", USAGE, at=AT).total == Decimal("0.028")
    assert pricer.price("gpt-4o", USAGE, provider="azure", at=AT).total == Decimal("0.028")
    assert pricer.price("azure/gpt-4o", USAGE, at=AT).total == Decimal("0.028")
    # text-completion-openai is OpenAI (LiteLLM's spelling): the prefixed key
    cost = pricer.price("gpt-4o", USAGE, provider="text-completion-openai", at=AT)
    assert cost.total == Decimal("0.014")


def test_provider_aliases_match_and_the_calls_own_spelling_wins() -> None:
    vertex = {"vertex_ai/gemini-2.5-pro": {"input": "1", "output": "4"}}  # 0.014
    pricer = Pricer(overrides=vertex)
    for provider in ("vertex_ai", "google_vertexai", "gemini", "google_genai"):
        cost = pricer.price("gemini-2.5-pro", USAGE, provider=provider, at=AT)
        assert (cost.total, cost.source) == (Decimal("0.014"), "override: mapping"), provider
    cost = pricer.price("models/gemini-2.5-pro", USAGE, provider="google_genai", at=AT)
    assert cost.total == Decimal("0.014")
    both = {**vertex, "gemini/gemini-2.5-pro": {"input": "2", "output": "8"}}  # 0.028
    pricer = Pricer(overrides=both)
    assert pricer.price("gemini-2.5-pro", USAGE, provider="gemini", at=AT).total == Decimal("0.028")
    assert pricer.price("gemini-2.5-pro", USAGE, provider="vertex_ai", at=AT).total == Decimal(
        "0.014"
    )
    # a provider only LiteLLM knows, and LiteLLM's alias of one (ollama_chat: ollama)
    pricer = Pricer(
        overrides={
            "sambanova/DeepSeek-R1": {"input": "3", "output": "5"},  # 0.035
            "ollama/llama3.1": {"input": "0", "output": "0.5"},  # 0.0005
        }
    )
    assert pricer.price("DeepSeek-R1", USAGE, provider="sambanova", at=AT).total == Decimal("0.035")
    cost = pricer.price("llama3.1", USAGE, provider="ollama_chat", at=AT)
    assert (cost.total, cost.source) == (Decimal("0.0005"), "override: mapping")
    # a Hugging Face org is no provider: openai-community/gpt2 is not OpenAI's gpt2
    pricer = Pricer(overrides={"openai-community/gpt2": {"input": "1", "output": "1"}})
    assert pricer.price("gpt2", USAGE, provider="openai", at=AT).status == "unknown_model"


def test_a_prefixed_key_covers_dated_snapshots_and_requested_names() -> None:
    pricer = Pricer(overrides={"anthropic/claude-sonnet-4-5": {"input": "1", "output": "3"}})
    cost = pricer.price(SONNET, USAGE, provider="anthropic", at=AT)
    assert cost.total == Decimal("0.013")
    assert cost.source == (
        f"override: mapping (dated snapshot {SONNET!r} priced as 'anthropic/claude-sonnet-4-5')"
    )
    # an entry for the snapshot itself still wins over its base model's
    pricer = Pricer(
        overrides={
            "anthropic/claude-sonnet-4-5": {"input": "1", "output": "3"},
            SONNET: {"input": "2", "output": "6"},  # 0.026
        }
    )
    assert pricer.price(SONNET, USAGE, provider="anthropic", at=AT).total == Decimal("0.026")
    # the requested name's entry, when OpenAI answers with its dated snapshot
    pricer = Pricer(overrides={"openai/gpt-4o": {"input": "1", "output": "4"}})
    cost = pricer.price(
        "gpt-4o-2024-08-06", USAGE, provider="openai", at=AT, requested_model="gpt-4o"
    )
    assert (cost.total, cost.source) == (Decimal("0.014"), "override: mapping")


def test_the_tracker_prices_a_call_naming_its_provider_from_the_prefixed_key() -> None:
    pricer = Pricer(overrides={f"anthropic/{SONNET}": {"input": "1", "output": "3"}})
    tracker = Tracker(InMemoryLedger(), pricer=pricer, log="off")
    event = tracker.record(SONNET, USAGE, provider="anthropic", started_at=AT)
    assert (event.cost.total, event.cost.source) == (Decimal("0.013"), "override: mapping")


_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


@pytest.fixture
def litellm_module() -> Iterator[Any]:
    litellm = pytest.importorskip("litellm")
    saved = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    for name in _CALLBACK_LISTS:
        setattr(litellm, name, [])
    try:
        yield litellm
    finally:
        for name, value in saved.items():
            setattr(litellm, name, value)


def test_litellm_logger_call_priced_from_the_key_litellm_was_given(litellm_module: Any) -> None:
    from costledger_litellm import CostLedgerLogger

    model = f"anthropic/{SONNET}"
    ledger = InMemoryLedger()
    tracker = Tracker(
        ledger, pricer=Pricer(overrides={model: {"input": "3", "output": "7"}}), log="off"
    )
    litellm_module.completion(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        mock_response="hello",  # LiteLLM's mock: 10 prompt and 20 completion tokens
        callbacks=[CostLedgerLogger(tracker=tracker)],
    )
    deadline = time.monotonic() + 30
    while not list(ledger.events()):
        assert time.monotonic() < deadline, "the logger recorded nothing"
        time.sleep(0.01)
    (stored,) = ledger.events()
    event = stored.to_event()
    assert (event.provider, event.usage.input_tokens, event.usage.output_tokens) == (
        "anthropic",
        10,
        20,
    )
    assert event.cost.total == Decimal("0.00017")  # 10 x $3 + 20 x $7, per MTok
    assert event.cost.source == "override: mapping"
