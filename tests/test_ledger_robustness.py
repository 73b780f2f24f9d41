"""The ledger under a hung database at exit, a removed SQLite file, a full disk, and a
long outage: nothing lost, nothing miscounted, a bounded wait and a bounded number of
spool files; and PostgreSQL rollups that print a sum as a rebuild does."""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from costledger import Cost, Usage, UsageEvent, rebuild_rollups
from costledger._ledger import Ledger
from costledger._ledger._engine import resolve_url

UTC = timezone.utc

# -- helpers -----------------------------------------------------------------------------------


def event(i: int) -> UsageEvent:
    return UsageEvent(
        id=f"e-{i:07d}",
        model="gpt-4o",
        provider="openai",
        usage=Usage(input_tokens=10 + i % 100, output_tokens=1),
        cost=Cost(status="priced", total=Decimal(i % 97 + 1) / Decimal(10**7)),
        timestamp=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
    )


# the very events the children record
_EVENT_CODE = (
    "from datetime import datetime, timedelta, timezone\n"
    "UTC = timezone.utc\n"
    "from decimal import Decimal\n"
    "from costledger import Cost, Usage, UsageEvent\n" + inspect.getsource(event)
)


def _event_total(i: int) -> Decimal:
    return Decimal(i % 97 + 1) / Decimal(10**7)


def _spool_lines(spool: Path) -> list[bytes]:
    return [
        line for p in sorted(spool.glob("[0-9]*.jsonl")) for line in p.read_bytes().splitlines()
    ]


def _ids(url: str) -> set[str]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.exec_driver_sql("SELECT id FROM costledger_events")}
    finally:
        engine.dispose()


def _run(code: str, *args: str, timeout: float = 60) -> tuple[dict[str, Any], float]:
    """Run a child; its last stdout line (JSON) and when it exited (``time.monotonic``,
    which is system-wide on Linux: comparable with the child's own stamps)."""
    proc = subprocess.run(
        [sys.executable, "-c", _EVENT_CODE + code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    ended = time.monotonic()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), ended


# -- #2: a hung database at exit ------------------------------------------------------------------

_EXIT_CHILD = """
import json, sys, time
from costledger._ledger import Ledger

url, spool, n, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ledger = Ledger(url, spool_dir=spool, exit_timeout=2)
for i in range(n):
    ledger.record(event(i))
time.sleep(0.5)  # the writer has taken a batch and is stuck inserting it
start = time.monotonic()
if how == "close":
    ledger.close()
    s = ledger.stats()
    print(json.dumps(dict(start=start, took=time.monotonic() - start, recorded=s.recorded,
                          inserted=s.inserted, spooled=s.spooled, dropped=s.dropped)))
else:
    print(json.dumps(dict(start=start)), flush=True)
    sys.exit(0)  # no close: the exit hook closes the ledger
"""


@pytest.mark.postgres
def test_exit_with_a_locked_postgres_table_spools_every_event_within_exit_timeout(
    tmp_path: Path, pg_url: str
) -> None:
    spool = tmp_path / "spool"
    with Ledger(pg_url, sync=True, spool_dir=spool) as ledger:
        ledger.summary()  # the schema, before the table is locked
    n = 3000
    locker = sa.create_engine(resolve_url(pg_url))
    try:
        with locker.connect() as conn:
            conn.exec_driver_sql("LOCK TABLE costledger_events IN ACCESS EXCLUSIVE MODE")
            out, ended = _run(_EXIT_CHILD, pg_url, str(spool), str(n), "exit")
            conn.rollback()
    finally:
        locker.dispose()
    # exit_timeout=2 in all (it used to wait twice that), plus the interpreter's teardown
    assert ended - out["start"] < 3.5
    lines = _spool_lines(spool)
    assert len(lines) == n  # the batch the writer held included, each event once
    with Ledger(pg_url, spool_dir=spool) as ledger:
        assert ledger.flush(timeout=30)
        assert ledger.stats().replayed == n
    assert _ids(pg_url) == {f"e-{i:07d}" for i in range(n)}


def test_close_with_a_locked_sqlite_file_spools_every_event_and_counts_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    spool = tmp_path / "spool"
    with Ledger(url, sync=True, spool_dir=spool) as ledger:
        ledger.summary()
    n = 3000
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the writer waits up to busy_timeout (10 s)
        out, _ = _run(_EXIT_CHILD, url, str(spool), str(n), "close")
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert out["took"] < 2.9  # exit_timeout=2 for the flush and the join together
    assert (out["recorded"], out["inserted"], out["spooled"], out["dropped"]) == (n, 0, n, 0)
    assert len(_spool_lines(spool)) == n
    with Ledger(url, spool_dir=spool) as ledger:
        assert ledger.flush(timeout=30)
        assert ledger.stats().replayed == n
        assert ledger.summary()[0].cost == sum(_event_total(i) for i in range(n))
    assert _ids(url) == {f"e-{i:07d}" for i in range(n)}


# -- #5: the SQLite file removed under a running ledger --------------------------------------------


@pytest.mark.parametrize("what", ["directory", "file"])
def test_removed_sqlite_file_is_created_again_at_its_path(
    tmp_path: Path, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "data"
    path = directory / "ledger.db"
    url = f"sqlite:///{path}"
    ledger = Ledger(url, flush_interval=0.05)
    try:
        for i in range(100):
            ledger.record(event(i))
        assert ledger.flush(timeout=30)
        if what == "directory":
            shutil.rmtree(directory)  # the spool next to the file goes too
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        with caplog.at_level(logging.WARNING, logger="costledger.ledger"):
            for i in range(100, 300):
                ledger.record(event(i))
            assert ledger.flush(timeout=30)
            (row,) = ledger.summary()
        stats = ledger.stats()
    finally:
        ledger.close()
    assert path.is_file()
    warnings = [r for r in caplog.records if "was removed or replaced" in r.getMessage()]
    assert len(warnings) == 1
    # what was recorded after the removal is in the new file, and nothing else
    assert _ids(url) == {f"e-{i:07d}" for i in range(100, 300)}
    assert row.requests == 200
    assert row.cost == sum(_event_total(i) for i in range(100, 300))
    assert (stats.recorded, stats.inserted, stats.dropped) == (300, 300, 0)


# -- #6: a full disk (a file size limit), each mode ------------------------------------------------

_FULL_CHILD = """
import json, resource, signal, sys
from costledger._ledger import Ledger

url, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
Ledger(url, sync=True).summary()  # the schema, before the limit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
limit = 400_000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
ledger = Ledger(url, sync=mode == "sync", durable=mode == "durable")
for i in range(n):
    ledger.record(event(i))
ledger.close()
s = ledger.stats()
print(json.dumps(dict(inserted=s.inserted, spooled=s.spooled, dropped=s.dropped,
                      rejected=s.rejected, replayed=s.replayed, torn=s.torn_lines)))
"""


@pytest.mark.parametrize("mode", ["buffered", "sync", "durable"])
def test_full_disk_counts_exactly_what_the_spool_holds(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    n = 20_000
    out, _ = _run(_FULL_CHILD, url, mode, str(n))
    spool = tmp_path / "ledger.db.spool"
    lines = _spool_lines(spool)
    assert all(line.endswith(b"}") for line in lines)  # no torn line: cut back to whole ones
    assert (out["rejected"], out["torn"]) == (0, 0)
    stored = len(_ids(url))
    assert stored == out["inserted"]  # written at once, or replayed by the child itself
    if mode != "durable":  # durable events are in the spool before any write: not "spooled"
        assert out["spooled"] - out["replayed"] == len(lines)
        assert out["inserted"] + out["spooled"] - out["replayed"] + out["dropped"] == n
    with Ledger(url) as ledger:
        assert ledger.flush(timeout=60)
        stats = ledger.stats()
    assert stats.torn_lines == 0
    assert stats.replayed == len(lines)
    assert _ids(url) == {f"e-{i:07d}" for i in range(n)}  # here, nothing had to be dropped


# -- #8: a long outage makes a few spool files, not one per event ----------------------------------


def test_an_outage_in_sync_mode_and_after_close_appends_to_few_spool_files(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker / 'ledger.db'}"
    spool = tmp_path / "spool"
    n = 2000
    ledger = Ledger(url, sync=True, spool_dir=spool)
    for i in range(n):
        ledger.record(event(i))  # the database cannot be opened: spooled
    assert ledger.stats().spooled == n
    ledger.close(timeout=5)
    for i in range(n, 2 * n):
        ledger.record(event(i))  # after close: spooled
    assert ledger.stats().spooled == 2 * n
    assert ledger.stats().dropped == 0
    assert len(list(spool.glob("[0-9]*.jsonl"))) <= 2
    assert len(_spool_lines(spool)) == 2 * n

    blocker.unlink()
    with Ledger(url, spool_dir=spool) as recovered:
        assert recovered.flush(timeout=60)
        assert recovered.stats().replayed == 2 * n
    assert _ids(url) == {f"e-{i:07d}" for i in range(2 * n)}
    assert list(spool.glob("[0-9]*.jsonl")) == []


def test_a_closed_ledger_keeps_appending_while_others_replay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spool = tmp_path / "spool"
    closed = Ledger(url, spool_dir=spool)
    closed.close()
    for i in range(500):
        closed.record(event(i))
        if i % 50 == 0:  # a new ledger replays the tail file between two appends
            with Ledger(url, spool_dir=spool) as live:
                assert live.flush(timeout=30)
    with Ledger(url, spool_dir=spool) as live:
        assert live.flush(timeout=30)
    assert closed.stats().spooled == 500
    assert _ids(url) == {f"e-{i:07d}" for i in range(500)}
    assert list(spool.glob("[0-9]*.jsonl")) == []


# -- #7: PostgreSQL rollups print a sum as a rebuild (and the events table) do -------------------


@pytest.mark.postgres
def test_postgres_rollups_keep_the_scale_of_a_rebuild(tmp_path: Path, pg_url: str) -> None:
    day = datetime(2025, 3, 1, 12, tzinfo=UTC)
    events = [
        UsageEvent(
            id=f"p-{i}",
            model="gpt-4o",
            usage=Usage(input_tokens=1000, output_tokens=37),
            cost=Cost(status="priced", total=Decimal("0.0028700"), input=Decimal("0.0025")),
            timestamp=day + timedelta(minutes=i),
        )
        for i in range(10)
    ]
    with Ledger(pg_url, sync=True, spool_dir=tmp_path / "spool") as ledger:
        ledger.record_many(events)
        by_day = ledger.summary(by="day", since=day.date())
        overall = ledger.summary()
        rebuild_rollups(ledger)
        rebuilt_by_day = ledger.summary(by="day", since=day.date())
        rebuilt = ledger.summary()
        # less than a day: answered from the events table itself
        raw = ledger.summary(since=day, until=day + timedelta(hours=1))
    assert str(raw[0].cost) == "0.028700000000000000"
    assert [str(r.cost) for r in overall] == ["0.028700000000000000"]
    assert [str(r.cost) for r in rebuilt] == ["0.028700000000000000"]
    assert [str(r.cost) for r in by_day] == [str(r.cost) for r in rebuilt_by_day]
