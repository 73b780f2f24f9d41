"""Durable spool segments and the processes that share a spool.

A durable ledger's segment used to be created under its replayable name and locked only
afterwards. A replayer (another process on the same spool, or the writer's own writer
thread) that came in between took the brand-new file for a finished one, replayed it
empty and deleted it; every call acknowledged afterwards went to a file with no name,
and a ``kill -9`` lost them all. A segment is now created under a name replayers ignore
and renamed into place once locked, and a writer that finds its segment without a name
(removed from outside) copies it to a new one. A ledger no longer scans the spool at
every write cycle only because other live processes hold segments there.

Real child processes (``fork`` and ``spawn``), a real SQLite database. The instant
between a segment's creation and its lock is held open in the writer child only, by an
audit hook on ``fcntl.flock`` that waits for the parent to replay the spool meanwhile.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from costledger import Ledger, Tracker, Usage

# gpt-4o-mini: 100 x 0.15/M input + 10 x 0.60/M output
CALL_COST = Decimal("0.000021")
assert 100 * Decimal("0.15") / 10**6 + 10 * Decimal("0.60") / 10**6 == CALL_COST

METHODS = ["fork", "spawn"]
WAIT = 120.0  # seconds a step may take on a loaded machine before the test gives up


def _record(tracker: Tracker, call_id: str) -> str:
    event = tracker.record(
        "gpt-4o-mini", Usage(input_tokens=100, output_tokens=10), call_id=call_id
    )
    return event.id


def _hold_first_lock(conn: Connection) -> None:
    """Stop this process's main thread in its first ``flock`` (a new segment's) until
    the parent has replayed the spool: the instant between a segment's creation and its
    lock, held open."""
    state = {"held": False}
    main = threading.main_thread()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "fcntl.flock" and not state["held"] and threading.current_thread() is main:
            state["held"] = True
            conn.send("in the window")
            conn.recv()

    sys.addaudithook(hook)


def _durable_writer(url: str, conn: Connection, calls: int, hold: bool) -> None:
    """Record ``calls`` calls on a durable ledger whose writer never commits them (its
    interval is an hour), send their ids, then wait to be killed."""
    if hold:
        _hold_first_lock(conn)
    ledger = Ledger(url, durable=True, flush_interval=3600, batch_size=100_000)
    tracker = Tracker(ledger, log="off")
    conn.send([_record(tracker, f"w{os.getpid()}-{k}") for k in range(calls)])
    if conn.recv() == "more":
        conn.send([_record(tracker, f"x{os.getpid()}-{k}") for k in range(calls)])
        conn.recv()


def _held_writer(url: str, calls: int, conn: Connection) -> None:
    _durable_writer(url, conn, calls, hold=True)


def _plain_writer(url: str, calls: int, conn: Connection) -> None:
    _durable_writer(url, conn, calls, hold=False)


def _recv(conn: Connection) -> Any:
    assert conn.poll(WAIT), "the child did not answer"
    return conn.recv()


def _start(method: str, target: Any, *args: Any) -> tuple[Any, Connection]:
    ctx: Any = multiprocessing.get_context(method)
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    return process, parent


def _kill(process: Any) -> None:
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(WAIT)
    assert process.exitcode == -signal.SIGKILL


def _replay_all(url: str) -> int:
    """What a ledger started afterwards replays: the events it read back."""
    ledger = Ledger(url)
    assert ledger.flush(timeout=WAIT)
    replayed = ledger.stats().replayed
    ledger.close()
    return replayed


def _stored(db: Path) -> tuple[list[str], Decimal]:
    with sqlite3.connect(db) as con:
        ids = [row[0] for row in con.execute("SELECT id FROM costledger_events ORDER BY id")]
        costs = [row[0] for row in con.execute("SELECT total_cost FROM costledger_events")]
    return ids, sum((Decimal(str(c)) for c in costs), Decimal(0))


@pytest.mark.parametrize("method", METHODS)
def test_a_replay_while_a_segment_is_being_created_loses_no_acknowledged_call(
    tmp_path: Path, method: str
) -> None:
    """A replayer that runs while the writer is between creating its segment and
    locking it finds nothing to take: after ``kill -9`` every acknowledged call is
    stored exactly once (before: the replay deleted the empty segment and all 40 calls
    written into it afterwards were lost)."""
    db = tmp_path / "race.db"
    url = f"sqlite:///{db}"
    writer, conn = _start(method, _held_writer, url, 40)
    assert _recv(conn) == "in the window"
    assert _replay_all(url) == 0  # the replay, in the window: nothing to take
    conn.send("go")
    acknowledged = _recv(conn)
    _kill(writer)
    assert _replay_all(url) == 40
    ids, total = _stored(db)
    assert ids == sorted(acknowledged)
    assert total == 40 * CALL_COST == Decimal("0.000840")
    assert sorted(p.name for p in (tmp_path / "race.db.spool").iterdir()) == []


@pytest.mark.parametrize("method", METHODS)
def test_a_segment_removed_while_written_is_copied_and_every_call_survives_kill(
    tmp_path: Path, method: str
) -> None:
    """A segment file removed from outside while its writer appends to it: the writer's
    next append finds it without a name and copies it to a new segment, so the calls
    acknowledged before and after the removal all survive ``kill -9`` (before: all 30
    went with the removed file)."""
    db = tmp_path / "gone.db"
    url = f"sqlite:///{db}"
    spool = tmp_path / "gone.db.spool"
    writer, conn = _start(method, _plain_writer, url, 15)
    first = _recv(conn)
    (segment,) = spool.glob("[0-9]*.jsonl")
    segment.unlink()
    conn.send("more")
    second = _recv(conn)
    _kill(writer)
    assert _replay_all(url) == 30
    ids, total = _stored(db)
    assert ids == sorted(first + second)
    assert total == 30 * CALL_COST == Decimal("0.000630")


def _spilling_writer(url: str, conn: Connection) -> None:
    """A durable ledger whose buffer holds 2 events: of 5 calls, 3 go to the segment only."""
    ledger = Ledger(url, durable=True, flush_interval=3600, batch_size=100_000, max_buffer=2)
    tracker = Tracker(ledger, log="off")
    conn.send([_record(tracker, f"s-{k}") for k in range(5)])
    conn.recv()  # the segment is removed meanwhile
    ok = ledger.flush(timeout=WAIT)
    stats = ledger.stats()
    conn.send((ok, stats.inserted, stats.replayed, stats.duplicates))
    conn.recv()


@pytest.mark.parametrize("method", METHODS)
def test_a_segment_kept_for_replay_after_its_file_was_removed_is_written_again(
    tmp_path: Path, method: str
) -> None:
    """Events only in a segment (the buffer was full) whose file was removed after the
    last append: the segment kept for replay is written again under a new name and
    replayed (before: the 3 spilled events were lost)."""
    db = tmp_path / "kept.db"
    url = f"sqlite:///{db}"
    spool = tmp_path / "kept.db.spool"
    writer, conn = _start(method, _spilling_writer, url)
    acknowledged = _recv(conn)
    (segment,) = spool.glob("[0-9]*.jsonl")
    segment.unlink()
    conn.send("flush")
    # 2 inserted from the buffer; the copy replays all 5: 3 new, 2 duplicates
    assert _recv(conn) == (True, 5, 5, 2)
    _kill(writer)
    ids, total = _stored(db)
    assert ids == sorted(acknowledged)
    assert total == 5 * CALL_COST == Decimal("0.000105")
    assert sorted(p.name for p in spool.iterdir()) == []


def _counting_reader(url: str, segment: str, calls: int, conn: Connection) -> None:
    """A plain ledger writing ``calls`` calls one write cycle each; sends how many times
    it opened another live process's locked ``segment``."""
    opened = [0]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        path = args[0] if event == "open" and args else None
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == segment:
            opened[0] += 1

    sys.addaudithook(hook)
    ledger = Ledger(url, flush_interval=3600, batch_size=1)
    tracker = Tracker(ledger, log="off")
    ids = []
    for k in range(calls):
        ids.append(_record(tracker, f"r-{k}"))
        deadline = time.monotonic() + WAIT  # one write cycle per call: wait for each
        while ledger.stats().inserted < k + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
    conn.send((ledger.stats().inserted, opened[0], ids))
    conn.recv()


@pytest.mark.parametrize("method", METHODS)
def test_another_live_writers_segment_is_not_scanned_at_every_write_cycle(
    tmp_path: Path, method: str
) -> None:
    """A ledger sharing its spool with a live durable writer looks at that writer's
    locked segment once (at its first cycle), not at each of its 6 write cycles."""
    db = tmp_path / "scan.db"
    url = f"sqlite:///{db}"
    spool = tmp_path / "scan.db.spool"
    writer, writer_conn = _start(method, _plain_writer, url, 3)
    held = _recv(writer_conn)
    (segment,) = spool.glob("[0-9]*.jsonl")
    reader, reader_conn = _start(method, _counting_reader, url, str(segment), 6)
    inserted, opened, written = _recv(reader_conn)
    assert (inserted, opened) == (6, 1)
    reader_conn.send("done")
    _kill(reader)
    _kill(writer)
    assert _replay_all(url) == 3
    ids, total = _stored(db)
    assert ids == sorted(held + written)
    assert total == 9 * CALL_COST == Decimal("0.000189")
