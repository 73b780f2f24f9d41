"""On a durable ledger the handler has the event in the spool before ``ainvoke`` returns,
and leaves the guards' settle (a Redis or SQL store's round trips) to the background
worker: never on the event loop the callback runs on."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_fakes import UsageChatModel, expected_cost

import costledger
import costledger.testing
from costledger import Ledger, Tracker, UsageEvent
from costledger._tracker import Call, defer
from costledger_langchain import CostLedgerCallbackHandler

WORKER = "costledger-deferred"


class WhereGuard:
    """A guard (the Guard protocol, nothing reserved) noting the thread of each settle."""

    name = "where"

    def __init__(self) -> None:
        self.settled: list[tuple[str, Decimal | None]] = []

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.settled.append((threading.current_thread().name, event.total_cost))

    def release(self, token: Any) -> None:
        raise AssertionError("nothing to release: the call succeeded")


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


def _spooled(spool: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for segment in sorted(spool.glob("[0-9]*.jsonl")):
        lines.extend(json.loads(line) for line in segment.read_bytes().splitlines() if line)
    return lines


def test_ainvoke_on_a_durable_ledger_spools_first_and_settles_on_the_worker(
    durable: tuple[Ledger, Path],
) -> None:
    ledger, spool = durable
    where = WhereGuard()
    tracker = Tracker(ledger, guards=[where], log="off")
    model = UsageChatModel(callbacks=[CostLedgerCallbackHandler(tracker)])
    seen: dict[str, Any] = {}
    running, gate = threading.Event(), threading.Event()

    def hold() -> None:  # keeps the background worker busy until the test has looked
        running.set()
        gate.wait(30)

    async def main() -> None:
        defer(hold)
        assert running.wait(10)
        try:
            await model.ainvoke("hi")
            seen["loop"] = threading.current_thread().name
            seen["spooled"] = [Decimal(r["total_cost"]) for r in _spooled(spool)]
            seen["settled"] = list(where.settled)
        finally:
            gate.set()

    asyncio.run(main())
    assert costledger.drain_deferred(10)
    cost = expected_cost(1000, 200)
    assert seen == {"loop": "MainThread", "spooled": [cost], "settled": []}
    assert where.settled == [(WORKER, cost)]


def test_the_first_call_of_a_model_holding_the_handler_never_waits_for_the_worker() -> None:
    """LangChain serializes a model on its first call, taking the repr of its callbacks:
    the handler's repr must not wait for calls being finished in the background (it did,
    up to the whole queue, on the caller's thread or event loop)."""
    tracker = Tracker(costledger.testing.InMemoryLedger(), log="off")
    handler = CostLedgerCallbackHandler(tracker)
    model = UsageChatModel(callbacks=[handler])
    running, gate = threading.Event(), threading.Event()
    finished = threading.Event()

    def hold() -> None:
        running.set()
        gate.wait(30)

    defer(hold)
    assert running.wait(10)
    try:
        worker = threading.Thread(target=lambda: (model.invoke("hi"), finished.set()))
        worker.start()
        # the worker is held: the call must end anyway, long before the hold does
        assert finished.wait(10), "the model's first call waited for the background worker"
        assert repr(handler) == (
            "CostLedgerCallbackHandler(totals=CostTotals(total_cost=0, requests=0, "
            "input_tokens=0, output_tokens=0, cache_hits=0, errors=0, unpriced=0))"
        )
    finally:
        gate.set()
    worker.join(10)
    assert costledger.drain_deferred(10)
    assert handler.totals.total_cost == expected_cost(1000, 200)
