"""In an async run the guards run through ``Tracker.astart``, off the event loop.

LangChain calls a sync handler inline on the event loop, so the guards' store round trips
(Redis, SQL) and a budget's first reservation of a period (it reads the ledger) blocked
the loop for as long as they took. LangChain's async dispatcher now gets a coroutine for
the run's start, which it awaits: a guard's ``areserve`` runs, the loop goes on. A sync
run (one LangChain dispatches synchronously, even inside a running loop, where a
coroutine's exception would be swallowed) keeps the sync start, so a refusal still stops
the call. Real LangChain runtime and Tracker; only the chat model and one guard are fakes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_fakes import UsageChatModel, expected_cost

from costledger import Budget, BudgetExceeded, Tracker, UsageEvent, drain_deferred
from costledger._tracker import Call
from costledger.testing import InMemoryLedger, MemoryStore
from costledger_langchain import CostLedgerCallbackHandler

ONE_CALL = expected_cost(1000, 200)


class SlowStoreGuard:
    """A guard whose store takes 0.2 s a round trip: ``reserve`` blocks its thread for it,
    ``areserve`` awaits it."""

    name = "slow-store"

    def __init__(self) -> None:
        self.used: list[str] = []

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        self.used.append("reserve")
        time.sleep(0.2)
        return call.id

    async def areserve(self, call: Call, tracker: Tracker) -> Any:
        self.used.append("areserve")
        await asyncio.sleep(0.2)
        return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.used.append("settle")

    def release(self, token: Any) -> None:
        self.used.append("release")


async def test_an_async_run_awaits_the_guards_and_the_loop_goes_on() -> None:
    guard = SlowStoreGuard()
    tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
    handler = CostLedgerCallbackHandler(tracker)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await UsageChatModel().ainvoke("hi", config={"callbacks": [handler]})
    ticking.cancel()
    assert drain_deferred(10)
    assert guard.used == ["areserve", "settle"]
    assert ticks >= 5  # 0.2 s of the guard's store: the loop ran the ticker meanwhile
    [event] = tracker.ledger.events()  # type: ignore[attr-defined]
    assert (event.status, event.total_cost) == ("ok", ONE_CALL)


async def test_an_async_run_is_refused_by_a_budget_before_the_model_is_called() -> None:
    budget = Budget("0.0001 USD", "day", name="s14-async-refuse")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    handler = CostLedgerCallbackHandler(tracker)
    model = UsageChatModel(max_tokens=4000)
    with pytest.raises(BudgetExceeded):
        await model.ainvoke("hi", config={"callbacks": [handler]})
    assert drain_deferred(10)
    assert list(tracker.ledger.events()) == []  # type: ignore[attr-defined]
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (0, 0)


async def test_a_sync_run_inside_a_running_loop_is_still_refused() -> None:
    # LangChain's sync dispatcher runs a coroutine a handler returns in a thread and logs
    # its exception instead of raising it: this run must keep the sync start.
    budget = Budget("0.0001 USD", "day", name="s14-sync-refuse")
    guard = SlowStoreGuard()
    tracker = Tracker(
        InMemoryLedger(), guards=[guard, budget], guard_store=MemoryStore(), log="off"
    )
    handler = CostLedgerCallbackHandler(tracker)
    with pytest.raises(BudgetExceeded):
        UsageChatModel(max_tokens=4000).invoke("hi", config={"callbacks": [handler]})
    assert guard.used == ["reserve", "release"]
    assert drain_deferred(10)
    assert list(tracker.ledger.events()) == []  # type: ignore[attr-defined]


def test_without_guards_the_start_stays_a_plain_method() -> None:
    handler = CostLedgerCallbackHandler(Tracker(InMemoryLedger(), log="off"))
    assert not asyncio.iscoroutinefunction(handler.on_chat_model_start)
    assert not asyncio.iscoroutinefunction(handler.on_llm_start)


def test_the_start_callbacks_can_still_be_replaced_on_an_instance() -> None:
    from unittest import mock

    from langchain_core.callbacks import BaseCallbackHandler

    handler = CostLedgerCallbackHandler(Tracker(InMemoryLedger(), log="off"))
    with mock.patch.object(handler, "on_chat_model_start") as replaced:
        UsageChatModel().invoke("hi", config={"callbacks": [handler]})
    assert replaced.call_count == 1
    assert isinstance(handler, BaseCallbackHandler)
    assert not asyncio.iscoroutinefunction(handler.on_chat_model_start)  # restored
