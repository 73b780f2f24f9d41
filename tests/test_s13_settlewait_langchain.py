"""LangChain ``ainvoke`` with a budget far from its limit: the handler reserves inline on
the event loop, and no longer waits there for the background queue.

Every call's start used to wait (blocking the loop, up to 5 s) for the whole queue of
earlier calls' settles: 50 tasks stalled the loop for 2.3 s. Here the worker is stopped
(a ``threading.Event.wait`` queued with ``defer``) and ``_SETTLE_WAIT`` raised to 60 s:
8 tasks of 5 calls each finish within 30 s only because none of them waits.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any, cast

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult

import costledger._tracker as tracker_module
from costledger import Budget, Tracker
from costledger._tracker import defer, drain_deferred
from costledger.testing import InMemoryLedger

# gpt-4o-mini: 1000 x $0.15 + 500 x $0.60 per million tokens
COST = Decimal("0.00045")


class _AsyncUsageModel(BaseChatModel):
    """Answers asynchronously with 1000 input and 500 output tokens, as ChatOpenAI."""

    model_name: str = "gpt-4o-mini"
    max_tokens: int = 1000

    @property
    def _llm_type(self) -> str:
        return "async-usage"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        await asyncio.sleep(0)
        message = AIMessage(content="ok", response_metadata={"model_name": "gpt-4o-mini"})
        usage = {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500}
        message.usage_metadata = cast(UsageMetadata, usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_tasks_calling_in_turn_far_from_the_limit_never_wait_for_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from costledger_langchain import CostLedgerCallbackHandler

    monkeypatch.setattr(tracker_module, "_SETTLE_WAIT", 60.0)
    budget = Budget("1000 USD", "day", name="lc-far-from-limit")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store="memory://", log="off")
    model = _AsyncUsageModel(callbacks=[CostLedgerCallbackHandler(tracker)])
    stop = threading.Event()
    answers: list[str] = []

    async def main() -> None:
        await model.ainvoke("hi")  # seeds the counter (a ledger read, which waits)
        assert await asyncio.to_thread(drain_deferred, 10)
        defer(stop.wait, 60)  # the worker runs no settle until the calls are done

        async def in_turn() -> None:
            for _ in range(5):
                answers.append(str((await model.ainvoke("hi")).content))

        await asyncio.gather(*(in_turn() for _ in range(8)))

    # its own thread: were the loop blocked, the test must still end
    loop_thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    loop_thread.start()
    try:
        loop_thread.join(30)
        assert answers == ["ok"] * 40
        assert len(tracker._unsettled) == 40  # all reserved with the others' settles queued
    finally:
        stop.set()
        loop_thread.join(120)
    assert drain_deferred(30)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (41 * COST, Decimal(0))
