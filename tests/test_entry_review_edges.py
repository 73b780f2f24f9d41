"""Second review of ``@track_cost`` with the real OpenAI and Anthropic SDKs against the
local fake provider: a returned stream manager entered more than once, the SDKs'
``with_streaming_response`` managers, a raw response whose ``parse()`` raises, and a raw
stream read around its ``parse()``."""

from __future__ import annotations

import asyncio
import gc
from decimal import Decimal
from typing import Any

import openai
import pydantic
import pytest

from costledger import Budget, BudgetExceeded, Tracker, budget_status, drain_deferred, track_cost
from costledger.testing import CapturedCosts, InMemoryLedger

from ._fake_provider import FakeProvider, Reply, anthropic_error, chat_completion
from .test_entry_review_decorator import (
    ANTHROPIC_USAGE,
    CHAT_COST,
    CHAT_USAGE,
    CLAUDE,
    GPT,
    HAIKU_COST,
    INCLUDE_USAGE,
    MESSAGES,
    aant,
    ant,
    aoai,
    assert_priced,
    oai,
    only,
)

# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


def budgeted(limit: str) -> Tracker:
    return Tracker(
        InMemoryLedger(), guards=[Budget(Decimal(limit), "day")], log="off", guard_store="memory://"
    )


def spent(tracker: Tracker) -> Decimal:
    drain_deferred(10.0)
    (status,) = budget_status(tracker)
    return status.spent


# -- 1. a returned stream manager entered more than once -------------------------------------------
def test_stream_manager_entered_twice_or_nested_records_each_request(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = ant(provider)
    tracker = budgeted("100")

    @track_cost(tracker=tracker, team="search")
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    manager = ask()
    with manager as stream:
        assert stream.get_final_message().usage.output_tokens == 300
    with manager as stream:  # the SDK sends the request again
        assert "".join(stream.text_stream) == "Hello there!"
    manager = ask()
    with manager as first, manager as second:
        first.get_final_message()
        for event in second:
            if event.type == "message_start":
                break  # left early: cancelled with message_start's usage
    assert len(provider.requests_to("/v1/messages")) == 4
    events = costs.events
    assert len(events) == 4
    for event in events[:3]:
        assert_priced(event, ANTHROPIC_USAGE, HAIKU_COST, streamed=True)
        assert event.team == "search"
    early = events[3]
    assert (early.status, early.cost.total, early.team) == (
        "cancelled",
        Decimal("0.003124"),
        "search",
    )
    assert spent(tracker) == 3 * HAIKU_COST + Decimal("0.003124")


def test_stream_manager_entered_again_runs_the_guards_before_the_request(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = ant(provider)
    tracker = budgeted("0.005")

    # estimate 0.001: the first call fits (0 + 0.001 <= 0.005); the second does not
    # (0.00432 spent + 0.001 > 0.005)
    @track_cost(tracker=tracker, estimate=Decimal("0.001"))
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    manager = ask()
    with manager as stream:
        stream.get_final_message()
    drain_deferred(10.0)  # the first call's spend is settled on the background worker
    with pytest.raises(BudgetExceeded), manager:
        pass
    assert len(provider.requests_to("/v1/messages")) == 1  # refused before the request
    assert_priced(only(costs), ANTHROPIC_USAGE, HAIKU_COST, streamed=True)
    assert spent(tracker) == HAIKU_COST


def test_stream_manager_whose_second_request_fails(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = oai(provider)

    @track_cost
    def ask() -> Any:
        return client.chat.completions.stream(
            model=GPT, messages=MESSAGES, stream_options=INCLUDE_USAGE
        )

    manager = ask()
    with manager as stream:
        stream.get_final_completion()
    provider.enqueue("/chat/completions", anthropic_error(500))
    with pytest.raises(openai.InternalServerError), manager:
        pass
    with manager as stream:
        stream.get_final_completion()
    done, failed, again = costs.events
    assert_priced(done, CHAT_USAGE, CHAT_COST, streamed=True)
    assert (failed.status, failed.error_type, failed.cost.total) == (
        "error",
        "InternalServerError",
        None,
    )
    assert_priced(again, CHAT_USAGE, CHAT_COST, streamed=True)


def test_async_stream_manager_entered_again(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = aant(provider)
    tracker = budgeted("100")

    @track_cost(tracker=tracker, estimate=Decimal("0.5"))
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    async def main() -> None:
        manager = ask()
        async with manager as stream:
            await stream.get_final_message()
        # the SDK's async manager awaits the request coroutine it was made with, once: a
        # second enter fails before sending anything, and records nothing
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            async with manager:
                pass

    asyncio.run(main())
    assert len(provider.requests_to("/v1/messages")) == 1
    assert_priced(only(costs), ANTHROPIC_USAGE, HAIKU_COST, streamed=True)
    drain_deferred(10.0)
    (status,) = budget_status(tracker)
    assert (status.spent, status.reserved) == (HAIKU_COST, Decimal(0))  # nothing left held


# -- 3. with_streaming_response --------------------------------------------------------------------
def test_streaming_response_is_recorded_from_the_body_read_in_the_block(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    gpt, claude = oai(provider), ant(provider)

    @track_cost
    def ask_gpt() -> Any:
        return gpt.chat.completions.with_streaming_response.create(model=GPT, messages=MESSAGES)

    @track_cost
    def ask_claude() -> Any:
        return claude.messages.with_streaming_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES
        )

    manager = ask_gpt()
    assert (costs.events, provider.requests) == ([], [])  # nothing is sent before the with
    with manager as response:
        assert costs.events == []  # the body is not read yet
        assert response.headers["x-request-id"] == "req_fake0001"
        assert response.parse().usage.prompt_tokens == 2000
    with ask_claude() as response:
        assert response.json()["usage"]["output_tokens"] == 300  # read another way
    gpt_event, claude_event = costs.events
    assert_priced(gpt_event, CHAT_USAGE, CHAT_COST, streamed=False)
    assert gpt_event.request_id == "chatcmpl-fake0001"
    assert_priced(claude_event, ANTHROPIC_USAGE, HAIKU_COST, streamed=False)


def test_streaming_response_not_read_or_read_by_bytes(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = oai(provider)

    @track_cost
    def ask() -> Any:
        return client.chat.completions.with_streaming_response.create(model=GPT, messages=MESSAGES)

    with ask():
        pass
    with ask() as response:
        assert b'"usage"' in b"".join(response.iter_bytes())
    unread, by_bytes = costs.events
    assert (unread.status, unread.streamed, unread.cost.total) == ("cancelled", False, None)
    assert dict(unread.metadata) == {"costledger.usage_error": "no usage: never read"}
    assert (by_bytes.status, by_bytes.streamed, by_bytes.cost.total) == ("ok", False, None)
    assert dict(by_bytes.metadata) == {
        "costledger.usage_error": "body read outside parse(): usage unknown"
    }
    assert len(provider.requests_to("/chat/completions")) == 2


def test_streaming_response_of_a_stream_is_tracked_to_its_end(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    gpt, claude = oai(provider), ant(provider)

    @track_cost
    def ask_gpt() -> Any:
        return gpt.chat.completions.with_streaming_response.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
        )

    @track_cost
    def ask_claude() -> Any:
        return claude.messages.with_streaming_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES, stream=True
        )

    with ask_gpt() as response:
        assert len(list(response.parse())) == 6
    with ask_claude() as response:
        for event in response.parse():
            if event.type == "message_start":
                break
    with ask_claude() as response:
        lines = [line for line in response.iter_lines() if line]
        assert any("message_delta" in line for line in lines)
    with ask_claude():
        pass
    done, early, by_lines, unread = costs.events
    assert_priced(done, CHAT_USAGE, CHAT_COST, streamed=True)
    assert (early.status, early.streamed, early.cost.total) == (
        "cancelled",
        True,
        Decimal("0.003124"),
    )
    assert (by_lines.status, by_lines.streamed, by_lines.cost.total) == ("ok", True, None)
    assert dict(by_lines.metadata) == {
        "costledger.usage_error": "stream read outside parse(): usage unknown"
    }
    assert (unread.status, unread.streamed, unread.cost.total) == ("cancelled", True, None)
    assert dict(unread.metadata) == {"costledger.usage_error": "no usage: never iterated"}


def test_async_streaming_responses(provider: FakeProvider, costs: CapturedCosts) -> None:
    gpt, claude = aoai(provider), aant(provider)

    @track_cost
    def ask_gpt(stream: bool) -> Any:
        if stream:
            return gpt.chat.completions.with_streaming_response.create(
                model=GPT, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
            )
        return gpt.chat.completions.with_streaming_response.create(model=GPT, messages=MESSAGES)

    @track_cost
    async def ask_claude(stream: bool) -> Any:  # an async def returning the manager
        return claude.messages.with_streaming_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES, stream=stream
        )

    async def main() -> None:
        async with ask_gpt(False) as response:
            assert (await response.parse()).usage.completion_tokens == 500
        async with ask_gpt(True) as response:
            assert len([chunk async for chunk in await response.parse()]) == 6
        async with await ask_claude(False) as response:
            assert (await response.json())["usage"]["input_tokens"] == 1000
        async with await ask_claude(True) as response:
            assert len([event async for event in await response.parse()]) == 8
        async with await ask_claude(False):
            pass

    asyncio.run(main())
    gpt_event, gpt_stream, claude_event, claude_stream, unread = costs.events
    assert_priced(gpt_event, CHAT_USAGE, CHAT_COST, streamed=False)
    assert_priced(gpt_stream, CHAT_USAGE, CHAT_COST, streamed=True)
    assert_priced(claude_event, ANTHROPIC_USAGE, HAIKU_COST, streamed=False)
    assert_priced(claude_stream, ANTHROPIC_USAGE, HAIKU_COST, streamed=True)
    assert (unread.status, unread.cost.total) == ("cancelled", None)


def test_streaming_response_entered_twice(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = ant(provider)

    @track_cost
    def ask() -> Any:
        return client.messages.with_streaming_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES
        )

    manager = ask()
    for _ in range(2):
        with manager as response:
            response.parse()
    for event in costs.events:
        assert_priced(event, ANTHROPIC_USAGE, HAIKU_COST, streamed=False)
    assert len(costs.events) == len(provider.requests_to("/v1/messages")) == 2


# -- 2. a raw response whose parse() raises --------------------------------------------------------
class Answer(pydantic.BaseModel):
    answer: str


def cut_at_max_tokens() -> Reply:
    """A structured output cut by max_tokens: the SDK's parse() raises
    LengthFinishReasonError, though the body carries the usage."""
    body = chat_completion(text='{"answer": "trunc')
    body["choices"][0]["finish_reason"] = "length"
    return Reply(json=body)


def test_raw_response_whose_parse_raises_is_read_from_its_body(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue("/chat/completions", cut_at_max_tokens(), cut_at_max_tokens())
    client = oai(provider)

    @track_cost
    def ask() -> Any:
        return client.chat.completions.with_raw_response.parse(
            model=GPT, messages=MESSAGES, response_format=Answer, max_tokens=5
        )

    @track_cost
    def ask_streaming() -> Any:
        return client.chat.completions.with_streaming_response.parse(
            model=GPT, messages=MESSAGES, response_format=Answer, max_tokens=5
        )

    raw = ask()
    with pytest.raises(openai.LengthFinishReasonError):
        raw.parse()  # the caller's parse() raises as without tracking
    with ask_streaming() as response, pytest.raises(openai.LengthFinishReasonError):
        response.parse()
    raw_event, streaming_event = costs.events
    assert_priced(raw_event, CHAT_USAGE, CHAT_COST, streamed=False)
    assert raw_event.request_id == "chatcmpl-fake0001"
    assert_priced(streaming_event, CHAT_USAGE, CHAT_COST, streamed=False)


def test_async_raw_response_whose_parse_raises(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue("/chat/completions", cut_at_max_tokens())
    client = aoai(provider)

    @track_cost
    async def ask() -> Any:
        return await client.chat.completions.with_raw_response.parse(
            model=GPT, messages=MESSAGES, response_format=Answer, max_tokens=5
        )

    async def main() -> None:
        raw = await ask()
        with pytest.raises(openai.LengthFinishReasonError):
            raw.parse()

    asyncio.run(main())
    assert_priced(only(costs), CHAT_USAGE, CHAT_COST, streamed=False)


# -- 4. a raw stream read around its parse() -------------------------------------------------------
def test_raw_stream_read_outside_parse_is_ok_with_usage_unknown(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = oai(provider)

    @track_cost
    def ask() -> Any:
        return client.chat.completions.with_raw_response.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
        )

    raw = ask()
    chunks = list(raw.parse(to=openai.Stream[openai.types.chat.ChatCompletionChunk]))
    assert chunks[-1].usage is not None
    del raw, chunks
    gc.collect()  # recorded when the raw response (its cached stream) is collected
    raw = ask()
    assert any("usage" in line for line in raw.http_response.iter_lines())
    del raw
    gc.collect()
    raw = ask()  # never read
    del raw
    gc.collect()
    by_parse_to, by_lines, unread = costs.events
    for event in (by_parse_to, by_lines):
        assert (event.status, event.streamed, event.cost.total) == ("ok", True, None)
        assert dict(event.metadata) == {
            "costledger.usage_error": "stream read outside parse(): usage unknown"
        }
    assert (unread.status, unread.streamed, unread.cost.total) == ("cancelled", True, None)
    assert dict(unread.metadata) == {"costledger.usage_error": "no usage: never iterated"}


def test_async_raw_stream_read_outside_parse(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = aant(provider)

    @track_cost
    async def ask() -> Any:
        return await client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES, stream=True
        )

    async def main() -> None:
        raw = await ask()
        lines = [line async for line in raw.http_response.aiter_lines()]
        assert any("message_delta" in line for line in lines)

    asyncio.run(main())
    gc.collect()
    event = only(costs)
    assert (event.status, event.streamed, event.cost.total) == ("ok", True, None)
    assert dict(event.metadata) == {
        "costledger.usage_error": "stream read outside parse(): usage unknown"
    }
