"""One parsed log line -> one ledger row, whatever the line's format.

Three formats, told apart by their keys (see ``detect``):

* ``costledger``: a ``costledger.usage/1`` record (``UsageLogger``'s lines, possibly
  with keys an application's structlog chain added). Kept as logged, cost included.
* ``litellm``: LiteLLM's ``StandardLoggingPayload`` (``_sources.litellm_payload``), or
  a record holding one under ``standard_logging_object``. Priced here.
* ``response``: a provider's raw response (OpenAI chat / Responses / embeddings,
  Anthropic message, Gemini, ...), read by ``read_response``. Priced here.

A row is the tuple ``Store.params`` makes of a ``UsageEvent`` for SQLite (the
PostgreSQL form is derived from it by the ledger's ``postgresql_row``). It is built straight from
the line's values rather than through a ``UsageEvent``: that object and its
conversion cost several times the JSON parse, and ingestion is meant to run at
100,000 lines a second. Only the common, well-formed shape takes that path; anything
else goes through the canonical readers (``event_from_record``, ``sqlite_params``),
which also word every error. ``tests/test_ingest_rows.py`` checks that both paths give
identical rows, and that the Tracker's own event for a LiteLLM payload gives the same row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, cast

from .._attribution import Attribution
from .._cost import Cost, money_text
from .._errors import UsageError
from .._extract import read_response
from .._ledger._rows import COLUMNS, MONEY_COLUMNS, Row
from .._ledger._text import clean_row
from .._redact import redact, redact_text
from .._schema import (
    MONEY_TOO_LARGE,
    RECORD_FIELDS,
    USAGE_EVENT_NAME,
    USAGE_SCHEMA,
    USAGE_SCHEMA_PREFIX,
    _has_huge_float,
    event_from_record,
)
from .._sources.litellm_payload import is_standard_logging_payload, read_standard_logging_payload
from .._tracker import _scrubbed
from .._usage import MAX_TOKENS, Usage

if TYPE_CHECKING:
    from .._pricing import Pricer

__all__ = [
    "FORMATS",
    "INGEST_NAMESPACE",
    "Converter",
    "Row",
    "detect",
    "response_event_id",
]

FORMATS: Final = ("costledger", "litellm", "response")

INGEST_NAMESPACE: Final = uuid.UUID("5b0f4f2e-8a57-5c1e-9d2b-6c6f73746c64")
"""uuid5 namespace of the ids given to raw responses (stable across versions: never change)."""

_UTC: Final = timezone.utc

# The ledger's own column order: rows built here go straight into its insert.
_ROW_COLUMNS: Final = COLUMNS
I_ID, I_TIMESTAMP, I_MODEL, I_RESPONSE_MODEL = (
    COLUMNS.index(c) for c in ("id", "timestamp", "model", "response_model")
)
I_TAGS, I_METADATA, I_STREAMED, I_CACHE_HIT = (
    COLUMNS.index(c) for c in ("tags", "metadata", "streamed", "cache_hit")
)
I_PRICING_STATUS, I_CURRENCY, I_TOTAL = (
    COLUMNS.index(c) for c in ("pricing_status", "currency", "total_cost")
)
I_SOURCE, I_STATUS, I_LATENCY = (COLUMNS.index(c) for c in ("source", "status", "latency_ms"))
I_REQUEST_ID: Final = COLUMNS.index("request_id")
I_USER: Final = COLUMNS.index("user")
I_TOKENS: Final = COLUMNS.index("input_tokens")
I_TOKENS_END: Final = COLUMNS.index("output_audio_tokens") + 1

_RECORD_KEYS: Final = frozenset(RECORD_FIELDS)
_STATUSES: Final = ("ok", "error", "cancelled")
_PRICING_STATUSES: Final = ("priced", "unknown_model", "not_priced")
# The writer's timestamp form, fixed width: 2025-01-31T12:00:00.000000Z
_WRITER_TIMESTAMP: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
# Decimal text that is already what format(Decimal(text), "f") gives, and storable as is
# (at most 20 digits before the point and 18 after, no leading zeros, no exponent).
_CANONICAL_MONEY: Final = re.compile(r"-?(?:0|[1-9]\d{0,19})(?:\.\d{1,18})?")
# What the schema reader accepts as money text (the same pattern as _schema's).
_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Shapes read_response names whose provider is certain; others (OpenAI-compatible
# servers of many vendors) leave the provider to the model name.
_SHAPE_PROVIDER: Final = {"anthropic": "anthropic"}


_INF: Final = float("inf")
_MONEY_SCALE: Final = 18  # the ledger's places after the point (MONEY_SCALE)
_MAX_ADJUSTED: Final = 19  # a storable amount is below 10**20


class _Fallback(Exception):
    """The line is not of the common shape: read it with the canonical reader instead."""


# -- the own format's fast path: a record's values in the ledger's column order ----------------

_OWN_KEY_OF: Final = {
    "id": "costledger.id",
    "timestamp": "costledger.timestamp",
    "source": "costledger.source",
    "provider": "gen_ai.provider.name",
    "model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "status": "costledger.status",
    "error_type": "error.type",
    "latency_ms": "costledger.latency_ms",
    "request_id": "gen_ai.response.id",
    "trace_id": "costledger.trace_id",
    "run_id": "costledger.run_id",
    "parent_run_id": "costledger.parent_run_id",
    "user": "costledger.user",
    "team": "costledger.team",
    "project": "costledger.project",
    "feature": "costledger.feature",
    "tags": "costledger.tags",
    "metadata": "costledger.metadata",
    "streamed": "costledger.streamed",
    "cache_hit": "costledger.cache_hit",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_write_tokens": "gen_ai.usage.cache_write.input_tokens",
    "cache_write_1h_tokens": "costledger.usage.cache_write_1h.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
    "input_audio_tokens": "costledger.usage.audio.input_tokens",
    "output_audio_tokens": "costledger.usage.audio.output_tokens",
    "pricing_status": "costledger.cost.status",
    "currency": "costledger.cost.currency",
    "total_cost": "costledger.cost.total",
    "input_cost": "costledger.cost.input",
    "cache_read_cost": "costledger.cost.cache_read",
    "cache_write_cost": "costledger.cost.cache_write",
    "output_cost": "costledger.cost.output",
    "audio_cost": "costledger.cost.audio",
    "pricing_source": "costledger.cost.source",
    "priced_model": "costledger.cost.model",
    "priced_provider": "costledger.cost.provider",
    "reported_cost": "costledger.reported_cost",
}
_OWN_COLUMNS: Final = tuple(c for c in COLUMNS if c in _OWN_KEY_OF)
"""The columns every record has (``costledger.price_context`` is there only when set)."""
assert (*_OWN_COLUMNS, "price_context") == COLUMNS
_own_values: Final = operator.itemgetter(*(_OWN_KEY_OF[c] for c in _OWN_COLUMNS))
_N_RECORD_KEYS: Final = len(RECORD_FIELDS)
_MONEY_INDEXES: Final = tuple(COLUMNS.index(c) for c in MONEY_COLUMNS)
# the field names the ledger's money check uses in its messages
_MONEY_FIELD_NAMES: Final = dict(
    zip(
        _MONEY_INDEXES,
        (
            "cost.total",
            "cost.input",
            "cost.cache_read",
            "cost.cache_write",
            "cost.output",
            "cost.audio",
            "reported_cost",
        ),
        strict=True,
    )
)
_LEDGER_MONEY_COLUMN: Final = {name: COLUMNS[i] for i, name in _MONEY_FIELD_NAMES.items()}
_NONE: Final = type(None)


def _too_large(what: str, name: str, value: Any) -> UsageError:
    """An amount the ledger cannot store (its money columns are NUMERIC(38, 18))."""
    return UsageError(
        f"{what} must be {MONEY_TOO_LARGE}, got {value!r}",
        field=name,
        value=value,
    )


_OWN_DEFAULTS: Final = tuple(
    (COLUMNS.index(c), default)
    for c, default in (
        ("source", "api"),
        ("currency", "USD"),
        ("streamed", False),
        ("cache_hit", False),
    )
)
_TEXT: Final = frozenset((str, _NONE))
_OWN_TYPES: Final = tuple(
    frozenset((str,))
    if c in ("id", "timestamp", "status", "pricing_status")
    else frozenset((float, int, _NONE))
    if c == "latency_ms"
    else frozenset((list, _NONE))
    if c == "tags"
    else frozenset((dict, _NONE))
    if c == "metadata"
    else frozenset((bool, _NONE))
    if c in ("streamed", "cache_hit")
    else frozenset((int, _NONE))
    if c.endswith("_tokens")
    else _TEXT
    for c in _OWN_COLUMNS
)
"""The types each value of the common shape may have (else the canonical reader decides)."""
_OWN_KEY_SETS: dict[tuple[str, ...], bool] = {}
_METADATA_TEXT: dict[tuple[Any, ...], str] = {}
_CACHEABLE: Final = frozenset((str, int, bool, _NONE))
_CACHE_LIMIT: Final = 4096  # a hostile file with endless shapes only empties the caches
_own_money: Final = operator.itemgetter(*_MONEY_INDEXES)
_MONEY_LINE: Final = " ".join(["%s"] * len(_MONEY_INDEXES))
_MONEY_SLOT: Final = _CANONICAL_MONEY.pattern
assert " " not in _MONEY_SLOT
assert "None" not in _MONEY_SLOT


_ATTRIBUTIONS: dict[tuple[Any, ...], Attribution] = {}


def _attribution_of(values: Mapping[str, Any]) -> Attribution:
    """``Attribution.from_mapping(values)`` with no secret in its names and tags (the
    Tracker's own ``_scrubbed``, so the row is the live integration's), cached by value
    when every value is a string, int, bool or None, and the tags (``attribution_values``
    makes them a list) a list of strings: a proxy's calls carry a handful of key owners,
    teams and features. Keyed by the items and their types (``1`` and ``True`` are equal
    keys); ``from_mapping`` reads such values without a warning, so the cached answer is
    the one it gives."""
    kinds = tuple(map(type, values.values()))
    if not _ATTRIBUTION_KINDS.issuperset(kinds):
        return _scrubbed(Attribution.from_mapping(values))
    key: tuple[Any, ...]
    if list in kinds:
        tags = values.get("tags")
        if (
            kinds.count(list) != 1
            or type(tags) is not list
            or not _STR_ONLY.issuperset(map(type, tags))
        ):
            return _scrubbed(Attribution.from_mapping(values))
        key = (tuple(values), tuple(tuple(v) if type(v) is list else v for v in values.values()))
    else:
        key = (tuple(values.items()),)
    key += (kinds,)
    found = _ATTRIBUTIONS.get(key)
    if found is None:
        found = _scrubbed(Attribution.from_mapping(values))
        if len(_ATTRIBUTIONS) >= _CACHE_LIMIT:
            _ATTRIBUTIONS.clear()
        _ATTRIBUTIONS[key] = found
    return found


_CLEAN_NAMES: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_CLEAN_TAGS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _clean_names(names: tuple[Any, ...]) -> tuple[Any, ...]:
    """A record's user, team, project and feature (text or None) with no secret in them,
    scrubbed as the Tracker scrubs attribution (``redact_text``)."""
    return _cleaned(_CLEAN_NAMES, names)


def _clean_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    """``tags`` with no secret in any, as ``_clean_names``."""
    return _cleaned(_CLEAN_TAGS, tags)


def _cleaned(cache: dict[Any, Any], values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` each scrubbed (``None`` kept), cached by value (a log carries a handful
    of each), and ``values`` itself when they are clean."""
    found = cache.get(values)
    if found is None:
        found = tuple(None if v is None else redact_text(v) for v in values)
        if found == values:
            found = values
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[values] = found
    return found


def _clean_id(request_id: str | None) -> str | None:
    """A provider's request id with no secret in it (ids are unique: no cache of ours,
    ``redact_text`` keeps its own of clean texts)."""
    return None if request_id is None else redact_text(request_id)


_STR_ONLY: Final = frozenset((str,))
_ATTRIBUTION_KINDS: Final = _CACHEABLE | {list}


@dataclasses.dataclass(frozen=True, slots=True)
class _OwnShape:
    """What the types of a record's values (in column order) let the fast path do."""

    ok: bool  # every value of a type the fast path reads
    fixups: bool  # not ok, or some values need their default (or a float) first
    none_tokens: bool
    int_latency: bool
    money: Callable[[str], Any]  # fullmatch of the joined money texts

    @classmethod
    def of(cls, signature: tuple[type, ...]) -> _OwnShape:
        ok = all(kind in allowed for kind, allowed in zip(signature, _OWN_TYPES, strict=True))
        none_tokens = _NONE in signature[I_TOKENS:I_TOKENS_END]
        int_latency = signature[I_LATENCY] is int
        defaults = any(signature[i] is _NONE for i, _ in _OWN_DEFAULTS)
        slots = " ".join("None" if signature[i] is _NONE else _MONEY_SLOT for i in _MONEY_INDEXES)
        return cls(
            ok=ok,
            fixups=not ok or none_tokens or int_latency or defaults,
            none_tokens=none_tokens,
            int_latency=int_latency,
            money=re.compile(slots).fullmatch,
        )

    def fix(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """The values with the defaults the canonical reader gives a null."""
        fixed = list(values)
        for i, default in _OWN_DEFAULTS:
            if fixed[i] is None:
                fixed[i] = default
        if self.none_tokens:
            fixed[I_TOKENS:I_TOKENS_END] = [n or 0 for n in fixed[I_TOKENS:I_TOKENS_END]]
        if self.int_latency:
            fixed[I_LATENCY] = float(fixed[I_LATENCY])
        return tuple(fixed)


_OWN_SHAPES: dict[tuple[type, ...], _OwnShape] = {}


def detect(record: Mapping[str, Any]) -> str:
    """The format of a parsed line: ``costledger``, ``litellm`` or ``response``."""
    if "schema" in record or record.get("event") == USAGE_EVENT_NAME:
        return "costledger"
    if is_standard_logging_payload(record) or "standard_logging_object" in record:
        return "litellm"
    return "response"


def response_event_id(
    response_id: str | None, line: bytes, line_no: int, input_key: str | None = None
) -> str:
    """The event id of a raw response: derived from the provider's response id, so the
    same response ingested again (from any file) is the same event.

    A response without an id is identified by its input (``input_key``: what
    ``ingest`` derives from the input's first bytes up to the line, at most 4 KiB, so
    the same under a rename, a re-compression or lines appended later), its bytes and
    its line number: ingesting the same file again adds nothing, two identical id-less
    responses on different lines stay two calls, and so do identical lines of two
    inputs that start differently. A trailing ``\\r`` (a CRLF log) is not part of the
    line. Without ``input_key``: the id earlier versions gave such a line (its bytes,
    with any ``\\r``, and its number only), which ``ingest`` still looks for in the ledger.
    """
    if response_id:
        return _uuid5("response:" + response_id)
    if input_key is None:
        return _uuid5(f"line:{hashlib.sha256(line).hexdigest()}:{line_no}")
    body = line[:-1] if line[-1:] == b"\r" else line
    return _uuid5(f"input:{input_key}:line:{hashlib.sha256(body).hexdigest()}:{line_no}")


def _idless_ids(line: bytes, line_no: int, input_key: str) -> tuple[str, str]:
    """``response_event_id(None, ...)`` with and without ``input_key``, hashing the line
    once (twice for a CRLF line, whose \\r only the earlier id included)."""
    digest = hashlib.sha256(line).hexdigest()
    body = hashlib.sha256(line[:-1]).hexdigest() if line[-1:] == b"\r" else digest
    return (
        _uuid5(f"input:{input_key}:line:{body}:{line_no}"),
        _uuid5(f"line:{digest}:{line_no}"),
    )


_NAMESPACE_BYTES: Final = INGEST_NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(INGEST_NAMESPACE, name))`` without building a ``UUID`` (3x faster)."""
    # surrogatepass: a response id with a lone surrogate (JSON allows its escape) has an id
    # too; for any other text the same bytes as encode()
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8", "surrogatepass")).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _store_helpers() -> tuple[Callable[..., Any], ...]:
    from .._ledger._money import MONEY_PRECISION, MONEY_SCALE
    from .._ledger._store import _json, _tags_text, _text_money, sqlite_params

    if (  # pragma: no cover - a change of the ledger's schema must update this module
        MONEY_SCALE != _MONEY_SCALE or MONEY_PRECISION - MONEY_SCALE - 1 != _MAX_ADJUSTED
    ):
        raise RuntimeError("costledger ingest: the ledger's columns changed; update _convert")
    return _text_money, _json, sqlite_params, _tags_text


class Converter:
    """Turns parsed lines into rows: prices what needs a price, with one ``Pricer``.

    ``now`` is the time given to raw responses that carry none (Anthropic messages,
    embeddings): the ingestion's start, the same for every line of a run.
    """

    def __init__(self, pricer: Pricer, *, now: datetime | None = None) -> None:
        self.pricer = pricer
        self.now = now or datetime.now(_UTC)
        self._money_text, self._json, self._sqlite_params, self._tags_text = _store_helpers()
        self.counts: dict[str, int] = dict.fromkeys(FORMATS, 0)
        """Lines converted, per format, since this converter was made."""
        self.input_key: Callable[[bytes, int], str] | None = None
        """The identity of the input up to a line (``ingest`` sets it for each input): part
        of the id of a response without an id of its own."""
        self.legacy_ids: dict[str, str] = {}
        """The ids of responses without an id converted since ``ingest`` last took them (at
        each commit): this version's id -> the one earlier versions gave the same line."""
        self.call_rows: list[Row] = []
        """The rows of LiteLLM successes converted since ``ingest`` last took them (at each
        commit): a row whose id is taken by another call (a proxy call id a client sent
        twice) is stored under ``<id>:<n>``, as the live integration does."""

    # -- entry point -------------------------------------------------------------------
    def convert(self, record: dict[str, Any], line: bytes, line_no: int) -> Row:
        """The row of one parsed line; ``UsageError`` / ``ValueError`` say why it has none."""
        counts = self.counts
        if "schema" in record or record.get("event") == USAGE_EVENT_NAME:
            try:
                row = self.own_fast(record)
            except _Fallback:
                row = self.own_canonical(record, line)
            counts["costledger"] += 1
            return row
        if is_standard_logging_payload(record):
            row = self.litellm(record)
            counts["litellm"] += 1
            return row
        inner = record.get("standard_logging_object")
        if inner is not None:
            if type(inner) is not dict:
                raise UsageError(
                    "field 'standard_logging_object' must be an object (a LiteLLM "
                    f"StandardLoggingPayload), got {type(inner).__name__}",
                    field="standard_logging_object",
                    value=inner,
                )
            row = self.litellm(inner)
            counts["litellm"] += 1
            return row
        row = self.response(record, line, line_no)
        counts["response"] += 1
        return row

    # -- costledger's own records --------------------------------------------------------
    def own_fast(self, record: dict[str, Any]) -> Row:
        """The common shape of a ``costledger.usage/1`` record, without building an event.

        Raises ``_Fallback`` at the first value outside that shape (the canonical reader
        then decides, and words the error). It runs for most lines, and every Python
        operation counts (a loop over the fields cost more than the JSON parse), so it
        works on all values at once: one ``itemgetter`` call fetches them in the
        ledger's column order, and the tuple of their types (a record's "signature": a
        logger writes a handful) is checked once and remembered with what it implies;
        each line then has only its values' ranges checked.
        """
        get = record.get
        if get("schema") != USAGE_SCHEMA or get("event", USAGE_EVENT_NAME) != USAGE_EVENT_NAME:
            raise _Fallback
        try:
            values = _own_values(record)
        except KeyError:
            raise _Fallback from None
        # every column's key, "schema" and "event" are there: with no other key, that is all
        if len(record) != _N_RECORD_KEYS or "event" not in record:
            # an application's extra keys (structlog's level, timestamp), or a missing event
            keys = tuple(record)
            known = _OWN_KEY_SETS.get(keys)
            if known is None:
                known = _OWN_KEY_SETS[keys] = not any(
                    k.startswith("costledger.") for k in set(keys) - _RECORD_KEYS
                )
                if len(_OWN_KEY_SETS) > _CACHE_LIMIT:
                    _OWN_KEY_SETS.clear()
            if not known:
                raise _Fallback
        signature = tuple(map(type, values))
        shape = _OWN_SHAPES.get(signature)
        if shape is None:
            shape = _OWN_SHAPES[signature] = _OwnShape.of(signature)
            if len(_OWN_SHAPES) > _CACHE_LIMIT:
                _OWN_SHAPES.clear()
        if shape.fixups:
            if not shape.ok:
                raise _Fallback
            values = shape.fix(values)

        event_id, ts = values[I_ID], values[I_TIMESTAMP]
        if not event_id or _WRITER_TIMESTAMP.fullmatch(ts) is None:
            raise _Fallback
        try:
            datetime.fromisoformat(ts[:-1])  # a real date and time, not just the right shape
        except ValueError:
            raise _Fallback from None
        if values[I_STATUS] not in _STATUSES or values[I_PRICING_STATUS] not in _PRICING_STATUSES:
            raise _Fallback
        n_in, n_out, n_cr, n_cw, n_cw1h, n_reason, n_ain, n_aout = values[I_TOKENS:I_TOKENS_END]
        if (
            n_in < 0
            or n_out < 0
            or n_cr < 0
            or n_cw < 0
            or n_cw1h < 0
            or n_reason < 0
            or n_ain < 0
            or n_aout < 0
            or n_cr + n_cw > n_in
            or n_cw1h > n_cw
            or n_reason > n_out
            or n_ain > n_in
            or n_aout > n_out
            or n_in > MAX_TOKENS  # bounds the cache counts; output bounds reasoning
            or n_out > MAX_TOKENS
        ):
            raise _Fallback  # the canonical reader refuses it, naming the field
        latency = values[I_LATENCY]
        if latency is not None and latency - latency != 0.0:
            raise _Fallback  # inf - inf and nan - nan are nan: not a finite latency

        tags = values[I_TAGS]
        tags_text: str | None
        if not tags:
            tags_text = "[]"
        else:
            key = tuple(tags)
            if not all(type(t) is str for t in key):
                raise _Fallback
            tags_text = self._tags_text(_clean_tags(key))  # the ledger's cached text
        meta = values[I_METADATA]
        if not meta:
            meta_text = "{}"
        else:
            if _has_huge_float(meta):
                raise _Fallback  # an integer orjson could only read as a float
            meta_text = self._metadata_text(meta)

        context = get("costledger.price_context")
        if context:
            if type(context) is not dict or not all(
                type(k) is str and type(v) is str for k, v in context.items()
            ):
                raise _Fallback
            context_text = self._metadata_text(context)  # scrubbed, cached per value set
        else:
            context_text = "{}"
        # user, team, project, feature and the request id go to the row scrubbed, as the
        # Tracker scrubs them (a record written by hand, or by an older version, may not be)
        names = values[I_USER:I_TAGS]
        request_id = values[I_REQUEST_ID]
        clean_id = None if request_id is None else redact_text(request_id)
        clean = _clean_names(names)
        if clean is not names or clean_id is not request_id:
            values = (
                *values[:I_REQUEST_ID],
                clean_id,
                *values[I_REQUEST_ID + 1 : I_USER],
                *clean,
                *values[I_TAGS:],
            )
        row = (
            event_id,
            ts[:-1] + "+00:00",
            *values[I_SOURCE:I_TAGS],
            tags_text,
            meta_text,
            1 if values[I_STREAMED] else 0,
            1 if values[I_CACHE_HIT] else 0,
            *values[I_TOKENS:],
            context_text,
        )
        # Seven amounts checked by one regex match over their texts joined by spaces (a
        # tenth of the cost of seven matches): the shape's pattern has one slot per amount,
        # "None" where the signature says null, canonical money text elsewhere, and no
        # slot matches an empty text or one with a space, so the join splits back exactly.
        if shape.money(_MONEY_LINE % _own_money(values)) is None:
            row = self._own_money_slow(row)
        return clean_row(row)  # no NUL, no lone surrogate: as ``sqlite_params`` gives it

    def _own_money_slow(self, row: Row) -> Row:
        """The amounts of a row that are not already in the ledger's text form: their
        storage text, or ``_Fallback`` / the ledger's own error."""
        values = list(row)
        canonical = _CANONICAL_MONEY.fullmatch
        for i in _MONEY_INDEXES:
            amount = values[i]
            if amount is not None and canonical(amount) is None:
                values[i] = self._money(amount, _MONEY_FIELD_NAMES[i])
        return tuple(values)

    def _money(self, value: Any, field: str) -> str | None:
        if value is None:
            return None
        if type(value) is not str:
            raise _Fallback
        if _CANONICAL_MONEY.fullmatch(value) is not None:
            return value
        if _DECIMAL_TEXT.fullmatch(value) is None:
            raise _Fallback
        amount = Decimal(value)
        if amount.adjusted() > _MAX_ADJUSTED:
            name = _OWN_KEY_OF[_LEDGER_MONEY_COLUMN[field]]
            raise _too_large(f"usage record field {name!r}", name, value)
        text: str | None = self._money_text(field, amount)
        return text

    def own_canonical(self, record: dict[str, Any], line: bytes) -> Row:
        """Any ``costledger.usage/*`` record, through the schema's own strict reader."""
        schema = record.get("schema")
        if (
            isinstance(schema, str)
            and schema.startswith(USAGE_SCHEMA_PREFIX)
            and _has_huge_float(record)
        ):
            record = json.loads(line[line.find(b"{") :])  # integers beyond 64 bits, exactly
        event = event_from_record(record)
        if event.metadata:
            event = dataclasses.replace(event, metadata=redact(dict(event.metadata)))
        names = (event.user, event.team, event.project, event.feature)
        clean, tags = _clean_names(names), _clean_tags(event.tags)
        request_id = _clean_id(event.request_id)
        if clean is not names or tags is not event.tags or request_id != event.request_id:
            user, team, project, feature = clean
            event = dataclasses.replace(
                event,
                user=user,
                team=team,
                project=project,
                feature=feature,
                tags=tags,
                request_id=request_id,
            )
        cost = event.cost
        for name, amount in (
            ("costledger.cost.total", cost.total),
            ("costledger.cost.input", cost.input),
            ("costledger.cost.cache_read", cost.cache_read),
            ("costledger.cost.cache_write", cost.cache_write),
            ("costledger.cost.output", cost.output),
            ("costledger.cost.audio", cost.audio),
            ("costledger.reported_cost", event.reported_cost),
        ):
            if amount is not None and amount.is_finite() and amount.adjusted() > _MAX_ADJUSTED:
                raise _too_large(f"usage record field {name!r}", name, record.get(name))
        row: Row = self._sqlite_params(event)
        return row

    # -- LiteLLM ---------------------------------------------------------------------------
    def litellm(self, payload: dict[str, Any]) -> Row:
        """A ``StandardLoggingPayload``, as ``CostLedgerLogger`` would have recorded it."""
        call = read_standard_logging_payload(payload)
        reported = call.reported_cost
        if reported is not None and reported.adjusted() > _MAX_ADJUSTED:
            value = payload.get("response_cost")
            raise _too_large("LiteLLM payload field 'response_cost'", "response_cost", value)
        at = call.started_at
        if at is None:  # pragma: no cover - read_standard_logging_payload requires startTime
            at = self.now
        model = call.model or call.response_model
        usage: Usage | None = None
        context = call.price_context
        if call.usage is not None:
            info = read_response(call.usage, provider="litellm")
            usage, context = info.usage, context or info.price_context
        if call.cache_hit:  # a cache hit costs nothing, whether or not it reports usage
            usage = usage if usage is not None else _NO_USAGE
            currency = self.pricer.currency_of(model, provider=call.provider, at=at)
            cost = Cost.zero(
                model=model, provider=call.provider, source="cache hit", currency=currency
            )
        elif usage is None:
            usage = _NO_USAGE
            currency = self.pricer.currency_of(model, provider=call.provider, at=at)
            cost = Cost(status="not_priced", model=model, provider=call.provider, currency=currency)
        else:
            cost = self.pricer.price(
                call.response_model or model or "",
                usage,
                provider=call.provider,
                at=at,
                price_context=context,
                requested_model=model,
            )
        attribution = _attribution_of(call.attribution) if call.attribution else None
        meta: Mapping[str, Any] = call.metadata
        if attribution is not None and attribution.metadata:
            meta = {**attribution.metadata, **meta}
        row = self.row(
            event_id=call.call_id,
            at=at,
            source="litellm",
            provider=call.provider,
            model=model,
            response_model=call.response_model,
            status=call.status,
            error_type=call.error_type,
            latency_ms=None if call.latency_ms is None else round(call.latency_ms, 3),
            request_id=_clean_id(call.request_id),
            attribution=attribution,
            metadata=meta,
            streamed=call.streamed,
            cache_hit=call.cache_hit,
            usage=usage,
            cost=cost,
            reported_cost=call.reported_cost,
            price_context=context,
        )
        if call.status == "ok":  # a failed attempt's id is of its own (its start)
            self.call_rows.append(row)
        return row

    # -- raw provider responses ------------------------------------------------------------
    def response(self, record: dict[str, Any], line: bytes, line_no: int) -> Row:
        """A provider's response (the whole JSON body, one per line), or one line of a
        batch's results (OpenAI Batch API output, Anthropic Message Batches results)."""
        if "custom_id" in record and ("response" in record or "result" in record):
            return self.batch_result(record, line, line_no)
        return self._response_row(record, line, line_no)

    def batch_result(self, record: dict[str, Any], line: bytes, line_no: int) -> Row:
        """One line of a batch's results: the response it holds, priced at the batch
        price (``processing="batch"``), or a failed request (no usage, no charge).

        OpenAI: ``{"id", "custom_id", "response": {"status_code", "body"}, "error"}``;
        Anthropic: ``{"custom_id", "result": {"type": "succeeded", "message"}}`` (or
        ``errored`` / ``canceled`` / ``expired``)."""
        if "result" in record:  # Anthropic
            result = record["result"]
            if not isinstance(result, dict):
                raise UsageError(
                    f"batch result field 'result' must be an object, got {type(result).__name__}",
                    field="result",
                    value=result,
                )
            kind = result.get("type")
            message = result.get("message")
            if kind == "succeeded":
                if not isinstance(message, dict):
                    raise UsageError(
                        "batch result field 'result.message' must be the message object of a "
                        f"succeeded request, got {type(message).__name__}",
                        field="result.message",
                        value=message,
                    )
                return self._response_row(message, line, line_no, batch=True)
            error = result.get("error")
            inner = error.get("error") if isinstance(error, dict) else None
            detail = inner.get("type") if isinstance(inner, dict) else None
            return self._failed_batch_row(
                None,
                line,
                line_no,
                detail or (kind if isinstance(kind, str) else None),
                "anthropic",
            )
        response = record["response"]  # OpenAI
        body = response.get("body") if isinstance(response, dict) else None
        status_code = response.get("status_code") if isinstance(response, dict) else None
        if status_code == 200:
            if not isinstance(body, dict):
                raise UsageError(
                    "batch result field 'response.body' must be the response object of a "
                    f"request answered 200, got {type(body).__name__}",
                    field="response.body",
                    value=body,
                )
            return self._response_row(body, line, line_no, batch=True)
        error = record.get("error")
        if not isinstance(error, dict) and isinstance(body, dict):
            error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, str) or not code:
            code = f"http_{status_code}" if isinstance(status_code, int) else "batch_error"
        batch_id = record.get("id")
        return self._failed_batch_row(
            batch_id if isinstance(batch_id, str) and batch_id else None, line, line_no, code, None
        )

    def _failed_batch_row(
        self,
        batch_id: str | None,
        line: bytes,
        line_no: int,
        error_type: str | None,
        provider: str | None,
    ) -> Row:
        """A batch request that failed, expired or was cancelled: recorded as an error with
        no usage and nothing to price (a batch bills only what succeeded)."""
        return self.row(
            event_id=self._event_id(batch_id, line, line_no),
            at=self.now,
            source="ingest",
            provider=provider,
            model=None,
            response_model=None,
            status="error",
            error_type=error_type or "batch_error",
            latency_ms=None,
            request_id=_clean_id(batch_id),
            attribution=None,
            metadata={},
            streamed=False,
            cache_hit=False,
            usage=_NO_USAGE,
            cost=Cost(status="not_priced", provider=provider),
            reported_cost=None,
            price_context=_BATCH,
        )

    def _response_row(
        self, record: dict[str, Any], line: bytes, line_no: int, *, batch: bool = False
    ) -> Row:
        if "usage" not in record and "usageMetadata" not in record and "response" not in record:
            keys = ", ".join(repr(k) for k in list(record)[:8])
            raise UsageError(
                "not a costledger usage record, a LiteLLM StandardLoggingPayload or a provider "
                f"response with usage (keys: {keys or 'none'})",
                field=None,
                value=None,
            )
        info = read_response(record)
        at = self.now
        # a Responses API stream event (response.completed) has its time in "response"
        inner = record.get("response")
        timed = inner if isinstance(inner, dict) and "created" not in record else record
        for key in ("created", "created_at"):
            created = timed.get(key)
            if created is not None:
                if isinstance(created, bool) or not isinstance(created, (int, float)):
                    raise UsageError(
                        f"response field {key!r} must be epoch seconds, got {created!r}",
                        field=key,
                        value=created,
                    )
                try:
                    at = datetime.fromtimestamp(created, _UTC)
                except (OverflowError, OSError, ValueError):
                    raise UsageError(
                        f"response field {key!r} is not a valid time: {created!r}",
                        field=key,
                        value=created,
                    ) from None
                break
        provider = _SHAPE_PROVIDER.get(info.provider or "")
        model = info.model
        context = info.price_context
        if batch:
            context = {**(context or {}), **_BATCH}
        cost = self.pricer.price(
            model or "", info.usage, provider=provider, at=at, price_context=context
        )
        return self.row(
            event_id=self._event_id(info.response_id, line, line_no),
            at=at,
            source="ingest",
            provider=provider,
            model=model,
            response_model=model,
            status="ok",
            error_type=None,
            latency_ms=None,
            request_id=_clean_id(info.response_id),
            attribution=None,
            metadata={},
            streamed=False,
            cache_hit=False,
            usage=info.usage,
            cost=cost,
            reported_cost=None,
            price_context=context,
        )

    def _event_id(self, response_id: str | None, line: bytes, line_no: int) -> str:
        if response_id or self.input_key is None:
            return response_event_id(response_id, line, line_no)
        event_id, self.legacy_ids[event_id] = _idless_ids(
            line, line_no, self.input_key(line, line_no)
        )
        return event_id

    # -- the row of a priced call ------------------------------------------------------------
    def row(
        self,
        *,
        event_id: str,
        at: datetime,
        source: str,
        provider: str | None,
        model: str | None,
        response_model: str | None,
        status: str,
        error_type: str | None,
        latency_ms: float | None,
        request_id: str | None,
        attribution: Attribution | None,
        metadata: Mapping[str, Any],
        streamed: bool,
        cache_hit: bool,
        usage: Usage,
        cost: Cost,
        reported_cost: Decimal | None,
        price_context: Mapping[str, str] | None = None,
    ) -> Row:
        """What ``sqlite_params`` gives for the event the Tracker builds from these values."""
        a = attribution
        values = (
            event_id,
            self._timestamp(at),
            source,
            provider,
            model,
            response_model,
            status,
            error_type,
            latency_ms,
            request_id,
            None,
            None,
            None,
            None if a is None else a.user,
            None if a is None else a.team,
            None if a is None else a.project,
            None if a is None else a.feature,
            "[]" if a is None or not a.tags else self._tags_text(a.tags),
            self._metadata_text(metadata) if metadata else "{}",
            1 if streamed else 0,
            1 if cache_hit else 0,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.cache_write_1h_tokens,
            usage.reasoning_tokens,
            usage.input_audio_tokens,
            usage.output_audio_tokens,
            cost.status,
            cost.currency,
            *self._cost_texts(cost),
            cost.source,
            cost.model,
            cost.provider,
            self._decimal_text("reported_cost", reported_cost),
            self._metadata_text(price_context) if price_context else "{}",
        )
        return clean_row(values)

    def _cost_texts(self, cost: Cost) -> tuple[str | None, ...] | list[str]:
        """``_decimal_text`` of the six amounts of a cost. A priced cost has all six: they
        are formatted at once (``str`` of each, the ``"f"`` format when one has an exponent)
        and checked by one regex match (a fifth of the cost of six calls); anything else
        takes ``_decimal_text`` one by one."""
        amounts = (
            cost.total,
            cost.input,
            cost.cache_read,
            cost.cache_write,
            cost.output,
            cost.audio,
        )
        try:
            # str() of a Decimal is its "f" format whenever it has no exponent (a third of
            # the cost): the same text, else the format itself
            joined = " ".join(map(str, amounts))
            if "E" in joined or not _DECIMAL_ONLY.issuperset(map(type, amounts)):
                joined = _SIX_AMOUNTS.format(*amounts)
            # plain notation with at most 18 places (the match), below 10**20 (adjusted():
            # a zero with a large exponent formats as "0" but is not storable)
            storable = (
                _SIX_STORABLE(joined) is not None
                and max(map(_adjusted, cast(tuple[Decimal, ...], amounts))) <= _MAX_ADJUSTED
            )
        except TypeError:  # some amount is None (or not a Decimal)
            storable = False
        if storable:
            return joined.split(" ")
        money = self._decimal_text
        return (
            money("cost.total", cost.total),
            money("cost.input", cost.input),
            money("cost.cache_read", cost.cache_read),
            money("cost.cache_write", cost.cache_write),
            money("cost.output", cost.output),
            money("cost.audio", cost.audio),
        )

    def _metadata_text(self, metadata: Mapping[str, Any]) -> str:
        """The stored JSON text of metadata, secrets redacted. Cached when every value is
        a string, int, bool or None (LiteLLM's model group, a caller's feature flags):
        keyed by the items and their types, as ``1``, ``1.0`` and ``True`` are equal keys
        with different texts (floats are left out: ``0.0`` and ``-0.0`` too)."""
        key: tuple[Any, ...] | None = None
        try:
            items = tuple(metadata.items())
            key = (items, tuple(map(type, metadata.values())))
            text = _METADATA_TEXT.get(key)
        except TypeError:  # a list or dict value: not hashable
            text = None
            key = None
        if text is None:
            text = self._json(redact(dict(metadata)), "{}")
            if (
                key is not None
                and len(_METADATA_TEXT) < _CACHE_LIMIT
                and _CACHEABLE.issuperset(key[1])
            ):
                _METADATA_TEXT[key] = text
        return text

    def _decimal_text(self, field: str, amount: Decimal | None) -> str | None:
        """``_text_money(field, amount)`` (the ledger's storage text of an amount), with its
        common case, a finite amount of at most 18 places below 10**20, inline."""
        if amount is None:
            return None
        text = money_text(amount)
        if "0" <= text[-1] <= "9" and amount.adjusted() <= _MAX_ADJUSTED:
            dot = text.find(".")
            if dot < 0 or len(text) - dot <= _MONEY_SCALE + 1:
                return text
        stored: str | None = self._money_text(field, amount)  # rounds, or says what is wrong
        return stored

    def _timestamp(self, at: datetime) -> str:
        # UsageEvent keeps UTC; the SQLite text is its isoformat with microseconds
        if at.utcoffset():
            at = at.astimezone(_UTC)
        elif at.tzinfo is not _UTC:
            at = at.replace(tzinfo=_UTC)
        return at.isoformat(timespec="microseconds")


_NO_USAGE: Final = Usage()
_BATCH: Final = {"processing": "batch"}
_SIX_AMOUNTS: Final = " ".join(["{:f}"] * 6)
_DECIMAL_ONLY: Final = frozenset((Decimal,))
_SIX_STORABLE: Final = re.compile(" ".join([r"-?\d{1,20}(?:\.\d{1,18})?"] * 6)).fullmatch
_adjusted: Final = Decimal.adjusted
