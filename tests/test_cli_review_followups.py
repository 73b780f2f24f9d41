"""Follow-ups of the CLI review: ``dashboard -o -`` writes the page to stdout and its
summary to stderr; the summary line says "unknown", not 0, when no call has a price; and
an error line shows a control character quoted from data escaped, as tables do."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger.cli import app
from costledger.cli._app import _say

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ledger_of(tmp_path: Path, *events: UsageEvent) -> str:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(list(events))
    return url


def priced(total: str) -> UsageEvent:
    return UsageEvent(
        model="gpt-4o",
        usage=Usage(10, 5),
        cost=Cost("priced", total=Decimal(total)),
        timestamp=JUNE,
    )


def unknown() -> UsageEvent:
    return UsageEvent(
        model="acme-llm-9000",
        usage=Usage(100, 10),
        cost=Cost.unknown("acme-llm-9000"),
        timestamp=JUNE,
    )


def test_dashboard_to_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("plotly")
    db = ledger_of(tmp_path, priced("0.25"), priced("0.5"))
    monkeypatch.chdir(tmp_path)
    result = run("dashboard", "--db", db, "-o", "-", "--since", "2025-01-01")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!DOCTYPE html>") or result.stdout.startswith(
        "<!doctype html>"
    )
    assert result.stdout.rstrip().endswith("</html>")
    assert result.stderr == "wrote the HTML to stdout (2 calls, 0.75 USD)\n"
    assert not (tmp_path / "-").exists()


def test_dashboard_summary_says_unknown_when_no_call_has_a_price(tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    db = ledger_of(tmp_path, unknown(), unknown())
    out = tmp_path / "d.html"
    result = run("dashboard", "--db", db, "-o", str(out), "--since", "2025-01-01")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out} (2 calls, unknown USD; 2 unpriced)\n"


def test_error_lines_show_control_characters_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    _say("no calls match (user 'mallory\x1b[2J')\nsecond line")
    assert (
        capsys.readouterr().err == "error: no calls match (user 'mallory\\x1b[2J')\nsecond line\n"
    )


def test_cli_error_quoting_data_is_escaped(tmp_path: Path) -> None:
    db = ledger_of(tmp_path, priced("0.25"))
    result = run("report", "--db", db, "--user", "mallory\x1b[8m", "--since", "2025-01-01")
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr
    assert "mallory\\x1b[8m" in result.stderr
