"""Column types that keep money exact and time in UTC on every dialect.

SQLAlchemy's ``Numeric`` on SQLite goes through a float, so money is stored as
canonical decimal TEXT there, and as ``NUMERIC(38, 18)`` on PostgreSQL. Sums on
SQLite use the ``decimal_sum`` aggregate registered on every connection.
"""

from __future__ import annotations

import decimal
import json
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Dialect, String
from sqlalchemy.dialects.postgresql import JSONB, NUMERIC, TIMESTAMP
from sqlalchemy.types import TypeDecorator, TypeEngine

from .._cost import MONEY_PRECISION, MONEY_SCALE, money_text
from .._redact import redact, redact_text
from ._text import clean_text, encodes

__all__ = [
    "MONEY_PRECISION",
    "MONEY_SCALE",
    "JSONDocument",
    "Money",
    "UTCDateTime",
    "decimal_sum_aggregate",
    "json_default",
    "money_text",
    "money_value",
    "sqlite_timestamp",
    "utc_datetime",
]

_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
_MAX = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)
_UTC = timezone.utc
# Wide enough that adding two NUMERIC(38, 18) values never rounds.
_SUM_CONTEXT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_EVEN)


def money_value(field: str, value: Any) -> Decimal:
    """``value`` as storable money, or ``ValueError`` naming ``field`` and the value.

    More than 18 places are rounded half-even to 18, identically on both dialects, so
    SQLite and PostgreSQL store the same number. The default prices never yield them
    (their rates keep at most 12 places per million tokens, ``clean_rate``); a price book
    rate with more places, or a division such as a currency conversion, can.
    """
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise ValueError(
            f"money field {field!r} must be a Decimal, got {type(value).__name__} {value!r}"
        )
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"money field {field!r} is not a number: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"money field {field!r} must be finite, got {value!r}")
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_SCALE:
        # 38 digits and more: the default context's 28 would raise InvalidOperation
        d = d.quantize(_QUANTUM, rounding=decimal.ROUND_HALF_EVEN, context=_SUM_CONTEXT)
    if abs(d) >= _MAX:
        raise ValueError(
            f"money field {field!r} = {value!r} exceeds NUMERIC({MONEY_PRECISION}, {MONEY_SCALE})"
        )
    return d


def json_default(value: Any) -> Any:
    """Make metadata JSON-able: Decimal and datetime as text, sets as lists, bytes decoded,
    anything else as ``str()``; whatever could hold a secret is scrubbed on the way."""
    if isinstance(value, Decimal):
        return money_text(value) if value.is_finite() else str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return redact(sorted(value, key=repr))
    if isinstance(value, tuple):
        return redact(list(value))
    if isinstance(value, (bytes, bytearray)):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    return redact_text(str(value))


def dumps(value: Any) -> str:
    """The JSON text of a row's tags or metadata, the same for SQLite and PostgreSQL.

    JSON has no NaN or infinity, PostgreSQL's ``jsonb`` takes no NUL character and no
    driver encodes a lone surrogate (any of them would make the database refuse the whole
    event): a non-finite float is written as the string ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"``, and strings, keys included, are cleaned as ``clean_text`` does (NUL
    left out, a lone surrogate as U+FFFD).

    JSON keys are text: any other key (a ``UUID``, a date, a tuple) is written as its
    text (``str(key)``; numbers, ``True`` and ``None`` as JSON writes them). What cannot
    be written at all (a key or value whose ``str()`` raises, an integer too long for
    Python to write, a container holding itself) is left out, and a mapping at the top
    names it under ``DROPPED_NOTE``: a list of paths (``"scores.<Key>"``: the keys on
    the way, a list's index, a key without text as its type in angle brackets).
    """
    try:
        text = json.dumps(
            value, default=json_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except Exception:  # a NaN, a key JSON cannot hold, a str() that raised, a cycle
        return _dumps_clean(value)
    # a NUL is escaped (\\u0000: a string holding that escape's text looks the same), a
    # lone surrogate is there as itself
    if "\\u0000" in text or not (text.isascii() or encodes(text)):
        return _dumps_clean(value)
    return text


DROPPED_NOTE = "costledger.dropped"
"""The metadata entry naming what ``dumps`` could not write (see there)."""


def _dumps_clean(value: Any) -> str:
    dropped: list[str] = []
    clean = _clean(value, set(), dropped, ())
    if clean is _DROP:
        clean, dropped = None, []  # a top that cannot be written: no room for a note
    if dropped and isinstance(clean, dict):
        clean[DROPPED_NOTE] = dropped
    return json.dumps(clean, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_DROP = object()
"""What ``_clean`` returns for a value it cannot write (left out by its container)."""
_JSON_SCALARS = (bool, type(None))
_BIG_INT_BITS = 14_000  # under Python's 4,300 digits an int always has a text


def _clean(value: Any, active: set[int], dropped: list[str], path: tuple[str, ...]) -> Any:
    """``value`` as JSON values only: its non-finite floats as text, its strings cleaned
    (``clean_text``), its keys text, its other values as ``json_default`` writes them, and
    ``_DROP`` (its path appended to ``dropped``) for what cannot be written."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, int):
        return _int_value(value, dropped, path)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in active:  # a container holding itself: JSON cannot write that
            return _dropped(dropped, path)
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return _clean_dict(value, active, dropped, path)
            items = (_clean(v, active, dropped, (*path, str(i))) for i, v in enumerate(value))
            return [item for item in items if item is not _DROP]
        finally:
            active.discard(id(value))
    try:
        text = json_default(value)
    except Exception:  # a str() that raises: whatever it raises
        return _dropped(dropped, path)
    return _clean(text, active, dropped, path)


def _clean_dict(
    value: dict[Any, Any], active: set[int], dropped: list[str], path: tuple[str, ...]
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k, v in value.items():
        key = _clean_key(k)
        if key is _DROP:
            _dropped(dropped, (*path, f"<{type(k).__name__}>"))
            continue
        item = _clean(v, active, dropped, (*path, str(key)))
        if item is not _DROP:
            out[key] = item
    return out


def _float_text(value: float) -> Any:
    if value != value:
        return "NaN"
    if value in (_INF, -_INF):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _int_value(value: int, dropped: list[str], path: tuple[str, ...]) -> Any:
    if value.bit_length() > _BIG_INT_BITS:
        try:
            int.__repr__(value)
        except ValueError:  # past sys.get_int_max_str_digits(): Python will not write it
            return _dropped(dropped, path)
    return value


def _dropped(dropped: list[str], path: tuple[str, ...]) -> Any:
    dropped.append(".".join(path))
    return _DROP


def _clean_key(key: Any) -> Any:
    """A key as JSON holds it: text (cleaned), a number, ``True``/``False``/``None`` (JSON
    writes those as their text), any other key as its ``str()``; ``_DROP`` when that raises."""
    if isinstance(key, str):
        return clean_text(key)
    if isinstance(key, float):
        text = _float_text(key)
        return text if isinstance(text, str) else key
    if isinstance(key, _JSON_SCALARS):
        return key
    if isinstance(key, int):
        return key if _int_value(key, [], ()) is key else _DROP
    try:
        return clean_text(redact_text(str(key)))
    except Exception:  # a str() that raises: whatever it raises
        return _DROP


_INF = float("inf")


class Money(TypeDecorator[Decimal]):
    """Exact money: ``NUMERIC(38, 18)`` on PostgreSQL, canonical decimal TEXT elsewhere."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(NUMERIC(MONEY_PRECISION, MONEY_SCALE, asdecimal=True))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        d = money_value("money", value)
        if dialect.name == "postgresql":
            return d
        return money_text(d)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        if isinstance(value, (str, int)):
            return Decimal(value)
        raise TypeError(f"money column returned {type(value).__name__} {value!r}; expected text")

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime.

    PostgreSQL: ``timestamp with time zone``. SQLite: fixed-width ISO 8601 text in
    UTC, ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, which sorts and compares as time does
    and which SQLite's date functions read. Naive values are taken to be UTC.
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = utc_datetime(value)
        if dialect.name == "postgresql":
            return value
        return sqlite_timestamp(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise TypeError(f"timestamp column returned {type(value).__name__} {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)

    @property
    def python_type(self) -> type[datetime]:
        return datetime


def utc_datetime(value: Any) -> datetime:
    """A datetime, date or ISO string as an aware UTC datetime (naive means UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        raise ValueError(f"expected a datetime or date, got {type(value).__name__} {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_UTC)
    if moment.utcoffset():
        return moment.astimezone(_UTC)
    return moment


def sqlite_timestamp(value: datetime) -> str:
    """The SQLite storage text of an aware UTC datetime (see ``UTCDateTime``)."""
    if value.tzinfo is not _UTC:
        value = value.replace(tzinfo=_UTC)
    return value.isoformat(timespec="microseconds")


JSONDocument: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
"""JSON text on SQLite, JSONB on PostgreSQL (GIN-indexable ``@>`` for tag filters)."""


class decimal_sum_aggregate:  # named after the SQL function it implements
    """SQLite aggregate ``decimal_sum(text)``: the exact sum, as canonical decimal text.

    NULLs are skipped and an all-NULL group gives NULL, like SQL's ``SUM``.
    """

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: object) -> None:
        if value is None:
            return
        if isinstance(value, (str, int)):
            d = Decimal(value)
        elif isinstance(value, bytes):
            d = Decimal(value.decode())
        else:  # a REAL reached a money column: refuse rather than sum a float
            raise TypeError(f"decimal_sum() got {type(value).__name__} {value!r}")
        self.total = d if self.total is None else _SUM_CONTEXT.add(self.total, d)

    def finalize(self) -> str | None:
        return None if self.total is None else money_text(self.total)
