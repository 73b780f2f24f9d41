"""``-o -`` is stdout (the convention), never a file named ``-``; a page or an export
into a missing directory is refused naming the file and the directory, not a temporary
file."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent
from costledger._dashboard import build_dashboard, write_dashboard
from costledger._ledger import Ledger
from costledger.cli import app

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
CLI = [sys.executable, "-c", "from costledger.cli import main; main()"]


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            [
                UsageEvent(
                    model="gpt-4o",
                    usage=Usage(10, 5),
                    cost=Cost("priced", total=Decimal(total)),
                    timestamp=JUNE,
                    user=f"u{i}",
                )
                for i, total in enumerate(("0.25", "0.000000000000000001"))
            ]
        )
    return url


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


@pytest.mark.parametrize("fmt", ["jsonl", "csv", None])
def test_export_dash_is_stdout(db: str, cwd: Path, fmt: str | None) -> None:
    args = ["export", "--db", db, "-o", "-"] + (["-f", fmt] if fmt else [])
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert list(cwd.iterdir()) == []  # no file named '-'
    assert result.stderr == ""  # as without -o: no "exported ... to -"
    plain = run("export", "--db", db, *(["-f", fmt] if fmt else []))
    assert result.stdout == plain.stdout
    if fmt == "jsonl":
        totals = [json.loads(line)["costledger.cost.total"] for line in result.stdout.splitlines()]
        assert totals == ["0.25", "0.000000000000000001"]
    else:
        assert result.stdout.splitlines()[0].startswith("id,timestamp,")


def test_export_parquet_to_a_pipe_but_not_to_a_terminal(db: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    piped = subprocess.run(
        [*CLI, "export", "--db", db, "-o", "-", "-f", "parquet"],
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    table = pq.read_table(io.BytesIO(piped.stdout))
    assert [str(v.as_py().normalize()) for v in table.column("total_cost")] == ["0.25", "1E-18"]
    assert not (tmp_path / "-").exists()
    if shutil.which("script") is None:
        pytest.skip("no 'script' to run the command on a terminal")
    command = " ".join([*CLI[:2], repr(CLI[2]), "export", "--db", db, "-o", "-", "-f", "parquet"])
    tty = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, check=False)
    assert tty.returncode == 2
    assert (
        b"error: Invalid value for '--format': parquet is not written to a terminal: give "
        b"-o FILE.parquet, or pipe or redirect stdout" in tty.stdout
    )


def test_write_dashboard_into_a_missing_directory_names_it(db: str, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.html"
    data = build_dashboard(db, now=JUNE)
    with pytest.raises(FileNotFoundError) as raised:
        write_dashboard(data, target)
    assert str(raised.value) == (
        f"cannot write {str(target)!r}: directory {str(target.parent)!r} is missing"
    )
    assert not (tmp_path / "missing").exists()
    pytest.importorskip("plotly")
    result = run("dashboard", "--db", db, "-o", str(target))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot write {str(target)!r}: directory {str(target.parent)!r} is missing\n"
    )
    export = run("export", "--db", db, "-o", str(tmp_path / "missing" / "x.csv"))
    assert export.stderr.replace("x.csv", "x.html") == result.stderr  # the same message
    assert not (tmp_path / "missing").exists()
