"""``@track_cost``'s endings that run from a finalizer only queue their work.

The cyclic GC runs on whatever thread allocates, wherever it is: possibly while that thread
holds a lock a guard or a ledger takes again to end a call (costledger's ``MemoryStore``
allocates under its lock in ``reserve``; a ledger appends under its own). An ending that took
that lock from the collection (a stream manager never entered released from its
``weakref.finalize``; a half-read generator the GC closes, stored at once by a durable
ledger) waited on its own thread forever. The guard and the ledger here are a host's own
(the ``Guard`` protocol, a ledger with ``record``), each keeping its state under a plain
lock and collecting while it holds it, which is what an allocation there may do.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import costledger
from costledger import Tracker, track_cost
from costledger.testing import InMemoryLedger

from ._fake_provider import FakeProvider
from .gc_support import Cycle, LockingDurableLedger, gc_off, in_a_thread  # noqa: F401

M = Decimal(1_000_000)
ANSWER = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
ANSWER_COST = (10 * Decimal("0.15") + 20 * Decimal("0.60")) / M  # gpt-4o-mini
assert Decimal("0.0000135") == ANSWER_COST
HAIKU = "claude-3-5-haiku-20241022"


class LockingGuard:
    """A guard keeping its holds under a non-reentrant lock; ``collect_in_reserve``: one
    collection runs in the next ``reserve``, the lock held."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.collect_in_reserve = False
        self.held: dict[int, str | None] = {}
        self.settled: list[int] = []
        self.released: list[int] = []
        self._next = 0

    def reserve(self, call: Any, tracker: Any) -> int:
        with self.lock:
            if self.collect_in_reserve:
                self.collect_in_reserve = False
                gc.collect()
            self._next += 1
            self.held[self._next] = call.model
            return self._next

    def settle(self, token: int, event: Any) -> None:
        with self.lock:
            del self.held[token]
            self.settled.append(token)

    def release(self, token: int) -> None:
        with self.lock:
            del self.held[token]
            self.released.append(token)


@pytest.mark.usefixtures("gc_off")
def test_a_manager_never_entered_collected_inside_the_guards_lock() -> None:
    guard = LockingGuard()
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, guards=[guard], log="off")
    client = anthropic.Anthropic(base_url="http://127.0.0.1:9/", api_key="sk-ant-x")

    @track_cost(tracker=tracker, provider="anthropic", model="claude-3-5-haiku")
    def open_stream() -> Any:  # a MessageStreamManager: no request until entered
        return client.messages.stream(model=HAIKU, messages=[], max_tokens=10)

    @track_cost(tracker=tracker)
    def plain() -> dict[str, Any]:
        return ANSWER

    plain()
    Cycle(open_stream())  # guards reserved (token 2), never entered, now garbage
    guard.collect_in_reserve = True
    in_a_thread(plain)
    assert costledger.drain_deferred(10)
    # Never entered: no request was sent, nothing recorded, its hold released.
    assert (guard.held, guard.released, sorted(guard.settled)) == ({}, [2], [1, 3])
    events = list(ledger.events())
    assert [(e.status, e.model, e.total_cost) for e in events] == 2 * [
        ("ok", "gpt-4o-mini", ANSWER_COST)
    ]


@pytest.mark.usefixtures("gc_off")
def test_a_generator_closed_by_the_gc_inside_a_durable_ledgers_lock() -> None:
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")

    @track_cost(tracker=tracker, provider="anthropic", model="claude-3-5-haiku")
    def stream() -> Iterator[dict[str, Any]]:
        yield {
            "type": "message_start",
            "message": {"model": HAIKU, "usage": {"input_tokens": 1000, "output_tokens": 1}},
        }
        yield {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}
        yield {"type": "message_delta", "usage": {"output_tokens": 200}}

    @track_cost(tracker=tracker)
    def plain() -> dict[str, Any]:
        return ANSWER

    plain()  # the price data loaded (seconds on a loaded machine) before the stream starts
    half_read = stream()
    next(half_read)
    next(half_read)
    Cycle(half_read)
    del half_read
    ledger.collect_in_record = True
    in_a_thread(plain)  # its event stored on this thread: the collection runs in record
    assert costledger.drain_deferred(10)
    del ledger.events[0]
    rows = [(e.status, e.error_type, e.streamed, e.model, e.cost.total) for e in ledger.events]
    # claude-3-5-haiku: 0.80 input, 4.00 output; message_start's 1 output token so far
    assert rows == [
        ("ok", None, False, "gpt-4o-mini", ANSWER_COST),
        (
            "cancelled",
            "GeneratorExit",
            True,
            "claude-3-5-haiku",
            (1000 * Decimal("0.80") + 1 * 4) / M,
        ),
    ]
    # The latency is the generator's when the GC closed it, not when the worker got to it.
    assert ledger.events[1].latency_ms < ledger.events[0].latency_ms + 5_000


@pytest.mark.usefixtures("gc_off")
def test_a_raw_stream_never_read_collected_inside_a_durable_ledgers_lock() -> None:
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")
    with FakeProvider() as provider:
        client = openai.OpenAI(base_url=provider.openai_url, api_key="sk-test", max_retries=0)

        @track_cost(tracker=tracker)
        def raw() -> Any:  # parse() gives the Stream, tracked, not read
            return client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )

        @track_cost(tracker=tracker)
        def plain() -> dict[str, Any]:
            return ANSWER

        Cycle(raw())
        ledger.collect_in_record = True
        in_a_thread(plain)
        assert costledger.drain_deferred(10)
    rows = [(e.status, e.streamed, e.cost.total, dict(e.metadata)) for e in ledger.events]
    assert rows == [
        ("ok", False, ANSWER_COST, {}),
        ("cancelled", True, None, {"costledger.usage_error": "no usage: never iterated"}),
    ]


def test_an_explicit_close_still_ends_the_call_before_it_returns() -> None:
    """Not a collection: a durable ledger has the event when ``close()`` returns."""
    ledger = LockingDurableLedger()
    tracker = Tracker(ledger, log="off")

    @track_cost(tracker=tracker, model="gpt-4o-mini")
    def stream() -> Iterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"content": "x"}}]}
        yield ANSWER

    items = stream()
    next(items)
    items.close()
    assert [(e.status, e.streamed) for e in ledger.events] == [("cancelled", True)]
