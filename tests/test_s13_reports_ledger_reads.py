"""``Ledger.events`` and ``Ledger.summary`` read ``since`` / ``until`` strings and filters
exactly as ``report`` and ``top`` do. Before, ``until="2025-06-30"`` selected June 30th in
``report`` but stopped at its midnight in the ledger's own reads, ``since="7d"`` failed
with ``Invalid isoformat string`` (no argument named) and ``model=5`` with ``'int' object
is not iterable``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from costledger import Cost, Usage, UsageEvent, report, top
from costledger._ledger import Ledger

UTC = timezone.utc


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    now = datetime.now(UTC)
    with Ledger(url, sync=True) as led:
        led.record_many(
            [
                UsageEvent(
                    model="m",
                    usage=Usage(10, 20),
                    cost=Cost(status="priced", total=Decimal(total), currency="USD"),
                    id=eid,
                    timestamp=ts,
                )
                for eid, ts, total in (
                    ("june-29", datetime(2025, 6, 29, 12, tzinfo=UTC), "0.25"),
                    ("june-30", datetime(2025, 6, 30, 12, tzinfo=UTC), "0.5"),
                    ("ten-days-ago", now - timedelta(days=10), "1"),
                    ("yesterday", now - timedelta(days=1), "2"),
                )
            ]
        )
        yield led


def _ids(led: Ledger, **kw: object) -> list[str]:
    return [e.id for e in led.events(**kw)]  # type: ignore[arg-type]


def _summed(led: Ledger, **kw: object) -> tuple[int, Decimal]:
    rows = led.summary(**kw)  # type: ignore[arg-type]
    return sum(r.requests for r in rows), sum((r.cost for r in rows), Decimal(0))


def _reported(led: Ledger, **kw: object) -> tuple[int, Decimal]:
    [total] = report(led, **kw).totals  # type: ignore[arg-type]
    return total.requests, total.cost


def test_a_date_as_text_includes_its_day_everywhere(ledger: Ledger) -> None:
    june = {"since": "2025-06-01", "until": "2025-06-30"}
    assert _ids(ledger, **june) == ["june-29", "june-30"]
    assert _summed(ledger, **june) == (2, Decimal("0.75"))
    assert _reported(ledger, **june) == (2, Decimal("0.75"))
    assert [e.id for e in top(ledger, 10, since="2025-06-01", until="2025-06-30")] == [
        "june-30",
        "june-29",
    ]
    # a date object keeps its meaning: its midnight, until exclusive
    objects = {"since": date(2025, 6, 1), "until": date(2025, 6, 30)}
    assert _ids(ledger, **objects) == ["june-29"]
    assert _summed(ledger, **objects) == (1, Decimal("0.25"))
    assert _reported(ledger, **objects) == (1, Decimal("0.25"))
    # an ISO date-time is the instant
    assert _ids(ledger, until="2025-06-30T12:00:00") == ["june-29"]


def test_durations_and_periods(ledger: Ledger) -> None:
    assert _ids(ledger, since="7d") == ["yesterday"]
    assert _summed(ledger, since="7d") == (1, Decimal(2))
    assert _ids(ledger, since="14d") == ["ten-days-ago", "yesterday"]
    assert _summed(ledger, since="14d", until="7d") == (1, Decimal(1))


def test_bad_bounds_name_the_argument(ledger: Ledger) -> None:
    for read in (ledger.events, ledger.summary):
        with pytest.raises(ValueError, match=r"^since: cannot read 'soon' as a time; use an ISO"):
            read(since="soon")
        with pytest.raises(
            ValueError, match=r"^until must be a date, a datetime or a string, got 0$"
        ):
            read(until=0)  # type: ignore[arg-type]


def test_an_empty_range_selects_nothing(ledger: Ledger) -> None:
    assert _ids(ledger, since="2025-07-01", until="2025-06-01") == []
    assert ledger.summary(since=date(2025, 6, 1), until=date(2025, 6, 1)) == []


@pytest.mark.parametrize("value", [5, b"m", {"m": 1}, [5], "", [""], []])
def test_a_bad_filter_value_names_the_filter(ledger: Ledger, value: Any) -> None:
    message = f"filter 'model' must be a non-empty string or list of them, got {value!r}"
    for read in (ledger.events, ledger.summary, lambda **kw: report(ledger, **kw)):
        with pytest.raises(ValueError) as info:
            read(model=value)
        assert str(info.value) == message


def test_filters_as_report_reads_them(ledger: Ledger) -> None:
    assert _ids(ledger, model=("m", "other"), since="2025-06-30", until="2025-06-30") == ["june-30"]
    assert _summed(ledger, model={"m"}, until="2025-06-29") == (1, Decimal("0.25"))
    with pytest.raises(ValueError, match=r"^unknown filter 'modle'; use any of model, "):
        ledger.summary(modle="m")
