"""``attribute(...)`` with a name that is not a string (a numeric, UUID or enum id from the
app's database): every entry point records it as its text, as ``attribution={"user": 42}``,
``Tracker(user=42)`` and LiteLLM's ``metadata`` already did."""

from __future__ import annotations

import enum
import os
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

import costledger
from costledger import Tracker, Usage, attribute, track_cost
from costledger._guards import Budget
from costledger._ledger import InMemoryLedger
from costledger._pricing import Pricer
from costledger._redact import redact_text

# 1,000 input tokens of "m" cost exactly one cent.
PRICES = {"m": {"input": "10", "output": "20"}}
TEAM = uuid.UUID("12345678-1234-5678-1234-567812345678")


class Project(enum.Enum):
    APOLLO = 3


def _tracker(*guards: Any) -> Tracker:
    return Tracker(
        InMemoryLedger(), Pricer(PRICES, genai_prices=False, litellm=False), guards, log="off"
    )


def _rows(tracker: Tracker) -> list[tuple[Any, ...]]:
    costledger.drain_deferred(10.0)
    tracker.ledger.flush()
    return [
        (e.source, e.user, e.team, e.project, e.feature, tuple(e.tags), e.total_cost)
        for e in tracker.ledger.events()
    ]


def test_record_and_decorator_store_non_string_names_as_text() -> None:
    tracker = _tracker()

    @track_cost(tracker=tracker, model="m")
    def ask() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}

    with attribute(user=42, team=TEAM, project=Project.APOLLO, feature=7, tags=[1, "b"]):
        event = tracker.record("m", Usage(input_tokens=1000))
        assert ask() == {"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}

    assert event is not None
    assert (event.user, event.team, event.project, event.feature) == (
        "42",
        "12345678-1234-5678-1234-567812345678",
        "Project.APOLLO",
        "7",
    )
    row = (
        "42",
        "12345678-1234-5678-1234-567812345678",
        "Project.APOLLO",
        "7",
        ("1", "b"),
        Decimal("0.01"),
    )
    assert sorted(_rows(tracker)) == [("api", *row), ("decorator", *row)]


def test_per_user_budget_keys_a_numeric_user_as_its_text() -> None:
    # Before the fix the key could not be read (an int has no len()), the budget failed
    # closed and refused every call.
    budget = Budget("1 USD", "day", per="user")
    tracker = _tracker(budget)

    @track_cost(tracker=tracker, model="m")
    def ask() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}

    with attribute(user=42):
        ask()
    with attribute(user="42"):  # the same user, the same allowance
        ask()
    with attribute(user=43):
        ask()
    assert sorted(r[1] for r in _rows(tracker)) == ["42", "42", "43"]
    spent = {s.key: s.spent for s in costledger.budget_status(tracker)}
    assert spent == {"42": Decimal("0.02"), "43": Decimal("0.01")}


def test_redact_text_takes_any_value_as_its_text() -> None:
    assert redact_text(42) == "42"
    assert redact_text(TEAM) == "12345678-1234-5678-1234-567812345678"
    assert redact_text(["sk-" + "a" * 20]) == "['[REDACTED]']"


def test_litellm_call_inside_a_numeric_user_scope_is_recorded() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before LiteLLM's import
    litellm = pytest.importorskip("litellm")
    logger_module = pytest.importorskip("costledger_litellm")
    from costledger.testing import capture_costs

    saved = list(litellm.callbacks)
    litellm.telemetry = False
    litellm.callbacks = [logger_module.CostLedgerLogger()]
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    try:
        with capture_costs() as costs:
            with attribute(user=42, feature=Project.APOLLO):
                litellm.completion(model="gpt-4o-mini", messages=messages, mock_response="4")
            deadline = time.monotonic() + 15
            while len(costs.events) < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
                costledger.drain_deferred(10.0)
    finally:
        litellm.callbacks = saved
    [event] = costs.events
    assert (event.source, event.model, event.user, event.feature) == (
        "litellm",
        "gpt-4o-mini",
        "42",
        "Project.APOLLO",
    )
    # LiteLLM's mock usage: prompt and completion tokens at $0.15 / $0.60 per million
    # LiteLLM's mock usage, 10 in and 20 out, at $0.15 / $0.60 per million
    assert (event.usage.input_tokens, event.usage.output_tokens) == (10, 20)
    assert event.cost.total == Decimal("0.0000135")
