"""A money budget never counts an amount in another currency as if it were its own: a
budget whose currency the tracker's pricer never prices in is refused when the tracker is
made; a call to a model priced in another currency fails the budget's check (a hard budget
refuses it); a cost or ledger spend in another currency that still reaches it is logged,
naming both currencies."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from costledger import Budget, BudgetCheckFailed, BudgetExceeded, Tracker, Usage
from costledger._ledger import InMemoryLedger
from costledger._logging import _reporter
from costledger._pricing import Pricer
from costledger.testing import MemoryStore

# 1,000 input tokens = 0.01; 1,000 output tokens = 0.02, in each model's currency
USD_BOOK = {"m": {"input": "10", "output": "20"}}
MIXED_BOOK = {
    "m": {"input": "10", "output": "20"},
    "e": {"input": "10", "output": "20", "currency": "EUR"},
}


@pytest.fixture(autouse=True)
def _fresh_reporter() -> None:
    _reporter.reset()  # failures are logged once a minute per kind: each test sees its own


def _tracker(budget: Budget, book: dict[str, dict[str, str]], ledger: object = None) -> Tracker:
    pricer = Pricer(book, genai_prices=False, litellm=False)
    return Tracker(
        ledger or InMemoryLedger(), pricer, [budget], guard_store=MemoryStore(), log="off"
    )


def _spent(budget: Budget, tracker: Tracker) -> Decimal:
    (row,) = budget.status(tracker)
    return row.spent


def test_a_budget_in_a_currency_the_pricer_never_prices_in_is_refused_at_once() -> None:
    with pytest.raises(ValueError) as info:
        _tracker(Budget("1 EUR", "month", name="eur"), USD_BOOK)
    assert str(info.value) == (
        "budget 'eur' counts EUR, but this tracker's pricer prices in USD only, so the budget"
        " could count none of its calls; give the budget a limit in USD, or price the models"
        " in EUR with a price book (currency = 'EUR')"
    )


def test_a_call_priced_in_another_currency_is_refused_by_a_hard_budget() -> None:
    budget = Budget("1 EUR", "month", name="eur")
    tracker = _tracker(budget, MIXED_BOOK)  # prices in USD and EUR: not refused
    with pytest.raises(BudgetCheckFailed) as info:
        tracker.start(source="api", model="m", max_output_tokens=100_000, prompt_text="x" * 4000)
    assert str(info.value) == (
        "budget 'eur' could not check this call: CurrencyMismatch: model 'm' is priced in USD,"
        " but budget 'eur' counts EUR: an amount in another currency cannot be counted against"
        " it; give the budget a limit in USD, or price the model in EUR with a price book; it"
        " fails closed, so the call is refused"
    )
    # a model priced in the budget's currency is counted to the last digit, and refused
    # once its worst case no longer fits (it was 0.10 each before, whatever the cost)
    kw = {"source": "api", "model": "e", "max_output_tokens": 20_000, "prompt_text": "x" * 4000}
    tracker.finish(tracker.start(**kw), usage=Usage(input_tokens=1000, output_tokens=20_000))
    assert _spent(budget, tracker) == Decimal("0.41")
    tracker.finish(tracker.start(**kw), usage=Usage(input_tokens=1000, output_tokens=20_000))
    assert _spent(budget, tracker) == Decimal("0.82")
    with pytest.raises(BudgetExceeded):
        tracker.start(**kw)  # worst case 0.402096 EUR: over the 0.18 left


def test_a_soft_budget_lets_such_a_call_through_and_logs_both_currencies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = Budget("1 EUR", "month", name="eur-soft", hard=False)
    tracker = _tracker(budget, MIXED_BOOK)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        event = tracker.finish(
            tracker.start(source="api", model="m"), usage=Usage(input_tokens=1000)
        )
    assert event is not None
    assert (event.cost.total, event.cost.currency) == (Decimal("0.01"), "USD")
    text = caplog.text
    assert "model 'm' is priced in USD, but budget 'eur-soft' counts EUR" in text
    assert (
        "the cost of a call to 'm' (0.010000) is in USD, but budget 'eur-soft' counts EUR" in text
    )
    assert _spent(budget, tracker) == 0  # not counted as euros: logged instead


def test_a_cost_in_another_currency_counts_as_its_reservation_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # an explicit estimate skips the model's card: the mismatch is seen when it settles
    budget = Budget("1 EUR", "month", name="eur-explicit")
    tracker = _tracker(budget, MIXED_BOOK)
    call = tracker.start(source="api", model="m", estimate=Decimal("0.25"))
    with caplog.at_level(logging.WARNING, logger="costledger"):
        tracker.finish(call, usage=Usage(input_tokens=201_000))  # 2.01 USD
    assert _spent(budget, tracker) == Decimal("0.25")  # the worst case it agreed to
    assert (
        "the cost of a call to 'm' (2.010000) is in USD, but budget 'eur-explicit' counts EUR"
        in caplog.text
    )
    assert "counted=0.25" in caplog.text


def test_ledger_spend_in_another_currency_is_logged_when_a_counter_is_seeded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = InMemoryLedger()
    pricer = Pricer(MIXED_BOOK, genai_prices=False, litellm=False)
    first = Tracker(ledger, pricer, log="off")
    first.finish(first.start(source="api", model="e"), usage=Usage(input_tokens=3000))
    first.finish(first.start(source="api", model="m"), usage=Usage(input_tokens=2000))
    budget = Budget("1 EUR", "month", name="eur-seed")
    tracker = _tracker(budget, MIXED_BOOK, ledger)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        assert _spent(budget, tracker) == Decimal("0.03")  # the EUR call; USD cannot count
    assert (
        "spend of 0.020000 in the ledger is in USD, but budget 'eur-seed' counts EUR" in caplog.text
    )


def test_the_default_pricer_is_not_refused_at_start_up_but_its_calls_are_checked() -> None:
    # no pricer given: a status-only tool (costledger budget status) builds such trackers
    budget = Budget("1 EUR", "month", name="eur-default")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=MemoryStore(), log="off")
    with pytest.raises(BudgetCheckFailed, match="model 'gpt-4o' is priced in USD, but budget"):
        tracker.start(source="api", model="gpt-4o", max_output_tokens=100)
    assert _spent(budget, tracker) == 0
