"""Review fixes of ``@track_cost`` with the real OpenAI and Anthropic SDKs against the
local fake provider: the SDKs' stream helpers (``chat.completions.stream()``,
``messages.stream()``, ``responses.stream()``), their stream managers returned by a plain
function, and ``with_raw_response``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from costledger import Usage, UsageEvent, track_cost
from costledger.testing import CapturedCosts

from ._fake_provider import FakeProvider, anthropic_error

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]
GPT = "gpt-4o-mini-2024-07-18"
CLAUDE = "claude-3-5-haiku-20241022"
INCLUDE_USAGE: Any = {"include_usage": True}

# The fake provider's default usages and their exact prices (see test_http_transport.py).
CHAT_USAGE = Usage(
    input_tokens=2000, output_tokens=500, cache_read_tokens=1000, reasoning_tokens=200
)
CHAT_COST = Decimal("0.000525")
RESPONSES_USAGE = Usage(
    input_tokens=3000, output_tokens=400, cache_read_tokens=2000, reasoning_tokens=100
)
RESPONSES_COST = Decimal("0.00054")
ANTHROPIC_USAGE = Usage(
    input_tokens=7000, output_tokens=300, cache_read_tokens=4000, cache_write_tokens=2000
)
HAIKU_COST = Decimal("0.00432")


# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


def oai(provider: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=provider.openai_url, api_key="sk-test-0000", max_retries=0)


def aoai(provider: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=provider.openai_url, api_key="sk-test-0000", max_retries=0)


def ant(provider: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=provider.base_url, api_key="sk-test-0000", max_retries=0)


def aant(provider: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=provider.base_url, api_key="sk-test-0000", max_retries=0
    )


def only(costs: CapturedCosts) -> UsageEvent:
    events = costs.events
    assert len(events) == 1, events
    return events[0]


def assert_priced(event: UsageEvent, usage: Usage, cost: Decimal, *, streamed: bool) -> None:
    assert (event.status, event.source, event.streamed) == ("ok", "decorator", streamed)
    assert event.usage == usage
    assert event.cost.status == "priced"
    assert event.cost.total == cost
    assert dict(event.metadata) == {}


# -- 2. the OpenAI chat.completions.stream() helper's ChunkEvents ----------------------------------
def test_openai_chat_stream_helper_events(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = oai(provider)

    @track_cost
    def events() -> Iterator[Any]:
        with client.chat.completions.stream(
            model=GPT, messages=MESSAGES, stream_options=INCLUDE_USAGE
        ) as stream:
            yield from stream

    kinds = {event.type for event in events()}
    assert "chunk" in kinds
    assert_priced(only(costs), CHAT_USAGE, CHAT_COST, streamed=True)


def test_openai_chat_stream_helper_entered_stream(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = oai(provider)
    manager = client.chat.completions.stream(
        model=GPT, messages=MESSAGES, stream_options=INCLUDE_USAGE
    )

    @track_cost
    def entered() -> Any:  # a def returning the ChatCompletionStream itself
        return manager.__enter__()

    try:
        for _ in entered():
            pass
    finally:
        manager.__exit__(None, None, None)
    assert_priced(only(costs), CHAT_USAGE, CHAT_COST, streamed=True)


def test_async_openai_chat_stream_helper_events(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = aoai(provider)

    @track_cost
    async def events() -> Any:
        async with client.chat.completions.stream(
            model=GPT, messages=MESSAGES, stream_options=INCLUDE_USAGE
        ) as stream:
            async for event in stream:
                yield event

    async def main() -> None:
        async for _ in events():
            pass

    asyncio.run(main())
    assert_priced(only(costs), CHAT_USAGE, CHAT_COST, streamed=True)


# -- 3. a plain def returning an SDK stream manager ------------------------------------------------
def test_anthropic_stream_manager_read_by_iteration(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = ant(provider)

    @track_cost
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    manager = ask()
    assert costs.events == []  # nothing is recorded before the stream is read
    with manager as stream:
        assert isinstance(stream, anthropic.MessageStream)  # the SDK's own object
        for _ in stream:
            pass
        final = stream.get_final_message()
    assert final.usage.output_tokens == 300
    assert_priced(only(costs), ANTHROPIC_USAGE, HAIKU_COST, streamed=True)


def test_anthropic_stream_manager_read_by_text_stream_and_final_message(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = ant(provider)

    @track_cost
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    with ask() as stream:
        assert "".join(stream.text_stream) == "Hello there!"
    with ask() as stream:
        assert stream.get_final_message().usage.input_tokens == 1000
    events = costs.events
    assert len(events) == 2
    for event in events:
        assert_priced(event, ANTHROPIC_USAGE, HAIKU_COST, streamed=True)


def test_openai_chat_and_responses_stream_managers(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = oai(provider)

    @track_cost
    def chat() -> Any:
        return client.chat.completions.stream(
            model=GPT, messages=MESSAGES, stream_options=INCLUDE_USAGE
        )

    @track_cost
    def respond() -> Any:
        return client.responses.stream(model=GPT, input="Say hello")

    with chat() as stream:
        assert stream.get_final_completion().usage is not None
    with respond() as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().usage is not None
    chat_event, responses_event = costs.events
    assert_priced(chat_event, CHAT_USAGE, CHAT_COST, streamed=True)
    assert_priced(responses_event, RESPONSES_USAGE, RESPONSES_COST, streamed=True)


def test_stream_manager_left_early_is_cancelled_with_the_usage_seen(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = ant(provider)

    @track_cost
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    with ask() as stream:
        for event in stream:
            if event.type == "message_start":
                break
    event = only(costs)
    assert (event.status, event.streamed) == ("cancelled", True)
    # message_start's input and cache counts, and its 1 output token:
    # 1000*0.80 + 4000*0.08 + 2000*1.00 + 1*4 per million
    assert event.usage == Usage(
        input_tokens=7000, output_tokens=1, cache_read_tokens=4000, cache_write_tokens=2000
    )
    assert event.cost.total == Decimal("0.003124")


def test_stream_manager_entered_but_not_read_or_never_entered(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = ant(provider)

    @track_cost
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    with ask():
        pass
    ask()  # dropped, collected at once (CPython): no request was sent, nothing is recorded
    entered = only(costs)
    assert (entered.status, entered.cost.total) == ("cancelled", None)
    assert dict(entered.metadata) == {"costledger.usage_error": "no usage: never iterated"}
    assert len(provider.requests_to("/v1/messages")) == 1  # only the entered one was sent


def test_stream_manager_whose_request_fails_is_an_error(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue("/v1/messages", anthropic_error(401))
    client = ant(provider)

    @track_cost
    def ask() -> Any:
        return client.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    with pytest.raises(anthropic.AuthenticationError), ask():
        pass
    event = only(costs)
    assert (event.status, event.error_type) == ("error", "AuthenticationError")


def test_async_stream_managers(provider: FakeProvider, costs: CapturedCosts) -> None:
    claude, gpt = aant(provider), aoai(provider)

    @track_cost
    def ask_claude() -> Any:
        return claude.messages.stream(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    @track_cost
    async def ask_gpt() -> Any:  # an async def returning the manager, not awaited
        return gpt.chat.completions.stream(
            model=GPT, messages=MESSAGES, stream_options=INCLUDE_USAGE
        )

    @track_cost
    def respond() -> Any:
        return gpt.responses.stream(model=GPT, input="Say hello")

    async def main() -> None:
        async with ask_claude() as stream:
            assert isinstance(stream, anthropic.AsyncMessageStream)
            assert "".join([t async for t in stream.text_stream]) == "Hello there!"
        async with await ask_gpt() as stream:
            async for _ in stream:
                pass
        async with respond() as stream:
            await stream.get_final_response()
        async with ask_claude() as stream:
            async for _ in stream:
                break

    asyncio.run(main())
    claude_event, gpt_event, responses_event, early = costs.events
    assert_priced(claude_event, ANTHROPIC_USAGE, HAIKU_COST, streamed=True)
    assert_priced(gpt_event, CHAT_USAGE, CHAT_COST, streamed=True)
    assert_priced(responses_event, RESPONSES_USAGE, RESPONSES_COST, streamed=True)
    assert early.status == "cancelled"


class EventStream:
    """A stream of another SDK (Mistral's class name) with no ``_iterator`` generator: the
    manager's stream is then handed back behind the tracking proxy."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()


class ChatCompletionStreamManager:
    def __init__(self, client: openai.OpenAI) -> None:
        self._client = client
        self.stream: EventStream | None = None

    def __enter__(self) -> EventStream:
        raw = self._client.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
        )
        self.stream = EventStream(iter(raw))
        return self.stream

    def __exit__(self, *exc_info: object) -> None:
        assert self.stream is not None
        self.stream.close()


def test_stream_manager_whose_stream_has_no_iterator_generator(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = oai(provider)

    @track_cost
    def ask() -> Any:
        return ChatCompletionStreamManager(client)

    with ask() as stream:
        assert not isinstance(stream, EventStream)  # the tracking proxy
        assert len(list(stream)) == 6
    with ask() as stream:
        next(stream)
    done, early = costs.events
    assert_priced(done, CHAT_USAGE, CHAT_COST, streamed=True)
    assert (early.status, early.cost.total) == ("cancelled", None)


# -- 5. with_raw_response ------------------------------------------------------------------------
def test_raw_responses_are_read_by_their_parse(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    gpt, claude = oai(provider), ant(provider)

    @track_cost
    def ask_gpt() -> Any:
        return gpt.chat.completions.with_raw_response.create(model=GPT, messages=MESSAGES)

    @track_cost
    def ask_claude() -> Any:
        return claude.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES
        )

    raw = ask_gpt()
    assert raw.headers["x-request-id"] == "req_fake0001"  # what with_raw_response is for
    assert raw.parse().usage.prompt_tokens == 2000  # still the caller's
    assert raw.http_response.json()["usage"]["completion_tokens"] == 500
    raw = ask_claude()
    assert raw.parse().usage.output_tokens == 300
    gpt_event, claude_event = costs.events
    assert_priced(gpt_event, CHAT_USAGE, CHAT_COST, streamed=False)
    assert_priced(claude_event, ANTHROPIC_USAGE, HAIKU_COST, streamed=False)
    assert (gpt_event.request_id, claude_event.request_id) == ("chatcmpl-fake0001", "msg_fake0001")


def test_async_raw_responses(provider: FakeProvider, costs: CapturedCosts) -> None:
    gpt, claude = aoai(provider), aant(provider)

    @track_cost
    async def ask_gpt() -> Any:
        return await gpt.chat.completions.with_raw_response.create(model=GPT, messages=MESSAGES)

    @track_cost
    async def ask_claude() -> Any:  # Anthropic's AsyncAPIResponse: an async parse()
        return await claude.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES
        )

    @track_cost
    def ask_claude_later() -> Any:  # a plain def returning the coroutine
        return claude.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES
        )

    async def main() -> None:
        assert (await ask_gpt()).parse().usage.completion_tokens == 500
        assert (await (await ask_claude()).parse()).usage.output_tokens == 300
        assert (await (await ask_claude_later()).parse()).usage.input_tokens == 1000

    asyncio.run(main())
    gpt_event, claude_event, later_event = costs.events
    assert_priced(gpt_event, CHAT_USAGE, CHAT_COST, streamed=False)
    assert_priced(claude_event, ANTHROPIC_USAGE, HAIKU_COST, streamed=False)
    assert_priced(later_event, ANTHROPIC_USAGE, HAIKU_COST, streamed=False)


def test_raw_response_of_a_stream_is_tracked_to_its_end(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    gpt, claude = oai(provider), ant(provider)

    @track_cost
    def ask_gpt() -> Any:
        return gpt.chat.completions.with_raw_response.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
        )

    @track_cost
    def ask_claude() -> Any:
        return claude.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES, stream=True
        )

    raw = ask_gpt()
    assert costs.events == []  # recorded when the stream ends
    assert len(list(raw.parse())) == 6
    raw = ask_claude()
    stream = raw.parse()
    for _ in stream:
        break
    stream.close()
    del stream, raw  # the stream closed early, then dropped: cancelled with the usage seen
    gpt_event, claude_event = costs.events
    assert_priced(gpt_event, CHAT_USAGE, CHAT_COST, streamed=True)
    assert (claude_event.status, claude_event.streamed) == ("cancelled", True)
    assert claude_event.cost.total == Decimal("0.003124")  # message_start's usage


def test_async_raw_response_of_a_stream(provider: FakeProvider, costs: CapturedCosts) -> None:
    gpt, claude = aoai(provider), aant(provider)

    @track_cost
    async def ask_gpt() -> Any:
        return await gpt.chat.completions.with_raw_response.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
        )

    @track_cost
    async def ask_claude() -> Any:
        return await claude.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=10, messages=MESSAGES, stream=True
        )

    async def main() -> None:
        assert len([c async for c in (await ask_gpt()).parse()]) == 6
        assert len([e async for e in await (await ask_claude()).parse()]) == 8

    asyncio.run(main())
    gpt_event, claude_event = costs.events
    assert_priced(gpt_event, CHAT_USAGE, CHAT_COST, streamed=True)
    assert_priced(claude_event, ANTHROPIC_USAGE, HAIKU_COST, streamed=True)
