"""LangChain calls with ``costledger.otel``: the span is made on costledger's worker, but
its parent is the application's span current when the model was invoked."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_fakes import SNAPSHOT, UsageChatModel
from opentelemetry.sdk.trace import TracerProvider

from costledger import Tracker
from costledger._tracker import drain_deferred
from costledger.otel import CapturedSpans, capture_spans
from costledger.testing import InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler


@pytest.fixture
def captured() -> Iterator[CapturedSpans]:
    with capture_spans() as spans:
        yield spans


def test_each_model_call_of_a_chain_is_a_child_of_the_request_span(
    captured: CapturedSpans,
) -> None:
    ledger = InMemoryLedger()
    handler = CostLedgerCallbackHandler(Tracker(ledger, log="off"))
    chain = ChatPromptTemplate.from_template("{q}") | UsageChatModel() | StrOutputParser()
    app = TracerProvider().get_tracer("app")

    with app.start_as_current_span("POST /ask") as request:
        chain.batch([{"q": "a"}, {"q": "b"}], config={"callbacks": [handler]})
    with app.start_as_current_span("POST /other") as other:
        chain.invoke({"q": "c"}, config={"callbacks": [handler]})
    drain_deferred()

    spans = captured.spans
    assert len(spans) == 3
    assert {span.name for span in spans} == {f"llm.usage {SNAPSHOT}"}
    parents = sorted(span.parent.span_id for span in spans if span.parent is not None)
    first, second = request.get_span_context(), other.get_span_context()
    assert parents == sorted([first.span_id, first.span_id, second.span_id])
    by_trace = {
        format(first.trace_id, "032x"): 2,
        format(second.trace_id, "032x"): 1,
    }
    stored = list(ledger.events())
    assert {t: sum(e.trace_id == t for e in stored) for t in by_trace} == by_trace
    for span in spans:
        attributes = span.attributes or {}
        assert attributes["costledger.source"] == "langchain"
        assert attributes["costledger.cost.total"] == "0.00027000"
        assert Decimal(str(attributes["costledger.cost.total"])) == Decimal("0.00027")
        assert attributes["gen_ai.usage.input_tokens"] == 1000
        assert attributes["gen_ai.usage.output_tokens"] == 200
        assert attributes["costledger.run_id"] is not None
