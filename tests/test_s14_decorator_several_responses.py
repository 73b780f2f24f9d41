"""``@track_cost`` on a generator that yields several billed responses: each is counted.

A generator that yields two whole responses (two requests: a loop over prompts, a tool
loop), or streams two requests one after the other, spent the money of both; the call's
event recorded the last one's usage only. Now a response ends where the next begins (an
Anthropic ``message_start``, a whole response, another response id) and the responses'
usages are added into the call's one event (same model and tier), or, for another model,
recorded as an event of their own. A stream of ONE response is read as before: its chunks
that repeat the usage so far, Anthropic's cumulative ``message_delta``, LangChain's chunk
increments are not added twice. Real SDK clients against the local fake provider, the
SDKs' and LangChain's own types, the real pricer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from costledger import Usage, track_cost
from costledger.testing import CapturedCosts, capture_costs

from ._fake_provider import (
    ANTHROPIC_USAGE,
    CHAT_USAGE,
    FakeProvider,
    Reply,
    anthropic_message,
    anthropic_stream,
    chat_completion,
    chat_stream,
    responses_stream,
)

KEY = "sk-test-0000"
M = Decimal(1_000_000)
MINI = "gpt-4o-mini-2024-07-18"
HAIKU = "claude-3-5-haiku-20241022"
HI: Any = [{"role": "user", "content": "hi"}]

# Prices (USD per million tokens): gpt-4o-mini 0.15 input, 0.075 cached, 0.60 output;
# gpt-4o 2.50 input, 10.00 output; claude-3-5-haiku 0.80 input, 0.08 cache read, 1.00
# cache write, 4.00 output.

# OpenAI chat, the fake provider's usage: 2000 in (1000 cached), 500 out (200 reasoning).
CHAT_A = Usage(input_tokens=2000, output_tokens=500, cache_read_tokens=1000, reasoning_tokens=200)
CHAT_A_COST = (1000 * Decimal("0.15") + 1000 * Decimal("0.075") + 500 * Decimal("0.60")) / M
# A second, smaller request: 1200 in, 80 out.
SMALL_CHAT: dict[str, Any] = {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280}
CHAT_B = Usage(input_tokens=1200, output_tokens=80)
CHAT_B_COST = (1200 * Decimal("0.15") + 80 * Decimal("0.60")) / M
CHAT_AB = Usage(input_tokens=3200, output_tokens=580, cache_read_tokens=1000, reasoning_tokens=200)
CHAT_AB_COST = CHAT_A_COST + CHAT_B_COST
assert Decimal("0.000753") == CHAT_AB_COST

# Anthropic, the fake provider's usage: 1000 uncached + 4000 cache read + 2000 cache
# write in, 300 out; a second message 500 in, 100 out.
HAIKU_A = Usage(
    input_tokens=7000, output_tokens=300, cache_read_tokens=4000, cache_write_tokens=2000
)
HAIKU_A_COST = (1000 * Decimal("0.80") + 4000 * Decimal("0.08") + 2000 * 1 + 300 * 4) / M
SMALL_ANTHROPIC: dict[str, Any] = {
    "input_tokens": 500,
    "output_tokens": 100,
    "service_tier": "standard",  # as the fake provider's first message: one price
}
HAIKU_AB = Usage(
    input_tokens=7500, output_tokens=400, cache_read_tokens=4000, cache_write_tokens=2000
)
HAIKU_AB_COST = HAIKU_A_COST + (500 * Decimal("0.80") + 100 * 4) / M
assert Decimal("0.00512") == HAIKU_AB_COST

# OpenAI Responses, the fake provider's usage: 3000 in (2000 cached), 400 out (100
# reasoning), gpt-4o-mini; a second response 1200 in, 80 out.
RESP_A = Usage(input_tokens=3000, output_tokens=400, cache_read_tokens=2000, reasoning_tokens=100)
RESP_A_COST = (1000 * Decimal("0.15") + 2000 * Decimal("0.075") + 400 * Decimal("0.60")) / M
SMALL_RESPONSES: dict[str, Any] = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 80,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 1280,
}
RESP_AB = Usage(input_tokens=4200, output_tokens=480, cache_read_tokens=2000, reasoning_tokens=100)
RESP_AB_COST = RESP_A_COST + CHAT_B_COST
assert Decimal("0.000768") == RESP_AB_COST

# LangChain: 1000 in / 50 out, then 1200 in / 80 out, gpt-4o-mini.
LC_AB = Usage(input_tokens=2200, output_tokens=130)
LC_AB_COST = (2200 * Decimal("0.15") + 130 * Decimal("0.60")) / M
assert Decimal("0.000408") == LC_AB_COST


# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


def _rows(costs: CapturedCosts) -> list[tuple[Any, ...]]:
    return [
        (e.status, e.streamed, e.usage, e.response_model, e.cost.total, e.request_id)
        for e in costs.events
    ]


def _renamed(sse: list[tuple[str | None, str]], old: str, new: str) -> list[tuple[str | None, str]]:
    """A scripted stream whose response id is ``new`` (the fake provider's are fixed)."""
    return [(name, data.replace(old, new)) for name, data in sse]


def _chat(response_id: str, usage: dict[str, Any] | None = None) -> Reply:
    return Reply(json={**chat_completion(MINI, usage=usage), "id": response_id})


def _message(message_id: str, usage: dict[str, Any] | None = None) -> Reply:
    return Reply(json={**anthropic_message(HAIKU, usage=usage), "id": message_id})


# -- two whole responses: both are counted ---------------------------------------------------------


def test_two_openai_chat_completions_are_both_counted(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai.OpenAI(base_url=provider.openai_url, api_key=KEY, max_retries=0)
    provider.enqueue("/chat/completions", _chat("chatcmpl-a"), _chat("chatcmpl-b", SMALL_CHAT))

    @track_cost
    def answers() -> Iterator[ChatCompletion]:
        for prompt in ("one", "two"):
            yield client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )

    assert [r.id for r in answers()] == ["chatcmpl-a", "chatcmpl-b"]
    # One decorated call, one event: both requests' tokens and money (the first's id).
    assert _rows(costs) == [("ok", True, CHAT_AB, MINI, CHAT_AB_COST, "chatcmpl-a")]


def test_two_openai_responses_as_dicts_are_both_counted(costs: CapturedCosts) -> None:
    first = {**chat_completion(MINI), "id": "chatcmpl-a"}
    second = {**chat_completion(MINI, usage=SMALL_CHAT), "id": "chatcmpl-b"}

    @track_cost
    def answers() -> Iterator[dict[str, Any]]:
        yield first
        yield second

    list(answers())
    assert _rows(costs) == [("ok", True, CHAT_AB, MINI, CHAT_AB_COST, "chatcmpl-a")]


def test_two_anthropic_messages_are_both_counted(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = anthropic.Anthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)
    provider.enqueue("/v1/messages", _message("msg_a"), _message("msg_b", SMALL_ANTHROPIC))

    @track_cost(provider="anthropic")
    def answers() -> Iterator[Message]:
        for _ in range(2):
            yield client.messages.create(model=HAIKU, max_tokens=10, messages=HI)

    assert [m.id for m in answers()] == ["msg_a", "msg_b"]
    assert _rows(costs) == [("ok", True, HAIKU_AB, HAIKU, HAIKU_AB_COST, "msg_a")]


def test_two_bedrock_converse_responses_are_both_counted(costs: CapturedCosts) -> None:
    """boto3's ``converse`` answers (no response id in the body): each a whole response."""

    def converse(inp: int, out: int) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": inp, "outputTokens": out, "totalTokens": inp + out},
            "metrics": {"latencyMs": 100},
        }

    @track_cost(model="amazon.nova-micro-v1:0", provider="bedrock")
    def answers() -> Iterator[dict[str, Any]]:
        yield converse(1000, 50)
        yield converse(1200, 80)

    list(answers())
    cost = (2200 * Decimal("0.035") + 130 * Decimal("0.14")) / M
    assert Decimal("0.0000952") == cost
    assert _rows(costs) == [("ok", True, LC_AB, None, cost, None)]


def test_two_langchain_messages_are_both_counted(costs: CapturedCosts) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    def message(inp: int, out: int) -> AIMessage:  # built by hand: no message id
        usage: Any = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
        return AIMessage(content="x", usage_metadata=usage, response_metadata={"model_name": MINI})

    @track_cost
    def answers() -> Iterator[AIMessage]:
        yield message(1000, 50)
        yield message(1200, 80)  # more of both: not a running total of the first

    list(answers())
    assert _rows(costs) == [("ok", True, LC_AB, MINI, LC_AB_COST, None)]


def test_two_langchain_model_calls_are_both_counted(costs: CapturedCosts) -> None:
    """The real LangChain runtime: ``invoke`` twice (each message gets its run id)."""
    pytest.importorskip("langchain_core")
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Model(BaseChatModel):
        input_tokens: int
        output_tokens: int

        def _generate(self, messages: list[BaseMessage], *a: Any, **k: Any) -> ChatResult:
            inp, out = self.input_tokens, self.output_tokens
            usage: Any = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
            message = AIMessage(
                content="x", usage_metadata=usage, response_metadata={"model_name": MINI}
            )
            return ChatResult(generations=[ChatGeneration(message=message)])

        @property
        def _llm_type(self) -> str:
            return "usage-fake"

    first = Model(input_tokens=1000, output_tokens=50)
    second = Model(input_tokens=1200, output_tokens=80)

    @track_cost
    def agent() -> Iterator[Any]:
        yield first.invoke("step 1")
        yield second.invoke("step 2")

    messages = list(agent())
    assert messages[0].id != messages[1].id
    assert _rows(costs) == [("ok", True, LC_AB, MINI, LC_AB_COST, None)]


def test_an_async_generator_of_two_responses_counts_both(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai.AsyncOpenAI(base_url=provider.openai_url, api_key=KEY, max_retries=0)
    provider.enqueue("/chat/completions", _chat("chatcmpl-a"), _chat("chatcmpl-b", SMALL_CHAT))

    @track_cost
    async def answers() -> AsyncIterator[ChatCompletion]:
        for prompt in ("one", "two"):
            yield await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )

    async def main() -> list[str]:
        return [r.id async for r in answers()]

    assert asyncio.run(main()) == ["chatcmpl-a", "chatcmpl-b"]
    assert _rows(costs) == [("ok", True, CHAT_AB, MINI, CHAT_AB_COST, "chatcmpl-a")]


# -- two streamed requests in one generator (a tool loop) ------------------------------------------


def test_two_openai_chat_streams_are_both_counted(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai.OpenAI(base_url=provider.openai_url, api_key=KEY, max_retries=0)
    provider.enqueue(
        "/chat/completions",
        Reply(sse=_renamed(chat_stream(MINI), "chatcmpl-fake0002", "chatcmpl-a")),
        Reply(sse=_renamed(chat_stream(MINI, usage=SMALL_CHAT), "chatcmpl-fake0002", "chatcmpl-b")),
    )

    @track_cost
    def tool_loop() -> Iterator[Any]:
        for _ in range(2):
            yield from client.chat.completions.create(
                model="gpt-4o-mini",
                messages=HI,
                stream=True,
                stream_options={"include_usage": True},
            )

    assert len({chunk.id for chunk in tool_loop()}) == 2
    assert _rows(costs) == [("ok", True, CHAT_AB, MINI, CHAT_AB_COST, "chatcmpl-a")]


def test_two_anthropic_streams_are_both_counted(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = anthropic.Anthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)
    second = anthropic_stream(
        HAIKU,
        start_usage={"input_tokens": 500, "output_tokens": 1, "service_tier": "standard"},
        delta_usages=[{"output_tokens": 100}],
    )
    provider.enqueue(
        "/v1/messages",
        Reply(sse=_renamed(anthropic_stream(HAIKU), "msg_fake0001", "msg_a")),
        Reply(sse=_renamed(second, "msg_fake0001", "msg_b")),
    )

    @track_cost(provider="anthropic")
    def tool_loop() -> Iterator[Any]:
        for _ in range(2):
            yield from client.messages.create(model=HAIKU, max_tokens=10, messages=HI, stream=True)

    assert sum(event.type == "message_start" for event in tool_loop()) == 2
    assert _rows(costs) == [("ok", True, HAIKU_AB, HAIKU, HAIKU_AB_COST, "msg_a")]


def test_two_responses_api_streams_are_both_counted(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai.OpenAI(base_url=provider.openai_url, api_key=KEY, max_retries=0)
    provider.enqueue(
        "/responses",
        Reply(sse=_renamed(responses_stream(MINI), "resp_fake0001", "resp_a")),
        Reply(
            sse=_renamed(responses_stream(MINI, usage=SMALL_RESPONSES), "resp_fake0001", "resp_b")
        ),
    )

    @track_cost
    def tool_loop() -> Iterator[Any]:
        for _ in range(2):
            yield from client.responses.create(model="gpt-4o-mini", input="hi", stream=True)

    assert sum(event.type == "response.completed" for event in tool_loop()) == 2
    assert _rows(costs) == [("ok", True, RESP_AB, MINI, RESP_AB_COST, "resp_a")]


# -- responses of two models: each priced at its own ----------------------------------------------


def test_responses_of_two_models_are_recorded_one_event_each(costs: CapturedCosts) -> None:
    """A sum cannot be priced at one model's rates: another model's responses are an
    event of their own, with the call's attribution; the call's event is the last one's."""
    cheap = {**chat_completion(MINI, usage=SMALL_CHAT), "id": "chatcmpl-a"}
    dear = {**chat_completion("gpt-4o-2024-08-06", usage=SMALL_CHAT), "id": "chatcmpl-b"}
    again = {**chat_completion(MINI, usage=SMALL_CHAT), "id": "chatcmpl-c"}

    @track_cost(user="ada", feature="router")
    def route() -> Iterator[dict[str, Any]]:
        yield cheap
        yield dear
        yield again

    list(route())
    two_small = Usage(input_tokens=2400, output_tokens=160)
    dear_cost = (1200 * Decimal("2.50") + 80 * 10) / M
    assert Decimal("0.0038") == dear_cost
    assert _rows(costs) == [
        ("ok", True, two_small, MINI, 2 * CHAT_B_COST, "chatcmpl-a"),
        ("ok", True, CHAT_B, "gpt-4o-2024-08-06", dear_cost, "chatcmpl-b"),
    ]
    assert [(e.source, e.user, e.feature) for e in costs.events] == 2 * [
        ("decorator", "ada", "router")
    ]
    assert len({e.id for e in costs.events}) == 2


def _gemini(response_id: str, prompt: int, out: int) -> dict[str, Any]:
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": out}
    return {
        "candidates": [],
        "usageMetadata": {**usage, "totalTokenCount": prompt + out},
        "modelVersion": "gemini-2.5-pro",
        "responseId": response_id,
    }


def test_responses_of_a_tiered_price_are_not_added(costs: CapturedCosts) -> None:
    """gemini-2.5-pro has a long-context tier (above 200k prompt tokens every token costs
    more): two 150k prompts added would be priced as one 300k prompt, at 0.78 USD instead
    of 2 x 0.1975. Each response is an event of its own, at its own price."""

    @track_cost(feature="agent")
    def agent() -> Iterator[dict[str, Any]]:
        yield _gemini("r-1", 150_000, 1000)
        yield _gemini("r-2", 150_000, 1000)

    list(agent())
    one = Usage(input_tokens=150_000, output_tokens=1000)
    cost = (150_000 * Decimal("1.25") + 1000 * 10) / M
    assert Decimal("0.1975") == cost
    assert _rows(costs) == [
        ("ok", True, one, "gemini-2.5-pro", cost, "r-1"),
        ("ok", True, one, "gemini-2.5-pro", cost, "r-2"),
    ]
    assert [e.feature for e in costs.events] == ["agent", "agent"]


def test_responses_of_a_per_request_price_are_not_added() -> None:
    """A price with a fee per request: two responses pay it twice."""
    book = {"search-model": {"input": "1", "output": "2", "per_request": "0.005"}}
    from costledger import Pricer

    def answer(response_id: str) -> dict[str, Any]:
        return {**chat_completion("search-model", usage=SMALL_CHAT), "id": response_id}

    with capture_costs(pricer=Pricer(overrides=book)) as costs:

        @track_cost
        def search() -> Iterator[dict[str, Any]]:
            yield answer("a")
            yield answer("b")

        list(search())
    cost = (1200 * 1 + 80 * 2) / M + Decimal("0.005")
    assert Decimal("0.00636") == cost
    assert _rows(costs) == [
        ("ok", True, CHAT_B, "search-model", cost, "a"),
        ("ok", True, CHAT_B, "search-model", cost, "b"),
    ]


def test_responses_of_a_model_without_a_price_are_not_added(costs: CapturedCosts) -> None:
    """Unpriced now, priced later by a price book that may have tiers: kept apart."""

    def answer(response_id: str) -> dict[str, Any]:
        return {**chat_completion("my-own-model", usage=SMALL_CHAT), "id": response_id}

    @track_cost
    def answers() -> Iterator[dict[str, Any]]:
        yield answer("a")
        yield answer("b")

    list(answers())
    assert [(e.usage, e.request_id, e.cost.status) for e in costs.events] == [
        (CHAT_B, "a", "unknown_model"),
        (CHAT_B, "b", "unknown_model"),
    ]


def test_a_budget_counts_every_response() -> None:
    """The call's reservation settles with its event; a response recorded apart is counted
    as recorded spend: the budget's spent is the ledger's total."""
    from costledger import Budget
    from costledger._tracker import drain_deferred, get_tracker

    budget = Budget("10 USD", "day")
    with capture_costs(guards=[budget]) as costs:

        @track_cost(estimate=Decimal("0.01"))
        def agent() -> Iterator[dict[str, Any]]:
            yield {**chat_completion(MINI, usage=SMALL_CHAT), "id": "chatcmpl-a"}
            yield _gemini("r-1", 150_000, 1000)
            yield _gemini("r-2", 150_000, 1000)

        list(agent())
        drain_deferred(10.0)
        [status] = budget.status(get_tracker())
    total = CHAT_B_COST + 2 * (150_000 * Decimal("1.25") + 1000 * 10) / M
    assert Decimal("0.395228") == total
    assert sum(e.cost.total for e in costs.events) == total
    assert (status.spent, status.reserved) == (total, 0)


def test_a_stop_inside_the_second_response_is_the_calls_status(costs: CapturedCosts) -> None:
    """Two responses of a tiered price, the consumer stops inside the second: the first
    was complete (``ok``), the call's own event (the last response's) is ``cancelled``
    with the usage it had shown."""

    @track_cost
    def agent() -> Iterator[dict[str, Any]]:
        yield _gemini("r-1", 150_000, 1000)
        yield _gemini("r-2", 150_000, 10)
        yield _gemini("r-2", 150_000, 20)

    stream = agent()
    next(stream)
    next(stream)
    stream.close()
    statuses = [(e.status, e.request_id, e.usage.output_tokens) for e in costs.events]
    assert sorted(statuses) == [("cancelled", "r-2", 10), ("ok", "r-1", 1000)]


# -- one response, seen more than once: counted once -----------------------------------------------


def test_the_same_response_yielded_twice_counts_once(costs: CapturedCosts) -> None:
    response = {**chat_completion(MINI), "id": "chatcmpl-a"}

    @track_cost
    def answers() -> Iterator[dict[str, Any]]:
        yield response
        yield response

    list(answers())
    assert _rows(costs) == [("ok", True, CHAT_A, MINI, CHAT_A_COST, "chatcmpl-a")]


def test_a_stream_then_its_final_message_counts_once(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    """The events of a stream, then the message they make (same id): one response."""
    client = anthropic.Anthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)

    @track_cost(provider="anthropic")
    def ask() -> Iterator[Any]:
        with client.messages.stream(model=HAIKU, max_tokens=10, messages=HI) as stream:
            yield from stream
            yield stream.get_final_message()

    items = list(ask())
    assert isinstance(items[-1], Message)
    assert _rows(costs) == [("ok", True, HAIKU_A, HAIKU, HAIKU_A_COST, "msg_fake0001")]


# -- a stream of one response: read as before, never added twice -----------------------------------


def test_openai_chat_stream_usage_on_its_last_chunk(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai.OpenAI(base_url=provider.openai_url, api_key=KEY, max_retries=0)

    @track_cost
    def ask() -> Iterator[Any]:
        yield from client.chat.completions.create(
            model=MINI, messages=HI, stream=True, stream_options={"include_usage": True}
        )

    assert len(list(ask())) == 6
    assert _rows(costs) == [("ok", True, CHAT_A, MINI, CHAT_A_COST, "chatcmpl-fake0002")]


@pytest.mark.parametrize("response_id", ["chatcmpl-a", None])
def test_chunks_that_repeat_the_usage_so_far(response_id: str | None, costs: CapturedCosts) -> None:
    """Some OpenAI-compatible servers put the running usage on every chunk."""

    def chunk(out: int) -> dict[str, Any]:
        usage = {"prompt_tokens": 1200, "completion_tokens": out, "total_tokens": 1200 + out}
        item = {"object": "chat.completion.chunk", "model": MINI, "choices": [], "usage": usage}
        return item if response_id is None else {**item, "id": response_id}

    @track_cost
    def ask() -> Iterator[dict[str, Any]]:
        for out in (10, 40, 80):
            yield chunk(out)

    list(ask())
    assert _rows(costs) == [("ok", True, CHAT_B, MINI, CHAT_B_COST, response_id)]


def test_responses_api_stream_events(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = openai.OpenAI(base_url=provider.openai_url, api_key=KEY, max_retries=0)

    @track_cost
    def ask() -> Iterator[Any]:
        yield from client.responses.create(model=MINI, input="hi", stream=True)

    types = [event.type for event in ask()]
    assert (types[0], types[-1]) == ("response.created", "response.completed")
    assert _rows(costs) == [("ok", True, RESP_A, MINI, RESP_A_COST, "resp_fake0001")]


def test_anthropic_stream_cumulative_deltas(provider: FakeProvider, costs: CapturedCosts) -> None:
    """``message_start``'s input, then ``message_delta``'s CUMULATIVE output three times:
    300 output tokens, not 1 + 100 + 200 + 300."""
    client = anthropic.Anthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)
    deltas = [{"output_tokens": 100}, {"output_tokens": 200}, {"output_tokens": 300}]
    provider.enqueue("/v1/messages", Reply(sse=anthropic_stream(HAIKU, delta_usages=deltas)))

    @track_cost(provider="anthropic")
    def ask() -> Iterator[Any]:
        yield from client.messages.create(model=HAIKU, max_tokens=10, messages=HI, stream=True)

    assert sum(event.type == "message_delta" for event in ask()) == 3
    assert _rows(costs) == [("ok", True, HAIKU_A, HAIKU, HAIKU_A_COST, "msg_fake0001")]


@pytest.mark.parametrize("shape", ["increments", "running totals"])
def test_langchain_message_chunks(shape: str, costs: CapturedCosts) -> None:
    """One model call's ``AIMessageChunk``s: increments are added (as LangChain adds
    chunks), running totals are not."""
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessageChunk

    def usage(inp: int, out: int) -> Any:
        return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}

    if shape == "increments":  # Anthropic's way: the prompt first, the output at the end
        usages = [usage(1200, 0), None, usage(0, 80)]
    else:
        usages = [usage(1200, 20), usage(1200, 50), usage(1200, 80)]

    @track_cost
    def ask() -> Iterator[AIMessageChunk]:
        for n, part in enumerate(usages):
            last = n == len(usages) - 1
            yield AIMessageChunk(
                content="w",
                id="lc_run-1",
                usage_metadata=part,
                response_metadata={"model_name": MINI} if last else {},
            )

    list(ask())
    assert _rows(costs) == [("ok", True, CHAT_B, MINI, CHAT_B_COST, None)]


def test_gemini_chunks_with_the_usage_so_far(costs: CapturedCosts) -> None:
    """Gemini repeats its response id and the running usage on every chunk."""
    flash = "gemini-2.0-flash"

    def chunk(out: int) -> dict[str, Any]:
        usage = {
            "promptTokenCount": 1200,
            "candidatesTokenCount": out,
            "totalTokenCount": 1200 + out,
        }
        return {
            "candidates": [],
            "usageMetadata": usage,
            "modelVersion": flash,
            "responseId": "r-1",
        }

    @track_cost
    def ask() -> Iterator[dict[str, Any]]:
        for out in (10, 40, 80):
            yield chunk(out)

    list(ask())
    cost = (1200 * Decimal("0.10") + 80 * Decimal("0.40")) / M
    assert _rows(costs) == [("ok", True, CHAT_B, flash, cost, "r-1")]


def test_the_fake_providers_defaults_are_the_ones_priced_here() -> None:
    assert (CHAT_USAGE["prompt_tokens"], ANTHROPIC_USAGE["output_tokens"]) == (2000, 300)
    assert json.loads(chat_stream(MINI)[0][1])["id"] == "chatcmpl-fake0002"
