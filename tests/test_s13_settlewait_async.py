"""``Tracker.astart``: a refused call waits for the settle of the call holding the
guard, not for the background queue, and the event loop runs on meanwhile.

It used to await the whole queue (in a thread) before every reservation whenever some
call's settle was queued. The worker is stopped here (a ``threading.Event.wait`` queued
with ``defer``), with ``_SETTLE_WAIT`` raised to 60 s: a call that waited for the queue
would not finish within 30 s.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import pytest

import costledger._tracker as tracker_module
from costledger import Budget, Tracker, track_cost
from costledger._tracker import defer, drain_deferred
from costledger.testing import InMemoryLedger

# gpt-4o-mini: 1000 x $0.15 + 500 x $0.60 per million tokens
COST = Decimal("0.00045")
RESPONSE = {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}


@pytest.fixture(autouse=True)
def long_settle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "_SETTLE_WAIT", 60.0)


def _near_limit(name: str) -> tuple[Tracker, Budget]:
    # no output limit given: the model's (16,384 tokens), a worst case of about 0.0101
    # USD, half the budget
    budget = Budget("0.02 USD", "day", name=name)
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store="memory://", log="off")
    return tracker, budget


async def test_a_refused_call_awaits_the_holding_settle_while_the_loop_runs_on() -> None:
    tracker, budget = _near_limit("async-near-limit")

    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    async def ask() -> dict[str, Any]:
        return RESPONSE

    await ask()
    assert await asyncio.to_thread(drain_deferred, 10)
    first, later = threading.Event(), threading.Event()
    try:
        defer(first.wait, 60)
        await ask()  # its settle is queued behind ``first``: its worst case stays held
        defer(later.wait, 60)  # more work queued after it, which stays stuck
        refused = asyncio.create_task(ask())
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.005)
            ticks += 1
        # refused by the held worst case, it waits, and the loop ran the ticks meanwhile
        assert (ticks, refused.done()) == (20, False)
        first.set()
        assert await asyncio.wait_for(refused, 30) == RESPONSE
        assert not later.is_set()  # the worker is still stuck: the queue was not waited for
    finally:
        first.set()
        later.set()
    assert await asyncio.to_thread(drain_deferred, 30)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (3 * COST, Decimal(0))


async def test_a_call_cancelled_while_it_waits_holds_nothing() -> None:
    tracker, budget = _near_limit("async-cancelled-wait")

    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    async def ask() -> dict[str, Any]:
        return RESPONSE

    await ask()
    assert await asyncio.to_thread(drain_deferred, 10)
    stop = threading.Event()
    try:
        defer(stop.wait, 60)
        await ask()
        refused = asyncio.create_task(ask())
        for _ in range(10):
            await asyncio.sleep(0.005)
        assert not refused.done()
        refused.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(refused, 30)
        assert not stop.is_set()
    finally:
        stop.set()
    assert await asyncio.to_thread(drain_deferred, 30)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (2 * COST, Decimal(0))
    assert not tracker._unsettled
