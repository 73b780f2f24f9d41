"""A LiteLLM call served at a service tier is priced at that tier's price (real
``litellm.completion``; the mock response carries the provider's ``service_tier``)."""

from __future__ import annotations

from decimal import Decimal

import litellm
import pytest
from litellm import ModelResponse
from litellm_support import MESSAGES, Sentinel, litellm_isolated, offline

from costledger import Usage
from costledger.testing import CapturedCosts
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")


def _served_at(tier: str) -> ModelResponse:
    return ModelResponse(
        model="gpt-5",
        choices=[{"index": 0, "message": {"role": "assistant", "content": "4"}}],
        usage={"prompt_tokens": 10_000, "completion_tokens": 2_000, "total_tokens": 12_000},
        service_tier=tier,
    )


@pytest.mark.parametrize(("tier", "total"), [("priority", "0.065"), ("flex", "0.01625")])
def test_the_tier_litellm_reports_prices_the_call(
    costs: CapturedCosts, tier: str, total: str
) -> None:
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    litellm.completion(model="gpt-5", messages=MESSAGES, mock_response=_served_at(tier))
    sentinel.wait()
    [event] = costs.events
    assert event.usage == Usage(input_tokens=10_000, output_tokens=2_000)
    assert dict(event.price_context) == {"service_tier": tier}
    # gpt-5 at $1.25 / $10 per MTok: priority twice that, flex half (genai-prices)
    assert event.cost.total == Decimal(total)
