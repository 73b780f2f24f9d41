"""Spend already in the ledger, so a budget counts it from the first call after a start.

A counter that a store does not have yet (a fresh process on ``memory://``, a new
period, a Redis that lost its data) is seeded once from the ledger: the money or tokens
recorded in the counter's window for its key. Seeding happens before any settle can
reach the counter, so nothing is counted twice; the ledger's reads flush what it has
buffered first, so the seed includes every event recorded so far.

Models: a budget counts a call under the model it asked for (``per="model"``,
``where={"model": ...}``), while the ledger's summaries group by the model that answered
(a dated name such as ``gpt-4o-2024-08-06``) and its ``model`` filter matches either.
So the keys of a ``per="model"`` budget are read from the events' requested ``model``,
and rolling windows (read from the events anyway) count only the events whose requested
model is the key. A calendar seed keeps the ledger's summary (its rollups answer in
milliseconds, where reading the events would hold up the first call of a period): a key
that is also another requested model's answer counts that spend too, which can only
refuse early, never let a hard budget overspend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._spec import Window, to_units
from ._store import StoreUnavailable

if TYPE_CHECKING:
    from .._tracker import Tracker
    from ._budget import Budget

__all__ = ["ledger_buckets", "ledger_keys"]


def _ledger(tracker: Tracker) -> Any:
    return tracker.ledger


def _name(ledger: Any) -> str:
    url = getattr(ledger, "url", None)
    return f"ledger {url}" if url else f"ledger {type(ledger).__name__}"


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _filters(budget: Budget, key: str | None, use_key: bool) -> dict[str, Any]:
    filters: dict[str, Any] = dict(budget.where or {})
    if use_key and budget.per is not None:
        filters[budget.per] = key
    return filters


def _get(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        return row.get(name)
    return getattr(row, name, None)


def _row_units(row: Any, budget: Budget) -> int:
    """Units of a summary row or a stored event. Unpriced events add nothing (the ledger
    has no amount for them); money in another currency than the budget's cannot be
    counted: it adds nothing, and the log says so."""
    if budget.tokens:
        return int(_get(row, "input_tokens") or 0) + int(_get(row, "output_tokens") or 0)
    cost = _get(row, "cost")
    if cost is None:
        cost = _get(row, "total_cost")
    if cost is None:
        return 0
    currency = _get(row, "currency") or "USD"
    if currency != budget.limit.unit:
        if cost:
            from ._budget import CurrencyMismatch, _report

            what = f"spend of {cost} in the ledger is in"
            _report("budget.seed_currency", CurrencyMismatch(budget, currency, what))
        return 0
    return to_units(Decimal(cost), tokens=False)


def _has_key(row: Any, per: str) -> bool:
    """Whether an event counts under a key: an empty one (a provider given as ``""``, a
    name of nothing but NUL, stored as ``""``) is no key, as in ``call_keys``."""
    if per == "tag":
        return any(_get(row, "tags") or ())
    return bool(_get(row, per))


def _models_match(row: Any, budget: Budget, key: str | None, use_key: bool) -> bool:
    """Whether an event's requested model is the one the budget counts it under (the
    ledger's ``model`` filter also matches the response model)."""
    want = (budget.where or {}).get("model")
    if want is not None and _get(row, "model") != want:
        return False
    return not (use_key and budget.per == "model" and _get(row, "model") != key)


def _window_bounds(budget: Budget, win: Window, now: float) -> tuple[datetime | None, datetime]:
    if win.end is None or budget.period.kind == "rolling":
        until = _when(int(now * 1000) + 1)
    else:
        until = _when(win.end)
    if budget.period.kind == "lifetime":
        return None, until
    return _when(win.start), until


def ledger_buckets(
    tracker: Tracker, budget: Budget, key: str | None, win: Window, now: float
) -> dict[int, int]:
    """The ledger's spend for ``key`` in the window, as counter buckets."""
    ledger = _ledger(tracker)
    try:
        since, until = _window_bounds(budget, win, now)
        if budget.period.kind == "rolling":
            return _rolling(ledger, budget, key, win, since, until)
        summary = getattr(ledger, "summary", None)
        if summary is None:
            return {}
        total = 0
        if key is None and budget.per is not None:
            # "no key" cannot be a filter value: group by the key and take the groups of
            # no key, None and "" (an empty key counts as none, as in ``call_keys``).
            rows = summary(
                by=[budget.per], since=since, until=until, **_filters(budget, None, False)
            )
            for row in rows:
                if not _get(row, budget.per):
                    total += _row_units(row, budget)
        else:
            for row in summary(by=[], since=since, until=until, **_filters(budget, key, True)):
                total += _row_units(row, budget)
        return {win.bucket: total} if total else {}
    except StoreUnavailable:
        raise
    except Exception as exc:
        raise StoreUnavailable(_name(ledger), exc) from exc


def _rolling(
    ledger: Any,
    budget: Budget,
    key: str | None,
    win: Window,
    since: datetime | None,
    until: datetime,
) -> dict[int, int]:
    events = getattr(ledger, "events", None)
    if events is None:
        return {}
    width = budget.period.bucket_ms
    buckets: dict[int, int] = {}
    use_key = not (key is None and budget.per is not None)
    rows: Iterable[Any] = events(since=since, until=until, **_filters(budget, key, use_key))
    for row in rows:
        if not use_key and _has_key(row, budget.per or ""):
            continue
        if not _models_match(row, budget, key, use_key):
            continue
        ts = _get(row, "timestamp")
        if ts is None:
            continue
        ms = int(ts.timestamp() * 1000)
        bucket = ms - ms % width
        if bucket < win.floor:
            continue
        units = _row_units(row, budget)
        if units:
            buckets[bucket] = buckets.get(bucket, 0) + units
    return buckets


def ledger_keys(tracker: Tracker, budget: Budget, win: Window, now: float) -> list[str | None]:
    """Keys with spend in the ledger for the window (for ``budget_status`` after a restart)."""
    ledger = _ledger(tracker)
    summary = getattr(ledger, "summary", None)
    if summary is None or budget.per is None:
        return []
    since, until = _window_bounds(budget, win, now)
    try:
        filters = _filters(budget, None, False)
        if budget.per == "model":
            # The budget's keys are the requested models; summaries group by the answering
            # one (a dated name): read the keys from the events.
            events = getattr(ledger, "events", None)
            if events is None:
                return []
            found: dict[str | None, None] = {}
            for event in events(since=since, until=until, **filters):
                if _models_match(event, budget, None, False):
                    found.setdefault(_get(event, "model") or None, None)
            return list(found)
        rows = summary(by=[budget.per], since=since, until=until, **filters)
        # "" is no key, as in ``call_keys``: its spend is shown with the None key's
        return list(dict.fromkeys(_get(row, budget.per) or None for row in rows))
    except Exception as exc:
        raise StoreUnavailable(_name(ledger), exc) from exc
