"""``capture_costs()``'s totals count as LangChain's ``tracking()`` totals and the reports
do: a cache hit's tokens (not billed) are not added, ``unpriced`` lists the calls no price
book knows (not a failed call that reported nothing), and the names ``CostTotals`` reads
(``total_cost``, ``requests``, ``errors``) are there too."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("costledger_langchain")

from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

import costledger
from costledger import Usage, report
from costledger.testing import capture_costs
from costledger_langchain import tracking

# gpt-4o-mini: 0.15 USD per million input tokens, 0.60 output.
COST_100_10 = Decimal("0.000021")


class _Fake(GenericFakeChatModel):
    @property
    def _llm_type(self) -> str:
        return "openai-chat"

    def _get_ls_params(self, stop: Any = None, **kwargs: Any) -> Any:
        return {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}


def _answers() -> Iterator[AIMessage]:
    while True:
        yield AIMessage(
            "hi",
            usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
            response_metadata={"model_name": "gpt-4o-mini"},
        )


@pytest.fixture
def cache() -> Iterator[None]:
    set_llm_cache(InMemoryCache())
    yield
    set_llm_cache(None)


@costledger.track_cost(model="gpt-4o-mini")
def _failing() -> dict[str, Any]:
    raise RuntimeError("provider down")


def test_capture_costs_counts_as_langchain_tracking_does(cache: None) -> None:
    model = _Fake(messages=_answers())
    with capture_costs() as costs, tracking() as totals:
        model.invoke("same prompt")
        model.invoke("same prompt")  # a LangChain cache hit: priced 0, tokens not billed
    assert [(e.cache_hit, e.usage.input_tokens, e.cost.total) for e in costs] == [
        (False, 100, COST_100_10),
        (True, 100, Decimal(0)),
    ]
    assert (costs.input_tokens, totals.input_tokens) == (100, 100)
    assert (costs.output_tokens, totals.output_tokens) == (10, 10)
    assert (costs.total_tokens, totals.total_tokens) == (110, 110)
    assert (costs.cache_hits, totals.cache_hits) == (1, 1)
    assert (costs.total_cost, totals.total_cost) == (COST_100_10, COST_100_10)
    assert costs.total == COST_100_10
    assert (costs.requests, totals.requests) == (2, 2)
    assert (costs.errors, totals.errors) == (0, 0)
    assert (costs.unpriced, totals.unpriced) == ([], 0)
    assert costs.by_model() == totals.by_model() == {"gpt-4o-mini": COST_100_10}


def test_a_failed_call_without_usage_is_an_error_not_unpriced() -> None:
    with capture_costs() as costs, pytest.raises(RuntimeError):
        _failing()
    (event,) = costs.events
    assert (event.status, event.cost.status, event.cost.total) == ("error", "not_priced", None)
    assert (costs.requests, costs.errors, costs.unpriced, costs.no_usage) == (1, 1, [], [])
    assert costs.total == Decimal(0)


def test_unpriced_and_no_usage_are_the_reports_counts() -> None:
    with capture_costs() as costs:
        tracker = costledger.get_tracker()
        tracker.record("our-own-model", Usage(10, 20))  # no price book knows it
        tracker.record("gpt-4o-mini", None)  # ran, reported no usage
        tracker.record("gpt-4o-mini", None, status="cancelled")
        tracker.record("gpt-4o-mini", None, status="error", error="timeout")
        tracker.record("gpt-4o-mini", Usage(100, 10))
        ledger = tracker.ledger
    assert [e.model for e in costs.unpriced] == ["our-own-model"]
    assert [e.status for e in costs.no_usage] == ["ok", "cancelled"]
    assert (costs.requests, costs.errors, costs.total) == (5, 2, COST_100_10)
    (row,) = report(ledger).totals
    assert (row.requests, row.unpriced, row.no_usage, row.cost) == (
        costs.requests,
        len(costs.unpriced),
        len(costs.no_usage),
        costs.total,
    )
