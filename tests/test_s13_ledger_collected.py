"""A Ledger collected while calls are still queued for costledger's background worker: its
finalizer queues the close behind them instead of waiting for the queue on the thread the
GC interrupted, which may hold a lock that queued work needs (it stalled that thread for
the whole exit timeout)."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import costledger
from costledger import Ledger, Tracker, Usage
from costledger._tracker import defer


def test_a_collected_ledger_does_not_wait_for_the_queue_on_the_collecting_thread(
    tmp_path: Path,
) -> None:
    lock = threading.Lock()  # a guard store's, say: queued work needs it
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(url, exit_timeout=20)
    tracker = Tracker(ledger, log="off")
    tracker.record("gpt-4o-mini", Usage(100, 10))
    writer = ledger._core.thread
    assert writer is not None
    with lock:
        defer(lambda: lock.acquire() and lock.release())  # waits for this thread's lock
        del tracker, ledger
        gc.collect()  # waited up to exit_timeout (20 s) here for the queued work
        assert writer.is_alive()  # the close is queued behind it, not done here
    assert costledger.drain_deferred(30)
    writer.join(30)
    assert not writer.is_alive()
    with Ledger(url) as reopened:
        assert [e.model for e in reopened.events()] == ["gpt-4o-mini"]
