"""Reading ``--since`` / ``--until``: ISO dates and times, durations and named periods, in UTC.

A named period (``today``, ``yesterday``, ``this-week``, ``last-week``, ``this-month``,
``last-month``, ``this-year``, ``last-year``) gives its start as a lower bound and its end
as an upper bound, so ``since=last-month, until=last-month`` is exactly last month. A
duration (``7d``, ``24h``, ``30m``, ``2w``) means that long before now. A date written as
text, as an upper bound, includes that whole day (``until="2025-01-31"`` ends at February
1st, 00:00), as a person reading ``--until 2025-01-31`` expects; an ISO date-time is the
exact instant (naive means UTC). Python ``date`` and ``datetime`` objects keep the
ledger's meaning: a date is its midnight, and ``until`` is exclusive.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Literal

__all__ = ["PERIODS", "Bound", "parse_when", "resolve_bounds"]

_UTC = timezone.utc
Bound = Literal["since", "until"]
PERIODS: tuple[str, ...] = (
    "today",
    "yesterday",
    "this-week",
    "last-week",
    "this-month",
    "last-month",
    "this-year",
    "last-year",
)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_HELP = (
    "use an ISO date or time (2025-01-31, 2025-01-31T12:00), a duration before now "
    f"(7d, 24h, 30m, 2w) or one of {', '.join(PERIODS)}"
)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=_UTC)


def _month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + (day.month - 1) - months_back
    return date(index // 12, index % 12 + 1, 1)


def _period(name: str, today: date) -> tuple[date, date]:
    if name == "today":
        return today, today + timedelta(days=1)
    if name == "yesterday":
        return today - timedelta(days=1), today
    if name in ("this-week", "last-week"):
        monday = today - timedelta(days=today.weekday())
        if name == "last-week":
            monday -= timedelta(days=7)
        return monday, monday + timedelta(days=7)
    if name == "this-month":
        return _month_start(today), _month_start(today, -1)
    if name == "last-month":
        return _month_start(today, 1), _month_start(today)
    if name == "this-year":
        return date(today.year, 1, 1), date(today.year + 1, 1, 1)
    # last-year
    return date(today.year - 1, 1, 1), date(today.year, 1, 1)


def parse_when(
    value: str | datetime | date,
    bound: Bound = "since",
    *,
    now: datetime | None = None,
    field: str | None = None,
) -> datetime:
    """``value`` as an aware UTC instant for a lower (``since``) or upper (``until``) bound.

    ``ValueError`` naming the field and the value when it cannot be read.
    """
    if bound not in ("since", "until"):
        raise ValueError(f"bound must be 'since' or 'until', got {bound!r}")
    label = field or bound
    if isinstance(value, datetime):
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    if isinstance(value, date):
        return _midnight(value)
    if not isinstance(value, str):
        raise ValueError(f"{label} must be a date, a datetime or a string, got {value!r}")
    text = value.strip()
    moment = now if now is not None else datetime.now(_UTC)
    if moment.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {moment!r}")
    moment = moment.astimezone(_UTC)
    name = text.lower().replace("_", "-")
    if name in PERIODS:
        start, end = _period(name, moment.date())
        return _midnight(start if bound == "since" else end)
    if name == "now":
        return moment
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        return moment - timedelta(seconds=seconds)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return _midnight(day + timedelta(days=1) if bound == "until" else day)
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"{label}: cannot read {value!r} as a time; {_HELP}") from None
    return parsed.replace(tzinfo=_UTC) if parsed.tzinfo is None else parsed.astimezone(_UTC)


def resolve_bounds(
    since: str | datetime | date | None,
    until: str | datetime | date | None,
    *,
    now: datetime | None = None,
) -> tuple[datetime | None, datetime | None]:
    """Both bounds read with ``parse_when``; ``ValueError`` unless ``since`` precedes ``until``."""
    lo = None if since is None else parse_when(since, "since", now=now)
    hi = None if until is None else parse_when(until, "until", now=now)
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(
            f"since ({lo.isoformat()}) must be before until ({hi.isoformat()}); "
            f"got since={since!r}, until={until!r}"
        )
    return lo, hi
