"""Run metadata with a key that is not a string (``{1: "a"}``; LangChain passes metadata
through as given) is still a tracked call: it used to make the handler's attribution
reading raise before the call started, so the call was neither recorded nor guarded (an
exhausted budget let it through). Real LangChain runtime, real Tracker and budget."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain_fakes import UsageChatModel, expected_cost

from costledger import Budget, BudgetExceeded, Tracker, drain_deferred
from costledger.testing import InMemoryLedger, MemoryStore
from costledger_langchain import CostLedgerCallbackHandler


@pytest.mark.parametrize(
    "metadata",
    [{1: "a"}, {"user": "u-1", 2: "b"}, {"costledger_team": "t", (3, 4): "c"}],
)
def test_a_metadata_key_that_is_not_text_is_left_out(metadata: dict[Any, str]) -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    config: Any = {
        "callbacks": [CostLedgerCallbackHandler(tracker)],
        "tags": ["checkout"],
        "metadata": metadata,
    }
    UsageChatModel().invoke("hi", config=config)
    drain_deferred()
    [event] = tracker.ledger.events()  # type: ignore[attr-defined]
    assert (event.status, event.total_cost, event.tags) == (
        "ok",
        expected_cost(1000, 200),
        ["checkout"],
    )
    assert event.user == metadata.get("user")
    assert event.team == metadata.get("costledger_team")


def test_a_metadata_key_that_is_not_text_does_not_skip_the_budget() -> None:
    budget = Budget("0.0001 USD", "day", name="odd-keys")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    model = UsageChatModel(max_tokens=4000)
    config: Any = {
        "callbacks": [CostLedgerCallbackHandler(tracker)],
        "metadata": {"user": "u", 2: "b"},
    }
    with pytest.raises(BudgetExceeded):
        model.invoke("hi", config=config)
    assert model.calls == 0
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (Decimal(0), Decimal(0))
