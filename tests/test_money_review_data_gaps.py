"""genai-prices data gaps: a part of a model's price its data lacks (audio rates, a long-context
tier) is not filled in from another source (one source per price, named by ``cost.source``);
the call is priced from genai-prices as before, and a warning names the gap once per model,
with LiteLLM's rates where its entry for the same model has them. A price book entry prices
such calls exactly."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from importlib.metadata import version

import pytest

from costledger import Pricer, Tracker, Usage, extract_usage
from costledger._logging import _reporter
from costledger._tracker import drain_deferred
from costledger.testing import InMemoryLedger

AT = datetime(2026, 12, 1, tzinfo=timezone.utc)
AUDIO_RESPONSE = {
    "model": "gpt-4o-audio-preview-2024-12-17",
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 2000,
        "prompt_tokens_details": {"audio_tokens": 600},
        "completion_tokens_details": {"audio_tokens": 1500},
    },
}
LONG = Usage(input_tokens=250_000, output_tokens=2_000)
GENAI = f"genai-prices {version('genai-prices')}"


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    """Each test sees its own once-per-process warnings."""
    drain_deferred()
    _reporter.reset()
    yield
    drain_deferred()


def _gap_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    drain_deferred()
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "costledger" and "(docs/pricing.md, Known data gaps)" in r.getMessage()
    ]


def test_audio_without_an_audio_rate_is_priced_as_before_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = Tracker(InMemoryLedger(), pricer=Pricer(), log="off")
    with caplog.at_level(logging.WARNING, logger="costledger"):
        for _ in range(3):
            event = tracker.record(
                "gpt-4o-audio-preview-2024-12-17", payload=AUDIO_RESPONSE, started_at=AT
            )
            # 1000 x $2.50 + 2000 x $10 per MTok: audio at the text rates (the data's gap)
            assert event.cost.total == Decimal("0.0225")
            assert event.cost.source == GENAI  # one source, not a mix
            drain_deferred()
    (line,) = _gap_lines(caplog)
    assert "has no audio rate for model 'gpt-4o-audio-preview-2024-12-17'" in line
    assert "(priced as 'gpt-4o-audio-preview')" in line
    assert "billed at the text rates ($2.5 / $10 per MTok)" in line
    assert "$40 per MTok of input audio / $80 per MTok of output audio" in line


def test_a_book_entry_prices_the_audio_exactly() -> None:
    book = {
        "gpt-4o-audio-preview-2024-12-17": {
            "input": "2.5",
            "output": "10",
            "input_audio": "40",
            "output_audio": "80",
        }
    }
    cost = Pricer(overrides=book).price(
        "gpt-4o-audio-preview-2024-12-17", extract_usage(AUDIO_RESPONSE), at=AT
    )
    # 400 x 2.5 + 600 x 40 + 500 x 10 + 1500 x 80, per MTok
    assert cost.total == Decimal("0.15")


def test_a_prompt_past_the_listed_window_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="costledger"):
        cost = Pricer().price("claude-sonnet-4-20250514", LONG, at=AT)
    assert cost.total == Decimal("0.78")  # 250000 x $3 + 2000 x $15, per MTok
    (line,) = _gap_lines(caplog)
    assert "a prompt of 250000 tokens is past the 200000-token context window" in line
    assert "model 'claude-sonnet-4-20250514' (priced as 'claude-sonnet-4-0')" in line
    book = {
        "claude-sonnet-4-20250514": {
            "input": "3",
            "output": "15",
            "cache_read": "0.3",
            "cache_write": "3.75",
            "cache_write_1h": "6",
            "tiers": [
                {
                    "above": 200_000,
                    "input": "6",
                    "output": "22.5",
                    "cache_read": "0.6",
                    "cache_write": "7.5",
                    "cache_write_1h": "12",
                }
            ],
        }
    }
    priced = Pricer(overrides=book).price("claude-sonnet-4-20250514", LONG, at=AT)
    assert priced.total == Decimal("1.545")  # 250000 x $6 + 2000 x $22.50, per MTok


def test_a_long_context_tier_litellm_lists_is_named(caplog: pytest.LogCaptureFixture) -> None:
    model = "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    with caplog.at_level(logging.WARNING, logger="costledger"):
        pricer = Pricer()
        below = pricer.price(model, Usage(input_tokens=150_000, output_tokens=2_000), at=AT)
        assert below.total == Decimal("0.528")  # 150000 x $3.30 + 2000 x $16.50
        assert _gap_lines(caplog) == []  # under the tier: nothing lacks
        cost = pricer.price(model, LONG, at=AT)
    assert cost.total == Decimal("0.858")  # 250000 x $3.30 + 2000 x $16.50, per MTok
    (line,) = _gap_lines(caplog)
    assert "has no long-context price for model" in line
    assert "$6.6 / $24.75 above 200000 tokens" in line
    book = {
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0": {
            "provider": "bedrock",
            "input": "3.3",
            "output": "16.5",
            "tiers": [{"above": 200_000, "input": "6.6", "output": "24.75"}],
        }
    }
    priced = Pricer(overrides=book).price(model, LONG, at=AT)
    assert priced.total == Decimal("1.6995")  # 250000 x $6.60 + 2000 x $24.75, per MTok


def test_no_gap_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    pricer = Pricer()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        # a long-context tier in the data
        assert pricer.price("claude-sonnet-4-5", LONG, at=AT).total == Decimal("1.545")
        # audio rates in the data
        realtime = Usage(1000, 300, input_audio_tokens=800, output_audio_tokens=200)
        assert pricer.price("gpt-realtime", realtime, at=AT).priced
        # LiteLLM's gemini-2.5-flash lists an audio-only "tier" above 200k that is cheaper
        # than its base audio rate: not a long-context price, never named as one
        flash = Usage(input_tokens=250_000, output_tokens=2_000, input_audio_tokens=1_000)
        # 249000 x $0.30 + 1000 x $1 (audio) + 2000 x $2.50, per MTok
        assert pricer.price("gemini-2.5-flash", flash, at=AT).total == Decimal("0.0807")
        # within the listed window
        assert pricer.price("gpt-4o", Usage(100_000, 2_000), at=AT).total == Decimal("0.27")
        drain_deferred()
        # and once looked up, the next calls are checked on the caller's thread
        assert pricer.price("gpt-4o", Usage(100_000, 2_000), at=AT).total == Decimal("0.27")
    assert _gap_lines(caplog) == []
