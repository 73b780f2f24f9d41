"""The Tracker path end to end on the real pricer and a real (in-memory SQLite) ledger."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import costledger
from costledger import BudgetExceeded, Tracker, Usage, UsageEvent, attribute, drain_deferred
from costledger._pricing import Pricer
from costledger._tracker import Call
from costledger.testing import InMemoryLedger, capture_costs

# gpt-4o-mini: $0.15 / MTok input, $0.075 cached input, $0.60 output (genai-prices).
GPT4O_MINI_1200_1024_300 = Decimal("0.0002832")


@pytest.fixture
def tracker() -> Tracker:
    return Tracker(InMemoryLedger(), log="off", team="core")


def test_record_prices_exactly_and_stores_one_row(tracker: Tracker) -> None:
    usage = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024)
    event = tracker.record("gpt-4o-mini", usage, provider="openai")
    assert event is not None
    assert event.cost.total == GPT4O_MINI_1200_1024_300
    assert event.cost.input == Decimal("0.0000264")
    assert event.cost.cache_read == Decimal("0.0000768")
    assert event.cost.output == Decimal("0.00018")
    rows = list(tracker.ledger.events())  # type: ignore[attr-defined]
    assert [(r.id, r.total_cost, r.team) for r in rows] == [(event.id, event.cost.total, "core")]


def test_attribution_merges_default_scope_and_call(tracker: Tracker) -> None:
    with attribute(user="u1", feature="search", tags=["beta"], env="prod"):
        event = tracker.record(
            "gpt-4o-mini",
            Usage(10, 5),
            attribution={"feature": "rerank", "tags": ["x"], "api_key": "sk-proj-" + "a" * 40},
        )
    assert event is not None
    assert (event.user, event.team, event.feature) == ("u1", "core", "rerank")
    assert event.tags == ("beta", "x")
    assert event.metadata["env"] == "prod"
    assert "sk-proj-" not in repr(event.metadata)


def test_unknown_model_is_unpriced_never_zero(tracker: Tracker) -> None:
    event = tracker.record("totally-made-up-model-9000", Usage(100, 10))
    assert event is not None
    assert event.cost.status == "unknown_model"
    assert event.cost.total is None


def test_finish_never_raises_on_garbage_and_keeps_the_call(tracker: Tracker) -> None:
    call = tracker.start(source="api", model="gpt-4o-mini")
    event = tracker.finish(call, payload={"usage": {"prompt_tokens": -5, "completion_tokens": 1}})
    assert event is not None
    assert event.cost.status == "not_priced"
    assert event.metadata["costledger.tracking_error"] == "UsageError"
    assert tracker.finish(call, usage=Usage(1, 1)) is None  # a call finishes once
    assert len(list(tracker.ledger.events())) == 1  # type: ignore[attr-defined]


def test_ledger_failure_is_swallowed() -> None:
    class Broken:
        def record(self, event: UsageEvent) -> None:
            raise RuntimeError("disk on fire")

    tracker = Tracker(Broken(), log="off")
    assert tracker.record("gpt-4o-mini", Usage(1, 1)) is not None


def test_payload_gives_usage_model_and_request_id(tracker: Tracker) -> None:
    call = tracker.start(source="api", model="gpt-4o-mini", provider="openai")
    event = tracker.finish(
        call,
        payload={
            "id": "chatcmpl-123",
            "model": "gpt-4o-mini-2024-07-18",
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1024},
            },
        },
    )
    assert event is not None
    assert (event.request_id, event.response_model) == ("chatcmpl-123", "gpt-4o-mini-2024-07-18")
    assert event.cost.total == GPT4O_MINI_1200_1024_300


class RefuseOver:
    """A minimal guard: refuses once reserved + spent would pass a limit."""

    def __init__(self, limit: Decimal) -> None:
        self.limit, self.spent, self.reserved = limit, Decimal(0), Decimal(0)
        self.released = 0

    def reserve(self, call: Call, tracker: Tracker) -> Decimal:
        amount = call.estimate or Decimal(0)
        if self.spent + self.reserved + amount > self.limit:
            raise BudgetExceeded(
                "over",
                scope="test",
                key=None,
                limit=self.limit,
                spent=self.spent,
                reserved=self.reserved,
                resets_at=None,
            )
        self.reserved += amount
        return amount

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.reserved -= token
        self.spent += event.cost.total or Decimal(0)

    def release(self, token: Any) -> None:
        self.reserved -= token
        self.released += 1


def test_guards_reserve_settle_release_and_refuse() -> None:
    guard = RefuseOver(Decimal("0.001"))
    tracker = Tracker(InMemoryLedger(), guards=[guard], log="off")
    call = tracker.start(source="api", model="gpt-4o-mini", estimate=Decimal("0.0008"))
    assert guard.reserved == Decimal("0.0008")
    with pytest.raises(BudgetExceeded):
        tracker.start(source="api", model="gpt-4o-mini", estimate=Decimal("0.0005"))
    tracker.finish(call, usage=Usage(1200, 300, cache_read_tokens=1024))
    assert (guard.reserved, guard.spent) == (Decimal(0), GPT4O_MINI_1200_1024_300)
    failed = tracker.start(source="api", model="gpt-4o-mini", estimate=Decimal("0.0005"))
    tracker.finish(failed, status="error", error=TimeoutError())
    assert guard.released == 1
    assert guard.reserved == 0


def test_capture_costs_swaps_the_default_tracker() -> None:
    before = costledger.get_tracker()
    with capture_costs() as costs:
        costledger.get_tracker().record("gpt-4o-mini", Usage(1200, 300, cache_read_tokens=1024))
        costledger.get_tracker().record("no-such-model-x", Usage(1, 1))
    assert costledger.get_tracker() is before
    assert len(costs) == 2
    assert costs.total == GPT4O_MINI_1200_1024_300
    assert [e.model for e in costs.unpriced] == ["no-such-model-x"]


def test_cancelled_while_a_guard_waits_releases_earlier_reservations() -> None:
    import asyncio

    first = RefuseOver(Decimal(1))

    class Waits:
        async def areserve(self, call: Call, tracker: Tracker) -> None:
            await asyncio.sleep(10)

        def reserve(self, call: Call, tracker: Tracker) -> None:
            raise AssertionError("async path expected")

        def settle(self, token: Any, event: UsageEvent) -> None:
            pass

        def release(self, token: Any) -> None:
            pass

    tracker = Tracker(InMemoryLedger(), guards=[first, Waits()], log="off")

    async def main() -> None:
        task = asyncio.create_task(
            tracker.astart(source="api", model="gpt-4o-mini", estimate=Decimal("0.5"))
        )
        await asyncio.sleep(0.01)
        assert first.reserved == Decimal("0.5")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # given back off the event loop (a guard of the host's may wait on I/O): drained here
    assert drain_deferred(10)
    assert first.reserved == 0
    assert first.released == 1


def _uuid7_ms(event_id: str) -> int:
    return int(event_id.replace("-", "")[:12], 16)


def test_call_id_and_start_are_made_lazily_from_the_start_clock(tracker: Tracker) -> None:
    import time
    from datetime import timezone

    call = tracker.start(source="api", model="gpt-4o-mini", provider="openai")
    time.sleep(0.02)  # the id is made later, but dated at the start
    assert call._id is None
    assert call._started_at is None
    started_ms = int(call._wall * 1000)
    assert call.started_at.tzinfo is timezone.utc
    assert int(call.started_at.timestamp() * 1000) == started_ms
    # Ids never sort before one the process already made: a call another test left to a
    # background thread (a LiteLLM callback arriving late) may have made a newer one in
    # the sleep. Wind the process's last id back to the start, as if none had been made.
    from costledger import _events

    with _events._id_lock:
        _events._last_ms = min(_events._last_ms, started_ms)
    assert _uuid7_ms(call.id) >= started_ms
    assert _uuid7_ms(call.id) < started_ms + 20  # not "now", which is 20 ms later
    assert call.id == call.id  # made once
    event = tracker.finish(call, usage=Usage(10, 5))
    assert event is not None
    assert (event.id, event.timestamp) == (call.id, call.started_at)


def test_call_started_at_can_be_set_by_an_entry_point(tracker: Tracker) -> None:
    from datetime import datetime, timezone

    call = tracker.start(source="litellm", model="gpt-4o-mini")
    at = datetime(2025, 3, 9, 12, 0, 0, 250000, tzinfo=timezone.utc)
    call.started_at = at  # LiteLLM's own clock
    assert call.started_at == at
    assert _uuid7_ms(call.id) >= int(at.timestamp() * 1000)
    event = tracker.finish(call, usage=Usage(10, 5))
    assert event is not None
    assert event.timestamp == at


def test_new_event_id_dated_earlier_never_sorts_before_an_earlier_id() -> None:
    from costledger._events import new_event_id

    now = new_event_id()
    older = new_event_id(_uuid7_ms(now) - 60_000)  # a minute earlier than one already made
    assert older > now
    assert len({new_event_id(0) for _ in range(5000)}) == 5000


def test_a_call_finished_at_interpreter_shutdown_does_not_hang_the_exit(tmp_path: Path) -> None:
    """The first deferred finish of a process, made while it shuts down (an object the GC
    collects then), runs in place: a new thread then hung Python 3.11's exit."""
    script = tmp_path / "late.py"
    script.write_text(
        "from costledger import Tracker, Usage\n"
        "from costledger.testing import InMemoryLedger\n"
        "tracker = Tracker(InMemoryLedger(), log='off')\n"
        "call = tracker.start(source='api', model='gpt-4o-mini')\n"
        "class Late:\n"
        "    def __del__(self):\n"
        "        tracker.finish(call, usage=Usage(10, 5), defer=True)\n"
        "        print('finished at shutdown', call.finished, flush=True)\n"
        "late = Late()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, "finished at shutdown True\n")


def test_capture_costs_does_not_see_calls_finished_before_it() -> None:
    """A call finished (deferred) before the block may still be on the worker when the block
    starts: it is not the block's."""
    tracker = Tracker(InMemoryLedger(), log="off")
    calls = [tracker.start(source="api", model="gpt-4o-mini") for _ in range(50)]
    for call in calls:
        tracker.finish(call, usage=Usage(10, 5), defer=True)
    with capture_costs() as costs:
        tracker.record("gpt-4o-mini", Usage(1200, 300, cache_read_tokens=1024))
    assert [e.cost.total for e in costs.events] == [GPT4O_MINI_1200_1024_300]


def test_secrets_in_attribution_and_error_text_never_reach_a_row() -> None:
    key = "sk-proj-" + "Q7w" * 16 + "xQz"
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, log="off")
    with attribute(user=f"Bearer {key}", team=key, feature=f"api_key={key}", tags=[key, "ok"]):
        call = tracker.start(source="api", model="gpt-4o-mini")
    tracker.finish(call, status="error", error=f"upstream said Bearer {key}")
    (row,) = list(ledger.events())
    shown = repr(row)
    assert "xQz" not in shown
    assert "Q7wQ7w" not in shown
    assert (row.user, row.team, row.feature) == (
        "Bearer [REDACTED]",
        "[REDACTED]",
        "api_key=[REDACTED]",
    )
    assert row.tags == ["[REDACTED]", "ok"]
    assert row.error_type == "upstream said Bearer [REDACTED]"


def test_a_failed_pricing_keeps_the_usage_and_leaves_the_call_unpriced() -> None:
    """The call was made and billed: its tokens stay, unpriced (for reprice), never dropped."""

    class BrokenPricer(Pricer):
        def price(self, *args: Any, **kwargs: Any) -> Any:
            raise ArithmeticError("a price book the card cannot use")

    ledger = InMemoryLedger()
    tracker = Tracker(ledger, pricer=BrokenPricer(), log="off")
    event = tracker.record("gpt-4o-mini", Usage(1200, 300, cache_read_tokens=1024))
    assert event is not None
    assert event.usage == Usage(1200, 300, cache_read_tokens=1024)
    assert (event.cost.status, event.cost.total) == ("unknown_model", None)
    assert event.metadata["costledger.tracking_error"] == "ArithmeticError"
    (row,) = list(ledger.events())
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens) == (1200, 300, 1024)
