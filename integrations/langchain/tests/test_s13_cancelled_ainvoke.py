"""A cancelled ``ainvoke`` / ``abatch`` is recorded once, as ``cancelled``, and its guard
reservation released.

``BaseChatModel.agenerate`` awaits its models in ``asyncio.gather`` outside any ``try``:
a cancellation delivered there (``wait_for``, ``asyncio.timeout``, ``task.cancel()``)
reaches neither ``on_llm_end`` nor ``on_llm_error``. The run used to stay in the handler's
run map with its reservation held, and the next call was refused by it. Real LangChain,
real Tracker, real budget (in-memory store); only the chat model is a fake.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult
from langchain_fakes import UsageChatModel, expected_cost

from costledger import Budget, BudgetExceeded, StoredEvent, Tracker, drain_deferred
from costledger.testing import InMemoryLedger, MemoryStore
from costledger_langchain import CostLedgerCallbackHandler, _handler, tracking

ONE_CALL = expected_cost(1000, 200)  # $0.00027


class SlowChatModel(UsageChatModel):
    """``UsageChatModel`` whose async call takes ``delay`` seconds (the network, as a
    task sees it)."""

    delay: float = 0.0

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.delay)
        return self._generate(messages, stop=stop, **kwargs)


def _guarded() -> tuple[Tracker, Budget, CostLedgerCallbackHandler]:
    # max_tokens=4000 below: a worst case of about $0.0026 held per call in flight, so a
    # $0.004 budget refuses a call while a stale hold is still counted.
    budget = Budget("0.004 USD", "day", name="lc-cancel")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    return tracker, budget, CostLedgerCallbackHandler(tracker)


async def _events(tracker: Tracker) -> list[StoredEvent]:
    for _ in range(3):  # a finished task's done-callbacks run on the next loop turns
        await asyncio.sleep(0)
    assert drain_deferred(10)
    return list(tracker.ledger.events())


async def _started() -> None:
    """Until a model run has started (a fixed sleep may end first on a loaded machine)."""
    for _ in range(6000):
        if _handler._runs:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no model run started within 30 s")


def _warm() -> None:
    """Load what a process's first guarded start loads (price data, token counting: half
    a second here), so that a timeout below falls while the model runs, not during the
    start (which, awaited off the loop, a timeout now cancels: a call never sent)."""
    tracker, _, _ = _guarded()
    call = tracker.start(source="warm", model="gpt-4o-mini", prompt_text="hi", max_output_tokens=1)
    tracker.cancel(call)


def _held(budget: Budget, tracker: Tracker) -> tuple[Decimal, Decimal]:
    [status] = budget.status(tracker)
    return status.spent, status.reserved


def _assert_cancelled(event: StoredEvent) -> None:
    assert event.source == "langchain"
    assert event.status == "cancelled"
    assert event.error_type == "CancelledError"
    assert (event.input_tokens, event.output_tokens) == (0, 0)
    assert event.total_cost is None
    assert event.latency_ms is not None
    assert event.latency_ms > 0


async def test_wait_for_timeout_then_the_next_call_in_the_same_task() -> None:
    _warm()
    tracker, budget, handler = _guarded()
    slow = SlowChatModel(delay=30, max_tokens=4000)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(slow.ainvoke("hi", config={"callbacks": [handler]}), 0.5)
    # the next call was refused by the timed-out call's hold
    await SlowChatModel(max_tokens=4000).ainvoke("next", config={"callbacks": [handler]})
    cancelled, ok = await _events(tracker)
    _assert_cancelled(cancelled)
    assert (ok.status, ok.total_cost) == ("ok", ONE_CALL)
    assert _held(budget, tracker) == (ONE_CALL, Decimal(0))
    assert len(_handler._runs) == 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
async def test_asyncio_timeout_caught_in_the_same_task() -> None:
    # The task goes on after the timeout: the run is ended at that task's next model call,
    # before its guards count what is held.
    _warm()
    tracker, budget, handler = _guarded()
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.5):
            await SlowChatModel(delay=30, max_tokens=4000).ainvoke(
                "hi", config={"callbacks": [handler]}
            )
    await SlowChatModel(max_tokens=4000).ainvoke("next", config={"callbacks": [handler]})
    cancelled, ok = await _events(tracker)
    _assert_cancelled(cancelled)
    assert (ok.status, ok.total_cost) == ("ok", ONE_CALL)
    assert _held(budget, tracker) == (ONE_CALL, Decimal(0))


async def test_cancelled_task_is_recorded_once_and_counted_by_tracking() -> None:
    tracker, budget, handler = _guarded()
    with tracking(tracker) as totals:
        task = asyncio.create_task(
            SlowChatModel(delay=30, max_tokens=4000).ainvoke("hi", config={"callbacks": [handler]})
        )
        await _started()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [event] = await _events(tracker)
    _assert_cancelled(event)
    assert _held(budget, tracker) == (Decimal(0), Decimal(0))
    # one run seen by two handlers (the one given and tracking()'s): one event, both totals
    assert (totals.requests, totals.errors, totals.total_cost) == (1, 1, Decimal(0))
    assert (handler.totals.requests, handler.totals.errors) == (1, 1)
    assert len(_handler._runs) == 0
    assert _handler._task_runs == {}


async def test_cancelled_abatch_ends_every_run() -> None:
    tracker = Tracker(
        InMemoryLedger(), guards=[Budget("1 USD", "day")], guard_store=MemoryStore(), log="off"
    )
    budget = tracker.guards[0]
    assert isinstance(budget, Budget)
    handler = CostLedgerCallbackHandler(tracker)
    model = SlowChatModel(delay=30)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(model.abatch(["a", "b", "c"], config={"callbacks": [handler]}), 0.5)
    events = await _events(tracker)
    assert len(events) == 3
    for event in events:
        _assert_cancelled(event)
    assert len({e.run_id for e in events}) == 3
    assert _held(budget, tracker) == (Decimal(0), Decimal(0))
    assert len(_handler._runs) == 0


async def test_some_of_many_concurrent_calls_time_out() -> None:
    tracker = Tracker(
        InMemoryLedger(), guards=[Budget("1 USD", "day")], guard_store=MemoryStore(), log="off"
    )
    budget = tracker.guards[0]
    assert isinstance(budget, Budget)
    handler = CostLedgerCallbackHandler(tracker)

    async def one(i: int) -> str:
        if i % 2:
            await SlowChatModel(delay=0.01).ainvoke(f"q{i}", config={"callbacks": [handler]})
            return "ok"
        slow = SlowChatModel(delay=30).ainvoke(f"q{i}", config={"callbacks": [handler]})
        try:
            await asyncio.wait_for(slow, 1.0)
        except asyncio.TimeoutError:
            return "timeout"
        return "ok"

    outcomes = await asyncio.gather(*(one(i) for i in range(20)))
    assert outcomes.count("ok") == 10
    events = await _events(tracker)
    assert sorted(e.status for e in events) == ["cancelled"] * 10 + ["ok"] * 10
    assert sum((e.total_cost or Decimal(0) for e in events), Decimal(0)) == 10 * ONE_CALL
    assert _held(budget, tracker) == (10 * ONE_CALL, Decimal(0))
    assert handler.totals.requests == 20


async def test_a_finished_ainvoke_is_recorded_once_as_ok() -> None:
    tracker, budget, handler = _guarded()

    async def call() -> None:
        await SlowChatModel(delay=0.01, max_tokens=4000).ainvoke(
            "hi", config={"callbacks": [handler]}
        )

    await asyncio.create_task(call())  # the task ends after its run: nothing more recorded
    await call()
    [first, second] = await _events(tracker)
    assert [(e.status, e.total_cost) for e in (first, second)] == [("ok", ONE_CALL)] * 2
    assert _held(budget, tracker) == (2 * ONE_CALL, Decimal(0))
    assert (handler.totals.requests, handler.totals.errors) == (2, 0)


async def test_refused_prompt_of_an_async_batch_releases_the_ones_started_before() -> None:
    # agenerate starts every prompt's run before calling any model: a refusal of the second
    # leaves the first never sent, so released and not recorded (as a refused call is not).
    tracker, budget, handler = _guarded()
    model = SlowChatModel(max_tokens=4000)
    with pytest.raises(BudgetExceeded):
        await model.agenerate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler])
    assert model.calls == 0
    assert await _events(tracker) == []
    assert _held(budget, tracker) == (Decimal(0), Decimal(0))
    assert len(_handler._runs) == 0
    # and the budget is whole again for the next call
    await model.ainvoke("next", config={"callbacks": [handler]})
    [event] = await _events(tracker)
    assert (event.status, event.total_cost) == ("ok", ONE_CALL)


async def test_v3_stream_outliving_its_consumer_task_is_recorded_ok() -> None:
    # A v3 stream's run starts in the consumer's task and ends in a LangChain task that
    # runs on after the consumer is cancelled: that task's end is not the run's.
    tracker, budget, handler = _guarded()
    model = SlowChatModel(max_tokens=4000, chunk_delay=0.02)

    async def consume() -> None:
        stream: Any = model.astream_events("hi", config={"callbacks": [handler]}, version="v3")
        if hasattr(stream, "__await__"):
            stream = await stream
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await _started()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):  # the producer runs on to the end of the stream
        if not _handler._runs:
            break
        await asyncio.sleep(0.02)
    [event] = await _events(tracker)
    assert (event.status, event.streamed, event.total_cost) == ("ok", True, ONE_CALL)
    assert _held(budget, tracker) == (ONE_CALL, Decimal(0))


async def test_completion_llm_ainvoke_starts_in_gather_tasks_and_ends_ok() -> None:
    # BaseLLM.agenerate starts its runs in tasks of their own (asyncio.gather) that end at
    # once: the run is not theirs to end.
    tracker = Tracker(InMemoryLedger(), log="off")
    handler = CostLedgerCallbackHandler(tracker)
    llm = FakeListLLM(responses=["forty two"])
    assert await llm.ainvoke("q", config={"callbacks": [handler]}) == "forty two"
    [event] = await _events(tracker)
    assert event.status == "ok"
    assert _handler._task_runs == {}


async def test_sync_invoke_inside_a_coroutine_is_recorded_once() -> None:
    tracker, budget, handler = _guarded()
    SlowChatModel(max_tokens=4000).invoke("hi", config={"callbacks": [handler]})
    [event] = await _events(tracker)
    assert (event.status, event.total_cost) == ("ok", ONE_CALL)
    assert _held(budget, tracker) == (ONE_CALL, Decimal(0))
    assert _handler._task_runs == {}


async def test_runs_of_one_agenerate_batch_do_not_end_each_other() -> None:
    # Every prompt's run starts before any model call, in one task: the later starts find
    # the earlier runs open with their agenerate still on the stack, and leave them be.
    tracker = Tracker(InMemoryLedger(), log="off")
    handler = CostLedgerCallbackHandler(tracker)
    result = await SlowChatModel(delay=0.01).agenerate(
        [[HumanMessage("a")], [HumanMessage("b")], [HumanMessage("c")]], callbacks=[handler]
    )
    assert len(result.generations) == 3
    events = await _events(tracker)
    assert [(e.status, e.total_cost) for e in events] == [("ok", ONE_CALL)] * 3


async def test_cancelled_streaming_ainvoke_keeps_the_usage_already_reported() -> None:
    # stream=True: agenerate streams the model in a task of its own; the prompt's usage came
    # on the first chunk (Anthropic's way), the output's never came.
    tracker = Tracker(InMemoryLedger(), log="off")
    handler = CostLedgerCallbackHandler(tracker)
    model = SlowChatModel(stream_usage="delta", chunk_delay=0.05)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            model.ainvoke("hi", config={"callbacks": [handler]}, stream=True), 0.12
        )
    await SlowChatModel().ainvoke("next", config={"callbacks": [handler]})
    cancelled, ok = await _events(tracker)
    assert (cancelled.status, cancelled.streamed) == ("cancelled", True)
    assert (cancelled.input_tokens, cancelled.output_tokens) == (1000, 0)
    assert cancelled.total_cost == expected_cost(1000, 0)
    assert (ok.status, ok.total_cost) == ("ok", ONE_CALL)


async def test_task_destroyed_unfinished_is_recorded_at_the_next_call() -> None:
    # A task waiting on a future nobody holds is garbage: collected, never done.
    tracker, budget, handler = _guarded()

    class Forever(SlowChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            await asyncio.get_running_loop().create_future()
            raise AssertionError("unreachable")

    task = asyncio.create_task(
        Forever(max_tokens=4000).ainvoke("hi", config={"callbacks": [handler]})
    )
    await _started()  # the guards' first reservation seeds off the loop: not at once
    # then the loop turns until the task waits on its future alone: a task still queued
    # to run (its start just done) is no garbage
    await asyncio.sleep(0.05)
    assert len(_handler._runs) == 1
    del task
    gc.collect()
    await SlowChatModel(max_tokens=4000).ainvoke("next", config={"callbacks": [handler]})
    cancelled, ok = await _events(tracker)
    _assert_cancelled(cancelled)
    assert (ok.status, ok.total_cost) == ("ok", ONE_CALL)
    assert _held(budget, tracker) == (ONE_CALL, Decimal(0))
    assert len(_handler._runs) == 0


def test_task_destroyed_with_its_loop_is_recorded_at_the_next_sync_call() -> None:
    """Old-style ``run_until_complete`` code: the loop closes with the task pending and only
    sync calls follow; the destroyed task's run was never ended (no async start came)."""
    tracker, budget, handler = _guarded()

    class Forever(SlowChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            await asyncio.get_running_loop().create_future()
            raise AssertionError("unreachable")

    loop = asyncio.new_event_loop()

    async def start() -> None:
        asyncio.get_running_loop().create_task(
            Forever(max_tokens=4000).ainvoke("bg", config={"callbacks": [handler]})
        )
        await _started()
        await asyncio.sleep(0.05)  # until the task waits on its future alone

    loop.run_until_complete(start())
    loop.close()
    del loop
    gc.collect()
    assert len(_handler._runs) == 1
    SlowChatModel(max_tokens=4000).invoke("sync", config={"callbacks": [handler]})
    assert drain_deferred(10)
    cancelled, ok = list(tracker.ledger.events())
    _assert_cancelled(cancelled)
    assert (ok.status, ok.total_cost) == ("ok", ONE_CALL)
    assert _held(budget, tracker) == (ONE_CALL, Decimal(0))
    assert len(_handler._runs) == 0
