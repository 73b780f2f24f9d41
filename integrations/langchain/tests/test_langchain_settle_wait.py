"""A LangChain call's guards wait for the previous calls' settles (queued on costledger's
background worker) before they reserve: a sequential loop near a budget's limit is not
refused by its own previous call's worst-case hold."""

from __future__ import annotations

from decimal import Decimal

from langchain_fakes import UsageChatModel, expected_cost

import costledger
from costledger import Budget, Tracker
from costledger.testing import InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler


def test_a_sequential_loop_near_the_limit_is_not_refused_by_its_previous_call() -> None:
    budget = Budget("0.004 USD", "day", name="lc-tight-loop")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store="memory://", log="off")
    # max_tokens 4000: a worst case of about 0.0026 USD, over half the budget
    model = UsageChatModel(max_tokens=4000, callbacks=[CostLedgerCallbackHandler(tracker)])
    for _ in range(5):
        model.invoke("hi")  # raised BudgetExceeded from the second call on
    assert costledger.drain_deferred(10)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (5 * expected_cost(1000, 200), Decimal(0))


def test_bytes_tags_in_metadata_are_read_as_the_core_reads_them() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    model = UsageChatModel(callbacks=[CostLedgerCallbackHandler(tracker)])
    model.invoke("hi", config={"metadata": {"costledger_tags": b"vip"}})
    model.invoke("hi", config={"metadata": {"costledger_tags": [b"vip", "beta"]}})
    assert costledger.drain_deferred(10)
    assert [list(e.tags) for e in tracker.ledger.events()] == [["vip"], ["vip", "beta"]]
