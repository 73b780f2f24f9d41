"""Budgets count each call once, in the period the ledger files it in: a call recorded twice
(``Tracker.record`` with one ``call_id``) is counted once, as the ledger stores it once; a
call whose start an entry point moved into the next period after its guards ran is counted
in that period only. After an outage, the settles kept in the process are replayed without
stalling the next caller."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from costledger import Budget, Tracker, Usage
from costledger._guards._budget import REPLAY_INLINE_ITEMS
from costledger._guards._redis import RedisStore
from costledger._guards._store import STORE_COOLDOWN
from costledger._ledger import InMemoryLedger, Ledger
from costledger._pricing import Pricer
from costledger.testing import MemoryStore

from .test_guards_backends import _Proxy, store_url

__all__ = ["store_url"]  # fixtures

PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
_MARKS = {"redis": pytest.mark.redis, "postgres": pytest.mark.postgres}


def backends(*kinds: str) -> Any:
    params = [pytest.param(k, marks=_MARKS[k]) if k in _MARKS else k for k in kinds]
    return pytest.mark.parametrize("store_url", params, indirect=True)


class _ThreadNotingRedis(RedisStore):
    """The real Redis store, noting the thread each settle (a round trip) runs on."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settle_threads: list[str] = []

    def settle(self, counter: str, **kwargs: Any) -> Any:
        self.settle_threads.append(threading.current_thread().name)
        return super().settle(counter, **kwargs)


def _pricer() -> Pricer:
    return Pricer(PRICES, genai_prices=False, litellm=False)


def _spent(budget: Budget, tracker: Tracker, now: float | None = None) -> tuple[Decimal, Decimal]:
    (row,) = budget.status(tracker, now=now)
    return row.spent, row.reserved


# -- a call recorded twice --------------------------------------------------------------------


@backends("memory", "redis", "postgres", "sqlite")
def test_a_call_recorded_twice_is_counted_once(store_url: str, tmp_path: Any) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    budget = Budget("1 USD", "month", name=f"rec-{uuid.uuid4().hex[:8]}")
    tracker = Tracker(ledger, _pricer(), [budget], guard_store=store_url, log="off")
    long_id = "chatcmpl-" + "a" * 120  # longer than a store's settle id: by its digest
    for _ in range(2):  # a retried webhook, a backfill run again
        tracker.record("m", Usage(input_tokens=10_000), call_id="0190b8a2-7c1e-7000-8000-01")
        tracker.record("m", Usage(input_tokens=2_000), call_id=long_id)
    tracker.record("m", Usage(input_tokens=1_000), call_id="another")
    tracker.record("m", Usage(input_tokens=1_000))  # no id: one of its own each time
    tracker.record("m", Usage(input_tokens=1_000))
    assert _spent(budget, tracker) == (Decimal("0.15"), 0)
    ledger.flush()
    assert sum(e.total_cost for e in ledger.events()) == Decimal("0.15")  # the same
    ledger.close()


def test_calls_failing_open_with_one_id_each_count() -> None:
    # a budget that fails open counts each call, even two in flight with one call_id
    class Broken:
        def estimate(self, call: Any, tracker: Any) -> Any:
            raise RuntimeError("estimator down")

    budget = Budget("1 USD", "month", hard=False, estimator=Broken())
    tracker = Tracker(InMemoryLedger(), _pricer(), [budget], guard_store=MemoryStore(), log="off")
    first = tracker.start(source="api", model="m", call_id="same")
    second = tracker.start(source="api", model="m", call_id="same")
    tracker.finish(first, usage=Usage(input_tokens=1000))
    tracker.finish(second, usage=Usage(input_tokens=2000))
    assert _spent(budget, tracker) == (Decimal("0.03"), 0)


# -- a call moved into the next period after its guards ran ------------------------------------


def _next_hour(now: float) -> datetime:
    start = datetime.fromtimestamp(now, timezone.utc).replace(minute=0, second=0, microsecond=0)
    return start + timedelta(hours=1)


@backends("memory", "redis", "sqlite")
def test_a_call_moved_into_the_next_period_counts_there_only(store_url: str) -> None:
    ledger = InMemoryLedger()
    name = f"hour-{uuid.uuid4().hex[:8]}"
    budget = Budget("1 USD", "hour", name=name)
    tracker = Tracker(ledger, _pricer(), [budget], guard_store=store_url, log="off")
    now = time.time()
    later = _next_hour(now) + timedelta(seconds=1)
    call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
    assert _spent(budget, tracker, now) == (0, Decimal("0.5"))
    # what the LiteLLM wrappers do when a rate limit's wait ends in the next period: the
    # call starts (and the ledger files it) after its guards ran
    call.started_at = later
    tracker.finish(call, usage=Usage(input_tokens=2000))
    assert _spent(budget, tracker, now) == (0, 0)  # its period: reservation given back
    # the next period's counter is not seeded yet: its status reads the ledger
    assert _spent(budget, tracker, later.timestamp()) == (Decimal("0.02"), 0)
    fresh = Budget("1 USD", "hour", name=name)
    restarted = Tracker(ledger, _pricer(), [fresh], guard_store=MemoryStore(), log="off")
    assert _spent(fresh, restarted, later.timestamp()) == (Decimal("0.02"), 0)
    assert _spent(fresh, restarted, now) == (0, 0)


def test_a_call_moved_into_a_seeded_period_is_added_to_it() -> None:
    budget = Budget("1 USD", "hour")
    tracker = Tracker(InMemoryLedger(), _pricer(), [budget], guard_store=MemoryStore(), log="off")
    now = time.time()
    later = _next_hour(now) + timedelta(seconds=1)
    # spend recorded in the next period seeds its counter
    tracker.record("m", Usage(input_tokens=1000), started_at=later)
    call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
    call.started_at = later + timedelta(seconds=1)
    tracker.finish(call, usage=Usage(input_tokens=3000))
    assert _spent(budget, tracker, now) == (0, 0)
    assert _spent(budget, tracker, later.timestamp()) == (Decimal("0.04"), 0)


# -- the settles kept during an outage --------------------------------------------------------


@pytest.mark.redis
def test_a_backlog_of_settles_is_replayed_off_the_callers_thread(redis_url: str) -> None:
    real = urlsplit(redis_url)
    proxy = _Proxy((real.hostname or "127.0.0.1", real.port or 6379))
    url = f"redis://127.0.0.1:{proxy.port}/0?timeout=0.5&prefix=cltest:{uuid.uuid4().hex[:10]}"
    budget = Budget("1000 USD", "month", hard=False, name="backlog")
    store = _ThreadNotingRedis(url)
    tracker = Tracker(InMemoryLedger(), _pricer(), [budget], guard_store=store, log="off")

    def spend() -> None:
        call = tracker.start(source="api", model="m", estimate=Decimal("0.01"))
        tracker.finish(call, usage=Usage(input_tokens=1000))

    try:
        spend()
        proxy.stop()
        calls = 2000
        for _ in range(calls):  # a soft budget fails open: each settle is kept
            spend()
        assert len(budget._pending) == calls
        proxy.start()
        time.sleep(STORE_COOLDOWN + 0.1)
        store.settle_threads.clear()
        call = tracker.start(source="api", model="m", estimate=Decimal("0.01"))
        # replaying 2,000 settles through the proxy takes about a second: the caller
        # replays the oldest few only, the guards' worker threads the rest
        caller = threading.current_thread().name
        assert 1 <= store.settle_threads.count(caller) <= REPLAY_INLINE_ITEMS
        tracker.finish(call, usage=Usage(input_tokens=1000))
        deadline = time.monotonic() + 60
        # a replay takes its items off the list before its round trip: wait for the counts
        while _spent(budget, tracker) != (Decimal("20.02"), 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not budget._pending
        assert _spent(budget, tracker) == (Decimal("20.02"), 0)
    finally:
        proxy.stop()
