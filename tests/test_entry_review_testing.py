"""``costledger.testing.capture_costs`` removes its sink when its block ends."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costledger import Tracker, _tracker, track_cost
from costledger.testing import InMemoryLedger, capture_costs

TRACKER = Tracker(InMemoryLedger(), log="off")
COST = Decimal("0.0000135")  # gpt-4o-mini: 10 in at $0.15/MTok, 20 out at $0.60/MTok


@track_cost(model="gpt-4o-mini", tracker=TRACKER)
def ask() -> dict[str, Any]:
    return {"usage": {"prompt_tokens": 10, "completion_tokens": 20}}


def test_calls_after_the_block_are_not_captured() -> None:
    sinks_before = len(_tracker._sinks)
    with capture_costs() as first:
        ask()
    assert len(_tracker._sinks) == sinks_before
    for _ in range(3):
        ask()
    assert len(first.events) == 1
    assert first.total == COST


def test_nested_blocks_each_see_their_own_calls() -> None:
    sinks_before = len(_tracker._sinks)
    with capture_costs() as outer:
        ask()
        with capture_costs(isolate=False) as inner:
            ask()
            assert len(_tracker._sinks) == sinks_before + 2
        assert len(_tracker._sinks) == sinks_before + 1
        ask()
    ask()
    assert len(_tracker._sinks) == sinks_before
    assert len(inner.events) == 1
    assert inner.total == COST
    assert len(outer.events) == 3
    assert outer.total == 3 * COST


def test_empty_blocks_leave_no_sink() -> None:
    sinks_before = len(_tracker._sinks)
    for _ in range(50):
        with capture_costs():
            pass
    assert len(_tracker._sinks) == sinks_before
