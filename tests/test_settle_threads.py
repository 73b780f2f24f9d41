"""Guard store I/O never holds up recording, nor runs on the host's thread (real Redis).

The background worker prices, stores and logs each finished call itself and hands the
settle of a call whose guards' store does I/O (Redis, SQL) to costledger's settle threads:
a store 10 ms away used to cap the worker at ~40 calls a second, fill its queue (then the
calls were finished on the caller's thread, an event loop) and lose what the exit's 30 s
did not allow. Meanwhile every invariant holds: a refused call waits for a settle in
flight, a drain waits for the settles handed off before it (and only for what was queued
before it), the exit hook finishes them, and a counter's seed never counts a call twice.

Async entry points give reservations back off the event loop: a refusal, a cancellation
in the middle of the reservations, a request the HTTP transport never sent.

The store is a real ``RedisStore`` whose settle and release note their thread (and can be
held at a gate); no test asserts a duration.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

import costledger._tracker as tracker_module
from costledger import (
    Budget,
    BudgetExceeded,
    RateLimit,
    RateLimited,
    TokenRateLimit,
    Tracker,
    Usage,
    UsageEvent,
)
from costledger._guards._redis import RedisStore
from costledger._pricing import Pricer
from costledger._tracker import Call, add_sink, defer, drain_deferred, drain_events, remove_sink
from costledger.http import AsyncTrackingTransport
from costledger.testing import InMemoryLedger

PRICES = {"m": {"input": "10", "output": "20"}}  # 100 input tokens: 0.001 USD
COST = Decimal("0.001")
ESTIMATE = Decimal("0.01")
SETTLE = "costledger-settle"


class GatedRedis(RedisStore):
    """A real Redis store noting the thread of each settle and release; ``gate`` (set by
    default) holds settles, ``release_gate`` releases, until set."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = threading.Event()
        self.gate.set()
        self.release_gate = threading.Event()
        self.release_gate.set()
        self.settled_on: list[str] = []
        self.released_on: list[str] = []

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        self.settled_on.append(threading.current_thread().name)
        assert self.gate.wait(30)
        return super().settle(*args, **kwargs)

    def release(self, *args: Any, **kwargs: Any) -> None:
        self.released_on.append(threading.current_thread().name)
        assert self.release_gate.wait(30)
        super().release(*args, **kwargs)


@pytest.fixture
def store(redis_url: str) -> Iterator[GatedRedis]:
    prefix = f"settle-{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in redis_url else "?"
    gated = GatedRedis(f"{redis_url}{sep}prefix={prefix}&timeout=5")
    try:
        yield gated
    finally:
        gated.gate.set()
        gated.release_gate.set()
        assert drain_deferred(30)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def tracker_for(store: GatedRedis, *guards: Any) -> Tracker:
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    return Tracker(InMemoryLedger(), pricer, guards, guard_store=store, log="off")


def finish_one(tracker: Tracker) -> Call:
    call = tracker.start(source="api", model="m", estimate=ESTIMATE)
    tracker.finish(call, usage=Usage(input_tokens=100), defer=True)
    return call


def until(condition: Any, seconds: float = 10.0) -> bool:
    """Poll ``condition`` (no assertion on how long it takes)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def figures(tracker: Tracker, budget: Budget) -> tuple[Decimal, Decimal]:
    [status] = budget.status(tracker)
    return status.spent, status.reserved


@pytest.fixture
def sink() -> Iterator[list[UsageEvent]]:
    seen: list[UsageEvent] = []
    add_sink(seen.append)
    try:
        yield seen
    finally:
        remove_sink(seen.append)


# -- the worker hands settles off --------------------------------------------------------------


def test_calls_are_stored_while_their_settles_wait_on_the_store(
    store: GatedRedis, sink: list[UsageEvent]
) -> None:
    assert drain_deferred(30)
    budget = Budget("100 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")
    tokens = TokenRateLimit("1000000/minute", name=f"t-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, budget, tokens)
    store.gate.clear()  # the store does not answer settles
    calls = [finish_one(tracker) for _ in range(5)]
    # the worker stored and published all five while their settles wait
    assert until(lambda: len(sink) == 5)
    assert [e.id for e in sink] == [c.id for c in calls]
    assert all(id(c) in tracker._unsettled for c in calls)  # held until settled
    assert not drain_deferred(0.2)  # a drain waits for the settles in flight
    store.gate.set()
    assert drain_deferred(10)
    assert not tracker._unsettled
    assert store.settled_on == [SETTLE] * 5  # the budget's; the token limit adjusts
    assert figures(tracker, budget) == (5 * COST, Decimal(0))
    assert len(list(tracker.ledger.events())) == 5  # type: ignore[attr-defined]


def test_a_reader_of_events_does_not_wait_for_settles_in_flight(
    store: GatedRedis, sink: list[UsageEvent]
) -> None:
    """``drain_events`` (what the LangChain handler's running totals read through) waits
    for the calls finished before it, not for their guards' round trips."""
    assert drain_deferred(30)
    budget = Budget("100 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, budget)
    store.gate.clear()  # the store does not answer settles
    calls = [finish_one(tracker) for _ in range(3)]
    assert drain_events(10)  # returns with the settles still held
    assert [e.id for e in sink] == [c.id for c in calls]
    assert not drain_deferred(0.2)
    store.gate.set()
    assert drain_deferred(10)
    assert figures(tracker, budget) == (3 * COST, Decimal(0))


def test_a_guard_of_the_hosts_is_still_settled_on_the_worker(store: GatedRedis) -> None:
    noted: list[str] = []

    class Own:
        name = "own"

        def reserve(self, call: Call, tracker: Tracker) -> Any:
            return 1

        def settle(self, token: Any, event: UsageEvent) -> None:
            noted.append(threading.current_thread().name)

        def release(self, token: Any) -> None:
            raise AssertionError("the call succeeded")

    budget = Budget("100 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, budget, Own())
    finish_one(tracker)
    assert drain_deferred(10)
    # a call with a guard that does not say does_io is settled whole on the worker
    assert noted == ["costledger-deferred"]
    assert store.settled_on == ["costledger-deferred"]
    assert figures(tracker, budget) == (COST, Decimal(0))


def test_a_refused_call_waits_for_a_settle_in_flight(
    store: GatedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracker_module, "_SETTLE_WAIT", 60.0)
    assert drain_deferred(30)
    budget = Budget("0.015 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")  # one worst case
    tracker = tracker_for(store, budget)
    store.gate.clear()
    finish_one(tracker)  # its settle waits at the gate: its worst case stays held
    assert until(lambda: store.settled_on)
    got: list[Any] = []
    later = threading.Thread(target=lambda: got.append(finish_one(tracker)))
    later.start()
    # refused while the first call's settle is in flight, it waits for it (the worker has
    # run everything queued before its mark: that alone must not end its wait)
    assert until(lambda: tracker._waiters == 1)
    assert not got
    store.gate.set()
    later.join(30)
    assert len(got) == 1
    assert drain_deferred(10)
    assert figures(tracker, budget) == (2 * COST, Decimal(0))


def test_a_seed_while_a_settle_is_in_flight_counts_the_call_once(
    store: GatedRedis, sink: list[UsageEvent], redis_url: str
) -> None:
    """The event is stored before its settle ends. A counter the store lost meanwhile is
    seeded from the ledger, which has the call: the seed's ledger read drains first, which
    waits for the settle, which then finds the counter not seeded and adds nothing."""
    assert drain_deferred(30)
    budget = Budget("100 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, budget)
    store.gate.clear()
    finish_one(tracker)
    assert until(lambda: len(sink) == 1 and store.settled_on)  # stored; settle in flight
    client = redis.Redis.from_url(redis_url)
    lost = list(client.scan_iter(f"{store.prefix}*"))
    assert lost
    client.delete(*lost)  # the store loses the counter (a restart without persistence)
    client.close()
    started: list[Call] = []
    seeding = threading.Thread(
        target=lambda: started.append(tracker.start(source="api", model="m", estimate=ESTIMATE))
    )
    seeding.start()
    # its seed's drain waits for the settle in flight (then the store answers)
    until(lambda: bool(getattr(tracker_module, "_settles", None) and _draining()), 5.0)
    store.gate.set()
    seeding.join(30)
    [second] = started
    assert drain_deferred(10)
    assert figures(tracker, budget) == (COST, ESTIMATE)
    tracker.finish(second, usage=Usage(input_tokens=100))
    assert figures(tracker, budget) == (2 * COST, Decimal(0))


def _draining() -> bool:
    return bool(tracker_module._settles._waiting)


# -- drains --------------------------------------------------------------------------------------


def test_a_drain_waits_for_what_was_queued_before_it_not_for_the_queue(
    sink: list[UsageEvent],
) -> None:
    assert drain_deferred(30)
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    tracker = Tracker(InMemoryLedger(), pricer, log="off")
    gate, stuck = threading.Event(), threading.Event()
    try:
        defer(gate.wait, 30)  # holds the worker
        call = tracker.start(source="api", model="m")
        tracker.finish(call, usage=Usage(input_tokens=100), defer=True)
        queued = len(tracker_module._deferred._items)
        seen: list[tuple[bool, int]] = []

        def reader() -> None:
            drained = drain_deferred(10)
            seen.append((drained, len(sink)))

        thread = threading.Thread(target=reader)
        thread.start()
        until(lambda: len(tracker_module._deferred._items) > queued, 2.0)  # its mark
        defer(stuck.wait, 30)  # queued after the reader: other requests' work
        gate.set()
        thread.join(30)
        # the reader saw its call stored, without waiting for the work queued after it
        assert seen == [(True, 1)]
        assert not stuck.is_set()
    finally:
        gate.set()
        stuck.set()
    assert drain_deferred(10)


def test_the_exit_hook_finishes_the_settles_in_flight(redis_url: str, tmp_path: Path) -> None:
    """At exit, the queue's remainder is handed to the settle threads too: 120 calls whose
    settles take 0.1 s each are stored and settled within a 3 s exit (one thread at a time
    would need 12 s and drop most of them)."""
    prefix = f"exit-{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in redis_url else "?"
    store_url = f"{redis_url}{sep}prefix={prefix}&timeout=5"
    ledger = tmp_path / "ledger.db"
    script = textwrap.dedent(
        f"""
        import time
        from costledger import Budget, Ledger, Tracker, Usage
        from costledger import _tracker
        from costledger._guards._redis import RedisStore
        from costledger._pricing import Pricer

        class Slow(RedisStore):
            def settle(self, *args, **kwargs):
                time.sleep(0.1)
                return super().settle(*args, **kwargs)

        _tracker._DeferredWorker.finish_queued.__defaults__ = (3.0,)
        pricer = Pricer({PRICES!r}, genai_prices=False, litellm=False)
        budget = Budget("100 USD", "day", name="exit")
        tracker = Tracker(Ledger("sqlite:///{ledger}"), pricer, [budget],
                          guard_store=Slow({store_url!r}), log="off")
        for _ in range(120):
            call = tracker.start(source="api", model="m", estimate="0.01")
            tracker.finish(call, usage=Usage(input_tokens=100), defer=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "lost" not in done.stderr, done.stderr
    import sqlite3

    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT count(*) FROM costledger_events").fetchone() == (120,)
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    budget = Budget("100 USD", "day", name="exit")
    reader = Tracker(
        InMemoryLedger(), pricer, [budget], guard_store=RedisStore(store_url), log="off"
    )
    assert figures(reader, budget) == (120 * COST, Decimal(0))
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


# -- async releases off the event loop ---------------------------------------------------------


def test_an_async_refusal_gives_back_the_earlier_reservations_off_the_loop(
    store: GatedRedis,
) -> None:
    budget = Budget("100 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, budget, RateLimit("1/minute", name=f"r-{uuid.uuid4().hex[:6]}"))

    async def main() -> str:
        call = await tracker.astart(source="api", model="m", estimate=ESTIMATE)
        tracker.finish(call, usage=Usage(input_tokens=100), defer=True)
        with pytest.raises(RateLimited):  # the budget reserved, the rate limit refuses
            await tracker.astart(source="api", model="m", estimate=ESTIMATE)
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert drain_deferred(10)
    assert store.released_on == [SETTLE]
    assert loop_thread not in store.released_on
    assert figures(tracker, budget) == (COST, Decimal(0))


def test_a_call_cancelled_while_reserving_gives_back_off_the_loop(store: GatedRedis) -> None:
    class Hangs:
        """A guard whose reservation never ends (a rate limit waiting for room)."""

        name = "hangs"

        async def areserve(self, call: Call, tracker: Tracker) -> Any:
            await asyncio.Event().wait()

        def reserve(self, call: Call, tracker: Tracker) -> Any:
            raise AssertionError("async only")

        def settle(self, token: Any, event: UsageEvent) -> None: ...

        def release(self, token: Any) -> None: ...

    budget = Budget("100 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, budget, Hangs())

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(tracker.astart(source="api", model="m", estimate=ESTIMATE), 0.5)

    asyncio.run(main())
    assert drain_deferred(10)
    assert store.released_on == [SETTLE]
    assert figures(tracker, budget) == (Decimal(0), Decimal(0))


def test_asked_again_a_call_waits_for_its_own_give_back_and_keeps_its_new_hold(
    store: GatedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal by the second budget gives the first one's reservation back off the loop.
    The call is asked again only once that is done (else the first budget would count the
    old hold with the new one, and refuse), and the give-back takes only the old hold."""
    monkeypatch.setattr(tracker_module, "_SETTLE_WAIT", 60.0)
    assert drain_deferred(30)
    # the first budget fits the earlier call's hold and this call's, not the earlier call's
    # spend and two holds of this call; the second fits one hold only
    first = Budget("0.0205 USD", "day", name=f"b1-{uuid.uuid4().hex[:6]}")
    second = Budget("0.015 USD", "day", name=f"b2-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, first, second)
    store.gate.clear()
    store.release_gate.clear()
    finish_one(tracker)  # its settle waits: it holds both budgets
    assert until(lambda: store.settled_on)

    def open_gates() -> None:
        until(lambda: len(tracker._unsettled) == 2)  # the earlier call and the give-back
        store.gate.set()
        store.release_gate.set()

    opener = threading.Thread(target=open_gates)
    opener.start()

    async def main() -> tuple[Call, str]:
        call = await tracker.astart(source="api", model="m", estimate=ESTIMATE)
        return call, threading.current_thread().name

    try:
        call, loop_thread = asyncio.run(main())
    finally:
        store.gate.set()
        store.release_gate.set()
        opener.join(30)
    assert store.released_on == [SETTLE]
    assert drain_deferred(10)
    assert figures(tracker, first) == (COST, ESTIMATE)  # the new hold is still held
    assert figures(tracker, second) == (COST, ESTIMATE)
    tracker.finish(call, usage=Usage(input_tokens=100))
    assert figures(tracker, first) == (2 * COST, Decimal(0))
    assert loop_thread not in store.released_on
    with pytest.raises(BudgetExceeded):  # still guarded
        tracker.start(source="api", model="m", estimate=Decimal("0.02"))


def test_an_async_request_never_sent_gives_back_off_the_loop(store: GatedRedis) -> None:
    budget = Budget("100 USD", "day", name=f"b-{uuid.uuid4().hex[:6]}")
    tracker = tracker_for(store, budget)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> str:
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="sk-test-unsent-0000",
            http_client=httpx.AsyncClient(transport=AsyncTrackingTransport(tracker=tracker)),
            max_retries=1,
        )
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=10
            )
        await client.close()
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert drain_deferred(10)
    assert store.released_on == [SETTLE, SETTLE]  # each attempt's reservation
    assert loop_thread not in store.released_on
    assert figures(tracker, budget) == (Decimal(0), Decimal(0))
    assert list(tracker.ledger.events()) == []  # type: ignore[attr-defined]
