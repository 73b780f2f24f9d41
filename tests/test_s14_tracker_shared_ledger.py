"""Trackers made from one database URL (or none: the default) share one Ledger.

A Tracker per request, or two Trackers on one SQLite file, used to build a Ledger each:
a writer thread and a connection pool per Tracker, and two writers on one SQLite file
waiting on each other's locks.
"""

from __future__ import annotations

import gc
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Tracker, Usage, drain_deferred
from costledger._tracker import _url_ledgers

# gpt-4o-mini: $0.15 / MTok input, $0.60 output (genai-prices): 1000 in, 100 out
GPT4O_MINI_1000_100 = Decimal("0.00021")


def _rows(path: Path) -> list[tuple[Decimal, str | None]]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("select total_cost, team from costledger_events order by team")
        return [(Decimal(cost), team) for cost, team in rows]
    finally:
        con.close()


def test_trackers_given_one_url_share_its_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    first = Tracker(url, log="off", team="a")
    second = Tracker(url, log="off", team="b")
    assert first.ledger is second.ledger
    first.record("gpt-4o-mini", Usage(1000, 100))
    second.record("gpt-4o-mini", Usage(1000, 100))
    first.ledger.flush()  # type: ignore[attr-defined]
    assert _rows(tmp_path / "shared.db") == [
        (GPT4O_MINI_1000_100, "a"),
        (GPT4O_MINI_1000_100, "b"),
    ]
    other = Tracker(f"sqlite:///{tmp_path}/other.db", log="off")
    assert other.ledger is not first.ledger


def test_a_closed_shared_ledger_is_not_handed_out_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/closed.db"
    first = Tracker(url, log="off", team="a")
    closed = first.ledger
    closed.close()  # type: ignore[attr-defined]
    second = Tracker(url, log="off", team="b")
    assert second.ledger is not closed
    assert first.ledger is second.ledger  # the first one's records go there too
    second.record("gpt-4o-mini", Usage(1000, 100))
    second.ledger.flush()  # type: ignore[attr-defined]
    assert _rows(tmp_path / "closed.db") == [(GPT4O_MINI_1000_100, "b")]


def test_a_ledger_no_tracker_uses_is_let_go(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/weak.db"
    tracker = Tracker(url, log="off")
    tracker.record("gpt-4o-mini", Usage(1000, 100))
    key = next(k for k in _url_ledgers if k.endswith("weak.db"))
    del tracker
    gc.collect()
    assert key not in _url_ledgers
    drain_deferred()  # a collected ledger's close (its flush) is queued behind the worker
    assert _rows(tmp_path / "weak.db") == [(GPT4O_MINI_1000_100, None)]


def test_in_memory_sqlite_urls_are_a_database_each() -> None:
    first = Tracker("sqlite://", log="off")
    second = Tracker("sqlite://", log="off")
    assert first.ledger is not second.ledger


def test_trackers_without_a_ledger_share_the_default_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSTLEDGER_DATABASE_URL", f"sqlite:///{tmp_path}/default.db")
    first = Tracker(log="off", team="a")
    second = Tracker(log="off", team="b")
    assert first.ledger is second.ledger
    first.record("gpt-4o-mini", Usage(1000, 100))
    second.record("gpt-4o-mini", Usage(1000, 100))
    second.ledger.flush()  # type: ignore[attr-defined]
    assert _rows(tmp_path / "default.db") == [
        (GPT4O_MINI_1000_100, "a"),
        (GPT4O_MINI_1000_100, "b"),
    ]


def test_a_relative_sqlite_path_is_the_file_of_the_directory_it_was_given_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = Tracker("sqlite:///costs.db", log="off", team="a")
    first.record("gpt-4o-mini", Usage(1000, 100))
    monkeypatch.chdir(tmp_path / "b")
    second = Tracker("sqlite:///costs.db", log="off", team="b")
    assert second.ledger is not first.ledger
    second.record("gpt-4o-mini", Usage(1000, 100))
    first.ledger.flush()  # type: ignore[attr-defined]
    second.ledger.flush()  # type: ignore[attr-defined]
    assert _rows(tmp_path / "a" / "costs.db") == [(GPT4O_MINI_1000_100, "a")]
    assert _rows(tmp_path / "b" / "costs.db") == [(GPT4O_MINI_1000_100, "b")]


def test_a_tracker_whose_shared_ledger_another_closed_records_to_an_open_one(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/request.db"
    one = Tracker(url, log="off", team="a")
    other = Tracker(url, log="off", team="b")
    one.ledger.close()  # type: ignore[attr-defined]  # the end of one request
    other.record("gpt-4o-mini", Usage(1000, 100))
    other.ledger.flush()  # type: ignore[attr-defined]
    assert _rows(tmp_path / "request.db") == [(GPT4O_MINI_1000_100, "b")]
    assert not list((tmp_path / "request.db.spool").glob("*.jsonl"))


def test_a_replaced_shared_ledger_stays_in_the_directory_first_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    tracker = Tracker("sqlite:///costs.db", log="off", team="a")
    tracker.ledger.close()  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path / "b")
    tracker.record("gpt-4o-mini", Usage(1000, 100))  # a new ledger: still a/costs.db
    tracker.ledger.flush()  # type: ignore[attr-defined]
    assert _rows(tmp_path / "a" / "costs.db") == [(GPT4O_MINI_1000_100, "a")]
    assert not (tmp_path / "b" / "costs.db").exists()
