"""A guarded call reserves at once; only a refusal waits, and only for the settles that
may lift it.

Entry points finish calls on the background worker, so right after a call returns its
worst-case reservation may still be held. Every guarded call used to wait, up to 5 s,
for the whole background queue to empty whenever some call's settle was queued: under
load other threads keep filling it, so a budget far from its limit cut a 16-thread
host's calls by 7x and held single calls for 5 s.

These tests stop the background worker (it runs a ``threading.Event.wait`` queued with
``defer``), so a call that waited for the queue, or for a settle queued behind the stop,
would wait for ``_SETTLE_WAIT`` (raised to 60 s here): the calls below finish within
30 s only because they do not wait.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

import costledger._tracker as tracker_module
from costledger import Budget, RateLimit, RateLimited, Tracker, track_cost
from costledger._errors import GuardRefusal
from costledger._guards._store import StoreRefusal
from costledger._tracker import Call, defer, drain_deferred
from costledger._usage import Usage
from costledger.testing import InMemoryLedger

# gpt-4o-mini: 1000 x $0.15 + 500 x $0.60 per million tokens
COST = Decimal("0.00045")
RESPONSE = {"usage": {"prompt_tokens": 1000, "completion_tokens": 500}}


@pytest.fixture(autouse=True)
def long_settle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "_SETTLE_WAIT", 60.0)


def _ask(tracker: Tracker) -> Callable[[], dict[str, Any]]:
    # no output limit given: the model's (16,384 tokens), a worst case of about 0.0101 USD
    @track_cost(model="gpt-4o-mini", provider="openai", tracker=tracker)
    def ask() -> dict[str, Any]:
        return RESPONSE

    return ask


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_many_threads_far_from_the_limit_never_wait_for_the_queue() -> None:
    budget = Budget("1000 USD", "day", name="far-from-limit")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store="memory://", log="off")
    ask = _ask(tracker)
    ask()  # seeds the counter (a ledger read, which waits for the queue)
    assert drain_deferred(10)
    stop = threading.Event()
    defer(stop.wait, 60)  # the worker runs no settle until the calls are done
    done: list[int] = []

    def loop() -> None:
        for _ in range(25):
            ask()
        done.append(1)

    threads = [threading.Thread(target=loop) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(done) == 8
        # every call reserved while all the others' settles were still queued
        assert len(tracker._unsettled) == 200
    finally:
        stop.set()
    assert drain_deferred(30)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (201 * COST, Decimal(0))
    assert not tracker._unsettled


def test_a_refused_call_waits_for_the_settle_of_the_call_holding_it_not_for_the_queue() -> None:
    budget = Budget("0.02 USD", "day", name="near-limit")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store="memory://", log="off")
    ask = _ask(tracker)
    ask()
    assert drain_deferred(10)
    first, later = threading.Event(), threading.Event()
    try:
        defer(first.wait, 60)
        ask()  # its settle is queued behind ``first``: its worst case stays held
        defer(later.wait, 60)  # and more work queued after it, which stays stuck
        answers: list[dict[str, Any]] = []
        caller = threading.Thread(target=lambda: answers.append(ask()))
        caller.start()
        # refused (spent 0.00045 + held 0.0101304 + its own 0.0101304 > 0.02), it waits
        _until(lambda: tracker._waiters == 1)
        assert not answers
        first.set()  # the holding call settles: the refused one is asked again, and fits
        caller.join(30)
        assert answers == [RESPONSE]
        assert not later.is_set()  # the worker is still stuck: the queue was not waited for
    finally:
        first.set()
        later.set()
    assert drain_deferred(30)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (3 * COST, Decimal(0))


def test_a_refusal_no_earlier_call_can_lift_is_raised_at_once() -> None:
    # A request rate limit holds nothing a settle gives back: its refusal is final even
    # while the budget's reservation of an earlier call is unsettled.
    budget = Budget("1000 USD", "day", name="with-rate-limit")
    limit = RateLimit("2/minute", name="two-a-minute")
    tracker = Tracker(InMemoryLedger(), guards=[budget, limit], guard_store="memory://", log="off")
    ask = _ask(tracker)
    stop = threading.Event()
    outcome: list[BaseException] = []

    def third() -> None:
        try:
            ask()
        except RateLimited as exc:
            outcome.append(exc)

    ask()
    assert drain_deferred(10)
    try:
        defer(stop.wait, 60)
        ask()  # its settle stays queued
        caller = threading.Thread(target=third)
        caller.start()
        caller.join(30)
        assert [type(e) for e in outcome] == [RateLimited]
        assert len(tracker._unsettled) == 1
    finally:
        stop.set()
    assert drain_deferred(30)
    [status] = budget.status(tracker)
    assert (status.spent, status.reserved) == (2 * COST, Decimal(0))


class _Recorder:
    """A guard that holds nothing and notes ``call.tentative`` at each reservation; it
    refuses a tentative one when told to (as a guard holding back a final refusal's
    effects would, to be asked again)."""

    def __init__(self, reads_tentative: bool) -> None:
        if reads_tentative:
            self.reads_tentative = True
        self.seen: list[bool] = []
        self.refuse_tentative = False

    def reserve(self, call: Call, tracker: Tracker) -> None:
        self.seen.append(call.tentative)
        if call.tentative and self.refuse_tentative:
            raise GuardRefusal("refused while tentative")
        return None

    def settle(self, token: None, event: object) -> None:
        pass

    def release(self, token: None) -> None:
        pass


@pytest.mark.parametrize("reads_tentative", [True, False])
def test_a_guard_reading_tentative_is_asked_again_at_once(reads_tentative: bool) -> None:
    budget = Budget("1000 USD", "day", name=f"tentative-{reads_tentative}")
    recorder = _Recorder(reads_tentative)
    tracker = Tracker(
        InMemoryLedger(), guards=[budget, recorder], guard_store="memory://", log="off"
    )
    ask = _ask(tracker)
    ask()  # nothing unsettled: not tentative
    assert drain_deferred(10)  # settled: the next is not tentative either
    stop = threading.Event()
    outcome: list[object] = []

    def second() -> None:
        try:
            outcome.append(ask())
        except GuardRefusal as exc:
            outcome.append(exc)

    try:
        defer(stop.wait, 60)
        ask()  # the budget's reservation stays held: the next call's asking is tentative
        recorder.refuse_tentative = True
        caller = threading.Thread(target=second)
        caller.start()
        caller.join(30)
        assert not stop.is_set()  # no settle ran in between
    finally:
        stop.set()
    assert drain_deferred(30)
    if reads_tentative:
        assert recorder.seen == [False, False, True, False]
        assert outcome == [RESPONSE]
    else:
        # nothing of it held, and it did not say it holds anything back: its refusal stands
        assert recorder.seen == [False, False, True]
        assert [str(e) for e in outcome] == ["refused while tentative"]
    [status] = budget.status(tracker)
    calls = 3 if reads_tentative else 2
    assert (status.spent, status.reserved) == (calls * COST, Decimal(0))


class _Holding:
    """A guard holding a token per call; refuses every call once told to (with ``refusal``)."""

    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.refusal: GuardRefusal | None = None
        self.released = 0

    def reserve(self, call: Call, tracker: Tracker) -> str:
        self.seen.append(call.tentative)
        if self.refusal is not None:
            raise self.refusal
        return "held"

    def settle(self, token: str, event: object) -> None:
        pass

    def release(self, token: str) -> None:
        self.released += 1


def test_a_handed_off_call_that_never_settles_holds_a_refused_call_only_for_the_queue() -> None:
    # An entry point that handed a call off and then lost it (a bug) must not make every
    # refused call wait the whole _SETTLE_WAIT: the wait also ends once the worker has
    # run everything queued before it.
    guard = _Holding()
    tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
    lost = tracker.start(source="api", model="gpt-4o-mini")
    tracker.handing_off(lost)
    guard.refusal = GuardRefusal("full")
    outcome: list[BaseException] = []

    def refused() -> None:
        try:
            tracker.start(source="api", model="gpt-4o-mini")
        except GuardRefusal as exc:
            outcome.append(exc)

    caller = threading.Thread(target=refused)
    caller.start()
    caller.join(30)
    assert [str(e) for e in outcome] == ["full"]
    assert guard.seen == [False, True, False]
    tracker.cancel(lost)
    assert guard.released == 1
    assert not tracker._unsettled


def test_a_guard_that_could_not_check_the_call_is_not_asked_again() -> None:
    # Its store is down: no settle changes that, and a wait would only add to the outage.
    guard = _Holding()
    tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
    stop = threading.Event()
    outcome: list[BaseException] = []

    def refused() -> None:
        try:
            tracker.start(source="api", model="gpt-4o-mini")
        except GuardRefusal as exc:
            outcome.append(exc)

    try:
        defer(stop.wait, 60)
        held = tracker.start(source="api", model="gpt-4o-mini")
        tracker.finish(held, usage=Usage(input_tokens=10), defer=True)  # settle queued
        guard.refusal = StoreRefusal("redis://127.0.0.1:1", ConnectionError("refused"), "g")
        caller = threading.Thread(target=refused)
        caller.start()
        caller.join(30)
        assert [type(e) for e in outcome] == [StoreRefusal]
        assert guard.seen == [False, True]
        assert len(tracker._unsettled) == 1
    finally:
        stop.set()
    assert drain_deferred(30)
    assert not tracker._unsettled


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_none_of_the_parents_calls_unsettled() -> None:
    # The parent's calls settle in the parent's queue, never in the child's: a child
    # refusal is final at once. The waiters' count and lock are the child's own too.
    script = textwrap.dedent(
        """
        import os, threading
        from costledger import Tracker
        from costledger._errors import GuardRefusal
        from costledger._tracker import defer
        from costledger._usage import Usage
        from costledger.testing import InMemoryLedger

        class Holding:
            def __init__(self):
                self.seen, self.refuse = [], False
            def reserve(self, call, tracker):
                self.seen.append(call.tentative)
                if self.refuse:
                    raise GuardRefusal("full")
                return "held"
            def settle(self, token, event):
                pass
            def release(self, token):
                pass

        guard = Holding()
        tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
        stop = threading.Event()
        defer(stop.wait, 60)
        call = tracker.start(source="api", model="gpt-4o-mini")
        tracker.finish(call, usage=Usage(input_tokens=1), defer=True)  # settle queued
        guard.refuse = True
        def refused():
            try:
                tracker.start(source="api", model="gpt-4o-mini")
            except GuardRefusal:
                pass

        waiter = threading.Thread(target=refused)
        waiter.start()
        while tracker._waiters != 1:
            pass
        pid = os.fork()
        if pid == 0:
            state = (len(tracker._unsettled), tracker._waiters)
            del guard.seen[:]
            refused()
            os._exit(0 if (state, guard.seen) == ((0, 0), [False]) else 1)
        _, status = os.waitpid(pid, 0)
        stop.set()
        waiter.join(30)
        print("child", os.waitstatus_to_exitcode(status), "parent", len(tracker._unsettled))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "child 0 parent 0", done.stderr
