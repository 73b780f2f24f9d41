"""The writer process of a big ingestion (``_ingest._sink``): the same ledger, counts,
rejects and errors as the in-process writer thread."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from costledger._ingest import IngestError, IngestProgress, _run, ingest
from costledger._ledger import Ledger
from costledger._ledger._engine import resolve_url
from costledger._ledger._rollups import rebuild_rollups

from .ingest_support import (
    LITELLM_PAYLOADS,
    REFUSAL,
    count_rows,
    lines_with_a_refused_user,
    make_event,
    own_line,
    refuse_user,
    rich_events,
    write_lines,
)

_RESPONSE = {
    "id": "chatcmpl-raw-1",
    "object": "chat.completion",
    "created": 1748779200,
    "model": "gpt-4o-mini-2024-07-18",
    "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
}


def _mixed_lines() -> list[bytes]:
    """Every format, a duplicate id, lines that are not JSON or not usage."""
    lines = [own_line(make_event(n, id=f"evt-{n:05d}")) for n in range(1, 400)]
    lines += [own_line(e) for e in rich_events()]
    lines += LITELLM_PAYLOADS.read_bytes().splitlines()
    lines.append(orjson.dumps(_RESPONSE))
    lines.append(lines[3])  # the same event again
    lines += [b'{"broken": ', b"[1, 2]", b'{"hello": "world"}']
    return lines


def _table(url: str, table: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2")]
    finally:
        engine.dispose()


def _tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            names = [n for n in sa.inspect(conn).get_table_names() if n.startswith("costledger_")]
    finally:
        engine.dispose()
    return {name: _table(url, name) for name in names if "alembic" not in name}


def _summary(result: Any) -> tuple[Any, ...]:
    return (
        result.lines,
        result.accepted,
        result.duplicates,
        result.rejected,
        result.unpriced,
        result.costs,
        [r.formats for r in result.inputs],
    )


def test_the_writer_process_writes_what_the_thread_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_lines(tmp_path / "mixed.log", _mixed_lines())
    by_thread, by_process = f"sqlite:///{tmp_path / 't.db'}", f"sqlite:///{tmp_path / 'p.db'}"
    monkeypatch.setenv(_run.WRITER_PROCESS_ENV, "thread")
    threaded = ingest(path, ledger=by_thread, checkpoint_dir=tmp_path / "t", batch_lines=100)
    monkeypatch.setenv(_run.WRITER_PROCESS_ENV, "process")
    processed = ingest(path, ledger=by_process, checkpoint_dir=tmp_path / "p", batch_lines=100)

    assert _summary(processed) == _summary(threaded)
    assert (processed.accepted, processed.duplicates, processed.rejected) == (
        threaded.lines - 4,
        1,
        3,
    )
    assert _tables(by_process) == _tables(by_thread)
    assert count_rows(by_process) == processed.accepted

    again = ingest(path, ledger=by_process, checkpoint_dir=tmp_path / "p", resume=False)
    assert (again.accepted, again.duplicates) == (0, processed.accepted + 1)
    with Ledger(by_process, sync=True) as ledger:  # rollups equal a recomputation
        kept = ledger.summary(by=["day", "model", "user"])
        rebuild_rollups(ledger)
        assert ledger.summary(by=["day", "model", "user"]) == kept


def test_a_failing_writer_process_names_the_cause_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_run.WRITER_PROCESS_ENV, "process")
    lines = [own_line(make_event(n, id=f"evt-{n:05d}")) for n in range(1, 2001)]
    path = write_lines(tmp_path / "usage.log", lines)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    broken = False

    def break_database(p: IngestProgress) -> None:
        nonlocal broken
        if p.committed and p.lines and not broken:
            broken = True
            engine = sa.create_engine(resolve_url(url))
            with engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE costledger_events RENAME TO away")
            engine.dispose()

    with pytest.raises(IngestError) as failure:
        ingest(path, ledger=url, checkpoint_dir=tmp_path, batch_lines=200, progress=break_database)
    message = str(failure.value)
    assert "could not write to the ledger" in message
    assert "OperationalError: no such table: costledger_events" in message
    first = failure.value.result.accepted
    assert 0 < first < 2000

    engine = sa.create_engine(resolve_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE away RENAME TO costledger_events")
    engine.dispose()
    assert count_rows(url) == first
    resumed = ingest(path, ledger=url, checkpoint_dir=tmp_path, batch_lines=200)
    assert (resumed.accepted, resumed.duplicates) == (2000 - first, 0)
    assert count_rows(url) == 2000


@pytest.mark.postgres
def test_a_row_postgresql_refuses_is_rejected_with_the_reason_from_the_process(
    fresh_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_run.WRITER_PROCESS_ENV, "process")
    refuse_user(fresh_pg_url)
    path = write_lines(tmp_path / "refused.log", lines_with_a_refused_user())
    result = ingest(path, ledger=fresh_pg_url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (7, 1)
    assert count_rows(fresh_pg_url) == 7
    [record] = [json.loads(x) for x in Path(f"{path}.rejects.jsonl").read_bytes().splitlines()]
    assert record["line"] == 5
    # the driver's own exception type and message, as the in-process writer words it
    assert record["reason"].startswith(REFUSAL)


def test_which_writer_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = write_lines(tmp_path / "small.log", [own_line(make_event(1))])
    monkeypatch.delenv(_run.WRITER_PROCESS_ENV, raising=False)
    assert not _run._wants_writer_process([small])
    monkeypatch.setattr(_run, "WRITER_PROCESS_MIN_BYTES", small.stat().st_size)
    assert _run._wants_writer_process([small]) is ((os.cpu_count() or 1) >= 2)
    assert not _run._wants_writer_process(["-"])  # stdin has no size to judge by
    monkeypatch.setenv(_run.WRITER_PROCESS_ENV, "thread")
    assert not _run._wants_writer_process([small])
    monkeypatch.setenv(_run.WRITER_PROCESS_ENV, "process")
    assert _run._wants_writer_process(["-"])


def test_the_url_reaches_the_writer_process_off_its_command_line(tmp_path: Path) -> None:
    """A PostgreSQL URL may hold a password: it is sent over the pipe, not shown by ``ps``."""
    from costledger._ingest._convert import Converter
    from costledger._ingest._sink import SinkProcess
    from costledger._pricing import Pricer

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    line = own_line(make_event(1, id="evt-1"))
    row = Converter(Pricer()).convert(orjson.loads(line), line, 1)
    sink = SinkProcess(url)
    try:
        assert not any("ledger.db" in str(arg) for arg in sink.process.args)
        assert sink.write([row]) == ({"evt-1"}, [])
        assert sink.write([row]) == (set(), [])  # idempotent
    finally:
        sink.close()
    assert sink.process.returncode == 0
    assert count_rows(url) == 1


def test_no_writer_process_to_start_means_the_thread_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedding host whose ``sys.executable`` cannot be run still ingests."""
    monkeypatch.setenv(_run.WRITER_PROCESS_ENV, "process")
    monkeypatch.setattr(_run.sys, "executable", str(tmp_path / "no-such-python"))
    lines = [own_line(make_event(n, id=f"evt-{n}")) for n in range(1, 6)]
    path = write_lines(tmp_path / "usage.log", lines)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert ingest(path, ledger=url, checkpoint_dir=tmp_path).accepted == 5
    assert count_rows(url) == 5
