"""A guarded call waits for earlier calls' settles before its guards reserve.

Entry points finish calls on the background worker, so right after a call returns its
worst-case reservation may still be held. A sequential loop near a budget's limit was
refused by its own previous call (spent 0 + reserved 0.0101304 + this call's estimate >
0.02) although nothing was in flight."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import costledger
from costledger import Budget, Tracker, track_cost
from costledger.testing import InMemoryLedger

# gpt-4o-mini: 1000 x $0.15 + 500 x $0.60 per million tokens
COST = Decimal("0.00045")


def _tracker() -> tuple[Tracker, Budget]:
    budget = Budget("0.02 USD", "day", name="tight-loop")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store="memory://", log="off")
    return tracker, budget


def test_a_sequential_loop_near_the_limit_is_not_refused_by_its_previous_call() -> None:
    tracker, budget = _tracker()

    # no output limit given: the model's (16,384 tokens), a worst case of about 0.0101 USD,
    # half the budget
    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    def ask() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    for _ in range(10):
        ask()  # raised BudgetExceeded from the second call on
    assert costledger.drain_deferred(10)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (10 * COST, Decimal(0))


def test_the_async_loop_too() -> None:
    tracker, budget = _tracker()

    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    async def ask() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    async def main() -> None:
        for _ in range(10):
            await ask()

    asyncio.run(main())
    assert costledger.drain_deferred(10)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (10 * COST, Decimal(0))
