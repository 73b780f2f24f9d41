"""``@track_cost`` on every kind of function, against the real pricer and ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from costledger import BudgetExceeded, Tracker, Usage, attribute, track_cost
from costledger import _logging as costledger_logging
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


def test_generators_keep_the_attribution_scope_they_were_called_in(tracker: Tracker) -> None:
    @track_cost(tracker=tracker, feature="chat")
    def stream() -> Iterator[dict[str, Any]]:
        yield from CHUNKS

    @track_cost(tracker=tracker, feature="chat")
    async def astream() -> AsyncIterator[dict[str, Any]]:
        for chunk in CHUNKS:
            yield chunk

    async def consume(agen: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
        return [c async for c in agen]

    with capture_costs(isolate=False) as costs:
        with attribute(user="carol", tags=["web"]):  # e.g. a handler returning a stream
            gen, agen, never = stream(), astream(), stream()
        time.sleep(0.2)
        # consumed after the scope: the call's scope wins, the one at iteration fills gaps
        with attribute(user="other", team="blue"):
            assert list(gen) == CHUNKS
        assert asyncio.run(consume(agen)) == CHUNKS
        del never  # never iterated: no call was opened, nothing is recorded
    assert [(e.user, e.team, e.feature, e.tags, e.status) for e in costs.events] == [
        ("carol", "blue", "chat", ("web",), "ok"),
        ("carol", None, "chat", ("web",), "ok"),
    ]
    assert costs.total == 2 * GPT4O_MINI_1200_1024_300
    # the call opens at the first iteration: the wait before it is not the call's latency
    assert all(e.latency_ms is not None and e.latency_ms < 200 for e in costs.events)


def test_usage_callable_is_applied_to_each_stream_chunk(tracker: Tracker) -> None:
    @track_cost(tracker=tracker, model="gpt-4o-mini", usage=lambda r: r["raw"])
    def nested() -> Iterator[dict[str, Any]]:
        for chunk in CHUNKS:
            yield {"raw": chunk}

    @track_cost(tracker=tracker, model="gpt-4o-mini", usage=lambda r: r["raw"])
    async def anested() -> AsyncIterator[dict[str, Any]]:
        for chunk in CHUNKS:
            yield {"raw": chunk}

    custom_usage = lambda r: Usage(r["usage"]["in"], r["usage"]["out"])  # noqa: E731

    @track_cost(tracker=tracker, model="gpt-4o-mini", usage=custom_usage)
    def custom() -> Iterator[dict[str, Any]]:
        yield {"usage": {"in": 1000, "out": 100}}
        yield {"text": "more"}  # usage= raises for these: not usage, the last one is kept
        yield {"text": "more"}

    @track_cost(tracker=tracker, model="gpt-4o-mini", usage=custom_usage)
    def none() -> Iterator[dict[str, Any]]:
        yield {"text": "no usage anywhere"}

    async def consume() -> None:
        async for _ in anested():
            pass

    with capture_costs(isolate=False) as costs:
        list(nested())
        asyncio.run(consume())
        list(custom())
        gen = custom()
        next(gen), next(gen)
        gen.close()  # stopped after the usage chunk: that usage cost money
        list(none())
    summary = [
        (e.status, e.usage.input_tokens, e.usage.output_tokens, e.cost.total) for e in costs.events
    ]
    assert summary == [
        ("ok", 1200, 300, GPT4O_MINI_1200_1024_300),
        ("ok", 1200, 300, GPT4O_MINI_1200_1024_300),
        ("ok", 1000, 100, Decimal("0.00021")),  # 1000 x 0.15/M + 100 x 0.60/M
        ("cancelled", 1000, 100, Decimal("0.00021")),
        ("ok", 0, 0, None),
    ]
    assert costs.events[0].usage.cache_read_tokens == 1024
    assert costs.events[-1].metadata["costledger.usage_error"] == "KeyError: 'usage'"


def test_generator_send_throw_and_return_value_are_forwarded(tracker: Tracker) -> None:
    @track_cost(tracker=tracker, model="gpt-4o-mini")
    def echo() -> Generator[dict[str, Any], str | None, str]:
        got = yield {"n": 0}
        while got is not None:
            try:
                got = yield {"echo": got}
            except ValueError as exc:
                got = yield {"caught": str(exc)}
        yield CHUNKS[-1]
        return "done"

    with capture_costs(isolate=False) as costs:
        gen = echo()
        assert next(gen) == {"n": 0}
        assert gen.send("a") == {"echo": "a"}
        assert gen.throw(ValueError("x")) == {"caught": "x"}
        assert gen.send(None) == CHUNKS[-1]
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value == "done"
        failing = echo()
        next(failing)
        with pytest.raises(KeyError):
            failing.throw(KeyError("not caught"))
    assert [(e.status, e.error_type, e.cost.total) for e in costs.events] == [
        ("ok", None, GPT4O_MINI_1200_1024_300),
        ("error", "KeyError", None),
    ]


def test_async_generator_asend_and_athrow_are_forwarded(tracker: Tracker) -> None:
    @track_cost(tracker=tracker, model="gpt-4o-mini")
    async def echo() -> AsyncGenerator[dict[str, Any], str | None]:
        got = yield {"n": 0}
        while got is not None:
            try:
                got = yield {"echo": got}
            except ValueError as exc:
                got = yield {"caught": str(exc)}
        yield CHUNKS[-1]

    async def main() -> list[dict[str, Any]]:
        gen = echo()
        seen = [await gen.__anext__(), await gen.asend("a")]
        seen += [await gen.athrow(ValueError("x")), await gen.asend(None)]
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return seen

    with capture_costs(isolate=False) as costs:
        assert asyncio.run(main()) == [{"n": 0}, {"echo": "a"}, {"caught": "x"}, CHUNKS[-1]]
    (event,) = costs.events
    assert (event.status, event.streamed, event.cost.total) == (
        "ok",
        True,
        GPT4O_MINI_1200_1024_300,
    )


def test_above_classmethod_and_staticmethod(tracker: Tracker) -> None:
    class Client:
        @track_cost(tracker=tracker, attribution=lambda cls, user: {"user": user})
        @classmethod
        def ask(cls, user: str) -> dict[str, Any]:
            assert cls is Client
            return RESPONSE

        @track_cost(tracker=tracker, user="static")
        @staticmethod
        async def aask() -> dict[str, Any]:
            return RESPONSE

        @track_cost(tracker=tracker, user="stream")
        @staticmethod
        def stream() -> Iterator[dict[str, Any]]:
            yield from CHUNKS

    assert isinstance(Client.__dict__["ask"], classmethod)
    assert isinstance(Client.__dict__["aask"], staticmethod)
    with capture_costs(isolate=False) as costs:
        assert Client.ask("u1") is RESPONSE
        assert Client().ask("u2") is RESPONSE
        assert asyncio.run(Client.aask()) is RESPONSE
        assert list(Client().stream()) == CHUNKS
    assert [(e.user, e.status) for e in costs.events] == [
        ("u1", "ok"),
        ("u2", "ok"),
        ("static", "ok"),
        ("stream", "ok"),
    ]
    assert costs.total == 4 * GPT4O_MINI_1200_1024_300


def test_failing_attribution_and_estimate_callables_are_reported_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    costledger_logging._reporter.reset()  # the failure lines are rate-limited per process
    guard = RefuseOver(Decimal("0.01"))
    tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
    ran: list[dict[str, Any]] = []

    @track_cost(
        tracker=tracker,
        model="gpt-4o-mini",
        feature="search",
        attribution=lambda **k: {"user": k["who"]},
        estimate=lambda **k: Decimal(k["n"]),
    )
    def ask(**k: Any) -> dict[str, Any]:
        ran.append(k)
        return RESPONSE

    with (
        caplog.at_level(logging.WARNING, logger="costledger"),
        capture_costs(isolate=False) as costs,
    ):
        assert ask() is RESPONSE
    assert ran == [{}]
    (event,) = costs.events
    assert (event.user, event.feature, event.status) == (None, "search", "ok")
    assert event.cost.total == GPT4O_MINI_1200_1024_300
    assert (guard.spent, guard.reserved) == (GPT4O_MINI_1200_1024_300, Decimal(0))
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[1].strip() for m in messages] == [
        "tracking failed in decorator.attribution",
        "tracking failed in decorator.estimate",
    ]
    assert all("KeyError" in m for m in messages)
