"""``Tracker.record`` on bad input keeps its contract (its docstring, docs/tracker.md): it
never raises, and records the call with what can be kept. A value it cannot use is left
out with a warning naming the field and the value, and the note
``costledger.invalid.<field>`` in the event's metadata; before, ``started_at="2024-01-01"``
raised ``AttributeError`` and ``latency_ms="fast"`` a ``TypeError`` not naming the field."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Tracker, Usage
from costledger._ledger import Ledger
from costledger._logging import _reporter
from costledger._pricing import Pricer

# 1,000 input tokens of "m" cost exactly one cent; a price from 2024 on.
PRICES = {"m": {"input": "10", "output": "20"}}
USAGE = Usage(input_tokens=1000)
CENT = Decimal("0.01")


@pytest.fixture(autouse=True)
def _fresh_reporter() -> None:
    _reporter.reset()  # the warnings are rate-limited per process


def _setup(url: str, tmp_path: Path) -> tuple[Tracker, Ledger]:
    ledger = Ledger(url, spool_dir=tmp_path / "spool")
    return Tracker(ledger, Pricer(PRICES, genai_prices=False, litellm=False), log="off"), ledger


@pytest.mark.parametrize("value", ["2024-01-01", date(2024, 1, 1), 1704067200, ["2024"]], ids=repr)
def test_a_started_at_that_is_not_a_datetime_is_left_out_and_named(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, value: Any
) -> None:
    tracker, ledger = _setup(url, tmp_path)
    before = datetime.now(timezone.utc)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        event = tracker.record("m", USAGE, started_at=value, latency_ms=5.0)
    after = datetime.now(timezone.utc)
    assert ledger.flush(10) is True
    [stored] = ledger.events()
    assert stored.id == event.id
    assert before - timedelta(milliseconds=5) <= stored.timestamp <= after
    assert (stored.total_cost, stored.latency_ms) == (CENT, 5.0)
    assert dict(stored.metadata) == {"costledger.invalid.started_at": repr(value)}
    assert (
        f"started_at must be a timezone-aware datetime, got {type(value).__name__} {value!r};"
        " the call is recorded with started_at the time of this record() call"
    ) in caplog.text
    ledger.close(5)


def test_a_naive_started_at_is_read_as_utc_and_the_call_priced(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # before: the naive time reached the pricer, which refuses one: unknown_model, no cost
    tracker, ledger = _setup(url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        event = tracker.record("m", USAGE, started_at=datetime(2024, 5, 1, 12, 30))
    aware = tracker.record(
        "m", USAGE, started_at=datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    )
    assert ledger.flush(10) is True
    stored = {e.id: e for e in ledger.events()}
    noon = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    assert (stored[event.id].timestamp, stored[event.id].total_cost) == (noon, CENT)
    assert (stored[aware.id].timestamp, stored[aware.id].total_cost) == (noon, CENT)
    assert dict(stored[event.id].metadata) == {}
    assert event.id[:13] == aware.id[:13]  # the id's time is the same moment's
    assert (
        "started_at should be timezone-aware, got naive datetime.datetime(2024, 5, 1, 12, 30);"
        " read as UTC"
    ) in caplog.text
    ledger.close(5)


@pytest.mark.parametrize(
    ("value", "stored_as", "noted"),
    [
        ("fast", None, True),
        (True, None, True),
        ([1], None, True),
        (250, 250.0, False),
        (Decimal("12.5"), 12.5, False),
        (12.25, 12.25, False),
    ],
    ids=repr,
)
def test_latency_ms_is_a_number_or_left_out_and_named(
    url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    value: Any,
    stored_as: float | None,
    noted: bool,
) -> None:
    tracker, ledger = _setup(url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        tracker.record("m", USAGE, latency_ms=value)
    assert ledger.flush(10) is True
    [stored] = ledger.events()
    assert (stored.latency_ms, stored.total_cost) == (stored_as, CENT)
    if noted:
        assert dict(stored.metadata) == {"costledger.invalid.latency_ms": repr(value)}
        assert (
            f"latency_ms must be a number of milliseconds, got {type(value).__name__} "
            f"{value!r}; the call is recorded with latency_ms None"
        ) in caplog.text
    else:
        assert dict(stored.metadata) == {}
        assert "latency_ms" not in caplog.text
    ledger.close(5)


def test_an_unknown_status_is_recorded_as_ok_and_named(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker, ledger = _setup(url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        tracker.record("m", USAGE, status="weird")
    assert ledger.flush(10) is True
    [stored] = ledger.events()
    assert (stored.status, stored.total_cost) == ("ok", CENT)
    assert dict(stored.metadata) == {"costledger.invalid.status": "'weird'"}
    assert (
        "status must be ok, error or cancelled, got str 'weird'; the call is recorded with"
        " status 'ok'"
    ) in caplog.text
    ledger.close(5)


@pytest.mark.parametrize(
    ("value", "stored_as"),
    [
        (0.5, Decimal("0.5")),
        (1.35e-05, Decimal("0.0000135")),
        ("0.25", Decimal("0.25")),
        (3, Decimal("3")),
        ("abc", None),
        (Decimal("NaN"), None),
        (float("inf"), None),
        ([1], None),
    ],
    ids=repr,
)
def test_reported_cost_is_exact_money_or_left_out(
    url: str, tmp_path: Path, value: Any, stored_as: Decimal | None
) -> None:
    # before: anything but a finite Decimal made the ledger reject the whole event
    tracker, ledger = _setup(url, tmp_path)
    tracker.record("m", USAGE, reported_cost=value)
    assert ledger.flush(10) is True
    [stored] = ledger.events()
    assert (stored.reported_cost, stored.total_cost) == (stored_as, CENT)
    expected = {} if stored_as is not None else {"costledger.invalid.reported_cost": repr(value)}
    assert dict(stored.metadata) == expected
    assert ledger.stats().rejected == 0
    ledger.close(5)


def test_metadata_and_attribution_that_are_not_mappings_are_left_out(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # before: a list for metadata lost the usage and cost (the salvaged bare event); one
    # for attribution raised AttributeError into the host
    tracker, ledger = _setup(url, tmp_path)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        first = tracker.record("m", USAGE, metadata=["x"])
        second = tracker.record("m", USAGE, attribution=["u-1"])
    assert ledger.flush(10) is True
    stored = {e.id: e for e in ledger.events()}
    assert (stored[first.id].total_cost, dict(stored[first.id].metadata)) == (
        CENT,
        {"costledger.invalid.metadata": "['x']"},
    )
    assert (stored[second.id].total_cost, stored[second.id].user) == (CENT, None)
    assert (
        "metadata must be a mapping, got list ['x']; the call is recorded with metadata none"
        in (caplog.text)
    )
    assert "attribution must be a mapping or an Attribution, got list ['u-1']; left out" in (
        caplog.text
    )
    ledger.close(5)
