"""A sync batch of prompts (``BaseChatModel.generate``, ``BaseLLM.generate`` behind
``llm.batch``) whose runs LangChain starts before it calls any model.

A guard's refusal of one prompt leaves the prompts started before it never sent: their
reservations are released and nothing is recorded for them, as ``agenerate`` already
did. A chat model's ``generate`` calls its prompts one after another and, when one
fails, ends only that one: the prompts after it are never sent, so they are released
too. Real LangChain, real Tracker, real budget (in-memory store); fake models only.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.messages import HumanMessage
from langchain_core.outputs import Generation, LLMResult
from langchain_fakes import UsageChatModel, expected_cost

from costledger import Budget, BudgetExceeded, StoredEvent, Tracker, drain_deferred
from costledger.testing import InMemoryLedger, MemoryStore
from costledger_langchain import CostLedgerCallbackHandler, _handler

ONE_CALL = expected_cost(1000, 200)  # $0.00027


class UsageCompletionLLM(BaseLLM):
    """A completion model answering every prompt of a batch in one ``_generate``, with
    OpenAI's ``llm_output`` token usage (summed over the batch, as langchain-openai's)."""

    model_name: str = "gpt-4o-mini"
    max_tokens: int = 4000
    calls: int = 0

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        self.calls += len(prompts)
        return LLMResult(
            generations=[[Generation(text="forty two")] for _ in prompts],
            llm_output={
                "token_usage": {
                    "prompt_tokens": 1000 * len(prompts),
                    "completion_tokens": 200 * len(prompts),
                    "total_tokens": 1200 * len(prompts),
                },
                "model_name": self.model_name,
            },
        )

    @property
    def _llm_type(self) -> str:
        return "usage-completion"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}


def _guarded(limit: str = "0.004 USD") -> tuple[Tracker, Budget, CostLedgerCallbackHandler]:
    # max_tokens=4000: a worst case of about $0.0026 held per call in flight, so a $0.004
    # budget holds one prompt and refuses the second.
    budget = Budget(limit, "day", name="lc-sync-batch")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    return tracker, budget, CostLedgerCallbackHandler(tracker)


def _events(tracker: Tracker) -> list[StoredEvent]:
    drain_deferred()
    return list(tracker.ledger.events())  # type: ignore[attr-defined]


def _held(budget: Budget, tracker: Tracker) -> tuple[Decimal, Decimal]:
    [status] = budget.status(tracker)
    return status.spent, status.reserved


def test_refused_prompt_of_a_sync_chat_batch_releases_the_ones_started_before() -> None:
    tracker, budget, handler = _guarded()
    model = UsageChatModel(max_tokens=4000)
    with pytest.raises(BudgetExceeded):
        model.generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler])
    assert model.calls == 0
    assert _events(tracker) == []
    assert _held(budget, tracker) == (Decimal(0), Decimal(0))
    assert len(_handler._runs) == 0
    # and the budget is whole again for the next call
    model.invoke("next", config={"callbacks": [handler]})
    [event] = _events(tracker)
    assert (event.status, event.total_cost) == ("ok", ONE_CALL)
    assert _held(budget, tracker) == (ONE_CALL, Decimal(0))


def test_refused_prompt_of_a_completion_llm_batch_releases_the_ones_started_before() -> None:
    tracker, budget, handler = _guarded()
    llm = UsageCompletionLLM()
    with pytest.raises(BudgetExceeded):
        llm.batch(["a", "b"], config={"callbacks": [handler]})
    assert llm.calls == 0
    assert _events(tracker) == []
    assert _held(budget, tracker) == (Decimal(0), Decimal(0))
    assert len(_handler._runs) == 0


def test_a_sync_chat_batch_within_the_budget_records_every_prompt() -> None:
    tracker, budget, handler = _guarded("1 USD")
    model = UsageChatModel(max_tokens=4000)
    model.generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler])
    events = _events(tracker)
    assert [(e.status, e.total_cost) for e in events] == [("ok", ONE_CALL)] * 2
    assert _held(budget, tracker) == (2 * ONE_CALL, Decimal(0))
    assert len(_handler._runs) == 0


def test_failed_prompt_of_a_sync_chat_batch_releases_the_prompts_after_it() -> None:
    # generate calls the prompts in turn and ends only the one that failed: the second is
    # never sent, so its reservation is released and nothing is recorded for it.
    tracker, budget, handler = _guarded("1 USD")
    model = UsageChatModel(max_tokens=4000, fail_with=ConnectionError("reset"))
    with pytest.raises(ConnectionError):
        model.generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler])
    [event] = _events(tracker)
    assert (event.status, event.error_type, event.total_cost) == (
        "error",
        "ConnectionError",
        None,
    )
    assert _held(budget, tracker) == (Decimal(0), Decimal(0))
    assert len(_handler._runs) == 0


def test_a_sync_batch_without_guards_is_recorded_as_before() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    handler = CostLedgerCallbackHandler(tracker)
    UsageChatModel().generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler])
    events = _events(tracker)
    assert [(e.status, e.total_cost) for e in events] == [("ok", ONE_CALL)] * 2
