"""The ``costledger`` command line through typer's CliRunner on real SQLite ledgers: exit
codes, JSON and CSV shapes, one-line errors without tracebacks, every command."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger._reports import report
from costledger.cli import COMMANDS, app

from .test_reports_api import BOOK, known_history
from .test_reports_helpers import history

UTC = timezone.utc
BOOK_TOML = """
["gpt-4o-mini"]
input = "0.10"
output = "0.40"
cache_read = "0.025"

["my-model"]
input = "1"
output = "2"
"""


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(history(300, seed=4))
        ledger.record_many(known_history())
    return url


@pytest.fixture
def book(tmp_path: Path) -> Path:
    path = tmp_path / "book.toml"
    path.write_text(BOOK_TOML)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def one_error_line(result: Result) -> str:
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# -- report ------------------------------------------------------------------------------------


def test_report_table(db: str) -> None:
    result = run("report", "--db", db, "--by", "model")
    assert result.exit_code == 0, result.output
    assert "gpt-4o-mini" in result.stdout
    assert "total" in result.stdout
    assert "share" in result.stdout


def test_report_json_is_a_list_of_objects_equal_to_the_api(db: str) -> None:
    result = run("report", "--db", db, "--by", "day,model", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert rows
    expected = report(db, "day,model").as_dicts()
    assert rows == expected
    first = rows[0]
    assert {"day", "model", "requests", "errors", "cost", "share"} <= set(first)
    assert {"input_tokens", "cache_read_tokens", "cache_write_tokens"} <= set(first)
    assert {"output_tokens", "reasoning_tokens"} <= set(first)
    assert isinstance(first["cost"], str)
    total = sum((Decimal(r["cost"]) for r in rows if r["currency"] == "USD"), Decimal(0))
    assert total == report(db).cost["USD"]


def test_report_csv(db: str) -> None:
    result = run("report", "--db", db, "--by", "team", "-f", "csv", "--team", "search,chat")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["team"] for r in rows} == {"search", "chat"}
    assert list(rows[0])[:2] == ["team", "currency"]
    want = {(r.group["team"], r.currency): r.cost for r in report(db, "team").rows}
    assert {(r["team"], r["currency"]): Decimal(r["cost"]) for r in rows} == {
        k: v for k, v in want.items() if k[0] in ("search", "chat")
    }


def test_report_filters_repeat_or_split_on_commas(db: str) -> None:
    a = run("report", "--db", db, "-f", "json", "--user", "u1", "--user", "u2")
    b = run("report", "--db", db, "-f", "json", "--user", "u1,u2")
    assert a.exit_code == b.exit_code == 0
    assert json.loads(a.stdout) == json.loads(b.stdout)


SELECTION_OPTIONS = ["db", "since", "until", "model", "provider", "user", "team", "project"]
SELECTION_OPTIONS += ["feature", "tag", "status", "source"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--team", ""], "error: Invalid value for '--team': needs a non-empty value, got ''"),
        (["--tag", ","], "error: Invalid value for '--tag': needs a non-empty value, got ','"),
        (
            ["--user", " ", "--user", ", "],
            "error: Invalid value for '--user': needs a non-empty value, got ' ', ', '",
        ),
    ],
)
@pytest.mark.parametrize("command", ["report", "top", "export"])
def test_an_empty_filter_value_is_a_usage_error_not_everything(
    db: str, command: str, args: list[str], error: str
) -> None:
    # an unset shell variable (--team "$TEAM") must not widen the selection to every call
    result = run(command, "--db", db, *args)
    assert result.exit_code == 2, result.output
    assert one_error_line(result) == f"{error} (see 'costledger {command} --help')"
    assert result.stdout == ""


def test_a_filter_with_an_empty_part_keeps_the_others(db: str) -> None:
    a = run("report", "--db", db, "-f", "json", "--user", "u1,")
    b = run("report", "--db", db, "-f", "json", "--user", "u1")
    assert a.exit_code == b.exit_code == 0, a.output
    assert json.loads(a.stdout) == json.loads(b.stdout)
    want = {t.currency: t.requests for t in report(db, user="u1").totals}
    assert {r["currency"]: r["requests"] for r in json.loads(a.stdout)} == want


def test_every_filtering_command_has_the_same_selection_options() -> None:
    import typer.main

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]

    def block(name: str) -> list[tuple[Any, ...]]:
        params = [p for p in commands[name].params if p.name in SELECTION_OPTIONS]
        names = [p.name for p in commands[name].params]
        start = names.index("db")
        assert names[start : start + len(SELECTION_OPTIONS)] == SELECTION_OPTIONS, name
        return [(p.name, p.opts, p.help, p.default, p.multiple, p.show_default) for p in params]

    want = block("report")
    assert want[0] == ("db", ["--db"], want[0][2], None, False, False)
    assert want[-1][1:] == (
        ["--source"],
        "Only calls of this entry point (langchain, litellm, decorator, http, ingest, api) "
        "(repeat, or separate with commas, for several).",
        None,
        True,
        False,
    )
    for name in ("top", "whatif", "reprice", "export", "dashboard", "serve"):
        assert block(name) == want, name


def test_export_filters_and_the_nothing_matched_message(db: str) -> None:
    split = run("export", "--db", db, "--user", "u1,u2", "--model", "gpt-4o-mini")
    repeated = run("export", "--db", db, "--user", "u1", "--user", "u2", "--model", "gpt-4o-mini")
    assert split.exit_code == repeated.exit_code == 0, split.output
    assert split.stdout == repeated.stdout
    rows = list(csv.DictReader(io.StringIO(split.stdout)))
    assert {(r["user"], r["model"]) for r in rows} == {("u1", "gpt-4o-mini"), ("u2", "gpt-4o-mini")}
    api = report(db, user=["u1", "u2"], model=["gpt-4o-mini"])
    assert len(rows) == sum(t.requests for t in api.totals)
    none = run("export", "--db", db, "--team", "x", "--since", "2030-01-01", "--user", "a,b")
    assert none.exit_code == 1
    assert one_error_line(none) == "error: no calls match (since=2030-01-01 user=a,b team=x)"


def test_report_time_bounds(db: str) -> None:
    result = run(
        "report", "--db", db, "-f", "json", "--since", "2025-02-01", "--until", "2025-02-07"
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # one per currency
    api = report(db, since="2025-02-01", until="2025-02-07")
    assert {r["currency"]: r["requests"] for r in rows} == {
        t.currency: t.requests for t in api.totals
    }


def test_nothing_matched_is_exit_1_and_still_valid_json(db: str) -> None:
    result = run("report", "--db", db, "--user", "nobody", "-f", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == []
    assert "no calls match" in one_error_line(result)
    table = run("report", "--db", db, "--since", "2030-01-01")
    assert table.exit_code == 1
    assert table.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["report", "--by", "colour"], "'colour'"),
        (["report", "--since", "soon"], "cannot read 'soon'"),
        (["report", "--format", "xml"], "xml"),
        (["report", "--nope"], "--nope"),
        (["report", "--sort", "size"], "size"),
        (["top", "0"], "greater than or equal to 1"),
        (["report", "--limit", "0"], "--limit"),
        (["report", "--since", "99999999999d"], "'99999999999d' is out of range"),
        (["top", "--since", "999999999w"], "'999999999w' is out of range"),
        (["report", "--until", "9999-12-31"], "'9999-12-31' is out of range"),
    ],
)
def test_usage_errors_are_exit_2_and_one_line(db: str, args: list[str], needle: str) -> None:
    result = run(*args, "--db", db)
    assert result.exit_code == 2, result.output
    assert needle in one_error_line(result)


def test_a_missing_ledger_file_is_bad_input(tmp_path: Path) -> None:
    result = run("report", "--db", f"sqlite:///{tmp_path / 'missing.db'}")
    assert result.exit_code == 1
    assert "missing.db" in one_error_line(result)
    assert not (tmp_path / "missing.db").exists()


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run("report", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code == 1
    assert one_error_line(result)


def test_an_unparsable_database_url_is_shown_without_its_password() -> None:
    url = "postgresql://admin:TopS3cretPW@db.internal:54x2/prod"
    for result in (run("report", "--db", url), run("report", env={"COSTLEDGER_DATABASE_URL": url})):
        assert result.exit_code == 1
        assert one_error_line(result) == (
            "error: database url 'postgresql://admin:***@db.internal:54x2/prod' is not a valid "
            "URL: invalid literal for int() with base 10: '54x2'"
        )
        assert "TopS3cretPW" not in result.output


def test_default_database_from_the_environment(db: str) -> None:
    result = run("report", "-f", "json", env={"COSTLEDGER_DATABASE_URL": db})
    assert result.exit_code == 0, result.output
    assert sum(r["requests"] for r in json.loads(result.stdout)) == 306


def test_unpriced_calls_are_flagged_in_the_table(db: str) -> None:
    result = run("report", "--db", db, "--by", "model", "--model", "my-model")
    assert result.exit_code == 0, result.output
    assert "unpriced" in result.stdout
    assert "no price" in result.stderr


def _table_cells(stdout: str) -> list[list[str]]:
    """The rows of a rich table on stdout, as lists of cells (the header and rules left out)."""
    return [
        [cell.strip() for cell in line.split("│")]
        for line in stdout.splitlines()
        if "│" in line and "┃" not in line
    ]


@pytest.fixture
def unpriced_only(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'unpriced.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record(
            UsageEvent(
                model="mystery",
                usage=Usage(10, 5),
                cost=Cost(status="unknown_model"),
                timestamp=datetime(2025, 2, 1, 1, tzinfo=UTC),
            )
        )
    return url


def test_a_selection_with_nothing_priced_totals_to_no_amount_not_zero(
    unpriced_only: str, tmp_path: Path
) -> None:
    # requests, errors, input, cached, cache write, output, reasoning, unpriced, cost, share
    figures = ["1", "0", "10", "0", "0", "5", "0", "1", "-", "-"]
    alone = run("report", "--db", unpriced_only)
    assert alone.exit_code == 0, alone.output
    assert _table_cells(alone.stdout) == [figures]
    by_model = run("report", "--db", unpriced_only, "--by", "model")
    assert by_model.exit_code == 0, by_model.output
    assert _table_cells(by_model.stdout) == [["mystery", *figures], ["total", *figures]]
    # JSON keeps the exact (empty) sum
    (doc,) = json.loads(run("report", "--db", unpriced_only, "-f", "json").stdout)
    assert (doc["cost"], doc["unpriced"]) == ("0", 1)
    book = tmp_path / "other.toml"
    book.write_text('["other-model"]\ninput = "1"\noutput = "2"\n')
    whatif = run("whatif", "--db", unpriced_only, "-p", str(book), "--only-book")
    assert whatif.exit_code == 0, whatif.output
    # model, requests, cost then, under the book, savings, savings %, unpriced then, in book
    cells = _table_cells(whatif.stdout)
    assert cells[:2] == [
        ["mystery", "1", "-", "-", "-", "-", "1", "1"],
        ["total", "1", "-", "-", "-", "-", "1", "1"],
    ]


# -- top -----------------------------------------------------------------------------------------


def test_top(db: str) -> None:
    result = run("top", "3", "--db", db, "-f", "json")
    assert result.exit_code == 0, result.output
    calls = json.loads(result.stdout)
    # each currency its own top 3, currency after currency: a EUR amount is never
    # compared with a USD one
    assert [c["currency"] for c in calls] == ["EUR"] * 3 + ["USD"] * 3
    for currency in ("EUR", "USD"):
        costs = [Decimal(c["total_cost"]) for c in calls if c["currency"] == currency]
        assert costs == sorted(costs, reverse=True)
    assert {"id", "timestamp", "model", "user", "input_tokens"} <= set(calls[0])
    table = run("top", "--db", db, "--team", "search")
    assert table.exit_code == 0
    assert "top 10 calls" in table.stdout


# -- whatif, reprice ---------------------------------------------------------------------------


def test_whatif_json_totals_are_hand_checked(db: str, book: Path) -> None:
    result = run(
        "whatif",
        "--db",
        db,
        "--price-book",
        str(book),
        "--only-book",
        "--since",
        "2025-04-02",
        "--until",
        "2025-04-02",
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (total,) = doc["totals"]
    assert total["cost_then"] == "0.005235"
    assert total["cost_book"] == "0.000585"
    assert total["savings"] == "0.00027"
    assert doc["unpriced_count"] == 2
    assert "no price for model" not in result.stderr  # listed, not warned about


def test_whatif_table_and_csv(db: str, book: Path) -> None:
    table = run("whatif", "--db", db, "-p", str(book), "--model", "gpt-4o-mini")
    assert table.exit_code == 0, table.output
    assert "savings" in table.stdout
    rows = list(
        csv.DictReader(
            io.StringIO(
                run("whatif", "--db", db, "-p", str(book), "--user", "u1", "-f", "csv").stdout
            )
        )
    )
    assert rows
    assert {"model", "cost_then", "cost_book", "savings"} <= set(rows[0])


def test_whatif_with_a_bad_book_is_one_line(db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('["m"]\ninput = "abc"\noutput = "1"\n')
    result = run("whatif", "--db", db, "-p", str(bad))
    assert result.exit_code == 1
    assert "'input'" in one_error_line(result)
    missing = run("whatif", "--db", db, "-p", str(tmp_path / "nope.toml"))
    assert missing.exit_code == 1
    assert "nope.toml" in one_error_line(missing)
    usage = run("whatif", "--db", db)
    assert usage.exit_code == 2


def test_reprice(db: str, book: Path) -> None:
    mine = ("--model", "my-model")
    dry = run("reprice", "--db", db, "-p", str(book), "--dry-run", "-f", "json", *mine)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["repriced"] == 1
    assert report(db, model="my-model").totals[0].unpriced == 1
    before = report(db).cost["USD"]
    done = run("reprice", "--db", db, "-p", str(book), *mine)
    assert done.exit_code == 0, done.output
    assert "added 0.00012 USD" in done.stderr
    assert report(db).cost["USD"] == before + Decimal("0.00012")
    again = run("reprice", "--db", db, "-p", str(book), "--model", "my-model")
    assert again.exit_code == 1
    assert "no unpriced calls" in one_error_line(again)


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_export_to_a_file(db: str, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"calls.{suffix}"
    result = run("export", "--db", db, "-o", str(out), "--team", "chat")
    assert result.exit_code == 0, result.output
    assert f"({suffix})" in result.stderr
    n = report(db, team="chat").totals
    expected = sum(t.requests for t in n)
    if suffix == "csv":
        assert len(out.read_text().splitlines()) == expected + 1
    elif suffix == "jsonl":
        assert len(out.read_bytes().splitlines()) == expected
    else:
        import pyarrow.parquet as pq

        assert pq.read_table(out).num_rows == expected


def test_export_to_stdout(db: str) -> None:
    result = run("export", "--db", db, "--format", "jsonl", "--user", "u2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines
    assert all(json.loads(line)["costledger.user"] == "u2" for line in lines)
    empty = run("export", "--db", db, "--user", "nobody")
    assert empty.exit_code == 1


# -- prices ------------------------------------------------------------------------------------


def test_prices_list_show_diff(book: Path) -> None:
    listed = run("prices", "list", "--provider", "anthropic", "-f", "json")
    assert listed.exit_code == 0, listed.output
    cards = json.loads(listed.stdout)
    assert all(c["provider"] == "anthropic" for c in cards)
    shown = run("prices", "show", "gpt-4o-mini", "-f", "json")
    assert shown.exit_code == 0
    card = json.loads(shown.stdout)
    assert (card["input"], card["output"], card["cache_read"]) == ("0.15", "0.6", "0.075")
    table = run("prices", "show", "gpt-4o-mini")
    assert "0.075" in table.stdout
    unknown = run("prices", "show", "no-such-model-anywhere")
    assert unknown.exit_code == 1
    assert "no price for model" in one_error_line(unknown)
    diff = run("prices", "diff", str(book), "-f", "json")
    assert diff.exit_code == 0, diff.output
    rows = {(r["model"], r["component"]): r for r in json.loads(diff.stdout)}
    assert rows[("gpt-4o-mini", "output")]["change"] == "-0.2"
    assert rows[("my-model", "input")]["status"] == "new"
    nobody = run("prices", "list", "--provider", "nobody-at-all")
    assert nobody.exit_code == 1


# -- budget status -----------------------------------------------------------------------------


def _this_month_ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    now = datetime.now(UTC)
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            UsageEvent(
                model="m",
                usage=Usage(10, 1),
                cost=Cost(status="priced", total=Decimal(amount)),
                team=team,
                timestamp=now - timedelta(seconds=5),
            )
            for amount, team in (("1.25", "search"), ("0.5", "search"), ("2", "chat"))
        )
    return url


def test_budget_status_from_a_toml_file(tmp_path: Path) -> None:
    url = _this_month_ledger(tmp_path)
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        textwrap.dedent(
            """
            [[budget]]
            limit = "10 USD"
            period = "month"
            per = "team"
            name = "team monthly"

            [[budget]]
            limit = "100 USD"
            period = "month"
            warn_at = [0.5, 0.9]
            """
        )
    )
    result = run("budget", "status", "--db", url, "--budgets", str(budgets), "-f", "json")
    assert result.exit_code == 0, result.output
    rows = {(r["budget"], r["key"]): r for r in json.loads(result.stdout)}
    assert rows[("team monthly", "search")]["spent"] == "1.75"
    assert rows[("team monthly", "chat")]["spent"] == "2"
    overall = next(r for (name, _), r in rows.items() if name != "team monthly")
    assert Decimal(overall["spent"]) == Decimal("3.75")
    assert Decimal(overall["remaining"]) == Decimal("96.25")
    table = run("budget", "status", "--db", url, "--budgets", str(budgets))
    assert table.exit_code == 0
    assert "team monthly" in table.stdout


def test_budget_status_from_python_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _this_month_ledger(tmp_path)
    (tmp_path / "mybudgets.py").write_text(
        "from costledger._guards import Budget\n"
        "BUDGETS = [Budget('5 USD', 'month', per='team', name='per team')]\n"
        "def make():\n    return BUDGETS[0]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("mybudgets:BUDGETS", "mybudgets:make"):
        result = run("budget", "status", "--db", url, "--config", spec, "-f", "json")
        assert result.exit_code == 0, result.output
        spent = {r["key"]: r["spent"] for r in json.loads(result.stdout)}
        assert spent == {"chat": "2", "search": "1.75"}


def test_budget_status_errors(tmp_path: Path) -> None:
    url = _this_month_ledger(tmp_path)
    none = run("budget", "status", "--db", url, env={"COSTLEDGER_BUDGETS": ""})
    assert none.exit_code == 2
    assert "--budgets" in one_error_line(none)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[budget]]\nlimit = "lots"\n')
    result = run("budget", "status", "--db", url, "--budgets", str(bad))
    assert result.exit_code == 1
    assert "lots" in one_error_line(result)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[budget]]\nlimit = "1 USD"\ncolour = "red"\n')
    result = run("budget", "status", "--db", url, "--budgets", str(unknown))
    assert "'colour'" in one_error_line(result)
    missing = run("budget", "status", "--db", url, "--config", "no_such_module_x:B")
    assert missing.exit_code == 1
    assert "no_such_module_x" in one_error_line(missing)


# -- db, demo, help ------------------------------------------------------------------------------


def test_db_upgrade_and_rebuild(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run("db", "upgrade", "--db", url)
    assert result.exit_code == 0, result.output
    assert "revision 0004" in result.stderr
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(known_history())
        before = ledger.summary(by="model")
    rebuilt = run("db", "rebuild-rollups", "--db", url)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "6 events" in rebuilt.stderr
    with Ledger(url, sync=True) as ledger:
        assert ledger.summary(by="model") == before
    sql = run("db", "upgrade", "--db", "postgresql://u@localhost/x", "--sql")
    assert sql.exit_code == 0
    assert "costledger_rollup_daily" in sql.stdout


def test_every_command_is_registered() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name, _ in COMMANDS:
        assert name in result.stdout
    assert "demo" in result.stdout
    no_args = run()
    assert no_args.exit_code == 2
    group = run("prices")
    assert group.exit_code == 2
    assert "list" in group.output


def test_money_is_never_a_float_in_json(db: str) -> None:
    outputs: list[Any] = [
        json.loads(run("report", "--db", db, "--by", "user", "-f", "json").stdout),
        json.loads(run("top", "--db", db, "-f", "json").stdout),
    ]
    seen = 0
    for doc in outputs:
        for row in doc:
            for key in ("cost", "total_cost", "share"):
                if row.get(key) is not None:
                    assert isinstance(row[key], str)
                    assert "E" not in row[key].upper()  # never in exponent form
                    Decimal(row[key])
                    seen += 1
    assert seen > 20


def test_book_fixture_matches_the_api_book(book: Path) -> None:
    from costledger._pricing._book import load_price_book

    assert load_price_book(book).keys() == load_price_book(BOOK).keys()


def test_report_in_one_currency(tmp_path: Path) -> None:
    from .test_reports_api import _two_currencies

    url = _two_currencies(tmp_path)
    result = run(
        "report",
        "--db",
        url,
        "--by",
        "model",
        "--currency",
        "eur",
        "--rate",
        "USD=0.92",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "model": "m",
            "currency": "EUR",
            "requests": 2,
            "errors": 0,
            "cancelled": 0,
            "unpriced": 0,
            "no_usage": 0,
            "input_tokens": 30,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 3,
            "reasoning_tokens": 0,
            "cost": "3.38",
            "share": "1.000000",
            "exchange_rates": "USD=0.92",
        },
        {
            "model": "unknown",
            "currency": "EUR",
            "requests": 1,
            "errors": 0,
            "cancelled": 0,
            "unpriced": 1,
            "no_usage": 0,
            "input_tokens": 5,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 5,
            "reasoning_tokens": 0,
            "cost": "0",
            "share": "0.000000",
            "exchange_rates": "USD=0.92",
        },
    ]
    table = run("report", "--db", url, "--by", "team", "--currency", "USD", "--rate", "EUR=1.087")
    assert table.exit_code == 0, table.output
    assert "2.174" in table.stdout
    assert "3.674" in table.stdout
    assert "converted at 1 EUR = 1.087 USD (--rate)" in table.output


def test_report_totals_only_in_one_currency_carry_the_rates(tmp_path: Path) -> None:
    from .test_reports_api import _two_currencies

    url = _two_currencies(tmp_path)
    result = run("report", "--db", url, "--currency", "EUR", "--rate", "USD=0.92", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert list(csv.DictReader(io.StringIO(result.stdout))) == [
        {
            "currency": "EUR",
            "requests": "3",
            "errors": "0",
            "cancelled": "0",
            "unpriced": "1",
            "no_usage": "0",
            "input_tokens": "35",
            "cache_read_tokens": "0",
            "cache_write_tokens": "0",
            "output_tokens": "8",
            "reasoning_tokens": "0",
            "cost": "3.38",
            "share": "1.000000",
            "exchange_rates": "USD=0.92",
        }
    ]


def test_report_currency_errors(tmp_path: Path) -> None:
    from .test_reports_api import _two_currencies

    url = _two_currencies(tmp_path)
    missing = run("report", "--db", url, "--currency", "EUR")
    assert missing.exit_code == 1
    assert one_error_line(missing) == (
        "error: the selection holds costs in USD, with no rate to EUR: give one "
        "(USD=..., EUR per unit)"
    )
    for args in (
        ["--rate", "USD"],
        ["--rate", "USD=0.9"],
        ["--currency", "EUR", "--rate", "USD=1", "--rate", "usd=2"],
    ):
        bad = run("report", "--db", url, *args)
        assert bad.exit_code == 2, (args, bad.output)
        assert "Traceback" not in bad.output
