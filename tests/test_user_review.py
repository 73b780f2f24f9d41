"""What a new user hits first: a provider's usage dict handed to ``record``, a read of a
ledger that is not there, an optional package that is not installed."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Ledger, Tracker, Usage, report, top
from costledger.testing import capture_costs


def test_record_reads_a_providers_usage_mapping() -> None:
    with capture_costs() as costs:
        tracker = Tracker(log="off")
        event = tracker.record("gpt-4o-mini", {"prompt_tokens": 10, "completion_tokens": 5})
    assert event is not None
    assert event.usage == Usage(input_tokens=10, output_tokens=5)
    # 10 x $0.15 + 5 x $0.60 per million
    assert event.cost.total == Decimal("0.0000045")
    assert costs.events == [event]


def test_record_with_unreadable_usage_keeps_the_call_and_says_why() -> None:
    with capture_costs() as costs:
        event = Tracker(log="off").record("gpt-4o-mini", {"bogus": 1})
    assert event is not None
    assert (event.cost.status, dict(event.metadata)) == (
        "not_priced",
        {"costledger.tracking_error": "UsageError"},
    )
    assert costs.events == [event]  # stored, not lost


@pytest.mark.parametrize("read", [report, top])
def test_a_read_of_a_missing_sqlite_ledger_creates_no_file(read: object, tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(FileNotFoundError) as caught:
        read(f"sqlite:///{path}")  # type: ignore[operator]
    assert str(caught.value) == f"no ledger at sqlite:///{path} (file {path} does not exist)"
    assert not path.exists()


def test_a_missing_postgres_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(ImportError) as caught:
        Ledger("postgresql+psycopg://app:secret@db.example/costs", sync=True).flush()
    message = str(caught.value)
    assert message == (
        "a postgresql ledger (postgresql+psycopg://app:***@db.example/costs) needs the "
        "'psycopg' package, which is not installed: pip install 'costledger[postgres]'"
    )


def test_a_missing_redis_client_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from costledger import Budget

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError) as caught:
        Tracker(guards=[Budget("1 USD", "day")], guard_store="redis://:pw@cache:6379/0")
    assert "pip install 'costledger[redis]'" in str(caught.value)
    assert "pw" not in str(caught.value)


def test_a_cache_hit_without_usage_costs_nothing_and_is_not_a_call_without_usage(
    tmp_path: Path,
) -> None:
    """A cache hit is free whether or not it reports usage: priced at 0, not counted in
    ``no_usage`` (whose cost is unknown), and its group's cost is 0.00, not '-'."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(db, sync=True) as ledger:
        tracker = Tracker(ledger=ledger, log="off")
        call = tracker.start(source="api", model="gpt-4o-mini", provider="openai")
        event = tracker.finish(call, cache_hit=True)
    assert event is not None
    assert (event.cost.status, event.cost.total, event.cost.source) == (
        "priced",
        Decimal(0),
        "cache hit",
    )
    (row,) = report(db, by=["model"]).rows
    assert (row.requests, row.no_usage, row.unpriced, row.cost) == (1, 0, 0, Decimal(0))
