"""Rate windows kept in the store's counters file each request at the time the store judges
it (once it holds the counter's lock), not at the time the caller read before a lock wait,
so room never comes back early; a guard with a long name (a long ``where`` value) keeps its
counters on every store, and a budget's default name too long to keep says which ``where``
value made it so."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from costledger import Budget, RateLimited, Tracker, Usage
from costledger._guards import RateLimit, TokenRateLimit, open_store
from costledger._ledger import InMemoryLedger
from costledger._pricing import Pricer

from .test_guards_backends import store_url

__all__ = ["store_url"]  # fixtures

PRICES = {"m": {"input": "10", "output": "20"}}
_MARKS = {"redis": pytest.mark.redis, "postgres": pytest.mark.postgres}
IN_CI = os.environ.get("CI", "").lower() == "true"
HELD = 1.0  # seconds the counter's lock is held by another session


def backends(*kinds: str) -> Any:
    params = [pytest.param(k, marks=_MARKS[k]) if k in _MARKS else k for k in kinds]
    return pytest.mark.parametrize("store_url", params, indirect=True)


def _tracker(guard: Any, store: str) -> Tracker:
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    return Tracker(InMemoryLedger(), pricer, [guard], guard_store=store, log="off")


# -- the time a request is filed at ---------------------------------------------------------------


def _hold_the_lock(store_url: str, prefix: str, counter: str) -> threading.Thread:
    """Another session locks the counter (PostgreSQL: its row; SQLite: the database) for
    ``HELD`` seconds; returns once it holds it."""
    held = threading.Event()

    def run() -> None:
        if store_url.startswith("sqlite"):
            conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(HELD)
            conn.execute("COMMIT")
            conn.close()
            return
        import psycopg

        base = store_url.split("?", 1)[0].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(base) as conn:
            conn.execute(
                f"SELECT 1 FROM {prefix}_counters WHERE counter = %s FOR UPDATE", (counter,)
            )
            held.set()
            time.sleep(HELD)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(10)
    return thread


def _sql_buckets(store_url: str, prefix: str, counter: str) -> list[int]:
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(
                f"SELECT bucket FROM {prefix}_buckets WHERE counter = ?", (counter,)
            ).fetchall()
        return sorted(int(r[0]) for r in rows)
    import psycopg

    base = store_url.split("?", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base) as conn:
        rows = conn.execute(
            f"SELECT bucket FROM {prefix}_buckets WHERE counter = %s", (counter,)
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


@backends("postgres", "sqlite")
def test_a_request_that_waited_for_the_counters_lock_is_filed_when_it_got_it(
    store_url: str,
) -> None:
    name = f"wait-{uuid.uuid4().hex[:8]}"
    limit = RateLimit("10/2 seconds", name=name)  # on SQL: the store's own counters
    tracker = _tracker(limit, store_url)
    prefix = open_store(store_url).prefix  # type: ignore[attr-defined]
    counter = f"rate:{name}:~"
    tracker.cancel(tracker.start(source="api", model="m"))  # the counter's row exists
    holder = _hold_the_lock(store_url, prefix, counter)
    asked = int(time.time() * 1000)
    tracker.cancel(tracker.start(source="api", model="m"))  # waits for the lock
    answered = int(time.time() * 1000)
    holder.join()
    assert answered - asked >= HELD * 1000 - 50
    newest = _sql_buckets(store_url, prefix, counter)[-1]
    # filed in the bucket of when the lock was had, not of when the caller asked: a
    # bucket is 34 ms wide here
    assert newest >= asked + HELD * 1000 - 100 - limit.bucket_ms


@pytest.fixture
def stalling_redis() -> Iterator[str]:
    """A redis-server of our own on a unix socket, with DEBUG SLEEP to stall it."""
    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("redis-server is not on PATH, and CI=true requires every backend")
        pytest.skip("redis-server is not on PATH")
    folder = tempfile.mkdtemp(prefix="cls13", dir="/tmp")
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
        try:
            pid = int(Path(pidfile).read_text().strip())
            os.kill(pid, 15)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises once it is gone
                time.sleep(0.02)
        except (OSError, ValueError):
            pass
        shutil.rmtree(folder, ignore_errors=True)


def test_a_token_request_held_up_by_a_busy_redis_is_filed_when_it_ran(
    stalling_redis: str,
) -> None:
    import redis

    url = f"unix://{stalling_redis}?timeout=3"
    name = f"wait-{uuid.uuid4().hex[:8]}"
    limit = TokenRateLimit("100000/2 seconds", name=name)
    tracker = _tracker(limit, url)
    admin = redis.Redis(unix_socket_path=stalling_redis)
    try:
        kw: dict[str, Any] = {
            "source": "api",
            "model": "m",
            "prompt_text": "",
            "max_output_tokens": 84,
        }
        tracker.finish(tracker.start(**kw), usage=Usage(input_tokens=100))  # scripts loaded
        sleeper = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", HELD))
        sleeper.start()
        time.sleep(0.1)
        asked = int(time.time() * 1000)
        tracker.finish(tracker.start(**kw), usage=Usage(input_tokens=100))
        sleeper.join()
        buckets = sorted(int(b) for b in admin.hgetall(f"costledger:guard:{{tokens:{name}:~}}:b"))
        assert buckets[-1] >= asked + (HELD - 0.1) * 1000 - 100 - limit.bucket_ms
    finally:
        admin.close()
        open_store(url).close()


# -- long names ---------------------------------------------------------------------------------


@backends("memory", "redis", "postgres", "sqlite")
def test_a_rate_limit_with_a_long_name_keeps_its_window_on_every_store(store_url: str) -> None:
    feature = f"summarise-{uuid.uuid4().hex}-" + "x" * 600
    requests = RateLimit("2/minute", where={"feature": feature}, on_store_error="closed")
    tokens = TokenRateLimit("300/minute", where={"feature": feature}, on_store_error="closed")
    assert len(requests.name) > 600
    for guard, admitted in ((requests, 2), (tokens, 3)):
        tracker = _tracker(guard, store_url)
        taken = 0
        for _ in range(5):
            try:
                call = tracker.start(
                    source="api",
                    model="m",
                    attribution={"feature": feature},
                    prompt_text="",
                    max_output_tokens=84,  # 100 tokens with the message framing
                )
            except RateLimited:
                continue
            tracker.finish(call, usage=Usage(input_tokens=100))
            taken += 1
        assert taken == admitted


def test_a_budget_whose_default_name_is_too_long_names_the_where_value() -> None:
    with pytest.raises(ValueError) as info:
        Budget("1 USD", where={"team": "search", "feature": "f" * 300})
    assert str(info.value) == (
        "where['feature'] is 300 characters long ('" + "f" * 60 + "...'), too long for the"
        " budget's default name, which names it (at most 200 characters): give the budget a"
        " name= of its own"
    )
    budget = Budget("1 USD", where={"feature": "f" * 300}, name="long feature")
    assert budget.name == "long feature"
