"""Ingest records a call with no amount (a LiteLLM cache hit, a failed call) in its model's
currency, as the live Tracker does: under a price book in EUR they were USD rows."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

from costledger import Pricer
from costledger._ingest import ingest
from costledger.testing import InMemoryLedger

BOOK = {"eur-model": {"input": "1.00", "output": "2.00", "currency": "EUR"}}


def _payload(i: int, **changes: object) -> dict[str, object]:
    now = time.time()
    payload: dict[str, object] = {
        "id": f"call-{i}",
        "call_type": "completion",
        "model": "eur-model",
        "custom_llm_provider": "openai",
        "startTime": now,
        "endTime": now + 1,
        "status": "success",
        "response": {"usage": {"prompt_tokens": 10, "completion_tokens": 5}},
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "metadata": {},
        "cache_hit": False,
    }
    payload.update(changes)
    return payload


def test_cache_hits_and_failed_calls_are_in_the_models_currency(tmp_path: Path) -> None:
    path = tmp_path / "litellm.jsonl"
    failed = _payload(3, status="failure", response=None, error_str="boom")
    failed.update(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    lines = [_payload(1), _payload(2, cache_hit=True), failed]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ledger = InMemoryLedger()
    ingest(path, ledger=ledger, pricer=Pricer(overrides=BOOK), resume=False)
    rows = sorted(  # a failed attempt's id is the call's with ":failed:<its start>"
        (e.id.split(":")[0], e.status, e.pricing_status, e.currency, e.total_cost)
        for e in ledger.events()
    )
    assert rows == [
        ("call-1", "ok", "priced", "EUR", Decimal("0.00002")),
        ("call-2", "ok", "priced", "EUR", Decimal(0)),
        ("call-3", "error", "not_priced", "EUR", None),
    ]
    assert [(r.currency, r.requests) for r in ledger.summary()] == [("EUR", 3)]


def test_pricer_currency_of() -> None:
    pricer = Pricer(overrides=BOOK, genai_prices=False, litellm=False)
    assert pricer.currency_of("eur-model") == "EUR"
    assert pricer.currency_of("no-such-model") == "USD"
    assert pricer.currency_of(None) == "USD"
