"""One ``attribute(...)`` instance shared by concurrent tasks and threads, and re-entered.

A module-level ``SEARCH = attribute(feature="search")`` used as ``with SEARCH:`` / ``async
with SEARCH:`` in many handlers at once: each task or thread leaves its own scope and gets
its own values back, whatever the order in which the overlapping scopes close.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Generator
from decimal import Decimal
from typing import Any

import pytest

from costledger import Attribution, attribute, track_cost
from costledger._attribution import current_attribution
from costledger.testing import capture_costs

USAGE = {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}}
# gpt-4o-mini: 1000 x 0.15/M + 100 x 0.60/M
COST = Decimal("0.00021")


def _seen() -> tuple[str | None, str | None, tuple[str, ...]]:
    a = current_attribution()
    return a.user, a.feature, a.tags


@pytest.mark.parametrize("first_out", ["A", "B"])
def test_shared_instance_across_overlapping_tasks_restores_each_tasks_values(
    first_out: str,
) -> None:
    search = attribute(feature="search", tags=["s"])
    log: list[tuple[str, str, tuple[str | None, str | None, tuple[str, ...]]]] = []

    async def handler(name: str, events: dict[str, asyncio.Event], may_exit: asyncio.Event) -> Any:
        with attribute(user=name.lower()):
            async with search:
                log.append((name, "in", _seen()))
                events[name].set()
                await may_exit.wait()
                log.append((name, "still in", _seen()))
            log.append((name, "out", _seen()))
        return _seen()

    async def main() -> list[Any]:
        events = {"A": asyncio.Event(), "B": asyncio.Event()}
        exit_a, exit_b = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(handler("A", events, exit_a))
        await events["A"].wait()
        b = asyncio.create_task(handler("B", events, exit_b))
        await events["B"].wait()  # both are inside the same instance's scope now
        first, second = (exit_a, exit_b) if first_out == "A" else (exit_b, exit_a)
        first.set()
        await asyncio.sleep(0.01)
        second.set()
        return list(await asyncio.gather(a, b, return_exceptions=True))

    assert asyncio.run(main()) == [(None, None, ()), (None, None, ())]
    assert sorted(log) == [
        ("A", "in", ("a", "search", ("s",))),
        ("A", "out", ("a", None, ())),
        ("A", "still in", ("a", "search", ("s",))),
        ("B", "in", ("b", "search", ("s",))),
        ("B", "out", ("b", None, ())),
        ("B", "still in", ("b", "search", ("s",))),
    ]
    assert current_attribution() == Attribution()


def test_shared_instance_across_threads_entered_and_left_out_of_order() -> None:
    search = attribute(feature="search")
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(name: str, body: Callable[[], None]) -> threading.Thread:
        def target() -> None:
            try:
                body()
            except BaseException as exc:  # pragma: no cover - the failure being tested
                errors.append(exc)

        thread = threading.Thread(target=target, name=name)
        thread.start()
        return thread

    def a() -> None:
        with attribute(user="a"):
            with search:
                a_in.set()
                assert b_in.wait(5)
                seen["a in"] = _seen()
            seen["a out"] = _seen()
            a_out.set()

    def b() -> None:
        assert a_in.wait(5)
        with attribute(user="b"):
            with search:
                b_in.set()
                assert a_out.wait(5)  # A left the shared scope while B is still inside it
                seen["b in"] = _seen()
            seen["b out"] = _seen()

    threads = [run("a", a), run("b", b)]
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert seen == {
        "a in": ("a", "search", ()),
        "a out": ("a", None, ()),
        "b in": ("b", "search", ()),
        "b out": ("b", None, ()),
    }


def test_nested_reentry_of_one_instance_in_one_task() -> None:
    search = attribute(feature="search", tags=["s"])
    with search as outer:
        assert outer.feature == "search"
        with attribute(feature="inner", user="u", tags=["i"]):
            with search:
                assert _seen() == ("u", "search", ("s", "i"))
                with search:
                    assert _seen() == ("u", "search", ("s", "i"))
                assert _seen() == ("u", "search", ("s", "i"))
            assert _seen() == ("u", "inner", ("s", "i"))
        assert _seen() == (None, "search", ("s",))
    assert current_attribution() == Attribution()


def test_an_exception_inside_a_shared_scope_propagates_and_restores() -> None:
    search = attribute(feature="search")

    async def boom() -> None:
        async with search:
            await asyncio.sleep(0)
            raise KeyError("host's own error")

    async def ok() -> tuple[str | None, str | None, tuple[str, ...]]:
        async with search:
            await asyncio.sleep(0.01)
            return _seen()

    async def main() -> list[Any]:
        return list(await asyncio.gather(boom(), ok(), return_exceptions=True))

    failed, fine = asyncio.run(main())
    assert isinstance(failed, KeyError)
    assert fine == (None, "search", ())


def test_one_instance_as_decorator_and_context_manager_at_once() -> None:
    search = attribute(feature="search")

    @search
    async def decorated(user: str) -> tuple[str | None, str | None, tuple[str, ...]]:
        with attribute(user=user):
            await asyncio.sleep(0.005)
            return _seen()

    async def managed(user: str) -> tuple[str | None, str | None, tuple[str, ...]]:
        async with search:
            with attribute(user=user):
                await asyncio.sleep(0.005)
                inside = _seen()
            await asyncio.sleep(0.005)
        assert _seen() == (None, None, ())
        return inside

    async def main() -> list[Any]:
        coros = [decorated(f"d{i}") for i in range(10)] + [managed(f"m{i}") for i in range(10)]
        return list(await asyncio.gather(*coros))

    assert asyncio.run(main()) == [(f"d{i}", "search", ()) for i in range(10)] + [
        (f"m{i}", "search", ()) for i in range(10)
    ]


def test_tracked_calls_in_overlapping_tasks_are_attributed_to_their_own_task() -> None:
    search = attribute(feature="search")

    @track_cost(model="gpt-4o-mini", provider="openai")
    async def ask() -> dict[str, Any]:
        await asyncio.sleep(0)
        return USAGE

    async def handler(user: str, delay: float) -> None:
        with attribute(user=user):
            async with search:
                await asyncio.sleep(delay)
                await ask()
            await ask()  # after the shared scope: the user only

    async def main() -> None:
        await asyncio.gather(handler("u1", 0.02), handler("u2", 0.0), handler("u3", 0.01))

    with capture_costs() as costs:
        asyncio.run(main())
    rows = sorted(
        (e.user, e.feature or "", e.usage.input_tokens, e.usage.output_tokens, e.cost.total)
        for e in costs.events
    )
    assert rows == [
        (u, feature, 1000, 100, COST) for u in ("u1", "u2", "u3") for feature in ("", "search")
    ]
    assert costs.total == COST * 6


def test_exiting_where_it_was_not_entered_never_raises_or_changes_the_scope() -> None:
    search = attribute(feature="search")
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            with attribute(user="other"):
                search.__exit__(None, None, None)  # never entered in this thread
                assert _seen() == ("other", None, ())
        except BaseException as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    with search:
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(5)
        assert _seen() == (None, "search", ())
    assert errors == []
    assert current_attribution() == Attribution()


def test_a_task_copying_the_context_inside_the_scope_leaves_its_own_reentry() -> None:
    search = attribute(feature="search")

    async def child() -> tuple[Any, Any]:
        async with search:  # re-entered in a task that inherited the parent's scope
            await asyncio.sleep(0.01)
            inside = _seen()
        return inside, _seen()

    async def main() -> tuple[Any, Any]:
        async with search:
            task = asyncio.create_task(child())
            await asyncio.sleep(0)
        parent_after = _seen()  # the parent left first, while the child is still inside
        return await task, parent_after

    (inside, child_after), parent_after = asyncio.run(main())
    assert inside == (None, "search", ())
    assert child_after == (None, "search", ())  # the inherited scope, still open there
    assert parent_after == (None, None, ())
    # A thread running a copy of the context behaves the same way.
    with search:
        ctx = contextvars.copy_context()
    result: list[Any] = []

    def in_copy() -> None:
        with search:
            result.append(_seen())
        result.append(_seen())

    thread = threading.Thread(target=lambda: ctx.run(in_copy))
    thread.start()
    thread.join(5)
    assert result == [(None, "search", ()), (None, "search", ())]
    assert current_attribution() == Attribution()


@pytest.mark.parametrize("consumer_in_scope", [False, True])
def test_a_decorated_generator_entering_the_shared_instance_between_steps(
    consumer_in_scope: bool,
) -> None:
    search = attribute(feature="search")

    @attribute(user="gen")
    def gen() -> Generator[tuple[str | None, str | None, tuple[str, ...]], None, None]:
        with search:
            yield _seen()
            yield current_attribution().user, None, ()
        yield current_attribution().user, None, ()

    def consume() -> list[Any]:
        return [(item, _seen()) for item in gen()]

    outside: tuple[str | None, str | None, tuple[str, ...]]
    if consumer_in_scope:
        with search:
            steps = consume()
        outside = (None, "search", ())
    else:
        steps = consume()
        outside = (None, None, ())
    # The generator's own ``with`` exits in a later step than it entered (its scope was
    # reset with the step): the exit finds nothing of its own and leaves the consumer's.
    assert steps == [
        (("gen", "search", ()), outside),
        (("gen", None, ()), outside),
        (("gen", None, ()), outside),
    ]
    assert current_attribution() == Attribution()
