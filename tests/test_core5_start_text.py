"""Values the host passes in another type than text, before the event's own check: the
guards key their counters by model and provider at the start, the source must never be
None, ``configure(tracker=t)`` installs ``t``, and a numpy float is exact money."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import pytest

import costledger
from costledger import Budget, RateLimit, Tracker, track_cost
from costledger.testing import InMemoryLedger


class Model(enum.Enum):
    MINI = "gpt-4o-mini"


@pytest.mark.parametrize("model", [Model.MINI, b"gpt-4o-mini"])
def test_per_model_guards_take_an_enum_or_bytes_model(model: Any) -> None:
    budget = Budget("1 USD", "day", per="model", name=f"per-model-{type(model).__name__}")
    limit = RateLimit("100/minute", per="model", name=f"rl-{type(model).__name__}")
    tracker = Tracker(InMemoryLedger(), guards=[budget, limit], guard_store="memory://", log="off")

    @track_cost(model=model, provider="openai", tracker=tracker)
    def ask() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    ask()  # raised BudgetCheckFailed (TypeError: object of type 'Model' has no len())
    assert costledger.drain_deferred(10)
    [status] = budget.status(tracker)
    assert (status.key, status.spent) == ("gpt-4o-mini", Decimal("0.00021"))
    [event] = tracker.ledger.events()
    assert event.model == "gpt-4o-mini"


def test_a_none_source_is_recorded_as_api() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    event = tracker.record(
        "gpt-4o-mini", {"prompt_tokens": 10, "completion_tokens": 5}, source=None
    )  # type: ignore[arg-type]
    assert event.source == "api"
    [stored] = tracker.ledger.events()  # the ledger refused it (NOT NULL)
    assert (stored.source, stored.total_cost) == ("api", Decimal("0.0000045"))


def test_configure_tracker_keyword_installs_that_tracker() -> None:
    previous = costledger.get_tracker()
    mine = Tracker(InMemoryLedger(), log="off")
    try:
        assert costledger.configure(tracker=mine) is mine
        assert costledger.get_tracker() is mine
        with pytest.raises(TypeError, match="not both: got a Tracker and ledger, user"):
            costledger.configure(mine, ledger=InMemoryLedger(), user="u1")
        assert costledger.get_tracker() is mine
    finally:
        costledger.configure(previous)


def test_a_numpy_float_reported_cost_is_exact() -> None:
    numpy = pytest.importorskip("numpy")
    tracker = Tracker(InMemoryLedger(), log="off")
    event = tracker.record(
        "gpt-4o-mini",
        {"prompt_tokens": 10, "completion_tokens": 20},
        reported_cost=numpy.float64(1.35e-05),
    )
    assert event.reported_cost == Decimal("0.0000135")
