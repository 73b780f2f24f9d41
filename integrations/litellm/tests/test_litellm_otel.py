"""LiteLLM calls with ``costledger.otel``: through the guarded wrapper, the span's parent is
the application's span current at the call, although LiteLLM logs on a thread of its own."""

from __future__ import annotations

from collections.abc import Iterator

import litellm
import pytest
from litellm_support import GPT_4O_MINI_10_IN_20_OUT, MESSAGES, Sentinel, litellm_isolated, offline
from opentelemetry.sdk.trace import TracerProvider

import costledger_litellm
from costledger._tracker import drain_deferred
from costledger.otel import CapturedSpans, capture_spans
from costledger.testing import CapturedCosts, capture_costs
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")


@pytest.fixture
def captured() -> Iterator[CapturedSpans]:
    with capture_spans() as spans:
        yield spans


def test_wrapped_completion_is_a_child_of_the_callers_span(
    captured: CapturedSpans,
) -> None:
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    app = TracerProvider().get_tracer("app")
    costs: CapturedCosts
    with capture_costs() as costs, app.start_as_current_span("POST /chat") as request:
        costledger_litellm.completion(
            model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="4"
        )
        sentinel.wait()
        drain_deferred()

    [event] = costs.events
    [span] = captured.spans
    parent = request.get_span_context()
    assert span.parent is not None
    assert span.parent.span_id == parent.span_id
    assert event.trace_id == format(parent.trace_id, "032x")
    attributes = span.attributes or {}
    assert attributes["costledger.source"] == "litellm"
    assert attributes["costledger.id"] == event.id
    assert attributes["gen_ai.usage.input_tokens"] == 10
    assert attributes["gen_ai.usage.output_tokens"] == 20
    assert attributes["costledger.cost.total"] == str(event.cost.total)
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
