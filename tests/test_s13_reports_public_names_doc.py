"""Public names the docs did not describe: ``costledger.LedgerStats`` (docs/ledger.md, every
field in a table) and ``costledger.UnpricedCall`` (docs/reports.md, with its fields). The
counters the table describes are checked on a real ledger."""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from pathlib import Path

import costledger
from costledger import Cost, Ledger, LedgerStats, UnpricedCall, Usage, UsageEvent

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_ledger_stats_fields_are_all_in_the_table() -> None:
    text = (DOCS / "ledger.md").read_text(encoding="utf-8")
    assert "`stats()` returns a `costledger.LedgerStats` (frozen)" in text
    documented = re.findall(r"^  \| `(\w+)` \| ", text, flags=re.MULTILINE)
    assert documented == [f.name for f in dataclasses.fields(LedgerStats)]
    assert "LedgerStats" in costledger.__all__


def test_unpriced_call_is_described_with_its_fields() -> None:
    text = (DOCS / "reports.md").read_text(encoding="utf-8")
    fields = ", ".join(f"`{f.name}`" for f in dataclasses.fields(UnpricedCall))
    assert f"each a `costledger.UnpricedCall` with {fields} and `as_dict()`" in text
    assert "UnpricedCall" in costledger.__all__


def test_the_counters_mean_what_the_table_says(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    event = UsageEvent(
        model="m", usage=Usage(1, 1), cost=Cost("priced", total=Decimal("0.5")), id="same"
    )
    with Ledger(url, sync=True) as ledger:
        ledger.record(event)
        ledger.record(event)  # the same id again: a duplicate
        stats = ledger.stats()
    assert (stats.recorded, stats.inserted, stats.duplicates) == (2, 1, 1)
    assert (stats.spooled, stats.replayed, stats.rejected, stats.dropped) == (0, 0, 0, 0)
    assert (stats.torn_lines, stats.buffered, stats.healthy, stats.last_error) == (
        0,
        0,
        True,
        None,
    )
