"""``@track_cost`` on streams and on what a call goes on in, with the real SDK clients
against the local fake provider and the SDKs' own types, the real pricer and ledger.

Each provider spreads a stream's usage its own way (see ``costledger._streams``, which
the HTTP transport's scanners use too): Anthropic's ``message_start`` + ``message_delta``,
the Responses API's final event, LangChain's chunk increments. A plain function that
returns an SDK stream, a generator or a coroutine is recorded when that ends.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import operator
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import anthropic.types as at
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

from costledger import Usage, track_cost
from costledger.testing import CapturedCosts

from ._fake_provider import (
    ANTHROPIC_START_USAGE,
    FakeProvider,
    Reply,
    anthropic_stream,
    chat_completion,
    responses_stream,
)

KEY = "sk-test-0000"
M = Decimal(1_000_000)

# The fake provider's default usages, priced by hand (USD per million tokens).
# Anthropic stream: 1000 uncached + 4000 cache read + 2000 cache write in, 300 out;
# claude-3-5-haiku: 0.80 input, 0.08 cache read, 1.00 cache write, 4.00 output.
HAIKU_USAGE = Usage(
    input_tokens=7000, output_tokens=300, cache_read_tokens=4000, cache_write_tokens=2000
)
HAIKU_COST = (1000 * Decimal("0.80") + 4000 * Decimal("0.08") + 2000 * 1 + 300 * 4) / M
# OpenAI chat: 2000 in (1000 cached), 500 out (200 reasoning); gpt-4o-mini: 0.15 input,
# 0.075 cached, 0.60 output.
CHAT_USAGE = Usage(
    input_tokens=2000, output_tokens=500, cache_read_tokens=1000, reasoning_tokens=200
)
CHAT_COST = (1000 * Decimal("0.15") + 1000 * Decimal("0.075") + 500 * Decimal("0.60")) / M
# OpenAI Responses: 3000 in (2000 cached), 400 out (100 reasoning), gpt-4o-mini.
RESPONSES_USAGE = Usage(
    input_tokens=3000, output_tokens=400, cache_read_tokens=2000, reasoning_tokens=100
)
RESPONSES_COST = (1000 * Decimal("0.15") + 2000 * Decimal("0.075") + 400 * Decimal("0.60")) / M

SONNET = "claude-sonnet-4-5-20250929"
# 100 uncached + 1000 cache read + 200 cache write in, 50 out; claude-sonnet-4-5: 3.00
# input, 0.30 cache read, 3.75 cache write, 15.00 output.
SONNET_COST = (100 * 3 + 1000 * Decimal("0.30") + 200 * Decimal("3.75") + 50 * 15) / M
assert Decimal("0.0021") == SONNET_COST

GPT4O_MINI = "gpt-4o-mini-2024-07-18"


# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


def openai_client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_url, api_key=KEY, max_retries=0)


def async_openai_client(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_url, api_key=KEY, max_retries=0)


def anthropic_client(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key=KEY, max_retries=0)


def summary(costs: CapturedCosts) -> list[tuple[Any, ...]]:
    return [
        (e.status, e.streamed, e.usage, e.response_model, e.cost.total, dict(e.metadata))
        for e in costs.events
    ]


HI: Any = [{"role": "user", "content": "hi"}]


# -- Anthropic: message_start + message_delta ------------------------------------------------------


def test_anthropic_sdk_stream_merges_message_start_and_deltas(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = anthropic_client(provider)
    aclient = anthropic.AsyncAnthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)
    haiku = "claude-3-5-haiku-20241022"

    @track_cost
    def stream() -> Iterator[Any]:
        yield from client.messages.create(model=haiku, max_tokens=10, messages=HI, stream=True)

    @track_cost
    async def astream() -> AsyncIterator[Any]:
        events: Any = await aclient.messages.create(
            model=haiku, max_tokens=10, messages=HI, stream=True
        )
        async for event in events:
            yield event

    async def consume() -> int:
        return len([e async for e in astream()])

    assert len(list(stream())) == 8  # the SDK drops the ping
    assert asyncio.run(consume()) == 8
    # Several deltas, the last repeating the cumulative input and cache counts (as the
    # API does lately): later values replace earlier ones, nothing is added twice.
    repeated = {k: v for k, v in ANTHROPIC_START_USAGE.items() if k != "service_tier"}
    provider.enqueue(
        "/v1/messages",
        Reply(
            sse=anthropic_stream(
                haiku, delta_usages=[{"output_tokens": 120}, {**repeated, "output_tokens": 300}]
            )
        ),
    )
    list(stream())
    assert summary(costs) == 3 * [("ok", True, HAIKU_USAGE, haiku, HAIKU_COST, {})]


def _anthropic_events(delta_usage: dict[str, int]) -> list[Any]:
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": SONNET,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 1,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
        },
    }
    return [
        at.RawMessageStartEvent.model_validate({"type": "message_start", "message": message}),
        at.RawContentBlockDeltaEvent.model_validate(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hi"},
            }
        ),
        at.RawMessageDeltaEvent.model_validate(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            }
        ),
        at.RawMessageStopEvent.model_validate({"type": "message_stop"}),
    ]


def test_anthropic_event_objects_keep_the_input_and_the_model(costs: CapturedCosts) -> None:
    classic = _anthropic_events({"output_tokens": 50})
    newer = _anthropic_events(
        {
            "output_tokens": 50,
            "input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
        }
    )

    @track_cost
    def stream(events: list[Any]) -> Iterator[Any]:
        yield from events

    # usage= answers go through the same merge: items that wrap the SDK's events
    @track_cost(usage=lambda item: item["event"])
    def wrapped(events: list[Any]) -> Iterator[dict[str, Any]]:
        for event in events:
            yield {"event": event}

    assert list(stream(classic)) == classic
    list(stream(newer))
    list(wrapped(classic))
    usage = Usage(
        input_tokens=1300, output_tokens=50, cache_read_tokens=1000, cache_write_tokens=200
    )
    assert summary(costs) == 3 * [("ok", True, usage, SONNET, SONNET_COST, {})]
    assert [e.model for e in costs.events] == 3 * [SONNET]  # no model= given: the response's


# -- OpenAI Responses: the final event ------------------------------------------------------------


def test_responses_sdk_stream_reads_the_final_event(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai_client(provider)

    @track_cost
    def stream() -> Iterator[Any]:
        yield from client.responses.create(model="gpt-4o-mini", input="hi", stream=True)

    list(stream())
    provider.enqueue(
        "/responses", Reply(sse=responses_stream("gpt-4o-mini", final="response.incomplete"))
    )
    list(stream())
    assert summary(costs) == 2 * [("ok", True, RESPONSES_USAGE, "gpt-4o-mini", RESPONSES_COST, {})]


def test_responses_event_objects(costs: CapturedCosts) -> None:
    final = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-4o-2024-08-06",
        "output": [],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 1000,
            "output_tokens": 200,
            "total_tokens": 1200,
            "input_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    events = [
        ResponseTextDeltaEvent.model_validate(
            {
                "type": "response.output_text.delta",
                "item_id": "i",
                "output_index": 0,
                "content_index": 0,
                "delta": "hi",
                "sequence_number": 1,
                "logprobs": [],
            }
        ),
        ResponseCompletedEvent.model_validate(
            {"type": "response.completed", "sequence_number": 2, "response": final}
        ),
    ]

    @track_cost
    def stream() -> Iterator[Any]:
        yield from events

    list(stream())
    usage = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400)
    # gpt-4o: 2.50 input, 1.25 cached, 10.00 output
    cost = (600 * Decimal("2.5") + 400 * Decimal("1.25") + 200 * 10) / M
    assert cost == Decimal("0.004")
    assert summary(costs) == [("ok", True, usage, "gpt-4o-2024-08-06", cost, {})]


def test_groq_chunks_with_usage_under_x_groq(costs: CapturedCosts) -> None:
    def chunk(extra: dict[str, Any]) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate(
            {
                "id": "chatcmpl-g",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "llama-3.1-8b-instant",
                "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
                **extra,
            }
        )

    chunks = [
        chunk({}),
        chunk(
            {"x_groq": {"id": "req_1", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}}
        ),
    ]

    @track_cost(provider="groq")
    def stream() -> Iterator[Any]:
        yield from chunks

    list(stream())
    cost = (1000 * Decimal("0.05") + 100 * Decimal("0.08")) / M  # 0.05 input, 0.08 output
    usage = Usage(input_tokens=1000, output_tokens=100)
    assert summary(costs) == [("ok", True, usage, "llama-3.1-8b-instant", cost, {})]


# -- LangChain chunks: increments, added (running totals: the last) -----------------------------


def test_langchain_chunk_usages_are_added_unless_running_totals(costs: CapturedCosts) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessageChunk

    def chunks(usages: list[dict[str, Any] | None]) -> list[AIMessageChunk]:
        out = [
            AIMessageChunk(content=f"w{i}", usage_metadata=usage)  # type: ignore[arg-type]
            for i, usage in enumerate(usages)
        ]
        out[-1].response_metadata = {"model_name": GPT4O_MINI, "finish_reason": "stop"}
        return out

    def um(inp: int, out: int, cached: int = 0) -> dict[str, Any]:
        usage: dict[str, Any] = {"input_tokens": inp, "output_tokens": out}
        usage["total_tokens"] = inp + out
        if cached:
            usage["input_token_details"] = {"cache_read": cached}
        return usage

    streams = {
        # Anthropic's way: the prompt on the first chunk, the output on the last
        "first and last": chunks([um(1000, 0, 400), None, None, um(0, 200)]),
        # langchain-google-genai: an increment on every chunk
        "every chunk": chunks([um(1000, 50, 400), um(0, 50), um(0, 50), um(0, 50)]),
        # OpenAI with stream_usage: the whole usage on the final chunk
        "final only": chunks([None, None, um(1000, 200, 400)]),
        # a running total on every chunk: LangChain's own sum would count it 4 times
        "running total": chunks([um(1000, 50, 400), um(1000, 100, 400), um(1000, 200, 400)]),
    }

    @track_cost
    def stream(items: list[AIMessageChunk]) -> Iterator[AIMessageChunk]:
        yield from items

    for items in streams.values():
        assert list(stream(items)) == items
    usage = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400)
    cost = (600 * Decimal("0.15") + 400 * Decimal("0.075") + 200 * Decimal("0.60")) / M
    assert cost == Decimal("0.00024")
    assert summary(costs) == 4 * [("ok", True, usage, GPT4O_MINI, cost, {})]
    # as LangChain adds the increments itself
    for name in ("first and last", "every chunk", "final only"):
        total = functools.reduce(operator.add, streams[name]).usage_metadata
        assert total is not None
        assert (total["input_tokens"], total["output_tokens"]) == (1000, 200)


# -- a plain function that returns a stream or an awaitable ---------------------------------------


def test_plain_function_returning_an_sdk_stream_is_recorded_at_its_end(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai_client(provider)
    claude = anthropic_client(provider)

    @track_cost(feature="chat")
    def ask() -> Any:
        return client.chat.completions.create(
            model=GPT4O_MINI, messages=HI, stream=True, stream_options={"include_usage": True}
        )

    @track_cost
    def ask_claude() -> Any:
        return claude.messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=10, messages=HI, stream=True
        )

    stream = ask()
    assert stream.response.status_code == 200  # the SDK stream's own attributes
    assert costs.events == []  # not ended yet
    for _ in stream:
        time.sleep(0.02)  # the consumer's pace: the call lasts as long as the stream
    with ask() as again:  # the SDK stream's context manager
        chunks = list(again)
    assert chunks[-1].usage.prompt_tokens == 2000
    assert len(list(ask_claude())) == 8  # the SDK drops the ping
    assert summary(costs) == [
        ("ok", True, CHAT_USAGE, GPT4O_MINI, CHAT_COST, {}),
        ("ok", True, CHAT_USAGE, GPT4O_MINI, CHAT_COST, {}),
        ("ok", True, HAIKU_USAGE, "claude-3-5-haiku-20241022", HAIKU_COST, {}),
    ]
    assert costs.events[0].feature == "chat"
    latency = costs.events[0].latency_ms
    assert latency is not None
    assert latency >= 100  # 6 chunks x 20 ms


def test_returned_stream_closed_early_or_never_iterated_is_cancelled(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai_client(provider)
    claude = anthropic_client(provider)

    @track_cost
    def ask() -> Any:
        return client.chat.completions.create(
            model=GPT4O_MINI, messages=HI, stream=True, stream_options={"include_usage": True}
        )

    @track_cost
    def ask_claude() -> Any:
        return claude.messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=10, messages=HI, stream=True
        )

    stream = ask()
    next(stream)
    stream.close()  # before the usage chunk: nothing known to price
    claude_stream = ask_claude()
    for event in claude_stream:
        if event.type == "content_block_delta":
            break
    claude_stream.close()  # after message_start: its input (and 1 output token) is known
    never = ask()
    del never
    gc.collect()
    started = Usage(
        input_tokens=7000, output_tokens=1, cache_read_tokens=4000, cache_write_tokens=2000
    )
    started_cost = (1000 * Decimal("0.80") + 4000 * Decimal("0.08") + 2000 + 4) / M
    assert summary(costs) == [
        ("cancelled", True, Usage(), None, None, {}),
        ("cancelled", True, started, "claude-3-5-haiku-20241022", started_cost, {}),
        (
            "cancelled",
            True,
            Usage(),
            None,
            None,
            {"costledger.usage_error": "no usage: never iterated"},
        ),
    ]


def test_plain_function_returning_a_coroutine_is_recorded_when_awaited(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = async_openai_client(provider)

    @track_cost
    def ask() -> Any:  # a plain def returning the async SDK's coroutine
        return client.chat.completions.create(model=GPT4O_MINI, messages=HI)

    @track_cost
    def ask_stream() -> Any:  # ... whose result is an AsyncStream
        return client.chat.completions.create(
            model=GPT4O_MINI, messages=HI, stream=True, stream_options={"include_usage": True}
        )

    @track_cost
    async def ask_async_stream() -> Any:  # an async def returning the AsyncStream
        return await client.chat.completions.create(
            model=GPT4O_MINI, messages=HI, stream=True, stream_options={"include_usage": True}
        )

    class Agent:  # an object with an async __call__ is wrapped as a plain callable
        async def __call__(self) -> Any:
            return await client.chat.completions.create(model=GPT4O_MINI, messages=HI)

    agent = track_cost(Agent())

    async def main() -> list[Any]:
        answer = await ask()
        chunks = [c async for c in await ask_stream()]
        async with await ask_async_stream() as stream:
            chunks += [c async for c in stream]
        return [answer, chunks, await agent()]

    provider.enqueue("/chat/completions", Reply(json=chat_completion(GPT4O_MINI), delay=0.1))
    answer, chunks, agent_answer = asyncio.run(main())
    assert answer.usage.prompt_tokens == agent_answer.usage.prompt_tokens == 2000
    assert len(chunks) == 12
    assert summary(costs) == [
        ("ok", False, CHAT_USAGE, GPT4O_MINI, CHAT_COST, {}),
        ("ok", True, CHAT_USAGE, GPT4O_MINI, CHAT_COST, {}),
        ("ok", True, CHAT_USAGE, GPT4O_MINI, CHAT_COST, {}),
        ("ok", False, CHAT_USAGE, GPT4O_MINI, CHAT_COST, {}),
    ]
    latency = costs.events[0].latency_ms
    assert latency is not None
    assert latency >= 100  # the server's delay, not ~0


def test_returned_coroutine_never_awaited_or_failing_and_a_task(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = async_openai_client(provider)

    @track_cost
    def ask() -> Any:
        return client.chat.completions.create(model=GPT4O_MINI, messages=HI)

    @track_cost
    def ask_task() -> asyncio.Task[ChatCompletion]:  # a Task is handed back as it is
        return asyncio.ensure_future(client.chat.completions.create(model=GPT4O_MINI, messages=HI))

    async def main() -> None:
        task = ask_task()
        assert isinstance(task, asyncio.Task)
        assert (await task).usage is not None
        provider.enqueue("/chat/completions", Reply(status=500, json={"error": "down"}))
        with pytest.raises(openai.InternalServerError):
            await ask()

    asyncio.run(main())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... never awaited"
        never = ask()
        del never
        gc.collect()
    assert [(e.status, e.usage, e.cost.total, e.error_type) for e in costs.events] == [
        ("ok", CHAT_USAGE, CHAT_COST, None),
        ("error", Usage(), None, "InternalServerError"),
        ("cancelled", Usage(), None, None),
    ]
    assert costs.events[-1].metadata == {"costledger.usage_error": "no usage: never awaited"}


def test_returned_generators_are_streams_and_other_values_are_responses(
    costs: CapturedCosts,
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    chunks: list[dict[str, Any]] = [
        {"model": GPT4O_MINI, "choices": [{"delta": {"content": "a"}}], "usage": None},
        {
            "model": GPT4O_MINI,
            "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 200},
        },
    ]
    completion = ChatCompletion.model_validate(chat_completion(GPT4O_MINI))
    message = AIMessage(
        content="hi",
        usage_metadata={"input_tokens": 1000, "output_tokens": 200, "total_tokens": 1200},
        response_metadata={"model_name": GPT4O_MINI},
    )
    answers: dict[str, Any] = {"dict": chat_completion(GPT4O_MINI), "sdk": completion}
    answers["langchain"] = message

    @track_cost
    def answer(kind: str) -> Any:
        return answers[kind]

    @track_cost
    def gen() -> Iterator[dict[str, Any]]:  # a plain def returning a generator
        return (chunk for chunk in chunks)

    @track_cost
    def it() -> Iterator[dict[str, Any]]:  # any other iterator is a response
        return iter(chunks)

    @track_cost
    def agen() -> AsyncIterator[dict[str, Any]]:  # ... or an async generator
        async def items() -> AsyncIterator[dict[str, Any]]:
            for chunk in chunks:
                yield chunk

        return items()

    async def consume() -> list[dict[str, Any]]:
        return [c async for c in agen()]

    for kind, value in answers.items():
        assert answer(kind) is value  # handed back as it is, recorded at once
    assert len(costs.events) == 3
    assert list(gen()) == chunks
    assert asyncio.run(consume()) == chunks
    items = it()
    assert type(items) is type(iter([]))  # handed back as it is
    assert list(items) == chunks
    one = (1000 * Decimal("0.15") + 200 * Decimal("0.60")) / M
    lc_usage = Usage(input_tokens=1000, output_tokens=200)
    assert [(e.streamed, e.usage, e.cost.total) for e in costs.events] == [
        (False, CHAT_USAGE, CHAT_COST),
        (False, CHAT_USAGE, CHAT_COST),
        (False, lc_usage, one),
        (True, lc_usage, one),
        (True, lc_usage, one),
        (False, Usage(), None),
    ]
    assert costs.events[-1].metadata == {"costledger.tracking_error": "UsageError"}


def test_a_function_returning_none_is_noted_as_no_usage(costs: CapturedCosts) -> None:
    @track_cost(model="gpt-4o-mini")
    def nothing() -> None:
        return None

    @track_cost(model="gpt-4o-mini")
    async def anothing() -> None:
        return None

    nothing()
    asyncio.run(anothing())
    assert summary(costs) == 2 * [
        ("ok", False, Usage(), None, None, {"costledger.usage_error": "no usage"})
    ]
