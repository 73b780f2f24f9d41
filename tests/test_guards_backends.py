"""Every guard store (memory, Redis, PostgreSQL, SQLite) keeps the same promises, under races
between threads and processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import BudgetExceeded, GuardStoreUnavailable, RateLimited, Tracker, Usage
from costledger._guards import (
    Budget,
    RateLimit,
    TokenRateLimit,
    budget_status,
    flush_alerts,
    open_store,
)
from costledger._ledger import InMemoryLedger
from costledger._pricing import Pricer

BACKENDS = ["memory", "redis", "postgres", "sqlite"]
SHARED = ["redis", "postgres", "sqlite"]
PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
CENT = Decimal("0.01")


def _with_query(url: str, **params: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = request.param
    tag = uuid.uuid4().hex[:12]
    if kind == "memory":
        yield "memory://"
    elif kind == "redis":
        base = request.getfixturevalue("redis_url")
        prefix = f"cltest:{tag}"
        yield _with_query(base, prefix=prefix)
        import redis

        client = redis.Redis.from_url(base)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    elif kind == "postgres":
        base = request.getfixturevalue("postgres_url")
        prefix = f"g{tag}"
        url = _with_query(base, prefix=prefix)
        yield url
        open_store(url).drop()  # type: ignore[attr-defined]
    else:
        yield f"sqlite:///{tmp_path / 'guards.db'}"


def backends(*kinds: str) -> Any:
    return pytest.mark.parametrize("store_url", kinds, indirect=True)


# -- the store contract, on each backend ------------------------------------------------------


@backends(*BACKENDS)
def test_store_contract(store_url: str) -> None:
    store = open_store(store_url)
    c = "budget:contract:~:2026-03"
    args: dict[str, Any] = {"floor": 0, "now_ms": 1000, "keep_until": 10**13}
    first = store.reserve(
        c, res_id="r1", amount=5, limit=10, expires_ms=5000, refuse_mark="x", **args
    )
    assert first.status == "unseeded"
    assert store.seed(
        c, buckets={0: 3}, marks=[("warn:0.2", 2), ("warn:0.9", 9)], floor=0, keep_until=10**13
    )
    assert not store.seed(c, buckets={0: 100}, marks=[], floor=0, keep_until=10**13)
    ok = store.reserve(c, res_id="r1", amount=5, limit=10, expires_ms=5000, refuse_mark="x", **args)
    assert (ok.status, ok.spent, ok.reserved) == ("ok", 3, 0)
    no = store.reserve(c, res_id="r2", amount=5, limit=10, expires_ms=5000, refuse_mark="x", **args)
    assert (no.status, no.spent, no.reserved, no.first_refusal) == ("refused", 3, 5, True)
    again = store.reserve(
        c, res_id="r2", amount=5, limit=10, expires_ms=5000, refuse_mark="x", **args
    )
    assert not again.first_refusal
    # settle: drop r1's 5 reserved, add 4 spent; warn:0.2 was marked silently by the seed.
    settled = store.settle(
        c,
        res_id="r1",
        reserved=5,
        bucket=0,
        amount=4,
        floor=0,
        keep_until=10**13,
        marks=[("warn:0.2", 2), ("warn:0.5", 5)],
    )
    assert (settled.spent, settled.reserved, settled.fired) == (7, 0, ("warn:0.5",))
    state = store.read(c, floor=0, now_ms=1000)
    assert (state.spent, state.reserved, state.seeded) == (7, 0, True)
    # expiry: a reservation that is never settled lapses at its expiry
    assert (
        store.reserve(
            c, res_id="r3", amount=3, limit=10, expires_ms=2000, refuse_mark=None, **args
        ).status
        == "ok"
    )
    assert store.read(c, floor=0, now_ms=1999).reserved == 3
    assert store.read(c, floor=0, now_ms=2000).reserved == 0
    # a late settle of the lapsed reservation still counts, and is not subtracted twice
    late = store.settle(
        c, res_id="r3", reserved=3, bucket=0, amount=1, floor=0, keep_until=10**13, marks=[]
    )
    assert (late.spent, late.reserved) == (8, 0)
    # release
    assert (
        store.reserve(
            c, res_id="r4", amount=2, limit=None, expires_ms=9000, refuse_mark=None, **args
        ).status
        == "ok"
    )
    store.release(c, res_id="r4", reserved=2)
    store.release(c, res_id="r4", reserved=2)  # twice is harmless
    assert store.read(c, floor=0, now_ms=1000).reserved == 0
    assert store.counters("budget:contract:") == [c]
    assert store.counters("budget:other:") == []
    # A settle into a counter that is gone (never seeded) takes nothing: the seed that
    # recreates the counter reads the call from the ledger, so it is not counted twice.
    gone = "budget:contract:=gone:2026-03"
    nothing = store.settle(
        gone,
        res_id=None,
        reserved=0,
        bucket=0,
        amount=5,
        floor=0,
        keep_until=10**13,
        marks=[("warn:0.1", 1)],
    )
    assert (nothing.spent, nothing.fired) == (0, ())
    assert store.seed(gone, buckets={0: 5}, marks=[], floor=0, keep_until=10**13)
    assert store.read(gone, floor=0, now_ms=1000).spent == 5


@backends(*BACKENDS)
def test_rate_window_contract(store_url: str) -> None:
    store = open_store(store_url)
    c = "tokens:contract:~"
    keep = 10**13
    assert store.acquire(c, bucket=100, amount=6, limit=10, floor=0, keep_until=keep).ok
    assert store.acquire(c, bucket=200, amount=3, limit=10, floor=0, keep_until=keep).ok
    no = store.acquire(c, bucket=300, amount=5, limit=10, floor=0, keep_until=keep)
    assert (no.ok, no.used, no.retry_bucket) == (False, 9, 100)  # 6 must leave first
    store.adjust(c, bucket=100, delta=-4, floor=0, keep_until=keep)  # refund
    assert store.acquire(c, bucket=300, amount=5, limit=10, floor=0, keep_until=keep).ok
    store.adjust(c, bucket=200, delta=-50, floor=0, keep_until=keep)  # never below zero
    got = store.acquire(c, bucket=300, amount=1, limit=10, floor=150, keep_until=keep)
    assert (got.ok, got.used) == (True, 5)  # bucket 100 left the window


# -- races between threads and processes ------------------------------------------------------


def race_worker(
    store_url: str, threads: int, calls: int, limit: str, start_at: float
) -> dict[str, Any]:
    """One process: ``threads`` threads each try ``calls`` calls costing one cent."""
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    budget = Budget(limit, "month", name="race", warn_at=(0.5, 0.8, 1.0))
    seen: list[str] = []
    budget.on_alert(lambda a: seen.append(f"{a.kind}:{a.threshold}"))
    tracker = Tracker(InMemoryLedger(), pricer, [budget], guard_store=store_url, log="off")
    results: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(calls):
            try:
                call = tracker.start(source="api", model="m", estimate=CENT)
            except BudgetExceeded:
                with lock:
                    results["refused"] += 1
                continue
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
                continue
            event = tracker.finish(call, usage=Usage(input_tokens=1000))
            with lock:
                results["admitted"] += 1
                results["cost_nanos"] += int((event.cost.total or 0) * 10**9) if event else 0

    time.sleep(max(0.0, start_at - time.time()))
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    flush_alerts(30)
    return {"counts": dict(results), "errors": errors, "alerts": seen, "pid": os.getpid()}


def _race_star(args: tuple[Any, ...]) -> dict[str, Any]:
    return race_worker(*args)


def _run_processes(fn: Any, args: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(args)) as pool:
        return list(pool.map(fn, args, chunksize=1))


@pytest.mark.slow
@backends(*BACKENDS)
def test_racing_callers_never_push_spend_past_a_hard_limit(store_url: str) -> None:
    limit = "1.00 USD"  # 100 calls of one cent
    if store_url == "memory://":
        results = [race_worker(store_url, 8, 16, limit, 0.0)]  # one process, 8 threads
        attempts = 8 * 16
    else:
        start_at = time.time() + 4.0  # let the spawned processes import first
        results = _run_processes(_race_star, [(store_url, 8, 5, limit, start_at) for _ in range(4)])
        assert len({r["pid"] for r in results}) == 4
        attempts = 4 * 8 * 5
    assert [r["errors"] for r in results] == [[]] * len(results)
    admitted = sum(r["counts"].get("admitted", 0) for r in results)
    refused = sum(r["counts"].get("refused", 0) for r in results)
    settled = sum(r["counts"].get("cost_nanos", 0) for r in results)
    assert admitted + refused == attempts  # every refusal was a BudgetExceeded
    assert admitted == 100  # estimate == cost: exactly the limit is admitted
    assert settled == 100 * 10**7
    alerts = Counter(a for r in results for a in r["alerts"])
    assert alerts == {
        "threshold:0.5": 1,
        "threshold:0.8": 1,
        "threshold:1": 1,
        "exceeded:None": 1,
    }
    # No settle was lost: the shared counter holds exactly what the callers spent.
    if store_url == "memory://":
        return  # the memory store lived in the worker's tracker; covered by the counts
    tracker = Tracker(
        InMemoryLedger(),
        guards=[Budget(limit, "month", name="race")],
        guard_store=store_url,
        log="off",
    )
    (row,) = budget_status(tracker)
    assert (row.spent, row.reserved, row.remaining) == (Decimal("1"), 0, 0)


def burst_worker(store_url: str, threads: int, calls: int, start_at: float) -> dict[str, Any]:
    tracker = Tracker(
        InMemoryLedger(),
        # Closed: a store that is briefly unavailable (SQLite locked under a loaded CI
        # machine) must show up as such, never as an extra admitted call.
        guards=[RateLimit("20/minute", name="burst", on_store_error="closed")],
        guard_store=store_url,
        log="off",
    )
    counts: Counter[str] = Counter()
    retry_after: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(calls):
            try:
                call = tracker.start(source="api", model="m")
            except RateLimited as exc:
                with lock:
                    counts["limited"] += 1
                    retry_after.append(exc.retry_after)
                continue
            except GuardStoreUnavailable:
                with lock:
                    counts["unavailable"] += 1
                continue
            tracker.cancel(call)
            with lock:
                counts["admitted"] += 1

    time.sleep(max(0.0, start_at - time.time()))
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"counts": dict(counts), "retry_after": retry_after}


def _burst_star(args: tuple[Any, ...]) -> dict[str, Any]:
    return burst_worker(*args)


@pytest.mark.slow
@backends(*BACKENDS)
def test_a_burst_against_n_per_minute_admits_exactly_n(store_url: str) -> None:
    if store_url == "memory://":
        results = [burst_worker(store_url, 8, 8, 0.0)]
    else:
        start_at = time.time() + 4.0
        results = _run_processes(_burst_star, [(store_url, 8, 2, start_at) for _ in range(4)])
    admitted = sum(r["counts"].get("admitted", 0) for r in results)
    limited = sum(r["counts"].get("limited", 0) for r in results)
    unavailable = sum(r["counts"].get("unavailable", 0) for r in results)
    assert admitted + limited + unavailable == 64
    # Never more than N; exactly N unless the store refused some attempts outright.
    assert admitted == 20 if unavailable == 0 else admitted <= 20
    waits = [w for r in results for w in r["retry_after"]]
    assert len(waits) == limited
    assert all(0 < w <= 61.5 for w in waits)  # the window, plus up to one bucket late


@backends(*BACKENDS)
def test_token_rate_limit_reserves_the_estimate_and_settles_to_actual(store_url: str) -> None:
    limit = TokenRateLimit("10000/minute", per="model")
    tracker = Tracker(InMemoryLedger(), guards=[limit], guard_store=store_url, log="off")
    # no prompt visible: 2,000 default input tokens + 6,000 max output = 8,000 reserved
    first = tracker.start(source="api", model="m", max_output_tokens=6000)
    with pytest.raises(RateLimited) as info:
        tracker.start(source="api", model="m", max_output_tokens=6000)
    assert 0 < info.value.retry_after <= 61
    assert info.value.key == "m"
    tracker.start(source="api", model="other", max_output_tokens=6000)  # its own window
    tracker.finish(first, usage=Usage(input_tokens=600, output_tokens=400))  # 1,000 used
    second = tracker.start(source="api", model="m", max_output_tokens=6000)  # 1,000 + 8,000
    with pytest.raises(RateLimited):
        tracker.start(source="api", model="m", max_output_tokens=1000)  # 9,000 + 3,000
    tracker.cancel(second)  # gives its 8,000 back
    tracker.start(source="api", model="m", max_output_tokens=6000)


@backends(*SHARED)
def test_rate_limit_waits_for_room_then_goes_on(store_url: str) -> None:
    tracker = Tracker(
        InMemoryLedger(),
        guards=[RateLimit("2/second", wait=3.0, name="wait")],
        guard_store=store_url,
        log="off",
    )
    began = time.monotonic()
    for _ in range(5):
        tracker.cancel(tracker.start(source="api", model="m"))
    took = time.monotonic() - began
    assert 1.0 <= took < 6.0  # five calls at two per second need two more windows


async def test_async_wait_does_not_block_the_loop() -> None:
    import asyncio

    tracker = Tracker(InMemoryLedger(), guards=[RateLimit("1/second", wait=2.0)], log="off")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    tracker.cancel(await tracker.astart(source="api", model="m"))
    tracker.cancel(await tracker.astart(source="api", model="m"))  # waits about a second
    task.cancel()
    assert ticks >= 5
    limited = Tracker(InMemoryLedger(), guards=[RateLimit("1/minute", wait=0.5)], log="off")
    limited.cancel(await limited.astart(source="api", model="m"))
    began = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await limited.astart(source="api", model="m")
    assert time.monotonic() - began < 0.4  # no point waiting 0.5 s for a minute's room
    assert 59 < info.value.retry_after <= 60


@backends("redis", "postgres")
def test_a_store_that_lost_its_data_is_reseeded_from_the_ledger(store_url: str) -> None:
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    ledger = InMemoryLedger()
    budget = Budget("0.05 USD", "month", name=f"reseed-{uuid.uuid4().hex[:6]}")
    tracker = Tracker(ledger, pricer, [budget], guard_store=store_url, log="off")
    for _ in range(3):
        tracker.finish(
            tracker.start(source="api", model="m", estimate=CENT), usage=Usage(input_tokens=1000)
        )
    store = open_store(store_url)
    (counter,) = store.counters(f"budget:{budget.name}:")
    if store.kind == "redis":
        store.client.delete(*store._keys(counter))  # type: ignore[attr-defined]
    else:
        with store.engine.begin() as conn:  # type: ignore[attr-defined]
            for table in ("counters", "buckets"):
                conn.exec_driver_sql(
                    f"DELETE FROM {store.prefix}_{table}"  # type: ignore[attr-defined]
                )
    tracker.finish(
        tracker.start(source="api", model="m", estimate=CENT), usage=Usage(input_tokens=1000)
    )
    (row,) = budget_status(tracker)
    assert row.spent == Decimal("0.04")


class _Proxy:
    """A TCP proxy on 127.0.0.1 in front of the real Redis, to take the store away and back."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: Any = None
        self._conns: list[Any] = []
        self.start()

    def start(self) -> None:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        import socket

        for sock in (self._listener, *self._conns):
            with contextlib.suppress(OSError):  # shutdown also wakes the blocked accept()
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._conns = []


def test_outage_fails_closed_then_missed_settles_are_replayed(redis_url: str) -> None:
    from urllib.parse import urlsplit

    from costledger import GuardStoreUnavailable

    real = urlsplit(redis_url)
    proxy = _Proxy((real.hostname or "127.0.0.1", real.port or 6379))
    url = f"redis://127.0.0.1:{proxy.port}/0?timeout=0.5&prefix=cltest:{uuid.uuid4().hex[:10]}"
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    budget = Budget("0.05 USD", "month", name="outage")
    tracker = Tracker(InMemoryLedger(), pricer, [budget], guard_store=url, log="off")
    try:
        tracker.finish(
            tracker.start(source="api", model="m", estimate=CENT), usage=Usage(input_tokens=1000)
        )
        in_flight = tracker.start(source="api", model="m", estimate=CENT)
        proxy.stop()
        with pytest.raises(GuardStoreUnavailable, match=f"127.0.0.1:{proxy.port}"):
            tracker.start(source="api", model="m", estimate=CENT)
        # The call in flight ends during the outage: its settle waits, it is not lost.
        tracker.finish(in_flight, usage=Usage(input_tokens=2000))
        proxy.start()
        time.sleep(1.1)  # missed settles are retried at most once a second
        tracker.finish(
            tracker.start(source="api", model="m", estimate=CENT), usage=Usage(input_tokens=1000)
        )
        # the next call replays the oldest missed settles; the guards' worker threads the
        # rest (a backlog never stalls a caller), so the count catches up shortly after
        deadline = time.monotonic() + 30
        (row,) = budget_status(tracker)
        while (row.spent, row.reserved) != (Decimal("0.04"), 0) and time.monotonic() < deadline:
            time.sleep(0.05)  # a replay takes its items off the list before its round trip
            (row,) = budget_status(tracker)
        assert (row.spent, row.reserved) == (Decimal("0.04"), 0)
    finally:
        proxy.stop()
