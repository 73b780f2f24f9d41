"""Shared pieces of the tests of calls ended by the cyclic garbage collector, which may
run on any thread, inside any lock that thread holds (a ledger's, a guard store's)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest


class LockingDurableLedger:
    """A ledger that stores each event before ``record`` returns (``durable``), under a
    non-reentrant lock; ``collect_in_record``: one collection runs in the next ``record``."""

    durable = True

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.collect_in_record = False
        self.events: list[Any] = []

    def record(self, event: Any) -> None:
        with self.lock:
            if self.collect_in_record:
                self.collect_in_record = False
                gc.collect()
            self.events.append(event)


class Cycle:
    """Cyclic garbage holding what it is given: only the cyclic GC collects it."""

    def __init__(self, held: Any) -> None:
        self.me = self
        self.held = held


def in_a_thread(fn: Any) -> None:
    """Run ``fn``; a deadlocked thread fails the test instead of hanging the run."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # pragma: no cover - reported below
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "the call waited on a lock its own thread holds"
    assert failed == []


@pytest.fixture
def gc_off() -> Iterator[None]:
    """The garbage made by a test stays until its own collection (in the lock)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
