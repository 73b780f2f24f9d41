"""``report``: spend per group with shares and totals; ``top``: the most expensive calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from .._errors import short_repr
from .._ledger._rows import SUMMARY_KEYS
from ._common import (
    EXACT,
    canonical,
    check_filters,
    group_value,
    money_text,
    open_ledger,
    share_of,
)
from ._when import resolve_bounds

if TYPE_CHECKING:
    from .._ledger import Ledger, StoredEvent, SummaryRow
    from .._tracker import LedgerLike

__all__ = [
    "GROUP_KEYS",
    "Report",
    "ReportRow",
    "calls_rates",
    "check_rate",
    "converted_cost",
    "exchange_rates",
    "parse_by",
    "report",
    "top",
]

GROUP_KEYS: tuple[str, ...] = SUMMARY_KEYS
_TIME_KEYS = frozenset(("day", "week", "month"))
Sort = Literal["auto", "key", "cost"]


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One group of a report (or, with an empty ``key``, the totals of one currency).

    ``cost`` is exact; ``share`` is ``cost`` over the total of the same currency, rounded
    to six places (``None`` when that total is zero). ``unpriced`` events add nothing
    to ``cost`` (their price is unknown, not zero), and neither do ``no_usage`` ones:
    calls that did not fail (status ``ok`` or ``cancelled``) but reported no usage, so
    there was nothing to price; what they cost is unknown too. A failed call without
    usage is in neither count.
    """

    by: tuple[str, ...]
    key: tuple[Any, ...]
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
    share: Decimal | None
    no_usage: int = 0

    @property
    def group(self) -> dict[str, Any]:
        """The group's key values by name."""
        return dict(zip(self.by, self.key, strict=True))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: key values (dates in ISO form), figures, money as decimal strings."""
        out: dict[str, Any] = {name: group_value(v) for name, v in self.group.items()}
        out.update(
            currency=self.currency,
            requests=self.requests,
            errors=self.errors,
            cancelled=self.cancelled,
            unpriced=self.unpriced,
            no_usage=self.no_usage,
            input_tokens=self.input_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            output_tokens=self.output_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cost=money_text(self.cost),
            share=money_text(self.share),
        )
        return out


@dataclass(frozen=True, slots=True)
class Report:
    """Rows per group, and one totals row per currency (each event counted once, even
    when grouped by tag, where an event with two tags appears in two rows)."""

    by: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    filters: Mapping[str, tuple[str, ...]]
    rows: tuple[ReportRow, ...]
    totals: tuple[ReportRow, ...]
    truncated: int = 0
    """Groups left out by ``limit``."""
    rates: Mapping[str, Decimal] = field(default_factory=dict)
    """When converted (``currency=``): the rate applied to each currency the selection
    held an amount in, in units of the report's currency per unit
    (``{"USD": Decimal("0.9213")}``)."""

    def as_dicts(self) -> list[dict[str, Any]]:
        return [row.as_dict() for row in self.rows]

    @property
    def cost(self) -> dict[str, Decimal]:
        """Total cost per currency."""
        return {t.currency: t.cost for t in self.totals}


def parse_by(by: str | Sequence[str]) -> tuple[str, ...]:
    """``"day,model"`` or ``["day", "model"]`` as checked group keys."""
    items = by.split(",") if isinstance(by, str) else [str(b) for b in by]
    keys = tuple(k.strip().lower() for k in items if k.strip())
    for k in keys:
        if k not in GROUP_KEYS:
            raise ValueError(f"cannot group by {k!r}; use any of {', '.join(GROUP_KEYS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"group keys repeat: {','.join(keys)}")
    return keys


def _summarize(
    ledger: Ledger,
    keys: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    filters: Mapping[str, list[str] | None],
    use_rollups: bool,
) -> list[SummaryRow]:
    from .._ledger._rollups import summarize

    return summarize(
        ledger._core.store,
        by=keys,
        since=since,
        until=until,
        filters=filters,
        use_rollups=use_rollups,
    )


_Group = tuple[tuple[Any, ...], str, tuple[int, ...], Decimal]
"""A summary row reduced to what a report needs: key, currency, counts, cost."""


def _groups(rows: Sequence[SummaryRow]) -> list[_Group]:
    return [(r.key, r.currency, _counts(r), r.cost) for r in rows]


def _add(groups: Sequence[_Group]) -> dict[str, list[Any]]:
    """Per currency: requests ... reasoning tokens, no usage (``_COUNTS``), then cost."""
    out: dict[str, list[Any]] = {}
    for _, currency, counts, cost in groups:
        acc = out.setdefault(currency, [0] * _COUNTS + [Decimal(0)])
        for i, n in enumerate(counts):
            acc[i] += n
        acc[_COUNTS] = EXACT.add(acc[_COUNTS], cost)
    return out


def _converted(
    groups: Sequence[_Group], currency: str, rates: Mapping[str, Decimal]
) -> list[_Group]:
    """The groups in ``currency``: each cost times its currency's rate, exactly; groups that
    differed only by currency merged (in the order they first appear)."""
    merged: dict[tuple[Any, ...], tuple[list[int], list[Decimal]]] = {}
    for key, source, counts, cost in groups:
        acc_counts, acc_cost = merged.setdefault(key, ([0] * len(counts), [Decimal(0)]))
        for i, n in enumerate(counts):
            acc_counts[i] += n
        rate = rates.get(source, _ONE)
        acc_cost[0] = EXACT.add(acc_cost[0], EXACT.multiply(cost, rate))
    return [(key, currency, tuple(c), cost[0]) for key, (c, cost) in merged.items()]


_ONE = Decimal(1)
_ZERO = Decimal(0)
_CURRENCY_CODE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _currency_code(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) != 3 or not set(value) <= _CURRENCY_CODE:
        raise ValueError(f"{what} must be a three-letter currency code like 'EUR', got {value!r}")
    return value


RATE_DIGITS = 30
"""The most significant digits an exchange rate may have."""
RATE_MIN = Decimal("1e-12")
RATE_MAX = Decimal("1e12")
"""The range of an exchange rate. Real ones are far inside it; within it (and 30 digits),
a ledger amount (38 digits) times the rate, and any sum of such products, stays exact in
the reports' 120-digit arithmetic: a rate is never rounded, nor a converted amount."""


def check_rate(code: object, value: object) -> tuple[str, Decimal]:
    """One exchange rate, checked: its currency code and its exact ``Decimal``.

    ``ValueError`` naming the currency and the value for a code that is not three
    letters, a value that is not a ``Decimal``, a decimal string or an int, not a
    number, not finite, not above 0, outside ``RATE_MIN``..``RATE_MAX`` or with more than
    ``RATE_DIGITS`` significant digits."""
    source = _currency_code(code, "an exchange rate's currency")
    shown = short_repr(value, 40)
    if isinstance(value, bool) or not isinstance(value, (Decimal, str, int)):
        raise ValueError(
            f"exchange rate for {source} must be a Decimal, a decimal string or an int, got {shown}"
        )
    try:
        rate = Decimal(value.strip() if isinstance(value, str) else value)
    except ArithmeticError:
        raise ValueError(f"exchange rate for {source} is not a number: {shown}") from None
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"exchange rate for {source} must be a finite number above 0, got {shown}")
    if not RATE_MIN <= rate <= RATE_MAX:
        raise ValueError(f"exchange rate for {source} must be between 1e-12 and 1e12, got {shown}")
    written = rate.as_tuple().digits  # as written: no context rounds them
    digits = len("".join(map(str, written)).rstrip("0"))  # trailing zeros say nothing
    if digits > RATE_DIGITS:
        raise ValueError(
            f"exchange rate for {source} has {digits} significant digits, more than "
            f"{RATE_DIGITS}: {shown}"
        )
    return source, rate


def exchange_rates(
    currency: str, rates: Mapping[str, Decimal | str | int] | None, present: set[str]
) -> dict[str, Decimal]:
    """The rates to convert every currency in ``present`` into ``currency``, checked.

    A rate is how many units of ``currency`` one unit of the other is worth, given as a
    ``Decimal``, a decimal string or an int (never a float: it would not be the rate that
    was written), checked by ``check_rate``. ``present``: the currencies the selection
    holds an amount other than zero in (zero needs no rate). One of them without a rate
    is an error, never guessed; rates for other currencies are checked, then ignored.
    """
    target = _currency_code(currency, "currency")
    checked: dict[str, Decimal] = {}
    for code, value in (rates or {}).items():
        source, rate = check_rate(code, value)
        if source == target and rate != _ONE:
            raise ValueError(f"the rate of {target} to itself is 1, got {value!r}")
        checked[source] = rate
    missing = sorted(present - set(checked) - {target})
    if missing:
        given = ", ".join(f"{code}=..." for code in missing)
        raise ValueError(
            f"the selection holds costs in {', '.join(missing)}, with no rate to {target}: "
            f"give one ({given}, {target} per unit)"
        )
    return {code: checked[code] for code in sorted(present - {target})}


def _amount_currencies(*groups: Sequence[_Group]) -> set[str]:
    """The currencies in which some group holds an amount other than zero. Only those need
    an exchange rate: zero is zero in every currency, and a currency that holds only
    unpriced calls, calls with nothing to price or calls priced at exactly 0 converts to
    zero at any rate (a rate given for it would be printed but change nothing)."""
    return {currency for part in groups for _, currency, _, cost in part if not cost.is_zero()}


def _counts(r: SummaryRow) -> tuple[int, ...]:
    return (
        r.requests,
        r.errors,
        r.cancelled,
        r.unpriced,
        r.input_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.output_tokens,
        r.reasoning_tokens,
        r.no_usage,
    )


_COUNTS = 10
"""How many counts ``_counts`` gives."""


def _row(
    by: tuple[str, ...],
    key: tuple[Any, ...],
    currency: str,
    counts: Sequence[int],
    cost: Decimal,
    total: Decimal,
) -> ReportRow:
    (requests, errors, cancelled, unpriced, inp, cache_read, cache_write, out, reasoning, none) = (
        counts
    )
    return ReportRow(
        by=by,
        key=key,
        currency=currency,
        requests=requests,
        errors=errors,
        cancelled=cancelled,
        unpriced=unpriced,
        input_tokens=inp,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=out,
        reasoning_tokens=reasoning,
        no_usage=none,
        cost=canonical(cost),
        share=share_of(cost, total),
    )


def report(
    ledger: Ledger | LedgerLike | str | None,
    by: str | Sequence[str] = (),
    *,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    sort: Sort = "auto",
    limit: int | None = None,
    now: datetime | None = None,
    use_rollups: bool = True,
    currency: str | None = None,
    rates: Mapping[str, Decimal | str | int] | None = None,
    **filters: str | Sequence[str] | None,
) -> Report:
    """Requests, errors, tokens by kind, exact cost and share of total per group.

    ``by``: any of ``GROUP_KEYS`` (a list, or ``"day,model"``); ``()`` gives the totals
    only. ``since`` / ``until``: see ``parse_when`` (``"7d"``, ``"this-month"``, dates,
    datetimes). Filters: ``model``, ``provider``, ``user``, ``team``, ``project``,
    ``feature``, ``tag``, ``status``, ``source``, each a value or a list of values.
    ``sort``: ``"key"`` (the group keys), ``"cost"`` (most expensive first) or
    ``"auto"`` (by key when grouping by a time key, else by cost). ``limit`` keeps that
    many rows (totals still cover everything). Answered from the daily rollups whenever
    they can (``use_rollups=False`` forces the events table; the figures are identical).

    Costs are reported per currency as priced. ``currency="EUR"`` with
    ``rates={"USD": "0.9213"}`` (EUR per USD) converts every cost exactly (no rounding)
    and merges the groups into that one currency; ``Report.rates`` keeps the rates used.
    See ``exchange_rates`` for what is checked. Only a currency in which the selection
    holds an amount other than zero needs a rate: one holding only unpriced calls, calls
    with nothing to price or calls priced at exactly 0 joins at zero, its counts kept.
    Without ``currency``, such currencies join the one currency that holds amounts, when
    exactly one does (an unknown model's calls are stored as USD in a ledger priced in
    EUR: one EUR total, not a second, empty USD one).
    """
    keys = parse_by(by)
    checked = check_filters(filters)
    lo, hi = resolve_bounds(since, until, now=now)
    if sort not in ("auto", "key", "cost"):
        raise ValueError(f"sort must be 'auto', 'key' or 'cost', got {sort!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    with open_ledger(ledger) as opened:
        rows = _summarize(opened, keys, lo, hi, checked, use_rollups)
        # by tag, rows overlap (an event with two tags is in both): count each event once
        total_rows = _summarize(opened, (), lo, hi, checked, use_rollups) if "tag" in keys else rows
    groups = _groups(rows)
    total_groups = _groups(total_rows) if total_rows is not rows else groups
    used: dict[str, Decimal] = {}
    held = _amount_currencies(groups, total_groups)
    if currency is not None:
        used = exchange_rates(currency, rates, held)
        groups = _converted(groups, currency, used)
        total_groups = _converted(total_groups, currency, used)
    elif rates:
        raise ValueError("rates are for converting: give currency= too")
    elif len(held) == 1 and {g[1] for g in total_groups} != held:
        # the other currencies hold no amount, only counts (an unknown model's calls and
        # calls with nothing to price are stored as USD whatever the prices are in):
        # zero in any currency, so they join the one currency that has amounts
        (only,) = held
        groups = _converted(groups, only, {})
        total_groups = _converted(total_groups, only, {})
    totals = _add(total_groups)
    report_rows = [
        _row(keys, key, cur, counts, cost, totals[cur][_COUNTS])
        for key, cur, counts, cost in groups
    ]
    if sort == "cost" or (sort == "auto" and not _TIME_KEYS & set(keys)):
        # copy_negate is exact; unary minus would round to the context's 28 digits
        report_rows.sort(key=lambda r: (r.currency, r.cost.copy_negate()))
    truncated = 0
    if limit is not None and len(report_rows) > limit:
        truncated = len(report_rows) - limit
        report_rows = report_rows[:limit]
    total_list = tuple(
        _row((), (), currency, acc[:_COUNTS], acc[_COUNTS], acc[_COUNTS])
        for currency, acc in sorted(totals.items())
    )
    return Report(
        by=keys,
        since=lo,
        until=hi,
        filters={k: tuple(v) for k, v in checked.items() if v is not None},
        rows=tuple(report_rows),
        totals=total_list,
        truncated=truncated,
        rates=used,
    )


def top(
    ledger: Ledger | LedgerLike | str | None,
    n: int = 10,
    *,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    now: datetime | None = None,
    currency: str | None = None,
    rates: Mapping[str, Decimal | str | int] | None = None,
    **filters: str | Sequence[str] | None,
) -> list[StoredEvent]:
    """The ``n`` most expensive calls in the selection, most expensive first (exact order;
    ties by time, then id). Unpriced calls have no amount and are not ranked. Reads only
    the slices of the events table that the daily rollups' bounds say can rank.

    Amounts in different currencies are never compared: when the selection holds calls
    priced in several currencies, each currency is ranked on its own and the list holds
    each one's ``n`` best, currency after currency (alphabetically; ``e.currency`` tells
    them apart). ``currency="EUR"`` with ``rates={"USD": "0.9213", ...}`` (as for
    ``report``, see ``exchange_rates``) ranks every call by its cost converted exactly
    into that currency instead, one list of ``n``; the calls keep their stored cost
    (``converted_cost`` gives the converted one).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    n = min(n, _SQL_LIMIT)  # no selection holds more calls; SQL's LIMIT takes no more
    checked = check_filters(filters)
    lo, hi = resolve_bounds(since, until, now=now)
    if currency is None and rates:
        raise ValueError("rates are for converting: give currency= too")
    if currency is not None:
        _currency_code(currency, "currency")
    with open_ledger(ledger) as opened:
        ranked = _top_per_currency(opened, n, lo, hi, checked)
    if currency is None:
        return [e for code in sorted(ranked) for e in ranked[code]]
    calls = [e for found in ranked.values() for e in found]
    used = calls_rates(currency, rates, calls)
    calls.sort(key=lambda e: (converted_cost(e, used).copy_negate(), e.timestamp, e.id))
    return calls[:n]


def calls_rates(
    currency: str, rates: Mapping[str, Decimal | str | int] | None, calls: Sequence[StoredEvent]
) -> dict[str, Decimal]:
    """``exchange_rates`` for converting ``calls`` into ``currency``: as in ``report``, only
    a currency some call holds an amount other than zero in needs a rate (a call priced
    at exactly 0 is 0 in any currency)."""
    return exchange_rates(currency, rates, {e.currency for e in calls if e.total_cost})


def _dearest_first(e: StoredEvent) -> Decimal:
    """A sort key putting the dearest call first. ``copy_negate``, not unary minus: minus
    rounds to the context's 28 digits, and two amounts that differ further down (a
    ledger amount has up to 38) would rank as a tie."""
    return (e.total_cost or _ZERO).copy_negate()


def converted_cost(e: StoredEvent, rates: Mapping[str, Decimal]) -> Decimal:
    """``e``'s total cost times the rate of its currency (``1`` for the target's own), exactly."""
    return EXACT.multiply(e.total_cost or Decimal(0), rates.get(e.currency, _ONE))


_PRICED_CURRENCIES_CUBE = "costledger_rollup_core_tags_monthly"
"""The smallest rollup table that holds every call (no user; a call without tags is in
its ``NULL`` tag's row): where the ledger's currencies are read."""


def _ledger_currencies(ledger: Ledger) -> set[str]:
    """The currencies the ledger holds priced calls in (all time, any selection): one
    pass over the smallest rollup table, a few thousand rows where the events are
    millions."""
    from sqlalchemy import select

    from .._ledger._rollups import TABLES

    c = TABLES[_PRICED_CURRENCIES_CUBE].c
    stmt = select(c.currency).where(c.pricing_status == "priced").distinct()
    with ledger._core.store.read_connection() as conn:
        return {str(code) for (code,) in conn.execute(stmt)}


def _top_per_currency(
    ledger: Ledger,
    n: int,
    since: datetime | None,
    until: datetime | None,
    filters: Mapping[str, list[str] | None],
) -> dict[str, list[StoredEvent]]:
    """Each currency's ``n`` dearest calls of the selection (currencies without one left
    out). A ledger priced in one currency (the usual case) is ranked as it always was,
    in one pass; only a ledger that holds several is ranked currency by currency."""
    held = _ledger_currencies(ledger)
    if len(held) <= 1:
        found = _top(ledger, n, since, until, filters)
        if len({e.currency for e in found}) <= 1:
            return {found[0].currency: found} if found else {}
        held = {e.currency for e in found}  # rollups behind the events: rank what was found
    ranked = {code: _top(ledger, n, since, until, filters, code) for code in sorted(held)}
    return {code: found for code, found in ranked.items() if found}


def _pg_order() -> tuple[Any, ...]:
    from .._ledger._tables import events_table as t

    # ties by time, then id as Python compares strings (code points: the bytes of UTF-8),
    # whatever the database's collation
    return (t.c.total_cost.desc(), t.c.timestamp, t.c.id.collate("C"))


def _stored(row: Any) -> StoredEvent:
    from .._ledger import StoredEvent

    return StoredEvent.from_row(row._mapping)


_SQL_LIMIT = 2**62
"""``top``'s ``n`` at most: a 64-bit SQL integer (a larger one overflows the driver)."""
_MARGIN = 2.0**-30
"""Relative slack when a float bound is compared with a floor: bounds are Python's
correctly rounded floats, SQLite's ``CAST(... AS REAL)`` may differ by an ulp or two."""
_SLICES = 128
"""Slices ``top`` reads before it reads the rest in one scan instead: a large ``n``
reaches into many groups, and past about this many short index ranges one pass over
the selection (above the floor found so far) costs less."""


def _top(
    ledger: Ledger,
    n: int,
    since: datetime | None,
    until: datetime | None,
    filters: Mapping[str, list[str] | None],
    currency: str | None = None,
) -> list[StoredEvent]:
    """The ``n`` dearest calls of the selection; ``currency``: of the calls priced in it."""
    from .._ledger._rollups import plan

    p = plan(("day",), since, until, filters)
    if p.rollup and all(cube.bounded for cube, _, _ in p.parts):
        return _top_pruned(ledger, n, since, until, p.parts, p.edges, filters, currency)
    return _top_scan(ledger, n, since, until, filters, currency)


def _top_pruned(
    ledger: Ledger,
    n: int,
    since: datetime | None,
    until: datetime | None,
    parts: Sequence[tuple[Any, date | None, date | None]],
    edges: Sequence[tuple[datetime | None, datetime | None]],
    filters: Mapping[str, list[str] | None],
    currency: str | None = None,
) -> list[StoredEvent]:
    """The rollups bound each group's dearest call (``max_cost``). Slices of the events
    table (a day and the indexed dimensions of a group) are read dearest bound first,
    each for its own best ``n`` at or above the floor (the ``n``-th best call found so
    far); a slice whose bound is below the floor cannot hold a better call, and neither
    can any after it. Usually a handful of short index ranges instead of every call
    (past ``_SLICES`` of them, one scan of the selection above the floor).

    SQLite compares ``CAST(total_cost AS REAL)`` (money is text there): rounding to a
    float never reverses an order, so every call that ranks has a float at least the
    floor's, and the calls found are ordered exactly in ``Decimal`` at the end.
    PostgreSQL compares the exact NUMERIC."""
    from datetime import timedelta, timezone

    from sqlalchemy import Float, cast, select

    from .._ledger._query import _conditions
    from .._ledger._rollups import bounds
    from .._ledger._tables import events_table as t

    store = ledger._core.store
    pg = store.dialect == "postgresql"
    approx: Any = t.c.total_cost if pg else cast(t.c.total_cost, Float)
    # one currency: its calls only, and the bounds of its rollup groups only (a rollup
    # row is per currency, so the bounds stay those of the calls ranked)
    priced_in = [] if currency is None else [t.c.currency == currency]
    bound_filters = filters if currency is None else {**filters, "currency": [currency]}
    best: list[tuple[StoredEvent, Any]] = []  # (call, its approx), exact order, at most n
    floor: Any = None  # approx of the n-th best, once there are n

    def order(item: tuple[StoredEvent, Any]) -> tuple[Decimal, datetime, str]:
        e = item[0]
        return (_dearest_first(e), e.timestamp, e.id)

    def scan(conn: Any, lo: datetime | None, hi: datetime | None, where: list[Any]) -> None:
        nonlocal best, floor
        conds = [
            *_conditions(store.dialect, lo, hi, filters),
            *where,
            *priced_in,
            t.c.total_cost.is_not(None),
        ]
        if floor is not None:
            conds.append(approx >= floor)
        if pg:
            # the slice's best n in the very order of the end (ids compared as code points)
            stmt = select(t).where(*conds).order_by(*_pg_order()).limit(n)
            found = [(e, e.total_cost) for e in map(_stored, conn.execute(stmt))]
        else:
            # the slice's own n-th float: below it, n calls of the slice are already better
            nth = select(approx).where(*conds).order_by(approx.desc()).offset(n - 1).limit(1)
            kth = conn.execute(nth).scalar()
            if kth is not None:
                conds.append(approx >= kth)
            rows = conn.execute(select(t, approx.label("costledger_approx")).where(*conds))
            found = [(_stored(r), r._mapping["costledger_approx"]) for r in rows]
        if not found:
            return
        # (a call already found is found again only by the last, whole-selection scan)
        merged = {e.id: (e, a) for e, a in best}
        merged.update((e.id, (e, a)) for e, a in found)
        best = sorted(merged.values(), key=order)[:n]
        if len(best) == n:
            # monotonic rounding: the exactly smallest of the n has the smallest approx
            floor = best[-1][1]

    def below_floor(bound: float) -> bool:
        if len(best) < n:
            return False
        f = float(floor)
        return bound < f - abs(f) * _MARGIN

    with store.read_connection() as conn:
        for lo, hi in edges:  # partial days at either end: not in the rollups, and short
            scan(conn, lo, hi, [])
        seen: set[tuple[date, tuple[tuple[str, str | None], ...]]] = set()
        for cube, first, end in parts:
            for bound, day, dims in bounds(conn, cube, first, end, bound_filters):
                if below_floor(bound):
                    break
                key = (day, tuple(dims.items()))
                if key in seen:
                    continue
                seen.add(key)
                if len(seen) > _SLICES:
                    scan(conn, since, until, [])
                    return [e for e, _ in best]
                start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
                where = [
                    t.c[name].is_(None) if value is None else t.c[name] == value
                    for name, value in dims.items()
                ]
                scan(conn, start, start + timedelta(days=1), where)
    return [e for e, _ in best]


def _top_scan(
    ledger: Ledger,
    n: int,
    since: datetime | None,
    until: datetime | None,
    filters: Mapping[str, list[str] | None],
    currency: str | None = None,
) -> list[StoredEvent]:
    """What the rollups cannot prune (a user and a tag, several tags, less than a day):
    one scan of the selection (``currency``: of its calls priced in that currency)."""
    from sqlalchemy import Float, cast, select

    from .._ledger import StoredEvent
    from .._ledger._query import _conditions
    from .._ledger._tables import events_table as t

    store = ledger._core.store
    priced_in = [] if currency is None else [t.c.currency == currency]
    conds = [
        *_conditions(store.dialect, since, until, filters),
        *priced_in,
        t.c.total_cost.is_not(None),
    ]
    if store.dialect == "postgresql":  # NUMERIC orders exactly
        stmt = select(t).where(*conds).order_by(*_pg_order()).limit(n)
        with store.read_connection() as conn:
            return [StoredEvent.from_row(r._mapping) for r in conn.execute(stmt)]
    # SQLite keeps money as text. Rounding to a float never reverses an order (it is
    # monotonic), so the n largest exact amounts are among the rows whose float is at
    # least the n-th largest float of any subset of the selection; those few candidates
    # are then ordered exactly. The subset: the selection's dearest day, which the
    # rollups name at once, so the whole selection is scanned only once.
    approx = cast(t.c.total_cost, Float)

    def nth_largest(conn: Any, lo: datetime | None, hi: datetime | None) -> Any:
        where = [
            *_conditions(store.dialect, lo, hi, filters),
            *priced_in,
            t.c.total_cost.is_not(None),
        ]
        query = select(approx).where(*where).order_by(approx.desc()).offset(n - 1).limit(1)
        return conn.execute(query).scalar()

    dearest = _dearest_day(ledger, since, until, filters, currency)
    with store.read_connection() as conn:
        floor = None if dearest is None else nth_largest(conn, *dearest)
        if floor is None:
            floor = nth_largest(conn, since, until)
        stmt = select(t).where(*conds)
        if floor is not None:
            stmt = stmt.where(approx >= floor)
        found = [StoredEvent.from_row(r._mapping) for r in conn.execute(stmt)]
    found.sort(key=lambda e: (_dearest_first(e), e.timestamp, e.id))
    return found[:n]


def _dearest_day(
    ledger: Ledger,
    since: datetime | None,
    until: datetime | None,
    filters: Mapping[str, list[str] | None],
    currency: str | None = None,
) -> tuple[datetime, datetime] | None:
    """The UTC day of the selection with the highest cost (in ``currency``, when given: a
    day's rows are per currency), clipped to the selection."""
    from datetime import timedelta, timezone

    days = _summarize(ledger, ("day",), since, until, filters, True)
    if currency is not None:
        days = [r for r in days if r.currency == currency]
    best = max(days, key=lambda r: r.cost, default=None)
    if best is None or best.day is None:
        return None
    start = datetime(best.day.year, best.day.month, best.day.day, tzinfo=timezone.utc)
    end = start + timedelta(days=1)
    return (
        start if since is None else max(start, since),
        end if until is None else min(end, until),
    )
