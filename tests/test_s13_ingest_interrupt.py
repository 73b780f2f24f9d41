"""Ctrl-C during an ingestion: what was committed is printed, then one error line saying how
to go on, exit 130 (it was 130 without a word: typer swallowed the KeyboardInterrupt); the API
raises ``IngestInterrupted``, a ``KeyboardInterrupt`` holding the partial result, and the next
run resumes after it. Real SIGINT, the real CLI, real SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from costledger._ingest import IngestInterrupted, IngestProgress, ingest
from costledger._pricing import Pricer

from .ingest_support import count_rows, pricer

__all__ = ["pricer"]  # fixtures

COSTLEDGER = Path(sys.executable).with_name("costledger")
# gpt-4o-mini, 10 input and 5 output tokens: 10 * $0.15/M + 5 * $0.60/M
_CALL_COST = Decimal("0.0000045")
_INTERRUPTED = (
    "error: interrupted: every batch committed before stays; run the same command again to resume"
)


def _lines(first: int, last: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "id": f"chatcmpl-s13int-{n}",
                "object": "chat.completion",
                "created": 1748779200 + n,
                "model": "gpt-4o-mini",
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                "pad": "x" * 1000,  # under 1,000 lines a read: several batches
            }
        )
        + b"\n"
        for n in range(first, last)
    )


def test_ctrl_c_raises_ingest_interrupted_and_the_next_run_resumes(
    tmp_path: Path, pricer: Pricer
) -> None:
    log = tmp_path / "usage.jsonl"
    log.write_bytes(_lines(0, 5000))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"

    def interrupt(p: IngestProgress) -> None:
        if p.committed and p.accepted:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, once a batch is committed

    with pytest.raises(IngestInterrupted) as caught:
        ingest(
            log, ledger=url, pricer=pricer, checkpoint_dir=ck, batch_lines=500, progress=interrupt
        )

    assert isinstance(caught.value, KeyboardInterrupt)
    partial = caught.value.result
    done = partial.accepted
    # the batch in flight at Ctrl-C was written: it is counted, and checkpointed
    assert (count_rows(url), partial.inputs[0].error) == (done, None)
    assert 0 < done < 5000
    assert partial.costs == {"USD": done * _CALL_COST}

    rest = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, batch_lines=500)
    assert rest.inputs[0].resumed_at_line == done + 1
    assert (rest.accepted, rest.duplicates, rest.lines) == (5000 - done, 0, 5000 - done)
    assert count_rows(url) == 5000


def test_ctrl_c_in_the_cli_prints_the_partial_summary_and_one_error_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    child = subprocess.Popen(
        [str(COSTLEDGER), "ingest", "-", "--db", db, "--batch-size", "2000", "-f", "json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert child.stdin is not None
    child.stdin.write(_lines(0, 4000))  # 4.5 MB; the pipe stays open: the run waits for more
    child.stdin.flush()
    deadline, last, stable_since = time.monotonic() + 120, -1, time.monotonic()
    while time.monotonic() < deadline:
        rows = count_rows(db) if (tmp_path / "l.db").exists() else 0
        if rows != last:
            last, stable_since = rows, time.monotonic()
        elif rows and time.monotonic() - stable_since > 1.5:
            break  # every batch read so far committed, and the run waits for input
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)

    assert child.returncode == 130
    assert err.decode().strip().splitlines()[-1] == _INTERRUPTED
    summary = orjson.loads(out)
    assert summary["accepted"] == count_rows(db) == last
    assert 0 < last < 4000
    assert Decimal(summary["costs"]["USD"]) == last * _CALL_COST


@pytest.mark.postgres
def test_ctrl_c_in_any_command_says_interrupted(pg_url: str) -> None:
    """Typer turned a command's KeyboardInterrupt into exit 130 before costledger's handler
    could say a word: ``costledger export`` (here waiting for a table lock) ended silently."""
    import sqlalchemy as sa

    from costledger._ledger import Ledger
    from costledger._ledger._engine import resolve_url

    with Ledger(pg_url, sync=True) as ledger:
        ledger._core.store.ensure_schema()
    engine = sa.create_engine(resolve_url(pg_url))
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql("LOCK TABLE costledger_events IN ACCESS EXCLUSIVE MODE")
            child = subprocess.Popen(
                [str(COSTLEDGER), "export", "--db", pg_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 60
            with engine.connect() as watcher:
                while not watcher.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock'"
                ).scalar_one():
                    assert time.monotonic() < deadline, "export never waited for the lock"
                    watcher.rollback()  # pg_stat_activity is a snapshot per transaction
                    time.sleep(0.05)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=60)
            holder.rollback()
    finally:
        engine.dispose()
    assert (child.returncode, err.decode(), out.decode()) == (130, "error: interrupted\n", "")
