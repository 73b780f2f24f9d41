"""What every report shares: opening the ledger, reading filters, exact money arithmetic."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import TYPE_CHECKING, Any

from .._cost import money_text as _money_text
from .._errors import short_repr
from .._events import EVENT_SOURCES
from .._ledger._rows import FILTERS
from .._ledger._text import key_text

if TYPE_CHECKING:
    from pathlib import Path

    from .._ledger import Ledger
    from .._tracker import LedgerLike

__all__ = [
    "EXACT",
    "FILTER_NAMES",
    "Filters",
    "canonical",
    "check_filters",
    "group_value",
    "money_text",
    "open_ledger",
    "share_of",
]

EXACT = Context(prec=120, rounding=ROUND_HALF_EVEN)
"""Sums and differences of ledger money never round in this context (38 digits at most each)."""

FILTER_NAMES: tuple[str, ...] = FILTERS
Filters = Mapping[str, str | Sequence[str] | None]
_SHARE = Decimal("0.000001")


@contextlib.contextmanager
def open_ledger(
    ledger: Ledger | LedgerLike | str | None, *, must_exist: bool = True
) -> Iterator[Ledger]:
    """The ledger given, or one opened (and closed afterwards) on a URL (``None``: the default).

    ``ledger`` is typed as a ``Tracker.ledger`` is (``LedgerLike``, what a tracker needs:
    ``record``), so that ``report(tracker.ledger)`` type-checks; anything but a ``Ledger``
    or a URL is a ``TypeError`` naming its type. A SQLite file that does not exist raises
    ``FileNotFoundError`` (``must_exist``): a read would otherwise create it empty, and a
    mistyped path would answer "nothing"."""
    from .._ledger import Ledger
    from .._ledger._engine import display_url, resolve_url, sqlite_path

    if isinstance(ledger, Ledger):
        ledger._fresh()  # reads see what this ledger recorded
        yield ledger
        return
    if ledger is not None and not isinstance(ledger, str):
        kind = type(ledger)
        hint = (
            " (an object that only records calls cannot be read back)"
            if callable(getattr(ledger, "record", None))
            else ""
        )
        raise TypeError(
            f"ledger must be a costledger Ledger or a database URL, got "
            f"{kind.__module__}.{kind.__qualname__} {short_repr(ledger, 60)}{hint}"
        )
    url = resolve_url(ledger)
    path = sqlite_path(url)
    if must_exist and path is not None:
        if not path.exists():
            raise FileNotFoundError(f"no ledger at {display_url(url)} (file {path} does not exist)")
        if not _holds_a_ledger(path):
            # Opening it would write the ledger's tables into another application's
            # database (or an empty file) from a command that only reads, then answer
            # "nothing", as a mistyped path would.
            raise FileNotFoundError(
                f"no ledger at {display_url(url)} (file {path} has no costledger tables; "
                "'costledger db upgrade' creates them)"
            )
    opened = Ledger(url, sync=True)
    try:
        yield opened
    finally:
        opened.close()


def _holds_a_ledger(path: Path) -> bool:
    """Whether the SQLite file at ``path`` has the ledger's events table (a file that is not
    a database at all: left for the ledger to say so). Only read; not ``mode=ro``, which
    would leave a WAL database's ``-wal`` and ``-shm`` files behind (a read-only last
    connection cannot remove them), and not ``immutable``, which misses a schema still in
    the WAL file."""
    import sqlite3

    from .._ledger._tables import EVENTS_TABLE

    try:
        connection = sqlite3.connect(path)
    except sqlite3.Error:
        return True
    try:
        found = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (EVENTS_TABLE,)
        ).fetchone()
    except sqlite3.Error:
        return True
    finally:
        connection.close()
    return found is not None


def check_filters(filters: Filters) -> dict[str, list[str] | None]:
    """Filters as lists of strings; ``ValueError`` naming an unknown filter or a bad value."""
    out: dict[str, list[str] | None] = {}
    for name, value in filters.items():
        if name not in FILTER_NAMES:
            raise ValueError(f"unknown filter {name!r}; use any of {', '.join(FILTER_NAMES)}")
        if value is None:
            out[name] = None
            continue
        if isinstance(value, str):
            values = [value]
        elif isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
            # not a list of names: ``list()`` would fail anonymously or take a dict's keys
            raise ValueError(
                f"filter {name!r} must be a non-empty string or list of them, got {value!r}"
            )
        else:
            values = list(value)
        if not values or not all(isinstance(v, str) and v for v in values):
            raise ValueError(
                f"filter {name!r} must be a non-empty string or list of them, got {value!r}"
            )
        allowed = _CLOSED_FILTERS.get(name)
        if allowed is not None:
            # a closed set: a misspelt value ("eror") is a mistake, not "no calls match"
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise ValueError(
                    f"filter {name!r} must be one of {', '.join(allowed)}, got "
                    f"{short_repr(unknown[0], 60)}"
                )
        # as the ledger stored them: without NUL, a lone surrogate as U+FFFD, a text
        # past KEY_TEXT_LIMIT as its cut
        out[name] = [key_text(v) for v in values]
    return out


_CLOSED_FILTERS: dict[str, tuple[str, ...]] = {
    "status": ("ok", "error", "cancelled"),
    "source": EVENT_SOURCES,
}


def canonical(value: Decimal) -> Decimal:
    """The exact amount without trailing zeros, never in exponent form (``1.50`` -> ``1.5``)."""
    if value.is_zero():
        return Decimal(0)
    normal = value.normalize(EXACT)
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return normal.quantize(Decimal(1), context=EXACT)
    return normal


def share_of(part: Decimal, whole: Decimal) -> Decimal | None:
    """``part / whole`` rounded half-even to six places (the only rounded figure of a report)."""
    if whole.is_zero():
        return None
    return EXACT.divide(part, whole).quantize(_SHARE, context=EXACT)


def money_text(value: Decimal | None) -> str | None:
    """``costledger._cost.money_text`` of an amount (plain notation, exact), ``None`` kept."""
    return None if value is None else _money_text(value)


def exact_text(value: Decimal) -> str:
    """The shortest exact plain text of an amount (``1.50`` -> ``"1.5"``, ``1E+2`` -> ``"100"``):
    how reports, the dashboard and ``demo`` show money."""
    return _money_text(canonical(value))


def group_value(value: Any) -> Any:
    """A group key as JSON wants it: dates in ISO form."""
    iso = getattr(value, "isoformat", None)
    return iso() if iso is not None else value
