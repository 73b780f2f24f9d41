"""An ``agenerate`` batch a guard refuses part-way gives the prompts it started back off the
event loop (real LangChain runtime, real Tracker, a real Redis guard store whose release
notes its thread; only the chat model is a fake).

The handler used to release them with ``Tracker.cancel`` on the loop, one Redis round trip
each; they now go to costledger's settle threads (``Tracker.cancel(background=True)``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from langchain_core.messages import HumanMessage
from langchain_fakes import UsageChatModel

from costledger import Budget, BudgetExceeded, Tracker, drain_deferred
from costledger._guards._redis import RedisStore
from costledger.testing import InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler


class NotingRedis(RedisStore):
    """A real Redis store noting the thread of each release."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.released_on: list[str] = []

    def release(self, *args: Any, **kwargs: Any) -> None:
        self.released_on.append(threading.current_thread().name)
        super().release(*args, **kwargs)


@pytest.fixture
def store() -> Iterator[NotingRedis]:
    base = os.environ.get("COSTLEDGER_TEST_REDIS_URL")
    if not base:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("COSTLEDGER_TEST_REDIS_URL is not set, and CI=true requires it")
        pytest.skip("COSTLEDGER_TEST_REDIS_URL is not set; export it to run this test")
    prefix = f"lc-release-{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in base else "?"
    noting = NotingRedis(f"{base}{sep}prefix={prefix}&timeout=5")
    try:
        yield noting
    finally:
        assert drain_deferred(30)
        client = redis.Redis.from_url(base)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_a_batch_refused_part_way_releases_its_started_prompts_off_the_loop(
    store: NotingRedis,
) -> None:
    # each prompt's worst case: its few input tokens plus 100 output tokens; two fit
    budget = Budget("250 tokens", "day", name=f"lc-{uuid.uuid4().hex[:6]}")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=store, log="off")
    handler = CostLedgerCallbackHandler(tracker)
    model = UsageChatModel(max_tokens=100)

    async def main() -> str:
        with pytest.raises(BudgetExceeded):
            await model.agenerate([[HumanMessage("hello")]] * 3, callbacks=[handler])
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert drain_deferred(10)
    # the two prompts started before the refusal, released on the settle threads
    assert store.released_on == ["costledger-settle", "costledger-settle"]
    assert loop_thread not in store.released_on
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (Decimal(0), Decimal(0))
    assert model.calls == 0
    assert list(tracker.ledger.events()) == []  # type: ignore[attr-defined]
