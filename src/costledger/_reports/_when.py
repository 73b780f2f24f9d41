"""Reading ``--since`` / ``--until``: ISO dates and times, durations and named periods, in UTC.

A named period (``today``, ``yesterday``, ``this-week``, ``last-week``, ``this-month``,
``last-month``, ``this-year``, ``last-year``) gives its start as a lower bound and its end
as an upper bound, so ``since=last-month, until=last-month`` is exactly last month. A
duration (``7d``, ``24h``, ``30m``, ``2w``) means that long before now. A date written as
text, as an upper bound, includes that whole day (``until="2025-01-31"`` ends at February
1st, 00:00), as a person reading ``--until 2025-01-31`` expects, in every form
``date.fromisoformat`` reads (from Python 3.11 also ``20250131`` and ``2025-W05-5``); an ISO
date-time is the exact instant (naive means UTC). A time beyond the years 1 to 9999 is a
``ValueError`` (``WhenOutOfRange``) like any unreadable one. Python ``date`` and
``datetime`` objects keep the ledger's meaning: a date is its midnight, and ``until`` is
exclusive.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Literal

__all__ = ["PERIODS", "Bound", "EmptyRange", "WhenOutOfRange", "parse_when", "resolve_bounds"]

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


class WhenOutOfRange(ValueError):
    """A time that reads but falls outside ``datetime``'s years 1 to 9999 (``99999999999d``,
    ``until="9999-12-31"``, whose day ends in the year 10000)."""


class EmptyRange(ValueError):
    """``since`` is not before ``until``: the range holds no time, so no call (``lo`` and
    ``hi`` are the two bounds as read)."""

    def __init__(self, message: str, lo: datetime, hi: datetime) -> None:
        super().__init__(message)
        self.lo = lo
        self.hi = hi


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
    try:
        return _from_text(text, bound, moment)
    except OverflowError:
        hint = " (a date as an upper bound ends at the next midnight)" if bound == "until" else ""
        raise WhenOutOfRange(
            f"{label}: {value!r} is out of range; a time must fall within the years 1 to 9999 "
            f"UTC{hint}"
        ) from None
    except ValueError:
        raise ValueError(f"{label}: cannot read {value!r} as a time; {_HELP}") from None


def _from_text(text: str, bound: Bound, moment: datetime) -> datetime:
    """``parse_when`` of a duration or an ISO date or time; ``ValueError`` or
    ``OverflowError`` (beyond ``datetime``'s years 1 to 9999) when it cannot be."""
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        return moment - timedelta(seconds=seconds)
    try:
        # every form of a date alone (2025-01-31, and from Python 3.11 also 20250131 and
        # 2025-W05-5) is a whole day, never the midnight that starts it
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return _midnight(day + timedelta(days=1) if bound == "until" else day)
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return parsed.replace(tzinfo=_UTC) if parsed.tzinfo is None else parsed.astimezone(_UTC)


def resolve_bounds(
    since: str | datetime | date | None,
    until: str | datetime | date | None,
    *,
    now: datetime | None = None,
) -> tuple[datetime | None, datetime | None]:
    """Both bounds read with ``parse_when``; ``EmptyRange`` (a ``ValueError``) unless
    ``since`` precedes ``until``."""
    lo = None if since is None else parse_when(since, "since", now=now)
    hi = None if until is None else parse_when(until, "until", now=now)
    if lo is not None and hi is not None and lo >= hi:
        raise EmptyRange(
            f"since ({lo.isoformat()}) must be before until ({hi.isoformat()}); "
            f"got since={since!r}, until={until!r}",
            lo,
            hi,
        )
    return lo, hi
