"""A reader's drain sees a call a finalizer's ending finished on the background worker.

``drain_deferred()`` waits for what was queued before it (a mark behind it). An ending the
worker runs (handed over by a finalizer with ``defer_nowait``) that finished its call with
``finish(defer=True)`` queued the call again, behind the mark: the reader returned without
it (a decorator's raw stream collected by the GC, read right after, was missing).
"""

from __future__ import annotations

import threading

from costledger import Tracker, Usage, UsageEvent, drain_deferred
from costledger._tracker import defer_nowait


class _Recorded:
    """A ledger that only keeps what it is given: reading it waits for nothing."""

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


def test_a_call_finished_on_the_worker_is_seen_by_the_drain_queued_before_it() -> None:
    ledger = _Recorded()
    tracker = Tracker(ledger, log="off")
    call = tracker.start(source="api", model="gpt-4o-mini")
    go = threading.Event()

    def ending() -> None:  # as a finalizer's ending: on the worker, once the drain is queued
        go.wait(10)
        tracker.finish(call, usage=Usage(input_tokens=1000, output_tokens=10), defer=True)

    defer_nowait(ending)
    threading.Timer(0.3, go.set).start()  # the drain below queues its mark first
    assert drain_deferred(10)
    [event] = ledger.events
    assert (event.id, str(event.cost.total)) == (call.id, "0.00015600")
