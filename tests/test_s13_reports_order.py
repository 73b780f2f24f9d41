"""Ranking by cost is exact to the last digit: two amounts that differ only past the 28th
significant digit (a ledger amount has up to 38) rank dearest first in ``top`` (every
path: rollup-pruned, one scan, converted), ``report --sort cost`` and ``whatif``. The sort
keys were ``-amount``, which rounds to the default context's 28 digits and made them a
tie, broken by time and id the wrong way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from costledger import Cost, Usage, UsageEvent, report, top, whatif
from costledger._ledger import Ledger

UTC = timezone.utc
NOON = datetime(2025, 6, 1, 12, tzinfo=UTC)
CHEAP = Decimal("12345678901.000000000000000001")
DEAR = Decimal("12345678901.000000000000000002")


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    # the same time, and the cheaper call's id first: a tie would put it first
    with Ledger(url, sync=True) as led:
        led.record_many(
            [
                UsageEvent(
                    model=model,
                    usage=Usage(1, 1),
                    cost=Cost(status="priced", total=total, currency="JPY"),
                    id=eid,
                    timestamp=NOON,
                    team=team,
                )
                for eid, model, team, total in (
                    ("a-cheap", "m-cheap", "x", CHEAP),
                    ("b-dear", "m-dear", "y", DEAR),
                )
            ]
        )
        yield led


def test_top_ranks_exactly(ledger: Ledger) -> None:
    expected = [("b-dear", DEAR), ("a-cheap", CHEAP)]
    # rollup-pruned (whole days), one scan (less than a day), and converted
    assert [(e.id, e.total_cost) for e in top(ledger, 2)] == expected
    assert [(e.id, e.total_cost) for e in top(ledger, 1)] == expected[:1]
    lo, hi = datetime(2025, 6, 1, 11, tzinfo=UTC), "2025-06-01T13:00"
    assert [(e.id, e.total_cost) for e in top(ledger, 2, since=lo, until=hi)] == expected
    assert [e.id for e in top(ledger, 1, since=lo, until=hi)] == ["b-dear"]
    converted = top(ledger, 2, currency="EUR", rates={"JPY": "1"})
    assert [(e.id, e.total_cost) for e in converted] == expected


def test_report_sorts_by_exact_cost(ledger: Ledger) -> None:
    r = report(ledger, "team", sort="cost")
    assert [(row.key, row.cost) for row in r.rows] == [(("y",), DEAR), (("x",), CHEAP)]
    assert r.totals[0].cost == Decimal("24691357802.000000000000000003")


def test_whatif_rows_by_exact_cost(ledger: Ledger) -> None:
    w = whatif(ledger, {"other": {"input": "1", "output": "1"}}, only_book=True)
    assert [(row.model, row.cost_then) for row in w.rows] == [("m-dear", DEAR), ("m-cheap", CHEAP)]
