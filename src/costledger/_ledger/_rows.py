"""A ``UsageEvent`` as a flat row (the table's columns) and back, exactly.

The same row, JSON-encoded (Decimal as text, datetimes ISO 8601 with offset), is a
spool line. This module imports no SQLAlchemy: the durable path of ``record`` uses
it in the caller's thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from .._cost import Cost, money_text
from .._events import UsageEvent, text_pairs
from .._usage import TOKEN_FIELDS, Usage

__all__ = [
    "COLUMNS",
    "FILTERS",
    "FLAG_COLUMNS",
    "MONEY_COLUMNS",
    "SPOOL_FORMAT",
    "SUMMARY_KEYS",
    "TOKEN_COLUMNS",
    "Row",
    "StoredEvent",
    "decode_spool_line",
    "encode_spool_line",
    "event_to_row",
    "postgresql_row",
    "row_fields",
    "row_to_event",
    "spool_line",
]

Row = tuple[Any, ...]
"""One event in the ledger's SQLite form (``sqlite_params``, ``COLUMNS`` order): what a
ledger buffers and spools, what ingest builds, and what the rollups are fed from, on
either database."""
SPOOL_FORMAT = 1
"""Version stamped on every spool line (key ``"v"``) so a later format can still read old spools."""

_UTC = timezone.utc

COLUMNS: tuple[str, ...] = (
    "id",
    "timestamp",
    "source",
    "provider",
    "model",
    "response_model",
    "status",
    "error_type",
    "latency_ms",
    "request_id",
    "trace_id",
    "run_id",
    "parent_run_id",
    "user",
    "team",
    "project",
    "feature",
    "tags",
    "metadata",
    "streamed",
    "cache_hit",
    *TOKEN_FIELDS,
    "pricing_status",
    "currency",
    "total_cost",
    "input_cost",
    "cache_read_cost",
    "cache_write_cost",
    "output_cost",
    "audio_cost",
    "pricing_source",
    "priced_model",
    "priced_provider",
    "reported_cost",
    "price_context",
)
"""Every column of ``costledger_events``, in table order; also the keys of a row dict."""

TOKEN_COLUMNS: tuple[str, ...] = TOKEN_FIELDS
"""The token counts (integers, 0 by default)."""
MONEY_COLUMNS: tuple[str, ...] = (
    "total_cost",
    "input_cost",
    "cache_read_cost",
    "cache_write_cost",
    "output_cost",
    "audio_cost",
    "reported_cost",
)
"""The amounts (exact decimals, NULL when unknown)."""
FLAG_COLUMNS: tuple[str, ...] = ("streamed", "cache_hit")
"""The booleans (false by default)."""

_MONEY = frozenset(MONEY_COLUMNS)

SUMMARY_KEYS: tuple[str, ...] = (
    "day",
    "week",
    "month",
    "model",
    "provider",
    "user",
    "team",
    "project",
    "feature",
    "tag",
    "source",
    "status",
)
"""What ``Ledger.summary`` (and ``report``) can group by."""
FILTERS: tuple[str, ...] = (
    "model",
    "provider",
    "user",
    "team",
    "project",
    "feature",
    "tag",
    "status",
    "source",
)
"""What the ledger's queries (and every report) can filter on."""


def _check_money(name: str, value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"UsageEvent {name} must be a finite Decimal or None, got {value!r}")
    return value


def _unchecked(name: str, value: Decimal | None) -> Decimal | None:
    return value


def event_to_row(event: UsageEvent, *, check: bool = True) -> dict[str, Any]:
    """The event as a dict keyed by column name; values keep their Python types
    (``Decimal``, aware ``datetime``, ``list`` tags, ``dict`` metadata).

    ``ValueError`` for money that is not a finite Decimal, unless ``check=False``
    (used to keep a rejected event for inspection as it was)."""
    if not isinstance(event, UsageEvent):
        raise TypeError(f"expected a UsageEvent, got {type(event).__name__} {event!r}")
    if not isinstance(event.id, str) or not event.id:
        raise ValueError(f"UsageEvent id must be a non-empty string, got {event.id!r}")
    money = _check_money if check else _unchecked
    u = event.usage
    c = event.cost
    return {
        "id": event.id,
        "timestamp": event.timestamp,
        "source": event.source,
        "provider": event.provider,
        "model": event.model,
        "response_model": event.response_model,
        "status": event.status,
        "error_type": event.error_type,
        "latency_ms": event.latency_ms,
        "request_id": event.request_id,
        "trace_id": event.trace_id,
        "run_id": event.run_id,
        "parent_run_id": event.parent_run_id,
        "user": event.user,
        "team": event.team,
        "project": event.project,
        "feature": event.feature,
        "tags": list(event.tags),
        "metadata": dict(event.metadata),
        "streamed": bool(event.streamed),
        "cache_hit": bool(event.cache_hit),
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "input_audio_tokens": u.input_audio_tokens,
        "output_audio_tokens": u.output_audio_tokens,
        "pricing_status": c.status,
        "currency": c.currency,
        "total_cost": money("cost.total", c.total),
        "input_cost": money("cost.input", c.input),
        "cache_read_cost": money("cost.cache_read", c.cache_read),
        "cache_write_cost": money("cost.cache_write", c.cache_write),
        "output_cost": money("cost.output", c.output),
        "audio_cost": money("cost.audio", c.audio),
        "pricing_source": c.source,
        "priced_model": c.model,
        "priced_provider": c.provider,
        "reported_cost": money("reported_cost", event.reported_cost),
        "price_context": dict(event.price_context),
    }


def _money(row: Mapping[str, Any], key: str) -> Decimal | None:
    value = row.get(key)
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, (str, int)):
        return Decimal(value)
    raise ValueError(
        f"row field {key!r} must be decimal text, got {type(value).__name__} {value!r}"
    )


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"row field 'timestamp' must be a datetime, got {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)


def _json(value: Any, empty: Any) -> Any:
    if value is None:
        return empty
    if isinstance(value, str):  # a raw JSON column read without the type's processor
        return json.loads(value)
    return value


def row_to_event(row: Mapping[str, Any]) -> UsageEvent:
    """The inverse of ``event_to_row``; also reads a decoded spool line or a database row."""
    usage = Usage(
        input_tokens=row.get("input_tokens") or 0,
        output_tokens=row.get("output_tokens") or 0,
        cache_read_tokens=row.get("cache_read_tokens") or 0,
        cache_write_tokens=row.get("cache_write_tokens") or 0,
        cache_write_1h_tokens=row.get("cache_write_1h_tokens") or 0,
        reasoning_tokens=row.get("reasoning_tokens") or 0,
        input_audio_tokens=row.get("input_audio_tokens") or 0,
        output_audio_tokens=row.get("output_audio_tokens") or 0,
    )
    cost = Cost(
        status=row.get("pricing_status") or "priced",
        total=_money(row, "total_cost"),
        input=_money(row, "input_cost"),
        cache_read=_money(row, "cache_read_cost"),
        cache_write=_money(row, "cache_write_cost"),
        output=_money(row, "output_cost"),
        audio=_money(row, "audio_cost"),
        currency=row.get("currency") or "USD",
        provider=row.get("priced_provider"),
        model=row.get("priced_model"),
        source=row.get("pricing_source"),
    )
    latency = row.get("latency_ms")
    return UsageEvent(
        id=row["id"],
        timestamp=_timestamp(row["timestamp"]),
        source=row.get("source") or "api",
        provider=row.get("provider"),
        model=row.get("model"),
        response_model=row.get("response_model"),
        status=row.get("status") or "ok",
        error_type=row.get("error_type"),
        latency_ms=None if latency is None else float(latency),
        request_id=row.get("request_id"),
        trace_id=row.get("trace_id"),
        run_id=row.get("run_id"),
        parent_run_id=row.get("parent_run_id"),
        user=row.get("user"),
        team=row.get("team"),
        project=row.get("project"),
        feature=row.get("feature"),
        tags=tuple(_json(row.get("tags"), [])),
        metadata=_json(row.get("metadata"), {}),
        streamed=bool(row.get("streamed")),
        cache_hit=bool(row.get("cache_hit")),
        usage=usage,
        cost=cost,
        reported_cost=_money(row, "reported_cost"),
        # a row written by hand with something else there still reads (re-priced at the
        # standard price)
        price_context=text_pairs(_json(row.get("price_context"), {})),
    )


_I_TIMESTAMP, _I_TAGS, _I_METADATA, _I_STREAMED, _I_CACHE_HIT, _I_PRICE_CONTEXT = (
    COLUMNS.index(name)
    for name in ("timestamp", "tags", "metadata", "streamed", "cache_hit", "price_context")
)


def postgresql_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """The PostgreSQL form of a SQLite-form row (``sqlite_params``): JSON-ready values, as a
    batch goes to the server as one JSON document (tags and metadata as JSON values,
    flags as booleans, money as exact decimal text)."""
    values = list(row)
    ts: str = values[_I_TIMESTAMP]
    if ts[20:26] == "000000":  # as datetime.isoformat() writes it: no zero microseconds
        values[_I_TIMESTAMP] = ts[:19] + ts[26:]
    tags, metadata = values[_I_TAGS], values[_I_METADATA]
    values[_I_TAGS] = [] if tags == "[]" else json.loads(tags)
    values[_I_METADATA] = {} if metadata == "{}" else json.loads(metadata)
    context = values[_I_PRICE_CONTEXT]
    values[_I_PRICE_CONTEXT] = {} if context == "{}" else json.loads(context)
    values[_I_STREAMED] = bool(values[_I_STREAMED])
    values[_I_CACHE_HIT] = bool(values[_I_CACHE_HIT])
    return tuple(values)


def row_fields(row: Sequence[Any]) -> dict[str, Any]:
    """A SQLite-form row as a dict keyed by column, JSON-ready (tags and metadata as JSON
    values, flags as booleans, money as text): a spool line, a rejected row."""
    return dict(zip(COLUMNS, postgresql_row(row), strict=True))


def spool_line(row: Sequence[Any]) -> bytes:
    """The spool line of a SQLite-form row (``row_to_event`` reads it back)."""
    return encode_spool_line(row_fields(row))


def _spool_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money_text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    from ._money import json_default  # metadata oddities; lazy: _money imports SQLAlchemy

    return json_default(value)


def encode_spool_line(row: Mapping[str, Any]) -> bytes:
    """One spool line (with its newline): the row as JSON, money as exact decimal text.

    A row's texts are clean (``_text.clean_row``), but a rejected event is kept as it
    was: a lone surrogate in it is written as its JSON escape (the line stays UTF-8), and
    what JSON cannot hold (a ``UUID`` key, a value whose ``str()`` raises, a cycle) as its
    ``repr`` (``_plain``): the line is always written."""
    doc = {"v": SPOOL_FORMAT, **row}
    try:
        text = json.dumps(doc, default=_spool_default, separators=(",", ":"), ensure_ascii=False)
    except Exception:  # a key JSON cannot hold, a str() that raised, a cycle...
        text = json.dumps(_plain(doc, 0), separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        text = json.dumps(json.loads(text), separators=(",", ":"))  # the escapes: ASCII
        return text.encode() + b"\n"


_PLAIN_DEPTH = 64  # deeper: a placeholder (a cycle, or what ``repr`` cannot recurse into)


def _plain(value: Any, depth: int) -> Any:
    """``value`` as JSON values only, whatever it holds: text keys, and each value the
    spool writes as it does (``_spool_default``), else its ``repr``, else its type."""
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if value.bit_length() < _PLAIN_INT_BITS else _plain_text(value)
    if depth >= _PLAIN_DEPTH:
        return f"<{type(value).__name__} nested too deeply>"
    try:
        if isinstance(value, Mapping):
            return {_plain_key(k): _plain(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_plain(v, depth + 1) for v in value]
        return _plain(_spool_default(value), depth + 1)
    except Exception:  # a str() or an items() that raised: its repr
        return _plain_text(value)


_PLAIN_INT_BITS = 14_000  # under Python's 4,300 digits an int always has a text


def _plain_key(key: Any) -> str | int | float | bool | None:
    if key is None or isinstance(key, (str, float)):
        return key
    if isinstance(key, int) and key.bit_length() < _PLAIN_INT_BITS:
        return key
    return _plain_text(key)


def _plain_text(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a repr that raises too (an int past 4,300 digits): its type
        return f"<{type(value).__name__}>"


def decode_spool_line(line: bytes | str) -> dict[str, Any]:
    """The row of one spool line; ``ValueError`` for a torn or foreign line."""
    doc = json.loads(line)
    if not isinstance(doc, dict) or "id" not in doc or "timestamp" not in doc:
        raise ValueError(f"not a costledger spool line: {line[:80]!r}")
    version = doc.pop("v", SPOOL_FORMAT)
    if version != SPOOL_FORMAT:
        raise ValueError(f"spool line format {version!r} is not {SPOOL_FORMAT}")
    doc["timestamp"] = _timestamp(doc["timestamp"])
    for key in _MONEY:
        value = doc.get(key)
        if value is not None:
            if not isinstance(value, str):  # a JSON number would have gone through float
                raise ValueError(f"spool field {key!r} must be decimal text, got {value!r}")
            doc[key] = Decimal(value)
    return doc


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored row of the ledger, read back: every column as an attribute.

    ``timestamp`` is timezone-aware UTC, money columns are ``Decimal`` (``None``
    when unpriced), ``tags`` a list, ``metadata`` and ``price_context`` read-only mappings.
    ``to_event()`` rebuilds the ``UsageEvent``.
    """

    id: str
    timestamp: datetime
    source: str
    provider: str | None
    model: str | None
    response_model: str | None
    status: str
    error_type: str | None
    latency_ms: float | None
    request_id: str | None
    trace_id: str | None
    run_id: str | None
    parent_run_id: str | None
    user: str | None
    team: str | None
    project: str | None
    feature: str | None
    tags: list[str]
    metadata: Mapping[str, Any]
    streamed: bool
    cache_hit: bool
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    input_audio_tokens: int
    output_audio_tokens: int
    pricing_status: str
    currency: str
    total_cost: Decimal | None
    input_cost: Decimal | None
    cache_read_cost: Decimal | None
    cache_write_cost: Decimal | None
    output_cost: Decimal | None
    audio_cost: Decimal | None
    pricing_source: str | None
    priced_model: str | None
    priced_provider: str | None
    reported_cost: Decimal | None
    price_context: Mapping[str, str]

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StoredEvent:
        values = [row[name] for name in COLUMNS]
        # tags / metadata: the JSON type gives list / dict; guard against NULL from old rows
        values[17] = list(values[17] or ())
        values[18] = MappingProxyType(dict(values[18] or {}))
        values[19] = bool(values[19])
        values[20] = bool(values[20])
        values[_I_PRICE_CONTEXT] = MappingProxyType(dict(values[_I_PRICE_CONTEXT] or {}))
        return cls(*values)

    @property
    def model_key(self) -> str | None:
        """The model a summary groups by: the response model if known, else the requested one."""
        return self.response_model or self.model

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS}

    def to_event(self) -> UsageEvent:
        return row_to_event(self.as_row())
