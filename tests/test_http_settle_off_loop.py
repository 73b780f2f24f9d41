"""The HTTP transport finishes a call on costledger's background worker, as the other
entry points do: an ``httpx.AsyncClient``'s guards settle (a Redis or SQL store's round
trips) never on its event loop, and the tracked call pays no pricing or storing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

import costledger
from costledger import Tracker, UsageEvent
from costledger._tracker import Call
from costledger.http import AsyncTrackingTransport
from costledger.testing import InMemoryLedger

from ._fake_provider import FakeProvider

WORKER = "costledger-deferred"
CHAT_COST = Decimal("0.000525")  # as in test_http_transport: the fake provider's chat usage


class WhereGuard:
    """A guard (the Guard protocol, nothing reserved) noting the thread of each settle."""

    name = "where"

    def __init__(self) -> None:
        self.settled: list[tuple[str, Decimal | None]] = []

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.settled.append((threading.current_thread().name, event.total_cost))

    def release(self, token: Any) -> None:
        raise AssertionError("nothing to release: the call succeeded")


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


def test_async_client_settles_on_the_worker_not_the_event_loop(provider: FakeProvider) -> None:
    assert costledger.drain_deferred(30)  # an empty queue: a full one finishes on the caller
    where = WhereGuard()
    tracker = Tracker(InMemoryLedger(), guards=[where], log="off")

    async def main() -> str:
        client = openai.AsyncOpenAI(
            base_url=provider.openai_url,
            api_key="sk-test-settle-0000",
            http_client=httpx.AsyncClient(transport=AsyncTrackingTransport(tracker=tracker)),
            max_retries=0,
        )
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
        )
        await client.close()
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert costledger.drain_deferred(10)
    assert loop_thread == "MainThread"
    assert where.settled == [(WORKER, CHAT_COST)]
    [event] = tracker.ledger.events()
    assert (event.source, event.total_cost) == ("http", CHAT_COST)
