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

from ._fake_provider import FakeProvider

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


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_provider(provider: FakeProvider) -> None:
    provider.reset()


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
