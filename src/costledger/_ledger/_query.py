"""The read side of the ledger: filtered event streams and exact per-group summaries in SQL."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Date,
    FromClause,
    Select,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from ._money import Money, dumps, utc_datetime
from ._rows import FILTERS, SUMMARY_KEYS, StoredEvent
from ._store import Store
from ._tables import events_table
from ._text import clean_text

__all__ = [
    "FILTERS",
    "NO_USAGE",
    "SUMMARY_KEYS",
    "SummaryRow",
    "get_event",
    "is_no_usage",
    "iter_events",
    "summarize",
    "summarize_events",
]

_TIME_KEYS = frozenset(("day", "week", "month"))

t = events_table


def no_usage_condition(status: ColumnElement[Any], pricing: ColumnElement[Any]) -> Any:
    """``NO_USAGE`` in SQL, for the events table and the rollups alike (both keep
    ``status`` and ``pricing_status``)."""
    return and_(pricing == "not_priced", status != "error")


def is_no_usage(status: str | None, pricing_status: str | None) -> bool:
    """``NO_USAGE`` for one call: it did not fail and reported nothing to price."""
    return pricing_status == "not_priced" and status != "error"


NO_USAGE = "status ok or cancelled, pricing status not_priced"
"""Which calls a summary's ``no_usage`` counts: calls that ran (or were cancelled while
running) and reported no usage, a stream without a usage chunk, a wrapped function that
returned ``None``. The provider may well have billed them: their cost is unknown. A
failed call (``error``) with no usage is not counted: it consumed nothing to price."""


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One group of a summary. Key fields not in ``by`` are ``None``.

    ``cost`` is the exact sum of the priced events' totals in ``currency``; events
    without a price are counted in ``unpriced`` and add nothing (never a silent $0).
    ``errors`` counts status ``error``, ``cancelled`` status ``cancelled``. ``no_usage``
    counts the calls that did not fail but reported no usage (status ``ok`` or
    ``cancelled``, pricing status ``not_priced``): nothing to price, so they add nothing
    either, and what they cost is unknown (see ``NO_USAGE``).
    """

    by: tuple[str, ...]
    currency: str
    requests: int
    errors: int
    cancelled: int
    unpriced: int
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost: Decimal
    day: date | None = None
    week: date | None = None
    month: date | None = None
    model: str | None = None
    provider: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    feature: str | None = None
    tag: str | None = None
    source: str | None = None
    status: str | None = None
    no_usage: int = 0

    @property
    def key(self) -> tuple[Any, ...]:
        """The group's values, in the order of ``by``."""
        return tuple(getattr(self, name) for name in self.by)


def _values(name: str, value: str | Sequence[str]) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"filter {name!r} must be a string or a list of strings, got {value!r}")
    return [clean_text(v) for v in values]  # as the rows were stored


def _match(column: ColumnElement[Any], values: list[str]) -> ColumnElement[bool]:
    return column == values[0] if len(values) == 1 else column.in_(values)


def _tag_table(dialect: str) -> FromClause:
    """One row per DISTINCT tag of an event (a tag listed twice counts once, as in the
    rollups; SQLite has no LATERAL, so its repeats are dropped by ``_first_of_each_tag``)."""
    if dialect == "postgresql":
        each = func.jsonb_array_elements_text(t.c.tags).table_valued("value")
        return select(each.c.value).distinct().lateral("tag")
    return func.json_each(t.c.tags).table_valued("value", "key").alias("tag")


def _first_of_each_tag(tag: FromClause) -> ColumnElement[bool]:
    """SQLite: keep a ``json_each`` row only for the first position of its value."""
    earlier = func.json_each(t.c.tags).table_valued("value", "key").alias("earlier")
    repeated = exists(
        select(1)
        .select_from(earlier)
        .where(earlier.c.value == tag.c.value, earlier.c.key < tag.c.key)
    )
    return ~repeated


def _conditions(
    dialect: str,
    since: datetime | date | None,
    until: datetime | date | None,
    filters: Mapping[str, str | Sequence[str] | None],
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(t.c.timestamp >= utc_datetime(since))
    if until is not None:
        conds.append(t.c.timestamp < utc_datetime(until))
    for name, value in filters.items():
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}; use one of {', '.join(FILTERS)}")
        if value is None:
            continue
        values = _values(name, value)
        if name == "model":
            conds.append(or_(_match(t.c.model, values), _match(t.c.response_model, values)))
        elif name == "tag":
            if dialect == "postgresql":
                conds.append(
                    or_(*(t.c.tags.op("@>")(cast(literal(dumps([v])), JSONB)) for v in values))
                )
            else:
                each = func.json_each(t.c.tags).table_valued("value")
                conds.append(exists(select(1).select_from(each).where(each.c.value.in_(values))))
        else:
            conds.append(_match(t.c[name], values))
    return conds


def iter_events(
    store: Store,
    *,
    since: datetime | date | None,
    until: datetime | date | None,
    filters: Mapping[str, str | Sequence[str] | None],
    order: str,
    limit: int | None,
    batch_size: int,
) -> Iterator[StoredEvent]:
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    stmt: Select[Any] = select(t).where(*_conditions(store.dialect, since, until, filters))
    if order == "asc":
        stmt = stmt.order_by(t.c.timestamp.asc(), t.c.id.asc())
    else:
        stmt = stmt.order_by(t.c.timestamp.desc(), t.c.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return _stream(store, stmt, batch_size)


def _stream(store: Store, stmt: Select[Any], batch_size: int) -> Iterator[StoredEvent]:
    if store.single_connection:
        # one shared in-memory connection: read it all while holding it, then hand out rows
        with store.read_connection() as conn:
            rows = [StoredEvent.from_row(r._mapping) for r in conn.execute(stmt)]
        yield from rows
        return
    with store.read_connection() as conn:
        result = conn.execution_options(yield_per=batch_size).execute(stmt)
        for row in result:
            yield StoredEvent.from_row(row._mapping)


def get_event(store: Store, event_id: str) -> StoredEvent | None:
    if not isinstance(event_id, str):
        raise TypeError(f"event id must be a string, got {event_id!r}")
    with store.read_connection() as conn:
        row = conn.execute(select(t).where(t.c.id == clean_text(event_id))).first()
    return None if row is None else StoredEvent.from_row(row._mapping)


def _key_expression(name: str, dialect: str, tag: FromClause | None) -> ColumnElement[Any]:
    ts = t.c.timestamp
    if name in _TIME_KEYS:
        if dialect == "postgresql":
            unit = {"day": "day", "week": "week", "month": "month"}[name]
            return cast(func.date_trunc(unit, func.timezone("UTC", ts)), Date)
        # Every key is cut from the stored text (``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``),
        # never read as a time: SQLite's date functions round to milliseconds, so
        # ``date(ts, ...)`` would put Sunday 23:59:59.9995 in the next week (and the
        # rollups, keyed by the day text, would disagree with the events table).
        day = func.substr(ts, 1, 10)
        if name == "day":
            return day
        if name == "week":  # the Monday of the ISO week, from the day as the rollups do
            return func.date(day, "weekday 0", "-6 days")
        return func.substr(ts, 1, 7)
    if name == "model":
        return func.coalesce(t.c.response_model, t.c.model)
    if name == "tag":
        assert tag is not None
        return tag.c.value
    return t.c[name]


def _as_date(value: Any) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    text = str(value)
    if len(text) == 7:  # SQLite month key "YYYY-MM"
        return date(int(text[:4]), int(text[5:7]), 1)
    return date.fromisoformat(text[:10])


def summarize(
    store: Store,
    *,
    by: str | Sequence[str],
    since: datetime | date | None,
    until: datetime | date | None,
    filters: Mapping[str, str | Sequence[str] | None],
) -> list[SummaryRow]:
    """Answered from the daily rollups where they can (``_rollups.py``), else from the events."""
    from ._rollups import summarize as from_rollups

    return from_rollups(store, by=by, since=since, until=until, filters=filters)


def summarize_events(
    store: Store,
    *,
    by: str | Sequence[str],
    since: datetime | date | None,
    until: datetime | date | None,
    filters: Mapping[str, str | Sequence[str] | None],
) -> list[SummaryRow]:
    """The summary computed from the events table alone."""
    keys = (by,) if isinstance(by, str) else tuple(by)
    for name in keys:
        if name not in SUMMARY_KEYS:
            raise ValueError(f"cannot summarize by {name!r}; use any of {', '.join(SUMMARY_KEYS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"summary keys repeat: {keys!r}")
    dialect = store.dialect
    tag = _tag_table(dialect) if "tag" in keys else None
    key_columns = [_key_expression(name, dialect, tag).label(f"k_{name}") for name in keys]
    cost_sum = (
        func.sum(t.c.total_cost)
        if dialect == "postgresql"
        else func.decimal_sum(t.c.total_cost, type_=Money())
    )
    unpriced = and_(t.c.total_cost.is_(None), t.c.pricing_status != "not_priced")
    measures = [
        func.count().label("requests"),
        func.sum(case((t.c.status == "error", 1), else_=0)).label("errors"),
        func.sum(case((t.c.status == "cancelled", 1), else_=0)).label("cancelled"),
        func.sum(case((unpriced, 1), else_=0)).label("unpriced"),
        func.sum(case((no_usage_condition(t.c.status, t.c.pricing_status), 1), else_=0)).label(
            "no_usage"
        ),
        func.sum(t.c.input_tokens).label("input_tokens"),
        func.sum(t.c.cache_read_tokens).label("cache_read_tokens"),
        func.sum(t.c.cache_write_tokens).label("cache_write_tokens"),
        func.sum(t.c.output_tokens).label("output_tokens"),
        func.sum(t.c.reasoning_tokens).label("reasoning_tokens"),
        cost_sum.label("cost"),
    ]
    conds = _conditions(dialect, since, until, filters)
    source: FromClause = t
    if tag is not None:
        source = t.outerjoin(tag, true())
        if dialect != "postgresql":
            conds.append(_first_of_each_tag(tag))
        wanted = filters.get("tag")
        if wanted is not None:  # by tag and filtered by tag: only the wanted tags' rows
            conds.append(tag.c.value.in_(_values("tag", wanted)))
    group = [*key_columns, t.c.currency]
    stmt = (
        select(*group, *measures)
        .select_from(source)
        .where(*conds if conds else [true()])
        .group_by(*(c.element for c in key_columns), t.c.currency)
    )
    with store.read_connection() as conn:
        result = conn.execute(stmt).all()
    rows: list[SummaryRow] = []
    for r in result:
        m = r._mapping
        key_values: dict[str, Any] = {}
        for name in keys:
            value = m[f"k_{name}"]
            key_values[name] = _as_date(value) if name in _TIME_KEYS else value
        cost = m["cost"]
        rows.append(
            SummaryRow(
                by=keys,
                currency=m["currency"],
                requests=int(m["requests"]),
                errors=int(m["errors"] or 0),
                cancelled=int(m["cancelled"] or 0),
                unpriced=int(m["unpriced"] or 0),
                no_usage=int(m["no_usage"] or 0),
                input_tokens=int(m["input_tokens"] or 0),
                cache_read_tokens=int(m["cache_read_tokens"] or 0),
                cache_write_tokens=int(m["cache_write_tokens"] or 0),
                output_tokens=int(m["output_tokens"] or 0),
                reasoning_tokens=int(m["reasoning_tokens"] or 0),
                cost=Decimal(0) if cost is None else _decimal(cost),
                **key_values,
            )
        )
    rows.sort(key=lambda row: (*((v is None, v) for v in row.key), row.currency))
    return rows


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (str, int)):
        return Decimal(value)
    raise TypeError(f"cost sum came back as {type(value).__name__} {value!r}, not exact")
