"""One event with a non-text value in a text field (``status=["error"]``) is rejected on
its own, to ``rejected-*.jsonl``, on SQLite as on PostgreSQL: the events around it are
stored, the ledger stays healthy, and a spool holding such a line (written by an older
version) is replayed past it instead of failing on it at every start."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger._ledger._store import is_data_error


def _event(event_id: str, **fields: Any) -> UsageEvent:
    return UsageEvent(
        id=event_id,
        model=fields.pop("model", "gpt-4o"),
        usage=Usage(input_tokens=10, output_tokens=5),
        cost=Cost(status="priced", total=Decimal("0.000075")),
        **fields,
    )


def _rejected_ids(spool: Path) -> list[str]:
    return sorted(
        json.loads(line)["id"]
        for path in spool.glob("rejected-*.jsonl")
        for line in path.read_bytes().splitlines()
    )


def _stored(ledger: Ledger) -> dict[str, Decimal | None]:
    return {e.id: e.total_cost for e in ledger.events()}


POISON = [
    ("status", ["error"]),
    ("status", {"a": 1}),
    ("model", ["gpt-4o"]),
    ("response_model", ["gpt-4o"]),
    ("request_id", [1]),
    ("source", ["x"]),
    ("provider", ("openai",)),
    ("user", object()),
]


@pytest.mark.parametrize("mode", ["buffered", "sync", "durable"])
@pytest.mark.parametrize(("field", "value"), POISON, ids=[f for f, _ in POISON])
def test_a_non_text_value_rejects_that_event_alone(
    url: str, tmp_path: Path, mode: str, field: str, value: Any
) -> None:
    spool = tmp_path / "spool"
    ledger = Ledger(url, spool_dir=spool, sync=mode == "sync", durable=mode == "durable")
    ledger.record(_event("bad", **{field: value}))
    good = [f"good-{i}" for i in range(5)]
    for event_id in good:
        ledger.record(_event(event_id))
    assert ledger.flush(10) is True
    stats = ledger.stats()
    assert (stats.inserted, stats.rejected, stats.spooled, stats.healthy) == (5, 1, 0, True)
    assert _stored(ledger) == dict.fromkeys(good, Decimal("0.000075"))
    assert _rejected_ids(spool) == ["bad"]
    ledger.close(5)

    # the next process: nothing left to replay, and it stores its own calls
    again = Ledger(url, spool_dir=spool)
    again.record(_event("next"))
    assert again.flush(10) is True
    assert again.stats().replayed == 0
    assert set(_stored(again)) == {*good, "next"}
    again.close(5)


def test_the_error_names_the_field_and_the_value(
    tmp_path: Path, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costledger._ledger import _core

    monkeypatch.setattr(_core._report, "_last", {})  # the log is rate-limited per process
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}", spool_dir=tmp_path / "spool", sync=True)
    with caplog.at_level("ERROR", logger="costledger.ledger"):
        ledger.record(_event("bad", status=["error"]))
    assert "UsageEvent status must be text or None, got list ['error']" in caplog.text
    ledger.close(5)


def test_a_number_uuid_or_bytes_in_a_text_column_is_stored_as_its_text(url: str) -> None:
    import uuid

    ledger = Ledger(url, sync=True)
    request = uuid.UUID("12345678-1234-5678-1234-567812345678")
    ledger.record(_event("a", request_id=123, user=request, team=b"t\xff", project=1.5))
    [stored] = ledger.events()
    assert (stored.request_id, stored.user, stored.team, stored.project) == (
        "123",
        "12345678-1234-5678-1234-567812345678",
        "t\ufffd",
        "1.5",
    )
    assert ledger.stats().rejected == 0
    ledger.close(5)


# -- a value SQLite cannot bind: a data error, not a database outage --------------------------


def _binding_error() -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELECT ?", ([],))
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("sqlite3 bound a list")


def test_sqlite_binding_error_is_a_data_error_and_other_programming_errors_are_not() -> None:
    # Python 3.11+: ProgrammingError("Error binding parameter 1: type 'list' is not
    # supported"); 3.10: InterfaceError("Error binding parameter 0 - probably unsupported
    # type."). Both are the row's fault.
    assert is_data_error(_binding_error()) is True
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.ProgrammingError) as count:
        conn.execute("SELECT ?", (1, 2))  # a wrong parameter count: our bug, not a row's
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError) as closed:
        conn.execute("SELECT 1")  # a closed connection: not a row's fault either
    assert is_data_error(count.value) is False
    assert is_data_error(closed.value) is False


@pytest.mark.parametrize("mode", ["buffered", "sync", "durable"])
def test_an_unbindable_value_is_rejected_on_sqlite_and_the_rest_stored(
    tmp_path: Path, mode: str
) -> None:
    # An empty list is falsy: the row's text check lets it through, and SQLite's binding
    # refuses it. That refusal used to read as a database outage: every later batch was
    # spooled (0 of 5 stored, healthy=False) and each replay failed on the same line.
    spool = tmp_path / "spool"
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(url, spool_dir=spool, sync=mode == "sync", durable=mode == "durable")
    ledger.record(_event("bad", request_id=[]))
    good = [f"good-{i}" for i in range(5)]
    for event_id in good:
        ledger.record(_event(event_id))
    assert ledger.flush(10) is True
    stats = ledger.stats()
    assert (stats.inserted, stats.rejected, stats.spooled, stats.healthy) == (5, 1, 0, True)
    assert set(_stored(ledger)) == set(good)
    assert _rejected_ids(spool) == ["bad"]
    ledger.close(5)


# -- a spool written by an older version, holding such a line --------------------------------


def _line(event_id: str, **fields: Any) -> str:
    """A spool line as the spool writes it (format 1: one JSON object per line, every
    column, money as decimal text), with ``fields`` as an older version let through."""
    doc: dict[str, Any] = {
        "v": 1,
        "id": event_id,
        "timestamp": "2025-03-01T12:00:00.000000+00:00",
        "source": "api",
        "provider": "openai",
        "model": "gpt-4o",
        "response_model": None,
        "status": "ok",
        "error_type": None,
        "latency_ms": 12.5,
        "request_id": None,
        "trace_id": None,
        "run_id": None,
        "parent_run_id": None,
        "user": None,
        "team": None,
        "project": None,
        "feature": None,
        "tags": [],
        "metadata": {},
        "streamed": False,
        "cache_hit": False,
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "reasoning_tokens": 0,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "pricing_status": "priced",
        "currency": "USD",
        "total_cost": "0.000075",
        "input_cost": "0.000025",
        "cache_read_cost": None,
        "cache_write_cost": None,
        "output_cost": "0.00005",
        "audio_cost": None,
        "pricing_source": None,
        "priced_model": "gpt-4o",
        "priced_provider": "openai",
        "reported_cost": None,
        "price_context": {},
    }
    doc.update(fields)
    return json.dumps(doc, separators=(",", ":")) + "\n"


def test_a_spool_with_a_poison_line_is_replayed_past_it(url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        _line("old-1"),
        _line("old-poison-status", status=["error"]),
        _line("old-2"),
        _line("old-poison-model", model={"name": "gpt-4o"}),
        _line("old-3"),
    ]
    poison = ["old-poison-model", "old-poison-status"]
    if url.startswith("sqlite"):
        # only SQLite refuses to bind it (PostgreSQL stores the JSON text "[]")
        lines.insert(1, _line("old-poison-empty", request_id=[]))
        poison = ["old-poison-empty", *poison]
    segment = spool / f"{time.time_ns()}-{os.getpid()}-abcdef.jsonl"
    segment.write_text("".join(lines))

    ledger = Ledger(url, spool_dir=spool)
    assert ledger.flush(10) is True
    stats = ledger.stats()
    # every line was replayed: three stored, the poison ones rejected
    assert (stats.replayed, stats.inserted, stats.rejected, stats.healthy) == (
        len(lines),
        3,
        len(poison),
        True,
    )
    stored = _stored(ledger)
    assert stored == dict.fromkeys(["old-1", "old-2", "old-3"], Decimal("0.000075"))
    assert not segment.exists()
    assert _rejected_ids(spool) == poison
    ledger.record(_event("new"))
    assert ledger.flush(10) is True
    assert set(_stored(ledger)) == {"old-1", "old-2", "old-3", "new"}
    ledger.close(5)

    # the next start replays nothing: a rejected line is left for a human, never replayed
    again = Ledger(url, spool_dir=spool)
    assert again.flush(10) is True
    assert (again.stats().replayed, again.stats().rejected) == (0, 0)
    again.close(5)
