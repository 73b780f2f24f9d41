"""Daily rollups: per-day sums of the events table, kept on write, that answer reports fast.

Two tables, maintained inside the very transaction that inserts events (from exactly the
rows newly inserted, so a duplicate is never counted) or re-prices them (the old figures
are subtracted and the new ones added):

- ``costledger_rollup_daily``: one row per UTC day and group of ``DIMENSIONS``;
- ``costledger_rollup_tags``: the same per tag (each distinct tag of an event counts it
  once; an untagged event counts under tag ``NULL``).

A summary whose keys and filters are all rollup columns is answered from them; time
bounds that are not whole UTC days are answered from the rollups for the whole days and
from the events table for the partial days at either end, so the result is exactly what
the events table alone would give.

Money stays exact without the cost of a Python aggregate per row: an amount ``x`` (at
most 18 decimal places) is kept as three BIGINT columns, its whole currency units
``cost_units = floor(x)``, then ``cost_nano`` (the next nine decimals) and ``cost_atto``
(the last nine), each part in ``[0, 10**9)`` for one event. SQL sums each column exactly
(SQLite's integer ``sum`` raises on overflow rather than going through a float; PostgreSQL
sums BIGINT into NUMERIC) and ``x = cost_units + cost_nano * 1e-9 + cost_atto * 1e-18``.
``cost_places`` is the most decimal places of any amount summed, so a sum is shown as
written (``1.0``, not ``1.000000000000000000``). Limits, per row (one day and group):
9.2e18 currency units, and 9.2e9 priced events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    cast,
    func,
    or_,
    select,
    true,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from .._events import UsageEvent
from ._money import utc_datetime
from ._query import FILTERS, SUMMARY_KEYS, SummaryRow, _as_date, _values, summarize_events

if TYPE_CHECKING:
    from ._core import Ledger
    from ._rows import StoredEvent
    from ._store import CostChange, Store

__all__ = [
    "DAILY_TABLE",
    "DIMENSIONS",
    "TAGS_TABLE",
    "RollupDelta",
    "apply_cost_changes",
    "apply_inserted",
    "cost_parts",
    "cost_value",
    "daily_table",
    "rebuild_rollups",
    "rollup_rows",
    "summarize",
    "tags_table",
]

DAILY_TABLE = "costledger_rollup_daily"
TAGS_TABLE = "costledger_rollup_tags"

DIMENSIONS: tuple[str, ...] = (
    "model",
    "response_model",
    "provider",
    "user",
    "team",
    "project",
    "feature",
    "source",
    "status",
    "currency",
    "pricing_status",
)
"""What a rollup row is grouped by, besides its day (and, in the tag rollup, its tag)."""

COUNTERS: tuple[str, ...] = (
    "requests",
    "errors",
    "cancelled",
    "unpriced",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_units",
    "cost_nano",
    "cost_atto",
)
"""Measures added on write; ``cost_places`` (a maximum) follows them."""
MEASURES: tuple[str, ...] = (*COUNTERS, "cost_places")
_N = len(COUNTERS)
_PLACES = _N  # index of cost_places in an accumulator
_NANO = 10**9
_SCALE = 10**18
_EXACT = Context(prec=120)
_ROLLUP_FILTERS = frozenset(FILTERS)
_TIME_KEYS = frozenset(("day", "week", "month"))
_UTC = timezone.utc
_FLUSH_GROUPS = 50_000  # rebuild: groups held in memory before they are written


class RollupDay(TypeDecorator[date]):
    """A UTC calendar day: ``DATE`` on PostgreSQL, ``YYYY-MM-DD`` text on SQLite."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Date())
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = date.fromisoformat(value)
        if dialect.name == "postgresql":
            return value
        return value.isoformat()

    def process_result_value(self, value: Any, dialect: Dialect) -> date | None:
        if value is None or isinstance(value, date):
            return value
        return date.fromisoformat(str(value))

    @property
    def python_type(self) -> type[date]:
        return date


def _columns(with_tag: bool) -> list[Column[Any]]:
    cols: list[Column[Any]] = [
        Column("day", RollupDay(), primary_key=True),
        Column("gkey", String(), primary_key=True),
    ]
    if with_tag:
        cols.append(Column("tag", String(), nullable=True))
    for name in DIMENSIONS:
        required = name in ("source", "status", "currency", "pricing_status")
        cols.append(Column(name, String(), nullable=not required))
    cols.extend(Column(name, BigInteger(), nullable=False) for name in COUNTERS)
    cols.append(Column("cost_places", Integer(), nullable=False))
    return cols


rollup_metadata = MetaData()
"""The rollup tables (created by migration 0002; kept apart from the events' SQLModel metadata)."""
daily_table = Table(DAILY_TABLE, rollup_metadata, *_columns(with_tag=False))
tags_table = Table(TAGS_TABLE, rollup_metadata, *_columns(with_tag=True))


# -- money as two integers ---------------------------------------------------------------------


def cost_parts(text: str) -> tuple[int, int, int, int]:
    """``(cost_units, cost_nano, cost_atto, places)`` of a stored amount in plain decimal text.

    ``places`` counts the decimals without trailing zeros. The amount must have at most
    18 places (the ledger rounds to 18 before storing).
    """
    negative = text.startswith("-")
    if negative or text.startswith("+"):
        text = text[1:]
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    places = len(frac)
    if places > 18:
        raise ValueError(f"money {text!r} has more than 18 decimal places")
    units = int(whole or "0") * _SCALE + (int(frac) * 10 ** (18 - places) if frac else 0)
    if negative:
        units = -units
    whole_units, rest = divmod(units, _SCALE)
    nano, atto = divmod(rest, _NANO)
    return whole_units, nano, atto, places


def cost_value(units: Any, nano: Any, atto: Any, places: Any) -> Decimal:
    """The exact amount of summed ``cost_units``, ``cost_nano``, ``cost_atto`` columns."""
    total = int(units or 0) * _SCALE + int(nano or 0) * _NANO + int(atto or 0)
    value = _EXACT.scaleb(Decimal(total), -18)
    return value.quantize(Decimal(1).scaleb(-int(places or 0)), context=_EXACT)


# -- accumulating events -------------------------------------------------------------------------

Acc = list[int]


class RollupDelta:
    """What a set of events (or cost changes) adds to each rollup row."""

    __slots__ = ("_by_tags", "daily", "tags")

    def __init__(self) -> None:
        # (day, *dims) + tag set -> accumulator; folded into daily and tags by ``fold``
        self._by_tags: dict[tuple[tuple[Any, ...], tuple[str, ...]], Acc] = {}
        self.daily: dict[tuple[Any, ...], Acc] = {}
        self.tags: dict[tuple[Any, ...], Acc] = {}

    def __len__(self) -> int:
        return len(self._by_tags)

    def add(
        self,
        day: date,
        dims: tuple[str | None, ...],
        tags: Sequence[str],
        counts: Sequence[int],
        total: str | None,
        sign: int = 1,
    ) -> None:
        """One event: ``dims`` in ``DIMENSIONS`` order, ``counts`` the 9 first ``COUNTERS``
        (requests ... reasoning_tokens), ``total`` its stored total cost text or ``None``."""
        key = ((day, *dims), tuple(tags))
        acc = self._by_tags.get(key)
        if acc is None:
            acc = self._by_tags[key] = [0] * (_N + 1)
        for i, n in enumerate(counts):
            acc[i] += sign * n
        if total is not None:
            whole, nano, atto, places = cost_parts(total)
            acc[9] += sign * whole
            acc[10] += sign * nano
            acc[11] += sign * atto
            if places > acc[_PLACES]:
                acc[_PLACES] = places

    def add_event(self, event: UsageEvent, sign: int = 1) -> None:
        from ._store import _text_money

        u = event.usage
        c = event.cost
        status = event.status
        total = c.total
        self.add(
            event.timestamp.astimezone(_UTC).date(),
            (
                event.model,
                event.response_model,
                event.provider,
                event.user,
                event.team,
                event.project,
                event.feature,
                event.source,
                status,
                c.currency,
                c.status,
            ),
            event.tags,
            (
                1,
                status == "error",
                status == "cancelled",
                total is None and c.status != "not_priced",
                u.input_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.output_tokens,
                u.reasoning_tokens,
            ),
            _text_money("cost.total", total),
            sign,
        )

    def add_stored(self, row: StoredEvent, sign: int = 1) -> None:
        from ._money import money_text

        total = row.total_cost
        status = row.status
        self.add(
            row.timestamp.astimezone(_UTC).date(),
            (
                row.model,
                row.response_model,
                row.provider,
                row.user,
                row.team,
                row.project,
                row.feature,
                row.source,
                status,
                row.currency,
                row.pricing_status,
            ),
            row.tags,
            (
                1,
                status == "error",
                status == "cancelled",
                total is None and row.pricing_status != "not_priced",
                row.input_tokens,
                row.cache_read_tokens,
                row.cache_write_tokens,
                row.output_tokens,
                row.reasoning_tokens,
            ),
            None if total is None else money_text(total),
            sign,
        )

    def fold(self) -> None:
        """Spread the per-tag-set sums into the daily and tag rows."""
        daily = self.daily
        tags = self.tags
        for (key, tag_set), acc in self._by_tags.items():
            _merge(daily, key, acc)
            for tag in dict.fromkeys(tag_set) or (None,):
                _merge(tags, (key[0], tag, *key[1:]), acc)
        self._by_tags.clear()


def _merge(into: dict[tuple[Any, ...], Acc], key: tuple[Any, ...], acc: Acc) -> None:
    mine = into.get(key)
    if mine is None:
        into[key] = list(acc)
        return
    for i in range(_N):
        mine[i] += acc[i]
    if acc[_PLACES] > mine[_PLACES]:
        mine[_PLACES] = acc[_PLACES]


# -- writing ---------------------------------------------------------------------------------------

_UPSERT_CACHE: dict[tuple[str, str], str] = {}


def _upsert_sql(table: str, dialect: str) -> str:
    cached = _UPSERT_CACHE.get((table, dialect))
    if cached is not None:
        return cached
    names = ["day", "gkey", *(("tag",) if table == TAGS_TABLE else ()), *DIMENSIONS, *MEASURES]
    mark = "%s" if dialect == "postgresql" else "?"
    biggest = "GREATEST" if dialect == "postgresql" else "max"
    sets = [f'"{m}" = {table}."{m}" + excluded."{m}"' for m in COUNTERS]
    sets.append(f'"cost_places" = {biggest}({table}."cost_places", excluded."cost_places")')
    sql = (
        f"INSERT INTO {table} ({', '.join(f'{chr(34)}{n}{chr(34)}' for n in names)}) "
        f"VALUES ({', '.join([mark] * len(names))}) "
        f'ON CONFLICT ("day", "gkey") DO UPDATE SET {", ".join(sets)}'
    )
    _UPSERT_CACHE[(table, dialect)] = sql
    return sql


def _gkey(values: Iterable[Any]) -> str:
    return json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)


def _day_param(day: date, dialect: str) -> Any:
    return day if dialect == "postgresql" else day.isoformat()


def write_delta(conn: Connection, delta: RollupDelta) -> set[date]:
    """Add ``delta`` to the rollup tables (inside the caller's transaction); the days touched.

    Rows are written in key order, so concurrent writers on PostgreSQL lock them in the
    same order and never deadlock.
    """
    delta.fold()
    dialect = conn.dialect.name
    days: set[date] = set()
    for table, groups in ((DAILY_TABLE, delta.daily), (TAGS_TABLE, delta.tags)):
        if not groups:
            continue
        params = []
        for key, acc in groups.items():
            day = key[0]
            days.add(day)
            rest = key[1:]
            params.append((_day_param(day, dialect), _gkey(rest), *rest, *acc))
        params.sort(key=lambda p: (p[0], p[1]))
        conn.exec_driver_sql(_upsert_sql(table, dialect), params)
        groups.clear()
    return days


def apply_inserted(conn: Connection, events: Sequence[UsageEvent]) -> None:
    """Insert hook: add the newly inserted events to the rollups."""
    delta = RollupDelta()
    add = delta.add_event
    for event in events:
        add(event)
    write_delta(conn, delta)


def apply_cost_changes(conn: Connection, changes: Sequence[CostChange]) -> None:
    """Cost hook: take each re-priced row out as it was and put it back as it is now."""
    delta = RollupDelta()
    for change in changes:
        delta.add_stored(change.before, sign=-1)
        delta.add_stored(change.after, sign=1)
    days = write_delta(conn, delta)
    if days:
        # a group whose events all moved to another group (pricing status, currency) is gone
        dialect = conn.dialect.name
        mark = "%s" if dialect == "postgresql" else "?"
        for table in (DAILY_TABLE, TAGS_TABLE):
            conn.exec_driver_sql(
                f'DELETE FROM {table} WHERE "requests" = 0 AND "day" = {mark}',
                [(_day_param(d, dialect),) for d in sorted(days)],
            )


# -- rebuilding ---------------------------------------------------------------------------------

_REBUILD_COLUMNS = (
    "timestamp",
    "model",
    "response_model",
    "provider",
    "user",
    "team",
    "project",
    "feature",
    "source",
    "status",
    "currency",
    "pricing_status",
    "tags",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_cost",
)


def rebuild_on(conn: Connection) -> int:
    """Recompute both rollup tables from the events table, inside ``conn``'s transaction.

    Reads every event once (in constant memory: groups are written every 50,000) and
    applies exactly the arithmetic of the insert hook. Returns the number of events read.
    """
    from ._money import money_text

    dialect = conn.dialect.name
    conn.exec_driver_sql(f"DELETE FROM {DAILY_TABLE}")
    conn.exec_driver_sql(f"DELETE FROM {TAGS_TABLE}")
    names = ", ".join(f'"{c}"' for c in _REBUILD_COLUMNS)
    sql = f"SELECT {names} FROM costledger_events"
    delta = RollupDelta()
    n = 0
    # (execution_options on the Connection itself would outlive this statement)
    options = {"yield_per": 20_000} if dialect == "postgresql" else {}
    result = conn.exec_driver_sql(sql, execution_options=options)
    for row in result:
        ts = row[0]
        # SQLite keeps UTC text, PostgreSQL gives an aware datetime
        day = date.fromisoformat(ts[:10]) if isinstance(ts, str) else ts.astimezone(_UTC).date()
        tags = row[12]
        if isinstance(tags, str):
            tags = json.loads(tags)
        status = row[9]
        total = row[18]
        if isinstance(total, Decimal):
            total = money_text(total)
        delta.add(
            day,
            tuple(row[1:12]),
            tags or (),
            (
                1,
                status == "error",
                status == "cancelled",
                total is None and row[11] != "not_priced",
                *row[13:18],
            ),
            total,
        )
        n += 1
        if len(delta) >= _FLUSH_GROUPS:
            write_delta(conn, delta)
    write_delta(conn, delta)
    return n


def rebuild_rollups(ledger: Ledger) -> int:
    """Recompute the rollups of ``ledger`` from its events (one transaction).

    Needed only after rows were inserted or deleted behind the ledger's back (a bulk
    load with plain SQL, a retention ``DELETE``). Returns the number of events read.
    """
    ledger.flush()
    store = ledger._core.store
    with store.write_transaction() as conn:
        return rebuild_on(conn)


def rollup_rows(ledger: Ledger, *, tags: bool = False) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rollup table as ``{(day, [tag,] *DIMENSIONS): {counter: int, "cost": Decimal}}``
    (for tests and consistency checks)."""
    store = ledger._core.store
    table = tags_table if tags else daily_table
    keys = ["day", *(("tag",) if tags else ()), *DIMENSIONS]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    with store.read_connection() as conn:
        for r in conn.execute(select(table)):
            m = r._mapping
            row: dict[str, Any] = {name: int(m[name]) for name in COUNTERS[:9]}
            row["cost"] = cost_value(m["cost_units"], m["cost_nano"], m["cost_atto"], 18)
            out[tuple(m[k] for k in keys)] = row
    return out


# -- reading -------------------------------------------------------------------------------------


def _key_expression(name: str, dialect: str, table: Table) -> ColumnElement[Any]:
    c = table.c
    if name == "day":
        return c.day
    if name in ("week", "month"):
        if dialect == "postgresql":
            return cast(func.date_trunc(name, cast(c.day, DateTime())), Date)
        if name == "week":  # the Monday of the ISO week
            return func.date(c.day, "weekday 0", "-6 days")
        return func.substr(c.day, 1, 7)
    if name == "model":
        return func.coalesce(c.response_model, c.model)
    return c[name]


def _whole_day(moment: datetime) -> bool:
    return moment.hour == moment.minute == moment.second == moment.microsecond == 0


def _check(keys: tuple[str, ...], filters: Mapping[str, Any]) -> None:
    for name in keys:
        if name not in SUMMARY_KEYS:
            raise ValueError(f"cannot summarize by {name!r}; use any of {', '.join(SUMMARY_KEYS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"summary keys repeat: {keys!r}")
    for name, value in filters.items():
        if name not in _ROLLUP_FILTERS:
            raise ValueError(f"unknown filter {name!r}; use one of {', '.join(FILTERS)}")
        if value is not None:
            _values(name, value)


def answerable(keys: Sequence[str], filters: Mapping[str, Any]) -> bool:
    """Whether the rollups can answer a summary with these keys and filters.

    Every key and filter is a rollup column; the one exception is a tag filter with
    several tags when the summary is not by tag (an event carrying two of them would be
    counted twice from the tag rollup).
    """
    wanted = filters.get("tag")
    if wanted is None or "tag" in keys:
        return True
    return isinstance(wanted, str) or len(list(wanted)) == 1


def _rollup_query(
    conn: Connection,
    keys: tuple[str, ...],
    first_day: date | None,
    end_day: date | None,
    filters: Mapping[str, Any],
) -> list[SummaryRow]:
    dialect = conn.dialect.name
    use_tags = "tag" in keys or filters.get("tag") is not None
    table = tags_table if use_tags else daily_table
    c = table.c
    key_columns = [_key_expression(name, dialect, table).label(f"k_{name}") for name in keys]
    conds: list[ColumnElement[bool]] = []
    if first_day is not None:
        conds.append(c.day >= first_day)
    if end_day is not None:
        conds.append(c.day < end_day)
    for name, value in filters.items():
        if value is None:
            continue
        values = _values(name, value)
        if name == "model":
            conds.append(or_(c.model.in_(values), c.response_model.in_(values)))
        else:
            conds.append(c[name].in_(values))
    measures = [func.sum(c[name]).label(name) for name in COUNTERS]
    measures.append(func.max(c.cost_places).label("cost_places"))
    stmt = (
        select(*key_columns, c.currency, *measures)
        .where(and_(true(), *conds))
        .group_by(*(k.element for k in key_columns), c.currency)
    )
    rows: list[SummaryRow] = []
    for r in conn.execute(stmt):
        m = r._mapping
        if not m["requests"]:
            continue
        key_values: dict[str, Any] = {}
        for name in keys:
            v = m[f"k_{name}"]
            key_values[name] = _as_date(v) if name in _TIME_KEYS else v
        rows.append(
            SummaryRow(
                by=keys,
                currency=m["currency"],
                requests=int(m["requests"]),
                errors=int(m["errors"]),
                cancelled=int(m["cancelled"]),
                unpriced=int(m["unpriced"]),
                input_tokens=int(m["input_tokens"]),
                cache_read_tokens=int(m["cache_read_tokens"]),
                cache_write_tokens=int(m["cache_write_tokens"]),
                output_tokens=int(m["output_tokens"]),
                reasoning_tokens=int(m["reasoning_tokens"]),
                cost=cost_value(m["cost_units"], m["cost_nano"], m["cost_atto"], m["cost_places"]),
                **key_values,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class Plan:
    """How a summary is answered: ``rollup_days`` ``[first, end)`` from the rollups (``None``
    bounds are open), and the ``edges`` (``[since, until)`` ranges) from the events table."""

    rollup: bool
    first_day: date | None
    end_day: date | None
    edges: tuple[tuple[datetime | None, datetime | None], ...]


def plan(
    keys: Sequence[str],
    since: datetime | date | None,
    until: datetime | date | None,
    filters: Mapping[str, Any],
) -> Plan:
    """Split a time range into whole UTC days (rollups) and partial days (events)."""
    lo = None if since is None else utc_datetime(since)
    hi = None if until is None else utc_datetime(until)
    everything = Plan(False, None, None, ((lo, hi),))
    if not answerable(keys, filters):
        return everything
    first_day: date | None = None
    end_day: date | None = None
    edges: list[tuple[datetime | None, datetime | None]] = []
    if lo is not None:
        first_day = lo.date() if _whole_day(lo) else lo.date() + timedelta(days=1)
    if hi is not None:
        end_day = hi.date()
    if first_day is not None and end_day is not None and first_day >= end_day:
        return everything  # less than one whole day: the events table, by the time index
    if lo is not None and not _whole_day(lo):
        assert first_day is not None
        edges.append((lo, _midnight(first_day)))
    if hi is not None and not _whole_day(hi):
        assert end_day is not None
        edges.append((_midnight(end_day), hi))
    return Plan(True, first_day, end_day, tuple(edges))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=_UTC)


def merge_rows(parts: Iterable[Sequence[SummaryRow]]) -> list[SummaryRow]:
    """Add up summary rows of disjoint parts of the events, group by group."""
    merged: dict[tuple[Any, ...], SummaryRow] = {}
    for rows in parts:
        for row in rows:
            k = (row.key, row.currency)
            have = merged.get(k)
            if have is None:
                merged[k] = row
                continue
            merged[k] = replace(
                have,
                requests=have.requests + row.requests,
                errors=have.errors + row.errors,
                cancelled=have.cancelled + row.cancelled,
                unpriced=have.unpriced + row.unpriced,
                input_tokens=have.input_tokens + row.input_tokens,
                cache_read_tokens=have.cache_read_tokens + row.cache_read_tokens,
                cache_write_tokens=have.cache_write_tokens + row.cache_write_tokens,
                output_tokens=have.output_tokens + row.output_tokens,
                reasoning_tokens=have.reasoning_tokens + row.reasoning_tokens,
                cost=_EXACT.add(have.cost, row.cost),
            )
    out = list(merged.values())
    out.sort(key=lambda row: (*((v is None, v) for v in row.key), row.currency))
    return out


def summarize(
    store: Store,
    *,
    by: str | Sequence[str],
    since: datetime | date | None,
    until: datetime | date | None,
    filters: Mapping[str, str | Sequence[str] | None],
    use_rollups: bool = True,
) -> list[SummaryRow]:
    """``Ledger.summary``: from the rollups where they can answer, else the events table."""
    keys = (by,) if isinstance(by, str) else tuple(by)
    _check(keys, filters)
    p = plan(keys, since, until, filters)
    if not use_rollups or not p.rollup:
        return summarize_events(store, by=keys, since=since, until=until, filters=filters)
    try:
        with store.read_connection() as conn:
            rolled = _rollup_query(conn, keys, p.first_day, p.end_day, filters)
    except sa_exc.OperationalError as exc:
        if "overflow" not in str(exc).lower():
            raise
        # an integer sum beyond 64 bits on SQLite: the events table sums exactly, slowly
        return summarize_events(store, by=keys, since=since, until=until, filters=filters)
    parts: list[Sequence[SummaryRow]] = [rolled]
    for lo, hi in p.edges:
        parts.append(summarize_events(store, by=keys, since=lo, until=hi, filters=filters))
    return merge_rows(parts)
