"""``costledger demo`` goes through every entry point and prints an exact report."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from costledger import Ledger
from costledger.cli import app


def test_demo_records_every_entry_point_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    result = CliRunner().invoke(app, ["demo", "--db", url])
    assert result.exit_code == 0, result.output
    assert "entry points: api, decorator, http, langchain, litellm" in result.output
    assert "total: 0.0250086 USD" in result.output
    with Ledger(url) as ledger:
        rows = list(ledger.events())
        by_source: dict[str, int] = {}
        for row in rows:
            by_source[row.source] = by_source.get(row.source, 0) + 1
        assert by_source == {"api": 5, "decorator": 2, "http": 1, "langchain": 3, "litellm": 2}
        priced = sum((r.total_cost for r in rows if r.total_cost is not None), Decimal(0))
        assert priced == Decimal("0.0250086")
        assert [r.model for r in rows if r.total_cost is None] == ["my-private-finetune"]
