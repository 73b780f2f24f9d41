"""``whatif``: the selected history re-priced under another price book, exactly;
``reprice``: unknown-model events priced once a price exists."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._usage import TOKEN_FIELDS
from ._common import EXACT, canonical, check_filters, money_text, open_ledger, share_of
from ._when import resolve_bounds

if TYPE_CHECKING:
    from sqlalchemy import Select

    from .._cost import Cost
    from .._ledger import Ledger
    from .._ledger._store import Store
    from .._pricing import PriceBook, Pricer
    from .._tracker import LedgerLike

__all__ = ["RepriceResult", "UnpricedCall", "WhatIf", "WhatIfRow", "reprice", "whatif"]

_UTC = timezone.utc
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class WhatIfRow:
    """One model (response model when known) in one currency, then and under the book.

    ``cost_then`` sums the stored costs, ``cost_book`` the costs under the book.
    ``savings`` is exact over the ``compared`` calls, those priced both ways in the
    same currency: ``cost then - cost under the book`` (positive: the book is cheaper).
    ``savings_share`` is ``savings`` over what those calls cost then (six places).
    ``no_usage`` counts the calls that did not fail but reported no usage (as in
    ``report``): nothing to price then or under the book, so in neither cost, nor in the
    unpriced counts; what they cost is unknown.
    """

    model: str | None
    currency: str
    requests: int
    cost_then: Decimal
    cost_book: Decimal
    compared: int
    savings: Decimal
    savings_share: Decimal | None
    unpriced_then: int
    unpriced_book: int
    other_currency: int
    """Calls the book prices in another currency than they were priced in (not compared)."""
    no_usage: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "currency": self.currency,
            "requests": self.requests,
            "cost_then": money_text(self.cost_then),
            "cost_book": money_text(self.cost_book),
            "compared": self.compared,
            "savings": money_text(self.savings),
            "savings_share": money_text(self.savings_share),
            "unpriced_then": self.unpriced_then,
            "unpriced_book": self.unpriced_book,
            "other_currency": self.other_currency,
            "no_usage": self.no_usage,
        }


@dataclass(frozen=True, slots=True)
class UnpricedCall:
    """A call without a price then, or under the book."""

    id: str
    timestamp: datetime
    model: str | None
    provider: str | None
    priced_then: bool
    priced_book: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": self.timestamp.isoformat(),
            "model": self.model,
            "provider": self.provider,
            "priced_then": self.priced_then,
            "priced_book": self.priced_book,
        }


@dataclass(frozen=True, slots=True)
class WhatIf:
    """Per-model rows (most expensive then first), totals per currency, unpriced calls."""

    rows: tuple[WhatIfRow, ...]
    totals: tuple[WhatIfRow, ...]
    unpriced: tuple[UnpricedCall, ...]
    unpriced_count: int
    """All unpriced calls; ``unpriced`` lists the first ``list_limit`` of them."""
    since: datetime | None
    until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.as_dict() for r in self.rows],
            "totals": [t.as_dict() for t in self.totals],
            "unpriced": [u.as_dict() for u in self.unpriced],
            "unpriced_count": self.unpriced_count,
        }


class _Acc:
    __slots__ = (
        "compared",
        "cost_book",
        "cost_then",
        "no_usage",
        "other",
        "requests",
        "savings",
        "then_compared",
        "unpriced_book",
        "unpriced_then",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.cost_then = _ZERO
        self.cost_book = _ZERO
        self.compared = 0
        self.savings = _ZERO
        self.then_compared = _ZERO
        self.unpriced_then = 0
        self.unpriced_book = 0
        self.other = 0
        self.no_usage = 0

    def merge(self, other: _Acc) -> None:
        add = EXACT.add
        self.requests += other.requests
        self.cost_then = add(self.cost_then, other.cost_then)
        self.cost_book = add(self.cost_book, other.cost_book)
        self.compared += other.compared
        self.savings = add(self.savings, other.savings)
        self.then_compared = add(self.then_compared, other.then_compared)
        self.unpriced_then += other.unpriced_then
        self.unpriced_book += other.unpriced_book
        self.other += other.other
        self.no_usage += other.no_usage

    def row(self, model: str | None, currency: str) -> WhatIfRow:
        return WhatIfRow(
            model=model,
            currency=currency,
            requests=self.requests,
            cost_then=canonical(self.cost_then),
            cost_book=canonical(self.cost_book),
            compared=self.compared,
            savings=canonical(self.savings),
            savings_share=share_of(self.savings, self.then_compared),
            unpriced_then=self.unpriced_then,
            unpriced_book=self.unpriced_book,
            other_currency=self.other,
            no_usage=self.no_usage,
        )


def _pricer(price_book: PriceBook | Pricer | None, only_book: bool) -> Pricer:
    from .._pricing import Pricer

    if isinstance(price_book, Pricer):
        if only_book:
            raise ValueError("only_book applies to a price book, not to a Pricer")
        return price_book
    if price_book is None:
        if only_book:
            raise ValueError("only_book needs a price book")
        return Pricer()
    if only_book:
        return Pricer(overrides=price_book, genai_prices=False, litellm=False)
    return Pricer(overrides=price_book)


_COLUMNS = (
    "id",
    "timestamp",
    "model",
    "response_model",
    "provider",
    "cache_hit",
    *TOKEN_FIELDS,
    "pricing_status",
    "currency",
    "total_cost",
    "price_context",
    "status",
)


def _rows(store: Store, stmt: Select[Any], batch: int = 5000) -> Iterator[Any]:
    if store.single_connection:  # one shared in-memory connection: read it all, then yield
        with store.read_connection() as conn:
            rows = list(conn.execute(stmt))
        yield from rows
        return
    with store.read_connection() as conn:
        yield from conn.execute(stmt, execution_options={"yield_per": batch})


def whatif(
    ledger: Ledger | LedgerLike | str | None,
    price_book: PriceBook | Pricer,
    *,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    only_book: bool = False,
    list_limit: int = 100,
    now: datetime | None = None,
    **filters: str | Sequence[str] | None,
) -> WhatIf:
    """Re-price the selected calls under ``price_book`` (a mapping, a .toml / .json file
    in the format of ``Pricer(overrides=...)``, or a ``Pricer``) and compare, exactly.

    The book is laid over the default prices, as ``Pricer(overrides=...)`` does, so a
    model it does not list is priced as usual; ``only_book=True`` prices with the book
    alone (what it does not list is unpriced under it). Each call is priced at its own
    time, with its own usage (long-context tiers and time-of-day prices apply). Cache
    hits and calls with nothing to price keep their cost. Reads every selected event
    (no rollup can answer this): about 100,000 events a second.
    """
    if isinstance(list_limit, bool) or not isinstance(list_limit, int) or list_limit < 0:
        raise ValueError(f"list_limit must be a non-negative int, got {list_limit!r}")
    pricer = _pricer(price_book, only_book)
    checked = check_filters(filters)
    lo, hi = resolve_bounds(since, until, now=now)
    with _quiet_unknown_models():
        return _whatif(ledger, pricer, lo, hi, checked, list_limit)


@contextlib.contextmanager
def _quiet_unknown_models() -> Iterator[None]:
    """The pricer's "no price for model" warnings, from this thread: the result lists
    those calls already."""
    me = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        return not (
            record.thread == me and getattr(record, "costledger_event", None) == "unknown_model"
        )

    logger = logging.getLogger("costledger")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _whatif(
    ledger: Ledger | LedgerLike | str | None,
    pricer: Pricer,
    lo: datetime | None,
    hi: datetime | None,
    checked: Mapping[str, list[str] | None],
    list_limit: int,
) -> WhatIf:
    from sqlalchemy import select

    from .._ledger._query import _conditions, is_no_usage
    from .._ledger._tables import events_table as t
    from .._usage import Usage

    accs: dict[tuple[str | None, str], _Acc] = {}
    unpriced: list[UnpricedCall] = []
    n_unpriced = 0
    add = EXACT.add
    sub = EXACT.subtract
    with open_ledger(ledger) as opened:
        store = opened._core.store
        stmt = (
            select(*(t.c[name] for name in _COLUMNS))
            .where(*_conditions(store.dialect, lo, hi, checked))
            .order_by(t.c.timestamp, t.c.id)
        )
        price = pricer.price
        for r in _rows(store, stmt):
            (eid, ts, model, response_model, provider, cache_hit, *tokens) = r[:14]
            status, currency, then, context, call_status = r[14], r[15], r[16], r[17], r[18]
            name = response_model or model
            book: Cost | None = None
            if status == "not_priced" or cache_hit or not name:
                book_total, book_currency, book_known = then, currency, status != "unknown_model"
            else:
                try:
                    # the book's price for the variant the call was served at
                    book = price(
                        name,
                        Usage(*tokens),
                        provider=provider,
                        at=ts,
                        price_context=context,
                        requested_model=model,
                    )
                except (ValueError, TypeError):
                    book = None
                if book is None or book.total is None:
                    book_total, book_currency, book_known = None, currency, False
                else:
                    book_total, book_currency, book_known = book.total, book.currency, True
            then_known = then is not None or status == "not_priced"
            row_currency = currency if then is not None or book_total is None else book_currency
            acc = accs.get((name, row_currency))
            if acc is None:
                acc = accs[(name, row_currency)] = _Acc()
            acc.requests += 1
            if then is not None:
                acc.cost_then = add(acc.cost_then, then)
            elif status != "not_priced":
                acc.unpriced_then += 1
            elif is_no_usage(call_status, status):
                acc.no_usage += 1
            if book_total is not None:
                if book_currency != row_currency:
                    acc.other += 1
                else:
                    acc.cost_book = add(acc.cost_book, book_total)
                    if then is not None:
                        acc.compared += 1
                        acc.savings = add(acc.savings, sub(then, book_total))
                        acc.then_compared = add(acc.then_compared, then)
            elif not book_known:
                acc.unpriced_book += 1
            if not then_known or not book_known:
                n_unpriced += 1
                if len(unpriced) < list_limit:
                    unpriced.append(UnpricedCall(eid, ts, name, provider, then_known, book_known))
    rows = [acc.row(model, currency) for (model, currency), acc in accs.items()]
    # copy_negate is exact; unary minus would round to the context's 28 digits
    rows.sort(
        key=lambda r: (
            r.currency,
            r.cost_then.copy_negate(),
            r.cost_book.copy_negate(),
            r.model or "",
        )
    )
    per_currency: dict[str, _Acc] = {}
    for (_, currency), acc in accs.items():
        per_currency.setdefault(currency, _Acc()).merge(acc)
    totals = tuple(acc.row(None, cur) for cur, acc in sorted(per_currency.items()))
    return WhatIf(
        rows=tuple(rows),
        totals=totals,
        unpriced=tuple(unpriced),
        unpriced_count=n_unpriced,
        since=lo,
        until=hi,
    )


# -- reprice -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepriceResult:
    """What ``reprice`` found and did.

    ``by_model``: per model, calls priced now and calls still without a price.
    ``added``: per currency, the exact money the newly priced calls add.
    """

    examined: int
    repriced: int
    still_unknown: int
    by_model: Mapping[str | None, tuple[int, int]]
    added: Mapping[str, Decimal]
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "repriced": self.repriced,
            "still_unknown": self.still_unknown,
            "dry_run": self.dry_run,
            "models": [
                {"model": m, "repriced": a, "still_unknown": b}
                for m, (a, b) in self.by_model.items()
            ],
            "added": {k: money_text(v) for k, v in self.added.items()},
        }


def _unknown_days(store: Store) -> list[date]:
    """Days the rollups say hold unknown-model events (so only those are read)."""
    from sqlalchemy import select

    from .._ledger._rollups import TABLES

    r = TABLES["costledger_rollup_core"]
    stmt = select(r.c.day).where(r.c.pricing_status == "unknown_model").distinct()
    with store.read_connection() as conn:
        return sorted(conn.execute(stmt).scalars())


def _day_ranges(
    days: Sequence[date], lo: datetime | None, hi: datetime | None
) -> list[tuple[datetime, datetime]]:
    ranges: list[tuple[datetime, datetime]] = []
    for day in days:
        start = datetime(day.year, day.month, day.day, tzinfo=_UTC)
        end = start + timedelta(days=1)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    out = []
    for start, end in ranges:
        s = start if lo is None else max(start, lo)
        e = end if hi is None else min(end, hi)
        if s < e:
            out.append((s, e))
    return out


def reprice(
    ledger: Ledger | LedgerLike | str | None,
    pricer: Pricer | PriceBook | None = None,
    *,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    dry_run: bool = False,
    batch_size: int = 1000,
    now: datetime | None = None,
    **filters: str | Sequence[str] | None,
) -> RepriceResult:
    """Price the stored ``unknown_model`` events that now have a price.

    ``pricer``: a ``Pricer``, a price book (laid over the defaults), or ``None`` for
    the default prices (genai-prices may have been updated since). Each event is priced
    at its own time with ``Pricer.reprice``; the new costs are written with
    ``Ledger.update_costs`` (rollups follow in the same transaction), ``batch_size`` at
    a time. ``dry_run=True`` writes nothing. Only the days the rollups show unpriced
    events on are read.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    chosen = _pricer(pricer, only_book=False)
    checked = check_filters(filters)
    lo, hi = resolve_bounds(since, until, now=now)
    with _quiet_unknown_models():
        return _reprice(ledger, chosen, lo, hi, checked, dry_run, batch_size)


def _reprice(
    ledger: Ledger | LedgerLike | str | None,
    chosen: Pricer,
    lo: datetime | None,
    hi: datetime | None,
    checked: Mapping[str, list[str] | None],
    dry_run: bool,
    batch_size: int,
) -> RepriceResult:
    from sqlalchemy import and_, or_, select

    from .._ledger import StoredEvent
    from .._ledger._query import _conditions
    from .._ledger._tables import events_table as t

    examined = repriced = 0
    by_model: dict[str | None, list[int]] = {}
    added: dict[str, Decimal] = {}
    with open_ledger(ledger) as opened:
        store = opened._core.store
        for start, end in _day_ranges(_unknown_days(store), lo, hi):
            conds = [
                *_conditions(store.dialect, start, end, checked),
                t.c.pricing_status == "unknown_model",
            ]
            last: tuple[datetime, str] | None = None
            while True:
                stmt = select(t).where(*conds)
                if last is not None:
                    stmt = stmt.where(
                        or_(
                            t.c.timestamp > last[0],
                            and_(t.c.timestamp == last[0], t.c.id > last[1]),
                        )
                    )
                stmt = stmt.order_by(t.c.timestamp, t.c.id).limit(batch_size)
                with store.read_connection() as conn:
                    page = [StoredEvent.from_row(r._mapping) for r in conn.execute(stmt)]
                if not page:
                    break
                last = (page[-1].timestamp, page[-1].id)
                changes: list[tuple[str, Cost]] = []
                for stored in page:
                    examined += 1
                    event = stored.to_event()
                    cost = chosen.reprice(event).cost
                    counts = by_model.setdefault(event.response_model or event.model, [0, 0])
                    if cost.status == "priced" and cost.total is not None:
                        changes.append((stored.id, cost))
                        counts[0] += 1
                        added[cost.currency] = EXACT.add(
                            added.get(cost.currency, _ZERO), cost.total
                        )
                    else:
                        counts[1] += 1
                if changes and not dry_run:
                    repriced += opened.update_costs(changes)
                elif changes:
                    repriced += len(changes)
                if len(page) < batch_size:
                    break
    return RepriceResult(
        examined=examined,
        repriced=repriced,
        still_unknown=examined - repriced,
        by_model={m: (a, b) for m, (a, b) in sorted(by_model.items(), key=lambda kv: -kv[1][0])},
        added={k: canonical(v) for k, v in sorted(added.items())},
        dry_run=dry_run,
    )
