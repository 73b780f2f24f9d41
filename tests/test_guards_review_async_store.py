"""Guard stores that are slow or stuck, from async and sync entry points (real Redis behind a
small TCP proxy started here, real PostgreSQL and SQLite):

- ``Tracker.astart`` runs each guard's store round trips in a worker thread (Redis, SQL),
  inline on ``memory://``: ten concurrent calls on a store answering in 0.5 s never stall the
  event loop, and a call cancelled while the store answers gives back what it reserved;
- a store whose operation timed out or could not connect is not asked again for
  ``STORE_COOLDOWN`` seconds (the calls fail open or closed at once, without I/O), then one
  operation at a time tries it; settles made meanwhile are replayed, also at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from costledger import GuardStoreUnavailable, Tracker, Usage
from costledger._guards import (
    Budget,
    Estimator,
    RateLimit,
    TokenRateLimit,
    budget_status,
    open_store,
)
from costledger._guards._budget import _flush_at_exit
from costledger._guards._store import STORE_COOLDOWN, StoreRefusal, StoreUnavailable
from costledger._ledger import InMemoryLedger
from costledger._pricing import Pricer

PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
CENT = Decimal("0.01")
KW: dict[str, Any] = {"source": "api", "model": "m", "estimate": CENT}


def tracker_for(*guards: Any, store: str) -> Tracker:
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    return Tracker(InMemoryLedger(), pricer, guards, guard_store=store, log="off")


def spend(tracker: Tracker) -> None:
    call = tracker.start(**KW)
    tracker.finish(call, usage=Usage(input_tokens=1000))


def figures(tracker: Tracker) -> list[tuple[Decimal, Decimal]]:
    return [(s.spent, s.reserved) for s in budget_status(tracker)]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Proxy:
    """A TCP proxy in front of the test Redis, in this process. ``delay``: seconds each
    forwarded chunk waits (each way, so a round trip takes twice as long); ``hung``: what
    clients send is read and dropped, nothing is ever answered. ``chunks`` counts what
    clients sent: the store's round trips."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.delay = 0.0
        self.hung = False
        self.chunks = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        with self._lock:
                            self.chunks += 1
                    if self.hung:
                        continue
                    if self.delay:
                        time.sleep(self.delay)
                    (server if sock is client else client).sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def proxied_redis(redis_url: str) -> Iterator[tuple[Proxy, str]]:
    """(the proxy, a Redis guard store URL through it with a key prefix of its own)."""
    import redis

    parts = urlsplit(redis_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    prefix = f"cltest:{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}?prefix={prefix}&timeout=2"
    yield proxy, url
    proxy.hung = False
    proxy.delay = 0.0
    open_store(url).close()
    proxy.close()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class Heartbeat:
    """A task that wakes every 10 ms; ``longest``: the longest the event loop left it
    waiting past that, from entering the block to leaving it."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    def _beat(self) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self._last - 0.01)
        self._last = now

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self._beat()

    def __enter__(self) -> Heartbeat:
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self._beat()  # the time since the last beat counts too


# -- off the event loop ------------------------------------------------------------------------


@pytest.mark.redis
async def test_async_reservations_on_a_slow_redis_never_stall_the_event_loop(
    proxied_redis: tuple[Proxy, str],
) -> None:
    proxy, url = proxied_redis
    budget = Budget("10 USD", "day", name=unique("slow"))
    requests = RateLimit("1000/minute", name=unique("slow-requests"))
    tokens = TokenRateLimit("10M/minute", name=unique("slow-tokens"))
    tracker = tracker_for(budget, requests, tokens, store=url)
    first = await tracker.astart(**KW)  # connects, loads the scripts, seeds the counter
    tracker.finish(first, usage=Usage(input_tokens=1000))
    proxy.delay = 0.25  # every round trip takes at least 0.5 s
    sent = proxy.chunks
    with Heartbeat() as heartbeat:
        started = time.monotonic()
        calls = await asyncio.gather(*(tracker.astart(**KW) for _ in range(10)))
        took = time.monotonic() - started
    proxy.delay = 0.0
    # each call waited on its three guards' round trips, the loop never did
    assert proxy.chunks - sent >= 30
    assert took >= 1.5
    # a round trip on the loop would stall it >= 0.5 s; less is the machine's scheduling
    assert heartbeat.longest < 0.45, heartbeat.longest
    for call in calls:
        tracker.finish(call, usage=Usage(input_tokens=1000))
    assert figures(tracker) == [(Decimal("0.11"), Decimal("0"))]


@dataclass(frozen=True)
class RecordingEstimator(Estimator):
    """Notes the thread each estimate ran on (a guard's reservation runs it)."""

    threads: list[int] | None = None

    def estimate(self, call: Any, tracker: Any) -> Any:
        assert self.threads is not None
        self.threads.append(threading.get_ident())
        return super().estimate(call, tracker)


@pytest.mark.parametrize(
    "kind",
    ["memory", pytest.param("redis", marks=pytest.mark.redis), "sqlite"],
)
async def test_a_budget_reserves_inline_on_memory_and_in_a_worker_thread_elsewhere(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = "memory://"
    if kind == "redis":
        url = request.getfixturevalue("proxied_redis")[1]
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'guards.db'}"
    threads: list[int] = []
    budget = Budget(
        "10 USD", "day", name=unique("where"), estimator=RecordingEstimator(threads=threads)
    )
    tracker = tracker_for(budget, store=url)
    call = await tracker.astart(source="api", model="m", prompt_text="hi", max_output_tokens=10)
    tracker.finish(call, usage=Usage(input_tokens=1000))
    assert len(threads) == 1
    assert (threads[0] == threading.get_ident()) is (kind == "memory")
    assert figures(tracker) == [(CENT, Decimal("0"))]
    if kind != "memory":
        open_store(url).close()


@pytest.mark.redis
async def test_a_call_cancelled_while_the_store_answers_gives_its_reservation_back(
    proxied_redis: tuple[Proxy, str],
) -> None:
    proxy, url = proxied_redis
    budget = Budget("10 USD", "day", name=unique("cancelled"))
    tracker = tracker_for(budget, store=url)
    spend(tracker)
    proxy.delay = 0.3
    waiting = asyncio.create_task(tracker.astart(source="api", model="m", estimate=Decimal("2")))
    await asyncio.sleep(0.1)  # its reservation is on its way to Redis
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    proxy.delay = 0.0
    deadline = time.monotonic() + 10
    while figures(tracker) != [(CENT, Decimal("0"))] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert figures(tracker) == [(CENT, Decimal("0"))]  # reserved, then given back


# -- the circuit breaker ---------------------------------------------------------------------


@pytest.mark.redis
def test_a_hung_redis_is_not_asked_again_within_the_cooldown_and_settles_are_replayed(
    proxied_redis: tuple[Proxy, str],
) -> None:
    proxy, url = proxied_redis
    soft = tracker_for(Budget("10 USD", "day", hard=False, name=unique("soft")), store=url)
    hard = tracker_for(Budget("10 USD", "day", name=unique("hard")), store=url)
    spend(soft)
    spend(hard)
    proxy.hung = True
    started = time.monotonic()
    first = soft.start(**KW)  # waits its 2 s timeout, then fails open
    assert time.monotonic() - started >= 1.5
    sent = proxy.chunks
    started = time.monotonic()
    second = soft.start(**KW)  # fails open at once: Redis is not asked
    assert time.monotonic() - started < 1.0
    with pytest.raises(StoreRefusal) as refused:  # fails closed at once
        hard.start(**KW)
    assert refused.value.cooling
    assert isinstance(refused.value, GuardStoreUnavailable)
    assert "not asked again yet" in str(refused.value)
    assert "fails closed, so the call is refused" in str(refused.value)
    for call in (first, second):
        soft.finish(call, usage=Usage(input_tokens=1000))  # settles kept for later
    assert proxy.chunks == sent  # nothing was sent to the store after the timeout
    assert len(soft.guards[0]._pending) == 2  # type: ignore[attr-defined]
    proxy.hung = False
    time.sleep(STORE_COOLDOWN + 0.2)  # the cool-down, and the pending settles' retry delay
    spend(soft)  # replays the two settles first
    # Replayed inline for at most REPLAY_INLINE_SECONDS (5 ms), the rest on a background
    # thread: on a loaded machine one round trip through the proxy can take longer.
    deadline = time.monotonic() + 10
    while figures(soft) != [(Decimal("0.04"), Decimal("0"))] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert figures(soft) == [(Decimal("0.04"), Decimal("0"))]
    assert figures(hard) == [(CENT, Decimal("0"))]


@pytest.mark.redis
def test_after_the_cooldown_one_call_tries_the_store_while_the_others_fail_at_once(
    proxied_redis: tuple[Proxy, str],
) -> None:
    proxy, url = proxied_redis
    soft = tracker_for(Budget("10 USD", "day", hard=False, name=unique("probe")), store=url)
    spend(soft)
    proxy.hung = True
    soft.cancel(soft.start(**KW))  # times out: the breaker opens
    time.sleep(STORE_COOLDOWN + 0.05)
    sent = proxy.chunks
    probe = threading.Thread(target=lambda: soft.cancel(soft.start(**KW)))
    probe.start()  # tries the store: waits its timeout
    deadline = time.monotonic() + 5
    while proxy.chunks == sent and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proxy.chunks == sent + 1  # the probe's one round trip
    for _ in range(3):
        started = time.monotonic()
        soft.cancel(soft.start(**KW))
        assert time.monotonic() - started < 1.0
    assert proxy.chunks == sent + 1  # none of them asked the store
    probe.join()


@pytest.mark.redis
def test_what_is_pending_at_exit_is_replayed_even_within_the_cooldown(
    proxied_redis: tuple[Proxy, str],
) -> None:
    proxy, url = proxied_redis
    soft = tracker_for(Budget("10 USD", "day", hard=False, name=unique("exit")), store=url)
    spend(soft)
    proxy.hung = True
    call = soft.start(**KW)
    soft.finish(call, usage=Usage(input_tokens=2000))  # the store cools down: kept
    assert len(soft.guards[0]._pending) == 1  # type: ignore[attr-defined]
    proxy.hung = False
    _flush_at_exit()  # at once: the store gets one try anyway
    assert len(soft.guards[0]._pending) == 0  # type: ignore[attr-defined]
    assert figures(soft) == [(Decimal("0.03"), Decimal("0"))]


@pytest.mark.postgres
def test_a_postgresql_store_that_cannot_connect_is_not_asked_again_within_the_cooldown(
    postgres_url: str,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    base = urlsplit(postgres_url)
    url = f"{base.scheme}://{base.username or 'postgres'}@127.0.0.1:{port}/x?timeout=1"
    store = open_store(url)
    args: dict[str, Any] = {"floor": 0, "now_ms": 1000}
    with pytest.raises(StoreUnavailable) as first:
        store.read("budget:c:~:2026-03", **args)
    assert not first.value.cooling  # it tried: connection refused
    with pytest.raises(StoreUnavailable) as second:
        store.read("budget:c:~:2026-03", **args)
    assert second.value.cooling  # it did not try
    assert second.value.cause is first.value.cause
    store.close()


def test_a_busy_sqlite_store_answers_again_at_once(tmp_path: Path) -> None:
    path = tmp_path / "guards.db"
    url = f"sqlite:///{path}?timeout=0.2"
    tracker = tracker_for(Budget("10 USD", "day", name=unique("busy")), store=url)
    spend(tracker)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(StoreRefusal) as refused:
        tracker.start(**KW)
    assert not refused.value.cooling
    locker.execute("ROLLBACK")
    locker.close()
    spend(tracker)  # contention is not an outage: no cool-down
    assert figures(tracker) == [(Decimal("0.02"), Decimal("0"))]
    open_store(url).close()
