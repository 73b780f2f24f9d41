"""The daily rollups on real SQLite files and a real PostgreSQL database: equal to a direct
recomputation after inserts, duplicate inserts and cost updates; summaries answered from
them equal the events table's to the last decimal, whatever the keys, filters and bounds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from costledger import Cost, Usage, UsageError, UsageEvent
from costledger._ledger import Ledger, upgrade
from costledger._ledger._engine import make_engine, resolve_url
from costledger._ledger._migrate import HEAD, current_revision
from costledger._ledger._query import summarize_events
from costledger._ledger._rollups import (
    BOUND,
    CORE_DIMENSIONS,
    CUBES,
    DIMENSIONS,
    TABLES,
    Cube,
    RollupDelta,
    cost_parts,
    cost_value,
    plan,
    rebuild_rollups,
    rollup_rows,
    summarize,
)
from costledger._ledger._rows import COLUMNS
from costledger._ledger._store import _text_money, sqlite_params

from .test_reports_helpers import (
    UTC,
    expected_summary,
    history,
    in_range,
    summary_dict,
)

# -- a direct recomputation of the rollup tables ------------------------------------------------


def recompute(events: Iterable[UsageEvent], cube: Cube) -> dict[tuple[Any, ...], dict[str, Any]]:
    """A cube's rows computed in Python from the events themselves."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    with localcontext(Context(prec=100)):
        for e in events:
            values = {
                "model": e.model,
                "response_model": e.response_model,
                "provider": e.provider,
                "user": e.user,
                "team": e.team,
                "project": e.project,
                "feature": e.feature,
                "source": e.source,
                "status": e.status,
                "currency": e.cost.currency,
                "pricing_status": e.cost.status,
            }
            dims = tuple(values[d] for d in cube.dims)
            day = e.timestamp.date()
            if cube.grain == "month":
                day = day.replace(day=1)
            keys = (
                [(day, t, *dims) for t in (dict.fromkeys(e.tags) or (None,))]
                if cube.tags
                else [(day, *dims)]
            )
            for key in keys:
                acc = out.setdefault(key, defaultdict(int, cost=Decimal(0)))
                acc["requests"] += 1
                acc["errors"] += e.status == "error"
                acc["cancelled"] += e.status == "cancelled"
                acc["unpriced"] += e.cost.total is None and e.cost.status != "not_priced"
                for f in (
                    "input_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                ):
                    acc[f] += getattr(e.usage, f)
                if e.cost.total is not None:
                    acc["cost"] += Decimal(_text_money("total", e.cost.total) or "0")
    return {k: dict(v) for k, v in out.items()}


def assert_rollups_match(ledger: Ledger, events: list[UsageEvent]) -> None:
    for cube in CUBES:
        assert rollup_rows(ledger, cube.table) == recompute(events, cube), cube.table


def bound_rows(ledger: Ledger, cube: Cube) -> dict[tuple[Any, ...], float | None]:
    """A daily cube's ``max_cost`` per group, keyed as ``rollup_rows``."""
    table = TABLES[cube.table]
    keys = ["day", *(("tag",) if cube.tags else ()), *cube.dims]
    with ledger._core.store.read_connection() as conn:
        rows = conn.execute(sa.select(*(table.c[k] for k in keys), table.c[BOUND])).all()
    return {tuple(r[:-1]): r[-1] for r in rows}


def expected_bounds(
    events: Iterable[UsageEvent], cube: Cube
) -> dict[tuple[Any, ...], float | None]:
    """The float of each group's dearest stored amount (``None``: no priced call)."""
    out: dict[tuple[Any, ...], float | None] = {}
    for e in events:
        values = {
            "model": e.model,
            "response_model": e.response_model,
            "provider": e.provider,
            "user": e.user,
            "team": e.team,
            "project": e.project,
            "feature": e.feature,
            "source": e.source,
            "status": e.status,
            "currency": e.cost.currency,
            "pricing_status": e.cost.status,
        }
        dims = tuple(values[d] for d in cube.dims)
        day = e.timestamp.date()
        tags = list(dict.fromkeys(e.tags)) or [None]
        for key in [(day, t, *dims) for t in tags] if cube.tags else [(day, *dims)]:
            have = out.get(key)
            if e.cost.total is None:
                out.setdefault(key, None)
                continue
            amount = float(_text_money("total", e.cost.total) or "0")
            out[key] = amount if have is None else max(have, amount)
    return out


def assert_bounds(ledger: Ledger, events: list[UsageEvent], *, exact: bool) -> None:
    """Every daily group's ``max_cost`` is at least its dearest call (``exact``: equal)."""
    daily = [cube for cube in CUBES if cube.bounded]
    assert [c.table for c in daily] == [
        "costledger_rollup_daily",
        "costledger_rollup_core",
        "costledger_rollup_core_tags",
    ]
    for cube in daily:
        got = bound_rows(ledger, cube)
        want = expected_bounds(events, cube)
        assert set(got) == set(want), cube.table
        if exact:
            assert got == want, cube.table
            continue
        for key, bound in want.items():
            if bound is not None:
                have = got[key]
                assert have is not None, (cube.table, key)
                assert have >= bound, (cube.table, key, have, bound)


def all_rollups(ledger: Ledger) -> list[dict[tuple[Any, ...], dict[str, Any]]]:
    return [rollup_rows(ledger, cube.table) for cube in CUBES]


# -- money as integers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.1",
        "1.0",
        "-0.5",
        "0.000000000000000001",
        "12345678.000000000000000001",
        "-12345678.123456789987654321",
        "9223372036.854775807123456789",
        "5",
    ],
)
def test_cost_parts_round_trip(text: str) -> None:
    units, nano, atto, places = cost_parts(text)
    assert 0 <= nano < 10**9
    assert 0 <= atto < 10**9
    assert cost_value(units, nano, atto, places) == Decimal(text)
    assert places == len(text.partition(".")[2])


def test_rollups_keep_the_places_each_amount_was_written_with() -> None:
    # equal amounts written with different places once shared a cache entry (keyed by
    # Decimal), so a rollup's places depended on which amount the process had seen first
    for text, want in [
        ("0.000975", (0, 975000, 0, 6)),
        ("0.000975000", (0, 975000, 0, 9)),
        ("0.000975", (0, 975000, 0, 6)),
        ("1.0000000000000000005", (1, 0, 0, 18)),  # stored rounded to 18 places
    ]:
        event = UsageEvent(
            id=f"e-{text}",
            timestamp=datetime(2025, 3, 1, tzinfo=timezone.utc),
            source="api",
            model="m",
            usage=Usage(input_tokens=1),
            cost=Cost(status="priced", total=Decimal(text), input=Decimal(text)),
        )
        delta = RollupDelta()
        delta.add_rows([sqlite_params(event)])
        ((_, acc),) = delta.groups.items()
        assert (acc[9], acc[10], acc[11], acc[12]) == want


def test_cost_parts_refuses_more_than_18_places() -> None:
    with pytest.raises(ValueError, match="18"):
        cost_parts("0.0000000000000000001")


def test_sums_of_parts_are_exact() -> None:
    amounts = ["0.1"] * 10 + ["0.999999999999999999"] * 3 + ["-2.5", "7"]
    parts = [cost_parts(a) for a in amounts]
    sums = [sum(p[i] for p in parts) for i in range(3)]
    with localcontext(Context(prec=60)):
        want = sum(Decimal(a) for a in amounts)
    got = cost_value(sums[0], sums[1], sums[2], max(p[3] for p in parts))
    assert got == want
    assert str(got) == "8.499999999999999997"


# -- maintained on write ------------------------------------------------------------------------


def test_rollups_equal_recomputation_after_inserts_duplicates_and_updates(url: str) -> None:
    events = history(500)
    with Ledger(url) as ledger:
        ledger.record_many(events[:300])
        assert ledger.flush(timeout=60)
        assert_rollups_match(ledger, events[:300])
        assert_bounds(ledger, events[:300], exact=True)

        # duplicates (in the batch and already stored) never count twice
        ledger.record_many(events[200:400] + events[350:400])
        assert ledger.flush(timeout=60)
        assert_rollups_match(ledger, events[:400])
        assert_bounds(ledger, events[:400], exact=True)

        # re-pricing: unknown -> priced, priced -> unknown, another amount, another currency
        stored = {e.id: e for e in events[:400]}
        changes: dict[str, Cost] = {}
        for i, e in enumerate(events[:400:7]):
            if e.cost.status == "unknown_model":
                new = Cost(status="priced", total=Decimal("0.0123"), source="book")
            elif i % 3 == 0:
                new = Cost.unknown(e.model)
            elif i % 3 == 1:
                new = Cost(status="priced", total=Decimal("1E-18") * i, currency="GBP")
            else:
                new = Cost(status="priced", total=Decimal("123.456"), source="book")
            changes[e.id] = new
            stored[e.id] = e.with_cost(new)
        assert ledger.update_costs(changes) == len(changes)
        assert_rollups_match(ledger, list(stored.values()))
        # a raised amount raises its group's bound; a lowered one leaves it above
        assert_bounds(ledger, list(stored.values()), exact=False)
        assert any(  # where 123.456 is now the dearest, the bound rose to it
            bound == 123.456 for bound in bound_rows(ledger, CUBES[0]).values()
        )

        # putting everything back removes the groups that emptied
        back = {i: next(e for e in events if e.id == i).cost for i in changes}
        assert ledger.update_costs(back) == len(back)
        assert_rollups_match(ledger, events[:400])
        assert_bounds(ledger, events[:400], exact=False)
        with pytest.raises(AssertionError):  # 123.456 stays until a rebuild
            assert_bounds(ledger, events[:400], exact=True)

        ledger.record_many(events[400:])
        assert ledger.flush(timeout=60)
        before = all_rollups(ledger)
        assert rebuild_rollups(ledger) == len(events)
        assert all_rollups(ledger) == before
        assert_bounds(ledger, events, exact=True)  # the rebuild makes them exact again


def test_concurrent_writers_keep_the_rollups_exact(url: str) -> None:
    """Several ledgers (own connections) writing at once, with overlapping duplicates."""
    import threading

    events = history(1200, seed=13)
    parts = [events[i * 300 : i * 300 + 400] for i in range(4)]  # 100 shared with the next

    def write(chunk: list[UsageEvent]) -> None:
        with Ledger(url, batch_size=50) as ledger:
            for event in chunk:
                ledger.record(event)
            assert ledger.flush(timeout=120)

    threads = [threading.Thread(target=write, args=(p,)) for p in parts]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with Ledger(url, sync=True) as ledger:
        assert ledger.stats().inserted == 0
        assert_rollups_match(ledger, events)
        assert_bounds(ledger, events, exact=True)


def test_an_event_with_a_repeated_tag_counts_once_per_tag(url: str) -> None:
    e = UsageEvent(
        model="m",
        usage=Usage(10, 1),
        cost=Cost(status="priced", total=Decimal("0.5")),
        tags=("a", "a", "b"),
        timestamp=datetime(2025, 3, 1, tzinfo=UTC),
    )
    with Ledger(url, sync=True) as ledger:
        ledger.record(e)
        rows = {r.tag: (r.requests, r.cost) for r in ledger.summary(by="tag")}
        assert rows == {"a": (1, Decimal("0.5")), "b": (1, Decimal("0.5"))}
        (only,) = ledger.summary(tag="a")
        assert (only.requests, only.cost) == (1, Decimal("0.5"))
        store = ledger._core.store  # the events table agrees
        direct = summarize_events(store, by=("tag",), since=None, until=None, filters={})
        assert {r.tag: (r.requests, r.cost) for r in direct} == rows


# -- summaries from the rollups -----------------------------------------------------------------

KEYS = [
    (),
    ("day",),
    ("week",),
    ("month",),
    ("model",),
    ("provider",),
    ("user",),
    ("team",),
    ("project",),
    ("feature",),
    ("tag",),
    ("source",),
    ("status",),
    ("day", "model"),
    ("month", "model", "tag"),
    ("team", "user", "feature"),
    ("week", "provider", "status", "source"),
]

BOUNDS: list[tuple[datetime | date | None, datetime | date | None]] = [
    (None, None),
    (date(2025, 2, 3), date(2025, 2, 17)),  # whole days: rollups only
    (datetime(2025, 2, 3, 13, 5, tzinfo=UTC), None),  # a partial first day
    (None, datetime(2025, 2, 20, 7, 30, 0, 1, tzinfo=UTC)),  # a partial last day
    (datetime(2025, 2, 1, 23, tzinfo=UTC), datetime(2025, 2, 9, 1, tzinfo=UTC)),  # both
    (datetime(2025, 2, 5, 1, tzinfo=UTC), datetime(2025, 2, 5, 22, tzinfo=UTC)),  # within a day
]

FILTERS: list[dict[str, Any]] = [
    {},
    {"team": "search"},
    {"model": "gpt-4o"},  # requested or response model
    {"model": ["gpt-4o-2025", "claude-sonnet-4"], "status": "error"},
    {"tag": "a"},
    {"tag": ["a", "b"]},  # several tags: the events table unless by tag
    {"user": ["u1", "u2"], "source": "api", "provider": "openai", "feature": "f1"},
    {"project": "p2"},
]


@pytest.fixture(scope="module")
def loaded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, list[Any]]]:
    events = history(1500, seed=5)
    url = f"sqlite:///{tmp_path_factory.mktemp('r') / 'ledger.db'}"
    with Ledger(url) as ledger:
        ledger.record_many(events)
        assert ledger.flush(timeout=60)
        yield ledger, events


@pytest.fixture(scope="module")
def loaded_pg(pg_database: str) -> Iterator[tuple[Ledger, list[Any]]]:
    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        if sa.inspect(conn).has_table("costledger_events"):
            conn.exec_driver_sql("TRUNCATE costledger_events")
    engine.dispose()
    events = history(1500, seed=5)
    with Ledger(pg_database) as ledger:
        ledger.record_many(events)
        assert ledger.flush(timeout=60)
        yield ledger, events


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def loaded(request: pytest.FixtureRequest) -> tuple[Ledger, list[UsageEvent]]:
    name = "loaded_sqlite" if request.param == "sqlite" else "loaded_pg"
    value: tuple[Ledger, list[UsageEvent]] = request.getfixturevalue(name)
    return value


def _matching(events: list[UsageEvent], filters: dict[str, Any]) -> list[UsageEvent]:
    def ok(e: UsageEvent) -> bool:
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

    return [e for e in events if ok(e)]


@pytest.mark.parametrize("by", KEYS, ids=lambda k: "+".join(k) or "total")
def test_summary_equals_events_table_and_python(
    loaded: tuple[Ledger, list[UsageEvent]], by: tuple[str, ...]
) -> None:
    ledger, events = loaded
    store = ledger._core.store
    for since, until in BOUNDS:
        for filters in FILTERS:
            got = summarize(store, by=by, since=since, until=until, filters=filters)
            direct = summarize_events(store, by=by, since=since, until=until, filters=filters)
            assert summary_dict(got) == summary_dict(direct), (since, until, filters)
            lo = None if since is None else _dt(since)
            hi = None if until is None else _dt(until)
            want = expected_summary(_matching(in_range(events, lo, hi), filters), by)
            if "tag" in by and "tag" in filters:  # by tag and filtered by tag: the wanted tags
                wanted = [filters["tag"]] if isinstance(filters["tag"], str) else filters["tag"]
                pos = by.index("tag")
                want = {k: v for k, v in want.items() if k[pos] in wanted}
            assert summary_dict(got) == want, (since, until, filters)
            assert [r.key for r in got] == [r.key for r in direct]


def _dt(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def test_sums_keep_the_places_they_were_written_with(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sum.db'}"
    tiny = [
        UsageEvent(model="m", usage=Usage(1, 1), cost=Cost(status="priced", total=Decimal("0.1")))
        for _ in range(10)
    ]
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(tiny)
        (row,) = ledger.summary()
    assert str(row.cost) == "1.0"


def _tables(p: Any) -> list[tuple[str, date | None, date | None]]:
    return [(cube.table.removeprefix("costledger_rollup_"), a, b) for cube, a, b in p.parts]


def test_plan_uses_months_days_and_the_events_table() -> None:
    d = datetime(2025, 2, 3, 12, tzinfo=UTC)
    p = plan((), d, date(2025, 5, 10), {})
    assert _tables(p) == [
        ("core", date(2025, 2, 4), date(2025, 3, 1)),
        ("monthly", date(2025, 3, 1), date(2025, 5, 1)),
        ("core", date(2025, 5, 1), date(2025, 5, 10)),
    ]
    assert p.edges == ((d, datetime(2025, 2, 4, tzinfo=UTC)),)
    # by day: days only; a user needs the full cubes; a tag the tag cubes
    assert _tables(plan(("day",), None, None, {})) == [("core", None, None)]
    assert _tables(plan(("user",), None, None, {})) == [("monthly", None, None)]
    assert _tables(plan(("week",), None, None, {"user": "u"})) == [("daily", None, None)]
    assert _tables(plan(("model",), date(2025, 1, 1), None, {"tag": "x"})) == [
        ("core_tags_monthly", date(2025, 1, 1), None)
    ]
    assert _tables(plan(("feature", "tag"), None, date(2025, 1, 15), {})) == [
        ("core_tags_monthly", None, date(2025, 1, 1)),
        ("core_tags", date(2025, 1, 1), date(2025, 1, 15)),
    ]
    assert _tables(plan(("week", "tag"), None, None, {})) == [("core_tags", None, None)]
    assert not plan(("user", "tag"), None, None, {}).rollup  # no cube has both
    # within one month: days only; less than a day: the events table only
    assert _tables(plan((), date(2025, 2, 3), date(2025, 2, 9), {})) == [
        ("core", date(2025, 2, 3), date(2025, 2, 9))
    ]
    assert not plan((), d, d + timedelta(hours=3), {}).rollup
    assert not plan((), None, None, {"tag": ["a", "b"]}).rollup
    assert plan(("tag",), None, None, {"tag": ["a", "b"]}).rollup


def test_bad_arguments_are_refused_as_before(tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path / 'x.db'}", sync=True) as ledger:
        with pytest.raises(ValueError, match="'colour'"):
            ledger.summary(by=["colour"])
        with pytest.raises(ValueError, match="unknown filter 'colour'"):
            ledger.summary(colour="red")
        with pytest.raises(ValueError, match="repeat"):
            ledger.summary(by=["day", "day"])
        with pytest.raises(ValueError, match="'user'"):
            ledger.summary(user=[1])  # type: ignore[list-item]


# -- schema -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_truncating_the_events_empties_the_rollups(pg_url: str) -> None:
    with Ledger(pg_url, sync=True) as ledger:
        ledger.record_many(history(20))
        assert all(all_rollups(ledger))
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE costledger_events")
        engine.dispose()
        assert not any(all_rollups(ledger))
        assert ledger.summary() == []


def test_upgrading_from_0001_backfills_the_rollups(url: str) -> None:
    events = history(200, seed=3)
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(events)
    # take the database back to revision 0001 (as an older costledger left it)
    engine = make_engine(resolve_url(url))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("DROP TRIGGER costledger_events_truncate ON costledger_events")
                conn.exec_driver_sql("DROP FUNCTION costledger_rollups_truncate()")
            for cube in CUBES:
                conn.exec_driver_sql(f"DROP TABLE {cube.table}")
            conn.exec_driver_sql("ALTER TABLE costledger_events DROP COLUMN price_context")
            conn.exec_driver_sql("UPDATE costledger_alembic_version SET version_num = '0001'")
        assert current_revision(engine) == "0001"
        upgrade(url)
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()
    with Ledger(url, sync=True) as ledger:
        assert_rollups_match(ledger, events)
        assert_bounds(ledger, events, exact=True)


def test_rebuild_repairs_an_older_rollup_layout(url: str) -> None:
    events = history(120, seed=8)
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(events)
    engine = make_engine(resolve_url(url))
    try:
        with engine.begin() as conn:  # a layout from before: one cube missing, one retired,
            conn.exec_driver_sql(f"DROP TABLE {CUBES[-1].table}")
            conn.exec_driver_sql("CREATE TABLE costledger_rollup_tags (day TEXT)")
            conn.exec_driver_sql(f"ALTER TABLE {CUBES[0].table} DROP COLUMN {BOUND}")  # no bound
    finally:
        engine.dispose()
    with Ledger(url, sync=True) as ledger:
        assert rebuild_rollups(ledger) == 120
        assert_rollups_match(ledger, events)
        assert_bounds(ledger, events, exact=True)
        ledger.record_many(history(30, seed=99))  # and writes work again
    engine = make_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert "costledger_rollup_tags" not in names
    assert {c.table for c in CUBES} <= names


def test_rollup_tables_have_the_documented_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cols.db'}"
    upgrade(url)
    engine = make_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            for cube in CUBES:
                cols = [c["name"] for c in sa.inspect(conn).get_columns(cube.table)]
                assert tuple(cols) == cube.columns
                assert "user" in cols or cube.dims == CORE_DIMENSIONS
    finally:
        engine.dispose()
    assert DIMENSIONS[3] == "user"


def _priced(total: str, hour: int, tokens: int = 1) -> UsageEvent:
    return UsageEvent(
        model="m",
        usage=Usage(tokens, 1),
        cost=Cost(status="priced", total=Decimal(total)),
        timestamp=datetime(2025, 3, 1, hour, tzinfo=UTC),
    )


INT64_MAX = 2**63 - 1
SUM_REFUSED = (
    "the ledger's sums cannot take it: a sum (of cost in whole currency units, or of tokens) "
    "of a group of costledger_rollup_daily for the day of 2025-03-01 would pass "
    "9223372036854775807 (2^63 - 1), the most a rollup column holds"
)


def test_a_sum_beyond_64_bits_is_refused_rather_than_rounded(url: str, tmp_path: Path) -> None:
    huge = "5000000000000000000"  # 5e18: two of them overflow a 64-bit sum
    with Ledger(url, sync=True, spool_dir=tmp_path / "spool") as ledger:
        first, second = _priced(huge, 0), _priced(huge, 1)
        ledger.record(first)
        ledger.record(second)
        stats = ledger.stats()
        assert stats.inserted == 1
        assert stats.rejected == 1  # kept in the spool's rejected file, not stored half-way
        assert len(list((tmp_path / "spool").glob("rejected-*.jsonl"))) == 1
        (row,) = ledger.summary()
        assert (row.requests, row.cost) == (1, Decimal(huge))
        # the reason, as the writer gets it
        with pytest.raises(ValueError) as info:
            ledger._core.store.insert_rows([sqlite_params(second)])
        assert str(info.value) == SUM_REFUSED
        assert_rollups_match(ledger, [first])
        # re-pricing into the same sum is refused the same way, and changes nothing
        small = _priced("1", 2)
        ledger.record(small)
        with pytest.raises(ValueError) as info:
            ledger.update_cost(small.id, Cost(status="priced", total=Decimal(huge)))
        assert str(info.value) == SUM_REFUSED
        assert ledger.get(small.id).total_cost == Decimal(1)  # type: ignore[union-attr]
        assert_rollups_match(ledger, [first, small])
        (row,) = ledger.summary()
        assert (row.requests, row.cost) == (2, Decimal("5000000000000000001"))


def test_an_amount_of_2_to_the_63_units_is_refused_naming_it(url: str, tmp_path: Path) -> None:
    largest = "9223372036854775807.999999999999999999"  # the most whole units a sum holds
    with Ledger(url, sync=True, spool_dir=tmp_path / "spool") as ledger:
        kept = _priced(largest, 0)
        ledger.record(kept)
        ledger.record(_priced("9223372036854775808", 1))  # 2^63 < 10^20: storable, not summable
        ledger.record(_priced("-9223372036854775809", 2))
        assert (ledger.stats().inserted, ledger.stats().rejected) == (1, 2)
        (row,) = ledger.summary()
        assert (row.requests, row.cost) == (1, Decimal(largest))
        assert [e.total_cost for e in ledger.events()] == [Decimal(largest)]
        assert_rollups_match(ledger, [kept])
        for amount in ("9223372036854775808", "-9223372036854775809", "10000000000000000000"):
            with pytest.raises(ValueError) as info:
                ledger.update_cost(kept.id, Cost(status="priced", total=Decimal(amount)))
            assert str(info.value) == (
                f"total_cost {amount} is too large for the ledger's sums: an amount (and each "
                "day's or month's sum of a group) must stay within 9223372036854775807 "
                "currency units (2^63 - 1) either side of zero"
            )
        assert [e.total_cost for e in ledger.events()] == [Decimal(largest)]
        # the least that fits on the other side: floor(-2^63 + 0.5) = -2^63, on another day
        least = UsageEvent(
            model="m",
            usage=Usage(1, 1),
            cost=Cost(status="priced", total=Decimal("-9223372036854775807.5")),
            timestamp=datetime(2025, 3, 2, tzinfo=UTC),
        )
        ledger.record(least)
        assert ledger.stats().inserted == 2
        assert_rollups_match(ledger, [kept, least])
        assert [(r.day, r.cost) for r in ledger.summary(by="day")] == [
            (date(2025, 3, 1), Decimal(largest)),
            (date(2025, 3, 2), Decimal("-9223372036854775807.5")),
        ]


def test_a_token_sum_beyond_64_bits_is_refused_not_made_a_float(url: str) -> None:
    # a group whose day already holds nearly 2^63 input tokens (922 calls of 10^16)
    with Ledger(url, sync=True) as ledger:
        ledger.record(_priced("1", 0, tokens=10**16))
        engine = sa.create_engine(resolve_url(url))
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE costledger_rollup_daily SET input_tokens = {INT64_MAX - 10**16 + 1}"
            )
        engine.dispose()
        more = _priced("1", 1, tokens=10**16)
        with pytest.raises(ValueError) as info:
            ledger._core.store.insert_rows([sqlite_params(more)])
        assert str(info.value) == SUM_REFUSED
        with ledger._core.store.read_connection() as conn:
            sums = conn.exec_driver_sql(
                "SELECT requests, input_tokens FROM costledger_rollup_daily"
            ).all()
        assert [tuple(r) for r in sums] == [(1, INT64_MAX - 10**16 + 1)]  # an int, untouched
        assert isinstance(sums[0][1], int)
        assert ledger.get(more.id) is None


def test_a_row_that_bypassed_usage_is_held_to_its_bound(url: str) -> None:
    # ingest reads its own lines without building a Usage: the rollups hold them to it
    with Ledger(url, sync=True) as ledger:
        row = list(sqlite_params(_priced("1", 0)))
        row[COLUMNS.index("input_tokens")] = 2**62
        with pytest.raises(UsageError) as info:
            ledger._core.store.insert_rows([tuple(row)])
        assert str(info.value) == (
            "usage field 'input_tokens' must be at most 10^16 tokens, got 4611686018427387904"
        )
        row[COLUMNS.index("input_tokens")] = 10**16
        row[COLUMNS.index("output_tokens")] = 10**16 + 1
        with pytest.raises(UsageError, match="'output_tokens' must be at most 10"):
            ledger._core.store.insert_rows([tuple(row)])
        assert ledger.summary() == []
        row[COLUMNS.index("output_tokens")] = 10**16
        assert len(ledger._core.store.insert_rows([tuple(row)])) == 1
        (got,) = ledger.summary()
        assert (got.input_tokens, got.output_tokens) == (10**16, 10**16)


def test_the_last_instant_of_a_sunday_stays_in_its_week_day_and_month(url: str) -> None:
    # 2025-08-31 is a Sunday and the last day of a month; SQLite's date functions round
    # 23:59:59.9999 up to the next day, so the keys must be cut from the stored day text
    last = datetime(2025, 8, 31, 23, 59, 59, 999900, tzinfo=UTC)
    e = UsageEvent(
        model="m",
        usage=Usage(7, 3),
        cost=Cost(status="priced", total=Decimal("1.500000000000000001")),
        tags=("a",),
        timestamp=last,
    )
    want = {
        "day": date(2025, 8, 31),
        "week": date(2025, 8, 25),  # the Monday of that ISO week
        "month": date(2025, 8, 1),
    }
    with Ledger(url, sync=True) as ledger:
        ledger.record(e)
        store = ledger._core.store
        for key, day in want.items():
            for since, filters in [
                (None, {}),  # the rollups
                (datetime(2025, 8, 31, 12, tzinfo=UTC), {}),  # a partial day: the events
                (None, {"tag": ["a", "b"]}),  # several tags: the events table
            ]:
                (got,) = summarize(store, by=(key,), since=since, until=None, filters=filters)
                assert (got.key, got.requests, got.cost) == (
                    (day,),
                    1,
                    Decimal("1.500000000000000001"),
                ), (key, since, filters)
            (direct,) = summarize_events(store, by=(key, "tag"), since=None, until=None, filters={})
            assert direct.key == (day, "a")
