"""``Tracker.record`` is typed to return the event, and ``finish`` never raises into the host,
even when the last-resort event of a failed tracking cannot be built."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from costledger import Tracker, Usage, UsageEvent
from costledger._tracker import Call
from costledger.testing import InMemoryLedger

ROOT = Path(__file__).resolve().parents[1]


class Holds:
    """A guard that remembers what it reserved, settled and released."""

    def __init__(self) -> None:
        self.settled: list[UsageEvent] = []
        self.released: list[Any] = []

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.settled.append(event)

    def release(self, token: Any) -> None:
        self.released.append(token)


def test_record_is_typed_as_returning_the_event(tmp_path: Path) -> None:
    snippet = tmp_path / "uses_record.py"
    snippet.write_text(
        "from decimal import Decimal\n"
        "from costledger import Tracker, Usage, UsageEvent\n"
        "from costledger.testing import InMemoryLedger\n"
        "tracker = Tracker(InMemoryLedger(), log='off')\n"
        "total: Decimal | None = tracker.record('gpt-4o-mini', Usage(10, 5)).cost.total\n"
        "now: UsageEvent = tracker.record('gpt-4o-mini', Usage(1, 1), defer=False)\n"
        "later: UsageEvent | None = tracker.record('gpt-4o-mini', Usage(1, 1), defer=True)\n"
        "maybe: UsageEvent | None = tracker.record('m', Usage(1, 1), defer=bool(total))\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_record_returns_the_event_and_defer_still_returns_none() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    event = tracker.record("gpt-4o-mini", Usage(input_tokens=10, output_tokens=5))
    assert event.cost.total == Decimal("0.0000045")  # 10 x $0.15 + 5 x $0.60, per MTok
    assert tracker.record("gpt-4o-mini", Usage(1, 1), defer=True) is None
    tracker.ledger.flush()
    assert len(list(tracker.ledger.events())) == 2  # type: ignore[attr-defined]


def test_finish_keeps_a_bare_event_when_even_the_usage_free_one_fails() -> None:
    holds = Holds()
    tracker = Tracker(InMemoryLedger(), log="off", guards=[holds], team="core")
    call = tracker.start(source="api", model="gpt-4o-mini", attribution={"user": "u1"})
    # A latency that is not a number breaks every event _build_event makes: with the usage
    # and without it. The call is still recorded, bare, and nothing reaches the host.
    event = tracker.finish(
        call,
        usage=Usage(10, 5),
        latency_ms="slow",  # type: ignore[arg-type]
        metadata={"k": "v"},
    )
    assert event is not None
    assert (event.id, event.model, event.source, event.status) == (
        call.id,
        "gpt-4o-mini",
        "api",
        "ok",
    )
    assert event.cost.status == "not_priced"
    assert event.usage == Usage()
    assert dict(event.metadata) == {"costledger.tracking_error": "TypeError"}
    (stored,) = tracker.ledger.events()  # type: ignore[attr-defined]
    assert stored.id == call.id
    assert holds.settled == [event]


def test_finish_returns_none_without_raising_when_no_event_can_be_built() -> None:
    holds = Holds()
    tracker = Tracker(InMemoryLedger(), log="off", guards=[holds])
    call = tracker.start(source="api", model="gpt-4o-mini")
    call._started_at = "not a time"  # type: ignore[assignment]  # corrupted beyond repair
    assert tracker.finish(call, usage=Usage(10, 5)) is None
    assert list(tracker.ledger.events()) == []  # type: ignore[attr-defined]
    # what the guard held is given back, not left reserved
    assert holds.released == [call.id]
    assert holds.settled == []
