"""Interrupted ingestion: a database failure between batches, a SIGKILL mid-run, and the
checkpoint's judgement of whether a file (and a ledger) is still the one it describes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from costledger._ingest import IngestError, IngestProgress, ingest
from costledger._ingest._state import load_checkpoint
from costledger._ledger import Ledger
from costledger._ledger._engine import resolve_url
from costledger._ledger._rollups import rebuild_rollups

from .ingest_support import (
    REFUSAL,
    count_rows,
    lines_with_a_refused_user,
    make_event,
    own_line,
    refuse_user,
    write_lines,
)

BAD_EVERY = 97


def _file_with_bad_lines(path: Path, n: int) -> tuple[Path, int, int]:
    """``n`` lines, one in ``BAD_EVERY`` not JSON; returns the path, good and bad counts."""
    lines = []
    bad = 0
    for i in range(1, n + 1):
        if i % BAD_EVERY == 0:
            lines.append(b'{"broken": ' + str(i).encode())
            bad += 1
        else:
            lines.append(own_line(make_event(i, id=f"evt-{i:07d}")))
    return write_lines(path, lines), n - bad, bad


def _rename_table(url: str, old: str, new: str) -> None:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")
    finally:
        engine.dispose()


def _rejects(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _rollups_consistent(url: str) -> None:
    """The rollups kept on write equal a recomputation from the events (none counted twice)."""
    with Ledger(url, sync=True) as ledger:
        kept = ledger.summary(by=["day", "model", "user"])
        rebuild_rollups(ledger)
        assert ledger.summary(by=["day", "model", "user"]) == kept


def test_database_failure_between_batches_then_resume(url: str, tmp_path: Path) -> None:
    """The events table disappears after the first commit: the run stops with a clear error,
    the first batch alone is in the ledger, and the next run completes it exactly."""
    path, good, bad = _file_with_bad_lines(tmp_path / "usage.log", 1000)
    broken = False

    def break_database(p: IngestProgress) -> None:
        nonlocal broken
        if p.committed and p.lines and not broken:
            broken = True
            _rename_table(url, "costledger_events", "costledger_events_away")

    with pytest.raises(IngestError) as failure:
        ingest(path, ledger=url, checkpoint_dir=tmp_path, batch_lines=300, progress=break_database)
    message = str(failure.value)
    assert "could not write to the ledger" in message
    assert "run the same ingestion again to resume" in message
    partial = failure.value.result
    _rename_table(url, "costledger_events_away", "costledger_events")

    # nothing of the failed batch was written; the first batch is whole
    first_batch_valid = partial.accepted
    assert 0 < first_batch_valid < good
    assert count_rows(url) == first_batch_valid
    checkpoint = next(p for p in tmp_path.glob("*.json"))
    state = load_checkpoint(checkpoint)
    assert state is not None
    assert state.complete is False
    assert state.next_line - 1 == first_batch_valid + (state.next_line - 1) // BAD_EVERY
    rejects_file = Path(f"{path}.rejects.jsonl")
    assert len(_rejects(rejects_file)) == (state.next_line - 1) // BAD_EVERY

    resumed = ingest(path, ledger=url, checkpoint_dir=tmp_path, batch_lines=300)
    assert resumed.inputs[0].resumed_at_line == state.next_line
    assert resumed.accepted == good - first_batch_valid
    assert resumed.duplicates == 0
    assert count_rows(url) == good
    records = _rejects(rejects_file)
    assert [r["line"] for r in records] == [i for i in range(1, 1001) if i % BAD_EVERY == 0]
    assert len(records) == bad
    _rollups_consistent(url)


_KILLABLE = """
import sys, time
from costledger._ingest import ingest

def slow(p):
    if p.committed:
        time.sleep(0.03)

ingest(sys.argv[1], ledger=sys.argv[2], checkpoint_dir=sys.argv[3], batch_lines=200, progress=slow)
"""


def test_sigkill_mid_run_then_resume_is_exact(tmp_path: Path) -> None:
    path, good, bad = _file_with_bad_lines(tmp_path / "usage.log", 12_000)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    state_dir = tmp_path / "ck"
    Ledger(db, sync=True).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(path), db, str(state_dir)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # wait until a few batches are committed, then kill without warning
            files = list(state_dir.glob("*.json")) if state_dir.exists() else []
            state = load_checkpoint(files[0]) if files else None
            if state is not None and state.next_line > 2_000:
                break
            assert proc.poll() is None, "the ingestion ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = load_checkpoint(files[0])
    assert state is not None
    assert not state.complete
    committed = count_rows(db)
    assert committed < good

    resumed = ingest(path, ledger=db, checkpoint_dir=state_dir, batch_lines=200)
    assert resumed.inputs[0].resumed_at_line == state.next_line
    assert count_rows(db) == good
    # lines of a batch committed after the last checkpoint are read again: no row twice
    assert resumed.accepted + committed == good
    records = _rejects(Path(f"{path}.rejects.jsonl"))
    assert [r["line"] for r in records] == [i for i in range(1, 12_001) if i % BAD_EVERY == 0]
    assert len(records) == bad
    _rollups_consistent(db)


# -- the checkpoint's judgement -----------------------------------------------------------------


def test_a_grown_file_continues_and_restart_reads_it_all(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    path = write_lines(tmp_path / "a.log", [own_line(make_event(n)) for n in range(1, 11)])
    assert ingest(path, ledger=db, checkpoint_dir=tmp_path).accepted == 10
    with path.open("ab") as f:
        f.write(b"".join(own_line(make_event(n)) + b"\n" for n in range(11, 16)))
    grown = ingest(path, ledger=db, checkpoint_dir=tmp_path)
    assert (grown.lines, grown.accepted, grown.inputs[0].resumed_at_line) == (5, 5, 11)
    again = ingest(path, ledger=db, checkpoint_dir=tmp_path, resume=False)
    assert (again.lines, again.accepted, again.duplicates) == (15, 0, 15)
    assert again.inputs[0].resumed_at_line is None


def test_a_replaced_file_is_read_from_the_start(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    path = write_lines(tmp_path / "a.log", [own_line(make_event(n)) for n in range(1, 11)])
    ingest(path, ledger=db, checkpoint_dir=tmp_path)
    # log rotation: a new file under the same name, longer than the old one
    path.unlink()
    write_lines(path, [own_line(make_event(n)) for n in range(100, 120)])
    result = ingest(path, ledger=db, checkpoint_dir=tmp_path)
    assert (result.lines, result.accepted, result.inputs[0].resumed_at_line) == (20, 20, None)


def test_a_rewritten_head_is_read_from_the_start(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    path = write_lines(tmp_path / "a.log", [own_line(make_event(n)) for n in range(1, 11)])
    ingest(path, ledger=db, checkpoint_dir=tmp_path)
    with path.open("r+b") as f:  # same inode, same size, other content (copytruncate + refill)
        first = own_line(make_event(50))
        f.write(first[: len(own_line(make_event(1)))])
    result = ingest(path, ledger=db, checkpoint_dir=tmp_path)
    assert result.inputs[0].resumed_at_line is None
    assert result.lines == 10


def test_an_emptied_ledger_is_filled_again_not_skipped(tmp_path: Path) -> None:
    db_file = tmp_path / "l.db"
    db = f"sqlite:///{db_file}"
    path = write_lines(tmp_path / "a.log", [own_line(make_event(n)) for n in range(1, 11)])
    ingest(path, ledger=db, checkpoint_dir=tmp_path)
    for leftover in tmp_path.glob("l.db*"):
        leftover.unlink()  # a new, empty ledger at the same URL
    result = ingest(path, ledger=db, checkpoint_dir=tmp_path)
    assert (result.accepted, result.inputs[0].resumed_at_line) == (10, None)
    assert count_rows(db) == 10


def test_one_checkpoint_per_ledger(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.log", [own_line(make_event(n)) for n in range(1, 6)])
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert ingest(path, ledger=a, checkpoint_dir=tmp_path).accepted == 5
    assert ingest(path, ledger=b, checkpoint_dir=tmp_path).accepted == 5


@pytest.mark.postgres
def test_postgresql_refuses_one_row_and_only_that_line_is_rejected(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    """A row the database refuses is found by splitting the batch, rejected with the
    database's reason, and the rest is written."""
    refuse_user(fresh_pg_url)
    path = write_lines(tmp_path / "refused.log", lines_with_a_refused_user())
    result = ingest(path, ledger=fresh_pg_url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (7, 1)
    assert count_rows(fresh_pg_url) == 7
    [record] = _rejects(Path(f"{path}.rejects.jsonl"))
    assert record["line"] == 5
    assert str(record["reason"]).startswith(REFUSAL)
    _rollups_consistent(fresh_pg_url)


@pytest.mark.postgres
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_a_refused_first_line_of_an_id_gives_the_next_line_its_turn(
    fresh_pg_url: str, tmp_path: Path, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first line of an id is written in a batch; when PostgreSQL refuses it, a
    later line with that id is not a duplicate of anything stored, and is stored."""
    from costledger._ingest._run import WRITER_PROCESS_ENV

    monkeypatch.setenv(WRITER_PROCESS_ENV, writer)
    refuse_user(fresh_pg_url)
    lines = lines_with_a_refused_user()  # the fifth line (evt-000005) is refused
    path = write_lines(tmp_path / "refused.log", [*lines, own_line(make_event(5))])
    result = ingest(path, ledger=fresh_pg_url, checkpoint_dir=tmp_path)
    assert (result.lines, result.accepted, result.duplicates, result.rejected) == (9, 8, 0, 1)
    assert count_rows(fresh_pg_url) == 8
    [record] = _rejects(Path(f"{path}.rejects.jsonl"))
    assert record["line"] == 5
    with Ledger(fresh_pg_url) as ledger:
        stored = ledger.get("evt-000005")
    assert stored is not None
    assert stored.user == "user-2"  # the good line's
    again = ingest(path, ledger=fresh_pg_url, checkpoint_dir=tmp_path, resume=False)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 8, 1)
    _rollups_consistent(fresh_pg_url)


def test_a_shared_rejects_file_keeps_other_inputs_records_on_resume(tmp_path: Path) -> None:
    """Resuming one input drops only its own records of a batch never checkpointed, never
    what other inputs wrote into the same --rejects file since."""
    from costledger._ingest._state import RejectsFile

    shared = tmp_path / "all.rejects.jsonl"
    db = f"sqlite:///{tmp_path / 'l.db'}"
    a, _, bad_a = _file_with_bad_lines(tmp_path / "a.log", 500)
    b = write_lines(tmp_path / "b.log", [b"nope", own_line(make_event(9000)), b"{"])
    done = ingest(a, ledger=db, rejects=shared, checkpoint_dir=tmp_path / "ck")
    assert done.rejected == bad_a == 5
    # as if a's last batch was written to the rejects file but its checkpoint was not saved
    ckpt_file = next((tmp_path / "ck").glob("*.json"))
    ckpt = json.loads(ckpt_file.read_text())
    ckpt.update(complete=False, rejects_size=0)
    ckpt_file.write_text(json.dumps(ckpt))
    assert ingest(b, ledger=db, rejects=shared, checkpoint_dir=tmp_path / "ck").rejected == 2
    RejectsFile(shared).drop_after(0, str(a))  # what resuming a does first
    inputs = [r["input"] for r in _rejects(shared)]
    assert inputs == [str(b), str(b)]


def test_a_last_line_without_newline_then_its_newline_shifts_no_line(tmp_path: Path) -> None:
    """A whole last line with no newline is read; the newline its writer adds later ends
    that line, not a blank one: later lines keep their numbers (rejects, line-based ids)."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    embedding = json.dumps(
        {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8000}}
    ).encode()
    path = tmp_path / "live.log"
    path.write_bytes(own_line(make_event(1)) + b"\n" + embedding)
    first = ingest(path, ledger=db, checkpoint_dir=tmp_path / "ck")
    assert (first.lines, first.accepted, first.inputs[0].incomplete) == (2, 2, 0)
    with path.open("ab") as f:
        f.write(b"\nnot json\n")
    second = ingest(path, ledger=db, checkpoint_dir=tmp_path / "ck")
    assert (second.inputs[0].resumed_at_line, second.inputs[0].blank, second.lines) == (3, 0, 1)
    [record] = _rejects(Path(f"{path}.rejects.jsonl"))
    assert record["line"] == 3
    again = ingest(path, ledger=db, checkpoint_dir=tmp_path / "ck", resume=False)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 2, 1)
    assert count_rows(db) == 2  # the embedding (its id made from its line) is stored once
