"""Guard store fixes from review: reservation expiry on SQL stores, secrets hidden in store
URLs, the ``unix://`` Redis store, and alert delivery in a forked child."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import GuardRefusal, Tracker, Usage
from costledger._guards import Budget, budget_status, flush_alerts, open_store
from costledger._guards._sql import SqlStore
from costledger._guards._store import StoreRefusal, display_url
from costledger._ledger import InMemoryLedger
from costledger._pricing import Pricer

from .test_guards_backends import _with_query, store_url

__all__ = ["store_url"]  # fixtures

PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
CENT = Decimal("0.01")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pricer() -> Pricer:
    return Pricer(PRICES, genai_prices=False, litellm=False)


_MARKS = {"redis": pytest.mark.redis, "postgres": pytest.mark.postgres}


def backends(*kinds: str) -> Any:
    params = [pytest.param(k, marks=_MARKS[k]) if k in _MARKS else k for k in kinds]
    return pytest.mark.parametrize("store_url", params, indirect=True)


ALL = ("memory", "redis", "postgres", "sqlite")


class _Clock:
    def __init__(self, when: str) -> None:
        self.now = datetime.fromisoformat(when).timestamp()

    def __call__(self) -> float:
        return self.now


# -- 4. an expiry keeps the next expiry of the reservations still held ------------------------


@backends(*ALL)
def test_a_reserve_that_expires_others_keeps_the_next_expiry_of_those_still_held(
    store_url: str,
) -> None:
    store = open_store(store_url)
    c = f"budget:ttl-{uuid.uuid4().hex[:8]}:~:life"
    keep = 10**13
    assert store.seed(c, buckets={}, marks=[], floor=0, keep_until=keep)

    def reserve(res_id: str, at: int, expires: int) -> None:
        admitted = store.reserve(
            c,
            res_id=res_id,
            amount=1,
            limit=None,
            floor=0,
            now_ms=at,
            expires_ms=expires,
            keep_until=keep,
            refuse_mark=None,
        )
        assert admitted.status == "ok"

    reserve("a", 0, 10_000)
    reserve("b", 5_000, 15_000)
    reserve("c", 12_000, 22_000)  # drops a; b (15,000) is the next to expire, not c
    assert store.read(c, floor=0, now_ms=14_999).reserved == 2
    assert store.read(c, floor=0, now_ms=15_000).reserved == 1  # b lapsed at its own TTL
    assert store.read(c, floor=0, now_ms=21_999).reserved == 1
    assert store.read(c, floor=0, now_ms=22_000).reserved == 0


@backends(*ALL)
def test_an_abandoned_reservation_stops_counting_against_a_budget_at_its_ttl(
    store_url: str,
) -> None:
    clock = _Clock("2026-03-10T12:00:00+00:00")
    base = clock.now
    budget = Budget(
        "0.03 USD", "lifetime", reservation_ttl=10, clock=clock, name=f"ttl-{uuid.uuid4().hex}"
    )
    tracker = Tracker(InMemoryLedger(), _pricer(), [budget], guard_store=store_url, log="off")

    def start(at: float, estimate: str) -> Any:
        clock.now = base + at
        return tracker.start(source="api", model="m", estimate=Decimal(estimate))

    start(0, "0.01")  # abandoned: held until t=10
    start(5, "0.01")  # abandoned: held until t=15
    start(12, "0.01")  # abandoned: held until t=22; the first one lapses here
    clock.now = base + 16  # the second one has lapsed too
    (row,) = budget_status(tracker, now=clock.now)
    assert (row.spent, row.reserved) == (Decimal("0"), Decimal("0.01"))
    call = start(16, "0.02")  # 0.01 held + 0.02 fits in 0.03
    tracker.finish(call, usage=Usage(input_tokens=2000))
    (row,) = budget_status(tracker, now=clock.now)
    assert (row.spent, row.reserved) == (Decimal("0.02"), Decimal("0.01"))


# -- 6. a password given as a query parameter is hidden --------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/7?password=hunter2", "redis://127.0.0.1:6379/7?password=***"),
        (
            "redis://u:hunter2@127.0.0.1:6379/7?PassWord=hunter2&prefix=a",
            "redis://u:***@127.0.0.1:6379/7?PassWord=***&prefix=a",
        ),
        (
            "unix://:hunter2@/tmp/r.sock?db=7&Pass=hunter2",
            "unix://:***@/tmp/r.sock?db=7&Pass=***",
        ),
        ("unix:///tmp/r.sock?db=7&passwd=hunter2", "unix:///tmp/r.sock?db=7&passwd=***"),
        (
            "postgresql://pg@h/db?sslpassword=a&secret=b&TOKEN=c&api_key=d&api%5Fkey=e&sslmode=f",
            "postgresql://pg@h/db?sslpassword=***&secret=***&TOKEN=***&api_key=***&api%5Fkey=***"
            "&sslmode=f",
        ),
        ("redis://h:6379/0?prefix=p&timeout=1", "redis://h:6379/0?prefix=p&timeout=1"),
        ("redis://h:6379/0?password=&db=1", "redis://h:6379/0?password=***&db=1"),
    ],
)
def test_display_url_hides_passwords_in_the_query(url: str, shown: str) -> None:
    assert display_url(url) == shown


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _refusal(url: str) -> str:
    tracker = Tracker(
        InMemoryLedger(), _pricer(), [Budget("5 USD", "month")], guard_store=url, log="off"
    )
    with pytest.raises(StoreRefusal) as info:
        tracker.start(source="api", model="m", estimate=CENT)
    assert isinstance(info.value, GuardRefusal)
    return str(info.value)


def test_a_fail_closed_refusal_hides_a_redis_password_given_in_the_query() -> None:
    port = _closed_port()
    message = _refusal(f"redis://127.0.0.1:{port}/7?password=hunter2&timeout=0.5&prefix=q")
    assert message.startswith(
        f"guard store redis://127.0.0.1:{port}/7?password=***&timeout=0.5&prefix=q"
        " is unavailable: ConnectionError: "
    )
    assert message.endswith("; budget '5 USD/month' fails closed, so the call is refused")
    assert "hunter2" not in message


def test_a_fail_closed_refusal_hides_a_postgres_password_given_in_the_query() -> None:
    port = _closed_port()
    message = _refusal(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/test?password=hunter2&timeout=1"
    )
    assert message.startswith(
        f"guard store postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        "?password=***&timeout=1 is unavailable: OperationalError: "
    )
    assert message.endswith("; budget '5 USD/month' fails closed, so the call is refused")
    assert "hunter2" not in message


def test_sql_store_messages_hide_a_password_given_in_the_query(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        SqlStore("mysql://u:pw1@h/db?password=hunter2&token=t0k")
    assert str(info.value) == (
        "guard_store 'mysql://u:***@h/db?password=***&token=***': a SQL guard store must be"
        " PostgreSQL or SQLite (or use 'memory://' or a redis:// URL), not 'mysql'"
    )
    store = SqlStore(f"sqlite:///{tmp_path / 'g.db'}?secret=hunter2")
    assert store.url == f"sqlite:///{tmp_path / 'g.db'}?secret=***"


@pytest.mark.postgres
def test_a_postgres_store_with_a_query_password_works_and_hides_it(postgres_url: str) -> None:
    prefix = f"g{uuid.uuid4().hex[:12]}"
    url = _with_query(postgres_url, password="hunter2", prefix=prefix)
    store = open_store(url)
    try:
        assert "hunter2" not in store.url
        assert store.url.endswith(f"?password=***&prefix={prefix}")
        c = "budget:pw:~:life"
        assert store.seed(c, buckets={0: 4}, marks=[], floor=0, keep_until=None)
        state = store.read(c, floor=0, now_ms=1000)
        assert (state.spent, state.reserved, state.seeded) == (4, 0, True)
    finally:
        store.drop()  # type: ignore[attr-defined]


# -- 7. the unix:// Redis store ------------------------------------------------------------


@pytest.fixture
def redis_socket() -> Iterator[str]:
    """A redis-server of our own on a unix socket (a short path: sockets allow ~100 bytes)."""
    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("redis-server is not on PATH, and CI=true requires every backend")
        pytest.skip("redis-server is not on PATH")
    folder = tempfile.mkdtemp(prefix="clr", dir="/tmp")
    sock = os.path.join(folder, "r.sock")
    pidfile = os.path.join(folder, "r.pid")
    options = ["--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"]
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


@pytest.mark.parametrize("query", ["", "?db=3&prefix=cl:unix&timeout=1"])
def test_a_unix_socket_redis_store_reserves_and_settles(redis_socket: str, query: str) -> None:
    import redis

    url = f"unix://{redis_socket}{query}"
    budget = Budget("0.05 USD", "month", name="unix")
    tracker = Tracker(InMemoryLedger(), _pricer(), [budget], guard_store=url, log="off")
    call = tracker.start(source="api", model="m", estimate=CENT)
    (row,) = budget_status(tracker)
    assert (row.spent, row.reserved) == (Decimal("0"), CENT)
    tracker.finish(call, usage=Usage(input_tokens=3000))
    (row,) = budget_status(tracker)
    assert (row.spent, row.reserved) == (Decimal("0.03"), Decimal("0"))
    db, prefix = (3, "cl:unix") if query else (0, "costledger:guard")
    client = redis.Redis(unix_socket_path=redis_socket, db=db)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match="*", count=1000))
        (counter,) = open_store(url).counters("budget:unix:")  # budget:unix:~:<this month>
        assert keys == [f"{prefix}:{{{counter}}}:{part}" for part in ("b", "m", "s")]
    finally:
        client.close()
        open_store(url).close()


# -- 9. alerts in a forked child -------------------------------------------------------------


def _alerting_tracker(got: list[str]) -> Tracker:
    budget = Budget("0.02 USD", "month", clock=time.time, warn_at=(0.5,))
    budget.on_alert(lambda alert: got.append(alert.kind))
    return Tracker(InMemoryLedger(), _pricer(), [budget], log="off")


def _spend_a_cent(tracker: Tracker) -> None:
    call = tracker.start(source="api", model="m", estimate=CENT)
    tracker.finish(call, usage=Usage(input_tokens=1000))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_alerts_are_delivered_in_a_forked_child_after_the_parent_sent_one() -> None:
    in_parent: list[str] = []
    _spend_a_cent(_alerting_tracker(in_parent))
    assert flush_alerts(5)
    assert in_parent == ["threshold"]  # the parent's alert thread is running
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
            in_child: list[str] = []
            _spend_a_cent(_alerting_tracker(in_child))
            flushed = flush_alerts(3)
            report = {"flushed": flushed, "child": in_child, "parent": in_parent}
            os.write(write_end, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(data) == {"flushed": True, "child": ["threshold"], "parent": ["threshold"]}
    assert in_parent == ["threshold"]


def _spends_through(url: str) -> None:
    budget = Budget("0.05 USD", "month", name=f"alias-{uuid.uuid4().hex[:8]}")
    tracker = Tracker(InMemoryLedger(), _pricer(), [budget], guard_store=url, log="off")
    try:
        call = tracker.start(source="api", model="m", estimate=CENT)
        tracker.finish(call, usage=Usage(input_tokens=3000))
        (row,) = budget_status(tracker)
        assert (row.spent, row.reserved) == (Decimal("0.03"), Decimal("0"))
    finally:
        open_store(url).close()


def test_a_redis_plus_unix_url_opens_the_socket_store(redis_socket: str) -> None:
    # limits' spelling of a socket; redis-py's from_url knows only unix://
    _spends_through(f"redis+unix://{redis_socket}?prefix=cl:alias")


@pytest.mark.redis
def test_a_valkey_url_opens_a_redis_protocol_store(redis_url: str) -> None:
    # Valkey speaks the Redis protocol; redis-py's from_url refuses the valkey:// scheme
    rest = redis_url.split("://", 1)[1].rsplit("/", 1)[0]
    _spends_through(f"valkey://{rest}/6?prefix=cl:valkey:{uuid.uuid4().hex[:8]}")
