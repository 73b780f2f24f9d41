"""A command that only reads a ledger refuses a SQLite file that holds none (another
application's database, an empty file) instead of writing the ledger's tables into it and
answering "no calls match", as a mistyped path would. ``export`` refuses an output that is
a directory before it reads anything (it wrote every row to ``<dir>.part``, then failed
with a raw OS error naming that file)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger import Ledger, Tracker, Usage, export, report
from costledger.cli import app


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER)")
    return path


@pytest.mark.parametrize("command", ["report", "top", "export", "whatif"])
def test_a_read_command_leaves_a_foreign_database_alone(
    foreign: Path, command: str, tmp_path: Path
) -> None:
    args = [command, "--db", f"sqlite:///{foreign}"]
    if command == "whatif":
        book = tmp_path / "book.toml"
        book.write_text('["gpt-4o-mini"]\ninput = "0.1"\noutput = "0.4"\n')
        args += ["--price-book", str(book)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert f"file {foreign} has no costledger tables" in result.output
    assert _tables(foreign) == {"orders"}


def test_the_python_api_refuses_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(FileNotFoundError, match="has no costledger tables"):
        report(f"sqlite:///{empty}")
    assert empty.stat().st_size == 0


def test_a_ledger_is_read_as_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    with Ledger(url, sync=True) as ledger:
        Tracker(ledger, log="off").record(
            "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=100)
        )
    [row] = report(url).rows
    assert row.cost == Decimal("0.00021")


def test_export_refuses_a_directory_before_reading(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    with Ledger(url, sync=True) as ledger:
        Tracker(ledger, log="off").record(
            "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=100)
        )
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(app, ["export", "--db", url, "-o", str(out)])
    assert result.exit_code == 1
    assert f"--output {str(out)!r} is a directory; give a file name" in result.output
    with pytest.raises(IsADirectoryError, match="it is a directory; give a file name"):
        export(url, out)
    assert not (tmp_path / "out.part").exists()
