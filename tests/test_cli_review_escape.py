"""Attribution text reaches the terminal as visible text: the control characters in a
user, team, feature, tag or model name are shown escaped (``\\x1b``) in every table, never
sent raw (ESC[8m would hide the rest of the table, ESC[2J clear the screen), and rich
markup in a name is printed as it is. JSON and CSV keep the exact text."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger.cli import app
from costledger.cli._output import printable

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
HOSTILE_USER = "mallory\x1b[8m"
RAW = ("\x1b", "\x9b", "\x07", "\x7f", "\u202e", "\r")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def event(total: str, **fields: Any) -> UsageEvent:
    fields.setdefault("model", "gpt-4o")
    return UsageEvent(
        timestamp=JUNE,
        usage=Usage(input_tokens=10, output_tokens=5),
        cost=Cost("priced", total=Decimal(total), currency="USD"),
        **fields,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            [
                event(
                    "100",
                    user=HOSTILE_USER,
                    team="ads\x1b[2J",
                    feature="chat\nline2",
                    tags=("t\x9b31m",),
                ),
                event("1", user="[bold]alice[/bold]", team="sea\u202erch", feature="x\x07\x7f\r"),
            ]
        )
    return url


def assert_no_raw_controls(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)


def test_printable_escapes_controls_and_keeps_the_rest() -> None:
    assert printable("mallory\x1b[8m") == "mallory\\x1b[8m"
    assert printable("a\tb\nc\rd") == "a\\tb\\nc\\rd"
    assert printable("\x00\x7f\x85\x9b") == "\\x00\\x7f\\x85\\x9b"
    assert printable("ab\u202ecd\u2066\u2028") == "ab\\u202ecd\\u2066\\u2028"
    # text, not controls: accents, emoji (with its zero-width joiner), markup, backslashes
    kept = "ünïcødé 😀 👩\u200d👩\u200d👧 [bold]x[/bold] C:\\books :smile:"
    assert printable(kept) == kept


@pytest.mark.parametrize("by", ["user", "team", "feature", "tag", "user,team,feature,tag"])
def test_report_table_shows_controls_escaped(db: str, by: str) -> None:
    result = run("report", "--db", db, "--by", by)
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.stdout)
    if "user" in by:
        assert "mallory\\x1b[8m" in result.stdout
        assert "[bold]alice[/bold]" in result.stdout  # markup is a name, printed as it is
    if "team" in by:
        assert "ads\\x1b[2J" in result.stdout
        assert "sea\\u202erch" in result.stdout
    if "feature" in by:
        assert "chat\\nline2" in result.stdout
        assert "x\\x07\\x7f\\r" in result.stdout
    if "tag" in by:
        assert "t\\x9b31m" in result.stdout
    # every group is still on its own line: the hostile one did not break or hide a row
    lines = result.stdout.splitlines()
    assert any(line.startswith("mallory\\x1b[8m") for line in lines) or "user" not in by


def test_top_table_shows_controls_escaped(db: str) -> None:
    result = run("top", "--db", db)
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.stdout)
    assert "mallory\\x1b[8m" in result.stdout
    assert "ads\\x1b[2J" in result.stdout
    assert "chat\\nline2" in result.stdout
    assert "[bold]alice[/bold]" in result.stdout


def test_whatif_title_and_cells_escaped(db: str, tmp_path: Path) -> None:
    book = tmp_path / "book\x1b[2J.toml"
    book.write_text(
        '["gpt\\u001b[8m"]\ninput = "1"\noutput = "1"\n["gpt-4o"]\ninput = "1"\noutput = "1"\n'
    )
    result = run("whatif", "--db", db, "-p", str(book))
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.stdout)
    assert_no_raw_controls(result.stderr)
    assert "book\\x1b[2J.toml" in result.stdout  # the title, built from the path


def test_json_and_csv_keep_the_exact_text(db: str) -> None:
    result = run("report", "--db", db, "--by", "user,feature", "--format", "json")
    assert result.exit_code == 0, result.output
    users = {row["user"] for row in json.loads(result.stdout)}
    assert users == {HOSTILE_USER, "[bold]alice[/bold]"}
    result = run("report", "--db", db, "--by", "user,feature", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["user"] for r in rows} == {HOSTILE_USER, "[bold]alice[/bold]"}
    assert {r["feature"] for r in rows} == {"chat\nline2", "x\x07\x7f\r"}
