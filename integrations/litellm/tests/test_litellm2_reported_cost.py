"""LiteLLM's own price (``reported_cost``) on real LiteLLM calls: kept only when LiteLLM
has one, and compared only with a price LiteLLM could know.

* A model LiteLLM cannot price: LiteLLM sets ``kwargs["response_cost"] = None`` and
  ``response_cost_failure_debug_info``, leaving the payload's ``response_cost`` at a
  ``0.0`` placeholder. That is no price: ``reported_cost`` is None and no
  disagreement is logged, live and in ``costledger ingest``.
* A call priced from the user's price book: LiteLLM does not know that price, so the
  two are not compared (no warning), but LiteLLM's figure is still stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import litellm
import pytest
from litellm_support import (
    GPT_4O_MINI_10_IN_20_OUT,
    MESSAGES,
    Sentinel,
    litellm_isolated,
    offline,
)

from costledger import Pricer, Tracker, drain_deferred
from costledger._sources.litellm_payload import read_standard_logging_payload
from costledger.testing import CapturedCosts, InMemoryLedger
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

# Retired: LiteLLM 1.110's bundled price map no longer lists it; genai-prices does.
UNMAPPED = "claude-3-5-sonnet-20241022"
SONNET_IN, SONNET_OUT = Decimal("3"), Decimal("15")  # USD per million tokens


@pytest.fixture
def sentinel() -> Sentinel:
    return Sentinel()


@pytest.fixture
def fresh_warnings() -> Iterator[None]:
    """costledger's once-per-key warnings forgotten, so each test sees its own."""
    from costledger._logging import _reporter

    _reporter.reset()
    yield
    _reporter.reset()


def _disagreements(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if str(getattr(r, "costledger_warning", "")).startswith("litellm.cost_disagreement")
    ]


def _unmapped_call(sentinel: Sentinel) -> None:
    assert UNMAPPED not in litellm.model_cost  # the premise: LiteLLM cannot price it
    response = litellm.completion(
        model=f"anthropic/{UNMAPPED}",
        messages=[{"role": "user", "content": "hello"}],
        mock_response="hi there friend",
        api_key="sk-test-not-a-key",
    )
    assert response._hidden_params.get("response_cost") is None
    sentinel.wait()


def test_a_model_litellm_cannot_price_has_no_reported_cost_and_no_warning(
    costs: CapturedCosts,
    sentinel: Sentinel,
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: None,
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    with caplog.at_level(logging.WARNING, logger="costledger"):
        _unmapped_call(sentinel)

    _, kwargs, _, _, _ = sentinel.last
    slo = kwargs["standard_logging_object"]
    # what LiteLLM hands every logger for such a call
    assert kwargs["response_cost"] is None
    assert slo["response_cost"] == 0.0
    assert slo["response_cost_failure_debug_info"] is not None

    [event] = costs.events
    assert event.model == UNMAPPED
    assert event.reported_cost is None
    usage = event.usage
    expected = (
        Decimal(usage.input_tokens) * SONNET_IN + Decimal(usage.output_tokens) * SONNET_OUT
    ) / 10**6
    assert (usage.input_tokens, usage.output_tokens) == (10, 20)
    assert event.cost.total == expected == Decimal("0.000330")
    assert _disagreements(caplog) == []


def test_ingest_reads_litellm_s_placeholder_as_no_reported_cost(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    """The same call's payload as LiteLLM writes it to a log line, read by ``ingest``."""
    litellm.callbacks = [sentinel]
    _unmapped_call(sentinel)

    line = json.dumps(sentinel.last[1]["standard_logging_object"], default=str)
    call = read_standard_logging_payload(json.loads(line))

    assert call.reported_cost is None
    assert call.status == "ok"
    assert call.model == UNMAPPED


def test_ingest_keeps_litellm_s_price_when_it_has_one(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    litellm.callbacks = [sentinel]
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    sentinel.wait()

    slo = sentinel.last[1]["standard_logging_object"]
    assert slo["response_cost_failure_debug_info"] is None
    call = read_standard_logging_payload(json.loads(json.dumps(slo, default=str)))

    assert call.reported_cost == GPT_4O_MINI_10_IN_20_OUT


def test_a_real_disagreement_is_still_kept_and_logged(
    costs: CapturedCosts,
    sentinel: Sentinel,
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: None,
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    with caplog.at_level(logging.WARNING, logger="costledger"):
        # LiteLLM's custom pricing for this call: 10 * 1e-6 + 20 * 2e-6 = 0.00005
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="4",
            input_cost_per_token=1e-6,
            output_cost_per_token=2e-6,
        )
        sentinel.wait()

    [event] = costs.events
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert event.reported_cost is not None
    assert abs(event.reported_cost - Decimal("0.00005")) < Decimal("1e-15")
    [warning] = _disagreements(caplog)
    assert warning.costledger_warning == "litellm.cost_disagreement:openai:gpt-4o-mini"


def test_a_price_book_price_is_not_compared_with_litellm_s(
    costs: CapturedCosts, sentinel: Sentinel, caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    # a negotiated rate: $0.30 in, $1.20 out per million (LiteLLM lists $0.15 / $0.60)
    pricer = Pricer(overrides={"gpt-4o-mini": {"input": "0.30", "output": "1.20"}})
    ledger = InMemoryLedger()
    tracker = Tracker(ledger=ledger, pricer=pricer, log="off")
    litellm.callbacks = [CostLedgerLogger(tracker), sentinel]

    with caplog.at_level(logging.WARNING, logger="costledger"):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
        sentinel.wait()
        drain_deferred(10.0)

    [event] = costs.events
    [stored] = ledger.events()
    assert stored.reported_cost == GPT_4O_MINI_10_IN_20_OUT
    assert event.cost.total == Decimal("0.000027")  # 10 * 0.30 + 20 * 1.20, per million
    assert str(event.cost.source).startswith("override:")
    assert event.reported_cost == GPT_4O_MINI_10_IN_20_OUT  # LiteLLM's figure, still stored
    assert _disagreements(caplog) == []
