"""``durable=True`` under failure: what ``stats()`` says while the database is down, and
calls made through the entry points surviving a SIGKILL right after they returned."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger


def _event(i: int) -> UsageEvent:
    return UsageEvent(
        id=f"ev-{i}",
        model="gpt-4o",
        usage=Usage(input_tokens=10 + i, output_tokens=1),
        cost=Cost(status="priced", total=Decimal("0.000000037500") * (i + 1)),
    )


def _spooled_lines(directory: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in directory.glob("[0-9]*.jsonl"))


@pytest.mark.parametrize("durable", [False, True])
def test_spooled_counts_the_events_waiting_in_the_spool_when_durable_too(
    tmp_path: Path, durable: bool
) -> None:
    """The database cannot be opened: every event waits in the spool, and ``spooled`` says
    how many, durable or not (a durable event's line is already in its segment: it was
    counted nowhere). Once the database is back they are replayed, and counted there."""
    blocker = tmp_path / "data"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker / 'ledger.db'}"
    spool = tmp_path / "spool"
    ledger = Ledger(url, spool_dir=spool, durable=durable, batch_size=10, flush_interval=0.05)
    try:
        for i in range(25):
            ledger.record(_event(i))
        assert ledger.flush(timeout=30) is False
        for i in range(25, 40):  # while it backs off: straight to the spool
            ledger.record(_event(i))
        assert ledger.flush(timeout=30) is False
        stats = ledger.stats()
        assert (stats.recorded, stats.inserted, stats.spooled, stats.buffered) == (40, 0, 40, 0)
        assert (stats.dropped, stats.healthy) == (0, False)
        assert _spooled_lines(spool) == 40

        blocker.unlink()  # the operator fixes the path
        deadline = time.monotonic() + 60
        while ledger.stats().replayed < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ledger.flush(timeout=30)
        stats = ledger.stats()
        assert (stats.spooled, stats.replayed, stats.inserted, stats.duplicates) == (40, 40, 40, 0)
        stored = {e.id: e.total_cost for e in ledger.events()}
        assert stored == {f"ev-{i}": Decimal("0.000000037500") * (i + 1) for i in range(40)}
        assert sum(stored.values()) == Decimal("0.0000307500")
        assert list(spool.glob("[0-9]*.jsonl")) == []
    finally:
        ledger.close()
