"""A budget's seed never blocks the event loop of an async entry point.

The first reservation of a counter (a period's first, a new key's, the first after a start)
seeds it from the ledger, and a ledger read waits for every call queued on costledger's
background worker (and for the ledger's writer). On ``memory://`` (the default store)
``Budget.areserve`` ran that reservation inline: the whole event loop waited. It now runs
it in a worker thread; later reservations stay inline.

Each test holds the background worker on an event (``defer(release.wait)``), so the seed
cannot finish before the test lets it: while ``Tracker.astart`` waits, the loop must keep
running (the test's own coroutine gets to release the worker). Real SQLite ledger, real
tracker and store; amounts exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Tracker, Usage
from costledger._guards import Budget, budget_status
from costledger._guards._memory import MemoryStore
from costledger._ledger import Ledger
from costledger._pricing import Pricer
from costledger._tracker import defer, drain_deferred

PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
CENT = Decimal("0.01")
KW: dict[str, Any] = {"source": "api", "model": "m", "estimate": CENT}
DAY = 86_400.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    # exit_timeout: how long a ledger read waits for the worker (an unfixed run fails
    # after it, rather than hanging)
    led = Ledger(f"sqlite:///{tmp_path}/ledger.db", spool_dir=tmp_path / "spool", exit_timeout=5)
    yield led
    drain_deferred(30)
    led.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set it to let the background worker go on; always set at the end of the test."""
    event = threading.Event()
    yield event
    event.set()
    drain_deferred(30)


def pricer() -> Pricer:
    return Pricer(PRICES, genai_prices=False, litellm=False)


def spend(tracker: Tracker, call: Any) -> None:
    tracker.finish(call, usage=Usage(input_tokens=1000), defer=True)


async def start_while_worker_held(tracker: Tracker, release: threading.Event) -> Any:
    """``tracker.astart`` while the worker is held: the loop must run meanwhile (this
    coroutine's own steps), and the start must still be waiting for the worker; then the
    worker is let go and the start completes."""
    task = asyncio.ensure_future(tracker.astart(**KW))
    steps = 0
    for _ in range(5):
        await asyncio.sleep(0.01)
        if not task.done():
            steps += 1
    waiting = not task.done()
    release.set()
    call = await asyncio.wait_for(task, 60)
    assert (steps, waiting) == (5, True), (
        "Tracker.astart blocked the event loop while the budget's seed waited for the"
        f" background worker (loop steps while it waited: {steps} of 5)"
    )
    return call


def test_a_new_period_seeds_off_the_loop_and_counts_each_call_once(
    ledger: Ledger, release: threading.Event
) -> None:
    now = [time.time() // DAY * DAY + 3600.0]  # 01:00 UTC today
    budget = Budget("1 USD", "day", clock=lambda: now[0])
    tracker = Tracker(ledger, pricer(), [budget], guard_store=MemoryStore(), log="off")

    async def main() -> None:
        first = [await tracker.astart(**KW) for _ in range(3)]
        for call in first:
            spend(tracker, call)
        defer(release.wait, 60)  # the worker is held...
        later = [await tracker.astart(**KW) for _ in range(2)]
        for call in later:
            spend(tracker, call)  # ...with these two queued behind it
        now[0] += DAY  # the next day: its first reservation seeds its counter
        call = await start_while_worker_held(tracker, release)
        spend(tracker, call)
        # reservations of a seeded counter: inline, as before
        again = await tracker.astart(**KW)
        spend(tracker, again)

    asyncio.run(main())
    drain_deferred(30)
    today = budget_status(tracker)
    assert [(s.spent, s.reserved, s.remaining) for s in today] == [
        (Decimal("0.02"), Decimal(0), Decimal("0.98"))
    ]
    yesterday = budget.status(tracker, now=now[0] - DAY)
    assert [(s.spent, s.reserved) for s in yesterday] == [(Decimal("0.05"), Decimal(0))]


def test_a_seed_off_the_loop_counts_calls_still_queued_once(
    ledger: Ledger, release: threading.Event
) -> None:
    """Calls finished (deferred) by another tracker on the same ledger, still queued on the
    worker when a budget is first used: its seed, in a worker thread, waits for them and
    counts each once; the call it reserves for counts when it settles."""
    plain = Tracker(ledger, pricer(), log="off")
    budget = Budget("1 USD", "lifetime")
    guarded = Tracker(ledger, pricer(), [budget], guard_store=MemoryStore(), log="off")

    async def main() -> None:
        defer(release.wait, 60)
        for _ in range(3):
            spend(plain, plain.start(**KW))  # queued behind the held worker
        call = await start_while_worker_held(guarded, release)
        spend(guarded, call)

    asyncio.run(main())
    drain_deferred(30)
    assert [(s.spent, s.reserved) for s in budget_status(guarded)] == [
        (Decimal("0.04"), Decimal(0))
    ]
    assert [(r.requests, r.cost) for r in ledger.summary(by=[])] == [(4, Decimal("0.04"))]


class Broken:
    """An estimator that fails: a soft budget then fails open, counting the call's spend
    (its counter is seeded first)."""

    def estimate(self, call: Any, tracker: Any) -> Any:
        raise RuntimeError("estimator broke")


def test_a_budget_failing_open_seeds_off_the_loop(ledger: Ledger, release: threading.Event) -> None:
    budget = Budget("1 USD", "lifetime", hard=False, estimator=Broken())
    tracker = Tracker(ledger, pricer(), [budget], guard_store=MemoryStore(), log="off")
    kw = {**KW, "estimate": None}

    async def main() -> None:
        defer(release.wait, 60)
        task = asyncio.ensure_future(tracker.astart(**kw))
        steps = 0
        for _ in range(5):
            await asyncio.sleep(0.01)
            steps += not task.done()
        waiting = not task.done()
        release.set()
        call = await asyncio.wait_for(task, 60)
        assert (steps, waiting) == (5, True)
        spend(tracker, call)
        spend(tracker, await tracker.astart(**kw))  # seeded: inline

    asyncio.run(main())
    drain_deferred(30)
    assert [(s.spent, s.reserved) for s in budget_status(tracker)] == [
        (Decimal("0.02"), Decimal(0))
    ]


class Counting:
    """The default estimate, noting the thread of each."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def estimate(self, call: Any, tracker: Any) -> Any:
        from costledger._guards._estimate import DEFAULT_ESTIMATOR

        self.threads.append(threading.get_ident())
        return DEFAULT_ESTIMATOR.estimate(call, tracker)


def test_the_estimate_is_made_once_on_the_loop_when_the_seed_leaves_it(
    ledger: Ledger, release: threading.Event
) -> None:
    estimator = Counting()
    budget = Budget("1 USD", "lifetime", estimator=estimator)
    tracker = Tracker(ledger, pricer(), [budget], guard_store=MemoryStore(), log="off")
    kw = {"source": "api", "model": "m", "prompt_text": "hi", "max_output_tokens": 10}
    loop_thread = threading.get_ident()

    async def main() -> None:
        defer(release.wait, 60)
        task = asyncio.ensure_future(tracker.astart(**kw))
        steps = 0
        for _ in range(5):
            await asyncio.sleep(0.01)
            steps += not task.done()
        release.set()
        call = await asyncio.wait_for(task, 60)
        assert steps == 5
        tracker.finish(call, usage=Usage(input_tokens=1000))

    asyncio.run(main())
    assert estimator.threads == [loop_thread]
    assert [(s.spent, s.reserved) for s in budget_status(tracker)] == [(CENT, Decimal(0))]


def test_a_start_cancelled_while_its_seed_waits_gives_its_reservation_back(
    ledger: Ledger, release: threading.Event
) -> None:
    budget = Budget("1 USD", "lifetime")
    tracker = Tracker(ledger, pricer(), [budget], guard_store=MemoryStore(), log="off")

    async def main() -> None:
        defer(release.wait, 60)
        task = asyncio.ensure_future(tracker.astart(**KW))
        for _ in range(3):
            await asyncio.sleep(0.01)
        assert not task.done()  # its seed waits for the held worker, off the loop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(main())
    drain_deferred(30)
    # the reservation, made once the seed could read the ledger, was given back
    deadline = time.monotonic() + 30
    while budget_status(tracker)[0].reserved and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(s.spent, s.reserved) for s in budget_status(tracker)] == [(Decimal(0), Decimal(0))]
    spend(tracker, tracker.start(**KW))
    drain_deferred(30)
    assert [(s.spent, s.reserved) for s in budget_status(tracker)] == [(CENT, Decimal(0))]
