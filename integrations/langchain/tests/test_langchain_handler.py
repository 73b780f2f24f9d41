"""CostLedgerCallbackHandler on the real LangChain runtime, with fake chat models.

Every test counts the events exactly and checks money to the last digit against
gpt-4o-mini's list prices worked out by hand (see ``langchain_fakes``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatResult, Generation, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_fakes import SNAPSHOT, UsageChatModel, expected_cost, usage_metadata

import costledger
from costledger import Tracker, Usage
from costledger.testing import CapturedCosts, InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler, CostTotals

ONE_CALL = expected_cost(1000, 200)  # 1000 * 0.15e-6 + 200 * 0.60e-6


def stored_rows() -> list[Any]:
    """What the default Tracker's ledger (capture_costs' in-memory SQLite) holds."""
    ledger: Any = costledger.get_tracker().ledger
    return list(ledger.events())


def test_hand_worked_price() -> None:
    assert Decimal("0.00027") == ONE_CALL
    assert expected_cost(1000, 200, cached_tokens=400) == Decimal("0.00024")


def test_invoke_with_config_callbacks(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    reply = UsageChatModel().invoke("hi", config={"callbacks": [handler]})

    assert reply.content == "the answer is forty two"
    [event] = costs.events
    assert event.source == "langchain"
    assert event.status == "ok"
    assert event.model == "gpt-4o-mini"  # what was asked for (ls_model_name)
    assert event.response_model == SNAPSHOT  # what answered
    assert event.provider == "openai"
    assert event.usage.input_tokens == 1000
    assert event.usage.output_tokens == 200
    assert event.cost.total == Decimal("0.00027")
    assert event.streamed is False
    assert event.cache_hit is False
    assert event.run_id is not None
    assert event.latency_ms is not None
    assert event.latency_ms >= 0
    assert handler.totals.total_cost == Decimal("0.00027")
    assert handler.totals.requests == 1


def test_cached_input_tokens_priced_at_the_cache_rate(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    UsageChatModel(cached_tokens=400).invoke("hi", config={"callbacks": [handler]})
    [event] = costs.events
    assert event.usage.input_tokens == 1000
    assert event.usage.cache_read_tokens == 400
    assert event.cost.total == Decimal("0.00024")


def test_model_callbacks_and_with_config(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    UsageChatModel(callbacks=[handler]).invoke("hi")
    UsageChatModel().with_config(callbacks=[handler]).invoke("hi")
    assert len(costs.events) == 2
    assert handler.totals.total_cost == 2 * ONE_CALL


def test_prompt_model_parser_chain(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    prompt = ChatPromptTemplate.from_messages([("human", "Answer {question}")])
    chain = prompt | UsageChatModel() | StrOutputParser()

    out = chain.invoke({"question": "why"}, config={"callbacks": [handler]})

    assert out == "the answer is forty two"
    [event] = costs.events
    assert event.cost.total == ONE_CALL
    assert event.parent_run_id is not None  # the sequence's run
    assert "seq:step:2" not in event.tags  # LangChain's own step tag is not attribution


def test_batch_in_threads_records_each_call_once(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel()
    replies = model.batch(
        [f"q{i}" for i in range(8)], config={"callbacks": [handler], "max_concurrency": 4}
    )
    assert len(replies) == 8
    assert model.calls == 8
    assert len(costs.events) == 8
    assert len({e.run_id for e in costs.events}) == 8
    assert len({e.id for e in costs.events}) == 8
    assert costs.total == 8 * ONE_CALL
    assert handler.totals.total_cost == Decimal("0.00216")
    rows = stored_rows()
    assert len(rows) == 8
    assert sum(r.total_cost for r in rows) == Decimal("0.00216")


async def test_ainvoke_and_abatch(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel()
    await model.ainvoke("hi", config={"callbacks": [handler]})
    await model.abatch(["a", "b", "c"], config={"callbacks": [handler]})
    assert len(costs.events) == 4
    assert {e.status for e in costs.events} == {"ok"}
    assert handler.totals.total_cost == 4 * ONE_CALL


def test_stream_with_usage_on_the_final_chunk(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    text = "".join(
        str(c.content) for c in UsageChatModel().stream("hi", config={"callbacks": [handler]})
    )
    assert text == "the answer is forty two"
    [event] = costs.events
    assert event.streamed is True
    assert event.status == "ok"
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 200)
    assert event.response_model == SNAPSHOT
    assert event.cost.total == ONE_CALL


def test_stream_with_cumulative_usage_on_every_chunk_is_not_summed(
    costs: CapturedCosts,
) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel(stream_usage="cumulative")
    chunks = list(model.stream("hi", config={"callbacks": [handler]}))
    # LangChain itself sums the chunks' usage: the message it assembles is inflated...
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["input_tokens"] == 5000
    # ...the ledger is not.
    [event] = costs.events
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 200)
    assert event.cost.total == ONE_CALL


@pytest.mark.parametrize("cached", [0, 400])
def test_stream_with_usage_split_across_chunks_is_summed(costs: CapturedCosts, cached: int) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel(stream_usage="delta", cached_tokens=cached)
    list(model.stream("hi", config={"callbacks": [handler]}))
    [event] = costs.events
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 200)
    assert event.usage.cache_read_tokens == cached
    assert event.cost.total == expected_cost(1000, 200, cached_tokens=cached)


def test_invoke_of_a_streaming_model_with_cumulative_usage(costs: CapturedCosts) -> None:
    # invoke() on a model set to stream goes through generate_from_stream, which sums too.
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel(stream_usage="cumulative", disable_streaming=False)
    reply = model.invoke("hi", config={"callbacks": [handler]}, stream=True)
    assert reply.content == "the answer is forty two"
    [event] = costs.events
    assert event.streamed is True
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 200)
    assert event.cost.total == ONE_CALL


async def test_astream(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel()
    parts = [c.content async for c in model.astream("hi", config={"callbacks": [handler]})]
    assert "".join(map(str, parts)) == "the answer is forty two"
    cumulative = UsageChatModel(stream_usage="cumulative")
    async for _ in cumulative.astream("hi", config={"callbacks": [handler]}):
        pass
    assert len(costs.events) == 2
    assert all(e.streamed for e in costs.events)
    assert costs.total == 2 * ONE_CALL


def test_stream_stopped_early_is_recorded_as_cancelled(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    for _chunk in UsageChatModel().stream("hi", config={"callbacks": [handler]}):
        break  # the generator is closed: GeneratorExit inside LangChain's stream()
    [event] = costs.events
    assert event.status == "cancelled"
    assert event.error_type == "GeneratorExit"
    assert event.streamed is True
    assert event.cost.total is None  # nothing known: not priced, and not $0
    assert event.cost.status == "not_priced"
    assert handler.totals.requests == 1
    assert handler.totals.total_cost == 0


async def test_astream_abandoned_is_recorded_as_cancelled(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    stream = UsageChatModel().astream("hi", config={"callbacks": [handler]})
    assert isinstance(stream, AsyncGenerator)
    async for _chunk in stream:
        break
    await stream.aclose()  # what asyncio's async-generator finalizer does on its own
    [event] = costs.events
    assert event.status == "cancelled"
    assert event.error_type == "GeneratorExit"


async def test_astream_task_cancelled_midstream_is_recorded_as_cancelled(
    costs: CapturedCosts,
) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel(chunk_delay=0.05)
    received = asyncio.Event()

    async def consume() -> None:
        async for _ in model.astream("hi", config={"callbacks": [handler]}):
            received.set()

    task = asyncio.create_task(consume())
    await received.wait()
    task.cancel()  # lands while the model is producing the next chunk
    with pytest.raises(asyncio.CancelledError):
        await task
    [event] = costs.events
    assert event.status == "cancelled"
    assert event.error_type == "CancelledError"
    assert event.streamed is True


def test_stream_failing_midway_keeps_the_usage_already_known(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel(
        stream_usage="cumulative", fail_after_chunks=3, fail_with=ConnectionError("reset")
    )
    with pytest.raises(ConnectionError, match="reset"):
        list(model.stream("hi", config={"callbacks": [handler]}))
    [event] = costs.events
    assert event.status == "error"
    assert event.error_type == "ConnectionError"
    # Three of five chunks arrived, the last saying 1000 in / 120 out so far.
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 120)
    assert event.cost.total == expected_cost(1000, 120)


def test_error_is_recorded_and_raised_unchanged(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    boom = ValueError("provider said no")
    with pytest.raises(ValueError, match="provider said no") as raised:
        UsageChatModel(fail_with=boom).invoke("hi", config={"callbacks": [handler]})
    assert raised.value is boom
    [event] = costs.events
    assert event.status == "error"
    assert event.error_type == "ValueError"
    assert event.cost.total is None
    assert event.latency_ms is not None
    assert handler.totals.errors == 1
    assert handler.totals.unpriced == 0  # a failed call with no usage is not "unpriced spend"


class FlakyChatModel(UsageChatModel):
    """Fails its first ``failures`` calls, then answers like UsageChatModel."""

    failures: int = 2

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.calls < self.failures:
            self.calls += 1
            raise ConnectionError("transient")
        return super()._generate(messages, stop, run_manager, **kwargs)


def test_with_retry_records_each_attempt_without_its_attempt_tag(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    model = FlakyChatModel().with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    reply = model.invoke("hi", config={"callbacks": [handler], "tags": ["checkout"]})

    assert reply.content == "the answer is forty two"
    first, second, third = costs.events
    assert [e.status for e in costs.events] == ["error", "error", "ok"]
    assert (first.error_type, second.error_type) == ("ConnectionError", "ConnectionError")
    # LangChain tags the 2nd and 3rd attempts 'retry:attempt:N': its structure, not the
    # caller's; the caller's own tag stays on every attempt.
    assert [e.tags for e in costs.events] == [("checkout",)] * 3
    assert (first.cost.total, second.cost.total, third.cost.total) == (None, None, ONE_CALL)
    totals = handler.totals
    assert (totals.requests, totals.errors, totals.unpriced) == (3, 2, 0)
    assert totals.total_cost == ONE_CALL


def test_agent_loop_with_handlers_at_several_levels(costs: CapturedCosts) -> None:
    outer = CostLedgerCallbackHandler()
    inner = CostLedgerCallbackHandler()
    # The same handler on the model too, and a second instance: each call still counts once.
    model = UsageChatModel(callbacks=[outer, inner])

    def agent(question: str, config: RunnableConfig) -> str:
        answer = question
        for _ in range(3):
            answer = str(model.invoke(answer, config=config).content)
        return answer

    RunnableLambda(agent).invoke("start", config={"callbacks": [outer]})

    assert model.calls == 3
    assert len(costs.events) == 3
    assert len({e.run_id for e in costs.events}) == 3
    assert len({e.parent_run_id for e in costs.events}) == 1  # the agent's run
    assert costs.total == 3 * ONE_CALL
    # Both handlers saw every call, neither counted one twice.
    assert outer.totals.requests == inner.totals.requests == 3
    assert outer.totals.total_cost == inner.totals.total_cost == Decimal("0.00081")
    assert len(stored_rows()) == 3


def test_same_handler_in_config_and_on_the_model(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    UsageChatModel(callbacks=[handler]).invoke("hi", config={"callbacks": [handler]})
    assert len(costs.events) == 1
    assert handler.totals.requests == 1


def test_n_choices_counts_usage_once(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    result = UsageChatModel(choices=3).generate([[HumanMessage("hi")]], callbacks=[handler])
    assert len(result.generations[0]) == 3
    [event] = costs.events
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 200)
    assert event.cost.total == ONE_CALL


def test_generate_with_several_prompts_is_one_event_per_prompt(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    UsageChatModel().generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler])
    assert len(costs.events) == 2
    assert costs.total == 2 * ONE_CALL


@pytest.fixture
def llm_cache() -> Iterator[InMemoryCache]:
    cache = InMemoryCache()
    set_llm_cache(cache)
    try:
        yield cache
    finally:
        set_llm_cache(None)


def test_llm_cache_hit_is_recorded_at_zero_cost(
    costs: CapturedCosts, llm_cache: InMemoryCache
) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel()
    first = model.invoke("same question", config={"callbacks": [handler]})
    second = model.invoke("same question", config={"callbacks": [handler]})
    assert first.content == second.content
    assert model.calls == 1  # the provider was asked once

    miss, hit = costs.events
    assert (miss.cache_hit, miss.cost.total) == (False, ONE_CALL)
    assert hit.cache_hit is True
    assert hit.status == "ok"
    assert hit.cost.total == Decimal(0)
    assert hit.cost.status == "priced"
    assert hit.response_model == SNAPSHOT
    assert costs.total == ONE_CALL
    totals = handler.totals
    assert (totals.requests, totals.cache_hits, totals.total_cost) == (2, 1, ONE_CALL)
    assert (totals.input_tokens, totals.output_tokens) == (1000, 200)  # only the billed call
    rows = stored_rows()
    assert [(r.cache_hit, r.total_cost) for r in rows] == [(False, ONE_CALL), (True, 0)]


async def test_llm_cache_hit_async(costs: CapturedCosts, llm_cache: InMemoryCache) -> None:
    handler = CostLedgerCallbackHandler()
    model = UsageChatModel()
    await model.ainvoke("q", config={"callbacks": [handler]})
    await model.ainvoke("q", config={"callbacks": [handler]})
    assert [e.cache_hit for e in costs.events] == [False, True]
    assert costs.total == ONE_CALL


def test_attribution_from_metadata_and_tags(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | UsageChatModel()
    chain.invoke(
        {"q": "hi"},
        config={
            "callbacks": [handler],
            "tags": ["checkout"],
            "metadata": {
                "user": "u-1",
                "team": "payments",
                "costledger_team": "search",  # the prefixed key wins
                "costledger_feature": "answer",
                "costledger_tags": ["beta"],
                "costledger_env": "prod",
                "session_secret": "not copied",
            },
        },
    )
    [event] = costs.events
    assert event.user == "u-1"
    assert event.team == "search"
    assert event.feature == "answer"
    assert event.project is None
    assert event.tags == ("checkout", "beta")
    assert dict(event.metadata) == {"env": "prod"}


def test_user_id_metadata_stands_in_for_user(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    UsageChatModel().invoke("hi", config={"callbacks": [handler], "metadata": {"user_id": 7}})
    [event] = costs.events
    assert event.user == "7"


def test_attribution_from_costledger_attribute_reaches_batch_threads(
    costs: CapturedCosts,
) -> None:
    handler = CostLedgerCallbackHandler()
    with costledger.attribute(user="u-9", project="docs", tags=["nightly"]):
        UsageChatModel().batch(["a", "b", "c"], config={"callbacks": [handler]})
        UsageChatModel().invoke(
            "d", config={"callbacks": [handler], "metadata": {"costledger_user": "u-10"}}
        )
    assert [e.user for e in costs.events].count("u-9") == 3
    assert costs.events[-1].user == "u-10"  # per-call metadata is more specific
    assert {e.project for e in costs.events} == {"docs"}
    assert all("nightly" in e.tags for e in costs.events)


def test_unknown_model_is_unpriced_not_zero(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    UsageChatModel(model_name="house-model-7", snapshot="house-model-7-0611").invoke(
        "hi", config={"callbacks": [handler]}
    )
    [event] = costs.events
    assert event.cost.total is None
    assert event.cost.status == "unknown_model"
    assert event.usage.input_tokens == 1000
    assert handler.totals.unpriced == 1
    assert handler.totals.total_cost == 0


def test_own_tracker_and_ledger() -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, log="off", team="default-team")
    handler = CostLedgerCallbackHandler(tracker)
    assert handler.tracker is tracker
    UsageChatModel().batch(["a", "b"], config={"callbacks": [handler]})
    rows = list(ledger.events())
    assert len(rows) == 2
    assert {r.team for r in rows} == {"default-team"}
    assert {r.source for r in rows} == {"langchain"}
    assert {r.response_model for r in rows} == {SNAPSHOT}
    assert sum((r.total_cost or Decimal(0) for r in rows), Decimal(0)) == 2 * ONE_CALL


def test_handler_contract() -> None:
    handler = CostLedgerCallbackHandler()
    assert handler.run_inline is True
    assert handler.raise_error is True
    assert hash(handler) == hash(handler)
    assert handler != CostLedgerCallbackHandler()
    assert len({handler, CostLedgerCallbackHandler()}) == 2
    assert isinstance(handler.totals, CostTotals)


def test_handler_never_raises_on_garbage(costs: CapturedCosts) -> None:
    from uuid import uuid4

    handler = CostLedgerCallbackHandler()
    run_id = uuid4()
    bad: Any = object()
    handler.on_chat_model_start(bad, bad, run_id=run_id, metadata=bad, tags=bad)
    handler.on_llm_new_token("x", chunk=bad, run_id=run_id)
    handler.on_llm_end(bad, run_id=run_id)
    handler.on_llm_error(ValueError("x"), run_id=uuid4(), response=bad)
    handler.on_llm_end(bad, run_id=uuid4())  # never started: ignored
    assert len(costs.events) <= 1


def test_bad_usage_payload_is_recorded_without_usage(costs: CapturedCosts) -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    handler = CostLedgerCallbackHandler()
    from uuid import uuid4

    run_id = uuid4()
    handler.on_chat_model_start({}, [[]], run_id=run_id, metadata={"ls_model_name": "gpt-4o"})
    message = AIMessage(content="x")
    # A provider bug: more cached tokens than input. Recorded, flagged, never raised.
    message.usage_metadata = usage_metadata(10, 1, cached=50)
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]), run_id=run_id)
    [event] = costs.events
    assert event.cost.total is None
    assert event.metadata.get("costledger.tracking_error") == "UsageError"


class CompletionLLM(BaseLLM):
    """A completion model (on_llm_start path) reporting usage only in llm_output, OpenAI-style."""

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return LLMResult(
            generations=[[Generation(text="done")] for _ in prompts],
            llm_output={
                "token_usage": {"prompt_tokens": 1000, "completion_tokens": 200},
                "model_name": SNAPSHOT,
            },
        )

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="openai", ls_model_name="gpt-4o-mini")

    @property
    def _llm_type(self) -> str:
        return "completion-fake"


def test_completion_llm_usage_from_llm_output(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    assert CompletionLLM().invoke("hi", config={"callbacks": [handler]}) == "done"
    [event] = costs.events
    assert event.model == "gpt-4o-mini"
    assert event.response_model == SNAPSHOT
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 200)
    assert event.cost.total == ONE_CALL


class BatchCompletionLLM(BaseLLM):
    """A completion model answering all its prompts in one request, like langchain-openai's
    ``OpenAI``: the request's usage (1000 in, 200 out per prompt) once, in ``llm_output``,
    under ``usage_key``, or an empty ``token_usage`` when ``report_usage`` is off (the
    request's usage is unknown)."""

    usage_key: str = "token_usage"
    report_usage: bool = True
    requests: int = 0

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        self.requests += 1
        n = len(prompts)
        usage = {"prompt_tokens": 1000 * n, "completion_tokens": 200 * n, "total_tokens": 1200 * n}
        return LLMResult(
            generations=[[Generation(text=f"answer {p}")] for p in prompts],
            llm_output={
                self.usage_key: usage if self.report_usage else {},
                "model_name": SNAPSHOT,
            },
        )

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="openai", ls_model_name="gpt-4o-mini")

    @property
    def _llm_type(self) -> str:
        return "batch-completion-fake"


def _check_one_request_of_three(costs: CapturedCosts, handler: CostLedgerCallbackHandler) -> None:
    """Three prompts, one request: its usage and cost once, the other two runs at exactly $0."""
    first, *others = costs.events
    assert len(others) == 2
    assert (first.usage.input_tokens, first.usage.output_tokens) == (3000, 600)
    assert first.cost.total == 3 * ONE_CALL
    for event in others:
        assert event.status == "ok"
        assert event.usage == Usage()
        assert event.cost.status == "priced"
        assert event.cost.total == Decimal(0)
        assert event.response_model == SNAPSHOT
    totals = handler.totals
    assert (totals.requests, totals.unpriced, totals.errors) == (3, 0, 0)
    assert (totals.input_tokens, totals.output_tokens) == (3000, 600)
    assert totals.total_cost == costs.total == 3 * ONE_CALL


@pytest.mark.parametrize("usage_key", ["token_usage", "usage"])
def test_completion_llm_batch_is_one_request_counted_once(
    costs: CapturedCosts, usage_key: str
) -> None:
    handler = CostLedgerCallbackHandler()
    llm = BatchCompletionLLM(usage_key=usage_key)
    result = llm.generate(["a", "b", "c"], callbacks=[handler])
    assert [g[0].text for g in result.generations] == ["answer a", "answer b", "answer c"]
    assert llm.requests == 1
    _check_one_request_of_three(costs, handler)


async def test_completion_llm_abatch_is_one_request_counted_once(costs: CapturedCosts) -> None:
    handler = CostLedgerCallbackHandler()
    llm = BatchCompletionLLM()
    assert await llm.abatch(["a", "b", "c"], config={"callbacks": [handler]}) == [
        "answer a",
        "answer b",
        "answer c",
    ]
    assert llm.requests == 1
    _check_one_request_of_three(costs, handler)


def test_completion_llm_empty_token_usage_of_a_single_call_is_unknown(
    costs: CapturedCosts,
) -> None:
    """Outside a batch an empty token_usage is usage the integration did not report (as
    langchain-openai's streamed completions): unpriced, never a silent $0."""
    handler = CostLedgerCallbackHandler()
    BatchCompletionLLM(report_usage=False).invoke("hi", config={"callbacks": [handler]})
    [event] = costs.events
    assert event.status == "ok"
    assert event.cost.total is None
    assert event.cost.status == "not_priced"
    assert handler.totals.unpriced == 1


def test_handler_totals_keep_events_only_when_asked(costs: CapturedCosts) -> None:
    lean = CostLedgerCallbackHandler()
    keeping = CostLedgerCallbackHandler(max_events=2)
    for question in ("a", "b", "c"):
        UsageChatModel().invoke(question, config={"callbacks": [lean, keeping]})
    assert lean.totals.events == []
    assert lean.totals.requests == 3
    assert keeping.totals.events == costs.events[1:]
    assert keeping.totals.total_cost == lean.totals.total_cost == 3 * ONE_CALL
