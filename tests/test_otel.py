"""``costledger.otel``: a span per recorded call, with the real OpenTelemetry SDK."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import costledger.otel
from costledger import Tracker, Usage, attribute, track_cost
from costledger._tracker import drain_deferred
from costledger.otel import CapturedSpans, capture_spans
from costledger.testing import InMemoryLedger

from .test_tracker import GPT4O_MINI_1200_1024_300

USAGE = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024)
STARTED = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=timezone.utc)
STARTED_NS = 1772443815_123456_000  # STARTED in nanoseconds since 1970, exactly


@pytest.fixture
def captured() -> Iterator[CapturedSpans]:
    with capture_spans() as spans:
        yield spans


@pytest.fixture
def app_tracer() -> Any:
    """The application's own tracer, on a provider of its own: spans it starts are parents."""
    return TracerProvider().get_tracer("app")


@pytest.fixture
def tracker() -> Tracker:
    return Tracker(InMemoryLedger(), log="off")


def only_span(captured: CapturedSpans) -> ReadableSpan:
    (span,) = captured.spans
    return span


def test_a_recorded_call_is_a_child_span_with_its_exact_cost(
    captured: CapturedSpans, app_tracer: Any, tracker: Tracker
) -> None:
    with (
        app_tracer.start_as_current_span("POST /answer") as parent,
        attribute(user="u-7", feature="search", tags=["beta"], ticket="T-1"),
    ):
        event = tracker.record(
            "gpt-4o-mini",
            USAGE,
            provider="openai",
            response_model="gpt-4o-mini-2024-07-18",
            request_id="chatcmpl-1",
            started_at=STARTED,
            latency_ms=812.5,
        )
    assert event is not None
    span = only_span(captured)
    parent_context = parent.get_span_context()
    assert span.name == "llm.usage gpt-4o-mini-2024-07-18"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent_context.span_id
    assert span.context is not None
    assert span.context.trace_id == parent_context.trace_id
    assert span.start_time == STARTED_NS
    assert span.end_time == STARTED_NS + 812_500_000
    assert span.status.status_code is StatusCode.UNSET
    # The ledger row points at the trace.
    trace_id = format(parent_context.trace_id, "032x")
    assert event.trace_id == trace_id
    (stored,) = list(tracker.ledger.events())  # type: ignore[attr-defined]
    assert stored.trace_id == trace_id
    assert dict(span.attributes or {}) == {
        "costledger.id": event.id,
        "costledger.source": "api",
        "costledger.status": "ok",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.cache_write.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "costledger.cost.status": "priced",
        "costledger.cost.total": "0.000283200",
        "costledger.cost.input": "0.00002640",
        "costledger.cost.cache_read": "0.000076800",
        "costledger.cost.cache_write": "0",
        "costledger.cost.output": "0.0001800",
        "costledger.cost.audio": "0",
        "costledger.cost.currency": "USD",
        "costledger.cost.provider": "openai",
        "costledger.cost.model": event.cost.model,
        "costledger.cost.source": event.cost.source,
        "costledger.trace_id": trace_id,
        "costledger.user": "u-7",
        "costledger.feature": "search",
        "costledger.tags": ("beta",),
        "costledger.metadata": '{"ticket": "T-1"}',
        "gen_ai.usage.cost.amount": 0.0002832,
        "gen_ai.usage.cost.currency": "USD",
        "gen_ai.usage.cost.source": "local",
    }
    assert Decimal(span.attributes["costledger.cost.total"]) == GPT4O_MINI_1200_1024_300  # type: ignore[index, arg-type]


def test_a_call_outside_any_span_is_a_root_span_and_gets_no_invented_trace_id(
    captured: CapturedSpans, tracker: Tracker
) -> None:
    event = tracker.record("gpt-4o-mini", USAGE)
    assert event is not None
    assert event.trace_id is None
    span = only_span(captured)
    assert span.parent is None
    assert span.attributes is not None
    assert "costledger.trace_id" not in span.attributes


def test_a_given_trace_id_is_kept(
    captured: CapturedSpans, app_tracer: Any, tracker: Tracker
) -> None:
    with app_tracer.start_as_current_span("job"):
        call = tracker.start(source="api", model="gpt-4o-mini", trace_id="my-own-trace")
        event = tracker.finish(call, usage=USAGE)
    assert event is not None
    assert event.trace_id == "my-own-trace"
    assert only_span(captured).attributes["costledger.trace_id"] == "my-own-trace"  # type: ignore[index]


def test_trace_ids_false_leaves_events_alone_but_still_makes_child_spans(
    app_tracer: Any, tracker: Tracker
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    costledger.otel.instrument(provider, trace_ids=False)
    try:
        with app_tracer.start_as_current_span("job") as parent:
            event = tracker.record("gpt-4o-mini", USAGE)
    finally:
        costledger.otel.uninstrument()
    assert event is not None
    assert event.trace_id is None
    drain_deferred()
    (span,) = exporter.get_finished_spans()
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id


def test_a_failed_decorated_call_is_an_error_span_and_the_exception_is_unchanged(
    captured: CapturedSpans, app_tracer: Any, tracker: Tracker
) -> None:
    class ProviderDown(Exception):
        pass

    @track_cost(tracker=tracker, model="gpt-4o-mini", provider="openai")
    def ask() -> dict[str, Any]:
        raise ProviderDown("503")

    with app_tracer.start_as_current_span("job") as parent, pytest.raises(ProviderDown):
        ask()
    span = only_span(captured)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ProviderDown"
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes is not None
    assert span.attributes["costledger.status"] == "error"
    assert span.attributes["error.type"] == "ProviderDown"
    assert "gen_ai.usage.cost.amount" not in span.attributes  # nothing priced


def test_the_parent_is_the_span_current_at_the_start_even_when_finished_elsewhere(
    captured: CapturedSpans, app_tracer: Any, tracker: Tracker
) -> None:
    with app_tracer.start_as_current_span("request") as parent:
        call = tracker.start(source="api", model="gpt-4o-mini")
    # finished later, on another thread, outside the request's span
    done = threading.Thread(target=tracker.finish, args=(call,), kwargs={"usage": USAGE})
    done.start()
    done.join()
    span = only_span(captured)
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id


def test_unpriced_calls_carry_no_cost_amount(captured: CapturedSpans, tracker: Tracker) -> None:
    tracker.record("a-model-no-price-book-knows", USAGE)
    attributes = only_span(captured).attributes
    assert attributes is not None
    assert attributes["costledger.cost.status"] == "unknown_model"
    assert "costledger.cost.total" not in attributes
    assert "gen_ai.usage.cost.amount" not in attributes


def test_the_price_context_is_one_attribute_per_key(
    captured: CapturedSpans, tracker: Tracker
) -> None:
    tracker.record(
        "gpt-5",
        Usage(input_tokens=10_000, output_tokens=2_000),
        provider="openai",
        price_context={"service_tier": "flex"},
        started_at=datetime(2026, 12, 1, tzinfo=timezone.utc),
    )
    attributes = only_span(captured).attributes
    assert attributes is not None
    assert attributes["costledger.price_context.service_tier"] == "flex"
    assert attributes["openai.response.service_tier"] == "flex"
    assert "costledger.price_context" not in attributes
    assert attributes["costledger.cost.total"] == "0.016250000"  # gpt-5 flex: half price


def test_uninstrument_stops_the_spans(captured: CapturedSpans, tracker: Tracker) -> None:
    assert costledger.otel.is_instrumented()
    costledger.otel.uninstrument()
    assert not costledger.otel.is_instrumented()
    tracker.record("gpt-4o-mini", USAGE)
    assert captured.spans == []


def test_instrument_twice_makes_one_span_per_call(
    captured: CapturedSpans, tracker: Tracker
) -> None:
    second = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(second))
    costledger.otel.instrument(provider)  # replaces the fixture's
    tracker.record("gpt-4o-mini", USAGE)
    assert captured.spans == []
    assert len(second.get_finished_spans()) == 1


def test_a_broken_tracer_never_reaches_the_host(tracker: Tracker) -> None:
    class BrokenTracer:
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("tracer broke")

    costledger.otel.instrument(tracer_provider=None)
    costledger.otel._installed._tracer = BrokenTracer()  # type: ignore[union-attr]
    try:
        event = tracker.record("gpt-4o-mini", USAGE)
    finally:
        costledger.otel.uninstrument()
    assert event is not None
    assert event.cost.total == GPT4O_MINI_1200_1024_300
    assert len(list(tracker.ledger.events())) == 1  # type: ignore[attr-defined]


def test_metadata_is_one_json_string_with_secrets_scrubbed(
    captured: CapturedSpans, tracker: Tracker
) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 6 + "xQz"
    with attribute(note=f"called with {key}", nested={"a": [1, 2]}):
        tracker.record("gpt-4o-mini", USAGE)
    attributes = only_span(captured).attributes
    assert attributes is not None
    metadata = json.loads(str(attributes["costledger.metadata"]))
    assert metadata["nested"] == {"a": [1, 2]}
    assert "xQz" not in str(attributes)
    assert "A1b2C3d4" not in str(attributes)


def test_import_without_opentelemetry_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import costledger\n"
        "try:\n"
        "    import costledger.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == (
        "costledger.otel needs the OpenTelemetry API, which is not installed: "
        "pip install 'costledger[otel]'"
    )


def test_capture_spans_puts_the_applications_instrumentation_back(tracker: Tracker) -> None:
    mine = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mine))
    costledger.otel.instrument(provider)
    try:
        tracker.record("gpt-4o-mini", USAGE)  # before the block: not captured
        with capture_spans() as captured:
            tracker.record("gpt-4o-mini", USAGE)
        tracker.record("gpt-4o-mini", USAGE)  # after it: the application's again
        assert len(captured.spans) == 1
        drain_deferred()
        assert len(mine.get_finished_spans()) == 2
    finally:
        costledger.otel.uninstrument()
