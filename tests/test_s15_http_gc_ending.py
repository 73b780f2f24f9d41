"""A tracked response the cyclic GC ends only queues its ending, under a durable ledger too.

The GC runs on whatever thread allocates, wherever it is: possibly while that thread holds
a lock a ledger takes again to store a call (``Ledger(durable=True)`` stores each event on
the caller's thread, under its spool's non-reentrant lock). A half-read stream dropped by
the host (its generators closed by the collection) or a response never read (its
``__del__``) recorded its call from the collection, stored it at once, and waited on its own
thread forever. The ledger here stores under a plain lock and collects while it holds it,
which is what an allocation there may do.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

import costledger
from costledger import Tracker
from costledger.http import AsyncTrackingTransport, TrackingTransport

from ._fake_provider import FakeProvider, Reply, chat_stream
from .gc_support import Cycle, LockingDurableLedger, gc_off, in_a_thread  # noqa: F401

MESSAGES = [{"role": "user", "content": "Say hello"}]
# gpt-4o-mini: 1000 uncached in at $0.15/MTok, 1000 cached at $0.075, 500 out at $0.60
CHAT_COST = Decimal("0.000525")

pytestmark = pytest.mark.usefixtures("fresh_provider")


def _client(provider: FakeProvider, tracker: Tracker) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=provider.openai_url,
        api_key="sk-test-gc-ending-0000",
        max_retries=0,
        http_client=httpx.Client(transport=TrackingTransport(tracker=tracker)),
    )


def _rows(ledger: LockingDurableLedger) -> list[tuple[Any, ...]]:
    return [
        (e.status, e.streamed, e.cost.total, e.error_type, dict(e.metadata)) for e in ledger.events
    ]


PLAIN = ("ok", False, CHAT_COST, None, {})


@pytest.mark.usefixtures("gc_off")
def test_a_half_read_stream_collected_inside_a_durable_ledgers_lock(
    provider: FakeProvider,
) -> None:
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")
    client = _client(provider, tracker)
    gate = threading.Event()
    # the stream holds back all but its first event; the plain call gets the default answer
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), pause_after=1, gate=gate))

    def plain() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    try:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        assert next(iter(stream)).choices[0].delta.role == "assistant"
        Cycle(stream)
        del stream
        ledger.collect_in_record = True
        in_a_thread(plain)  # its event stored on this thread: the collection runs in record
        assert costledger.drain_deferred(10)
    finally:
        gate.set()
    assert _rows(ledger) == [
        PLAIN,
        ("cancelled", True, None, None, {"costledger.usage_missing": "no usage in the stream"}),
    ]
    assert ledger.events[1].latency_ms is not None


@pytest.mark.usefixtures("gc_off")
def test_a_body_iterator_collected_inside_a_durable_ledgers_lock(provider: FakeProvider) -> None:
    """The response lives on; only the iterator reading its body is dropped: the GC closes
    the transport's generator under it (``GeneratorExit``), not the response."""
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")
    client = _client(provider, tracker)
    gate = threading.Event()
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), pause_after=1, gate=gate))

    def plain() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    try:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            Cycle(lines)
            del lines
            ledger.collect_in_record = True
            in_a_thread(plain)
            assert costledger.drain_deferred(10)
            assert _rows(ledger) == [
                PLAIN,
                (
                    "cancelled",
                    True,
                    None,
                    None,
                    {"costledger.usage_missing": "no usage in the stream"},
                ),
            ]
    finally:
        gate.set()
    assert len(ledger.events) == 2  # the close after it recorded nothing more


@pytest.mark.usefixtures("gc_off")
def test_a_response_never_read_collected_inside_a_durable_ledgers_lock(
    provider: FakeProvider,
) -> None:
    """No generator started: the stream's ``__del__`` ends the call."""
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")
    client = _client(provider, tracker)

    def plain() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    Cycle(raw)
    del raw
    ledger.collect_in_record = True
    in_a_thread(plain)
    assert costledger.drain_deferred(10)
    assert _rows(ledger) == [
        PLAIN,
        ("cancelled", True, None, None, {"costledger.usage_missing": "no usage in the stream"}),
    ]


@pytest.mark.usefixtures("gc_off")
def test_an_async_response_never_read_collected_inside_a_durable_ledgers_lock(
    provider: FakeProvider,
) -> None:
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")
    client = _client(provider, tracker)

    async def open_raw() -> Any:
        aclient = openai.AsyncOpenAI(
            base_url=provider.openai_url,
            api_key="sk-test-gc-ending-0000",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=AsyncTrackingTransport(tracker=tracker)),
        )
        return await aclient.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )

    def plain() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    Cycle(asyncio.run(open_raw()))
    ledger.collect_in_record = True
    in_a_thread(plain)
    assert costledger.drain_deferred(10)
    assert _rows(ledger) == [
        PLAIN,
        ("cancelled", True, None, None, {"costledger.usage_missing": "no usage in the stream"}),
    ]


def test_an_explicit_close_still_records_the_call_before_it_returns(
    provider: FakeProvider,
) -> None:
    """Not a collection: a durable ledger has the event when ``close()`` returns."""
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")
    gate = threading.Event()
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), pause_after=1, gate=gate))
    try:
        stream = _client(provider, tracker).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        next(iter(stream))
        stream.close()
        assert [(e.status, e.streamed) for e in ledger.events] == [("cancelled", True)]
    finally:
        gate.set()
