"""A consumer that stops a tracked stream after its last event (a ``break`` at Anthropic's
``message_stop``, at the Responses API's ``response.completed``) stopped a finished call:
``@track_cost`` records it ``ok``, as the HTTP transport does for the same stream. One that
stops before that event still cancelled the call. Real SDK clients against the local fake
provider, the real pricer."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from costledger import Usage, track_cost
from costledger.testing import CapturedCosts

from ._fake_provider import FakeProvider

KEY = "sk-test-0000"
M = Decimal(1_000_000)
HAIKU = "claude-3-5-haiku-20241022"
HI: Any = [{"role": "user", "content": "hi"}]

# The fake provider's Anthropic stream: 1000 uncached + 4000 cache read + 2000 cache write
# in, 300 out; claude-3-5-haiku: 0.80 input, 0.08 cache read, 1.00 cache write, 4.00 output.
HAIKU_USAGE = Usage(
    input_tokens=7000, output_tokens=300, cache_read_tokens=4000, cache_write_tokens=2000
)
HAIKU_COST = (1000 * Decimal("0.80") + 4000 * Decimal("0.08") + 2000 * 1 + 300 * 4) / M
assert Decimal("0.00432") == HAIKU_COST
# Before message_delta: message_start's 1 output token.
HAIKU_START_USAGE = Usage(
    input_tokens=7000, output_tokens=1, cache_read_tokens=4000, cache_write_tokens=2000
)
HAIKU_START_COST = (1000 * Decimal("0.80") + 4000 * Decimal("0.08") + 2000 * 1 + 1 * 4) / M
# The Responses stream: 3000 in (2000 cached), 400 out (100 reasoning), gpt-4o-mini at
# 0.15 input, 0.075 cached, 0.60 output.
RESPONSES_USAGE = Usage(
    input_tokens=3000, output_tokens=400, cache_read_tokens=2000, reasoning_tokens=100
)
RESPONSES_COST = (1000 * Decimal("0.15") + 2000 * Decimal("0.075") + 400 * Decimal("0.60")) / M
assert Decimal("0.00054") == RESPONSES_COST


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_provider(provider: FakeProvider) -> None:
    provider.reset()


def _rows(costs: CapturedCosts) -> list[tuple[Any, ...]]:
    return [
        (e.status, e.error_type, e.streamed, e.usage, e.cost.total, dict(e.metadata))
        for e in costs.events
    ]


def test_a_break_at_message_stop_is_ok(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = anthropic.Anthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)

    @track_cost(provider="anthropic")
    def ask() -> Any:  # returns the SDK's Stream
        return client.messages.create(model=HAIKU, max_tokens=10, messages=HI, stream=True)

    @track_cost(provider="anthropic")
    def helper() -> Any:  # returns the SDK's stream manager
        return client.messages.stream(model=HAIKU, max_tokens=10, messages=HI)

    @track_cost(provider="anthropic")
    def generator() -> Iterator[Any]:
        yield from client.messages.create(model=HAIKU, max_tokens=10, messages=HI, stream=True)

    with ask() as stream:
        for event in stream:
            if event.type == "message_stop":
                break
    with helper() as stream:
        for event in stream:
            if event.type == "message_stop":
                break
    for event in generator():
        if event.type == "message_stop":
            break
    assert _rows(costs) == 3 * [("ok", None, True, HAIKU_USAGE, HAIKU_COST, {})]


def test_a_break_before_message_stop_is_still_cancelled(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = anthropic.Anthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)

    @track_cost(provider="anthropic")
    def ask() -> Any:
        return client.messages.create(model=HAIKU, max_tokens=10, messages=HI, stream=True)

    with ask() as stream:
        for event in stream:
            if event.type == "message_delta":
                break
    with ask() as stream:
        for event in stream:
            if event.type == "content_block_stop":
                break
    assert _rows(costs) == [
        ("cancelled", "GeneratorExit", True, HAIKU_USAGE, HAIKU_COST, {}),
        ("cancelled", "GeneratorExit", True, HAIKU_START_USAGE, HAIKU_START_COST, {}),
    ]


def test_a_break_at_response_completed_is_ok(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = openai.OpenAI(base_url=provider.openai_url, api_key=KEY, max_retries=0)

    @track_cost
    def ask() -> Any:
        return client.responses.create(model="gpt-4o-mini", input="hi", stream=True)

    with ask() as stream:
        for event in stream:
            if event.type == "response.completed":
                break
    with ask() as stream:
        for event in stream:
            if event.type == "response.output_text.done":
                break
    assert _rows(costs) == [
        ("ok", None, True, RESPONSES_USAGE, RESPONSES_COST, {}),
        ("cancelled", "GeneratorExit", True, Usage(), None, {}),
    ]


def test_with_a_usage_reader_too(costs: CapturedCosts) -> None:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"model": HAIKU, "usage": {"input_tokens": 100}}},
        {"type": "message_delta", "usage": {"output_tokens": 50}},
        {"type": "message_stop"},
        {"type": "ping"},  # anything after the last event is not the call's
    ]

    @track_cost(
        provider="anthropic",
        model=HAIKU,
        usage=lambda e: (
            Usage(input_tokens=100, output_tokens=50) if e["type"] == "message_delta" else None
        ),
    )
    def stream() -> Iterator[dict[str, Any]]:
        yield from events

    for event in stream():
        if event["type"] == "message_stop":
            break
    for event in stream():
        if event["type"] == "message_delta":
            break
    cost = (100 * Decimal("0.80") + 50 * 4) / M
    usage = Usage(input_tokens=100, output_tokens=50)
    assert _rows(costs) == [
        ("ok", None, True, usage, cost, {}),
        ("cancelled", "GeneratorExit", True, usage, cost, {}),
    ]


def test_a_break_inside_a_second_message_is_cancelled(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    """A generator that streams two messages (a tool loop's two requests): the first
    message's ``message_stop`` does not make a stop inside the second one ``ok``."""
    client = anthropic.Anthropic(base_url=provider.base_url, api_key=KEY, max_retries=0)

    @track_cost(provider="anthropic")
    def tool_loop() -> Iterator[Any]:
        for _ in range(2):
            yield from client.messages.create(model=HAIKU, max_tokens=10, messages=HI, stream=True)

    seen_stop = False
    for event in tool_loop():
        if event.type == "message_stop":
            seen_stop = True
        elif seen_stop and event.type == "content_block_stop":
            break
    [(status, error_type, *_)] = _rows(costs)
    assert (status, error_type) == ("cancelled", "GeneratorExit")
