"""A missing optional package raises ``ImportError`` saying what to ``pip install``, as
psycopg, redis and OpenTelemetry already did: Parquet export without pyarrow raised
``ValueError``, the dashboard page without plotly ``RuntimeError``, so a caller catching
``ImportError`` for "extra not installed" missed them. The command line still prints one
line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from costledger import Tracker, Usage, build_dashboard, export, render_dashboard, write_dashboard
from costledger._dashboard._page import plotly_js
from costledger._ledger import Ledger

PARQUET = (
    "Parquet export needs the 'pyarrow' package, which is not installed: "
    "pip install 'costledger[parquet]'"
)
PLOTLY = (
    "the dashboard needs the 'plotly' package, which is not installed: "
    "pip install 'costledger[dashboard]'"
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger(url, sync=True) as ledger:
        Tracker(ledger, log="off").record("gpt-4o-mini", Usage(1000, 100))
    return url


@pytest.fixture
def no_plotly(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [m for m in sys.modules if m == "plotly" or m.startswith("plotly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # as when it is not installed
    plotly_js.cache_clear()
    yield
    plotly_js.cache_clear()


def test_parquet_without_pyarrow(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    target = tmp_path / "calls.parquet"
    with pytest.raises(ImportError) as info:
        export(url, target)
    assert str(info.value) == PARQUET
    assert info.value.name == "pyarrow"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.db"]  # no file, no .part


def test_dashboard_without_plotly(url: str, tmp_path: Path, no_plotly: None) -> None:
    data = build_dashboard(url)
    for make in (
        lambda: render_dashboard(data),
        lambda: write_dashboard(data, tmp_path / "d.html"),
    ):
        with pytest.raises(ImportError) as info:
            make()
        assert str(info.value) == PLOTLY
        assert info.value.name == "plotly"
    assert not (tmp_path / "d.html").exists()


def test_cli_export_says_what_to_install(url: str, tmp_path: Path) -> None:
    code = "import sys\nsys.modules['pyarrow'] = None\nfrom costledger.cli import main\nmain()\n"
    target = tmp_path / "x.parquet"
    result = subprocess.run(
        [sys.executable, "-c", code, "export", "-o", str(target), "--db", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {PARQUET}\n")
    assert not target.exists()
