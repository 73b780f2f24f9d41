"""Every SQLite database costledger opens gets the same connection set-up."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from costledger._sqlite import prepare_sqlite_connection


def _open_together(path: Path, threads: int) -> list[str]:
    """``threads`` connections opened on one new file at the same instant."""
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []

    def open_one() -> None:
        barrier.wait()
        try:
            conn = sqlite3.connect(path, check_same_thread=False)
            prepare_sqlite_connection(conn, busy_timeout_ms=30_000)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
            conn.execute("COMMIT")
            outcomes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
            conn.close()
        except Exception as exc:  # the assertion shows which
            outcomes.append(repr(exc))

    pool = [threading.Thread(target=open_one) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return outcomes


@pytest.mark.slow
def test_connections_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    # Without the retry about 1% of these connections failed with "database is locked"
    # (SQLite refuses the WAL switch's lock upgrade without waiting): 150 rounds of six
    # make a regression show up in nearly every run.
    for n in range(150):
        assert _open_together(tmp_path / f"{n}.db", 6) == ["wal"] * 6


def test_a_file_locked_past_the_timeout_still_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")  # still a rollback-journal file
    holder.execute("BEGIN EXCLUSIVE")
    try:
        conn = sqlite3.connect(path)
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            prepare_sqlite_connection(conn, busy_timeout_ms=200)
        assert 0.15 < time.monotonic() - started < 5
        conn.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_settings(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    prepare_sqlite_connection(conn, busy_timeout_ms=1234)
    assert conn.isolation_level is None
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (1234,)
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    memory = sqlite3.connect(":memory:")
    prepare_sqlite_connection(memory, busy_timeout_ms=10)
    assert memory.execute("PRAGMA journal_mode").fetchone() == ("memory",)
