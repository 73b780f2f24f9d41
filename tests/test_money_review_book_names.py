"""A price book entry for the model a call REQUESTED is not bypassed by the name its response
gives (OpenAI's dated snapshot, the base model behind an Azure deployment).

One rule, in ``Pricer.price(response_model, usage, requested_model=model)``, shared by the
Tracker, ``Pricer.reprice``, ``reprice`` and ``whatif``: the book's entry for the requested
name, then the book or the default sources under the response's name, then the default
sources under the requested name.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before LiteLLM is imported

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Ledger, Pricer, Tracker, Usage, reprice, whatif
from costledger.testing import InMemoryLedger

AT = datetime(2026, 11, 20, tzinfo=timezone.utc)
BOOK = {
    "gpt-4o": {"input": "2.00", "output": "8"},  # a negotiated discount
    "support-bot-prod": {"input": "2.00", "output": "8", "provider": "azure"},  # a deployment
}
SNAPSHOT = {
    "id": "chatcmpl-1",
    "model": "gpt-4o-2024-08-06",
    "usage": {"prompt_tokens": 10000, "completion_tokens": 1000},
}
BOOK_PRICE = Decimal("0.028")  # 10000 x $2 + 1000 x $8, per MTok
LIST_PRICE = Decimal("0.035")  # 10000 x $2.50 + 1000 x $10, per MTok (genai-prices gpt-4o)
USAGE = Usage(input_tokens=10000, output_tokens=1000)


def test_book_entry_for_the_requested_model_wins_over_the_dated_snapshot() -> None:
    tracker = Tracker(InMemoryLedger(), pricer=Pricer(overrides=BOOK), log="off")
    event = tracker.record("gpt-4o", payload=SNAPSHOT, provider="openai", started_at=AT)
    assert event.cost.total == BOOK_PRICE
    assert event.cost.source == "override: mapping"
    # the names stored stay as they were
    assert (event.model, event.response_model) == ("gpt-4o", "gpt-4o-2024-08-06")


def test_book_entry_for_an_azure_deployment_wins_over_its_base_model() -> None:
    tracker = Tracker(InMemoryLedger(), pricer=Pricer(overrides=BOOK), log="off")
    event = tracker.record("support-bot-prod", payload=SNAPSHOT, provider="azure", started_at=AT)
    assert event.cost.total == BOOK_PRICE
    assert event.cost.provider == "azure"
    assert (event.model, event.response_model) == ("support-bot-prod", "gpt-4o-2024-08-06")
    # The deployment's entry is for Azure only: the same name at OpenAI is not the book's.
    deployment_only = {"support-bot-prod": BOOK["support-bot-prod"]}
    tracker = Tracker(InMemoryLedger(), pricer=Pricer(overrides=deployment_only), log="off")
    other = tracker.record("support-bot-prod", payload=SNAPSHOT, provider="openai", started_at=AT)
    assert other.cost.total == LIST_PRICE


def test_the_order_of_the_rule() -> None:
    snapshot_book = {"gpt-4o-2024-08-06": {"input": "1", "output": "4"}}
    pricer = Pricer(overrides=snapshot_book)
    # 2. the book under the response's name when the requested one has no entry
    cost = pricer.price("gpt-4o-2024-08-06", USAGE, at=AT, requested_model="gpt-4o")
    assert cost.total == Decimal("0.014")
    # 1. an entry for both: the requested one wins
    pricer = Pricer(overrides={**snapshot_book, **BOOK})
    cost = pricer.price("gpt-4o-2024-08-06", USAGE, at=AT, requested_model="gpt-4o")
    assert cost.total == BOOK_PRICE
    # 3. no entry at all: the default sources under the response's name (what ran) ...
    pricer = Pricer()
    cost = pricer.price("gpt-4o-mini", USAGE, at=AT, requested_model="gpt-4o")
    assert cost.total == Decimal("0.0021")  # 10000 x $0.15 + 1000 x $0.60, per MTok
    # ... and a response's model they do not know stays unknown: another model may have
    # answered (a router's fallback), never priced at the requested model's price
    cost = pricer.price("gpt-4o-acme-router-v7", USAGE, at=AT, requested_model="gpt-4o")
    assert (cost.status, cost.total, cost.model) == (
        "unknown_model",
        None,
        "gpt-4o-acme-router-v7",
    )
    # neither known: unknown under the response's name
    cost = pricer.price("acme-brain-7-0901", USAGE, at=AT, requested_model="acme-brain-7")
    assert (cost.status, cost.total, cost.model) == ("unknown_model", None, "acme-brain-7-0901")
    # Without requested_model (or the same name), as before.
    assert pricer.price("gpt-4o-2024-08-06", USAGE, at=AT).total == LIST_PRICE
    cost = pricer.price("gpt-4o", USAGE, at=AT, requested_model="gpt-4o")
    assert cost.total == LIST_PRICE


def test_pricer_reprice_uses_the_requested_model_book_entry() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    event = tracker.record("gpt-4o", payload=SNAPSHOT, provider="openai", started_at=AT)
    assert event.cost.total == LIST_PRICE
    again = Pricer(overrides=BOOK).reprice(event)
    assert again.cost.total == BOOK_PRICE


def test_whatif_and_reprice_use_the_requested_model_book_entry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'book.db'}"
    ledger = Ledger(url)
    try:
        tracker = Tracker(ledger, log="off")
        tracker.record("gpt-4o", payload=SNAPSHOT, provider="openai", started_at=AT, call_id="a")
        unknown = {**SNAPSHOT, "model": "acme-brain-7-0901"}
        tracker.record("acme-brain-7", payload=unknown, started_at=AT, call_id="b")
        ledger.flush()
        result = whatif(ledger, {"gpt-4o": BOOK["gpt-4o"]}, since="2026-11-01", until="2026-12-01")
        (row,) = [r for r in result.rows if r.model == "gpt-4o-2024-08-06"]
        assert (row.cost_then, row.cost_book, row.savings) == (
            LIST_PRICE,
            BOOK_PRICE,
            Decimal("0.007"),
        )
        # an unknown model priced later from a book entry under the name it was asked for
        done = reprice(ledger, {"acme-brain-7": {"input": "1", "output": "2"}}, since="2026-11-01")
        assert (done.repriced, done.still_unknown) == (1, 0)
        assert dict(done.added) == {"USD": Decimal("0.012")}
        stored = ledger.get("b")
        assert stored is not None
        assert stored.total_cost == Decimal("0.012")
    finally:
        ledger.close()


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


def test_litellm_azure_deployment_priced_from_the_book(litellm_module: Any) -> None:
    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    from costledger_litellm import CostLedgerLogger

    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10000, "completion_tokens": 1000, "total_tokens": 11000},
    }
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, pricer=Pricer(overrides=BOOK), log="off")
    litellm_module.callbacks = [CostLedgerLogger(tracker=tracker)]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    client = openai.AzureOpenAI(
        api_key="x",
        api_version="2024-10-21",
        azure_endpoint="https://x.openai.azure.com",
        http_client=httpx.Client(transport=transport),
    )
    litellm_module.completion(
        model="azure/support-bot-prod",
        messages=[{"role": "user", "content": "hi"}],
        client=client,
    )
    deadline = time.monotonic() + 30
    while not list(ledger.events()):
        assert time.monotonic() < deadline, "the logger recorded nothing"
        time.sleep(0.01)
    (stored,) = ledger.events()
    event = stored.to_event()
    assert (event.model, event.response_model, event.provider) == (
        "support-bot-prod",
        "gpt-4o-2024-08-06",
        "azure",
    )
    assert event.cost.total == BOOK_PRICE
    assert event.cost.source == "override: mapping"


def test_ingested_litellm_payload_priced_from_the_requested_model_book_entry(
    tmp_path: Path,
) -> None:
    """``costledger ingest`` of a LiteLLM payload follows the same rule as the live logger."""
    import json

    from costledger import ingest

    payload = {
        "litellm_call_id": "azure-deployment-1",
        "custom_llm_provider": "azure",
        "model": "support-bot-prod",
        "startTime": AT.timestamp(),
        "endTime": AT.timestamp() + 1,
        "status": "success",
        "prompt_tokens": 10000,
        "completion_tokens": 1000,
        "total_tokens": 11000,
        "response": {"id": "chatcmpl-9", "model": "gpt-4o-2024-08-06"},
    }
    path = tmp_path / "litellm.jsonl"
    path.write_text(json.dumps(payload) + "\n")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = ingest(path, ledger=url, pricer=Pricer(overrides=BOOK), checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (1, 0)
    ledger = Ledger(url)
    try:
        (event,) = ledger.events()
    finally:
        ledger.close()
    assert (event.model, event.response_model) == ("support-bot-prod", "gpt-4o-2024-08-06")
    assert event.total_cost == BOOK_PRICE


@pytest.mark.parametrize(
    ("answered", "own_price"),
    [
        ("gpt-4o-mini-2024-07-18", Decimal("0.0021")),  # 10000 x $0.15 + 1000 x $0.60
        ("claude-sonnet-4-5-20250929", Decimal("0.045")),  # 10000 x $3 + 1000 x $15
    ],
)
def test_another_model_that_answered_is_priced_as_itself(answered: str, own_price: Decimal) -> None:
    """A router's or proxy's fallback answered: the requested model's book entry is not its
    price, nor is the requested model's list price when the answer's model is unknown."""
    pricer = Pricer(overrides=BOOK)
    cost = pricer.price(answered, USAGE, at=AT, requested_model="gpt-4o")
    assert cost.total == own_price
    assert cost.model != "gpt-4o"


def test_a_book_entry_covers_the_dated_snapshots_of_its_model() -> None:
    """A negotiated ``claude-sonnet-4`` rate prices ``claude-sonnet-4-20250514``, which the
    default data lists with its own (list) price; an entry for the snapshot itself wins."""
    book = {"claude-sonnet-4": {"input": "2", "output": "10"}}
    cost = Pricer(overrides=book).price("claude-sonnet-4-20250514", USAGE, at=AT)
    assert cost.total == Decimal("0.03")  # 10000 x $2 + 1000 x $10, per MTok
    assert cost.model == "claude-sonnet-4"
    assert cost.source == (
        "override: mapping (dated snapshot 'claude-sonnet-4-20250514' priced as 'claude-sonnet-4')"
    )
    snapshot = {**book, "claude-sonnet-4-20250514": {"input": "1", "output": "5"}}
    cost = Pricer(overrides=snapshot).price("claude-sonnet-4-20250514", USAGE, at=AT)
    assert cost.total == Decimal("0.015")
    # without a book: the default data's own price for the snapshot
    assert Pricer().price("claude-sonnet-4-20250514", USAGE, at=AT).total == Decimal("0.045")
