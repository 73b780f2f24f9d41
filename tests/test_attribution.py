from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from decimal import Decimal
from typing import Any

from costledger import Attribution, attribute, track_cost
from costledger._attribution import current_attribution
from costledger.testing import capture_costs


def test_nested_scopes_merge_inner_wins_and_tags_accumulate() -> None:
    with attribute(user="u1", team="t1", tags=["a"], env="prod"):
        with attribute(user="u2", tags=["b", "a"], run="7"):
            a = current_attribution()
            assert (a.user, a.team, a.tags) == ("u2", "t1", ("a", "b"))
            assert dict(a.metadata) == {"env": "prod", "run": "7"}
        assert current_attribution().user == "u1"
    assert current_attribution() == Attribution()


def test_decorator_sync_and_async_and_concurrent_tasks() -> None:
    @attribute(feature="f")
    def sync() -> str | None:
        return current_attribution().feature

    assert sync() == "f"
    assert current_attribution().feature is None

    scope = attribute(team="blue")

    @scope
    async def task(user: str) -> tuple[str | None, str | None]:
        with attribute(user=user):
            await asyncio.sleep(0.01)
            a = current_attribution()
            return a.user, a.team

    async def main() -> list[tuple[str | None, str | None]]:
        return await asyncio.gather(*(task(f"u{i}") for i in range(20)))

    assert asyncio.run(main()) == [(f"u{i}", "blue") for i in range(20)]


def test_threads_that_copy_the_context_see_it_and_others_do_not() -> None:
    seen: dict[str, str | None] = {}
    with attribute(user="copied"):
        ctx = contextvars.copy_context()
        t1 = threading.Thread(
            target=lambda: ctx.run(lambda: seen.update(a=current_attribution().user))
        )
        t2 = threading.Thread(target=lambda: seen.update(b=current_attribution().user))
        t1.start(), t2.start()
        t1.join(), t2.join()
    assert seen == {"a": "copied", "b": None}


def test_from_mapping_splits_known_keys_tags_and_metadata() -> None:
    a = Attribution.from_mapping({"user": 5, "tags": "x", "tenant": "acme"})
    assert a.user == "5"
    assert a.tags == ("x",)
    assert dict(a.metadata) == {"tenant": "acme"}


def test_decorator_on_a_generator_scopes_each_step_not_the_consumer() -> None:
    closed_under: list[str | None] = []

    @attribute(user="gen-user")
    def gen() -> Generator[tuple[str | None, ...], str, str]:
        try:
            got = yield (current_attribution().user,)
            a = current_attribution()
            yield got, a.user, a.team  # the scope of whoever resumes it fills the gaps
            yield (current_attribution().user,)
        finally:
            closed_under.append(current_attribution().user)
        return "unreached"

    g = gen()
    assert next(g) == ("gen-user",)
    assert current_attribution().user is None  # between steps the consumer does not see it
    with attribute(user="consumer", team="blue"):
        assert g.send("sent") == ("sent", "gen-user", "blue")
        assert current_attribution().user == "consumer"
    g.close()
    assert closed_under == ["gen-user"]
    assert current_attribution() == Attribution()


def test_decorator_on_an_async_generator_scopes_each_step_not_the_consumer() -> None:
    @attribute(user="agen-user")
    async def agen() -> AsyncGenerator[str | None, str | None]:
        got = yield current_attribution().user
        await asyncio.sleep(0)
        try:
            yield f"{got}:{current_attribution().user}"
        except ValueError:
            yield f"caught:{current_attribution().user}"

    async def main() -> list[str | None]:
        g = agen()
        seen = [await g.__anext__(), current_attribution().user]
        seen += [await g.asend("sent"), current_attribution().user]
        seen += [await g.athrow(ValueError()), current_attribution().user]
        return seen

    assert asyncio.run(main()) == [
        "agen-user",
        None,
        "sent:agen-user",
        None,
        "caught:agen-user",
        None,
    ]


def test_decorator_over_tracked_streams_attributes_their_calls() -> None:
    usage = {"usage": {"prompt_tokens": 100, "completion_tokens": 50}}

    @attribute(user="alice", feature="chat")
    @track_cost(model="gpt-4o-mini", provider="openai")
    def stream() -> Iterator[dict[str, Any]]:
        assert current_attribution().user == "alice"
        yield usage

    @attribute(user="bob")
    @track_cost(model="gpt-4o-mini", provider="openai")
    async def astream() -> AsyncIterator[dict[str, Any]]:
        assert current_attribution().user == "bob"
        yield usage

    async def consume() -> list[dict[str, Any]]:
        return [chunk async for chunk in astream()]

    with capture_costs() as costs:
        assert list(stream()) == [usage]
        assert asyncio.run(consume()) == [usage]
    assert [
        (e.user, e.feature, e.usage.input_tokens, e.usage.output_tokens) for e in costs.events
    ] == [
        ("alice", "chat", 100, 50),
        ("bob", None, 100, 50),
    ]
    # 100 x 0.15/M + 50 x 0.60/M each
    assert [e.cost.total for e in costs.events] == [Decimal("0.000045"), Decimal("0.000045")]
