"""A currency that holds no amount (an unknown model's calls, calls with nothing to price,
calls priced at exactly 0) needs no exchange rate and makes no totals row of its own: it
joins the currency that has the amounts at zero, every count kept. Before, ``report
--currency EUR`` on a ledger priced in EUR demanded a USD rate for its failed calls (stored
as USD), "converted" them with whatever rate was given and printed it, and a plain report
showed a second, empty USD totals row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger import Cost, Pricer, Tracker, Usage, UsageEvent, report, top
from costledger._ledger import Ledger
from costledger._reports import ReportRow
from costledger._reports._report import calls_rates
from costledger.cli import app

EUR_BOOK = {
    "gpt-4o-mini": {"input": "0.14", "output": "0.55", "currency": "EUR"},
    "local-free": {"input": "0", "output": "0"},  # USD, priced at exactly 0
    "gpt-usd": {"input": "2", "output": "8"},  # USD, a real amount
}
EUR_COST = Decimal("0.000195")  # 1000 x 0.14 / 1e6 + 100 x 0.55 / 1e6


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'c.db'}"


@pytest.fixture
def eur(url: str) -> Iterator[Ledger]:
    """A ledger priced in EUR, with an unknown model's call and a failed call without
    usage, both stored as USD with no amount (as ``Cost.unknown`` and a failed call's
    cost were, whatever the price book's currency)."""
    with Ledger(url, sync=True) as ledger:
        tracker = Tracker(ledger, pricer=Pricer(overrides=EUR_BOOK), log="off")
        tracker.record("gpt-4o-mini", Usage(1000, 100), attribution={"team": "a"})
        ledger.record_many(
            [
                UsageEvent(
                    model="our-model",
                    usage=Usage(10, 1),
                    cost=Cost.unknown("our-model"),
                    team="b",
                ),
                UsageEvent(
                    model="gpt-4o-mini",
                    usage=Usage(),
                    cost=Cost("not_priced", currency="USD"),
                    status="error",
                    error_type="TimeoutError",
                    team="a",
                ),
            ]
        )
        stored = sorted((e.currency, e.pricing_status, e.total_cost) for e in ledger.events())
        assert stored == [
            ("EUR", "priced", Decimal("0.000195")),
            ("USD", "not_priced", None),
            ("USD", "unknown_model", None),
        ]
        yield ledger


def _figures(row: ReportRow) -> tuple[object, ...]:
    return (
        row.currency,
        row.requests,
        row.errors,
        row.unpriced,
        row.input_tokens,
        row.output_tokens,
        row.cost,
    )


def test_converting_needs_no_rate_for_a_currency_without_amounts(eur: Ledger) -> None:
    for rates in (None, {"USD": "12345"}):
        r = report(eur, currency="EUR", rates=rates)
        assert [_figures(t) for t in r.totals] == [("EUR", 3, 1, 1, 1010, 101, EUR_COST)]
        assert r.rates == {}  # nothing was converted: no rate to print
    r = report(eur, "team", currency="EUR")
    assert [(row.key, *_figures(row)) for row in r.rows] == [
        (("a",), "EUR", 2, 1, 0, 1000, 100, EUR_COST),
        (("b",), "EUR", 1, 0, 1, 10, 1, Decimal(0)),
    ]


def test_without_currency_one_totals_row(eur: Ledger) -> None:
    r = report(eur)
    assert [_figures(t) for t in r.totals] == [("EUR", 3, 1, 1, 1010, 101, EUR_COST)]
    assert r.cost == {"EUR": EUR_COST}
    assert r.rates == {}
    r = report(eur, "model")
    assert [(row.key, *_figures(row), row.share) for row in r.rows] == [
        (("gpt-4o-mini",), "EUR", 2, 1, 0, 1000, 100, EUR_COST, Decimal("1.000000")),
        (("our-model",), "EUR", 1, 0, 1, 10, 1, Decimal(0), Decimal(0)),
    ]


def test_a_call_priced_at_zero_needs_no_rate(eur: Ledger) -> None:
    Tracker(eur, pricer=Pricer(overrides=EUR_BOOK), log="off").record("local-free", Usage(7, 3))
    r = report(eur, "model", currency="EUR")
    assert [(row.key, *_figures(row)) for row in r.rows] == [
        (("gpt-4o-mini",), "EUR", 2, 1, 0, 1000, 100, EUR_COST),
        (("local-free",), "EUR", 1, 0, 0, 7, 3, Decimal(0)),
        (("our-model",), "EUR", 1, 0, 1, 10, 1, Decimal(0)),
    ]
    assert r.rates == {}
    ranked = top(eur, 5, currency="EUR")
    assert [(e.model, e.currency, e.total_cost) for e in ranked] == [
        ("gpt-4o-mini", "EUR", Decimal("0.000195")),
        ("local-free", "USD", Decimal(0)),
    ]
    # what the command line's ``top --currency`` notes under its table: no rate
    assert calls_rates("EUR", {"USD": "12345"}, ranked) == {}
    # and a plain report: one EUR totals row, the zero USD call's counts in it
    assert [_figures(t) for t in report(eur).totals] == [("EUR", 4, 1, 1, 1017, 104, EUR_COST)]


def test_a_currency_with_an_amount_still_needs_its_rate(eur: Ledger) -> None:
    Tracker(eur, pricer=Pricer(overrides=EUR_BOOK), log="off").record("gpt-usd", Usage(1000, 100))
    usd = Decimal("0.0028")  # 1000 x 2 / 1e6 + 100 x 8 / 1e6
    with pytest.raises(ValueError, match=r"holds costs in USD, with no rate to EUR"):
        report(eur, currency="EUR")
    with pytest.raises(ValueError, match=r"holds costs in USD, with no rate to EUR"):
        top(eur, 5, currency="EUR")
    ranked = top(eur, 5, currency="EUR", rates={"USD": "0.5"})
    assert calls_rates("EUR", {"USD": "0.5", "JPY": "0.01"}, ranked) == {"USD": Decimal("0.5")}
    r = report(eur, currency="EUR", rates={"USD": "0.5"})
    assert [_figures(t) for t in r.totals] == [
        ("EUR", 4, 1, 1, 2010, 201, EUR_COST + usd * Decimal("0.5"))
    ]
    assert r.rates == {"USD": Decimal("0.5")}
    # two currencies hold amounts: nothing is folded without a rate
    assert [_figures(t) for t in report(eur).totals] == [
        ("EUR", 1, 0, 0, 1000, 100, EUR_COST),
        ("USD", 3, 1, 1, 1010, 101, usd),
    ]


def test_cli_converts_without_a_rate_and_prints_none(eur: Ledger, url: str) -> None:
    for extra in ([], ["--rate", "USD=12345"]):
        result = CliRunner().invoke(
            app, ["report", "--db", url, "--currency", "EUR", "-f", "json", *extra]
        )
        assert result.exit_code == 0, result.output
        assert '"cost": "0.000195"' in result.stdout
        assert "exchange_rates" not in result.stdout
        assert "12345" not in result.output


def test_cli_top_converts_a_zero_priced_usd_call_without_a_rate(eur: Ledger, url: str) -> None:
    """``costledger top --currency EUR``: a USD call priced at exactly 0 needs no rate (the
    command used the currencies of every call listed, and failed as 'holds costs in USD')."""
    Tracker(eur, pricer=Pricer(overrides=EUR_BOOK), log="off").record("local-free", Usage(7, 3))
    result = CliRunner().invoke(app, ["top", "5", "--db", url, "--currency", "EUR", "-f", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["model"], r["converted_cost"], r["converted_currency"]) for r in rows] == [
        ("gpt-4o-mini", "0.000195", "EUR"),
        ("local-free", "0", "EUR"),
    ]
