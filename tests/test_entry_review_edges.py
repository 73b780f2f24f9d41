"""Second review of ``@track_cost`` with the real OpenAI and Anthropic SDKs against the
local fake provider: a returned stream manager entered more than once, the SDKs'
``with_streaming_response`` managers, a raw response whose ``parse()`` raises, and a raw
stream read around its ``parse()``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from costledger import Budget, BudgetExceeded, Tracker, budget_status, drain_deferred, track_cost
from costledger.testing import CapturedCosts, InMemoryLedger

from ._fake_provider import FakeProvider, anthropic_error
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
    assert_priced,
    oai,
    only,
)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_provider(provider: FakeProvider) -> None:
    provider.reset()


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
