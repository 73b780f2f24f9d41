"""``top`` never compares amounts in two currencies: each currency is ranked on its own
(its own top N), unless ``--currency`` with ``--rate`` converts them into one; a ledger
priced in one currency is ranked exactly as before, reading the same slices."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent
from costledger._dashboard import build_dashboard
from costledger._ledger import Ledger
from costledger._reports import _report, top
from costledger.cli import app

UTC = timezone.utc
T0 = datetime(2025, 6, 1, tzinfo=UTC)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def call(total: str, currency: str, hours: int, **fields: Any) -> UsageEvent:
    return UsageEvent(
        id=fields.pop("id", None) or f"{currency}-{total}-{hours}",
        model=fields.pop("model", "m"),
        usage=Usage(10, 1),
        cost=Cost("priced", total=Decimal(total), currency=currency),
        timestamp=T0 + timedelta(hours=hours),
        **fields,
    )


# JPY amounts are large numbers, USD small ones: ranked by the raw number, the JPY calls
# would push every USD call out
MIXED = [
    call("150", "JPY", 1),
    call("90", "JPY", 30),
    call("5", "JPY", 50),
    call("25", "USD", 2),
    call("0.5", "USD", 26),
    call("3", "USD", 51, user="u1"),
    call("4", "EUR", 52),
]


@pytest.fixture
def mixed(url: str) -> str:
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(MIXED)
        ledger.record(UsageEvent(model="x", usage=Usage(1, 1), cost=Cost.unknown("x")))
    return url


def ids(found: list[Any]) -> list[str]:
    return [e.id for e in found]


def test_each_currency_is_ranked_on_its_own(mixed: str) -> None:
    assert ids(top(mixed, 2)) == ["EUR-4-52", "JPY-150-1", "JPY-90-30", "USD-25-2", "USD-3-51"]
    assert ids(top(mixed, 1)) == ["EUR-4-52", "JPY-150-1", "USD-25-2"]
    # a selection of one currency in a ledger of several: that currency's ranking
    assert ids(top(mixed, 5, user="u1")) == ["USD-3-51"]
    # less than a day (the events table, not the rollups), and a range with partial days
    assert ids(top(mixed, 5, since="2025-06-02T01:00", until="2025-06-02T03:00")) == ["USD-0.5-26"]
    assert ids(top(mixed, 1, since="2025-06-01T01:30", until="2025-06-03T04:30")) == [
        "EUR-4-52",
        "JPY-90-30",
        "USD-25-2",
    ]
    assert ids(top(mixed, 1, since="2025-06-01T01:30", until="2025-06-03T03:30")) == [
        "JPY-90-30",
        "USD-25-2",
    ]


def test_converted_ranking(mixed: str) -> None:
    rates = {"JPY": "0.0067", "EUR": "1.08"}
    found = top(mixed, 3, currency="USD", rates=rates)
    # 25 USD; 4 EUR = 4.32 USD; 3 USD; 150 JPY = 1.005 USD
    assert ids(found) == ["USD-25-2", "EUR-4-52", "USD-3-51"]
    assert [e.total_cost for e in found] == [Decimal(25), Decimal(4), Decimal(3)]  # as stored
    assert ids(top(mixed, 7, currency="USD", rates=rates))[3:] == [
        "JPY-150-1",
        "JPY-90-30",
        "USD-0.5-26",
        "JPY-5-50",
    ]
    used = _report.exchange_rates("USD", rates, {"JPY", "EUR", "USD"})
    assert [_report.converted_cost(e, used) for e in found] == [
        Decimal(25),
        Decimal("4.32"),
        Decimal(3),
    ]
    with pytest.raises(ValueError, match="holds costs in EUR, JPY, with no rate to USD"):
        top(mixed, 3, currency="USD")
    with pytest.raises(ValueError, match="give currency= too"):
        top(mixed, 3, rates=rates)
    # one currency selected, converted into itself: no rate needed
    assert ids(top(mixed, 1, currency="USD", user="u1")) == ["USD-3-51"]


def test_one_currency_reads_the_same_slices_as_before(tmp_path: Path) -> None:
    """The usual ledger (one currency): the same statements against the events table as
    the ranking itself makes, plus one read of a small rollup table."""
    events = [call(str(Decimal(i % 37) / 100), "USD", i, team=f"t{i % 3}") for i in range(200)]
    with Ledger(f"sqlite:///{tmp_path / 'one.db'}", sync=True) as ledger:
        ledger.record_many(events)
        engine = ledger._core.store.engine
        seen: list[str] = []

        def keep(conn: Any, cursor: Any, sql: str, params: Any, *args: Any) -> None:
            seen.append(sql)

        sa.event.listen(engine, "before_cursor_execute", keep)
        try:
            found = top(ledger, 5)
            api = list(seen)
            seen.clear()
            direct = _report._top(ledger, 5, None, None, {})
        finally:
            sa.event.remove(engine, "before_cursor_execute", keep)
    assert ids(found) == ids(direct)
    assert [e.total_cost for e in found] == [Decimal("0.36")] * 5

    def reads(statements: list[str]) -> list[str]:
        return [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]

    first, *rest = reads(api)
    assert first.startswith("SELECT DISTINCT costledger_rollup_core_tags_monthly.currency")
    assert "costledger_events" not in first
    assert rest == reads(seen)  # then exactly the statements of the ranking itself


def test_cli_tables_per_currency(mixed: str) -> None:
    result = run("top", "2", "--db", mixed)
    assert result.exit_code == 0, result.output
    titles = [line.strip() for line in result.stdout.splitlines() if line.startswith("top ")]
    assert titles == [
        "top 1 calls by cost in EUR",
        "top 2 calls by cost in JPY",
        "top 2 calls by cost in USD",
    ]
    assert "are ranked per currency (amounts in two currencies are never compared)" in (
        result.stderr
    )
    jpy = result.stdout.index("in JPY")
    usd = result.stdout.index("in USD")
    assert result.stdout.index("150.00") < usd < result.stdout.index("25.00")
    assert jpy < result.stdout.index("90.00") < usd

    as_json = json.loads(run("top", "1", "--db", mixed, "-f", "json").stdout)
    assert [(c["currency"], Decimal(c["total_cost"])) for c in as_json] == [
        ("EUR", Decimal(4)),
        ("JPY", Decimal(150)),
        ("USD", Decimal(25)),
    ]


def test_cli_converted(mixed: str) -> None:
    args = ("top", "2", "--db", mixed, "--currency", "usd", "--rate", "JPY=0.0067")
    result = run(*args, "--rate", "EUR=1.08")
    assert result.exit_code == 0, result.output
    assert "top 2 calls by cost in USD" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "│" in line]
    assert [line.split("│")[-2].strip() for line in lines] == ["25.00", "4.32"]
    # the rates of the calls shown
    assert result.stderr == "converted at 1 EUR = 1.08 USD (--rate)\n"
    as_csv = run(*args, "--rate", "EUR=1.08", "-f", "csv").stdout.splitlines()
    assert as_csv[0].endswith(",converted_cost,converted_currency")
    assert as_csv[2].endswith(",4.32,USD")
    missing = run(*args)
    assert missing.exit_code == 1
    assert "the selection holds costs in EUR, with no rate to USD" in missing.stderr
    alone = run("top", "--db", mixed, "--rate", "JPY=1")
    assert alone.exit_code == 2
    assert "--rate converts into --currency" in alone.stderr


def test_dashboard_top_calls_in_the_charts_currency(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many([*MIXED, call("0.01", "USD", 53), call("0.02", "USD", 54)])
    payload = build_dashboard(url, now=T0 + timedelta(days=3)).payload()
    assert payload["currency"] == "USD"
    assert [(c["currency"], c["cost"]) for c in payload["top_calls"]] == [
        ("USD", "25"),
        ("USD", "3"),
        ("USD", "0.5"),
        ("USD", "0.02"),
        ("USD", "0.01"),
    ]
    assert payload["notes"] == [
        "Charts and the most expensive calls show USD; calls in EUR, JPY appear in the totals only."
    ]
