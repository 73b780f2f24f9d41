"""Rollups: per-day and per-month sums of the events table, kept on write, that answer
reports over millions of events in well under a second.

Five tables ("cubes"), each a grain (UTC day, or month) and a set of dimensions:

=================================== ======= ======================================== ====
table                               grain   grouped by                               tags
=================================== ======= ======================================== ====
costledger_rollup_daily             day     every dimension (``DIMENSIONS``)          no
costledger_rollup_monthly           month   every dimension                           no
costledger_rollup_core              day     every dimension but ``user``              no
costledger_rollup_core_tags         day     every dimension but ``user``              yes
costledger_rollup_core_tags_monthly month   every dimension but ``user``              yes
=================================== ======= ======================================== ====

A tag cube counts an event once under each of its distinct tags, and an untagged event
under tag ``NULL``. A summary is answered from the smallest cube that has every key and
filter it needs (``core`` unless it needs ``user``; months for the whole months of a
range when it is neither by day nor by week, days for the rest); time bounds that are
not whole UTC days are answered from the events table for those partial days, so the
result is exactly what the events table alone would give. A summary that needs both a
user and a tag, or a filter on several tags without grouping by tag, is answered from
the events table.

A summary's ``no_usage`` (calls that did not fail and reported no usage) has no column:
every group holds one ``status`` and one ``pricing_status``, so it is the ``requests`` of
the groups ``not_priced`` and not ``error`` (``no_usage_condition``), exact in rollups
written by any version.

Kept on write: the insert hook runs in the transaction that inserted the events, with
exactly the rows newly inserted (a duplicate is never counted). It sums them in Python
per day, dimensions and tag set (``RollupDelta``, about a microsecond an event), folds
those sums into each cube's groups, and upserts them (``INSERT ... ON CONFLICT DO
UPDATE``, in key order so concurrent writers on PostgreSQL lock rows in the same order).
Re-pricing does the same with the old figures negated and the new ones added, then drops
groups left empty. The cost of a write is one upsert per cube group a batch touches.

Money stays exact without a Python aggregate per row: an amount ``x`` (at most 18
decimal places) is kept as three BIGINT columns, its whole currency units
``cost_units = floor(x)``, then ``cost_nano`` (the next nine decimals) and ``cost_atto``
(the last nine), each in ``[0, 10**9)`` for one event. SQL sums each column exactly
(SQLite's integer ``sum`` raises on overflow rather than go through a float; PostgreSQL
sums BIGINT into NUMERIC) and ``x = cost_units + cost_nano * 1e-9 + cost_atto * 1e-18``.
``cost_places`` is the most decimal places of any amount summed, as the events table
stores them, so a sum reads as the events table's own sum does: on SQLite the places each
amount was written with (``1.0``, not ``1.000000000000000000``); on PostgreSQL always 18,
the scale of its ``NUMERIC(38, 18)`` (``0.028700000000000000``), on write as on rebuild.
Limits, per rollup row: 9.2e18 currency units, and 9.2e9 priced events. A write that would
take a sum past 64 bits is refused (``ValueError``: the event is rejected, never rounded;
SQLite would make the sum a float, so its upsert turns that into a NOT NULL violation),
as is a single ``total_cost`` past 2^63 - 1 units or a token count past ``MAX_TOKENS``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Context, Decimal
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Dialect,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    or_,
    select,
    true,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from .._usage import MAX_TOKENS, check_count
from ._money import MONEY_SCALE, utc_datetime
from ._query import (
    FILTERS,
    SUMMARY_KEYS,
    SummaryRow,
    _as_date,
    _values,
    no_usage_condition,
    summarize_events,
)
from ._rows import COLUMNS

if TYPE_CHECKING:
    from ._core import Ledger
    from ._rows import StoredEvent
    from ._store import CostChange, Store

__all__ = [
    "BOUND",
    "CORE_DIMENSIONS",
    "CUBES",
    "DIMENSIONS",
    "Cube",
    "RollupDelta",
    "apply_cost_changes",
    "apply_inserted",
    "bounds",
    "cost_parts",
    "cost_value",
    "plan",
    "rebuild_rollups",
    "rollup_rows",
    "summarize",
    "write_delta",
]

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
"""What a full rollup row is grouped by, besides its day or month (and tag)."""
CORE_DIMENSIONS: tuple[str, ...] = tuple(d for d in DIMENSIONS if d != "user")
"""The dimensions of the ``core`` cubes: every one but the (many) users."""
REQUIRED_DIMENSIONS = frozenset(("source", "status", "currency", "pricing_status"))

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
BOUND = "max_cost"
"""Daily cubes only (migration 0003): an upper bound of the float of any one call's total
in the group, ``NULL`` while the group has no priced call (see ``top``)."""
_N = len(COUNTERS)
_NO_BOUND = -math.inf  # an accumulator's bound before any priced call
_EMPTY: tuple[float, ...] = (0,) * (_N + 1) + (_NO_BOUND,)
_NANO = 10**9
_SCALE = 10**18
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
"""What a 64-bit rollup column holds: every sum of a group (a day's or a month's calls)."""
_EXACT = Context(prec=120)
_TIME_KEYS = frozenset(("day", "week", "month"))
_UTC = timezone.utc
_FLUSH_GROUPS = 50_000  # rebuild: groups held in memory before they are written


@dataclass(frozen=True, slots=True)
class Cube:
    """One rollup table: its grain, its dimensions, whether it is split by tag."""

    table: str
    grain: str  # "day" or "month"
    dims: tuple[str, ...]
    tags: bool

    @property
    def bounded(self) -> bool:
        """Whether the table has ``max_cost`` (the daily ones: ``top`` prunes by day)."""
        return self.grain == "day"

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column, in table order."""
        return self.layout(bounds=True)

    def layout(self, *, bounds: bool) -> tuple[str, ...]:
        """The columns; ``bounds=False``: as migration 0002 created them (no ``max_cost``)."""
        extra = (BOUND,) if bounds and self.bounded else ()
        return ("day", "gkey", *(("tag",) if self.tags else ()), *self.dims, *MEASURES, *extra)


CUBES: tuple[Cube, ...] = (
    Cube("costledger_rollup_daily", "day", DIMENSIONS, False),
    Cube("costledger_rollup_monthly", "month", DIMENSIONS, False),
    Cube("costledger_rollup_core", "day", CORE_DIMENSIONS, False),
    Cube("costledger_rollup_core_tags", "day", CORE_DIMENSIONS, True),
    Cube("costledger_rollup_core_tags_monthly", "month", CORE_DIMENSIONS, True),
)
_BY_TABLE = {cube.table: cube for cube in CUBES}


class RollupDay(TypeDecorator[date]):
    """A UTC calendar day (a month: its first day): ``DATE`` on PostgreSQL, ``YYYY-MM-DD``
    text on SQLite."""

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


def cube_columns(cube: Cube, *, primary_key: bool = True, bounds: bool = True) -> list[Column[Any]]:
    """The SQLAlchemy columns of a cube's table (the migrations create the same)."""
    cols: list[Column[Any]] = [
        Column("day", RollupDay(), primary_key=primary_key, nullable=False),
        Column("gkey", String(), primary_key=primary_key, nullable=False),
    ]
    if cube.tags:
        cols.append(Column("tag", String(), nullable=True))
    cols.extend(
        Column(name, String(), nullable=name not in REQUIRED_DIMENSIONS) for name in cube.dims
    )
    cols.extend(Column(name, BigInteger(), nullable=False) for name in COUNTERS)
    cols.append(Column("cost_places", Integer(), nullable=False))
    if bounds and cube.bounded:
        cols.append(bound_column())
    return cols


def bound_column() -> Column[Any]:
    """``max_cost``: REAL on SQLite, double precision on PostgreSQL."""
    return Column(BOUND, Float(precision=53), nullable=True)


rollup_metadata = MetaData()
"""The rollup tables (created by migration 0002; kept apart from the events' SQLModel metadata)."""
TABLES: dict[str, Table] = {
    cube.table: Table(cube.table, rollup_metadata, *cube_columns(cube)) for cube in CUBES
}


def cube_schema(cube: Cube, dialect: str, *, bounds: bool = True) -> list[Any]:
    """Columns and constraints of a cube's table (create it with ``sqlite_with_rowid=False``:
    one B-tree keyed by ``(day, gkey)`` on SQLite); ``bounds=False``: as migration 0002
    created it, before 0003 added ``max_cost``."""
    from sqlalchemy import CheckConstraint, PrimaryKeyConstraint

    items: list[Any] = list(cube_columns(cube, primary_key=False, bounds=bounds))
    items.append(PrimaryKeyConstraint("day", "gkey", name=f"{cube.table}_pkey"))
    if dialect == "sqlite":
        # SQLite turns an integer sum that overflows 64 bits into a float: refuse instead
        for name in ("cost_units", "cost_nano", "cost_atto"):
            items.append(
                CheckConstraint(f"typeof({name}) = 'integer'", name=f"{cube.table}_{name}_exact")
            )
    return items


def truncate_trigger_sql() -> list[str]:
    """PostgreSQL: empty every cube whenever the events table is truncated."""
    return [
        f"""
        CREATE OR REPLACE FUNCTION costledger_rollups_truncate() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE {", ".join(cube.table for cube in CUBES)};
            RETURN NULL;
        END $$
        """,
        "DROP TRIGGER IF EXISTS costledger_events_truncate ON costledger_events",
        "CREATE TRIGGER costledger_events_truncate AFTER TRUNCATE ON costledger_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION costledger_rollups_truncate()",
    ]


def ensure_cube_tables(conn: Connection) -> None:
    """Create missing cube tables, add a missing ``max_cost`` and drop retired tables
    (``costledger_rollup_*`` not in ``CUBES``): repairs a database whose rollup layout
    predates this one."""
    from sqlalchemy import inspect

    dialect = conn.dialect.name
    inspector = inspect(conn)
    present = {
        name for name in inspector.get_table_names() if name.startswith("costledger_rollup_")
    }
    wanted = {cube.table for cube in CUBES}
    for name in sorted(present - wanted):
        conn.exec_driver_sql(f"DROP TABLE {name}")
    for cube in CUBES:
        if cube.table not in present:
            Table(
                cube.table, MetaData(), *cube_schema(cube, dialect), sqlite_with_rowid=False
            ).create(conn)
        elif cube.bounded and BOUND not in {c["name"] for c in inspector.get_columns(cube.table)}:
            add_bound_column(conn, cube)
    if dialect == "postgresql" and present != wanted:
        for sql in truncate_trigger_sql():
            conn.exec_driver_sql(sql)


def add_bound_column(conn: Connection, cube: Cube) -> None:
    """``ALTER TABLE ... ADD COLUMN max_cost`` (NULL: no bound yet; a rebuild fills it)."""
    kind = "DOUBLE PRECISION" if conn.dialect.name == "postgresql" else "REAL"
    conn.exec_driver_sql(f'ALTER TABLE {cube.table} ADD COLUMN "{BOUND}" {kind}')


# -- money as three integers ---------------------------------------------------------------------


def cost_parts(text: str) -> tuple[int, int, int, int]:
    """``(cost_units, cost_nano, cost_atto, places)`` of an amount in plain decimal text.

    ``places`` counts the decimals as written (what SQLite stores), at most 18 (the
    ledger rounds to 18 before storing).
    """
    whole, _, frac = text.partition(".")
    places = len(frac)
    if places > 18:
        raise ValueError(f"money {text!r} has more than 18 decimal places")
    units = int(whole + frac) * 10 ** (18 - places)  # "-0.5" -> int("-05"): the sign stays
    whole_units, rest = divmod(units, _SCALE)
    if not _INT64_MIN <= whole_units <= _INT64_MAX:
        # the events table holds up to 10^20, but the rollups sum whole units in 64 bits
        raise ValueError(
            f"total_cost {text} is too large for the ledger's sums: an amount (and each "
            "day's or month's sum of a group) must stay within 9223372036854775807 "
            "currency units (2^63 - 1) either side of zero"
        )
    nano, atto = divmod(rest, _NANO)
    return whole_units, nano, atto, places


def cost_value(units: Any, nano: Any, atto: Any, places: Any) -> Decimal:
    """The exact amount of summed ``cost_units``, ``cost_nano``, ``cost_atto`` columns."""
    total = int(units or 0) * _SCALE + int(nano or 0) * _NANO + int(atto or 0)
    value = _EXACT.scaleb(Decimal(total), -18)
    return value.quantize(Decimal(1).scaleb(-int(places or 0)), context=_EXACT)


# -- accumulating events -------------------------------------------------------------------------

Acc = list[float]
"""The 13 ``MEASURES`` (ints), then the bound (a float, ``-inf`` for none)."""
GroupKey = tuple[tuple[Any, ...], tuple[str, ...]]
"""``((day, *DIMENSIONS), distinct tags)``"""


(
    _R_TIMESTAMP,
    _R_SOURCE,
    _R_PROVIDER,
    _R_MODEL,
    _R_RESPONSE_MODEL,
    _R_STATUS,
    _R_USER,
    _R_TEAM,
    _R_PROJECT,
    _R_FEATURE,
    _R_TAGS,
    _R_INPUT,
    _R_OUTPUT,
    _R_CACHE_READ,
    _R_CACHE_WRITE,
    _R_REASONING,
    _R_PRICING,
    _R_CURRENCY,
    _R_TOTAL,
) = (
    COLUMNS.index(name)
    for name in (
        "timestamp",
        "source",
        "provider",
        "model",
        "response_model",
        "status",
        "user",
        "team",
        "project",
        "feature",
        "tags",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "pricing_status",
        "currency",
        "total_cost",
    )
)
_DAYS: dict[str, date] = {}
_TAG_SETS: dict[str, tuple[str, ...]] = {}
_row_parts_cache: dict[str, tuple[int, int, int, int, float]] = {}


def _day(text: str) -> date:
    day = date.fromisoformat(text)
    if len(_DAYS) >= 4096:
        _DAYS.clear()
    _DAYS[text] = day
    return day


def _tag_set(text: str) -> tuple[str, ...]:
    """The distinct tags of a row's tag text (cached: a service uses a handful of sets)."""
    tags = tuple(dict.fromkeys(json.loads(text)))
    if len(_TAG_SETS) >= 4096:
        _TAG_SETS.clear()
    _TAG_SETS[text] = tags
    return tags


def _row_parts(text: str) -> tuple[int, int, int, int, float]:
    """``cost_parts`` of a stored amount's text, then its float (for ``max_cost``)."""
    parts = (*cost_parts(text), float(text))
    if len(_row_parts_cache) >= 65_536:
        _row_parts_cache.clear()
    _row_parts_cache[text] = parts
    return parts


def _too_many_tokens(n_in: int, n_out: int) -> None:
    """``Usage``'s refusal, for a row that did not come through a ``Usage`` (ingest reads
    its own lines directly): every stored count is within ``MAX_TOKENS``."""
    name, value = ("input_tokens", n_in) if n_in > MAX_TOKENS else ("output_tokens", n_out)
    check_count(name, value)


_BUCKET_MIN_ROWS = 8  # fewer rows (a ``Ledger.record`` call): row by row is as fast
_get_timestamp = itemgetter(_R_TIMESTAMP)
_first_ten = itemgetter(slice(0, 10))  # a stored UTC timestamp's day
_get_input = itemgetter(_R_INPUT)
_get_output = itemgetter(_R_OUTPUT)
_get_cache_read = itemgetter(_R_CACHE_READ)
_get_cache_write = itemgetter(_R_CACHE_WRITE)
_get_reasoning = itemgetter(_R_REASONING)
_get_total = itemgetter(_R_TOTAL)
_group_of = itemgetter(
    _R_MODEL,
    _R_RESPONSE_MODEL,
    _R_PROVIDER,
    _R_USER,
    _R_TEAM,
    _R_PROJECT,
    _R_FEATURE,
    _R_SOURCE,
    _R_STATUS,
    _R_CURRENCY,
    _R_PRICING,
    _R_TAGS,
)
"""A row's group values in ``DIMENSIONS`` order (a rollup key's), then its tags text."""
_part_units, _part_nano, _part_atto, _part_places, _part_float = (itemgetter(i) for i in range(5))


def _merge_acc(mine: Acc, acc: Acc) -> None:
    """Add ``acc``, the sums of some rows of a group, to ``mine``, the group's so far."""
    for i in range(12):
        mine[i] += acc[i]
    if acc[12] > mine[12]:
        mine[12] = acc[12]
    if acc[13] > mine[13]:
        mine[13] = acc[13]


class RollupDelta:
    """What a set of events (or cost changes) adds, per day, dimensions and tag set."""

    __slots__ = ("groups", "min_places")

    def __init__(self, min_places: int = 0) -> None:
        """``min_places``: the fewest places an amount counts with (18 on PostgreSQL,
        whose ``NUMERIC(38, 18)`` gives every stored amount 18: see ``places_of``)."""
        self.groups: dict[GroupKey, Acc] = {}
        self.min_places = min_places

    def __len__(self) -> int:
        return len(self.groups)

    def add(
        self,
        day: date,
        dims: tuple[str | None, ...],
        tags: Iterable[str],
        counts: Sequence[int],
        total: str | None,
        sign: int = 1,
    ) -> None:
        """One event: ``dims`` in ``DIMENSIONS`` order, ``counts`` the 9 first ``COUNTERS``
        (requests ... reasoning_tokens), ``total`` its stored total cost text or ``None``.
        ``sign=-1`` takes an event out (re-pricing): its amount leaves the sums, but not
        the bound, which only ever rises until a rebuild."""
        key = ((day, *dims), tuple(dict.fromkeys(tags)))
        acc = self.groups.get(key)
        if acc is None:
            acc = self.groups[key] = list(_EMPTY)
        for i, n in enumerate(counts):
            acc[i] += sign * n
        if total is not None:
            whole, nano, atto, places = cost_parts(total)
            acc[9] += sign * whole
            acc[10] += sign * nano
            acc[11] += sign * atto
            if places < self.min_places:
                places = self.min_places
            if places > acc[12]:
                acc[12] = places
            if sign > 0:
                approx = float(total)  # correctly rounded, so monotonic in the amount
                if approx > acc[13]:
                    acc[13] = approx

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Newly inserted rows, in the ledger's SQLite form (``sqlite_params``): the hot
        path of every write, from ``Ledger.record`` and from ``ingest`` alike.

        The rows are first put in buckets by their group's values, fetched in C
        (``_group_of``), and each bucket's counts are summed in C (``sum(map(...))``);
        only an amount's parts are a Python step per row. Anything that bucketing does
        not take as it is (a count past ``MAX_TOKENS``, an amount the rollups cannot
        hold, a value of an unexpected type) goes through ``_add_each``, the row by row
        loop, which adds the same sums or raises what it always raised."""
        rows = rows if type(rows) is list else list(rows)
        if len(rows) < _BUCKET_MIN_ROWS:
            self._add_each(rows)
            return
        try:
            local = self._bucketed(rows)
        except Exception:
            self._add_each(rows)
            return
        groups = self.groups
        if not groups:
            self.groups = local
            return
        for key, acc in local.items():
            mine = groups.get(key)
            if mine is None:
                groups[key] = acc
            else:
                _merge_acc(mine, acc)

    def _bucketed(self, rows: list[Sequence[Any]]) -> dict[GroupKey, Acc]:
        """``add_rows``'s sums of ``rows`` in a new dict; raises on anything unusual."""
        if (
            max(map(_get_input, rows)) > MAX_TOKENS  # they bound every other count
            or max(map(_get_output, rows)) > MAX_TOKENS
        ):
            raise ValueError("a count past MAX_TOKENS: row by row, to name it")
        buckets: dict[tuple[Any, ...], list[Sequence[Any]]] = {}
        get = buckets.get
        days_of = map(_first_ten, map(_get_timestamp, rows))
        for key, row in zip(zip(days_of, map(_group_of, rows), strict=True), rows, strict=True):
            bucket = get(key)
            if bucket is None:
                buckets[key] = [row]
            else:
                bucket.append(row)
        out: dict[GroupKey, Acc] = {}
        days = _DAYS
        tag_sets = _TAG_SETS
        parts = _row_parts_cache.get
        min_places = self.min_places
        for (stamp, values), bucket in buckets.items():
            tags = values[-1]
            status = values[8]
            key = (
                (days.get(stamp) or _day(stamp), *values[:-1]),
                () if tags == "[]" else tag_sets.get(tags) or _tag_set(tags),
            )
            n = len(bucket)
            acc = list(_EMPTY)
            acc[0] = n
            if status == "error":
                acc[1] = n
            elif status == "cancelled":
                acc[2] = n
            acc[4] = sum(map(_get_input, bucket))
            acc[5] = sum(map(_get_cache_read, bucket))
            acc[6] = sum(map(_get_cache_write, bucket))
            acc[7] = sum(map(_get_output, bucket))
            acc[8] = sum(map(_get_reasoning, bucket))
            totals = list(map(_get_total, bucket))
            nulls = totals.count(None)
            if nulls:
                if values[10] != "not_priced":
                    acc[3] = nulls
                totals = [t for t in totals if t is not None]
            if totals:
                amounts = [parts(t) or _row_parts(t) for t in totals]
                acc[9] = sum(map(_part_units, amounts))
                acc[10] = sum(map(_part_nano, amounts))
                acc[11] = sum(map(_part_atto, amounts))
                acc[12] = max(max(map(_part_places, amounts)), min_places)
                acc[13] = max(map(_part_float, amounts))
            mine = out.get(key)
            if mine is None:
                out[key] = acc
            else:  # two tag texts of one tag set (a tag twice)
                _merge_acc(mine, acc)
        return out

    def _add_each(self, rows: Iterable[Sequence[Any]]) -> None:
        """``add_rows`` row by row."""
        groups = self.groups
        parts = _row_parts_cache.get
        days = _DAYS
        tag_sets = _TAG_SETS
        empty = _EMPTY
        max_tokens = MAX_TOKENS
        min_places = self.min_places
        for r in rows:
            stamp = r[_R_TIMESTAMP][:10]  # the stored text is UTC: its day is its first ten
            day = days.get(stamp) or _day(stamp)
            status = r[_R_STATUS]
            pricing = r[_R_PRICING]
            tags = r[_R_TAGS]
            key = (
                (
                    day,
                    r[_R_MODEL],
                    r[_R_RESPONSE_MODEL],
                    r[_R_PROVIDER],
                    r[_R_USER],
                    r[_R_TEAM],
                    r[_R_PROJECT],
                    r[_R_FEATURE],
                    r[_R_SOURCE],
                    status,
                    r[_R_CURRENCY],
                    pricing,
                ),
                () if tags == "[]" else tag_sets.get(tags) or _tag_set(tags),
            )
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = list(empty)
            acc[0] += 1
            if status == "error":
                acc[1] += 1
            elif status == "cancelled":
                acc[2] += 1
            n_in = r[_R_INPUT]
            n_out = r[_R_OUTPUT]
            if n_in > max_tokens or n_out > max_tokens:  # they bound every other count
                _too_many_tokens(n_in, n_out)
            acc[4] += n_in
            acc[5] += r[_R_CACHE_READ]
            acc[6] += r[_R_CACHE_WRITE]
            acc[7] += n_out
            acc[8] += r[_R_REASONING]
            total = r[_R_TOTAL]
            if total is None:
                if pricing != "not_priced":
                    acc[3] += 1
                continue
            whole, nano, atto, places, approx = parts(total) or _row_parts(total)
            acc[9] += whole
            acc[10] += nano
            acc[11] += atto
            if places < min_places:
                places = min_places
            if places > acc[12]:
                acc[12] = places
            if approx > acc[13]:
                acc[13] = approx

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


# -- writing ---------------------------------------------------------------------------------------

_Q = '"{}"'.format
_UPSERT_CACHE: dict[tuple[str, str, bool], str] = {}
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_GKEYS: dict[tuple[Any, ...], str] = {}


def _gkey(values: tuple[Any, ...]) -> str:
    """A group's dimension values (tag first in a tag cube) as one text key: JSON, so it
    is unambiguous and keeps NULL apart from any string."""
    key = _GKEYS.get(values)
    if key is None:
        key = _encode(list(values))
        if len(_GKEYS) >= 65_536:
            _GKEYS.clear()
        _GKEYS[values] = key
    return key


_PG_GKEY_CHARS = 600
"""The longest key PostgreSQL's primary key takes as it is: 2,400 bytes of UTF-8 at most,
under the 2,704 bytes of a btree entry (with the day). Each dimension is held to
``_text.KEY_TEXT_LIMIT`` characters, but eleven of them together are not."""


def _pg_gkey(values: tuple[Any, ...]) -> str:
    """``_gkey`` on PostgreSQL: a key past ``_PG_GKEY_CHARS`` as ``#`` and the SHA-256 of
    its text (no JSON key starts with ``#``). SQLite has no such limit, and its rollups
    written before keep their keys."""
    key = _gkey(values)
    if len(key) <= _PG_GKEY_CHARS:
        return key
    return "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _upsert_sql(cube: Cube, dialect: str, bounds: bool = True) -> str:
    cached = _UPSERT_CACHE.get((cube.table, dialect, bounds))
    if cached is not None:
        return cached
    names = cube.layout(bounds=bounds)
    quoted = ", ".join(_Q(n) for n in names)
    table = cube.table
    sums = {m: f"{table}.{_Q(m)} + excluded.{_Q(m)}" for m in COUNTERS}
    if dialect == "postgresql":  # a BIGINT sum past 64 bits is an error ("out of range")
        sets = [f"{_Q(m)} = {total}" for m, total in sums.items()]
    else:  # SQLite would make it a REAL without a word: NULL instead, refused (NOT NULL)
        sets = [
            f"{_Q(m)} = CASE WHEN typeof({total}) = 'integer' THEN {total} END"
            for m, total in sums.items()
        ]
    bound = BOUND in names
    if dialect == "postgresql":
        sets.append(f'"cost_places" = GREATEST({table}."cost_places", excluded."cost_places")')
        if bound:  # GREATEST skips NULLs
            sets.append(f'"{BOUND}" = GREATEST({table}."{BOUND}", excluded."{BOUND}")')
        # the rows travel as one JSON document (one parameter, parsed in C by the server)
        fields = []
        for i, n in enumerate(names):
            if n == "day":
                fields.append(f"(e->>{i})::date")
            elif n == BOUND:
                fields.append(f"(e->>{i})::float8")
            elif n in MEASURES:
                fields.append(f"(e->>{i})::bigint")
            else:
                fields.append(f"(e->>{i})")
        sql = (
            f"INSERT INTO {table} ({quoted}) SELECT {', '.join(fields)} "
            "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(e, n) ORDER BY n "
        )
    else:
        sets.append(f'"cost_places" = max({table}."cost_places", excluded."cost_places")')
        if bound:  # SQLite's max() of a NULL is NULL: a missing side takes the other's value
            old, new = f'{table}."{BOUND}"', f'excluded."{BOUND}"'
            sets.append(f'"{BOUND}" = max(coalesce({old}, {new}), coalesce({new}, {old}))')
        # one placeholder group per row: the statement is repeated over a chunk of rows
        # by ``_sqlite_upsert`` (``{rows}`` below)
        sql = f"INSERT INTO {table} ({quoted}) VALUES {{rows}} "
    sql += f'ON CONFLICT ("day", "gkey") DO UPDATE SET {", ".join(sets)}'
    _UPSERT_CACHE[(cube.table, dialect, bounds)] = sql
    return sql


_UPSERT_PARAMS = 30_000  # under SQLite's 32,766 host parameters


def _sqlite_upsert(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Upsert ``rows`` with one multi-row statement per chunk, not ``executemany``.

    ``executemany`` steps each row on its own and gives up the GIL around every step; in a
    process whose other threads are busy (the host recording calls) each step then waits
    for the GIL to come back, which made the rollup upserts of a batch take longer than its
    insert. One statement per chunk waits once."""
    width = len(rows[0])
    per_chunk = max(1, _UPSERT_PARAMS // width)
    group = "(" + ",".join("?" * width) + ")"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start : start + per_chunk]
            cursor.execute(
                sql.format(rows=",".join([group] * len(chunk))), tuple(chain.from_iterable(chunk))
            )
    finally:
        cursor.close()


def _fold(delta: RollupDelta) -> dict[Cube, dict[tuple[Any, ...], Acc]]:
    """Each cube's groups: ``(period, [tag,] *cube dims) -> sums``."""
    out: dict[Cube, dict[tuple[Any, ...], Acc]] = {cube: {} for cube in CUBES}
    plans = [
        (
            out[cube],
            cube.grain == "month",
            None if cube.dims == DIMENSIONS else tuple(DIMENSIONS.index(d) for d in cube.dims),
            cube.tags,
        )
        for cube in CUBES
    ]
    for (key, tags), acc in delta.groups.items():
        day = key[0]
        dims = key[1:]
        month = day.replace(day=1)
        for groups, monthly, index, tagged in plans:
            period = month if monthly else day
            values = dims if index is None else tuple(dims[i] for i in index)
            if tagged:
                for tag in tags or (None,):
                    _merge(groups, (period, tag, *values), acc)
            else:
                _merge(groups, (period, *values), acc)
    return out


def _merge(into: dict[tuple[Any, ...], Acc], key: tuple[Any, ...], acc: Acc) -> None:
    mine = into.get(key)
    if mine is None:
        into[key] = list(acc)
        return
    for i in range(_N):
        mine[i] += acc[i]
    if acc[_N] > mine[_N]:
        mine[_N] = acc[_N]
    if acc[_N + 1] > mine[_N + 1]:
        mine[_N + 1] = acc[_N + 1]


def write_delta(conn: Connection, delta: RollupDelta, *, bounds: bool = True) -> set[date]:
    """Add ``delta`` to every cube, inside the caller's transaction; the days touched.

    ``bounds=False`` writes the layout of migration 0002 (no ``max_cost``): for that
    migration only."""
    if not delta.groups:
        return set()
    days = {key[0] for key, _ in delta.groups}
    pg = conn.dialect.name == "postgresql"
    dialect = "postgresql" if pg else "sqlite"
    gkey = _pg_gkey if pg else _gkey
    for cube, groups in _fold(delta).items():
        rows = []
        if bounds and cube.bounded:
            for key, acc in groups.items():
                rest = key[1:]
                bound = acc[_N + 1]
                rows.append(
                    (
                        key[0].isoformat(),
                        gkey(rest),
                        *rest,
                        *acc[: _N + 1],
                        None if bound == _NO_BOUND else bound,
                    )
                )
        else:
            for key, acc in groups.items():
                rest = key[1:]
                rows.append((key[0].isoformat(), gkey(rest), *rest, *acc[: _N + 1]))
        rows.sort(key=lambda r: (r[0], r[1]))  # one lock order for every writer
        try:
            if pg:
                document = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
                conn.exec_driver_sql(_upsert_sql(cube, dialect, bounds), (document,))
            elif rows:
                _sqlite_upsert(conn, _upsert_sql(cube, dialect, bounds), rows)
        except Exception as exc:
            if not _overflowed(exc):
                raise
            raise ValueError(_overflow_message(cube, groups)) from exc
    delta.groups.clear()
    return days


def _overflowed(exc: BaseException) -> bool:
    """Whether a rollup upsert failed because a sum left the 64-bit columns: a value Python
    cannot bind, PostgreSQL's "bigint out of range", SQLite's guard (see ``_upsert_sql``)
    or the ``*_exact`` checks of the cost columns."""
    if isinstance(exc, OverflowError):
        return True
    text = str(exc)
    if "bigint out of range" in text or "out of range for type bigint" in text:
        return True
    refused = _REFUSED.search(text)
    if refused is None:
        return False
    name = refused.group(2)
    if refused.group(1) == "NOT NULL":
        return name.rsplit(".", 1)[-1] in COUNTERS
    return name.endswith(("_cost_units_exact", "_cost_nano_exact", "_cost_atto_exact"))


_REFUSED = re.compile(r"(NOT NULL|CHECK) constraint failed: (costledger_rollup_[\w.]+)")


def _overflow_message(cube: Cube, groups: Mapping[tuple[Any, ...], Acc]) -> str:
    periods = sorted({key[0] for key in groups})
    shown = ", ".join(p.isoformat() for p in periods[:3]) + (", ..." if len(periods) > 3 else "")
    what = "month" if cube.grain == "month" else "day"
    return (
        f"the ledger's sums cannot take it: a sum (of cost in whole currency units, or of "
        f"tokens) of a group of {cube.table} for the {what} of {shown} would pass "
        "9223372036854775807 (2^63 - 1), the most a rollup column holds"
    )


def places_of(conn: Connection) -> int:
    """The places every stored amount has in this database, at least: PostgreSQL's
    ``NUMERIC(38, 18)`` gives each 18 (its sums, and a rebuild, read them so); SQLite
    keeps each amount's text as written (0: count the places of each)."""
    return MONEY_SCALE if conn.dialect.name == "postgresql" else 0


def apply_inserted(conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Add newly inserted rows (SQLite form, ``sqlite_params``) to the rollups, in their
    insert transaction."""
    delta = RollupDelta(places_of(conn))
    delta.add_rows(rows)
    write_delta(conn, delta)


def apply_cost_changes(conn: Connection, changes: Sequence[CostChange]) -> None:
    """Cost hook: take each re-priced row out as it was and put it back as it is now.

    ``max_cost`` only rises here (to a raised amount): a lowered amount leaves it where it
    was, which keeps it an upper bound, all that ``top`` needs; finding the new maximum
    would mean reading the group's other calls. A rebuild makes it exact again."""
    delta = RollupDelta(places_of(conn))
    for change in changes:
        delta.add_stored(change.before, sign=-1)
        delta.add_stored(change.after, sign=1)
    days = write_delta(conn, delta)
    if not days:
        return
    # a group whose events all moved to another group (pricing status, currency) is gone
    dialect = conn.dialect.name
    mark = "%s" if dialect == "postgresql" else "?"
    months = {d.replace(day=1) for d in days}
    for cube in CUBES:
        periods = days if cube.grain == "day" else months
        conn.exec_driver_sql(
            f'DELETE FROM {cube.table} WHERE "requests" = 0 AND "day" = {mark}',
            [(d if dialect == "postgresql" else d.isoformat(),) for d in sorted(periods)],
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


def rebuild_on(conn: Connection, *, bounds: bool = True) -> int:
    """Recompute every cube from the events table, inside ``conn``'s transaction.

    Reads every event once (in constant memory: groups are written every 50,000) and
    applies exactly the arithmetic of the insert hook, ``max_cost`` included (exact
    again after re-pricing lowered amounts); creates missing cube tables first.
    Returns the number of events read. ``bounds=False``: migration 0002's layout.
    """
    from ._money import money_text

    dialect = conn.dialect.name
    if bounds:
        ensure_cube_tables(conn)
    for cube in CUBES:
        conn.exec_driver_sql(f"DELETE FROM {cube.table}")
    names = ", ".join(_Q(c) for c in _REBUILD_COLUMNS)
    sql = f"SELECT {names} FROM costledger_events"
    # (execution_options on the Connection itself would outlive this statement)
    options = {"yield_per": 20_000} if dialect == "postgresql" else {}
    result = conn.exec_driver_sql(sql, execution_options=options)
    delta = RollupDelta(places_of(conn))
    n = 0
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
            write_delta(conn, delta, bounds=bounds)
    write_delta(conn, delta, bounds=bounds)
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


def rollup_rows(ledger: Ledger, table: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """A cube's rows as ``{(day, [tag,] *dims): {counter: int, "cost": Decimal}}`` (for
    tests and consistency checks)."""
    cube = _BY_TABLE[table]
    store = ledger._core.store
    keys = ["day", *(("tag",) if cube.tags else ()), *cube.dims]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    with store.read_connection() as conn:
        for r in conn.execute(select(TABLES[table])):
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
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}; use one of {', '.join(FILTERS)}")
        if value is not None:
            _values(name, value)


def answerable(keys: Sequence[str], filters: Mapping[str, Any]) -> bool:
    """Whether the rollups can answer a summary with these keys and filters.

    Every key and filter is a rollup column; the one exception is a tag filter with
    several tags when the summary is not by tag (an event carrying two of them would be
    counted twice from a tag cube).
    """
    wanted = filters.get("tag")
    if wanted is None or "tag" in keys:
        return True
    return isinstance(wanted, str) or len(list(wanted)) == 1


def _rollup_query(
    conn: Connection,
    cube: Cube,
    keys: tuple[str, ...],
    first: date | None,
    end: date | None,
    filters: Mapping[str, Any],
) -> list[SummaryRow]:
    dialect = conn.dialect.name
    table = TABLES[cube.table]
    c = table.c
    key_columns = [_key_expression(name, dialect, table).label(f"k_{name}") for name in keys]
    conds = _cube_conditions(table, first, end, filters)
    measures = [func.sum(c[name]).label(name) for name in COUNTERS]
    measures.append(func.max(c.cost_places).label("cost_places"))
    # every group holds one status and one pricing status: its calls are all without
    # usage, or none is (no counter column needed, and every existing ledger has them)
    no_usage = case((no_usage_condition(c.status, c.pricing_status), c.requests), else_=0)
    measures.append(func.sum(no_usage).label("no_usage"))
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
                no_usage=int(m["no_usage"]),
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


def _cube_conditions(
    table: Table, first: date | None, end: date | None, filters: Mapping[str, Any]
) -> list[ColumnElement[bool]]:
    c = table.c
    conds: list[ColumnElement[bool]] = []
    if first is not None:
        conds.append(c.day >= first)
    if end is not None:
        conds.append(c.day < end)
    for name, value in filters.items():
        if value is None:
            continue
        values = _values(name, value)
        if name == "model":
            conds.append(or_(c.model.in_(values), c.response_model.in_(values)))
        else:
            conds.append(c[name].in_(values))
    return conds


SLICE_DIMENSIONS: tuple[str, ...] = ("user", "team", "project", "feature")
"""What ``bounds`` names a slice by, besides its day: the dimensions the events table
indexes with the timestamp, so one slice is one short index range."""


def bounds(
    conn: Connection,
    cube: Cube,
    first: date | None,
    end: date | None,
    filters: Mapping[str, Any],
) -> Iterator[tuple[float, date, dict[str, str | None]]]:
    """The groups of a daily cube that hold priced calls, dearest bound first:
    ``(max_cost, day, {slice dimension: value})``.

    Read in pages that grow (a caller usually stops within the first): each page is one
    pass over the cube's rows in range, which the database keeps to its best ``LIMIT``
    rows. A slice appears once per group it holds, with that group's bound.
    """
    if not cube.bounded:
        raise ValueError(f"{cube.table} has no {BOUND}")
    table = TABLES[cube.table]
    c = table.c
    dims = [d for d in SLICE_DIMENSIONS if d in cube.dims]
    stmt = (
        select(c[BOUND], c.day, *(c[d] for d in dims))
        .where(*_cube_conditions(table, first, end, filters), c[BOUND].is_not(None))
        .order_by(c[BOUND].desc(), c.day, c.gkey)  # a total order: pages neither skip nor repeat
    )
    offset = 0
    size = 64
    while True:
        rows = conn.execute(stmt.offset(offset).limit(size)).all()
        for r in rows:
            yield float(r[0]), _as_date(r[1]) or date.min, dict(zip(dims, r[2:], strict=True))
        if len(rows) < size:
            return
        offset += size
        size *= 8


@dataclass(frozen=True, slots=True)
class Plan:
    """How a summary is answered: ``parts`` (a cube and ``[first, end)`` periods in it,
    ``None`` bounds open) from the rollups, ``edges`` (``[since, until)``) from the
    events table. ``rollup`` is false when the events table answers it all."""

    rollup: bool
    parts: tuple[tuple[Cube, date | None, date | None], ...]
    edges: tuple[tuple[datetime | None, datetime | None], ...]


def _needs(keys: Sequence[str], filters: Mapping[str, Any]) -> tuple[set[str], bool]:
    dims: set[str] = set()
    tags = False
    for name in [*keys, *(f for f, v in filters.items() if v is not None)]:
        if name == "tag":
            tags = True
        elif name == "model":
            dims.update(("model", "response_model"))
        elif name not in _TIME_KEYS:
            dims.add(name)
    return dims, tags


def _cube(grain: str, dims: set[str], tags: bool) -> Cube | None:
    """The smallest cube of this grain with these dimensions, if any."""
    found = [c for c in CUBES if c.grain == grain and c.tags == tags and dims <= set(c.dims)]
    return min(found, key=lambda c: len(c.dims)) if found else None


def _month_start(day: date) -> date:
    return day.replace(day=1)


_LAST_MONTH = date(9999, 12, 1)
"""No month starts after it (``date`` ends in the year 9999)."""


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def plan(
    keys: Sequence[str],
    since: datetime | date | None,
    until: datetime | date | None,
    filters: Mapping[str, Any],
) -> Plan:
    """Split ``[since, until)`` into partial days (events table), whole days and whole
    months (the smallest cubes that hold the keys and filters)."""
    lo = None if since is None else utc_datetime(since)
    hi = None if until is None else utc_datetime(until)
    everything = Plan(False, (), ((lo, hi),))
    if not answerable(keys, filters):
        return everything
    first: date | None = None
    end: date | None = None
    edges: list[tuple[datetime | None, datetime | None]] = []
    if lo is not None:
        if _whole_day(lo):
            first = lo.date()
        elif lo.date() == date.max:
            return everything  # within the last day there is: no whole day follows
        else:
            first = lo.date() + timedelta(days=1)
    if hi is not None:
        end = hi.date()
    if first is not None and end is not None and first >= end:
        return everything  # less than one whole day: the events table, by the time index
    if lo is not None and not _whole_day(lo):
        assert first is not None
        edges.append((lo, _midnight(first)))
    if hi is not None and not _whole_day(hi):
        assert end is not None
        edges.append((_midnight(end), hi))
    dims, tags = _needs(keys, filters)
    daily = _cube("day", dims, tags)
    if daily is None:
        return everything  # a user and a tag: no cube has both
    monthly = None if "day" in keys or "week" in keys else _cube("month", dims, tags)
    parts: list[tuple[Cube, date | None, date | None]] = []
    if monthly is None:
        parts.append((daily, first, end))
    else:
        in_last_month = first is not None and first.day != 1 and first >= _LAST_MONTH
        m_first = first if first is None or first.day == 1 or in_last_month else _next_month(first)
        m_end = end if end is None else _month_start(end)
        if in_last_month or (m_first is not None and m_end is not None and m_first >= m_end):
            parts.append((daily, first, end))  # within one month: days only
        else:
            if first is not None and m_first is not None and first < m_first:
                parts.append((daily, first, m_first))
            parts.append((monthly, m_first, m_end))
            if end is not None and m_end is not None and m_end < end:
                parts.append((daily, m_end, end))
    return Plan(True, tuple(parts), tuple(edges))


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
                no_usage=have.no_usage + row.no_usage,
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
    parts: list[Sequence[SummaryRow]] = []
    try:
        with store.read_connection() as conn:
            for cube, first, end in p.parts:
                parts.append(_rollup_query(conn, cube, keys, first, end, filters))
    except sa_exc.OperationalError as exc:
        if "overflow" not in str(exc).lower():
            raise
        # an integer sum beyond 64 bits on SQLite: the events table sums exactly, slowly
        return summarize_events(store, by=keys, since=since, until=until, filters=filters)
    for lo, hi in p.edges:
        parts.append(summarize_events(store, by=keys, since=lo, until=hi, filters=filters))
    return merge_rows(parts)
