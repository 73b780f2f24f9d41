"""A request cancelled before it was sent is no call; one of the other library is refused.

Against the real local provider, through httpx's and httpx2's own transports (their
connection pools report, through the request's ``trace`` extension, when they start
writing a request): a cancellation while waiting for a pooled connection or connecting
records nothing and gives the guards' hold back; one after sending stays ``cancelled``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import pytest

from costledger import Budget, Tracker, UsageEvent
from costledger.http import (
    AsyncHttpx2TrackingTransport,
    AsyncTrackingTransport,
    Httpx2TrackingTransport,
    TrackingTransport,
)
from costledger.testing import CapturedCosts, InMemoryLedger, MemoryStore

from ._fake_provider import FakeProvider, Reply, chat_completion, chat_stream

MESSAGES = [{"role": "user", "content": "Say hello"}]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
STREAM = {**CHAT, "stream": True}
# gpt-4o-mini: 1000 uncached in at $0.15/MTok, 1000 cached at $0.075, 500 out at $0.60
CHAT_COST = Decimal("0.000525")
FLAVOURS = ["httpx", "httpx2"]


# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


def budgeted() -> tuple[Tracker, Budget]:
    budget = Budget("100 USD", "day")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    return tracker, budget


def held(tracker: Tracker, budget: Budget) -> tuple[Decimal, Decimal]:
    (status,) = budget.status(tracker)
    return status.spent, status.reserved


def sync_client(flavour: str, tracker: Tracker) -> Any:
    if flavour == "httpx":
        return httpx.Client(transport=TrackingTransport(httpx.HTTPTransport(), tracker=tracker))
    return httpx2.Client(transport=Httpx2TrackingTransport(httpx2.HTTPTransport(), tracker=tracker))


def async_client(flavour: str, tracker: Tracker) -> Any:
    # One connection: a second request waits for the pool while the first holds it.
    if flavour == "httpx":
        inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
        return httpx.AsyncClient(transport=AsyncTrackingTransport(inner, tracker=tracker))
    inner2 = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=1))
    return httpx2.AsyncClient(transport=AsyncHttpx2TrackingTransport(inner2, tracker=tracker))


def assert_stream_priced(event: UsageEvent) -> None:
    assert (event.status, event.streamed, event.source) == ("ok", True, "http")
    assert event.cost.status == "priced"
    assert event.cost.total == CHAT_COST


# -- cancelled before sending: nothing recorded ---------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_async_cancel_while_waiting_for_a_pooled_connection_records_nothing(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    tracker, budget = budgeted()
    gate = threading.Event()
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), pause_after=1, gate=gate))
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with async_client(flavour, tracker) as client:
            url = f"{provider.openai_url}/chat/completions"
            async with client.stream("POST", url, json=STREAM) as first:  # holds the connection
                with pytest.raises(asyncio.TimeoutError):  # TimeoutError from 3.11 on
                    await asyncio.wait_for(client.post(url, json=CHAT), 0.3)
                seen["held while streaming"] = held(tracker, budget)
                gate.set()
                await first.aread()

    try:
        asyncio.run(main())
    finally:
        gate.set()
    # only the stream reached the provider, and only it is recorded
    assert len(provider.requests_to("/chat/completions")) == 1
    (event,) = costs.events
    assert_stream_priced(event)
    assert event.usage.input_tokens == 2000
    # the cancelled request's hold was given back at once, not left to the stream's end
    spent, reserved = seen["held while streaming"]
    assert spent == Decimal(0)
    assert reserved > 0  # the stream's own hold
    assert held(tracker, budget) == (CHAT_COST, Decimal(0))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sync_interrupt_while_connecting_records_nothing(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    tracker, budget = budgeted()
    events: list[str] = []

    def trace(name: str, info: dict[str, Any]) -> None:  # Ctrl-C during the TCP connect
        events.append(name)
        if name == "connection.connect_tcp.started":
            raise KeyboardInterrupt

    with sync_client(flavour, tracker) as client, pytest.raises(KeyboardInterrupt):
        client.post(
            f"{provider.openai_url}/chat/completions", json=CHAT, extensions={"trace": trace}
        )
    assert events == ["connection.connect_tcp.started"]  # the caller's callback still runs
    assert provider.requests_to("/chat/completions") == []
    assert costs.events == []
    assert held(tracker, budget) == (Decimal(0), Decimal(0))


# -- cancelled after sending: recorded cancelled --------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_async_cancel_waiting_for_the_answer_is_recorded_cancelled(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    tracker, budget = budgeted()
    provider.enqueue("/chat/completions", Reply(json=chat_completion(), delay=5))

    async def main() -> None:
        # cancelled once the request is out (a fixed timeout could fire before it was sent
        # on a loaded machine: then, rightly, nothing is recorded)
        sent = asyncio.Event()

        async def trace(name: str, info: dict[str, Any]) -> None:
            if name == "http11.receive_response_headers.started":
                sent.set()

        async with async_client(flavour, tracker) as client:
            url = f"{provider.openai_url}/chat/completions"
            task = asyncio.ensure_future(client.post(url, json=CHAT, extensions={"trace": trace}))
            await asyncio.wait_for(sent.wait(), 60)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    # the server thread notes the request once it has read it: on a loaded machine that
    # can come after the client, which has sent it, was cancelled
    deadline = time.monotonic() + 30
    while not provider.requests_to("/chat/completions") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(provider.requests_to("/chat/completions")) == 1
    (event,) = costs.events
    assert (event.status, event.error_type, event.model) == (
        "cancelled",
        "CancelledError",
        "gpt-4o-mini",
    )
    assert event.cost.status == "not_priced"
    assert event.cost.total is None
    assert held(tracker, budget) == (Decimal(0), Decimal(0))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sync_interrupt_waiting_for_the_answer_is_recorded_cancelled(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    tracker, budget = budgeted()

    def trace(name: str, info: dict[str, Any]) -> None:  # Ctrl-C once the request is out
        if name == "http11.receive_response_headers.started":
            raise KeyboardInterrupt

    with sync_client(flavour, tracker) as client, pytest.raises(KeyboardInterrupt):
        client.post(
            f"{provider.openai_url}/chat/completions", json=CHAT, extensions={"trace": trace}
        )
    (event,) = costs.events
    assert (event.status, event.error_type) == ("cancelled", "KeyboardInterrupt")
    assert held(tracker, budget) == (Decimal(0), Decimal(0))


# -- the caller's own trace callback -------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_caller_trace_callback_sees_every_event_and_is_left_in_place(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    tracker, _budget = budgeted()
    names: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        names.append(name)

    async def main() -> tuple[Any, Any]:
        async with async_client(flavour, tracker) as client:
            url = f"{provider.openai_url}/chat/completions"
            traced = await client.post(url, json=CHAT, extensions={"trace": trace})
            plain = await client.post(url, json=CHAT)
            return traced, plain

    traced, plain = asyncio.run(main())
    assert names == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "http11.send_request_headers.started",
        "http11.send_request_headers.complete",
        "http11.send_request_body.started",
        "http11.send_request_body.complete",
        "http11.receive_response_headers.started",
        "http11.receive_response_headers.complete",
        "http11.receive_response_body.started",
        "http11.receive_response_body.complete",
        "http11.response_closed.started",
        "http11.response_closed.complete",
    ]
    assert traced.request.extensions["trace"] is trace
    assert "trace" not in plain.request.extensions
    assert [(e.status, e.cost.total) for e in costs.events] == [
        ("ok", CHAT_COST),
        ("ok", CHAT_COST),
    ]
