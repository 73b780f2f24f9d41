"""Guard fixes from the third review, on real stores (memory, Redis, PostgreSQL, SQLite file):
a settle or reservation whose answer came too late (the store ran it, the client had given
up) is counted once and given back; PostgreSQL and SQLite stores answer within their
timeout, and a PostgreSQL restart costs one call; ``memory://`` is one store per process;
spend from ``Tracker.record`` alerts; default budget names tell different budgets apart
and a Tracker refuses two guards with one name; ``budget status --budgets`` reads its
file like ``guards_from_config``; status lists only a budget's own counters;
configuration errors name the field and the value; pending settles are not replayed by a
forked child and are replayed at exit."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costledger import BudgetExceeded, GuardStoreUnavailable, Tracker, Usage
from costledger._guards import (
    Budget,
    BudgetAlert,
    RateLimit,
    TokenRateLimit,
    budget_status,
    flush_alerts,
    guards_from_config,
    open_store,
    store_for,
)
from costledger._guards._memory import MemoryStore
from costledger._guards._store import STORE_COOLDOWN, GuardStore, StoreUnavailable
from costledger._ledger import InMemoryLedger, Ledger
from costledger._pricing import Pricer
from costledger.cli import app

from .test_guards_backends import _with_query, store_url

__all__ = ["store_url"]  # fixtures

PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
CENT = Decimal("0.01")
WHEN = datetime(2031, 5, 10, 12, tzinfo=timezone.utc)  # ahead: Redis keeps the counters
IN_CI = os.environ.get("CI", "").lower() == "true"
_MARKS = {"redis": pytest.mark.redis, "postgres": pytest.mark.postgres}
ALL = ("memory", "redis", "postgres", "sqlite")


def backends(*kinds: str) -> Any:
    params = [pytest.param(k, marks=_MARKS[k]) if k in _MARKS else k for k in kinds]
    return pytest.mark.parametrize("store_url", params, indirect=True)


def _pricer() -> Pricer:
    return Pricer(PRICES, genai_prices=False, litellm=False)


def tracker_for(*guards: Any, store: Any = "memory://", ledger: Any = None) -> Tracker:
    return Tracker(ledger or InMemoryLedger(), _pricer(), guards, guard_store=store, log="off")


def at_when() -> float:
    return WHEN.timestamp()


def spend(tracker: Tracker, cents: int = 1, *, estimate: Decimal = CENT, **who: Any) -> None:
    call = tracker.start(source="api", model="m", attribution=who, estimate=estimate)
    tracker.finish(call, usage=Usage(input_tokens=1000 * cents))


def figures(tracker: Tracker) -> list[tuple[str | None, Decimal, Decimal]]:
    return [(s.key, s.spent, s.reserved) for s in budget_status(tracker)]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def answers_too_late(store: GuardStore, operation: str) -> Iterator[list[int]]:
    """``store.<operation>`` runs, then its answer is lost: the client sees a timeout, as
    when a slow Redis answers after ``socket_timeout`` or a PostgreSQL connection drops
    after the commit. Yields the count of operations that ran."""
    real = getattr(store, operation)
    ran: list[int] = []

    def late(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        ran.append(1)
        raise StoreUnavailable(store.url, TimeoutError("Timeout reading from socket"))

    setattr(store, operation, late)
    try:
        yield ran
    finally:
        delattr(store, operation)


@contextlib.contextmanager
def unavailable(store: GuardStore, operation: str) -> Iterator[None]:
    """``store.<operation>`` fails without running (the store is down)."""

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable(store.url, ConnectionError("Connection refused"))

    setattr(store, operation, down)
    try:
        yield
    finally:
        delattr(store, operation)


# -- 1. an answer that came too late --------------------------------------------------------


@backends(*ALL)
def test_a_settle_answered_too_late_and_replayed_counts_once(store_url: str) -> None:
    budget = Budget("1 USD", "month", name=unique("late-settle"))
    tracker = tracker_for(budget, store=store_url)
    store = store_for(tracker)
    spend(tracker)
    call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
    with answers_too_late(store, "settle") as ran:
        tracker.finish(call, usage=Usage(input_tokens=3000))  # 3 cents, settled in the store
    assert ran == [1]
    assert len(budget._pending) == 1  # the client could not tell: kept to replay
    budget._next_retry = 0.0
    spend(tracker)  # replays the pending settle first: the store has it already
    assert not budget._pending
    assert figures(tracker) == [(None, Decimal("0.05"), Decimal("0"))]


@backends(*ALL)
def test_a_reservation_answered_too_late_is_given_back(store_url: str) -> None:
    budget = Budget("1 USD", "month", name=unique("late-reserve"))
    tracker = tracker_for(budget, store=store_url)
    store = store_for(tracker)
    spend(tracker)
    with answers_too_late(store, "reserve") as ran, pytest.raises(GuardStoreUnavailable):
        tracker.start(source="api", model="m", estimate=Decimal("0.5"))  # fails closed
    assert ran == [1]  # ... and the store holds 0.5 for it
    # The release is queued (not tried on the refused call's path) and done when the
    # store answers again: here by the status read.
    assert figures(tracker) == [(None, CENT, Decimal("0"))]
    assert not budget._pending
    spend(tracker)
    assert figures(tracker) == [(None, Decimal("0.02"), Decimal("0"))]


@backends(*ALL)
def test_a_soft_budgets_late_reservation_is_dropped_by_its_settle(store_url: str) -> None:
    budget = Budget("1 USD", "month", hard=False, name=unique("late-soft"))
    tracker = tracker_for(budget, store=store_url)
    store = store_for(tracker)
    spend(tracker)
    with answers_too_late(store, "reserve"):
        call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))  # fails open
    (row,) = budget.status(tracker)
    assert (row.spent, row.reserved) == (CENT, Decimal("0.5"))  # made, answer lost
    tracker.finish(call, usage=Usage(input_tokens=3000))
    assert figures(tracker) == [(None, Decimal("0.04"), Decimal("0"))]
    with answers_too_late(store, "reserve"):
        call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
    tracker.cancel(call)  # given back later, not on the cancel's path
    assert figures(tracker) == [(None, Decimal("0.04"), Decimal("0"))]


@backends(*ALL)
def test_a_store_settles_each_id_once(store_url: str) -> None:
    store = open_store(store_url)
    c = f"budget:{unique('once')}:~:life"
    keep = 10**13
    marks = [("warn:0.5", 5), ("warn:1", 10)]
    assert store.seed(c, buckets={0: 1}, marks=marks, floor=0, keep_until=keep)
    admitted = store.reserve(
        c,
        res_id="r1",
        amount=4,
        limit=10,
        floor=0,
        now_ms=1000,
        expires_ms=10**12,
        keep_until=keep,
        refuse_mark=None,
    )
    assert (admitted.status, admitted.spent, admitted.reserved) == ("ok", 1, 0)

    def settle(res_id: str, amount: int) -> tuple[int, int, tuple[str, ...]]:
        done = store.settle(
            c,
            res_id=res_id,
            reserved=4,
            bucket=0,
            amount=amount,
            floor=0,
            keep_until=keep,
            marks=marks,
        )
        return done.spent, done.reserved, done.fired

    assert settle("r1", 4) == (5, 0, ("warn:0.5",))
    assert settle("r1", 4) == (5, 0, ())  # a replay: nothing added, nothing fired
    assert settle("open-1", 5) == (10, 0, ("warn:1",))  # an id with no reservation
    assert settle("open-1", 5) == (10, 0, ())
    state = store.read(c, floor=0, now_ms=1000)
    assert (state.spent, state.reserved, state.seeded) == (10, 0, True)


@pytest.fixture
def stalling_redis() -> Iterator[str]:
    """A redis-server of our own on a unix socket, with DEBUG SLEEP to stall it."""
    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("redis-server is not on PATH, and CI=true requires every backend")
        pytest.skip("redis-server is not on PATH")
    folder = tempfile.mkdtemp(prefix="clr3", dir="/tmp")
    sock = os.path.join(folder, "r.sock")
    pidfile = os.path.join(folder, "r.pid")
    options = ["--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"]
    options += ["--enable-debug-command", "local"]
    subprocess.run(
        [server, *options, "--daemonize", "yes", "--pidfile", pidfile, "--dir", folder],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not (os.path.exists(sock) and os.path.exists(pidfile)):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        yield sock
    finally:
        with contextlib.suppress(OSError, ValueError):
            pid = int(Path(pidfile).read_text().strip())
            os.kill(pid, 15)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises once it is gone
                time.sleep(0.02)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_stalled_redis_answering_late_neither_double_counts_nor_leaks(
    stalling_redis: str,
) -> None:
    import redis

    url = f"unix://{stalling_redis}?timeout=0.5"
    admin = redis.Redis(unix_socket_path=stalling_redis)

    def stall() -> threading.Thread:
        sleeper = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", "1.5"))
        sleeper.start()
        time.sleep(0.2)
        return sleeper

    budget = Budget("10 USD", "day", name="stalled")
    tracker = tracker_for(budget, store=url)
    try:
        spend(tracker)  # every script loaded on the server
        call = tracker.start(source="api", model="m", estimate=Decimal("1"))
        sleeper = stall()
        tracker.finish(call, usage=Usage(input_tokens=3000))  # runs once the server wakes
        sleeper.join()
        assert len(budget._pending) == 1
        time.sleep(STORE_COOLDOWN)  # the timeout opened the store's breaker
        budget._next_retry = 0.0
        spend(tracker)  # the replay finds it settled
        assert figures(tracker) == [(None, Decimal("0.05"), Decimal("0"))]
        sleeper = stall()
        with pytest.raises(GuardStoreUnavailable):
            tracker.start(source="api", model="m", estimate=Decimal("4"))
        sleeper.join()
        time.sleep(STORE_COOLDOWN)
        budget._next_retry = 0.0
        spend(tracker, 0)  # replays the release (nothing spent)
        assert figures(tracker) == [(None, Decimal("0.05"), Decimal("0"))]  # given back
    finally:
        admin.close()
        open_store(url).close()


# -- 2. PostgreSQL and SQLite answer within their timeout -----------------------------------


def _refused_and_let_through(tracker: Tracker) -> tuple[float, float]:
    """(seconds the hard budget took to refuse, seconds the soft one took to let through)."""
    t0 = time.monotonic()
    with pytest.raises(GuardStoreUnavailable) as info:
        tracker.start(source="api", model="m", estimate=CENT)
    refused = time.monotonic() - t0
    assert "fails closed, so the call is refused" in str(info.value)
    soft = Tracker(tracker.ledger, _pricer(), [tracker.guards[1]], guard_store=tracker.guard_store)
    t0 = time.monotonic()
    call = soft.start(source="api", model="m", estimate=CENT)
    let_through = time.monotonic() - t0
    soft.cancel(call)
    return refused, let_through


@pytest.mark.postgres
@backends("postgres")
def test_a_locked_postgresql_counter_answers_within_the_timeout(store_url: str) -> None:
    import psycopg

    url = _with_query(store_url, timeout="1")
    hard = Budget("1 USD", "day", name=unique("pg-hard"))
    soft = Budget("1 USD", "day", hard=False, name=unique("pg-soft"))
    tracker = tracker_for(hard, soft, store=url)
    spend(tracker)  # tables, functions and both counters exist
    prefix = url.split("prefix=", 1)[1].split("&", 1)[0]
    plain = store_url.split("?", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    locker = psycopg.connect(plain)
    try:
        locker.execute(f"SELECT * FROM {prefix}_counters FOR UPDATE")  # a stuck session
        undo = threading.Timer(15, locker.rollback)  # without the timeouts: a 15 s hang
        undo.start()
        refused, let_through = _refused_and_let_through(tracker)
        assert max(refused, let_through) < 4, (refused, let_through)
        undo.cancel()
        locker.rollback()
    finally:
        locker.close()
    spend(tracker)  # the pool's connections still work
    assert [row[1:] for row in figures(tracker)] == [(Decimal("0.02"), 0), (Decimal("0.02"), 0)]
    open_store(url).close()


@pytest.mark.postgres
def test_a_postgresql_restart_costs_one_call_not_one_per_pooled_connection(
    fresh_pg_url: str, postgres_url: str
) -> None:
    import psycopg

    url = _with_query(fresh_pg_url, prefix="g_restart", timeout="2")
    tracker = tracker_for(Budget("10 USD", "day", name="restart"), store=url)

    def calls() -> None:
        for _ in range(10):
            spend(tracker)

    workers = [threading.Thread(target=calls) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert figures(tracker) == [(None, Decimal("0.8"), Decimal("0"))]  # several pooled
    database = fresh_pg_url.rsplit("/", 1)[1].split("?", 1)[0]
    admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as admin:  # the server drops them all
        (dropped,) = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'costledger-guards'",
            (database,),
        ).fetchone()  # type: ignore[misc]
    assert dropped >= 2
    outcomes = []
    for _ in range(6):
        try:
            spend(tracker)
            outcomes.append("ok")
        except GuardStoreUnavailable:
            outcomes.append("refused")
    assert outcomes == ["refused", "ok", "ok", "ok", "ok", "ok"]
    assert figures(tracker) == [(None, Decimal("0.85"), Decimal("0"))]
    open_store(url).close()


def test_a_locked_sqlite_guard_store_answers_within_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "guards.db"
    url = f"sqlite:///{path}?timeout=0.5"
    hard = Budget("1 USD", "day", name="sqlite-hard")
    soft = Budget("1 USD", "day", hard=False, name="sqlite-soft")
    tracker = tracker_for(hard, soft, store=url)
    spend(tracker)
    writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a long write elsewhere holds the lock
        undo = threading.Timer(15, writer.rollback)  # without the timeout: 15 s
        undo.start()
        refused, let_through = _refused_and_let_through(tracker)
        assert max(refused, let_through) < 3, (refused, let_through)
        undo.cancel()
        writer.rollback()
    finally:
        writer.close()
    spend(tracker)
    assert [row[1:] for row in figures(tracker)] == [(Decimal("0.02"), 0), (Decimal("0.02"), 0)]
    open_store(url).close()


# -- 3. memory:// is one store per process --------------------------------------------------


def test_memory_is_one_store_shared_by_every_tracker_of_the_process() -> None:
    budget = Budget("0.10 USD", "day")
    ledger = InMemoryLedger()
    first = tracker_for(budget, store=None, ledger=ledger)
    second = tracker_for(budget, store="memory://", ledger=ledger)
    assert store_for(first) is store_for(second) is open_store("memory")
    spent = Decimal(0)
    refused = 0
    for i in range(30):  # two web handlers, two entry points: they take turns
        tracker = (first, second)[i % 2]
        try:
            spend(tracker)
        except Exception:
            refused += 1
            continue
        spent += CENT
    assert (spent, refused) == (Decimal("0.10"), 20)
    # A MemoryStore object of its own is private: nothing spent there.
    private = tracker_for(Budget("0.10 USD", "day"), store=MemoryStore())
    assert figures(private) == [(None, Decimal("0"), Decimal("0"))]
    assert store_for(private) is not store_for(first)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_has_its_own_memory_store_and_nothing_pending() -> None:
    budget = Budget("1 USD", "day", name="forked")
    tracker = tracker_for(budget, store=None)
    store = store_for(tracker)
    spend(tracker)
    call = tracker.start(source="api", model="m", estimate=CENT)
    with unavailable(store, "settle"):
        tracker.finish(call, usage=Usage(input_tokens=2000))  # kept to replay
    assert len(budget._pending) == 1
    read_end, write_end = os.pipe()
    with contextlib.ExitStack() as stack:
        import warnings

        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # the child: report and leave, whatever happens
        code = 1
        try:
            os.close(read_end)
            report = {
                "pending": len(budget._pending),
                "same store": store_for(tracker) is store,
                "counters": len(store_for(tracker).counters("")),
            }
            os.write(write_end, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(data) == {"pending": 0, "same store": False, "counters": 0}
    assert figures(tracker) == [(None, Decimal("0.03"), Decimal("0"))]  # the parent replays


# -- 4. Tracker.record alerts ---------------------------------------------------------------


@backends(*ALL)
def test_spend_recorded_with_tracker_record_alerts_at_each_threshold(store_url: str) -> None:
    alerts: list[BudgetAlert] = []
    budget = Budget("0.05 USD", "day", hard=False, name=unique("recorded"), clock=at_when)
    budget.on_alert(alerts.append)
    tracker = tracker_for(budget, store=store_url)
    for _ in range(5):  # 5 x 1.25 cents: past 50%, 80% and 100%
        tracker.record("m", Usage(input_tokens=1250), started_at=WHEN)
    assert flush_alerts(10)
    assert [(a.kind, a.threshold, a.spent) for a in alerts] == [
        ("threshold", Decimal("0.5"), Decimal("0.025")),
        ("threshold", Decimal("0.8"), Decimal("0.05")),
        ("threshold", Decimal("1"), Decimal("0.05")),
    ]
    assert figures(tracker) == [(None, Decimal("0.0625"), Decimal("0"))]
    spend(tracker)  # a tracked call after them: nothing fires again
    assert flush_alerts(10)
    assert len(alerts) == 3
    assert figures(tracker) == [(None, Decimal("0.0725"), Decimal("0"))]


def test_a_record_seeds_from_the_ledger_and_fires_only_thresholds_it_passes() -> None:
    ledger = InMemoryLedger()
    earlier = tracker_for(ledger=ledger)  # no guards: spend already in the ledger
    for _ in range(3):
        earlier.record("m", Usage(input_tokens=1000), started_at=WHEN)
    alerts: list[BudgetAlert] = []
    budget = Budget("0.05 USD", "day", hard=False, clock=at_when)
    budget.on_alert(alerts.append)
    tracker = tracker_for(budget, ledger=ledger)  # a new process: nothing in its store
    tracker.record("m", Usage(input_tokens=1250), started_at=WHEN)  # 4.25 cents: past 80%
    assert flush_alerts(10)
    assert [(a.threshold, a.spent) for a in alerts] == [(Decimal("0.8"), Decimal("0.0425"))]
    assert figures(tracker) == [(None, Decimal("0.0425"), Decimal("0"))]


# -- 5. default names; two guards with one name ---------------------------------------------


def test_default_names_tell_different_budgets_apart() -> None:
    assert Budget("1 USD", "day").name == "1 USD/day"  # a simple budget keeps its name
    assert Budget("2 USD", "day", per="user", tz="Europe/Paris").name == (
        "2 USD/day Europe/Paris per user"
    )
    assert Budget("1 USD", "day", warn_at=["1", 0.8, Decimal("0.5")]).name == "1 USD/day"
    assert Budget("1 USD", "day", hard=False).name == "1 USD/day soft"
    digest = hashlib.sha1(b"warn_at=0.25,0.5").hexdigest()[:6]
    assert Budget("1 USD", "day", hard=False, warn_at=(0.25, 0.5)).name == (
        f"1 USD/day soft #{digest}"
    )
    # A hard stop and early warnings on the same limit: each counts every call once.
    hard = Budget("1 USD", "day")
    soft = Budget("1 USD", "day", hard=False, warn_at=(0.25, 0.5))
    tracker = tracker_for(hard, soft)
    for _ in range(100):
        spend(tracker)
    with pytest.raises(BudgetExceeded) as refused:
        spend(tracker)
    assert (refused.value.scope, refused.value.spent) == ("1 USD/day", Decimal("1"))
    assert figures(tracker) == [(None, Decimal("1"), Decimal("0"))] * 2


def test_a_tracker_refuses_two_guards_with_one_name() -> None:
    first = Budget("1 USD", "day", name="team")
    second = Budget("5 USD", "month", name="team")
    with pytest.raises(ValueError) as info:
        tracker_for(first, second)
    assert str(info.value) == (
        "guards Budget('team', hard=True) and Budget('team', hard=True) share the name"
        " 'team', so they would share their counters and count every call twice; give"
        " one of them its own name= (or list a guard once)"
    )
    with pytest.raises(ValueError, match="share the name '1 USD/day'"):
        tracker_for(Budget("1 USD", "day"), Budget("1 USD", "day", on_store_error="open"))
    with pytest.raises(ValueError, match=r"RateLimit\('60/minute'\) and RateLimit"):
        tracker_for(RateLimit("60/minute"), RateLimit("60/minute", wait=1))
    rate = RateLimit("60/minute", name="team")
    with pytest.raises(ValueError, match="share the name 'team'"):
        tracker_for(rate, rate)
    # Different kinds keep different counters: one name is fine.
    tracker_for(first, rate, TokenRateLimit("1000/minute", name="team"))


# -- 6. budget status reads its file like guards_from_config --------------------------------


@pytest.mark.redis
def test_budget_status_reads_its_file_like_guards_from_config(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = unique("cl:cli3")
    store = _with_query(redis_url, prefix=prefix)
    config = tmp_path / "guards.toml"
    config.write_text(
        f'guard_store = "{store}"\n'
        "[[budget]]\n"
        'limit = "10 USD"\nperiod = "month"\nname = "cli-demo"\nreservation_ttl = "15m"\n'
        "[[rate_limit]]\n"
        'limit = "60/minute"\n'
    )
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    loaded = guards_from_config(config)
    assert loaded.guards[0].reservation_ttl == 900  # type: ignore[union-attr]
    with Ledger(db) as ledger:
        tracker = Tracker(ledger, _pricer(), loaded.guards, guard_store=loaded.guard_store)
        call = tracker.start(source="api", model="m", estimate=Decimal("3"))  # in flight
        try:
            runner = CliRunner()
            args = ["budget", "status", "--budgets", str(config), "--db", db, "-f", "json"]
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
            (row,) = json.loads(result.stdout)
            assert (row["budget"], row["reserved"], row["remaining"]) == ("cli-demo", "3", "7")
            # --guard-store wins over the file's
            result = runner.invoke(app, [*args, "--guard-store", "memory://"])
            assert result.exit_code == 0, result.output
            (row,) = json.loads(result.stdout)
            assert (row["reserved"], row["remaining"]) == ("0", "10")
        finally:
            tracker.cancel(call)
    open_store(store).close()


def test_budget_status_names_a_bad_field_of_its_file(tmp_path: Path) -> None:
    config = tmp_path / "guards.toml"
    config.write_text('[[budget]]\nlimit = "10 USD"\nreservation_ttl = "soon"\n')
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = CliRunner().invoke(app, ["budget", "status", "--budgets", str(config), "--db", db])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: budgets file {str(config)!r}: budget[1].reservation_ttl: reservation_ttl"
        " must be a duration such as '24h', '30d', '15m' or a number of seconds, got 'soon'"
    )


# -- 7. status lists only a budget's own counters -------------------------------------------


@backends(*ALL)
def test_status_lists_only_the_budgets_own_counters(store_url: str) -> None:
    name = unique("search")
    mine = Budget("10 USD", "day", per="user", name=name)
    other = Budget("10 USD", "day", per="user", name=f"{name}:eu")
    tracker = tracker_for(mine, other, store=store_url)
    spend(tracker, user="alice")
    spend(tracker, 2, user="bob")
    assert [(s.key, s.spent) for s in sorted(mine.status(tracker), key=lambda s: s.key or "")] == [
        ("alice", CENT),
        ("bob", Decimal("0.02")),
    ]
    assert sorted((s.budget, s.key) for s in budget_status(tracker)) == [
        (name, "alice"),
        (name, "bob"),
        (f"{name}:eu", "alice"),
        (f"{name}:eu", "bob"),
    ]


# -- 8. configuration errors name the field and the value -----------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Budget("5 USD", reservation_ttl=float("inf")),
            "reservation_ttl must be a finite duration, got inf",
        ),
        (
            lambda: Budget("5 USD", reservation_ttl=float("nan")),
            "reservation_ttl must be a finite duration, got nan",
        ),
        (
            lambda: RateLimit("60/minute", wait=float("nan")),
            "wait must be a finite number of seconds >= 0, got nan",
        ),
        (
            lambda: TokenRateLimit("1000/minute", wait=float("inf")),
            "wait must be a finite number of seconds >= 0, got inf",
        ),
        (
            lambda: Budget("5 USD", "day", tz=None),
            "tz must be an IANA time zone such as 'Europe/Paris', got None",
        ),
        (
            lambda: Budget("5 USD", estimator="x"),
            "estimator must be an Estimator (an object with an estimate(call, tracker)"
            " method), got 'x'",
        ),
        (
            lambda: TokenRateLimit("1000/minute", estimator=3),
            "estimator must be an Estimator (an object with an estimate(call, tracker)"
            " method), got 3",
        ),
        (
            lambda: Budget("5 USD", clock=5),
            "clock must be a callable returning seconds since the epoch, got 5",
        ),
        (
            lambda: RateLimit("60/minute", clock="now"),
            "clock must be a callable returning seconds since the epoch, got 'now'",
        ),
        (
            lambda: TokenRateLimit("10/0 minutes"),
            "TokenRateLimit limit must have a window longer than zero, got '10/0 minutes'",
        ),
        (
            lambda: tracker_for(Budget("1 USD"), store="redis://127.0.0.1:6379/0?timeout=abc"),
            "guard_store 'redis://127.0.0.1:6379/0?timeout=abc': timeout must be a number of"
            " seconds above 0, got 'abc'",
        ),
        (
            lambda: tracker_for(Budget("1 USD"), store="sqlite:////tmp/cl3.db?timeout=0"),
            "guard_store 'sqlite:////tmp/cl3.db?timeout=0': timeout must be a number of"
            " seconds above 0, got '0'",
        ),
        (
            lambda: tracker_for(Budget("1 USD"), store="sqlite:////tmp/cl3.db?timeout=nan"),
            "guard_store 'sqlite:////tmp/cl3.db?timeout=nan': timeout must be a number of"
            " seconds above 0, got 'nan'",
        ),
        (
            lambda: guards_from_config(
                {"budget": [{"limit": "5 USD", "reservation_ttl": Decimal("Infinity")}]}
            ),
            "budget[1].reservation_ttl: reservation_ttl must be a finite duration, got inf",
        ),
        (
            lambda: guards_from_config({"budget": [{"limit": "5 USD", "perr": "user"}]}),
            "budget[1].perr: unknown field 'perr'; budget takes hard, limit, name,"
            " on_store_error, per, period, reservation_ttl, tz, warn_at, where",
        ),
    ],
)
def test_bad_configuration_is_refused_at_once_naming_field_and_value(
    make: Any, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


# -- pending settles at exit ----------------------------------------------------------------

EXIT_SCRIPT = """
import sys
from decimal import Decimal
from costledger import Budget, Tracker, Usage
from costledger._guards import store_for
from costledger._guards._store import StoreUnavailable
from costledger._ledger import InMemoryLedger
from costledger._pricing import Pricer

pricer = Pricer({"m": {"input": "10", "output": "20"}}, genai_prices=False, litellm=False)
budget = Budget("1 USD", "month", name="at-exit")
tracker = Tracker(InMemoryLedger(), pricer, [budget], guard_store=sys.argv[1], log="off")
store = store_for(tracker)
call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
def down(*args, **kwargs):
    raise StoreUnavailable(store.url, ConnectionError("Connection refused"))
store.settle = down
tracker.finish(call, usage=Usage(input_tokens=3000))
del store.settle  # the store is back; the process ends before any other call
print("pending", len(budget._pending))
"""


def test_pending_settles_are_replayed_at_exit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'guards.db'}"
    script = tmp_path / "exit_flush.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["pending", "1"]
    budget = Budget("1 USD", "month", name="at-exit")
    tracker = tracker_for(budget, store=url)
    assert figures(tracker) == [(None, Decimal("0.03"), Decimal("0"))]
    open_store(url).close()
