"""Perplexity's chat usage reports ``reasoning_tokens`` at the top level, BESIDE
``completion_tokens`` (and its ``total_tokens`` leaves them out), with ``citation_tokens``
and ``num_search_queries`` next to them. Its reasoning tokens are output billed at a rate
of their own ($3 / MTok on ``sonar-deep-research`` against $8 for the completion).

They used to be read as a part of ``completion_tokens``: a deep-research call whose
reasoning outnumbered its completion (the usual case) failed the usage check and was
stored with no tokens and no cost; a smaller one was priced without its reasoning.
Real OpenAI SDK through costledger's transport against a local server; real SQLite.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from costledger import Ledger, Tracker, Usage, drain_deferred, extract_usage
from costledger.http import TrackingTransport
from tests._fake_provider import FakeProvider, Reply, chat_completion

pytestmark = pytest.mark.usefixtures("fresh_provider")

# sonar-deep-research, USD per token (genai-prices): input $2, output $8, reasoning $3 / MTok
INPUT, OUTPUT, REASONING = Decimal(2) / 10**6, Decimal(8) / 10**6, Decimal(3) / 10**6


def _usage(reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": 7,
        "completion_tokens": 3946,
        "total_tokens": 3953,  # prompt + completion: reasoning and citations are beside
        "citation_tokens": 7142,
        "num_search_queries": 20,
        "reasoning_tokens": reasoning,
    }


@pytest.mark.parametrize("reasoning", [85473, 1000])
def test_perplexity_reasoning_is_output_beside_the_completion(
    provider: FakeProvider, tmp_path: Path, reasoning: int
) -> None:
    body = chat_completion("sonar-deep-research", usage=_usage(reasoning))
    provider.enqueue("/chat/completions", Reply(json=body))
    ledger = Ledger(f"sqlite:///{tmp_path}/costs.db")
    tracker = Tracker(ledger, log="off")
    transport = TrackingTransport(tracker=tracker, provider="perplexity")
    client = openai.OpenAI(
        api_key="pplx-test",
        base_url=provider.openai_url,
        http_client=httpx.Client(transport=transport),
    )
    client.chat.completions.create(
        model="sonar-deep-research", messages=[{"role": "user", "content": "q"}]
    )
    drain_deferred()
    ledger.flush()
    [event] = list(ledger.events())
    assert (event.input_tokens, event.output_tokens, event.reasoning_tokens) == (
        7,
        3946 + reasoning,
        reasoning,
    )
    # Citation tokens and searches are not part of a token Cost (docs/pricing.md, Limits)
    assert event.pricing_status == "priced"
    assert event.total_cost == 7 * INPUT + 3946 * OUTPUT + reasoning * REASONING
    assert event.total_cost == {85473: Decimal("0.288001"), 1000: Decimal("0.034582")}[reasoning]
    ledger.close()


def test_a_gateway_top_level_reasoning_without_perplexity_keys_stays_inside() -> None:
    # The rule for other gateways is unchanged: reasoning is a part of completion_tokens
    usage = extract_usage({"prompt_tokens": 10, "completion_tokens": 50, "reasoning_tokens": 20})
    assert usage == Usage(input_tokens=10, output_tokens=50, reasoning_tokens=20)


def test_perplexity_without_reasoning_is_read_as_chat() -> None:
    usage = extract_usage({"prompt_tokens": 10, "completion_tokens": 50, "citation_tokens": 9})
    assert usage == Usage(input_tokens=10, output_tokens=50)
