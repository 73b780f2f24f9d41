"""A request rate limit counts a call as it admits it and cannot give it back. The
tracker asks it after the guards that can give theirs back, and at a second asking (after
a refusal earlier calls' settles might lift) keeps what it admitted instead of asking it
again: a call another guard refuses is never counted by it, nor one call twice.

Before, with ``[RateLimit("6/minute"), Budget(...)]`` a loop of calls near the budget was
rate limited after 3 calls (each retried call counted twice), and calls a per-user budget
refused used up the rate limit of everyone else."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costledger import Budget, BudgetExceeded, RateLimit, RateLimited, Tracker, Usage
from costledger.testing import InMemoryLedger, MemoryStore

# gpt-4o-mini: $0.15 input, $0.60 output per MTok; 10,000 + 5,833 tokens is $0.0049998
USAGE = Usage(input_tokens=10_000, output_tokens=5_833)
COST = Decimal("0.0049998")


def _tracker(*guards: object) -> Tracker:
    return Tracker(InMemoryLedger(), guards=list(guards), guard_store=MemoryStore(), log="off")


def test_a_retried_call_is_counted_once_by_a_rate_limit() -> None:
    # each call reserves $0.03 and spends $0.005: a call while the previous one's settle
    # is still queued is refused tentatively (its $0.03 held), waits for that settle, and
    # is asked again
    budget = Budget("0.06 USD", "day", name="retry-once")
    tracker = _tracker(RateLimit("6/minute", name="six"), budget)
    for _ in range(6):
        call = tracker.start(source="test", model="gpt-4o-mini", estimate=Decimal("0.03"))
        tracker.finish(call, usage=USAGE, defer=True)
    with pytest.raises(RateLimited):
        tracker.start(source="test", model="gpt-4o-mini", estimate=Decimal("0.03"))
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (6 * COST, Decimal(0))


def test_calls_refused_by_a_budget_are_not_counted_by_the_rate_limit() -> None:
    tracker = _tracker(
        RateLimit("5/minute", name="five"), Budget("0.01 USD", "day", per="user", name="u")
    )
    for _ in range(5):
        with pytest.raises(BudgetExceeded):
            tracker.start(
                source="test",
                model="gpt-4o-mini",
                estimate=Decimal("0.02"),
                attribution={"user": "a"},
            )
    # no request of user a reached the provider: user b still has the whole rate limit
    for _ in range(5):
        call = tracker.start(
            source="test", model="gpt-4o-mini", estimate=Decimal("0.001"), attribution={"user": "b"}
        )
        tracker.finish(call, usage=Usage(input_tokens=100, output_tokens=10))
    with pytest.raises(RateLimited):
        tracker.start(
            source="test", model="gpt-4o-mini", estimate=Decimal("0.001"), attribution={"user": "b"}
        )


def test_the_guards_attribute_keeps_the_order_given() -> None:
    limit, budget = RateLimit("5/minute", name="five"), Budget("1 USD", "day", name="b")
    assert _tracker(limit, budget).guards == (limit, budget)
