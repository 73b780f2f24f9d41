"""OpenTelemetry: every tracked call as a span with its tokens and exact cost, in its trace.

::

    import costledger.otel

    costledger.otel.instrument()  # the global TracerProvider, or tracer_provider=...

From then on every call costledger records, through any entry point (LangChain,
LiteLLM, ``@track_cost``, the HTTP transport, ``Tracker.record``), is also one span:

- a child of the span that was current when the call *started* (the web request's,
  say), or a root span if there was none;
- named ``llm.usage {model}``, kind ``CLIENT``, starting when the call started and
  lasting its latency; status ``ERROR`` for a failed call;
- carrying the fields of the usage record (docs/log-schema.md: ``gen_ai.usage.*``
  token counts, ``gen_ai.provider.name``, the models, ``gen_ai.response.id``, the
  ``costledger.cost.*`` amounts as exact decimal strings, attribution), and the
  proposed ``gen_ai.usage.cost.amount`` / ``.currency`` / ``.source``
  (open-telemetry/semantic-conventions-genai#443).

The ledger row and log line of such a call get the trace's id as ``trace_id`` (32 hex
digits) unless the call was given one, so a row leads to its trace and back.

The span is made once costledger has priced the call, usually on its background
worker after the call returned; that is why it is a span of its own and not an
attribute on an instrumentation library's inference span (OpenLLMetry, OpenLIT),
which has ended before the price is known.

Needs the OpenTelemetry API (``pip install 'costledger[otel]'``); the SDK and an
exporter are the application's choice, as always with OpenTelemetry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - tested in a subprocess without it
    raise ImportError(
        "costledger.otel needs the OpenTelemetry API, which is not installed: "
        "pip install 'costledger[otel]'"
    ) from exc

from . import __version__
from ._events import UsageEvent
from ._redact import redact, redact_text
from ._schema import event_to_record
from ._tracker import Call, add_observer, drain_deferred, remove_observer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "SPAN_NAME",
    "CapturedSpans",
    "capture_spans",
    "instrument",
    "is_instrumented",
    "span_attributes",
    "uninstrument",
]

SPAN_NAME = "llm.usage"
"""Every span's name starts with this, then the model: ``llm.usage gpt-4o-mini``."""

# Not attributes: the record's envelope; its time and latency, which are the span's own
# start and duration; tags and metadata, shaped below.
_NOT_ATTRIBUTES = frozenset(
    (
        "event",
        "schema",
        "costledger.timestamp",
        "costledger.latency_ms",
        "costledger.tags",
        "costledger.price_context",
        "costledger.metadata",
    )
)
# Left out when zero or false: costledger's own extras, rare on most calls. The OTel
# token counts are always there (a backend summing them needs no missing-means-zero).
_OMITTED_WHEN_EMPTY = frozenset(
    (
        "costledger.usage.cache_write_1h.input_tokens",
        "costledger.usage.audio.input_tokens",
        "costledger.usage.audio.output_tokens",
        "costledger.streamed",
        "costledger.cache_hit",
    )
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = datetime.resolution
_NO_PARENT = otel_context.Context()  # a root span, whatever the worker thread's context holds


def span_attributes(event: UsageEvent) -> dict[str, AttributeValue]:
    """The span attributes of ``event``: its usage record's fields that have a value.

    Money stays an exact decimal string in ``costledger.cost.*``; only
    ``gen_ai.usage.cost.amount`` is a double, because the proposed convention types it
    so and tracing backends add numbers. Tags are a list of strings, metadata one
    JSON string (attribute values cannot nest), the price context one attribute per key
    (``costledger.price_context.service_tier``; an OpenAI call's tier also as
    ``openai.response.service_tier``). Scrubbed of secrets as the usage log line is (a
    model or id may echo the key a server was sent).
    """
    record: dict[str, Any] = redact(event_to_record(event))
    attributes: dict[str, AttributeValue] = {
        key: value
        for key, value in record.items()
        if value is not None
        and key not in _NOT_ATTRIBUTES
        and (value or key not in _OMITTED_WHEN_EMPTY)
    }
    if event.tags:
        attributes["costledger.tags"] = list(record["costledger.tags"])
    if event.metadata:
        attributes["costledger.metadata"] = json.dumps(
            record["costledger.metadata"], sort_keys=True, default=str
        )
    context: dict[str, str] = record.get("costledger.price_context") or {}
    for key, value in context.items():
        attributes[f"costledger.price_context.{key}"] = value
    tier = context.get("service_tier")
    if tier is not None and (event.provider or "").lower() in ("openai", "azure"):
        attributes["openai.response.service_tier"] = tier  # the GenAI OpenAI convention
    total = event.cost.total
    if total is not None:
        attributes["gen_ai.usage.cost.amount"] = float(total)
        attributes["gen_ai.usage.cost.currency"] = event.cost.currency
        # "local": costledger priced it; a provider's own figure is costledger.reported_cost
        attributes["gen_ai.usage.cost.source"] = "local"
    return attributes


def _nanoseconds(ts: datetime) -> int:
    # exact: a datetime holds whole microseconds, a float of seconds since 1970 does not
    return (ts - _EPOCH) // _MICROSECOND * 1000


class _SpanMaker:
    """The call observer ``instrument`` installs."""

    def __init__(self, tracer: Tracer, *, trace_ids: bool) -> None:
        self._tracer = tracer
        self._trace_ids = trace_ids

    def started(self, call: Call) -> None:
        # On the host's thread, inside the call's context: the one place the parent is known.
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid:
            call.trace_context = parent
            if self._trace_ids and call.trace_id is None:
                call.trace_id = format(parent.trace_id, "032x")

    def finished(self, call: Call, event: UsageEvent) -> None:
        parent = call.trace_context
        context = (
            trace.set_span_in_context(NonRecordingSpan(parent))
            if isinstance(parent, SpanContext)
            else _NO_PARENT
        )
        start = _nanoseconds(event.timestamp)
        model = event.response_model or event.model or "unknown"
        span = self._tracer.start_span(
            f"{SPAN_NAME} {redact_text(model)}",
            context=context,
            kind=SpanKind.CLIENT,
            attributes=span_attributes(event),
            start_time=start,
        )
        if event.status != "ok":
            span.set_status(Status(StatusCode.ERROR, event.error_type or event.status))
        span.end(end_time=start + round((event.latency_ms or 0.0) * 1_000_000))


_lock = threading.Lock()
_installed: _SpanMaker | None = None


def instrument(tracer_provider: TracerProvider | None = None, *, trace_ids: bool = True) -> None:
    """Make a span for every call costledger records from now on, in every thread.

    ``tracer_provider``: where the spans go (default: OpenTelemetry's global one,
    looked up when each span is made, so it may be set later). ``trace_ids=False``
    leaves events' ``trace_id`` alone. Calling it again replaces the earlier settings.
    """
    _install(_span_maker(tracer_provider, trace_ids=trace_ids))


def uninstrument() -> None:
    """Stop making spans; calls in flight get none either."""
    _install(None)


def _span_maker(provider: TracerProvider | None, *, trace_ids: bool) -> _SpanMaker:
    return _SpanMaker(trace.get_tracer("costledger", __version__, provider), trace_ids=trace_ids)


def _install(maker: _SpanMaker | None) -> _SpanMaker | None:
    """Put ``maker`` (or nothing) in place of the installed one; returns that one."""
    global _installed
    with _lock:
        previous, _installed = _installed, maker
        if previous is not None:
            remove_observer(previous)
        if maker is not None:
            add_observer(maker)
    return previous


def is_instrumented() -> bool:
    return _installed is not None


class CapturedSpans:
    """The spans ``capture_spans`` collected (``spans`` waits for calls still finishing)."""

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    @property
    def spans(self) -> list[ReadableSpan]:
        drain_deferred(10.0)
        return list(self._exporter.get_finished_spans())


@contextmanager
def capture_spans() -> Iterator[CapturedSpans]:
    """For tests: the spans costledger makes inside the block, in memory, on a private
    ``TracerProvider`` (the application's and OpenTelemetry's global one are not touched;
    an earlier ``instrument()`` is put back after). Needs ``opentelemetry-sdk``.

    >>> with costledger.otel.capture_spans() as captured:
    ...     my_llm_feature()
    >>> [span] = captured.spans
    >>> span.attributes["costledger.cost.total"]
    '0.00027000'
    """
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "costledger.otel.capture_spans needs the OpenTelemetry SDK: "
            "pip install opentelemetry-sdk"
        ) from exc
    drain_deferred(10.0)  # calls finished before the block are not its spans
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = _install(_span_maker(provider, trace_ids=True))
    try:
        yield CapturedSpans(exporter)
    finally:
        drain_deferred(10.0)
        _install(previous)
        provider.shutdown()
