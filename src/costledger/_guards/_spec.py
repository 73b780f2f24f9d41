"""Parsing what a guard is told: limits ("100 USD", "2M tokens"), periods, ``per`` keys.

Counters in the guard stores hold whole numbers ("units"): tokens for token
budgets, and nano-units of the currency (1e-9) for money budgets. Whole numbers
because Redis scripts compute in Lua doubles, which are exact for integers
below 2**53 (9,007,199 currency units per counter at this scale) and inexact for
any fraction. The ledger keeps every amount exactly; the guards round each
reservation up and each settled amount to the nearest nano-unit, an error of at
most 5e-10 per call, far below any price.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from .._ledger._text import clean_text

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from .._tracker import Call

__all__ = [
    "MAX_UNITS",
    "MONEY_SCALE",
    "PER_KEYS",
    "Clock",
    "Limit",
    "Period",
    "call_keys",
    "check_clock",
    "check_commas",
    "from_units",
    "key_text",
    "parse_duration",
    "parse_limit",
    "parse_period",
    "plain",
    "to_units",
]

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time`` (injectable so tests can move time)."""

MONEY_SCALE = 10**9
_SCALE = Decimal(MONEY_SCALE)
_NANO = Decimal(1).scaleb(-9)
MAX_UNITS = 2**63 - 1
"""The most a counter holds: SQL stores keep units in 64-bit integers (BIGINT)."""
MAX_TOKENS = Decimal(MAX_UNITS)
MAX_MONEY = Decimal(MAX_UNITS).scaleb(-9)
"""9,223,372,036.854775807: the largest limit whose nano-units fit in ``MAX_UNITS``."""

PER_KEYS: tuple[str, ...] = ("user", "team", "project", "feature", "model", "provider", "tag")

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_TOKENS_RE = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([kmbg]?)\s*(?:tokens?|tok)\s*$", re.I)
_MONEY_RE = re.compile(
    r"^\s*(?:(\$)\s*)?([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([kmb]?)\s*([A-Za-z]{3})?\s*$", re.I
)


@dataclass(frozen=True, slots=True)
class Limit:
    """An allowance: ``amount`` of ``unit`` (a currency code such as ``"USD"``, or ``"tokens"``)."""

    amount: Decimal
    unit: str

    @property
    def is_tokens(self) -> bool:
        return self.unit == "tokens"

    def units(self) -> int:
        """The limit in counter units, rounded down: a limit is never loosened by rounding."""
        return to_units(self.amount, tokens=self.is_tokens, rounding=ROUND_FLOOR)

    def __str__(self) -> str:
        if self.is_tokens:
            return f"{self.amount:,} tokens"
        return f"{self.amount} {self.unit}"


def parse_limit(value: object, *, field: str = "limit") -> Limit:
    """Read ``Decimal("100")``, ``100``, ``"100 USD"``, ``"$100"`` or ``"2M tokens"``."""
    if isinstance(value, (bool, float)):
        raise ValueError(
            f"{field} must be a Decimal, an int or a string such as '100 USD' or '2M tokens'"
            f" (never a float, which cannot hold money exactly), got {value!r}"
        )
    if isinstance(value, Limit):
        return value
    if isinstance(value, (int, Decimal)):
        amount = Decimal(value)
        unit = "USD"
    elif isinstance(value, str):
        m = _TOKENS_RE.match(value)
        if m:
            amount = _number(m.group(1), field, value) * _SUFFIX[m.group(2).lower()]
            if amount != amount.to_integral_value():
                raise ValueError(f"{field} must be a whole number of tokens, got {value!r}")
            amount = amount.quantize(Decimal(1))
            unit = "tokens"
        else:
            m = _MONEY_RE.match(value)
            if not m or (m.group(1) and m.group(4) and m.group(4).upper() != "USD"):
                raise ValueError(
                    f"{field} must look like '100 USD', '$100', '2.50 EUR' or '2M tokens',"
                    f" got {value!r}"
                )
            if m.group(3) and not (m.group(1) or m.group(4)):
                raise ValueError(
                    f"{field} {value!r} is ambiguous: say '{value.strip()} tokens' or"
                    f" '{value.strip()} USD'"
                )
            amount = _number(m.group(2), field, value) * _SUFFIX[m.group(3).lower()]
            unit = (m.group(4) or "USD").upper()
    else:
        raise TypeError(
            f"{field} must be a Decimal, an int or a string such as '100 USD' or '2M tokens',"
            f" got {type(value).__name__} {value!r}"
        )
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{field} must be a finite amount >= 0, got {value!r}")
    if unit == "tokens" and amount > MAX_TOKENS:
        raise ValueError(
            f"{field} {value!r} is too large: a guard's counters hold at most"
            f" {MAX_TOKENS:,} tokens (2**63 - 1, the SQL stores' BIGINT)"
        )
    if unit != "tokens" and amount > MAX_MONEY:
        raise ValueError(
            f"{field} {value!r} is too large: a guard's counters hold at most"
            f" {MAX_MONEY:,} {unit} (2**63 - 1 nano-units, the SQL stores' BIGINT)"
        )
    return Limit(plain(amount), unit)


_THOUSANDS_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")


def check_commas(text: str, field: str, original: object) -> None:
    """A comma in a number only separates thousands (``1,000,000``, ``1,234.50``): a decimal
    comma (``1,50``) must not be read as ``150``, so it is refused, as is any other comma."""
    if "," in text and not _THOUSANDS_RE.fullmatch(text):
        raise ValueError(
            f"{field} {original!r}: a comma may only separate thousands, as in 1,000,000;"
            " a decimal needs a decimal point, as in '1.50'"
        )


def _number(text: str, field: str, original: str) -> Decimal:
    check_commas(text, field, original)
    try:
        return Decimal(text.replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{field}: cannot read a number in {original!r}") from None


def to_units(amount: Decimal | int, *, tokens: bool, rounding: str = ROUND_HALF_EVEN) -> int:
    """Counter units of an amount: tokens as they are, money in nano-units."""
    if tokens:
        if isinstance(amount, int):
            return amount
        return int(amount.to_integral_value(rounding))
    if isinstance(amount, int):
        return amount * MONEY_SCALE
    return int((amount * _SCALE).to_integral_value(rounding))


def reserve_units(amount: Decimal | int, *, tokens: bool) -> int:
    """Units to reserve: rounded up, so a reservation never under-covers its estimate."""
    return to_units(amount, tokens=tokens, rounding=ROUND_CEILING)


def from_units(units: int, *, tokens: bool) -> Decimal:
    if tokens:
        return Decimal(units)
    return plain((Decimal(units) * _NANO).normalize()) if units else Decimal(0)


def plain(value: Decimal) -> Decimal:
    """``value`` without an exponent, so it prints as ``100``, never ``1E+2`` (``normalize``
    turns whole amounts into exponent form). Same value; trailing zeros after the point
    are kept as given."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return Decimal(format(value, "f"))
    return value


# -- durations -------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|min|h|d|w)\s*$", re.I)
_DURATION_UNIT = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object, *, field: str) -> float:
    """Seconds from ``"24h"``, ``"30d"``, ``"90s"``, ``"15m"``, a ``timedelta`` or a number."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNIT[m.group(2).lower()]
    else:
        raise ValueError(
            f"{field} must be a duration such as '24h', '30d', '15m' or a number of seconds,"
            f" got {value!r}"
        )
    if not math.isfinite(seconds):
        raise ValueError(f"{field} must be a finite duration, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"{field} must be longer than zero, got {value!r}")
    return seconds


def check_clock(clock: object) -> Clock:
    """A guard's ``clock=``: ``None`` (``time.time``) or a callable returning seconds since
    the epoch, checked when the guard is made rather than failing on every call."""
    if clock is None:
        import time

        return time.time
    if not callable(clock):
        raise ValueError(
            f"clock must be a callable returning seconds since the epoch, got {clock!r}"
        )
    return clock


# -- periods ---------------------------------------------------------------------------------

CalendarUnit = Literal["hour", "day", "week", "month", "year"]
_CALENDAR: tuple[str, ...] = ("hour", "day", "week", "month", "year")
ROLLING_BUCKETS = 60
"""A rolling window is kept as this many buckets: spend leaves the window one
bucket at a time, up to 1/60 of the window late (never early). So a window counts
the current bucket and the ``ROLLING_BUCKETS`` before it: a bucket leaves only once
the whole window has passed since its *end*, the latest moment spend in it was made."""


@dataclass(frozen=True, slots=True)
class Window:
    """Where one instant falls: the counter's period label, the bucket to add to,
    the oldest bucket still counted, and when the oldest spend stops counting.

    Times are integer milliseconds since the epoch.
    """

    label: str
    bucket: int
    floor: int
    start: int
    end: int | None  # None: never (lifetime); for rolling windows: when the bucket leaves


class Period:
    """A budget period: a calendar period in a time zone, a rolling window, or ``lifetime``."""

    __slots__ = ("_cache", "kind", "seconds", "text", "tz", "tz_name", "unit")

    def __init__(self, text: str, tz: str = "UTC") -> None:
        self.text = text
        self.tz_name = tz
        self.tz: ZoneInfo | timezone = _zone(tz)
        self.unit: str | None = None
        self.seconds: float | None = None
        self._cache: tuple[int, int, Window] | None = None
        low = text.strip().lower()
        if low in _CALENDAR:
            self.kind: Literal["calendar", "rolling", "lifetime"] = "calendar"
            self.unit = low
        elif low in ("lifetime", "total", "forever"):
            self.kind = "lifetime"
        else:
            self.kind = "rolling"
            self.seconds = parse_duration(text, field="period")

    def __repr__(self) -> str:
        if self.kind == "calendar" and self.tz_name != "UTC":
            return f"{self.text} ({self.tz_name})"
        return self.text

    @property
    def bucket_ms(self) -> int:
        assert self.seconds is not None
        return max(1, -(-int(self.seconds * 1000) // ROLLING_BUCKETS))

    @property
    def span_ms(self) -> int:
        """How long a counter must be kept after its last write: the window, plus the
        bucket by which spend leaves it late."""
        if self.kind == "rolling":
            return self.bucket_ms * (ROLLING_BUCKETS + 1)
        return 0

    def window(self, now: float) -> Window:
        """The window ``now`` (epoch seconds) falls in."""
        ms = int(now * 1000)
        cached = self._cache
        if cached is not None and cached[0] <= ms < cached[1]:
            return cached[2]
        if self.kind == "lifetime":
            win = Window("all", 0, 0, 0, None)
            self._cache = (-(2**62), 2**62, win)
        elif self.kind == "rolling":
            width = self.bucket_ms
            bucket = ms - ms % width
            # Spend made at the very end of the oldest bucket must still count a whole
            # window later: late by up to one bucket, never early.
            floor = bucket - width * ROLLING_BUCKETS
            win = Window("rolling", bucket, floor, floor, bucket + width)
            self._cache = (bucket, bucket + width, win)
        else:
            start, end, label = self._calendar(now)
            win = Window(label, start, start, start, end)
            self._cache = (start, end, win)
        return win

    def _calendar(self, now: float) -> tuple[int, int, str]:
        local = datetime.fromtimestamp(now, self.tz)
        unit = self.unit
        if unit == "hour":
            start = local.replace(minute=0, second=0, microsecond=0)
            start_ms = int(start.timestamp() * 1000)
            # The hour ends when the local clock next reads a whole hour: the same hour
            # again when the clocks went back over it (fold 1: a repeated hour is two
            # windows), else the next hour (when the clocks skip it: the moment they jump).
            # Not start + 1 hour: a 30-minute change (Australia/Lord_Howe) makes an hour
            # last 90 or 30 minutes.
            naive = start.replace(tzinfo=None)
            ends = [
                int(naive.replace(tzinfo=self.tz, fold=1).timestamp() * 1000),
                int((naive + timedelta(hours=1)).replace(tzinfo=self.tz).timestamp() * 1000),
            ]
            now_ms = int(now * 1000)
            end_ms = min((ms for ms in ends if ms > now_ms), default=start_ms + 3_600_000)
            return start_ms, end_ms, start.strftime("%Y-%m-%dT%H%z")
        elif unit == "day":
            start = _local(datetime(local.year, local.month, local.day), self.tz)
            label = start.strftime("%Y-%m-%d")
            end = _local(datetime(local.year, local.month, local.day) + timedelta(days=1), self.tz)
        elif unit == "week":
            monday = datetime(local.year, local.month, local.day) - timedelta(days=local.weekday())
            start = _local(monday, self.tz)
            iso = monday.isocalendar()
            label = f"{iso[0]}-W{iso[1]:02d}"
            end = _local(monday + timedelta(days=7), self.tz)
        elif unit == "month":
            start = _local(datetime(local.year, local.month, 1), self.tz)
            label = start.strftime("%Y-%m")
            nxt = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
            end = _local(datetime(nxt[0], nxt[1], 1), self.tz)
        else:
            start = _local(datetime(local.year, 1, 1), self.tz)
            label = f"{local.year}"
            end = _local(datetime(local.year + 1, 1, 1), self.tz)
        return int(start.timestamp() * 1000), int(end.timestamp() * 1000), label


def _local(naive: datetime, tz: ZoneInfo | timezone) -> datetime:
    return naive.replace(tzinfo=tz)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo | timezone:
    if name.upper() == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"tz must be an IANA time zone such as 'Europe/Paris', got {name!r}"
        ) from None


def parse_period(value: object, tz: str) -> Period:
    if isinstance(value, Period):
        return value
    if isinstance(value, timedelta):
        value = f"{value.total_seconds()}s"
    if not isinstance(value, str):
        raise ValueError(
            "period must be 'hour', 'day', 'week', 'month', 'year', 'lifetime' or a rolling"
            f" window such as '24h' or '30d', got {value!r}"
        )
    try:
        return Period(value, tz)
    except ValueError as exc:
        if "tz must" in str(exc):
            raise
        raise ValueError(
            "period must be 'hour', 'day', 'week', 'month', 'year', 'lifetime' or a rolling"
            f" window such as '24h' or '30d', got {value!r}"
        ) from None


def check_per(per: str | None) -> str | None:
    if per is None:
        return None
    if per not in PER_KEYS:
        raise ValueError(f"per must be None or one of {', '.join(PER_KEYS)}; got {per!r}")
    return per


def call_keys(call: Call, per: str | None) -> tuple[str | None, ...]:
    """The keys a call counts under: one per call, or one per tag (``None``: unattributed).

    The one place every guard and store gets a call's keys from: each is the text as the
    ledger stores it (see ``key_text``), so a counter's name can be written to any store
    and a budget's seed reads the ledger's spend under the same key."""
    if per is None:
        return (None,)
    if per == "tag":
        tags = call.attribution.tags
        if not tags:
            return (None,)
        # two tags the ledger stores as one (cleaned alike) count once, as duplicates do
        keys = tuple(dict.fromkeys(k for k in map(key_text, tags) if k is not None))
        return keys or (None,)
    if per == "model":
        return (key_text(call.model),)
    if per == "provider":
        return (key_text(call.provider),)
    return (key_text(getattr(call.attribution, per)),)


def key_text(value: str | None) -> str | None:
    """A key as the ledger stores its text (``clean_text``: NUL left out, a lone surrogate
    as U+FFFD): no store can take a lone surrogate (Redis and the SQL drivers encode
    UTF-8) nor PostgreSQL a NUL. An empty key, as given (``model=""``) or once cleaned,
    is no key, as a call without a user is under ``per="user"``."""
    if not value:
        return None
    return clean_text(value) or None


def matches(call: Call, where: Mapping[str, str] | None) -> bool:
    """Whether a call falls under a budget restricted with ``where={"team": "search"}``
    (``where`` values are cleaned as keys are, when the guard is made)."""
    if not where:
        return True
    for key, want in where.items():
        if key == "tag":
            if want not in call_keys(call, "tag"):
                return False
        elif call_keys(call, key)[0] != want:
            return False
    return True


def check_guard_name(name: str) -> str:
    """A guard's name as given: its counters are named after it on every store, where a
    NUL or a lone surrogate (half a UTF-16 pair) cannot be written (Redis and SQL refused
    every call's count). ``ValueError`` naming it."""
    if clean_text(name) != name:
        raise ValueError(
            f"name must be text without NUL characters or lone surrogates, got {name!r}"
        )
    return name
