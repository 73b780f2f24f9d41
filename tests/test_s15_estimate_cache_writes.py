"""A budget's worst case counts a prompt that is written to the cache whole: Anthropic
bills cache writes at 1.25x (five minutes) and 2x (one hour) its input rate, so concurrent
calls whose prompts are cached could spend past a hard budget when each was reserved at
the plain input rate (31 calls admitted against a $1 budget spent $1.5345)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costledger import Budget, BudgetExceeded, Tracker, Usage
from costledger.testing import InMemoryLedger, MemoryStore

PROMPT = "word " * 8000


def test_concurrent_cache_writing_calls_stay_within_a_hard_budget() -> None:
    budget = Budget("1 USD", "day", name="cache-writes")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    calls = []

    def start() -> None:
        calls.append(
            tracker.start(
                source="test",
                model="claude-sonnet-4-5",
                provider="anthropic",
                prompt_text=PROMPT,
                max_output_tokens=100,
            )
        )

    with pytest.raises(BudgetExceeded):  # noqa: PT012 - admitted until the first refusal
        for _ in range(100):
            start()
    # each answered with its whole prompt written to the one-hour cache
    usage = Usage(
        input_tokens=8000, cache_write_tokens=8000, cache_write_1h_tokens=8000, output_tokens=100
    )
    for call in calls:
        tracker.finish(call, usage=usage)
    [status] = budget.status(tracker)
    # 8000 x $6 + 100 x $15 per MTok = $0.0495 a call
    assert status.spent == len(calls) * Decimal("0.0495")
    assert status.spent <= Decimal(1)
    assert status.reserved == 0


def test_a_card_without_dearer_rates_reserves_its_input_rate() -> None:
    from costledger import Pricer

    card = Pricer.default().rate_card("gpt-4o-mini")
    assert card is not None
    # $0.15 input (no cache-write premium), $0.60 output per MTok
    assert card.estimate(1_000_000, 1_000_000) == Decimal("0.75")
