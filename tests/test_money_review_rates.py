"""The default sources' rates are cleaned of float noise and kept to 12 places per million
tokens (18 per token, the ledger's scale), so the cost the pricer computes is the cost stored,
reported and re-priced: a what-if with a book equal to the data saves exactly 0."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from costledger import Ledger, Pricer, Tracker, Usage, report, whatif
from costledger._pricing._card import RATE_PLACES, RateCard, RateTier, clean_rate

D = Decimal
AT = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
RATES = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "input_audio",
    "cache_audio_read",
    "output_audio",
    "reasoning",
)
CALLS = [
    ("gpt-5", "openai", Usage(10000, 3000, 8000, reasoning_tokens=2500)),
    (
        "claude-sonnet-4-5",
        "anthropic",
        Usage(203000, 1000, 20000, cache_write_tokens=3000, cache_write_1h_tokens=1000),
    ),
    ("gemini-2.5-pro", "google", Usage(250000, 3000, 100000, reasoning_tokens=2000)),
    ("gpt-4o-mini", "openai", Usage(7, 3)),
    # genai-prices lists 1.0399999999999998 per MTok (1.04, float noise)
    ("meta-llama/Llama-3.3-70B-Instruct", "huggingface_together", Usage(1234, 567)),
    # LiteLLM's 1.1428571428571428e-06 per token (8 CNY / 7): 1.142857142857 per MTok
    ("glm-5.3", "bigmodel", Usage(1234, 567, cache_write_tokens=100)),
]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("1.0399999999999998", "1.04"),
        ("0.18000000000000002", "0.18"),
        ("0.08333333333333334", "0.083333333333"),  # a twelfth: 12 places
        ("0.0833333333333333", "0.083333333333"),
        ("0.041666666666666664", "0.041666666667"),
        ("1.14285714285714", "1.142857142857"),
        ("0.15", "0.15"),  # as written: untouched, exponent kept
        ("2.50", "2.50"),
        ("12345.6789012345", "12345.6789012345"),  # 15 digits, 10 places
        ("0", "0"),
        ("1E-15", "1E-15"),  # never rounded to free
    ],
)
def test_clean_rate(raw: str, clean: str) -> None:
    cleaned = clean_rate(D(raw))
    assert str(cleaned) == clean


def test_noisy_genai_prices_rates_are_clean() -> None:
    pricer = Pricer(litellm=False)
    card = pricer.rate_card("meta-llama/Llama-3.3-70B-Instruct", provider="huggingface_together")
    assert card is not None
    if card.input == D("0.88"):  # genai-prices 0.1.x (Python 3.10): this rate had no noise
        pytest.skip("the installed genai-prices data predates the noisy rates")
    assert (card.input, card.output) == (D("1.04"), D("1.04"))
    cost = pricer.price(
        "meta-llama/Llama-3.3-70B-Instruct",
        Usage(1234, 567, cache_write_tokens=100),
        provider="huggingface_together",
    )
    assert cost.total == D("0.00187304")  # 1801 x 1.04 per MTok, exactly
    card = pricer.rate_card("google/gemini-2.5-flash-lite", provider="openrouter")
    assert card is not None
    assert card.cache_write == D("0.083333333333")


def _places(value: Decimal | None) -> int:
    if value is None:
        return 0
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _rate_places(card: RateCard) -> int:
    parts: list[RateCard | RateTier] = [card, *card.tiers]
    return max(_places(getattr(part, name)) for part in parts for name in RATES)


def test_every_default_rate_has_at_most_12_places() -> None:
    """Every card genai-prices and LiteLLM give: no rate past 12 places per MTok, no
    per-request fee past 18, so no cost past the ledger's 18 places."""
    from genai_prices.data import providers

    from costledger._pricing._genai import GenaiPrices, Match
    from costledger._pricing._litellm import LiteLLMPrices

    genai = GenaiPrices()
    genai.snapshot()
    checked = 0
    for provider in providers:
        for model in provider.models:
            match = Match(provider, model)
            if isinstance(model.prices, list):
                card = genai.timed(match, lambda c: c).card_at(AT)
            else:
                card = genai.compile_static(match)
            if card is None:
                continue
            assert _rate_places(card) <= RATE_PLACES, (provider.id, model.id, card)
            assert _places(card.request) <= 18, (provider.id, model.id)
            checked += 1
    litellm = LiteLLMPrices()
    for key, (listed, entry) in litellm._load().items():
        card = litellm.compile(listed, entry)
        if card is None:
            continue
        assert _rate_places(card) <= RATE_PLACES, (key, card)
        assert _places(card.request) <= 18, key
        checked += 1
    assert checked > 3000


def _book_of(card: RateCard, provider: str) -> dict[str, Any]:
    """A price book entry with exactly the card's rates."""

    def rates(part: RateCard | RateTier) -> dict[str, Any]:
        return {name: str(getattr(part, name)) for name in RATES if getattr(part, name) is not None}

    entry: dict[str, Any] = {**rates(card), "provider": provider}
    if card.request:
        entry["per_request"] = str(card.request)
    if card.tiers:
        entry["tiers"] = [{"above": tier.above, **rates(tier)} for tier in card.tiers]
    return entry


def test_stored_reported_and_whatif_amounts_equal_the_pricer(url: str) -> None:
    pricer = Pricer()
    with Ledger(url) as ledger:
        tracker = Tracker(ledger, pricer=pricer, log="off")
        priced = {}
        for i, (model, provider, usage) in enumerate(CALLS):
            event = tracker.record(
                model, usage, provider=provider, started_at=AT + timedelta(minutes=i)
            )
            assert event.cost.status == "priced", model
            assert _places(event.cost.total) <= 18, (model, event.cost.total)
            priced[event.id] = event.cost
        ledger.flush()
        for event_id, cost in priced.items():
            stored = ledger.get(event_id)
            assert stored is not None
            row = stored.to_event().cost
            for name in ("total", "input", "cache_read", "cache_write", "output", "audio"):
                assert getattr(row, name) == getattr(cost, name), (cost.model, name)
        total = sum((c.total for c in priced.values() if c.total is not None), D(0))
        (summary,) = report(ledger, since="2026-11-01", until="2026-12-01").totals
        assert summary.cost == total
        # A book that lists none of the models, and one equal to the data: no savings at all.
        unused = {"unused-model-x": {"input": 1, "output": 1}}
        same = {}
        for model, provider, _ in CALLS:
            card = pricer.rate_card(model, provider=provider, at=AT)
            assert card is not None
            same[model] = _book_of(card, provider)
        for book in (unused, same):
            result = whatif(ledger, book, since="2026-11-01", until="2026-12-01")
            for row in result.rows:
                assert (row.cost_then, row.savings, row.compared) == (row.cost_book, 0, 1), row
            (totals,) = result.totals
            assert (totals.cost_then, totals.cost_book, totals.savings) == (total, total, 0)
