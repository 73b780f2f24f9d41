"""The usage log record: a ``UsageEvent`` as one flat JSON object, and back.

Field names follow the OpenTelemetry GenAI semantic conventions where one
exists (``gen_ai.*``, ``error.type``) and are namespaced ``costledger.*``
otherwise. Money is written as decimal STRINGS, never JSON numbers, so a line
carries the exact amount; the reader refuses a JSON number with a fraction for
money because it has already been through a binary float. docs/log-schema.md
has the full table and the versioning policy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

from ._cost import Cost, PricingStatus, money_in_range, money_text
from ._errors import UsageError
from ._events import CallStatus, UsageEvent
from ._redact import redact_text
from ._usage import Usage

__all__ = [
    "USAGE_EVENT_NAME",
    "USAGE_SCHEMA",
    "USAGE_SCHEMA_PREFIX",
    "event_from_line",
    "event_from_record",
    "event_to_record",
    "loads_line",
]

USAGE_EVENT_NAME = "llm.usage"
USAGE_SCHEMA_PREFIX = "costledger.usage/"
USAGE_SCHEMA = "costledger.usage/1"
# Every version this reader understands. A new version is added here, never replaces one.
_READABLE_SCHEMAS = frozenset({USAGE_SCHEMA})

# Record key -> Usage field.
_TOKEN_FIELDS: tuple[tuple[str, str], ...] = (
    ("gen_ai.usage.input_tokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"),
    ("gen_ai.usage.cache_read.input_tokens", "cache_read_tokens"),
    ("gen_ai.usage.cache_write.input_tokens", "cache_write_tokens"),
    ("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
    ("costledger.usage.cache_write_1h.input_tokens", "cache_write_1h_tokens"),
    ("costledger.usage.audio.input_tokens", "input_audio_tokens"),
    ("costledger.usage.audio.output_tokens", "output_audio_tokens"),
)

# Record key -> Cost money field.
_MONEY_FIELDS: tuple[tuple[str, str], ...] = (
    ("costledger.cost.total", "total"),
    ("costledger.cost.input", "input"),
    ("costledger.cost.cache_read", "cache_read"),
    ("costledger.cost.cache_write", "cache_write"),
    ("costledger.cost.output", "output"),
    ("costledger.cost.audio", "audio"),
)

# Record key -> UsageEvent optional text field.
_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("gen_ai.provider.name", "provider"),
    ("gen_ai.request.model", "model"),
    ("gen_ai.response.model", "response_model"),
    ("gen_ai.response.id", "request_id"),
    ("error.type", "error_type"),
    ("costledger.trace_id", "trace_id"),
    ("costledger.run_id", "run_id"),
    ("costledger.parent_run_id", "parent_run_id"),
    ("costledger.user", "user"),
    ("costledger.team", "team"),
    ("costledger.project", "project"),
    ("costledger.feature", "feature"),
)

_ZERO = timedelta(0)
_STATUSES = ("ok", "error", "cancelled")
_PRICING_STATUSES = ("priced", "unknown_model", "not_priced")

RECORD_FIELDS: tuple[str, ...] = (
    "event",
    "schema",
    "costledger.id",
    "costledger.timestamp",
    "costledger.source",
    "costledger.status",
    "error.type",
    "costledger.latency_ms",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
    *(key for key, _ in _TOKEN_FIELDS),
    "costledger.cost.status",
    *(key for key, _ in _MONEY_FIELDS),
    "costledger.cost.currency",
    "costledger.cost.provider",
    "costledger.cost.model",
    "costledger.cost.source",
    "costledger.reported_cost",
    "costledger.trace_id",
    "costledger.run_id",
    "costledger.parent_run_id",
    "costledger.user",
    "costledger.team",
    "costledger.project",
    "costledger.feature",
    "costledger.tags",
    "costledger.metadata",
    "costledger.streamed",
    "costledger.cache_hit",
)
"""Every key of a ``costledger.usage/1`` record, in the order the writer emits them."""

OPTIONAL_RECORD_FIELDS: tuple[str, ...] = ("costledger.price_context",)
"""Keys a record has only when they are set (the price context of a call served at a
tier or speed with its own price): every other line stays as older readers know it."""

_RECORD_KEYS = frozenset((*RECORD_FIELDS, *OPTIONAL_RECORD_FIELDS))
_KNOWN_OWN_KEYS = frozenset(key for key in _RECORD_KEYS if key.startswith("costledger."))


def _money_text(value: Decimal | None) -> str | None:
    # plain notation: str() would write 2E-7 for $0.0000002
    return None if value is None else money_text(value)


def _timestamp_text(ts: datetime) -> str:
    # One fixed-width form: sorts as text, keeps microseconds. UsageEvent already holds
    # UTC, so the "+00:00" that isoformat ends with is the offset to replace.
    if ts.utcoffset() != _ZERO:
        ts = ts.astimezone(timezone.utc)
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


def event_to_record(event: UsageEvent) -> dict[str, Any]:
    """``event`` as a flat log record: JSON-ready, money as decimal strings, every key of
    ``RECORD_FIELDS`` present (and ``costledger.price_context`` when the call has one).

    Nothing is redacted here: the Tracker scrubs attribution and metadata before
    it builds the event, and the log outputs scrub again on their way out.
    """
    usage = event.usage
    cost = event.cost
    record = {
        "event": USAGE_EVENT_NAME,
        "schema": USAGE_SCHEMA,
        "costledger.id": event.id,
        "costledger.timestamp": _timestamp_text(event.timestamp),
        "costledger.source": event.source,
        "costledger.status": event.status,
        "error.type": event.error_type,
        "costledger.latency_ms": event.latency_ms,
        "gen_ai.provider.name": event.provider,
        "gen_ai.request.model": event.model,
        "gen_ai.response.model": event.response_model,
        "gen_ai.response.id": event.request_id,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_write.input_tokens": usage.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
        "costledger.usage.cache_write_1h.input_tokens": usage.cache_write_1h_tokens,
        "costledger.usage.audio.input_tokens": usage.input_audio_tokens,
        "costledger.usage.audio.output_tokens": usage.output_audio_tokens,
        "costledger.cost.status": cost.status,
        "costledger.cost.total": _money_text(cost.total),
        "costledger.cost.input": _money_text(cost.input),
        "costledger.cost.cache_read": _money_text(cost.cache_read),
        "costledger.cost.cache_write": _money_text(cost.cache_write),
        "costledger.cost.output": _money_text(cost.output),
        "costledger.cost.audio": _money_text(cost.audio),
        "costledger.cost.currency": cost.currency,
        "costledger.cost.provider": cost.provider,
        "costledger.cost.model": cost.model,
        "costledger.cost.source": cost.source,
        "costledger.reported_cost": _money_text(event.reported_cost),
        "costledger.trace_id": event.trace_id,
        "costledger.run_id": event.run_id,
        "costledger.parent_run_id": event.parent_run_id,
        "costledger.user": event.user,
        "costledger.team": event.team,
        "costledger.project": event.project,
        "costledger.feature": event.feature,
        "costledger.tags": list(event.tags),
        "costledger.metadata": dict(event.metadata),
        "costledger.streamed": event.streamed,
        "costledger.cache_hit": event.cache_hit,
    }
    if event.price_context:
        record["costledger.price_context"] = dict(event.price_context)
    return record


# ---------------------------------------------------------------------------- reading


def _fail(key: str, value: Any, expected: str) -> UsageError:
    shown = redact_text(repr(value))
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return UsageError(
        f"usage record field {key!r} must be {expected}, got {shown}", field=key, value=value
    )


def _text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(key, value, "a string or null")
    return value


def _count(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    if value is None:
        return 0
    # bool is an int subclass; True is not one token.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, value, "a whole number of tokens")
    if value < 0:
        raise _fail(key, value, "a whole number of tokens, not negative")
    return value


_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _money(record: Mapping[str, Any], key: str) -> Decimal | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        if _DECIMAL_TEXT.fullmatch(value) is None:
            raise _fail(key, value, 'a decimal string such as "0.0125"')
        return _in_range(key, value, Decimal(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return _in_range(key, value, Decimal(value))
    if isinstance(value, (float, Decimal)):
        raise _fail(
            key,
            value,
            'a decimal string such as "0.0125" (a JSON number with a fraction has already '
            "been rounded through a binary float, so money is refused in that form)",
        )
    raise _fail(key, value, "a decimal string, an integer or null")


MONEY_TOO_LARGE = "below 10^20 to be stored (the ledger's NUMERIC(38, 18))"
"""What an amount past the ledger's range is told it must be (ingest's reject reason)."""


def _in_range(key: str, value: Any, amount: Decimal) -> Decimal:
    if not money_in_range(amount):
        raise _fail(key, value, MONEY_TOO_LARGE)
    return amount


def _flag(record: Mapping[str, Any], key: str) -> bool:
    value = record.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(key, value, "true or false")
    return value


def _choice(
    record: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str | None
) -> str:
    value = record.get(key, default)
    if not isinstance(value, str) or value not in choices:
        raise _fail(key, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def _required_text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(key, value, "a non-empty string (the field is required)")
    return value


def _timestamp(record: Mapping[str, Any], key: str) -> datetime:
    value = record.get(key)
    if not isinstance(value, str):
        raise _fail(key, value, "an ISO-8601 timestamp string with a UTC offset")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(key, value, "an ISO-8601 timestamp like 2025-01-31T12:00:00.000000Z") from None
    if ts.tzinfo is None:
        raise _fail(key, value, "an ISO-8601 timestamp with a UTC offset, not a naive time")
    return ts.astimezone(timezone.utc)


def _latency(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise _fail(key, value, "a number of milliseconds or null")
    result = float(value)
    if not math.isfinite(result):
        raise _fail(key, value, "a finite number of milliseconds")
    return result


def _tags(record: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise _fail(key, value, "a list of strings")
    for item in value:
        if not isinstance(item, str):
            raise _fail(key, value, f"a list of strings (item {item!r} is not one)")
    return tuple(value)


def _metadata(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(key, value, "an object (mapping of string keys)")
    for item_key in value:
        if not isinstance(item_key, str):
            raise _fail(key, value, f"an object with string keys (key {item_key!r} is not one)")
    return value


def _price_context(record: Mapping[str, Any], key: str) -> Mapping[str, str]:
    """A price context field: an object of text values (``{"service_tier": "flex"}``)."""
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(key, value, 'an object of text values (such as {"service_tier": "flex"})')
    for item_key, item in value.items():
        if not isinstance(item_key, str) or not isinstance(item, str):
            raise _fail(
                key, value, f"an object of text values ({item_key!r}: {item!r} is not text)"
            )
    return value


def event_from_record(record: Mapping[str, Any]) -> UsageEvent:
    """Read a usage record (as written by ``event_to_record``) back into the exact same event.

    Strict: every field is type-checked and anything wrong raises ``UsageError``
    naming the field and the value. Money must be a decimal string (or an
    integer); a float is refused. Keys outside the ``costledger.*`` namespace
    that it does not know (``level``, ``logger``, ``timestamp``, context your
    structlog chain added, other ``gen_ai.*`` attributes) are ignored; an
    unknown ``costledger.*`` key is refused, since it is a typo or a newer
    schema. Absent optional fields take the ``UsageEvent`` defaults.
    """
    if not isinstance(record, Mapping):
        raise UsageError(
            f"a usage record must be a mapping, got {type(record).__name__}",
            field=None,
            value=record,
        )
    schema = record.get("schema")
    if schema not in _READABLE_SCHEMAS:
        if isinstance(schema, str) and schema.startswith(USAGE_SCHEMA_PREFIX):
            raise _fail(
                "schema",
                schema,
                f"one of {sorted(_READABLE_SCHEMAS)} (written by a newer costledger? upgrade)",
            )
        raise _fail("schema", schema, f"{USAGE_SCHEMA!r} (this is not a costledger usage record)")
    name = record.get("event", USAGE_EVENT_NAME)
    if name != USAGE_EVENT_NAME:
        raise _fail("event", name, repr(USAGE_EVENT_NAME))
    # Set difference runs in C; only the few keys an application added are looked at.
    for key in record.keys() - _RECORD_KEYS:
        if isinstance(key, str) and key.startswith("costledger."):
            raise UsageError(
                f"usage record field {key!r} is not part of schema {schema!r} "
                f"(known costledger fields: {', '.join(sorted(_KNOWN_OWN_KEYS))})",
                field=key,
                value=record[key],
            )

    counts = {attr: _count(record, key) for key, attr in _TOKEN_FIELDS}
    try:
        usage = Usage(**counts)
    except UsageError as exc:
        # Usage names its own field; say which record key that is.
        record_key = next((k for k, attr in _TOKEN_FIELDS if attr == exc.field), exc.field)
        raise UsageError(
            f"usage record field {record_key!r}: {exc}", field=record_key, value=exc.value
        ) from None

    money = {attr: _money(record, key) for key, attr in _MONEY_FIELDS}
    currency = _text(record, "costledger.cost.currency")
    cost = Cost(
        status=cast(
            PricingStatus, _choice(record, "costledger.cost.status", _PRICING_STATUSES, None)
        ),
        currency="USD" if currency is None else currency,
        provider=_text(record, "costledger.cost.provider"),
        model=_text(record, "costledger.cost.model"),
        source=_text(record, "costledger.cost.source"),
        **money,
    )
    texts = {attr: _text(record, key) for key, attr in _TEXT_FIELDS}
    source = _text(record, "costledger.source")
    return UsageEvent(
        usage=usage,
        cost=cost,
        id=_required_text(record, "costledger.id"),
        timestamp=_timestamp(record, "costledger.timestamp"),
        source="api" if source is None else source,
        status=cast(CallStatus, _choice(record, "costledger.status", _STATUSES, "ok")),
        latency_ms=_latency(record, "costledger.latency_ms"),
        tags=_tags(record, "costledger.tags"),
        metadata=_metadata(record, "costledger.metadata"),
        streamed=_flag(record, "costledger.streamed"),
        cache_hit=_flag(record, "costledger.cache_hit"),
        reported_cost=_money(record, "costledger.reported_cost"),
        price_context=_price_context(record, "costledger.price_context"),
        **texts,
    )


# ------------------------------------------------------------------------ JSON lines


@lru_cache(maxsize=1)
def _orjson_loads() -> Callable[[bytes | str], Any] | None:
    try:
        import orjson
    except ImportError:
        return None
    return orjson.loads


# orjson reads an integer beyond 64 bits as a float, without a word. Every such float
# is at least 2**63 in size; a line that produced one is read again by json.
_ORJSON_INT_LIMIT = float(2**63)


def _has_huge_float(value: Any) -> bool:
    # A loop with an explicit stack: several times cheaper than recursion with any().
    stack = [value]
    while stack:
        node = stack.pop()
        for item in node.values() if type(node) is dict else node:
            kind = type(item)
            if kind is float:
                if item >= _ORJSON_INT_LIMIT or item <= -_ORJSON_INT_LIMIT:
                    return True
            elif kind is dict or kind is list:
                stack.append(item)
    return False


def loads_line(line: str | bytes) -> dict[str, Any]:
    """Parse one JSON log line into a record dict, without losing a digit.

    Uses orjson when it is installed (several times faster), the standard
    library otherwise. Money is carried as strings, so no float ever holds it;
    integers of any size stay exact (lines with one beyond 64 bits go to the
    standard library, which orjson would silently turn into a float).
    """
    loads = _orjson_loads()
    value: Any
    try:
        if loads is not None:
            try:
                value = loads(line)
            except ValueError:
                value = json.loads(line)  # NaN, Infinity: json reads them; or gives its message
            if type(value) is dict and _has_huge_float(value):
                value = json.loads(line)
        else:
            value = json.loads(line)
    except ValueError as exc:
        text = line if isinstance(line, str) else line.decode("utf-8", "replace")
        # Scrubbed before it is cut to 120 characters: a key across the cut would keep too
        # little of itself for its pattern to match (4096: far past any key reaching it).
        snippet = redact_text(text[:4096])[:120]
        raise UsageError(
            f"usage log line is not valid JSON ({exc}): {snippet!r}", field=None, value=snippet
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"usage log line must hold a JSON object, got {type(value).__name__}",
            field=None,
            value=value,
        )
    return value


def event_from_line(line: str | bytes) -> UsageEvent:
    """``event_from_record(loads_line(line))``: one JSON log line back into its event."""
    return event_from_record(loads_line(line))
