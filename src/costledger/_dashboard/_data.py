"""What the dashboard shows, computed from the ledger exactly, and the JSON the page reads.

Every figure comes from ``Ledger.summary`` (or ``top`` / ``budget_status``); money stays
``Decimal`` here and becomes a decimal string in the payload, so the page's tables and
totals print exactly what the ledger holds. The only rounded figures are shares (six
places) and forecasts (twelve significant digits), both named as such.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import TYPE_CHECKING, Any

from .._reports._common import EXACT, exact_text

if TYPE_CHECKING:
    from .._guards import Budget, BudgetStatus
    from .._ledger import Ledger, StoredEvent, SummaryRow
    from .._tracker import Tracker

__all__ = [
    "PAYLOAD_SCHEMA",
    "TOKEN_KINDS",
    "Burn",
    "BurnPoint",
    "Dashboard",
    "build_dashboard",
    "known_cost",
]

PAYLOAD_SCHEMA = 1
_UTC = timezone.utc
_FORECAST = Context(prec=12, rounding=ROUND_HALF_EVEN)
_SHARE = Decimal("0.000001")

TOKEN_KINDS: tuple[str, ...] = (
    "input_uncached",
    "cache_read",
    "cache_write",
    "output_excl_reasoning",
    "reasoning",
)
"""Token kinds that partition a call's tokens: input (uncached, cache reads, cache writes)
plus output (reasoning and the rest)."""


def _add(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for v in values:
        total = EXACT.add(total, v)
    return total


def _share(part: Decimal | int, whole: Decimal | int) -> str | None:
    if not whole:
        return None
    return format(EXACT.divide(Decimal(part), Decimal(whole)).quantize(_SHARE, context=EXACT), "f")


def _iso(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(_UTC).isoformat().replace("+00:00", "Z")
    return value.isoformat()


def _tokens(row: SummaryRow) -> dict[str, int]:
    """The partition of a group's tokens into ``TOKEN_KINDS``."""
    return {
        "input_uncached": row.input_tokens - row.cache_read_tokens - row.cache_write_tokens,
        "cache_read": row.cache_read_tokens,
        "cache_write": row.cache_write_tokens,
        "output_excl_reasoning": row.output_tokens - row.reasoning_tokens,
        "reasoning": row.reasoning_tokens,
    }


def known_cost(row: SummaryRow) -> Decimal | None:
    """``row``'s cost, or ``None`` when none of its calls has a price (each one unpriced or
    without usage): unknown, not 0, as ``costledger report`` shows ``-``. Calls priced at
    exactly 0, and failed calls that reported no usage, keep their 0."""
    if row.requests and row.unpriced + row.no_usage >= row.requests:
        return None
    return row.cost


def _figures(row: SummaryRow) -> dict[str, Any]:
    cost = known_cost(row)
    return {
        "currency": row.currency,
        "requests": row.requests,
        "errors": row.errors,
        "cancelled": row.cancelled,
        "unpriced": row.unpriced,
        "no_usage": row.no_usage,
        "input_tokens": row.input_tokens,
        "cache_read_tokens": row.cache_read_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "output_tokens": row.output_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost": None if cost is None else exact_text(cost),  # None: unknown, not 0
    }


# -- burn ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BurnPoint:
    """Spend from the period's start up to ``at`` (exact: a sum of whole ledger rows)."""

    at: datetime
    spent: Decimal


@dataclass(frozen=True, slots=True)
class Burn:
    """Spend over one period so far, and where a straight line takes it by the period's end.

    ``limit`` is ``None`` for the month-to-date burn shown when no budget is configured.
    ``forecast`` is ``spent * (end - start) / (now - start)``, rounded to twelve
    significant digits (``None`` when the period has no end or has not begun).
    ``status`` is the budget's own count (``budget_status``), which also holds unpriced
    calls at their reservation; ``points`` are the ledger's spend.
    """

    title: str
    unit: str
    start: datetime
    end: datetime | None
    now: datetime
    points: tuple[BurnPoint, ...]
    limit: Decimal | None = None
    budget: str | None = None
    key: str | None = None
    per: str | None = None
    status: BudgetStatus | None = None

    @property
    def spent(self) -> Decimal:
        return self.points[-1].spent if self.points else Decimal(0)

    @property
    def forecast(self) -> Decimal | None:
        if self.end is None:
            return None
        elapsed = _micros(self.now - self.start)
        if elapsed <= 0:
            return None
        whole = _micros(self.end - self.start)
        return _FORECAST.divide(_FORECAST.multiply(self.spent, Decimal(whole)), Decimal(elapsed))

    def as_dict(self) -> dict[str, Any]:
        forecast = self.forecast
        tokens = self.unit == "tokens"

        def text(value: Decimal) -> str:
            return str(int(value)) if tokens else exact_text(value)

        out: dict[str, Any] = {
            "title": self.title,
            "unit": self.unit,
            "budget": self.budget,
            "per": self.per,
            "key": self.key,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "now": _iso(self.now),
            "limit": None if self.limit is None else text(self.limit),
            "points": [
                {
                    "at": _iso(p.at),
                    "spent": text(p.spent),
                    "remaining": None
                    if self.limit is None
                    else text(EXACT.subtract(self.limit, p.spent)),
                }
                for p in self.points
            ],
            "spent": text(self.spent),
            "forecast": None if forecast is None else exact_text(forecast),
            "forecast_remaining": None
            if forecast is None or self.limit is None
            else exact_text(_FORECAST.subtract(self.limit, forecast)),
            "over": bool(self.limit is not None and forecast is not None and forecast > self.limit),
        }
        return out


def _micros(delta: timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _day_points(
    rows: Iterable[SummaryRow],
    start: datetime,
    now: datetime,
    units: Any,
) -> tuple[BurnPoint, ...]:
    """Cumulative spend at the start and the end of each UTC day with spend (clipped to
    ``[start, now]``), so the line is flat where nothing was spent.

    Each row sums the events in ``[max(day, start), min(day + 1, now))``, so every
    running total is exact at its instant."""
    per_day: dict[date, Decimal] = {}
    for row in rows:
        if row.day is None:
            continue
        amount = units(row)
        if amount:
            per_day[row.day] = EXACT.add(per_day.get(row.day, Decimal(0)), amount)
    points = [BurnPoint(start, Decimal(0))]
    running = Decimal(0)
    for day in sorted(per_day):
        begin = datetime(day.year, day.month, day.day, tzinfo=_UTC)
        if begin > points[-1].at:
            points.append(BurnPoint(begin, running))
        running = EXACT.add(running, per_day[day])
        points.append(BurnPoint(min(begin + timedelta(days=1), now), running))
    if points[-1].at < now:
        points.append(BurnPoint(now, running))
    return tuple(points)


def _month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = datetime(now.year, now.month, 1, tzinfo=_UTC)
    nxt = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return start, datetime(nxt[0], nxt[1], 1, tzinfo=_UTC)


def _month_burn(ledger: Ledger, now: datetime, currency: str, filters: Mapping[str, Any]) -> Burn:
    start, end = _month_bounds(now)
    rows = ledger.summary(by=["day"], since=start, until=now, **filters)

    def units(row: SummaryRow) -> Decimal:
        return row.cost if row.currency == currency else Decimal(0)

    return Burn(
        title=f"Spend this month ({start:%Y-%m}, UTC)",
        unit=currency,
        start=start,
        end=end,
        now=now,
        points=_day_points(rows, start, now, units),
    )


def _budget_burn(
    ledger: Ledger, budget: Budget, status: BudgetStatus, now: datetime
) -> Burn | None:
    """The ledger's spend for one budget and key this period (calendar periods only: a
    rolling window has no end to forecast to, a lifetime budget no start)."""
    if budget.period.kind != "calendar" or status.period_start is None:
        return None
    start = status.period_start.astimezone(_UTC)
    end = None if status.resets_at is None else status.resets_at.astimezone(_UTC)
    filters: dict[str, Any] = dict(budget.where or {})
    by = ["day"]
    per = budget.per
    if per is not None:
        if status.key is None:  # "no key" cannot be a filter: group by the key, keep None
            by.append(per)
        else:
            filters[per] = status.key
    rows = ledger.summary(by=by, since=start, until=now, **filters)
    if per is not None and status.key is None:
        rows = [r for r in rows if getattr(r, per) is None]
    tokens = budget.tokens

    def units(row: SummaryRow) -> Decimal:
        if tokens:
            return Decimal(row.input_tokens + row.output_tokens)
        return row.cost if row.currency == status.unit else Decimal(0)

    title = status.budget
    if per is not None:
        title += f" · {per} {status.key}" if status.key is not None else f" · no {per}"
    return Burn(
        title=title,
        unit=status.unit,
        start=start,
        end=end,
        now=now,
        points=_day_points(rows, start, now, units),
        limit=status.limit,
        budget=status.budget,
        key=status.key,
        per=per,
        status=status,
    )


def _status_dict(s: BudgetStatus) -> dict[str, Any]:
    tokens = s.unit == "tokens"

    def text(value: Decimal) -> str:
        return str(int(value)) if tokens else exact_text(value)

    return {
        "budget": s.budget,
        "per": s.per,
        "key": s.key,
        "unit": s.unit,
        "limit": text(s.limit),
        "spent": text(s.spent),
        "reserved": text(s.reserved),
        "remaining": text(s.remaining),
        "used": _share(s.spent, s.limit),
        "period": s.period,
        "period_start": _iso(s.period_start),
        "resets_at": _iso(s.resets_at),
        "hard": s.hard,
    }


# -- the dashboard ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything the page shows for one selection of the ledger.

    Summary rows are the ledger's own (``Ledger.summary``); ``payload()`` turns them into
    the JSON the page draws from (money as decimal strings). When exactly one currency
    holds amounts, the calls of the others (which hold none: unpriced calls are stored as
    USD whatever the prices are in) are counted in it, as ``report`` does. The charts and
    the top calls show ``currency``, the one holding the spend (see ``_primary_currency``);
    the totals show every currency.
    """

    generated_at: datetime
    since: datetime | None
    until: datetime | None
    filters: Mapping[str, tuple[str, ...]]
    currency: str
    totals: tuple[SummaryRow, ...]
    by_day_model: tuple[SummaryRow, ...]
    by_user: tuple[SummaryRow, ...]
    by_feature: tuple[SummaryRow, ...]
    by_model: tuple[SummaryRow, ...]
    top_calls: tuple[StoredEvent, ...]
    burns: tuple[Burn, ...]
    budgets: tuple[BudgetStatus, ...] = ()
    ledger: str = ""
    max_groups: int = 20
    max_models: int = 10
    notes: tuple[str, ...] = field(default=())

    @property
    def unpriced(self) -> dict[str | None, int]:
        """Calls without a price per model (their cost is unknown, not zero)."""
        out: dict[str | None, int] = {}
        for row in self.by_model:
            if row.unpriced:
                out[row.model] = out.get(row.model, 0) + row.unpriced
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))

    @property
    def no_usage(self) -> dict[str | None, int]:
        """Calls that reported no usage per model (status ok or cancelled, nothing to
        price: their cost is unknown, not zero; see ``SummaryRow.no_usage``)."""
        out: dict[str | None, int] = {}
        for row in self.by_model:
            if row.no_usage:
                out[row.model] = out.get(row.model, 0) + row.no_usage
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))

    def payload(self) -> dict[str, Any]:
        """The page's data: JSON-ready, money as exact decimal strings."""
        unpriced = self.unpriced
        no_usage = self.no_usage
        return {
            "schema": PAYLOAD_SCHEMA,
            "generated_at": _iso(self.generated_at),
            "ledger": self.ledger,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "filters": {k: list(v) for k, v in self.filters.items()},
            "currency": self.currency,
            "totals": [_figures(r) for r in self.totals],
            "cost_by_day": self._cost_by_day(),
            "cost_by_user": self._ranked(self.by_user, "user"),
            "cost_by_feature": self._ranked(self.by_feature, "feature"),
            "tokens": self._tokens(),
            "top_calls": [_call(e) for e in self.top_calls],
            "unpriced": {
                "calls": sum(unpriced.values()),
                "models": [{"model": m, "calls": n} for m, n in unpriced.items()],
            },
            "no_usage": {
                "calls": sum(no_usage.values()),
                "models": [{"model": m, "calls": n} for m, n in no_usage.items()],
            },
            "burn": [b.as_dict() for b in self.burns],
            "budgets": [_status_dict(s) for s in self.budgets],
            "notes": list(self.notes),
        }

    def _cost_by_day(self) -> dict[str, Any]:
        rows = [r for r in self.by_day_model if r.currency == self.currency]
        days = sorted({r.day for r in rows if r.day is not None})
        per_model: dict[str | None, Decimal] = {}
        for r in rows:
            per_model[r.model] = EXACT.add(per_model.get(r.model, Decimal(0)), r.cost)
        ranked = sorted(per_model, key=lambda m: (per_model[m].copy_negate(), m is None, m or ""))
        shown = ranked[: self.max_models]
        rest = set(ranked[self.max_models :])
        index = {d: i for i, d in enumerate(days)}
        cells: dict[str | None, list[Decimal]] = {m: [Decimal(0)] * len(days) for m in shown}
        other = [Decimal(0)] * len(days)
        total = [Decimal(0)] * len(days)
        requests = [0] * len(days)
        for r in rows:
            if r.day is None:
                continue
            i = index[r.day]
            target = other if r.model in rest else cells[r.model]
            target[i] = EXACT.add(target[i], r.cost)
            total[i] = EXACT.add(total[i], r.cost)
            requests[i] += r.requests
        series = [{"model": m, "cost": [exact_text(c) for c in cells[m]]} for m in shown]
        return {
            "currency": self.currency,
            "days": [d.isoformat() for d in days],
            "series": series,
            "other": None
            if not rest
            else {"models": len(rest), "cost": [exact_text(c) for c in other]},
            "total": [exact_text(c) for c in total],
            "requests": requests,
        }

    def _ranked(self, rows: Sequence[SummaryRow], name: str) -> dict[str, Any]:
        """Groups by cost (most first), the first ``max_groups`` of them, the rest summed."""
        mine = sorted(
            (r for r in rows if r.currency == self.currency),
            key=lambda r: (r.cost.copy_negate(), getattr(r, name) is None, getattr(r, name) or ""),
        )
        total = _add(r.cost for r in mine)
        shown, rest = mine[: self.max_groups], mine[self.max_groups :]
        return {
            "currency": self.currency,
            "key": name,
            "groups": [
                {
                    name: getattr(r, name),
                    "cost": exact_text(r.cost),
                    "share": _share(r.cost, total),
                    "requests": r.requests,
                    "unpriced": r.unpriced,
                    "no_usage": r.no_usage,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                }
                for r in shown
            ],
            "other": None
            if not rest
            else {
                "groups": len(rest),
                "cost": exact_text(_add(r.cost for r in rest)),
                "share": _share(_add(r.cost for r in rest), total),
                "requests": sum(r.requests for r in rest),
            },
            "total": exact_text(total),
        }

    def _tokens(self) -> dict[str, Any]:
        """Tokens by kind per model (every currency: tokens are not money)."""
        per_model: dict[str | None, dict[str, int]] = {}
        for r in self.by_model:
            acc = per_model.setdefault(r.model, dict.fromkeys(TOKEN_KINDS, 0))
            for kind, n in _tokens(r).items():
                acc[kind] += n
        ranked = sorted(per_model, key=lambda m: (-sum(per_model[m].values()), m is None, m or ""))
        shown, rest = ranked[: self.max_models], ranked[self.max_models :]
        totals = dict.fromkeys(TOKEN_KINDS, 0)
        for counts in per_model.values():
            for kind, n in counts.items():
                totals[kind] += n
        input_total = totals["input_uncached"] + totals["cache_read"] + totals["cache_write"]
        other = dict.fromkeys(TOKEN_KINDS, 0)
        for m in rest:
            for kind, n in per_model[m].items():
                other[kind] += n

        def cached_share(counts: Mapping[str, int]) -> str | None:
            whole = counts["input_uncached"] + counts["cache_read"] + counts["cache_write"]
            return _share(counts["cache_read"], whole)

        return {
            "kinds": list(TOKEN_KINDS),
            "models": shown,
            "by_kind": {kind: [per_model[m][kind] for m in shown] for kind in TOKEN_KINDS},
            "cached_share_by_model": [cached_share(per_model[m]) for m in shown],
            "other": None if not rest else {"models": len(rest), **other},
            "totals": totals,
            "input_tokens": input_total,
            "output_tokens": totals["output_excl_reasoning"] + totals["reasoning"],
            "cached_share": cached_share(totals),
        }


def _call(e: StoredEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "timestamp": _iso(e.timestamp),
        "model": e.response_model or e.model,
        "provider": e.provider,
        "source": e.source,
        "status": e.status,
        "user": e.user,
        "team": e.team,
        "project": e.project,
        "feature": e.feature,
        "input_tokens": e.input_tokens,
        "cache_read_tokens": e.cache_read_tokens,
        "output_tokens": e.output_tokens,
        "reasoning_tokens": e.reasoning_tokens,
        # None for an infinite or NaN latency a ledger may hold from before they were refused.
        "latency_ms": None if e.latency_ms is None or e.latency_ms - e.latency_ms else e.latency_ms,
        "cost": None if e.total_cost is None else exact_text(e.total_cost),
        "currency": e.currency,
    }


_COUNTS = (
    "requests",
    "errors",
    "cancelled",
    "unpriced",
    "no_usage",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _fold(rows: Iterable[SummaryRow], by: tuple[str, ...]) -> tuple[SummaryRow, ...]:
    """Summary rows regrouped by fewer keys (each row's events in exactly one group), as
    ``Ledger.summary(by=by)`` would give them: exact sums, the same order."""
    from .._ledger import SummaryRow

    groups: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        key = (*(getattr(r, name) for name in by), r.currency)
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = [0] * len(_COUNTS) + [Decimal(0)]
        for i, name in enumerate(_COUNTS):
            acc[i] += getattr(r, name)
        acc[-1] = EXACT.add(acc[-1], r.cost)
    out = []
    for key, acc in groups.items():
        values: dict[str, Any] = dict(zip(_COUNTS, acc[:-1], strict=True))
        values.update(zip(by, key[:-1], strict=True))
        out.append(SummaryRow(by=by, currency=key[-1], cost=acc[-1], **values))
    out.sort(key=lambda row: (*((v is None, v) for v in row.key), row.currency))
    return tuple(out)


def _sole_amount_currency(*groups: Sequence[SummaryRow]) -> str | None:
    """The one currency holding an amount other than zero, when exactly one does, as
    ``report`` decides: the calls of every other currency (unpriced ones, an unknown
    model's being stored as USD whatever the prices are in; calls with nothing to price;
    calls priced at exactly 0) hold no amount and join it, their counts kept."""
    held = {r.currency for rows in groups for r in rows if not r.cost.is_zero()}
    return next(iter(held)) if len(held) == 1 else None


def _joined(
    rows: tuple[SummaryRow, ...], into: str | None, by: tuple[str, ...]
) -> tuple[SummaryRow, ...]:
    """``rows`` with every currency but ``into`` counted in ``into`` (``None``: as they are)."""
    if into is None or all(r.currency == into for r in rows):
        return rows
    return _fold((replace(r, currency=into) for r in rows), by)


def _priced_calls(row: SummaryRow) -> int:
    return row.requests - row.unpriced - row.no_usage


def _primary_currency(totals: Sequence[SummaryRow]) -> str:
    """The charts' currency: the one holding the spend. Amounts in two currencies are never
    compared, so among currencies holding amounts the one with the most calls of known cost
    wins (then USD, then the first by name); a selection with no amount at all takes the
    currency of the most such calls the same way."""
    if not totals:
        return "USD"
    best = min(
        totals,
        key=lambda r: (
            r.cost.is_zero(),
            -_priced_calls(r),
            -r.requests,
            r.currency != "USD",
            r.currency,
        ),
    )
    return best.currency


_ISOLATES_OPEN = frozenset("\u2066\u2067\u2068")
_PDI = "\u2069"
# Bidi classes that can move the words around a name: right-to-left letters and Arabic
# digits, and the explicit embeddings, overrides and isolates.
_REORDERING = frozenset(
    {"R", "AL", "AN", "LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}
)


def isolated(text: str) -> str:
    """``text`` ready to join into a sentence: as a bidi isolate (FSI ... PDI) when it holds
    a character that could reorder the words around it, so that a name holding a
    right-to-left override (U+202E) reverses itself only; left-to-right text as it is.
    A PDI of its own that would close the isolate early is dropped (alone it does
    nothing), and each isolate it opens is closed before ours (page.js's ``isolate``
    does the same, to every name)."""
    if not any(unicodedata.bidirectional(c) in _REORDERING for c in text):
        return text
    out = []
    opened = 0
    for c in text:
        if c == _PDI:
            if not opened:
                continue
            opened -= 1
        elif c in _ISOLATES_OPEN:
            opened += 1
        out.append(c)
    return "\u2068" + "".join(out) + _PDI * (opened + 1)


def _check_filters(filters: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The reports' filter check; a filter given as ``None`` selects nothing here."""
    from .._reports._common import check_filters

    return {name: tuple(v) for name, v in check_filters(filters).items() if v is not None}


def build_dashboard(
    ledger: Ledger | str | None,
    *,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    budgets: Sequence[Budget] | None = None,
    tracker: Tracker | None = None,
    top_n: int = 20,
    max_groups: int = 20,
    max_models: int = 10,
    max_burns: int = 6,
    now: datetime | None = None,
    **filters: str | Sequence[str] | None,
) -> Dashboard:
    """Compute the dashboard for the events selected by ``since`` / ``until`` and filters.

    ``since`` / ``until`` as in reports (``"7d"``, ``"this-month"``, ISO dates; a date
    given as text as ``until`` includes that day). ``budgets``: the budgets to show a
    burn-down for, read through ``tracker`` (its guard store; by default a fresh one on
    this ledger); ``tracker`` alone shows its own budgets. Without budgets the page shows
    this month's spend with a straight-line forecast to the month's end. Budgets are
    shown as they are configured: the view's filters and dates do not apply to them.
    ``ledger``: a ``Ledger``, or a database URL opened for this call (``None``: the
    default ledger).
    """
    from .._reports._common import open_ledger
    from .._tracker import check_tracker

    check_tracker("build_dashboard()", tracker)
    with open_ledger(ledger) as opened:
        return _build(
            opened,
            since=since,
            until=until,
            budgets=budgets,
            tracker=tracker,
            top_n=top_n,
            max_groups=max_groups,
            max_models=max_models,
            max_burns=max_burns,
            now=now,
            filters=filters,
        )


def _build(
    ledger: Ledger,
    *,
    since: str | datetime | date | None,
    until: str | datetime | date | None,
    budgets: Sequence[Budget] | None,
    tracker: Tracker | None,
    top_n: int,
    max_groups: int,
    max_models: int,
    max_burns: int,
    now: datetime | None,
    filters: Mapping[str, str | Sequence[str] | None],
) -> Dashboard:
    from .._reports import resolve_bounds, top

    for name, value in (
        ("top_n", top_n),
        ("max_groups", max_groups),
        ("max_models", max_models),
        ("max_burns", max_burns),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    moment = datetime.now(_UTC) if now is None else now
    if moment.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {moment!r}")
    moment = moment.astimezone(_UTC)
    checked = _check_filters(filters)
    lo, hi = resolve_bounds(since, until, now=moment)
    query: dict[str, Any] = {k: list(v) for k, v in checked.items()}

    def summary(*by: str) -> tuple[SummaryRow, ...]:
        return tuple(ledger.summary(by=list(by), since=lo, until=hi, **query))

    # One query by day and model answers three figures: every event has exactly one day
    # and one model, so the model rows and the totals are exact sums of its rows.
    by_day_model = summary("day", "model")
    by_user = summary("user")
    by_feature = summary("feature")
    into = _sole_amount_currency(by_day_model, by_user, by_feature)
    by_day_model = _joined(by_day_model, into, ("day", "model"))
    by_user = _joined(by_user, into, ("user",))
    by_feature = _joined(by_feature, into, ("feature",))
    by_model = _fold(by_day_model, ("model",))
    totals = _fold(by_day_model, ())
    currency = _primary_currency(totals)
    # top ranks each currency on its own (amounts in two currencies are never compared):
    # the table shows the charts' currency
    calls = [e for e in top(ledger, top_n, since=lo, until=hi, **query) if e.currency == currency]
    burns, statuses = _burns(ledger, budgets, tracker, moment, max_burns)
    if not burns and not statuses:
        burns = (_month_burn(ledger, moment, currency, query),)
    notes = []
    others = sorted(r.currency for r in totals if r.currency != currency)
    if others:
        notes.append(
            f"Charts and the most expensive calls show {isolated(currency)}; calls in "
            f"{', '.join(isolated(c) for c in others)} appear in the totals only."
        )
    return Dashboard(
        generated_at=moment,
        since=lo,
        until=hi,
        filters=checked,
        currency=currency,
        totals=totals,
        by_day_model=by_day_model,
        by_user=by_user,
        by_feature=by_feature,
        by_model=by_model,
        top_calls=tuple(calls),
        burns=burns,
        budgets=statuses,
        ledger=_ledger_text(ledger),
        max_groups=max_groups,
        max_models=max_models,
        notes=tuple(notes),
    )


def _ledger_text(ledger: Ledger) -> str:
    from .._ledger._engine import display_url

    return display_url(ledger.url)


def _burns(
    ledger: Ledger,
    budgets: Sequence[Budget] | None,
    tracker: Tracker | None,
    now: datetime,
    max_burns: int,
) -> tuple[tuple[Burn, ...], tuple[BudgetStatus, ...]]:
    from .._guards import Budget, budget_status

    if budgets is None and tracker is None:
        return (), ()
    if tracker is None:
        from .._tracker import Tracker

        tracker = Tracker(ledger=ledger, guards=budgets or ())
    chosen = [g for g in (tracker.guards if budgets is None else budgets) if isinstance(g, Budget)]
    if not chosen:
        return (), ()
    statuses = tuple(budget_status(tracker, guards=chosen, now=now.timestamp()))
    by_name = {b.name: b for b in chosen}
    # the closest to their limit first (copy_negate: unary minus rounds to 28 digits)
    ranked = sorted(statuses, key=lambda s: s.used.copy_negate())
    burns: list[Burn] = []
    for status in ranked:
        if len(burns) >= max_burns:
            break
        burn = _budget_burn(ledger, by_name[status.budget], status, now)
        if burn is not None:
            burns.append(burn)
    return tuple(burns), statuses
