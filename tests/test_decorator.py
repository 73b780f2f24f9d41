"""``@track_cost`` on every kind of function, against the real pricer and ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from costledger import BudgetExceeded, Tracker, Usage, attribute, track_cost
from costledger._tracker import drain_deferred
from costledger.testing import InMemoryLedger, capture_costs

from .test_tracker import GPT4O_MINI_1200_1024_300, RefuseOver

RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-9",
    "model": "gpt-4o-mini-2024-07-18",
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1024},
    },
}
CHUNKS: list[dict[str, Any]] = [
    {"model": "gpt-4o-mini-2024-07-18", "choices": [{"delta": {"content": "a"}}], "usage": None},
    {"model": "gpt-4o-mini-2024-07-18", "choices": [{"delta": {"content": "b"}}], "usage": None},
    {"model": "gpt-4o-mini-2024-07-18", "choices": [], "usage": RESPONSE["usage"]},
]


@pytest.fixture
def tracker() -> Tracker:
    return Tracker(InMemoryLedger(), log="off")


def test_bare_decorator_uses_the_default_tracker() -> None:
    @track_cost
    def ask() -> dict[str, Any]:
        return RESPONSE

    with capture_costs() as costs:
        assert ask() is RESPONSE
    (event,) = costs.events
    assert event.source == "decorator"
    assert event.model == "gpt-4o-mini-2024-07-18"
    assert event.request_id == "chatcmpl-9"
    assert event.cost.total == GPT4O_MINI_1200_1024_300


def test_sync_with_static_and_computed_attribution(tracker: Tracker) -> None:
    @track_cost(
        tracker=tracker,
        model="gpt-4o-mini",
        feature="search",
        attribution=lambda q, user: {"user": user, "tags": [q[:3]]},
    )
    def ask(q: str, user: str) -> dict[str, Any]:
        return RESPONSE

    with capture_costs(isolate=False) as costs:
        ask("why", user="u7")
    (event,) = costs.events
    assert (event.model, event.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (event.user, event.feature, event.tags) == ("u7", "search", ("why",))


def test_exceptions_are_reraised_unchanged_and_recorded(tracker: Tracker) -> None:
    class Boom(Exception):
        pass

    @track_cost(tracker=tracker, model="gpt-4o-mini")
    def ask() -> None:
        raise Boom("provider down")

    with capture_costs(isolate=False) as costs, pytest.raises(Boom, match="provider down"):
        ask()
    (event,) = costs.events
    assert (event.status, event.error_type, event.cost.status) == ("error", "Boom", "not_priced")


def test_async_function_and_method(tracker: Tracker) -> None:
    class Service:
        def __init__(self) -> None:
            self.calls = 0

        @track_cost(tracker=tracker)
        async def ask(self) -> dict[str, Any]:
            self.calls += 1
            await asyncio.sleep(0)
            return RESPONSE

    service = Service()

    async def main() -> None:
        with attribute(user="async-user"):
            await asyncio.gather(service.ask(), service.ask())

    with capture_costs(isolate=False) as costs:
        asyncio.run(main())
    assert service.calls == 2
    assert [e.user for e in costs.events] == ["async-user", "async-user"]
    assert costs.total == 2 * GPT4O_MINI_1200_1024_300


def test_generator_recorded_once_from_the_final_chunk(tracker: Tracker) -> None:
    @track_cost(tracker=tracker)
    def stream() -> Iterator[dict[str, Any]]:
        yield from CHUNKS

    with capture_costs(isolate=False) as costs:
        assert list(stream()) == CHUNKS
    (event,) = costs.events
    assert event.streamed
    assert event.status == "ok"
    assert event.cost.total == GPT4O_MINI_1200_1024_300


def test_generator_closed_early_is_cancelled(tracker: Tracker) -> None:
    @track_cost(tracker=tracker, model="gpt-4o-mini")
    def stream() -> Iterator[dict[str, Any]]:
        yield from CHUNKS

    with capture_costs(isolate=False) as costs:
        gen = stream()
        next(gen)
        gen.close()
    (event,) = costs.events
    assert (event.status, event.streamed, event.cost.status) == ("cancelled", True, "not_priced")


def test_async_generator(tracker: Tracker) -> None:
    @track_cost(tracker=tracker)
    async def stream() -> AsyncIterator[dict[str, Any]]:
        for chunk in CHUNKS:
            yield chunk

    async def main() -> list[dict[str, Any]]:
        return [c async for c in stream()]

    with capture_costs(isolate=False) as costs:
        assert asyncio.run(main()) == CHUNKS
    (event,) = costs.events
    assert event.cost.total == GPT4O_MINI_1200_1024_300


def test_usage_callable_returning_usage(tracker: Tracker) -> None:
    @track_cost(tracker=tracker, model="gpt-4o-mini", usage=lambda r: Usage(r["in"], r["out"]))
    def tool() -> dict[str, int]:
        return {"in": 1000, "out": 100}

    with capture_costs(isolate=False) as costs:
        tool()
    assert costs.total == Decimal("0.00021")  # 1000 x 0.15/M + 100 x 0.60/M


def test_guard_refuses_before_the_function_runs() -> None:
    guard = RefuseOver(Decimal("0.01"))
    tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
    ran: list[int] = []

    @track_cost(tracker=tracker, model="gpt-4o-mini", estimate=lambda n: Decimal(n) / 100)
    def work(n: int) -> dict[str, Any]:
        ran.append(n)
        return RESPONSE

    work(1)
    with pytest.raises(BudgetExceeded):
        work(5)
    assert ran == [1]
    drain_deferred()  # the settle runs on the background worker
    assert guard.spent == GPT4O_MINI_1200_1024_300
