"""A budget's refusal the tracker may still take back (earlier calls' settles are queued:
``Call.tentative``) sends no "exceeded" alert and keeps the once-per-period mark for the
real one. A sequential loop near its limit got a false "exceeded" alert (spent 0, reserved
one worst case), and the real exceed later none."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

import costledger
from costledger import Budget, BudgetExceeded, Tracker, flush_alerts, track_cost
from costledger.testing import InMemoryLedger

# gpt-4o-mini: 1000 x $0.15 + 500 x $0.60 per million tokens
COST = Decimal("0.00045")


@pytest.mark.parametrize("store", ["memory://", "redis"])
def test_a_loop_near_its_limit_alerts_only_when_really_refused(
    store: str, request: pytest.FixtureRequest
) -> None:
    if store == "redis":
        store = f"{request.getfixturevalue('redis_url')}?prefix=cltest:{uuid.uuid4().hex[:10]}"
    alerts: list[Any] = []
    budget = Budget("0.02 USD", "day", name=f"tentative-{store}")
    budget.on_alert(alerts.append)
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=store, log="off")

    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    def ask() -> dict[str, Any]:  # a worst case of about $0.0101: half the budget
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    for _ in range(10):
        ask()
    assert costledger.drain_deferred(10)
    flush_alerts(10)
    assert [a.kind for a in alerts] == []
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (10 * COST, Decimal(0))

    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker, estimate="0.05")
    def too_dear() -> dict[str, Any]:
        raise AssertionError("refused before it runs")

    for _ in range(2):
        with pytest.raises(BudgetExceeded):
            too_dear()
    flush_alerts(10)
    assert [(a.kind, a.spent) for a in alerts] == [("exceeded", 10 * COST)]
