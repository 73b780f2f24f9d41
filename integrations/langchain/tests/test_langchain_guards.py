"""Guards through the LangChain handler: checked before the model call, settled or released after.

``RecordingGuard`` is a small implementation of the Guard protocol (what a budget
or rate limit is to the Tracker); the Tracker, handler and LangChain are real.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from langchain_fakes import UsageChatModel, expected_cost

from costledger import BudgetExceeded, RateLimited, Tracker, UsageEvent
from costledger._tracker import Call, drain_deferred
from costledger.testing import CapturedCosts, InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler, _handler

ONE_CALL = expected_cost(1000, 200)


class RecordingGuard:
    """Refuses once ``allow`` calls have been reserved; records what it was shown."""

    def __init__(self, allow: int = 1_000_000, refusal: type[Exception] = BudgetExceeded) -> None:
        self.allow = allow
        self.refusal = refusal
        self.lock = threading.Lock()
        self.prompts: list[str | None] = []
        self.max_output_tokens: list[int | None] = []
        self.models: list[str | None] = []
        self.open: set[str] = set()
        self._settled: list[UsageEvent] = []
        self._released = 0

    # Settles run on costledger's background worker: reads wait for it.
    @property
    def settled(self) -> list[UsageEvent]:
        drain_deferred()
        return self._settled

    @property
    def released(self) -> int:
        drain_deferred()
        return self._released

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        with self.lock:
            self.prompts.append(call.prompt_text)
            self.max_output_tokens.append(call.max_output_tokens)
            self.models.append(call.model)
            if len(self.models) > self.allow:
                if self.refusal is RateLimited:
                    raise RateLimited("too fast", limit="1/minute", key=None, retry_after=60.0)
                raise BudgetExceeded(
                    "team budget spent",
                    scope="team",
                    key="search",
                    limit=Decimal("1"),
                    spent=Decimal("1"),
                    reserved=Decimal(0),
                    resets_at=None,
                )
            self.open.add(call.id)
            return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        with self.lock:
            self.open.discard(token)
            self._settled.append(event)

    def release(self, token: Any) -> None:
        with self.lock:
            self.open.discard(token)
            self._released += 1


def _tracked(guard: RecordingGuard) -> CostLedgerCallbackHandler:
    return CostLedgerCallbackHandler(Tracker(InMemoryLedger(), guards=[guard], log="off"))


def test_guard_sees_prompt_and_limits_before_the_call(costs: CapturedCosts) -> None:
    guard = RecordingGuard()
    handler = _tracked(guard)
    UsageChatModel(max_tokens=300).invoke(
        [("system", "be brief"), ("human", "hello there")], config={"callbacks": [handler]}
    )
    assert guard.models == ["gpt-4o-mini"]
    [prompt] = guard.prompts
    assert prompt is not None
    assert "be brief" in prompt
    assert "hello there" in prompt
    assert guard.max_output_tokens == [300]
    [settled] = guard.settled
    assert settled.cost.total == ONE_CALL
    assert guard.open == set()


@pytest.mark.parametrize("refusal", [BudgetExceeded, RateLimited])
def test_refusal_stops_the_model_call(costs: CapturedCosts, refusal: type[Exception]) -> None:
    guard = RecordingGuard(allow=1, refusal=refusal)
    handler = _tracked(guard)
    model = UsageChatModel()
    model.invoke("first", config={"callbacks": [handler]})
    with pytest.raises(refusal):
        model.invoke("second", config={"callbacks": [handler]})
    assert model.calls == 1  # the provider was never asked the second time
    assert len(costs.events) == 1  # a refused call costs nothing and records nothing
    assert guard.open == set()
    assert len(_handler._runs) == 0


async def test_refusal_stops_ainvoke_and_astream(costs: CapturedCosts) -> None:
    guard = RecordingGuard(allow=0)
    handler = _tracked(guard)
    model = UsageChatModel()
    with pytest.raises(BudgetExceeded):
        await model.ainvoke("x", config={"callbacks": [handler]})
    with pytest.raises(BudgetExceeded):
        async for _ in model.astream("x", config={"callbacks": [handler]}):
            pass
    with pytest.raises(BudgetExceeded):
        list(model.stream("x", config={"callbacks": [handler]}))
    assert model.calls == 0
    assert costs.events == []


def test_refusal_inside_a_chain_propagates(costs: CapturedCosts) -> None:
    from langchain_core.output_parsers import StrOutputParser

    guard = RecordingGuard(allow=0)
    chain = UsageChatModel() | StrOutputParser()
    with pytest.raises(BudgetExceeded, match="team budget spent"):
        chain.invoke("x", config={"callbacks": [_tracked(guard)]})


def test_failed_call_releases_its_reservation(costs: CapturedCosts) -> None:
    guard = RecordingGuard()
    handler = _tracked(guard)
    with pytest.raises(TimeoutError):
        UsageChatModel(fail_with=TimeoutError("slow")).invoke("x", config={"callbacks": [handler]})
    assert guard.released == 1
    assert guard.settled == []
    assert guard.open == set()
    [event] = costs.events
    assert event.status == "error"


def test_stopped_stream_releases_its_reservation(costs: CapturedCosts) -> None:
    guard = RecordingGuard()
    handler = _tracked(guard)
    for _ in UsageChatModel().stream("x", config={"callbacks": [handler]}):
        break
    assert guard.released == 1
    assert guard.open == set()
    assert costs.events[0].status == "cancelled"


def test_guard_is_skipped_without_building_prompt_text_when_there_are_none(
    costs: CapturedCosts,
) -> None:
    handler = CostLedgerCallbackHandler(Tracker(InMemoryLedger(), log="off"))
    assert handler.tracker.has_guards is False
    UsageChatModel().invoke("x", config={"callbacks": [handler]})
    assert len(costs.events) == 1


def test_runs_that_never_end_are_evicted_and_released(
    costs: CapturedCosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_handler._runs, "max_size", 3)
    guard = RecordingGuard()
    handler = _tracked(guard)
    run_ids = [uuid4() for _ in range(5)]
    for run_id in run_ids:
        handler.on_chat_model_start({}, [[]], run_id=run_id, metadata={"ls_model_name": "m"})
    assert len(_handler._runs) == 3
    assert guard.released == 2  # the two oldest, dropped without an event
    for run_id in run_ids:
        handler.on_llm_error(RuntimeError("gone"), run_id=run_id)
    assert len(_handler._runs) == 0
    assert len(costs.events) == 3
    assert guard.open == set()
