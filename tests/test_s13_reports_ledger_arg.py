"""What the read functions take as ``ledger``: a ``Tracker.ledger`` type-checks (it is typed
``LedgerLike``, so ``report(tracker.ledger)``, as the docs write it, failed ``mypy
--strict``), anything but a ``Ledger`` or a URL is a ``TypeError`` naming its type, and
``rebuild_rollups`` takes a database URL like the others (it raised ``TypeError``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from costledger import (
    Cost,
    Tracker,
    Usage,
    UsageEvent,
    export,
    rebuild_rollups,
    report,
    reprice,
    top,
    whatif,
)
from costledger._ledger import Ledger
from costledger.testing import InMemoryLedger

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)


class OnlyRecords:
    """A ledger a Tracker accepts (it records) but reports cannot read."""

    def record(self, event: UsageEvent) -> None:
        pass

    def __repr__(self) -> str:
        return "OnlyRecords()"


READERS: dict[str, Callable[[Any, Path], object]] = {
    "report": lambda led, _: report(led),
    "top": lambda led, _: top(led),
    "whatif": lambda led, _: whatif(led, {"m": {"input": "1", "output": "1"}}),
    "reprice": lambda led, _: reprice(led),
    "export": lambda led, tmp: export(led, tmp / "out.csv"),
    "rebuild_rollups": lambda led, _: rebuild_rollups(led),
}


def test_a_tracker_s_ledger_type_checks(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(
        "from costledger import Tracker, export, rebuild_rollups, report, reprice, top, whatif\n"
        "from costledger.testing import InMemoryLedger\n"
        "tracker = Tracker(InMemoryLedger())\n"
        "report(tracker.ledger, by='model')\n"
        "top(tracker.ledger, 5)\n"
        "whatif(tracker.ledger, {'m': {'input': '1', 'output': '1'}})\n"
        "reprice(tracker.ledger)\n"
        "export(tracker.ledger, 'out.csv')\n"
        "n: int = rebuild_rollups(tracker.ledger) + rebuild_rollups('sqlite:///c.db')\n"
    )
    api = pytest.importorskip("mypy.api")
    out, err, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", "/dev/null", str(user)]
    )
    assert (status, out.strip()) == (0, "Success: no issues found in 1 source file"), err


@pytest.mark.parametrize("name", list(READERS))
def test_a_tracker_s_ledger_is_read(name: str, tmp_path: Path) -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    tracker.record("gpt-4o-mini", Usage(1000, 100))
    READERS[name](tracker.ledger, tmp_path)  # no error: it is the Ledger itself


@pytest.mark.parametrize("name", list(READERS))
@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (
            OnlyRecords(),
            f"{__name__}.OnlyRecords OnlyRecords() (an object that only records calls "
            "cannot be read back)",
        ),
        (5, "builtins.int 5"),
        (Path("c.db"), "pathlib.PosixPath PosixPath('c.db')"),
    ],
)
def test_anything_else_names_its_type(name: str, given: object, shown: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError) as info:
        READERS[name](given, tmp_path)
    assert str(info.value) == f"ledger must be a costledger Ledger or a database URL, got {shown}"


def test_rebuild_rollups_takes_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record(
            UsageEvent(
                model="m",
                usage=Usage(1, 1),
                cost=Cost("priced", total=Decimal("0.25")),
                id="kept",
                timestamp=JUNE,
            )
        )
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a row inserted behind the ledger's back
        conn.exec_driver_sql(
            "INSERT INTO costledger_events (id, timestamp, source, status, pricing_status, "
            "currency, total_cost, input_tokens, output_tokens) VALUES ('behind', "
            "'2025-06-01T13:00:00.000000+00:00', 'api', 'ok', 'priced', 'USD', '0.5', 2, 2)"
        )
    engine.dispose()
    assert report(url).totals[0].cost == Decimal("0.25")  # the rollups do not see it
    assert rebuild_rollups(url) == 2
    [total] = report(url).totals
    assert (total.requests, total.cost) == (2, Decimal("0.75"))
    with pytest.raises(FileNotFoundError, match=r"^no ledger at sqlite:///.*missing\.db"):
        rebuild_rollups(f"sqlite:///{tmp_path / 'missing.db'}")
