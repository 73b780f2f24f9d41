"""An exchange rate that is not a finite number above 0, is out of range or has more
digits than the exact arithmetic keeps is refused, naming the currency and the value: a
usage error (exit 2) from the command line, ``ValueError`` from the API; never an
anonymous ``InvalidOperation`` nor a silently rounded rate."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Context, Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent, report, top
from costledger._ledger import Ledger
from costledger._reports._report import check_rate
from costledger.cli import app

JUNE = datetime(2025, 6, 1, tzinfo=timezone.utc)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            [
                UsageEvent(
                    model="m",
                    usage=Usage(1, 1),
                    cost=Cost("priced", total=Decimal(total), currency=currency),
                    timestamp=JUNE,
                )
                for total, currency in (("1.25", "USD"), ("0.000000000000000001", "USD"))
            ]
        )
    return url


REFUSED = [
    ("1e400", "must be between 1e-12 and 1e12, got '1e400'"),
    ("1e13", "must be between 1e-12 and 1e12, got '1e13'"),
    ("1E-13", "must be between 1e-12 and 1e12, got '1E-13'"),
    ("0", "must be a finite number above 0, got '0'"),
    ("-0.5", "must be a finite number above 0, got '-0.5'"),
    ("NaN", "must be a finite number above 0, got 'NaN'"),
    ("Infinity", "must be a finite number above 0, got 'Infinity'"),
    ("x1", "is not a number: 'x1'"),
    (
        "0." + "1" * 200,
        "has 200 significant digits, more than 30: '0.1111111111111111111111111111111111...",
    ),
    ("1." + "0" * 29 + "1", "has 31 significant digits, more than 30: '1." + "0" * 29 + "1'"),
]


@pytest.mark.parametrize(("value", "message"), REFUSED)
def test_cli_refuses_the_rate_naming_currency_and_value(db: str, value: str, message: str) -> None:
    for command in ("report", "top"):
        result = run(command, "--db", db, "--currency", "EUR", "--rate", f"usd={value}")
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            f"error: Invalid value for '--rate': exchange rate for USD {message} "
            f"(see 'costledger {command} --help')"
        )


@pytest.mark.parametrize(("value", "message"), REFUSED)
def test_api_refuses_the_rate_naming_currency_and_value(db: str, value: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        report(db, currency="EUR", rates={"USD": value})
    assert str(raised.value) == f"exchange rate for USD {message}"
    with pytest.raises(ValueError, match="exchange rate for USD"):
        top(db, currency="EUR", rates={"USD": value})


def test_limits_themselves_and_exact_conversion(db: str) -> None:
    assert check_rate("USD", "1e12") == ("USD", Decimal("1e12"))
    assert check_rate("USD", "1e-12") == ("USD", Decimal("1e-12"))
    assert check_rate("USD", "1" + "0" * 12) == ("USD", Decimal(10**12))  # trailing zeros
    assert check_rate("USD", 3) == ("USD", Decimal(3))
    # the largest rate, the smallest, and 30 digits at the bottom of the range: the
    # converted total is the exact product, to the last digit
    wide = Context(prec=200)
    for rate in ("1e12", "1e-12", "0." + "9" * 30, "0.00000000000" + "7" * 30):
        assert check_rate("USD", rate)[1] == Decimal(rate)
        r = report(db, currency="EUR", rates={"USD": rate})
        amount = wide.add(Decimal("1.25"), Decimal("1E-18"))
        assert r.totals[0].cost == wide.multiply(amount, Decimal(rate))
        assert r.rates == {"USD": Decimal(rate)}


def test_cli_refuses_a_currency_code_that_is_not_three_letters(db: str) -> None:
    for command in ("report", "top"):
        result = run(command, "--db", db, "--currency", "EURO", "--rate", "USD=0.9")
        assert result.exit_code == 2
        assert (
            "Invalid value for '--currency': use a three-letter currency code like EUR, "
            "not 'EURO'" in result.stderr
        )
        result = run(command, "--db", db, "--currency", "EUR", "--rate", "US=0.9")
        assert result.exit_code == 2
        assert (
            "an exchange rate's currency must be a three-letter currency code like 'EUR', "
            "got 'US'" in result.stderr
        )
