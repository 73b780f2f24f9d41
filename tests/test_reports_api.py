"""The reports API on real SQLite files and a real PostgreSQL database: reports equal a
direct recomputation to the last decimal, what-if on a hand-checked history, re-pricing
through the rollups, exports that round-trip exactly, time bounds, price lists."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import InMemoryLedger, Ledger
from costledger._ledger._query import summarize_events
from costledger._reports import (
    EXPORT_COLUMNS,
    diff_prices,
    export,
    list_prices,
    parse_by,
    parse_when,
    report,
    reprice,
    resolve_bounds,
    show_price,
    top,
    whatif,
)
from costledger._reports._when import Bound
from costledger._schema import event_from_line

from .test_reports_helpers import (
    UTC,
    expected_summary,
    history,
    summary_dict,
)


@pytest.fixture
def loaded(url: str) -> Iterator[tuple[Ledger, list[UsageEvent]]]:
    events = history(600, seed=21)
    with Ledger(url) as ledger:
        ledger.record_many(events)
        assert ledger.flush(timeout=60)
        yield ledger, events


def _share(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (part / whole).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)


# -- report -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "by",
    [(), ("day",), ("model",), ("month", "team"), ("tag",), ("user", "feature"), ("week", "tag")],
    ids=lambda b: "+".join(b) or "total",
)
def test_report_equals_direct_recomputation(
    loaded: tuple[Ledger, list[UsageEvent]], by: tuple[str, ...]
) -> None:
    ledger, events = loaded
    got = report(ledger, by, sort="key")
    store = ledger._core.store
    direct = summarize_events(store, by=by, since=None, until=None, filters={})
    want = expected_summary(events, by)
    assert summary_dict(direct) == want
    rows = {(*r.key, r.currency): r for r in got.rows}
    assert set(rows) == set(want)
    totals = {t.currency: t for t in got.totals}
    whole = expected_summary(events, ())
    for key, figures in want.items():
        row = rows[key]
        assert row.requests == figures["requests"]
        assert row.unpriced == figures["unpriced"]
        assert row.no_usage == figures["no_usage"]
        assert row.cache_write_tokens == figures["cache_write_tokens"]
        assert row.cost == figures["cost"]
        assert row.share == _share(figures["cost"], whole[(key[-1],)]["cost"])
    for (currency,), figures in whole.items():
        t = totals[currency]
        assert (t.requests, t.errors, t.cost) == (
            figures["requests"],
            figures["errors"],
            figures["cost"],
        )
        assert t.share == Decimal("1.000000")
    # the same report from the events table alone is identical
    assert report(ledger, by, sort="key", use_rollups=False) == got


def test_report_filters_bounds_sort_and_limit(loaded: tuple[Ledger, list[UsageEvent]]) -> None:
    ledger, events = loaded
    since = datetime(2025, 2, 1, 6, 30, tzinfo=UTC)
    got = report(ledger, "team", since=since, until="2025-02-20", user=["u1", "u3"], sort="cost")
    chosen = [
        e
        for e in events
        if since <= e.timestamp < datetime(2025, 2, 21, tzinfo=UTC) and e.user in ("u1", "u3")
    ]
    want = expected_summary(chosen, ("team",))
    assert {(*r.key, r.currency): r.cost for r in got.rows} == {
        k: v["cost"] for k, v in want.items()
    }
    usd = [r for r in got.rows if r.currency == "USD"]
    assert [r.cost for r in usd] == sorted((r.cost for r in usd), reverse=True)
    assert got.filters == {"user": ("u1", "u3")}
    assert got.until == datetime(2025, 2, 21, tzinfo=UTC)  # a date as text includes its day
    short = report(ledger, "user", limit=2)
    assert len(short.rows) == 2
    assert short.truncated == len(report(ledger, "user").rows) - 2
    assert short.totals == report(ledger, "user").totals


def test_report_by_tag_counts_each_event_once_in_the_totals(tmp_path: Path) -> None:
    events = [
        UsageEvent(
            model="m",
            usage=Usage(10, 1),
            cost=Cost(status="priced", total=Decimal(amount)),
            tags=tags,
            timestamp=datetime(2025, 3, 1, tzinfo=UTC),
        )
        for amount, tags in (("1.5", ("a", "b")), ("0.25", ("a",)), ("2", ()))
    ]
    with InMemoryLedger() as ledger:
        ledger.record_many(events)
        got = report(ledger, "tag", sort="key")
    assert [(r.group["tag"], r.requests, r.cost, r.share) for r in got.rows] == [
        ("a", 2, Decimal("1.75"), Decimal("0.466667")),
        ("b", 1, Decimal("1.5"), Decimal("0.4")),
        (None, 1, Decimal("2"), Decimal("0.533333")),
    ]
    ((total),) = got.totals
    assert (total.requests, total.cost) == (3, Decimal("3.75"))


def test_report_rows_as_json_objects(loaded: tuple[Ledger, list[UsageEvent]]) -> None:
    ledger, _ = loaded
    rows = report(ledger, "day,model").as_dicts()
    first = rows[0]
    assert list(first)[:3] == ["day", "model", "currency"]
    assert isinstance(first["cost"], str)
    assert Decimal(first["cost"]) >= 0
    assert date.fromisoformat(first["day"])
    json.dumps(rows)  # JSON-ready as it is


def test_parse_by() -> None:
    assert parse_by("day, Model") == ("day", "model")
    assert parse_by(["team"]) == ("team",)
    assert parse_by("") == ()
    with pytest.raises(ValueError, match="'colour'"):
        parse_by("day,colour")
    with pytest.raises(ValueError, match="repeat"):
        parse_by("day,day")


def test_report_refuses_bad_arguments(tmp_path: Path) -> None:
    with InMemoryLedger() as ledger:
        with pytest.raises(ValueError, match="unknown filter 'colour'"):
            report(ledger, colour="red")
        with pytest.raises(ValueError, match="'team'"):
            report(ledger, team=[""])
        with pytest.raises(ValueError, match="sort"):
            report(ledger, sort="size")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="since"):
            report(ledger, since="2025-02-02", until="2025-02-01T00:00")


# -- time bounds ----------------------------------------------------------------------------------

NOW = datetime(2025, 1, 15, 13, 45, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("today", datetime(2025, 1, 15), datetime(2025, 1, 16)),
        ("yesterday", datetime(2025, 1, 14), datetime(2025, 1, 15)),
        ("this-week", datetime(2025, 1, 13), datetime(2025, 1, 20)),
        ("last-week", datetime(2025, 1, 6), datetime(2025, 1, 13)),
        ("this-month", datetime(2025, 1, 1), datetime(2025, 2, 1)),
        ("last-month", datetime(2024, 12, 1), datetime(2025, 1, 1)),
        ("this-year", datetime(2025, 1, 1), datetime(2026, 1, 1)),
        ("last_year", datetime(2024, 1, 1), datetime(2025, 1, 1)),
        ("7d", datetime(2025, 1, 8, 13, 45), datetime(2025, 1, 8, 13, 45)),
        ("24h", datetime(2025, 1, 14, 13, 45), datetime(2025, 1, 14, 13, 45)),
        ("30m", datetime(2025, 1, 15, 13, 15), datetime(2025, 1, 15, 13, 15)),
        ("2w", datetime(2025, 1, 1, 13, 45), datetime(2025, 1, 1, 13, 45)),
        ("2025-01-31", datetime(2025, 1, 31), datetime(2025, 2, 1)),
        ("2025-01-31T12:00", datetime(2025, 1, 31, 12), datetime(2025, 1, 31, 12)),
        ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12), datetime(2025, 1, 31, 12)),
        ("2025-01-31T14:00+02:00", datetime(2025, 1, 31, 12), datetime(2025, 1, 31, 12)),
        ("now", datetime(2025, 1, 15, 13, 45), datetime(2025, 1, 15, 13, 45)),
    ],
)
def test_parse_when(text: str, since: datetime, until: datetime) -> None:
    assert parse_when(text, "since", now=NOW) == since.replace(tzinfo=UTC)
    assert parse_when(text, "until", now=NOW) == until.replace(tzinfo=UTC)


def test_parse_when_from_python_values_keeps_the_ledger_meaning() -> None:
    assert parse_when(date(2025, 1, 31), "until") == datetime(2025, 1, 31, tzinfo=UTC)
    naive = datetime(2025, 1, 31, 12)
    assert parse_when(naive) == naive.replace(tzinfo=UTC)
    # last month from January is December of the year before; from March, February
    march = datetime(2024, 3, 31, 23, 59, tzinfo=UTC)
    assert parse_when("last-month", "since", now=march) == datetime(2024, 2, 1, tzinfo=UTC)
    assert parse_when("this-month", "until", now=march) == datetime(2024, 4, 1, tzinfo=UTC)
    assert parse_when("this-month", "until", now=datetime(2024, 12, 5, tzinfo=UTC)) == datetime(
        2025, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize("bad", ["soon", "7 days", "2025-13-01", "", "d7", "-3d"])
def test_parse_when_names_the_field_and_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="until: cannot read") as info:
        parse_when(bad, "until", now=NOW)
    assert repr(bad) in str(info.value)
    assert "this-month" in str(info.value)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="date.fromisoformat reads basic forms")
@pytest.mark.parametrize("text", ["20250131", "2025-W05-5", "2025W055"])
def test_every_iso_form_of_a_date_is_the_whole_day(text: str) -> None:
    assert parse_when(text, "since", now=NOW) == datetime(2025, 1, 31, tzinfo=UTC)
    assert parse_when(text, "until", now=NOW) == datetime(2025, 2, 1, tzinfo=UTC)
    # a time of day in the basic form is still the exact instant
    assert parse_when(text + "T1200", "until", now=NOW) == datetime(2025, 1, 31, 12, tzinfo=UTC)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="date.fromisoformat reads basic forms")
def test_until_a_basic_iso_date_reports_its_whole_last_day(url: str) -> None:
    late = UsageEvent(
        model="m",
        usage=Usage(3, 2),
        cost=Cost(status="priced", total=Decimal("0.000000000000000007")),
        timestamp=datetime(2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    with Ledger(url, sync=True) as ledger:
        ledger.record(late)
        for until in ("2025-01-31", "20250131", "2025-W05-5"):
            (total,) = report(ledger, since="20250131", until=until).totals
            assert (total.requests, total.cost) == (1, Decimal("0.000000000000000007")), until


@pytest.mark.parametrize(
    ("text", "bound", "why"),
    [
        ("99999999999d", "since", "'99999999999d' is out of range"),
        ("999999999w", "until", "'999999999w' is out of range"),
        ("0001-01-01T00:00+01:00", "since", "'0001-01-01T00:00+01:00' is out of range"),
        ("9999-12-31", "until", "'9999-12-31' is out of range"),  # its day ends in 10000
    ],
)
def test_a_time_beyond_the_years_1_to_9999_is_a_value_error(
    text: str, bound: Bound, why: str
) -> None:
    with pytest.raises(ValueError) as info:
        parse_when(text, bound, now=NOW)
    hint = " (a date as an upper bound ends at the next midnight)" if bound == "until" else ""
    assert str(info.value) == (
        f"{bound}: {why}; a time must fall within the years 1 to 9999 UTC{hint}"
    )
    # the last representable day as a lower bound, or its last instant, read fine
    assert parse_when("9999-12-31", "since") == datetime(9999, 12, 31, tzinfo=UTC)
    assert parse_when("9999-12-31T23:59:59.999999Z", "until") == datetime.max.replace(tzinfo=UTC)


def test_bounds_in_the_last_day_and_month_there_is_report_nothing(url: str) -> None:
    e = UsageEvent(
        model="m",
        usage=Usage(3, 2),
        cost=Cost(status="priced", total=Decimal("1.25")),
        timestamp=datetime(2025, 1, 31, 12, tzinfo=UTC),
    )
    with Ledger(url, sync=True) as ledger:
        ledger.record(e)
        for since in ("9999-12-31T01:00Z", "9999-12-31", "9999-12-02T01:00Z", "9999-11-30T01:00Z"):
            for by in ((), ("month",), ("day",)):
                r = report(ledger, by=by, since=since)
                assert (r.rows, r.totals) == ((), ()), (since, by)
        (total,) = report(ledger, until="9999-12-31T23:00Z", by="month").totals
        assert (total.requests, total.cost) == (1, Decimal("1.25"))


def test_resolve_bounds_orders_them() -> None:
    lo, hi = resolve_bounds("last-month", "last-month", now=NOW)
    assert (lo, hi) == (datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="must be before"):
        resolve_bounds("today", "yesterday", now=NOW)


# -- top ---------------------------------------------------------------------------------------


def test_top_orders_exactly_where_floats_cannot(url: str) -> None:
    # all three are the same binary float; only exact arithmetic can order them
    amounts = ["0.100000000000000001", "0.100000000000000003", "0.100000000000000002"]
    events = [
        UsageEvent(
            model="m",
            usage=Usage(10, 1),
            cost=Cost(status="priced", total=Decimal(a)),
            timestamp=datetime(2025, 3, 1, i, tzinfo=UTC),
            team="t" if i else "other",
        )
        for i, a in enumerate(amounts)
    ]
    events.append(UsageEvent(model="x", usage=Usage(5, 5), cost=Cost.unknown("x")))
    events.append(
        UsageEvent(model="m", usage=Usage(1, 1), cost=Cost(status="priced", total=Decimal("7")))
    )
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(events)
        found = top(ledger, 3)
        assert [e.total_cost for e in found] == [
            Decimal("7"),
            Decimal("0.100000000000000003"),
            Decimal("0.100000000000000002"),
        ]
        assert [str(e.total_cost) for e in top(ledger, 10, team="t")] == [
            "0.100000000000000003",
            "0.100000000000000002",
        ]
        assert len(top(ledger, 10)) == 4  # the unpriced call is not ranked
        window = top(ledger, 2, since="2025-03-01T01:00", until="2025-03-01T02:00")
        assert [e.id for e in window] == [events[1].id]
        with pytest.raises(ValueError, match="n must be"):
            top(ledger, 0)


# amounts that tie, tie only in exact arithmetic, tie as Decimals written with other
# exponents, are zero (two ways) or negative (a refund); unpriced calls are not ranked
TOP_AMOUNTS = (
    "0.5",
    "0.50",
    "0.500000",
    "0.100000000000000001",
    "0.100000000000000002",
    "0.1",
    "0",
    "0.000",
    "-0.25",
    "-0.250",
    "3",
    "2.999999999999999999",
    "0.000000000000000001",
    "12345678.000000000000000001",
    "12345678",
)
TOP_T0 = datetime(2025, 1, 27, tzinfo=UTC)


def top_history(n: int, seed: int) -> list[UsageEvent]:
    """Calls over 40 days; many share a timestamp (ties on cost and time: the id decides)."""
    import random

    rng = random.Random(seed)
    events = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.75:
            amount = rng.choice(TOP_AMOUNTS)
            if rng.random() < 0.5:  # and a spread of plain ones
                amount = str(Decimal(rng.randrange(0, 10**6)) * Decimal("1E-7"))
            cost = Cost(
                status="priced", total=Decimal(amount), currency=rng.choice(["USD"] * 4 + ["EUR"])
            )
        elif roll < 0.9:
            cost = Cost.unknown("m")
        else:
            cost = Cost(status="not_priced")
        ts = TOP_T0 + timedelta(hours=rng.randrange(0, 40 * 24), minutes=rng.choice([0, 0, 7]))
        events.append(
            UsageEvent(
                id=f"ev-{rng.randrange(10**6):06d}-{i:05d}",
                model=rng.choice(["gpt-4o", "claude-sonnet-4", "m"]),
                response_model=rng.choice([None, "gpt-4o-2024"]),
                usage=Usage(10, 1),
                cost=cost,
                timestamp=ts,
                status=rng.choice(["ok", "ok", "error"]),
                user=rng.choice(["u1", "u2", "u3", None]),
                team=rng.choice(["search", "chat", None]),
                project=rng.choice(["p1", "p2", None]),
                feature=rng.choice(["f1", "f2", None]),
                tags=tuple(rng.sample(["a", "b", "c"], rng.randrange(0, 3))),
            )
        )
    return events


def expected_top(
    events: list[UsageEvent],
    n: int,
    since: datetime | None = None,
    until: datetime | None = None,
    **filters: str | list[str],
) -> list[tuple[str, Decimal]]:
    """Ordered by exact cost, ties by time, then id; computed from the events themselves.
    Amounts in two currencies are never compared: each currency's own ``n`` best, currency
    after currency (alphabetically)."""

    def wanted(e: UsageEvent) -> bool:
        if e.cost.total is None:
            return False
        if (since is not None and e.timestamp < since) or (
            until is not None and e.timestamp >= until
        ):
            return False
        for name, value in filters.items():
            values = [value] if isinstance(value, str) else value
            if name == "model":
                if e.model not in values and e.response_model not in values:
                    return False
            elif name == "tag":
                if not set(values) & set(e.tags):
                    return False
            elif getattr(e, name) not in values:
                return False
        return True

    out: list[tuple[str, Decimal]] = []
    for currency in sorted({e.cost.currency for e in events if wanted(e)}):
        chosen = sorted(
            (e for e in events if wanted(e) and e.cost.currency == currency),
            key=lambda e: (-(e.cost.total or Decimal(0)), e.timestamp, e.id),
        )
        out += [(e.id, e.cost.total or Decimal(0)) for e in chosen[:n]]
    return out


def _ranked(found: list[Any]) -> list[tuple[str, Decimal]]:
    return [(e.id, e.total_cost) for e in found]


TOP_CASES: list[tuple[int, datetime | None, datetime | None, dict[str, Any]]] = [
    (1, None, None, {}),
    (10, None, None, {}),
    (40, None, None, {}),
    (5000, None, None, {}),  # more than there are: every priced call
    (10, datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC), {}),  # a month
    (10, datetime(2025, 2, 3, 13, 5, tzinfo=UTC), datetime(2025, 2, 20, 7, tzinfo=UTC), {}),
    (3, datetime(2025, 2, 5, 1, tzinfo=UTC), datetime(2025, 2, 5, 22, tzinfo=UTC), {}),  # < a day
    (10, None, None, {"team": "search"}),
    (10, None, None, {"user": "u2"}),  # the full daily cube
    (10, None, None, {"model": "gpt-4o-2024", "feature": "f1"}),
    (10, None, None, {"tag": "a"}),  # the tag cube
    (10, None, None, {"tag": ["a", "b"]}),  # several tags: one scan of the events table
    (10, None, None, {"user": "u1", "tag": "c"}),  # a user and a tag: no cube has both
    (7, datetime(2025, 2, 10, tzinfo=UTC), None, {"status": "error", "project": "p1"}),
]


@pytest.fixture
def top_loaded(url: str) -> Iterator[tuple[Ledger, list[UsageEvent]]]:
    events = top_history(1500, seed=31)
    with Ledger(url) as ledger:
        ledger.record_many(events)
        assert ledger.flush(timeout=60)
        yield ledger, events


def _check_top_cases(ledger: Ledger, events: list[UsageEvent]) -> None:
    for n, since, until, filters in TOP_CASES:
        want = expected_top(events, n, since, until, **filters)
        got = _ranked(top(ledger, n, since=since, until=until, **filters))
        assert got == want, (n, since, until, filters)


def test_top_equals_direct_recomputation(top_loaded: tuple[Ledger, list[UsageEvent]]) -> None:
    ledger, events = top_loaded
    assert len(expected_top(events, 5000)) > 1000  # the data has what the cases need
    assert len({e.timestamp for e in events}) < len(events)
    _check_top_cases(ledger, events)


def test_top_past_its_slice_budget_scans_the_rest_once(
    top_loaded: tuple[Ledger, list[UsageEvent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls found in the first slices are found again by the final scan: counted once."""
    from costledger._reports import _report

    ledger, events = top_loaded
    for budget in (0, 1, 3):
        monkeypatch.setattr(_report, "_SLICES", budget)
        _check_top_cases(ledger, events)


def test_top_after_repricing_up_and_down_and_a_rebuild(
    top_loaded: tuple[Ledger, list[UsageEvent]],
) -> None:
    from costledger._ledger._rollups import rebuild_rollups

    ledger, events = top_loaded
    current = {e.id: e for e in events}
    ranked = expected_top(events, 30)
    changes: dict[str, Cost] = {}
    # the dearest calls drop (their groups keep a bound that is now too high) ...
    for event_id, _ in ranked[:15]:
        changes[event_id] = Cost(status="priced", total=Decimal("0.0000001"))
    # ... unknown and cheap ones rise above everything, one to a tie
    cheap = [e for e in events if e.cost.total is None or e.cost.total < Decimal("0.01")]
    for i, e in enumerate(cheap[:12]):
        amount = "12345678.000000000000000002" if i % 3 else "12345678.000000000000000001"
        changes[e.id] = Cost(status="priced", total=Decimal(amount))
    changes[cheap[20].id] = Cost.unknown("m")  # and a priced one becomes unknown
    assert ledger.update_costs(changes) == len(changes)
    for event_id, cost in changes.items():
        current[event_id] = current[event_id].with_cost(cost)
    now = list(current.values())
    assert expected_top(now, 30) != ranked
    _check_top_cases(ledger, now)
    assert rebuild_rollups(ledger) == len(events)
    _check_top_cases(ledger, now)


def test_top_reads_only_the_slices_that_can_rank(tmp_path: Path) -> None:
    """Sixty days of calls, a few dear ones: all-time top reads a handful of short slices
    of the events table, not every call (counted statements, not timed)."""
    import sqlalchemy as sa

    events = [
        UsageEvent(
            model="m",
            usage=Usage(1, 1),
            cost=Cost(status="priced", total=Decimal("0.01") + Decimal(i % 97) / 10_000),
            timestamp=TOP_T0 + timedelta(minutes=29 * i),
            team=f"team-{i % 5}",
            feature=f"f-{i % 3}",
        )
        for i in range(3000)
    ]
    for i, day in enumerate((3, 17, 41)):
        events.append(
            UsageEvent(
                model="m",
                usage=Usage(1, 1),
                cost=Cost(status="priced", total=Decimal(5 + i)),
                timestamp=TOP_T0 + timedelta(days=day, hours=5),
                team="team-1",
                feature="f-1",
            )
        )
    with Ledger(f"sqlite:///{tmp_path / 'slices.db'}", sync=True) as ledger:
        ledger.record_many(events)
        ranges: list[tuple[datetime, ...]] = []

        def record_range(conn: Any, cursor: Any, sql: str, params: Any, *args: Any) -> None:
            if "FROM costledger_events" in sql:
                bounds = [p for p in params if isinstance(p, str) and p[:4] == "2025"]
                ranges.append(tuple(datetime.fromisoformat(b) for b in bounds))

        engine = ledger._core.store.engine
        sa.event.listen(engine, "before_cursor_execute", record_range)
        try:
            found = top(ledger, 3)
        finally:
            sa.event.remove(engine, "before_cursor_execute", record_range)
    assert [e.total_cost for e in found] == [Decimal(7), Decimal(6), Decimal(5)]
    # each statement reads one day (of one team and feature): the three dear days, two
    # statements each; the next slice's bound is below the third call, which ends it
    assert all(len(r) == 2 and r[1] - r[0] == timedelta(days=1) for r in ranges), ranges
    assert len(ranges) == 6, ranges
    assert {r[0].date() for r in ranges} == {
        (TOP_T0 + timedelta(days=d)).date() for d in (3, 17, 41)
    }


# -- what-if and re-pricing ------------------------------------------------------------------------

BOOK = {
    "gpt-4o-mini": {"input": "0.10", "output": "0.40", "cache_read": "0.025"},
    "my-model": {"input": "1", "output": "2"},
}
T0 = datetime(2025, 4, 2, 10, tzinfo=UTC)


def known_history() -> list[UsageEvent]:
    def ev(n: int, model: str, usage: Usage, cost: Cost, **kw: Any) -> UsageEvent:
        return UsageEvent(
            model=model,
            usage=usage,
            cost=cost,
            timestamp=T0 + timedelta(minutes=n),
            id=f"known-{n}",
            **kw,
        )

    def priced(total: str) -> Cost:
        return Cost(status="priced", total=Decimal(total))

    return [
        # 1000 in, 500 out at 0.15 / 0.60 per million: 0.00015 + 0.0003
        ev(1, "gpt-4o-mini", Usage(1000, 500), priced("0.00045"), provider="openai"),
        # 2000 in (1000 cached), 100 out at 0.15 / 0.075 / 0.60
        ev(
            2,
            "gpt-4o-mini",
            Usage(2000, 100, cache_read_tokens=1000),
            priced("0.000285"),
            provider="openai",
        ),
        ev(3, "my-model", Usage(100, 10), Cost.unknown("my-model")),
        ev(4, "claude-sonnet-4", Usage(1000, 100), priced("0.0045"), provider="anthropic"),
        ev(5, "gpt-4o-mini", Usage(0, 0), Cost(status="not_priced"), status="error"),
        ev(6, "gpt-4o-mini", Usage(800, 80), Cost.zero(source="cache"), cache_hit=True),
    ]


def test_whatif_hand_checked_book_only() -> None:
    with InMemoryLedger() as ledger:
        ledger.record_many(known_history())
        result = whatif(ledger, BOOK, only_book=True)
    rows = {r.model: r for r in result.rows}
    mini = rows["gpt-4o-mini"]
    # under the book: 0.0001 + 0.0002 = 0.0003; 0.0001 + 0.000025 + 0.00004 = 0.000165;
    # the cache hit keeps its 0; the failed call has nothing to price
    assert mini.requests == 4
    assert mini.cost_then == Decimal("0.000735")
    assert mini.cost_book == Decimal("0.000465")
    assert mini.compared == 3
    assert mini.savings == Decimal("0.00027")
    assert mini.savings_share == Decimal("0.367347")  # 0.00027 / 0.000735
    assert (mini.unpriced_then, mini.unpriced_book) == (0, 0)
    mine = rows["my-model"]
    assert (mine.cost_then, mine.cost_book, mine.compared, mine.unpriced_then) == (
        Decimal(0),
        Decimal("0.00012"),  # 100 * 1e-6 + 10 * 2e-6
        0,
        1,
    )
    claude = rows["claude-sonnet-4"]
    assert (claude.cost_then, claude.cost_book, claude.unpriced_book) == (
        Decimal("0.0045"),
        Decimal(0),
        1,
    )
    (total,) = result.totals
    assert total.requests == 6
    assert total.cost_then == Decimal("0.005235")
    assert total.cost_book == Decimal("0.000585")
    assert total.savings == Decimal("0.00027")
    assert (total.unpriced_then, total.unpriced_book) == (1, 1)
    assert result.unpriced_count == 2
    assert {(u.id, u.priced_then, u.priced_book) for u in result.unpriced} == {
        ("known-3", False, True),
        ("known-4", True, False),
    }
    assert result.as_dict()["totals"][0]["savings"] == "0.00027"


def test_whatif_book_over_the_defaults_and_as_a_file(tmp_path: Path) -> None:
    book = tmp_path / "book.toml"
    book.write_text(
        '["gpt-4o-mini"]\ninput = "0.10"\noutput = "0.40"\ncache_read = "0.025"\n'
        '["my-model"]\ninput = "1"\noutput = "2"\n'
    )
    with InMemoryLedger() as ledger:
        ledger.record_many(known_history())
        result = whatif(ledger, book, since=T0, until=T0 + timedelta(minutes=5))
    rows = {r.model: r for r in result.rows}
    # claude is priced by the defaults (genai-prices: 3 / 15 per million): the same as then
    assert rows["claude-sonnet-4"].cost_book == Decimal("0.0045")
    assert rows["claude-sonnet-4"].savings == Decimal(0)
    assert rows["gpt-4o-mini"].cost_book == Decimal("0.000465")
    assert result.totals[0].requests == 4  # minutes 1 to 4 (until is exclusive)
    assert result.totals[0].unpriced_book == 0


def test_reprice_fills_in_unknown_models_and_the_rollups_follow(url: str) -> None:
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(known_history())
        (before,) = ledger.summary()
        assert before.unpriced == 1
        dry = reprice(ledger, BOOK, dry_run=True)
        assert (dry.examined, dry.repriced, dry.dry_run) == (1, 1, True)
        assert ledger.summary() == [before]
        done = reprice(ledger, BOOK)
        assert (done.examined, done.repriced, done.still_unknown) == (1, 1, 0)
        assert done.added == {"USD": Decimal("0.00012")}
        assert done.by_model == {"my-model": (1, 0)}
        (after,) = ledger.summary()
        assert after.unpriced == 0
        assert after.cost == before.cost + Decimal("0.00012")
        stored = ledger.get("known-3")
        assert stored is not None
        assert stored.total_cost == Decimal("0.00012")
        assert report(ledger, "model").rows == report(ledger, "model", use_rollups=False).rows
        again = reprice(ledger, BOOK)
        assert again.examined == 0


def test_reprice_leaves_what_is_still_unknown(tmp_path: Path) -> None:
    with InMemoryLedger() as ledger:
        ledger.record_many(known_history())
        result = reprice(ledger, {"other-model": {"input": "1", "output": "1"}})
        assert (result.examined, result.repriced, result.still_unknown) == (1, 0, 1)
        assert ledger.summary()[0].unpriced == 1


# -- export ------------------------------------------------------------------------------------


def _expected_money(events: list[UsageEvent]) -> dict[str, Decimal | None]:
    return {e.id: e.cost.total for e in events}


def test_export_round_trips_in_all_three_formats(url: str, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    events = history(250, seed=9)
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(events)
        want = _expected_money(events)
        csv_file = tmp_path / "out.csv"
        assert export(ledger, csv_file, "csv", batch_size=7).rows == 250
        with csv_file.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == list(EXPORT_COLUMNS)
        assert {r["id"]: Decimal(r["total_cost"]) if r["total_cost"] else None for r in rows} == (
            want
        )
        assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
        by_id = {e.id: e for e in events}
        some = rows[0]
        assert json.loads(some["tags"]) == list(by_id[some["id"]].tags)

        jsonl = tmp_path / "out.jsonl"
        assert export(ledger, jsonl, "jsonl").rows == 250
        back = [event_from_line(line) for line in jsonl.read_bytes().splitlines()]
        assert {e.id: e.cost.total for e in back} == want
        assert {e.id: e.usage for e in back} == {e.id: e.usage for e in events}

        parquet = tmp_path / "out.parquet"
        assert export(ledger, parquet, "parquet", batch_size=100).rows == 250
        table = pq.read_table(parquet)
        assert table.num_rows == 250
        assert table.schema.field("total_cost").type == pa.decimal128(38, 18)
        assert pq.ParquetFile(parquet).metadata.num_row_groups == 3
        ids = table.column("id").to_pylist()
        totals = table.column("total_cost").to_pylist()
        assert dict(zip(ids, totals, strict=True)) == want
        assert not list(tmp_path.glob("*.part"))

        # filtered, to a stream
        buffer = io.BytesIO()
        n = export(ledger, buffer, "csv", team="search", since="2025-02-01").rows
        assert n == sum(
            1
            for e in events
            if e.team == "search" and e.timestamp >= datetime(2025, 2, 1, tzinfo=UTC)
        )
        assert buffer.getvalue().count(b"\n") == n + 1


def test_export_refuses_an_unknown_format(tmp_path: Path) -> None:
    with InMemoryLedger() as ledger, pytest.raises(ValueError, match="xlsx"):
        export(ledger, tmp_path / "x", "xlsx")  # type: ignore[arg-type]


def test_export_of_nothing_is_a_valid_empty_file(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    with InMemoryLedger() as ledger:
        assert export(ledger, tmp_path / "e.parquet", "parquet").rows == 0
        assert export(ledger, tmp_path / "e.csv", "csv").rows == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0
    assert (tmp_path / "e.csv").read_text().startswith("id,timestamp,")


# -- prices ------------------------------------------------------------------------------------


def test_price_list_show_and_diff(tmp_path: Path) -> None:
    anthropic = list_prices(provider="anthropic")
    assert anthropic
    assert all(c.provider == "anthropic" for c in anthropic)
    assert any(c.model.startswith("claude") for c in anthropic)
    card = show_price("gpt-4o-mini")
    assert card is not None
    assert (card.input, card.output, card.cache_read) == (
        Decimal("0.15"),
        Decimal("0.6"),
        Decimal("0.075"),
    )
    assert show_price("no-such-model-anywhere") is None
    assert show_price("my-model", price_book=BOOK) is not None
    with_book = list_prices(provider="openai", price_book={"x-model": {"input": 1, "output": 2}})
    assert not any(c.model == "x-model" for c in with_book)  # no provider: not openai's
    diffs = {(d.model, d.component): d for d in diff_prices(BOOK)}
    d = diffs[("gpt-4o-mini", "input")]
    assert (d.default, d.book, d.change, d.status) == (
        Decimal("0.15"),
        Decimal("0.1"),
        Decimal("-0.05"),
        "changed",
    )
    assert d.change_share == Decimal("-0.333333")
    assert diffs[("my-model", "output")].status == "new"
    assert diffs[("my-model", "output")].default is None
    assert ("gpt-4o-mini", "cache_write_1h") not in diffs  # neither side prices it apart


# -- report in one currency ---------------------------------------------------------------------


@pytest.mark.parametrize("by", [(), ("model",), ("day", "team"), ("tag",)], ids=str)
def test_report_converted_equals_each_event_converted(
    loaded: tuple[Ledger, list[UsageEvent]], by: tuple[str, ...]
) -> None:
    ledger, events = loaded
    rate = Decimal("0.9213")
    got = report(ledger, by, sort="key", currency="EUR", rates={"USD": "0.9213"})
    assert got.rates == {"USD": rate}
    with localcontext(Context(prec=100)):  # exact: the default 28 digits would round
        converted = _in_eur(events, rate)
    want = expected_summary(converted, by)
    assert {(*r.key, r.currency): r.cost for r in got.rows} == {
        k: v["cost"] for k, v in want.items()
    }
    assert {(*r.key, r.currency): r.requests for r in got.rows} == {
        k: v["requests"] for k, v in want.items()
    }
    (total,) = got.totals
    whole = expected_summary(converted, ())[("EUR",)]
    assert (total.currency, total.requests, total.unpriced, total.cost) == (
        "EUR",
        len(events),
        whole["unpriced"],
        whole["cost"],
    )
    for row in got.rows:
        assert row.share == _share(row.cost, total.cost)


def _in_eur(events: list[UsageEvent], rate: Decimal) -> list[UsageEvent]:
    """Each event with its cost in EUR: USD amounts times ``rate``."""
    return [
        e.with_cost(
            Cost(
                status=e.cost.status,
                total=None
                if e.cost.total is None
                else e.cost.total * rate
                if e.cost.currency == "USD"
                else e.cost.total,
                currency="EUR",
            )
        )
        for e in events
    ]


def _two_currencies(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'fx.db'}"
    at = datetime(2025, 3, 1, 12, tzinfo=UTC)
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            [
                UsageEvent(
                    model="m",
                    usage=Usage(10, 1),
                    cost=Cost(status="priced", total=Decimal("1.50"), currency="USD"),
                    timestamp=at,
                    team="a",
                ),
                UsageEvent(
                    model="m",
                    usage=Usage(20, 2),
                    cost=Cost(status="priced", total=Decimal("2.00"), currency="EUR"),
                    timestamp=at,
                    team="b",
                ),
                UsageEvent(
                    model="unknown",
                    usage=Usage(5, 5),
                    cost=Cost(status="unknown_model"),
                    timestamp=at,
                    team="b",
                ),
            ]
        )
    return url


def test_report_converted_by_hand(tmp_path: Path) -> None:
    url = _two_currencies(tmp_path)
    before = report(url, "model")
    assert {(r.key, r.currency): r.cost for r in before.rows} == {
        (("m",), "USD"): Decimal("1.5"),
        (("m",), "EUR"): Decimal("2"),
        (("unknown",), "USD"): Decimal("0"),
    }
    in_eur = report(url, "model", currency="EUR", rates={"USD": Decimal("0.92")})
    # 1.50 USD x 0.92 = 1.38 EUR, + 2.00 EUR = 3.38 EUR; the unpriced call adds nothing
    assert [(r.key, r.currency, r.requests, r.unpriced, r.cost, r.share) for r in in_eur.rows] == [
        (("m",), "EUR", 2, 0, Decimal("3.38"), Decimal("1.000000")),
        (("unknown",), "EUR", 1, 1, Decimal("0"), Decimal("0.000000")),
    ]
    in_usd = report(url, "team", currency="USD", rates={"EUR": "1.087", "GBP": "1.27"})
    assert in_usd.rates == {"EUR": Decimal("1.087")}  # only currencies the selection holds
    assert {r.key: r.cost for r in in_usd.rows} == {
        ("a",): Decimal("1.5"),
        ("b",): Decimal("2.174"),
    }
    assert in_usd.cost == {"USD": Decimal("3.674")}


@pytest.mark.parametrize(
    ("currency", "rates", "message"),
    [
        ("EUR", None, "the selection holds costs in USD, with no rate to EUR: give one (USD=..."),
        ("GBP", {"USD": "0.79"}, "the selection holds costs in EUR, with no rate to GBP"),
        (
            "EUR",
            {"USD": 0.92},
            "exchange rate for USD must be a Decimal, a decimal string or an int, got 0.92",
        ),
        ("EUR", {"USD": "0"}, "exchange rate for USD must be a finite number above 0, got '0'"),
        ("EUR", {"USD": "-1"}, "exchange rate for USD must be a finite number above 0, got '-1'"),
        ("EUR", {"USD": "NaN"}, "exchange rate for USD must be a finite number above 0, got 'NaN'"),
        ("EUR", {"USD": "ninety"}, "exchange rate for USD is not a number: 'ninety'"),
        ("EUR", {"usd": "0.9"}, "an exchange rate's currency must be a three-letter currency code"),
        (
            "euro",
            {"USD": "0.9"},
            "currency must be a three-letter currency code like 'EUR', got 'euro'",
        ),
        ("EUR", {"USD": "0.9", "EUR": "2"}, "the rate of EUR to itself is 1, got '2'"),
    ],
)
def test_report_conversion_refuses_bad_or_missing_rates(
    tmp_path: Path, currency: str, rates: Any, message: str
) -> None:
    url = _two_currencies(tmp_path)
    with pytest.raises(ValueError) as caught:
        report(url, "model", currency=currency, rates=rates)
    assert message in str(caught.value)


def test_report_rates_without_a_currency_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rates are for converting: give currency= too"):
        report(_two_currencies(tmp_path), "model", rates={"USD": "0.9"})
