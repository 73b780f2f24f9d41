"""A call with no amount to price (failed without usage, a cache hit) is recorded in the
currency its model is priced in, not always USD: a ledger priced in EUR held USD rows of
no amount, for which ``report --currency EUR`` asked a USD rate. And a tool billed per
call is priced from a price book entry with a ``per_request`` fee (docs/tracker.md)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from costledger import Ledger, Pricer, Tracker, Usage
from costledger.testing import InMemoryLedger

EUR_BOOK = {"gpt-4o-mini": {"input": "0.14", "output": "0.55", "currency": "EUR"}}


def test_a_cost_less_call_is_in_its_models_currency(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'eur.db'}", sync=True)
    tracker = Tracker(ledger, Pricer(overrides=EUR_BOOK), log="off")
    tracker.record("gpt-4o-mini", Usage(1000, 100))
    tracker.record("gpt-4o-mini", None, status="error", error="timeout")
    tracker.record("gpt-4o-mini", Usage(1000, 100), cache_hit=True)
    tracker.record("gpt-4o", None, status="error", error="timeout")  # priced in USD
    tracker.record("our-own-model", None, status="error", error="timeout")  # no price: USD
    rows = [(e.model, e.pricing_status, e.currency, e.total_cost) for e in ledger.events()]
    assert sorted(rows, key=str) == sorted(
        [
            ("gpt-4o-mini", "priced", "EUR", Decimal("0.000195")),  # 1000 x 0.14 + 100 x 0.55
            ("gpt-4o-mini", "not_priced", "EUR", None),
            ("gpt-4o-mini", "priced", "EUR", Decimal("0")),
            ("gpt-4o", "not_priced", "USD", None),
            ("our-own-model", "not_priced", "USD", None),
        ],
        key=str,
    )
    ledger.close()


def test_a_pricer_without_rate_cards_gives_usd() -> None:
    class FlatPricer:
        def price(self, model: str, usage: Usage, **kwargs: object) -> object:
            return Pricer(overrides=EUR_BOOK).price(model, usage, **kwargs)  # type: ignore[arg-type]

    tracker = Tracker(InMemoryLedger(), FlatPricer(), log="off")  # type: ignore[arg-type]
    event = tracker.record("gpt-4o-mini", None, status="error", error="timeout")
    assert (event.cost.status, event.cost.currency) == ("not_priced", "USD")


def test_a_tool_billed_per_call_is_priced_by_a_per_request_fee() -> None:
    pricer = Pricer(overrides={"web-search": {"input": 0, "output": 0, "per_request": "0.005"}})
    tracker = Tracker(InMemoryLedger(), pricer, log="off")
    event = tracker.record("web-search", Usage())
    assert (event.cost.status, event.cost.total, event.cost.request) == (
        "priced",
        Decimal("0.005"),
        Decimal("0.005"),
    )
