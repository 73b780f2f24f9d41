"""A missing optional dependency (an extra not installed) ends a CLI command at once with one
clean line saying what to ``pip install``, exit code 1: not an "unexpected error" line, and
``costledger serve`` without Plotly does not start a dashboard without charts.

Each command runs in a subprocess where the package is made unimportable
(``sys.modules[name] = None``), as when the extra is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from costledger._ledger import Ledger

from .test_reports_helpers import history

PLOTLY = "error: the dashboard needs the 'plotly' package, which is not installed: pip install 'costledger[dashboard]'\n"  # noqa: E501


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(history(20, seed=4))
    return url


def run_without(
    blocked: tuple[str, ...], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from costledger.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_dashboard_without_plotly_says_what_to_install(db: str, tmp_path: Path) -> None:
    out = tmp_path / "d.html"
    result = run_without(("plotly",), "dashboard", "-o", str(out), "--db", db)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", PLOTLY)
    assert not out.exists()


def test_serve_without_plotly_fails_at_start_with_the_same_line(db: str) -> None:
    # Before, it started and served a page with no charts that never updated: the run
    # only ended at the timeout.
    result = run_without(("plotly",), "serve", "--port", "0", "--db", db, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", PLOTLY)


def test_a_postgres_ledger_without_psycopg_says_what_to_install() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    result = run_without(("psycopg",), "report", "--db", url)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: a postgresql ledger (postgresql+psycopg://postgres@127.0.0.1:5432/test) "
        "needs the 'psycopg' package, which is not installed: pip install 'costledger[postgres]'\n"
    )


def test_a_redis_guard_store_without_redis_says_what_to_install(db: str, tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\nlimit = "10 USD"\nperiod = "month"\n')
    store = "redis://127.0.0.1:6379/0"
    args = ("--budgets", str(budgets), "--guard-store", store, "--db", db)
    result = run_without(("redis",), "budget", "status", *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: guard store {store} needs the 'redis' package, which is not installed: "
        "pip install 'costledger[redis]'\n"
    )


def test_a_bare_missing_extra_module_gets_the_install_hint() -> None:
    from costledger.cli._app import _missing_dependency_line

    missing = ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")
    assert _missing_dependency_line(missing) == (
        "this command needs the 'pyarrow' package, which is not installed: "
        "pip install 'costledger[parquet]'"
    )
    # anything else is not a missing extra: it stays an unexpected error
    assert _missing_dependency_line(ModuleNotFoundError("x", name="leftpad")) is None
    assert _missing_dependency_line(ImportError("cannot import name 'x' from 'y'")) is None
