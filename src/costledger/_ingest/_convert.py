"""One parsed log line -> one ledger row, whatever the line's format.

Three formats, told apart by their keys (see ``detect``):

* ``costledger``: a ``costledger.usage/1`` record (``UsageLogger``'s lines, possibly
  with keys an application's structlog chain added). Kept as logged, cost included.
* ``litellm``: LiteLLM's ``StandardLoggingPayload`` (``_sources.litellm_payload``), or
  a record holding one under ``standard_logging_object``. Priced here.
* ``response``: a provider's raw response (OpenAI chat / Responses / embeddings,
  Anthropic message, Gemini, ...), read by ``read_response``. Priced here.

A row is the tuple ``Store.params`` makes of a ``UsageEvent`` for SQLite (the
PostgreSQL form is derived from it by ``to_postgresql``). It is built straight from
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
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from .._attribution import Attribution
from .._cost import Cost
from .._errors import UsageError
from .._extract import read_response
from .._ledger._rows import COLUMNS
from .._redact import redact
from .._schema import (
    RECORD_FIELDS,
    USAGE_EVENT_NAME,
    USAGE_SCHEMA,
    USAGE_SCHEMA_PREFIX,
    _has_huge_float,
    event_from_record,
)
from .._sources.litellm_payload import is_standard_logging_payload, read_standard_logging_payload
from .._usage import Usage

if TYPE_CHECKING:
    from .._pricing import Pricer

__all__ = [
    "FORMATS",
    "INGEST_NAMESPACE",
    "Converter",
    "Row",
    "detect",
    "response_event_id",
    "to_postgresql",
]

Row = tuple[Any, ...]
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


_INT_ONLY: Final = frozenset((int,))
_TEXT_OR_NONE: Final = frozenset((str, type(None)))


def _count(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is not int:
        raise _Fallback
    return value


class _Fallback(Exception):
    """The line is not of the common shape: read it with the canonical reader instead."""


def detect(record: Mapping[str, Any]) -> str:
    """The format of a parsed line: ``costledger``, ``litellm`` or ``response``."""
    if "schema" in record or record.get("event") == USAGE_EVENT_NAME:
        return "costledger"
    if is_standard_logging_payload(record) or "standard_logging_object" in record:
        return "litellm"
    return "response"


def response_event_id(response_id: str | None, line: bytes, line_no: int) -> str:
    """The event id of a raw response: derived from the provider's response id, so the
    same response ingested again (from any file) is the same event. A response without
    an id is identified by its bytes and line number instead: ingesting the same file
    again adds nothing, while two identical id-less responses on different lines stay
    two calls."""
    if response_id:
        return _uuid5("response:" + response_id)
    digest = hashlib.sha256(line).hexdigest()
    return _uuid5(f"line:{digest}:{line_no}")


_NAMESPACE_BYTES: Final = INGEST_NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(INGEST_NAMESPACE, name))`` without building a ``UUID`` (3x faster)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _store_helpers() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    from .._ledger._money import MONEY_PRECISION, MONEY_SCALE
    from .._ledger._store import _json, _text_money, sqlite_params

    if (  # pragma: no cover - a change of the ledger's schema must update this module
        MONEY_SCALE != _MONEY_SCALE or MONEY_PRECISION - MONEY_SCALE - 1 != _MAX_ADJUSTED
    ):
        raise RuntimeError("costledger ingest: the ledger's columns changed; update _convert")
    return _text_money, _json, sqlite_params


class Converter:
    """Turns parsed lines into rows: prices what needs a price, with one ``Pricer``.

    ``now`` is the time given to raw responses that carry none (Anthropic messages,
    embeddings): the ingestion's start, the same for every line of a run.
    """

    def __init__(self, pricer: Pricer, *, now: datetime | None = None) -> None:
        self.pricer = pricer
        self.now = now or datetime.now(_UTC)
        self._money_text, self._json, self._sqlite_params = _store_helpers()
        self.counts: dict[str, int] = dict.fromkeys(FORMATS, 0)
        """Lines converted, per format, since this converter was made."""

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
        then decides, and words the error). Written out field by field: it runs for every
        line, and a loop over the keys costs a third more.
        """
        get = record.get
        if get("schema") != USAGE_SCHEMA or get("event", USAGE_EVENT_NAME) != USAGE_EVENT_NAME:
            raise _Fallback
        if record.keys() != _RECORD_KEYS:  # an application's extra keys, or missing ones
            for key in record.keys() - _RECORD_KEYS:
                if key.startswith("costledger."):
                    raise _Fallback
        event_id = get("costledger.id")
        if type(event_id) is not str or not event_id:
            raise _Fallback
        ts = get("costledger.timestamp")
        if type(ts) is not str or _WRITER_TIMESTAMP.fullmatch(ts) is None:
            raise _Fallback
        try:
            datetime.fromisoformat(ts[:-1])  # a real date and time, not just the right shape
        except ValueError:
            raise _Fallback from None

        tokens: tuple[Any, ...] = (
            get("gen_ai.usage.input_tokens"),
            get("gen_ai.usage.output_tokens"),
            get("gen_ai.usage.cache_read.input_tokens"),
            get("gen_ai.usage.cache_write.input_tokens"),
            get("costledger.usage.cache_write_1h.input_tokens"),
            get("gen_ai.usage.reasoning.output_tokens"),
            get("costledger.usage.audio.input_tokens"),
            get("costledger.usage.audio.output_tokens"),
        )
        if {*map(type, tokens)} != _INT_ONLY:
            tokens = tuple(_count(value) for value in tokens)
        n_in, n_out, n_cr, n_cw, n_cw1h, n_reason, n_ain, n_aout = tokens
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
        ):
            raise _Fallback

        provider = get("gen_ai.provider.name")
        model = get("gen_ai.request.model")
        response_model = get("gen_ai.response.model")
        error_type = get("error.type")
        request_id = get("gen_ai.response.id")
        trace_id = get("costledger.trace_id")
        run_id = get("costledger.run_id")
        parent_run_id = get("costledger.parent_run_id")
        user = get("costledger.user")
        team = get("costledger.team")
        project = get("costledger.project")
        feature = get("costledger.feature")
        cost_source = get("costledger.cost.source")
        cost_model = get("costledger.cost.model")
        cost_provider = get("costledger.cost.provider")
        if (
            not {
                *map(
                    type,
                    (
                        provider,
                        model,
                        response_model,
                        error_type,
                        request_id,
                        trace_id,
                        run_id,
                        parent_run_id,
                        user,
                        team,
                        project,
                        feature,
                        cost_source,
                        cost_model,
                        cost_provider,
                    ),
                )
            }
            <= _TEXT_OR_NONE
        ):
            raise _Fallback
        source = get("costledger.source")
        if source is None:
            source = "api"
        elif type(source) is not str:
            raise _Fallback
        status = get("costledger.status", "ok")
        cost_status = get("costledger.cost.status")
        if status not in _STATUSES or cost_status not in _PRICING_STATUSES:
            raise _Fallback
        currency = get("costledger.cost.currency")
        if currency is None:
            currency = "USD"
        elif type(currency) is not str:
            raise _Fallback
        latency = get("costledger.latency_ms")
        if latency is not None:
            kind = type(latency)
            if kind is float:
                if latency != latency or latency in (_INF, -_INF):
                    raise _Fallback
            elif kind is int:
                latency = float(latency)
            else:
                raise _Fallback
        tags = get("costledger.tags")
        if not tags:
            if tags is not None and tags != []:
                raise _Fallback
            tags_text = "[]"
        elif type(tags) is list and all(type(t) is str for t in tags):
            tags_text = self._json(tags, "[]")
        else:
            raise _Fallback
        meta = get("costledger.metadata")
        if not meta:
            if meta is not None and meta != {}:
                raise _Fallback
            meta_text = "{}"
        elif type(meta) is dict:
            if _has_huge_float(meta):
                raise _Fallback  # an integer orjson could only read as a float
            meta_text = self._json(redact(meta), "{}")
        else:
            raise _Fallback
        streamed = get("costledger.streamed")
        cache_hit = get("costledger.cache_hit")
        if streamed is None:
            streamed = False
        if cache_hit is None:
            cache_hit = False
        if type(streamed) is not bool or type(cache_hit) is not bool:
            raise _Fallback

        canonical = _CANONICAL_MONEY.fullmatch
        money = self._money
        total = get("costledger.cost.total")
        if total is not None and (type(total) is not str or canonical(total) is None):
            total = money(total, "cost.total")
        c_in = get("costledger.cost.input")
        if c_in is not None and (type(c_in) is not str or canonical(c_in) is None):
            c_in = money(c_in, "cost.input")
        c_cr = get("costledger.cost.cache_read")
        if c_cr is not None and (type(c_cr) is not str or canonical(c_cr) is None):
            c_cr = money(c_cr, "cost.cache_read")
        c_cw = get("costledger.cost.cache_write")
        if c_cw is not None and (type(c_cw) is not str or canonical(c_cw) is None):
            c_cw = money(c_cw, "cost.cache_write")
        c_out = get("costledger.cost.output")
        if c_out is not None and (type(c_out) is not str or canonical(c_out) is None):
            c_out = money(c_out, "cost.output")
        c_audio = get("costledger.cost.audio")
        if c_audio is not None and (type(c_audio) is not str or canonical(c_audio) is None):
            c_audio = money(c_audio, "cost.audio")
        reported = get("costledger.reported_cost")
        if reported is not None and (type(reported) is not str or canonical(reported) is None):
            reported = money(reported, "reported_cost")
        return (
            event_id,
            ts[:-1] + "+00:00",
            source,
            provider,
            model,
            response_model,
            status,
            error_type,
            latency,
            request_id,
            trace_id,
            run_id,
            parent_run_id,
            user,
            team,
            project,
            feature,
            tags_text,
            meta_text,
            1 if streamed else 0,
            1 if cache_hit else 0,
            n_in,
            n_out,
            n_cr,
            n_cw,
            n_cw1h,
            n_reason,
            n_ain,
            n_aout,
            cost_status,
            currency,
            total,
            c_in,
            c_cr,
            c_cw,
            c_out,
            c_audio,
            cost_source,
            cost_model,
            cost_provider,
            reported,
        )

    def _money(self, value: Any, field: str) -> str | None:
        if value is None:
            return None
        if type(value) is not str:
            raise _Fallback
        if _CANONICAL_MONEY.fullmatch(value) is not None:
            return value
        if _DECIMAL_TEXT.fullmatch(value) is None:
            raise _Fallback
        text: str | None = self._money_text(field, Decimal(value))
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
        row: Row = self._sqlite_params(event)
        return row

    # -- LiteLLM ---------------------------------------------------------------------------
    def litellm(self, payload: dict[str, Any]) -> Row:
        """A ``StandardLoggingPayload``, as ``CostLedgerLogger`` would have recorded it."""
        call = read_standard_logging_payload(payload)
        at = call.started_at
        if at is None:  # pragma: no cover - read_standard_logging_payload requires startTime
            at = self.now
        model = call.model or call.response_model
        usage: Usage | None = None
        if call.usage is not None:
            usage = read_response(call.usage, provider="litellm").usage
        if usage is None:
            usage = _NO_USAGE
            cost = Cost(status="not_priced", model=model, provider=call.provider)
        elif call.cache_hit:
            cost = Cost.zero(model=model, provider=call.provider, source="cache hit")
        else:
            cost = self.pricer.price(
                call.response_model or model or "", usage, provider=call.provider, at=at
            )
        attribution = Attribution.from_mapping(call.attribution) if call.attribution else None
        meta: Mapping[str, Any] = call.metadata
        if attribution is not None and attribution.metadata:
            meta = {**attribution.metadata, **meta}
        return self.row(
            event_id=call.call_id,
            at=at,
            source="litellm",
            provider=call.provider,
            model=model,
            response_model=call.response_model,
            status=call.status,
            error_type=call.error_type,
            latency_ms=None if call.latency_ms is None else round(call.latency_ms, 3),
            request_id=call.request_id,
            attribution=attribution,
            metadata=meta,
            streamed=call.streamed,
            cache_hit=call.cache_hit,
            usage=usage,
            cost=cost,
            reported_cost=call.reported_cost,
        )

    # -- raw provider responses ------------------------------------------------------------
    def response(self, record: dict[str, Any], line: bytes, line_no: int) -> Row:
        """A provider's response (the whole JSON body, one per line)."""
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
        for key in ("created", "created_at"):
            created = record.get(key)
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
        cost = self.pricer.price(model or "", info.usage, provider=provider, at=at)
        return self.row(
            event_id=response_event_id(info.response_id, line, line_no),
            at=at,
            source="ingest",
            provider=provider,
            model=model,
            response_model=model,
            status="ok",
            error_type=None,
            latency_ms=None,
            request_id=info.response_id,
            attribution=None,
            metadata={},
            streamed=False,
            cache_hit=False,
            usage=info.usage,
            cost=cost,
            reported_cost=None,
        )

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
    ) -> Row:
        """What ``sqlite_params`` gives for the event the Tracker builds from these values."""
        money = self._decimal_text
        text_json = self._json
        if metadata:
            metadata = redact(dict(metadata))
        a = attribution
        return (
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
            "[]" if a is None or not a.tags else text_json(list(a.tags), "[]"),
            text_json(dict(metadata), "{}") if metadata else "{}",
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
            money("cost.total", cost.total),
            money("cost.input", cost.input),
            money("cost.cache_read", cost.cache_read),
            money("cost.cache_write", cost.cache_write),
            money("cost.output", cost.output),
            money("cost.audio", cost.audio),
            cost.source,
            cost.model,
            cost.provider,
            money("reported_cost", reported_cost),
        )

    def _decimal_text(self, field: str, amount: Decimal | None) -> str | None:
        """``_text_money(field, amount)`` (the ledger's storage text of an amount), with its
        common case, a finite amount of at most 18 places below 10**20, inline."""
        if amount is None:
            return None
        text = format(amount, "f")
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


def to_postgresql(row: Row) -> Row:
    """The PostgreSQL form (``postgresql_params``) of a SQLite-form row."""
    values = list(row)
    ts: str = values[I_TIMESTAMP]
    if ts[20:26] == "000000":  # datetime.isoformat() leaves out zero microseconds
        values[I_TIMESTAMP] = ts[:19] + ts[26:]
    values[I_TAGS] = json.loads(values[I_TAGS])
    values[I_METADATA] = json.loads(values[I_METADATA])
    values[I_STREAMED] = bool(values[I_STREAMED])
    values[I_CACHE_HIT] = bool(values[I_CACHE_HIT])
    return tuple(values)
