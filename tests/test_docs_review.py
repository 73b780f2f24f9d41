"""Fixes from the documentation review: what the docs promise, checked against the code."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Budget, BudgetExceeded, Tracker, Usage
from costledger._ledger import InMemoryLedger

NOON = datetime(2026, 3, 10, 12, tzinfo=timezone.utc).timestamp()

ALERT_SCRIPT = textwrap.dedent(
    """
    from decimal import Decimal
    from costledger import Budget, BudgetExceeded, Ledger, Tracker, Usage

    tracker = Tracker(Ledger("sqlite://"), guards=[Budget("0.001 USD", "day")], log="off")
    tracker.record("gpt-4o", Usage(input_tokens=1000, output_tokens=1000))
    try:
        tracker.start(source="api", model="gpt-4o", estimate=Decimal("1"))
    except BudgetExceeded:
        pass
    else:
        raise SystemExit("the budget did not refuse")
    """
)


def _refuse_once(tracker: Tracker) -> None:
    tracker.record("gpt-4o", Usage(input_tokens=1000, output_tokens=1000))
    with pytest.raises(BudgetExceeded):
        tracker.start(source="api", model="gpt-4o", estimate=Decimal("1"))


def _tracker() -> Tracker:
    budget = Budget("0.001 USD", "day", clock=lambda: NOON)
    return Tracker(InMemoryLedger(), guards=[budget], log="off")


def test_budget_alert_never_prints_to_stdout_without_logging_config(tmp_path: Path) -> None:
    """log-schema.md: costledger never prints to a program's stdout uninvited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLEDGER_")}
    done = subprocess.run(
        [sys.executable, "-c", ALERT_SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
    # the documented place when nothing is configured: stdlib logging's last resort, stderr
    assert "costledger.budget_alert kind=exceeded budget='0.001 USD/day'" in done.stderr


def test_budget_alert_goes_to_the_stdlib_logger_when_structlog_is_not_configured(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import structlog

    monkeypatch.setattr(structlog, "is_configured", lambda: False)
    with caplog.at_level(logging.WARNING, logger="costledger.alerts"):
        _refuse_once(_tracker())
    records = [r for r in caplog.records if r.name == "costledger.alerts"]
    # the recorded call passes every threshold (Tracker.record alerts), then the refusal
    kinds = [r.costledger_alert["kind"] for r in records]  # type: ignore[attr-defined]
    assert kinds == ["threshold", "threshold", "threshold", "exceeded"]
    record = records[-1]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("costledger.budget_alert kind=exceeded ")
    alert = record.costledger_alert  # type: ignore[attr-defined]
    assert alert["event"] == "costledger.budget_alert"
    assert (alert["kind"], alert["budget"], alert["limit"]) == (
        "exceeded",
        "0.001 USD/day",
        "0.001",
    )


def test_budget_alert_goes_through_structlog_when_the_application_configured_it() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:  # configures structlog for the block
        _refuse_once(_tracker())
    alerts = [e for e in logs if e.get("event") == "costledger.budget_alert"]
    # the recorded call passes every threshold (Tracker.record alerts), then the refusal
    assert [e["kind"] for e in alerts] == ["threshold", "threshold", "threshold", "exceeded"]
    assert alerts[-1]["log_level"] == "warning"
    assert (alerts[-1]["kind"], alerts[-1]["budget"]) == ("exceeded", "0.001 USD/day")


DOCS = Path(__file__).resolve().parent.parent / "docs"


def _python_block_after(page: str, marker: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index("```python\n", text.index(marker)) + len("```python\n")
    return text[start : text.index("```", start)]


def test_budgets_testing_recipe_runs() -> None:
    """budgets.md's "Tests" recipe: only names that exist, and its assertions hold."""
    namespace: dict[str, object] = {"__name__": "budgets_recipe"}
    exec(compile(_python_block_after("budgets.md", "**Tests**"), "budgets.md", "exec"), namespace)
    test = namespace["test_the_tokyo_month_starts_at_15_utc"]
    assert callable(test)
    test()


# -- reports.md: the card `prices show -f json` prints is read as a one-model price book ------


def _cli(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from costledger.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_prices_show_json_is_a_price_book_after_editing(tmp_path: Path) -> None:
    import json

    from costledger import Pricer
    from costledger._pricing._book import load_price_book

    code, out, err = _cli("prices", "show", "gpt-4o", "--provider", "openai", "-f", "json")
    assert code == 0, err
    card = json.loads(out)
    card["input"], card["output"] = "2", "8"  # a negotiated discount
    path = tmp_path / "gpt-4o-deal.json"
    path.write_text(json.dumps(card, indent=2))

    book = load_price_book(path)
    assert list(book) == ["gpt-4o"]
    deal = book["gpt-4o"]
    assert (deal.input, deal.output, deal.cache_read) == (Decimal(2), Decimal(8), Decimal("1.25"))
    assert (deal.provider, deal.currency, deal.max_output_tokens) == ("openai", "USD", 16384)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    priced = Pricer(path).price("gpt-4o", usage, provider="openai")
    assert priced.total == Decimal(10)

    code, out, err = _cli("prices", "diff", str(path), "-f", "json")
    assert code == 0, err
    changed = {row["component"] for row in json.loads(out) if row["status"] == "changed"}
    assert changed == {"input", "output"}


def test_a_shown_card_reads_as_a_book_of_its_one_model(tmp_path: Path) -> None:
    from costledger._pricing._book import load_price_book

    base = {"model": "m", "input": "1", "output": "2", "source": "genai-prices 0.0.0"}
    card = load_price_book({**base, "reasoning": None, "per_request": "0", "tiers": []})["m"]
    assert (card.reasoning, card.request, card.tiers) == (None, Decimal(0), ())
    tiered = load_price_book(
        {**base, "tiers": [{"above": 200000, "input": "6", "output": "7"}], "per_request": "0.01"}
    )["m"]
    assert (tiered.tiers[0].above, tiered.tiers[0].input, tiered.request) == (
        200000,
        Decimal(6),
        Decimal("0.01"),
    )


# -- CLI --help: help strings are rich markup, and bracketed text must survive it ------------


def _help(*command: str) -> str:
    from typer.testing import CliRunner

    from costledger.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())  # table borders and wrapping aside


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("budget", "status"), "A TOML file of [[budget]] tables."),
        (("dashboard",), "a TOML file of [[budget]] tables (as for 'budget status')"),
        (("dashboard",), "count in [default: memory, counted from the ledger]."),
        (("serve",), "count in [default: memory, counted from the ledger]."),
    ],
)
def test_help_shows_bracketed_text(command: tuple[str, ...], expected: str) -> None:
    assert expected in _help(*command)


def test_no_help_text_loses_characters_to_rich_markup() -> None:
    import click
    import typer
    from rich.text import Text

    from costledger.cli import app

    def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")

    eaten = []
    for path, command in walk(typer.main.get_command(app), "costledger"):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            if Text.from_markup(text).plain != text.replace("\\[", "["):
                eaten.append((path, text))
    assert eaten == []


def test_log_schema_example_line_has_the_real_costs() -> None:
    """log-schema.md's example line: every amount is what the default pricer gives."""
    import json

    from costledger import Pricer, event_from_line

    text = (DOCS / "log-schema.md").read_text(encoding="utf-8")
    start = text.index("```json\n", text.index("## An example line")) + len("```json\n")
    line = text[start : text.index("```", start)].strip()
    event = event_from_line(line)
    cost = Pricer.default().price(
        event.model, event.usage, provider=event.provider, at=event.timestamp
    )
    record = json.loads(line)
    for part in ("total", "input", "cache_read", "cache_write", "output", "audio"):
        assert record[f"costledger.cost.{part}"] == str(getattr(cost, part)), part
    assert cost.source.startswith("genai-prices ")
    assert record["costledger.cost.source"].startswith("genai-prices ")
    assert Decimal(record["costledger.reported_cost"]) == cost.total


def test_tracker_signature_in_the_docs_is_the_real_one() -> None:
    import inspect
    import re

    import costledger

    text = (DOCS / "tracker.md").read_text(encoding="utf-8")
    documented = " ".join(re.search(r"`(Tracker\(ledger=.*?\))`", text, re.S)[1].split())  # type: ignore[index]
    params = []
    for p in inspect.signature(costledger.Tracker).parameters.values():
        if p.kind is p.KEYWORD_ONLY and "*" not in params:
            params.append("*")
        if p.kind is p.VAR_KEYWORD:
            params.append(f"**{p.name}")
        else:
            params.append(f"{p.name}={p.default!r}")
    assert documented == f"Tracker({', '.join(params)})"
    table = text[text.index("| Parameter | Meaning |") :]
    for name in inspect.signature(costledger.Tracker).parameters:
        assert f"| `{name}` |" in table or f"| `**{name}` |" in table, name
