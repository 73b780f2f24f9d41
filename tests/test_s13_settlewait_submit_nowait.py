"""``_DeferredWorker.submit_nowait``: queueing from cleanup code (a finalizer, a GC
callback) never runs the item on the calling thread, which the GC may have interrupted
while it held a lock the item needs.

``submit`` runs an item on the caller's thread when the queue is full (and after the exit
hook): from a finalizer that held, say, a ledger's lock, the item taking that lock again
would deadlock the thread.
"""

from __future__ import annotations

import threading

from costledger._tracker import _deferred, _DeferredWorker, defer_nowait, drain_deferred


def test_a_full_queue_takes_it_all_the_same_for_the_worker_to_run() -> None:
    worker = _DeferredWorker(interval=0.01, limit=2)
    gate = threading.Event()
    lock = threading.Lock()
    ran: list[int] = []

    def needs_the_lock() -> None:
        with lock:
            ran.append(threading.get_ident())

    worker.submit((gate.wait, 30))  # the worker is busy until the gate opens
    worker.submit((int,))
    worker.submit((int,))  # the queue is full: a submit now runs on this thread
    try:
        with lock:  # as a finalizer run while its thread holds the lock
            worker.submit_nowait((needs_the_lock,))
            assert ran == []
    finally:
        gate.set()
    assert worker.drain(10)
    assert worker._thread is not None
    assert ran == [worker._thread.ident]
    assert worker.n_inline == 0


def test_before_the_worker_starts_it_waits_for_the_start() -> None:
    worker = _DeferredWorker(interval=0.01)
    ran: list[int] = []
    worker.submit_nowait((lambda: ran.append(threading.get_ident()),))
    assert (worker._thread, ran, worker.pending) == (None, [], True)
    assert worker.drain(10)  # a reader starts the worker, which runs it
    assert worker._thread is not None
    assert ran == [worker._thread.ident]


def test_after_the_exit_hook_it_runs_here_as_nothing_else_would() -> None:
    worker = _DeferredWorker(interval=0.01)
    worker.submit((int,))
    worker.finish_queued(5)
    ran: list[int] = []
    worker.submit_nowait((lambda: ran.append(threading.get_ident()),))
    assert ran == [threading.get_ident()]


def test_defer_nowait_hands_the_function_to_the_worker() -> None:
    lock = threading.Lock()
    ran: list[int] = []

    def needs_the_lock(tag: str) -> None:
        with lock:
            ran.append(threading.get_ident())

    with lock:
        defer_nowait(needs_the_lock, "x")
    assert drain_deferred(10)
    assert ran == [_deferred._thread.ident if _deferred._thread else None]
    assert ran != [threading.get_ident()]
