"""``costledger.testing.capture_costs`` removes its sink when its block ends, and gives the
process default Tracker back however blocks in several threads end."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from costledger import Tracker, _tracker, configure, get_tracker, track_cost
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


def _two_threads(first_out: str) -> tuple[Tracker, Tracker, Tracker]:
    """Block A begins, then block B in another thread; ``first_out`` ends first. Returns
    the default in force while both were open, after the first ended, and after both."""
    a_in, b_in, first_done = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Tracker] = {}

    def block(name: str, wait_for: threading.Event | None, opened: threading.Event) -> None:
        if wait_for is not None:
            assert wait_for.wait(10)
        with capture_costs():
            opened.set()
            if name == first_out:
                assert b_in.wait(10)  # both are open
                seen["both"] = get_tracker()
            else:
                assert first_done.wait(10)
                seen["one"] = get_tracker()
        if name == first_out:
            first_done.set()

    threads = [
        threading.Thread(target=block, args=("A", None, a_in)),
        threading.Thread(target=block, args=("B", a_in, b_in)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return seen["both"], seen["one"], get_tracker()


def test_blocks_in_two_threads_ending_out_of_order_restore_the_default() -> None:
    before = get_tracker()
    both, one, after = _two_threads(first_out="A")  # A began first, and ends first
    assert isinstance(both.ledger, InMemoryLedger)
    assert one is both  # B's block, still open, keeps its in-memory tracker
    assert after is before
    with capture_costs() as captured:
        pass
    assert get_tracker() is before
    assert captured.events == []


def test_blocks_in_two_threads_ending_in_order_restore_the_default() -> None:
    before = get_tracker()
    both, one, after = _two_threads(first_out="B")
    assert isinstance(both.ledger, InMemoryLedger)
    assert isinstance(one.ledger, InMemoryLedger)
    assert one is not both  # B ended: A's tracker is the default again
    assert after is before


def test_a_default_configured_inside_a_block_stays() -> None:
    before = get_tracker()
    mine = Tracker(InMemoryLedger(), log="off")
    try:
        with capture_costs():
            configure(mine)
        assert get_tracker() is mine
    finally:
        configure(before)
