"""A durable ledger keeps a deferred finish's guard-store I/O off the caller's thread.

``Ledger(durable=True)`` needs each call's event in its spool before the call returns to
the host, so a deferred finish (every ``@track_cost`` call) prices the call and appends
its event there on the caller's thread. Everything else (the guards' settle: network I/O
for a Redis or SQL store; sinks, the log line, observers) stays on costledger's
background worker, as for any other ledger: an async call's settle never runs on the
event loop.

Real components only: a real Redis guard store, a real durable SQLite ledger, the real
decorator. The guard recording where it settled is a tiny Guard of the test's own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import costledger
from costledger import Budget, Ledger, Tracker, Usage, UsageEvent, track_cost
from costledger._guards._redis import RedisStore
from costledger._tracker import Call, add_sink, defer, remove_sink

WORKER = "costledger-deferred"
# gpt-4o-mini: $0.15 / $0.60 per million input / output tokens
IN_PRICE, OUT_PRICE = Decimal("0.15") / 10**6, Decimal("0.6") / 10**6


class WhereGuard:
    """A guard (the Guard protocol, nothing reserved) noting the thread of each settle."""

    name = "where"

    def __init__(self) -> None:
        self.settled: list[tuple[str, str, Decimal | None]] = []
        self.released: list[str] = []

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.settled.append((threading.current_thread().name, token, event.total_cost))

    def release(self, token: Any) -> None:
        self.released.append(threading.current_thread().name)


class WhereRedis(RedisStore):
    """The real Redis store, noting the thread each settle (a round trip) runs on."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settle_threads: list[str] = []

    def settle(self, counter: str, **kwargs: Any) -> Any:
        self.settle_threads.append(threading.current_thread().name)
        return super().settle(counter, **kwargs)


def _spooled(spool: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for segment in sorted(spool.glob("[0-9]*.jsonl")):
        lines.extend(json.loads(line) for line in segment.read_bytes().splitlines() if line)
    return lines


class HeldWorker:
    """Holds costledger's background worker until ``let_go``: whatever a finish deferred
    is still waiting when the call returns, so the test sees what ran on the caller."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.gate = threading.Event()
        defer(self._hold)
        assert self.running.wait(10), "the background worker never took the hold"

    def _hold(self) -> None:
        self.running.set()
        self.gate.wait(30)

    def let_go(self) -> None:
        self.gate.set()


@pytest.fixture
def store_url(redis_url: str) -> str:
    return f"{redis_url}?prefix=cl:core4:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[tuple[Ledger, Path]]:
    spool = tmp_path / "spool"
    # flush_interval 60 s: the writer leaves the spool alone while the test reads it
    ledger = Ledger(
        f"sqlite:///{tmp_path / 'ledger.db'}", durable=True, spool_dir=spool, flush_interval=60
    )
    try:
        yield ledger, spool
    finally:
        costledger.drain_deferred(10)
        ledger.close()


def test_async_call_on_durable_ledger_settles_redis_guards_on_the_worker(
    durable: tuple[Ledger, Path], store_url: str
) -> None:
    ledger, spool = durable
    where = WhereGuard()
    store = WhereRedis(store_url)
    budget = Budget("5 USD", "day", name=f"core4-{uuid.uuid4().hex[:8]}")
    tracker = Tracker(ledger, guards=[budget, where], guard_store=store, log="off")
    seen: dict[str, Any] = {}

    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    async def ask(i: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 100 + i, "completion_tokens": 20}}

    async def main() -> None:
        seen["loop"] = threading.current_thread().name
        # the first call seeds the budget's counter from the ledger, whose read waits for
        # the background worker: made before the worker is held
        await ask(0)
        assert costledger.drain_deferred(10)
        held = HeldWorker()
        try:
            await ask(1)
            # returned: the event is in the durable spool, its settle not run yet
            seen["spooled"] = [(r["source"], Decimal(r["total_cost"])) for r in _spooled(spool)]
            seen["settled"] = [thread for thread, _, _ in where.settled]
            seen["store_settled"] = list(store.settle_threads)
            seen["reserved"] = budget.status(tracker)[0].reserved
        finally:
            held.let_go()

    asyncio.run(main())
    assert costledger.drain_deferred(10)

    first = 100 * IN_PRICE + 20 * OUT_PRICE
    second = 101 * IN_PRICE + 20 * OUT_PRICE
    assert (first, second) == (Decimal("0.0000270"), Decimal("0.00002715"))
    assert seen["loop"] == "MainThread"
    assert seen["spooled"] == [("decorator", first), ("decorator", second)]
    assert seen["settled"] == seen["store_settled"] == [WORKER]  # the first call's only
    assert store.settle_threads == [WORKER, WORKER]  # never the event loop's thread
    assert seen["reserved"] > 0  # the second call's hold, given back by its settle
    assert [(thread, cost) for thread, _, cost in where.settled] == [
        (WORKER, first),
        (WORKER, second),
    ]
    assert where.released == []
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (Decimal("0.00005415"), Decimal(0))
    assert status.remaining == Decimal("4.99994585")
    assert ledger.flush(timeout=30)
    stored = [e.total_cost for e in ledger.events()]
    assert (len(stored), set(stored)) == (2, {first, second})


def test_sync_call_on_durable_ledger_defers_settle_and_sinks_after_the_spool(
    durable: tuple[Ledger, Path], store_url: str
) -> None:
    """A sync decorated call: same split. A sink sees the event on the worker, once the
    event is already in the spool."""
    ledger, spool = durable
    where = WhereGuard()
    budget = Budget("1 USD", "day", name=f"core4-{uuid.uuid4().hex[:8]}")
    tracker = Tracker(ledger, guards=[where, budget], guard_store=store_url, log="off")
    sunk: list[tuple[str, Decimal | None, list[str]]] = []

    def sink(event: UsageEvent) -> None:
        ids = [r["id"] for r in _spooled(spool)]
        sunk.append((threading.current_thread().name, event.total_cost, ids))

    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    def ask() -> dict[str, Any]:
        return {"id": "r-1", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    ask()  # seeds the budget's counter from the ledger (a read that drains the worker)
    assert costledger.drain_deferred(10)
    add_sink(sink)
    try:
        held = HeldWorker()
        try:
            ask()
            spooled = _spooled(spool)
            assert [(r["source"], Decimal(r["total_cost"])) for r in spooled] == [
                ("decorator", Decimal("0.00045")),
                ("decorator", Decimal("0.00045")),
            ]
            assert (len(where.settled), sunk) == (1, [])
        finally:
            held.let_go()
        assert costledger.drain_deferred(10)
    finally:
        remove_sink(sink)

    cost = 1000 * IN_PRICE + 500 * OUT_PRICE
    assert cost == Decimal("0.00045")
    assert [(thread, c) for thread, _, c in where.settled] == [(WORKER, cost), (WORKER, cost)]
    # the sink saw the event on the worker, when both events were in the spool already
    assert sunk == [(WORKER, cost, [spooled[0]["id"], spooled[1]["id"]])]
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (2 * cost, Decimal(0))


def test_record_defer_on_durable_ledger_returns_the_stored_event(
    durable: tuple[Ledger, Path], store_url: str
) -> None:
    """``Tracker.record(defer=True)`` on a durable ledger: the event is returned and in the
    spool, the budget's settle follows on the worker; ``defer=False`` settles at once."""
    ledger, spool = durable
    budget = Budget("1 USD", "day", name=f"core4-{uuid.uuid4().hex[:8]}")
    tracker = Tracker(ledger, guards=[budget], guard_store=store_url, log="off")

    # the first record seeds the budget's counter from the ledger (a read that drains the
    # worker); defer=False settles before it returns
    now = tracker.record("gpt-4o-mini", Usage(input_tokens=2, output_tokens=1))
    assert now.total_cost == Decimal("0.0000009")
    assert budget.status(tracker)[0].spent == Decimal("0.0000009")

    held = HeldWorker()
    try:
        event = tracker.record("gpt-4o-mini", Usage(input_tokens=40, output_tokens=10), defer=True)
        assert event is not None
        assert event.total_cost == Decimal("0.000012")
        assert [r["id"] for r in _spooled(spool)] == [now.id, event.id]
        assert budget.status(tracker)[0].spent == Decimal("0.0000009")  # worker held
    finally:
        held.let_go()
    assert costledger.drain_deferred(10)
    assert budget.status(tracker)[0].spent == Decimal("0.0000129")
