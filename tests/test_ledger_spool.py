"""Nothing is lost: the spool when the database is down, replay on recovery, and a
``durable=True`` process killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger, event_to_row
from costledger._ledger._engine import resolve_url
from costledger._ledger._rows import encode_spool_line

from .test_ledger import full_event


def _event(i: int = 0) -> UsageEvent:
    return UsageEvent(
        model="gpt-4o",
        usage=Usage(input_tokens=10 + i, output_tokens=1),
        cost=Cost(status="priced", total=Decimal("0.000000037500") * (i + 1)),
    )


def _count(url: str) -> int:
    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite" and not Path(resolved.database or "").is_file():
        return 0
    engine = sa.create_engine(resolved)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("costledger_events"):
                return 0
            return int(conn.exec_driver_sql("SELECT count(*) FROM costledger_events").scalar_one())
    finally:
        engine.dispose()


def _spooled_lines(directory: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in directory.glob("[0-9]*.jsonl"))


@pytest.mark.postgres
def test_postgres_down_spools_then_a_later_ledger_replays(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    spool = tmp_path / "spool"
    down = "postgresql+psycopg://postgres@127.0.0.1:1/nothing_listens_here"
    events = [_event(i) for i in range(20)]
    ledger = Ledger(down, spool_dir=spool, batch_size=5)
    for event in events:
        ledger.record(event)  # never raises, never blocks
    assert ledger.flush(timeout=60) is False
    stats = ledger.stats()
    assert stats.healthy is False
    assert stats.spooled == 20
    assert stats.last_error is not None
    ledger.close(timeout=5)
    assert _spooled_lines(spool) == 20

    with Ledger(fresh_pg_url, spool_dir=spool) as recovered:
        assert recovered.flush(timeout=60)
        assert recovered.stats().replayed == 20
        stored = {e.id: e.total_cost for e in recovered.events()}
    assert stored == {e.id: e.cost.total for e in events}
    assert list(spool.glob("[0-9]*.jsonl")) == []


def test_unwritable_sqlite_path_spools_and_recovers_in_place(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker / 'ledger.db'}"
    spool = tmp_path / "spool"
    events = [_event(i) for i in range(30)]
    ledger = Ledger(url, spool_dir=spool, batch_size=10, flush_interval=0.05)
    try:
        for event in events:
            ledger.record(event)
        assert ledger.flush(timeout=30) is False
        assert ledger.stats().healthy is False
        assert _spooled_lines(spool) == 30

        blocker.unlink()  # the operator fixes the path; the writer retries with backoff
        deadline = time.monotonic() + 60
        while _count(url) < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(url) == 30  # replayed by the writer itself, no flush called
        assert ledger.flush(timeout=30)
        assert ledger.stats().healthy
        assert list(spool.glob("[0-9]*.jsonl")) == []
    finally:
        ledger.close()


def test_sync_ledger_spools_too(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("x")
    url = f"sqlite:///{blocker / 'ledger.db'}"
    ledger = Ledger(url, sync=True, spool_dir=tmp_path / "spool")
    try:
        event = _event()
        ledger.record(event)  # the failure is logged and swallowed, the event kept
        assert ledger.stats().spooled == 1
        blocker.unlink()
        assert ledger.flush(timeout=30)
        stored = ledger.get(event.id)
        assert stored is not None
        assert stored.total_cost == Decimal("0.000000037500")
    finally:
        ledger.close()


def test_every_field_comes_back_from_the_spool_as_recorded(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("x")
    url = f"sqlite:///{blocker / 'ledger.db'}"
    events = [full_event(id="full"), full_event(id="bare", tags=(), metadata={})]
    ledger = Ledger(url, spool_dir=tmp_path / "spool", flush_interval=0.05)
    try:
        for event in events:
            ledger.record(event)
        assert ledger.flush(timeout=30) is False
        assert _spooled_lines(tmp_path / "spool") == 2
        blocker.unlink()
        assert ledger.flush(timeout=30)
        stored = [ledger.get(e.id) for e in events]
        assert [s.to_event() if s else None for s in stored] == events
        # text storage keeps even the exponent, through the spool too
        assert [str(s.total_cost) if s else None for s in stored] == [
            str(e.cost.total) for e in events
        ]
    finally:
        ledger.close()


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spool = tmp_path / "spool"
    spool.mkdir()
    good = [_event(i) for i in range(3)]
    lines = b"".join(encode_spool_line(event_to_row(e)) for e in good)
    torn = encode_spool_line(event_to_row(_event(99)))[:57]  # a crash mid-append
    (spool / f"{time.time_ns():020d}-1-000001-abcdef.jsonl").write_bytes(lines + torn)
    garbage = encode_spool_line(event_to_row(_event(5))) + b"{not json}\n"
    (spool / f"{time.time_ns():020d}-1-000002-abcdef.jsonl").write_bytes(garbage)
    with Ledger(url, spool_dir=spool) as ledger:
        assert ledger.flush(timeout=30)
        stats = ledger.stats()
        assert stats.torn_lines == 1
        assert stats.rejected == 1  # the unreadable middle line, kept for a human
        assert stats.replayed == 4
        assert _count(url) == 4
    assert list(spool.glob("[0-9]*.jsonl")) == []
    (rejected,) = spool.glob("rejected-*.jsonl")
    assert rejected.read_bytes() == b"{not json}\n"


def test_replay_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spool = tmp_path / "spool"
    events = [_event(i) for i in range(10)]
    with Ledger(url, spool_dir=spool, sync=True) as ledger:
        ledger.record_many(events[:6])  # some already stored
    spool.mkdir(exist_ok=True)
    line = b"".join(encode_spool_line(event_to_row(e)) for e in events)
    (spool / f"{time.time_ns():020d}-1-000001-abcdef.jsonl").write_bytes(line + line)
    with Ledger(url, spool_dir=spool) as ledger:
        assert ledger.flush(timeout=30)
        assert ledger.stats().inserted == 4
    assert _count(url) == 10


CHILD = """
import sys, time
from decimal import Decimal
from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger

url, spool, n, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "idle"
kwargs = dict(flush_interval=3600, batch_size=10**6) if idle else dict(batch_size=97)
ledger = Ledger(url, durable=True, spool_dir=spool, **kwargs)
ledger.summary()  # schema ready before the clock starts
for i in range(n):
    ledger.record(UsageEvent(model="m", usage=Usage(i, 1),
                             cost=Cost("priced", total=Decimal("0.000000037500") * i)))
print("recorded", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("writer", ["idle", "busy"])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_durable_survives_sigkill(
    tmp_path: Path, writer: str, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = str(request.getfixturevalue("fresh_pg_url"))
    spool = tmp_path / "spool"
    n = 2000
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(spool), str(n), writer],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recorded"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    before = _count(url)
    if writer == "idle":
        assert before == 0  # everything was only in the spool when the process died
    with Ledger(url, spool_dir=spool) as ledger:
        assert ledger.flush(timeout=120)
        assert ledger.stats().inserted == n - before
        (row,) = ledger.summary()
    assert _count(url) == n
    assert row.cost == Decimal("0.000000037500") * (n * (n - 1) // 2)
    assert list(spool.glob("[0-9]*.jsonl")) == []


def test_durable_segments_are_deleted_once_committed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spool = tmp_path / "spool"
    with Ledger(url, durable=True, spool_dir=spool, batch_size=50) as ledger:
        for i in range(500):
            ledger.record(_event(i))
        assert ledger.flush(timeout=30)
        ledger.flush(timeout=30)  # a second cycle rotates the segment written meanwhile
        assert _spooled_lines(spool) == 0
    assert _count(url) == 500
