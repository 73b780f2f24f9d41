from __future__ import annotations

import asyncio
import contextvars
import threading

from costledger import Attribution, attribute
from costledger._attribution import current_attribution


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
