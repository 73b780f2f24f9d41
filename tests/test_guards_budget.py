"""Budgets through the real Tracker on the in-process store: refusals, alerts, keys, periods,
reservations, restarts and store failures."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

import costledger
from costledger import BudgetExceeded, GuardRefusal, GuardStoreUnavailable, Tracker, Usage
from costledger._guards import (
    Budget,
    BudgetAlert,
    Estimator,
    RateLimit,
    budget_status,
    flush_alerts,
    webhook_alert,
)
from costledger._ledger import InMemoryLedger, Ledger
from costledger._pricing import Pricer
from costledger._tracker import Call

CENT = Decimal("0.01")
# 1,000 input tokens of "m" cost exactly one cent; 1,000 output tokens two cents.
PRICES = {"m": {"input": "10", "output": "20"}}


class Clock:
    def __init__(self, when: str = "2026-03-10T12:00:00+00:00") -> None:
        self.now = datetime.fromisoformat(when).timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: str) -> None:
        self.now = datetime.fromisoformat(when).timestamp()


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer(PRICES, genai_prices=False, litellm=False)


def make_tracker(pricer: Pricer, *guards: Any, ledger: Any = None, **kwargs: Any) -> Tracker:
    return Tracker(ledger or InMemoryLedger(), pricer, guards, log="off", **kwargs)


def spend(
    tracker: Tracker,
    cents: int = 1,
    *,
    estimate: Decimal | None = CENT,
    model: str = "m",
    **attribution: Any,
) -> costledger.UsageEvent | None:
    """One call that costs ``cents`` (and reserves ``estimate``)."""
    call = tracker.start(source="api", model=model, attribution=attribution, estimate=estimate)
    return tracker.finish(call, usage=Usage(input_tokens=1000 * cents))


def status_of(tracker: Tracker, key: str | None = None) -> Any:
    rows = [s for s in budget_status(tracker) if s.key == key]
    assert len(rows) == 1, rows
    return rows[0]


def test_hard_budget_refuses_the_call_that_would_exceed(pricer: Pricer) -> None:
    clock = Clock()
    budget = Budget("0.05 USD", "month", clock=clock)
    tracker = make_tracker(pricer, budget)
    for _ in range(5):
        event = spend(tracker)
        assert event is not None
        assert event.cost.total == CENT
    with pytest.raises(BudgetExceeded) as info:
        spend(tracker)
    exc = info.value
    assert isinstance(exc, GuardRefusal)
    assert (exc.scope, exc.key, exc.unit) == ("0.05 USD/month", None, "USD")
    assert (exc.limit, exc.spent, exc.reserved) == (Decimal("0.05"), Decimal("0.05"), Decimal(0))
    assert exc.resets_at == datetime(2026, 4, 1, tzinfo=timezone.utc)
    assert "budget '0.05 USD/month' would be exceeded: spent 0.05 + reserved 0" in str(exc)
    row = status_of(tracker)
    assert (row.spent, row.reserved, row.remaining) == (Decimal("0.05"), 0, 0)
    assert row.period == "2026-03"


def test_reservations_in_flight_count_against_the_limit(pricer: Pricer) -> None:
    budget = Budget("0.05 USD", "day", clock=Clock())
    tracker = make_tracker(pricer, budget)
    first = tracker.start(source="api", model="m", estimate=Decimal("0.03"))
    with pytest.raises(BudgetExceeded) as info:
        tracker.start(source="api", model="m", estimate=Decimal("0.03"))
    assert info.value.reserved == Decimal("0.03")
    assert status_of(tracker).reserved == Decimal("0.03")
    tracker.finish(first, usage=Usage(input_tokens=1000))  # actual: one cent
    row = status_of(tracker)
    assert (row.spent, row.reserved, row.remaining) == (CENT, 0, Decimal("0.04"))
    tracker.start(source="api", model="m", estimate=Decimal("0.03"))  # fits now


def test_cancel_and_failures_release_and_usage_on_error_is_spent(pricer: Pricer) -> None:
    tracker = make_tracker(pricer, Budget("1 USD", "day", clock=Clock()))
    call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
    tracker.cancel(call)
    assert status_of(tracker).reserved == 0
    call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
    tracker.finish(call, status="error", error=TimeoutError())  # no usage: released
    assert (status_of(tracker).spent, status_of(tracker).reserved) == (0, 0)
    call = tracker.start(source="api", model="m", estimate=Decimal("0.5"))
    tracker.finish(call, usage=Usage(input_tokens=2000), status="error", error="Boom")
    assert (status_of(tracker).spent, status_of(tracker).reserved) == (Decimal("0.02"), 0)


def test_soft_budget_only_alerts_and_each_threshold_fires_once_per_period(
    pricer: Pricer,
) -> None:
    clock = Clock("2026-03-10T12:00:00+00:00")
    budget = Budget("0.04 USD", "day", hard=False, warn_at=(0.5, 1.0), clock=clock)
    seen: list[BudgetAlert] = []
    budget.on_alert(seen.append)
    tracker = make_tracker(pricer, budget)
    for _ in range(7):  # 175% of the limit: a soft budget never refuses
        spend(tracker)
    assert flush_alerts()
    assert [(a.kind, a.threshold, a.spent) for a in seen] == [
        ("threshold", Decimal("0.5"), Decimal("0.02")),
        ("threshold", Decimal("1"), Decimal("0.04")),
    ]
    assert seen[0].period == "2026-03-10"
    assert not seen[0].hard
    clock.set("2026-03-11T00:00:01+00:00")  # next day: a new period, alerts fire again
    for _ in range(2):
        spend(tracker)
    assert flush_alerts()
    assert [a.period for a in seen] == ["2026-03-10", "2026-03-10", "2026-03-11"]
    assert status_of(tracker).spent == Decimal("0.02")


def test_exceeded_alert_fires_once_and_tracker_alerts_get_every_budget(pricer: Pricer) -> None:
    seen: list[BudgetAlert] = []
    got_async: list[BudgetAlert] = []

    async def async_callback(alert: BudgetAlert) -> None:
        await asyncio.sleep(0)
        got_async.append(alert)

    budget = Budget("0.02 USD", "month", warn_at=(), clock=Clock())
    tracker = make_tracker(pricer, budget, alerts=[seen.append, async_callback])
    spend(tracker)
    spend(tracker)
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            spend(tracker)
    assert flush_alerts()
    assert [a.kind for a in seen] == ["exceeded"]
    assert got_async == seen
    assert seen[0].spent == Decimal("0.02")


def test_per_user_allowances_and_unattributed_calls_share_one(pricer: Pricer) -> None:
    budget = Budget("0.02 USD", "day", per="user", clock=Clock())
    tracker = make_tracker(pricer, budget)
    for user in ("ann", "bob"):
        spend(tracker, user=user)
        spend(tracker, user=user)
        with pytest.raises(BudgetExceeded) as info:
            spend(tracker, user=user)
        assert info.value.key == user
        assert f"for user {user!r}" in str(info.value)
    spend(tracker)
    spend(tracker)
    with pytest.raises(BudgetExceeded) as info:
        spend(tracker)
    assert info.value.key is None
    assert "for calls without a user" in str(info.value)
    with costledger.attribute(user="cat"):  # attribution from contextvars counts too
        spend(tracker)
    rows = {s.key: s.spent for s in budget_status(tracker)}
    assert rows == {
        None: Decimal("0.02"),
        "ann": Decimal("0.02"),
        "bob": Decimal("0.02"),
        "cat": CENT,
    }


def test_per_tag_counts_against_each_tag_and_where_restricts(pricer: Pricer) -> None:
    by_tag = Budget("0.02 USD", "day", per="tag", clock=Clock())
    search_only = Budget("0.01 USD", "day", where={"team": "search"}, clock=Clock())
    tracker = make_tracker(pricer, by_tag, search_only)
    spend(tracker, tags=["a", "b"])
    spend(tracker, tags=["b"], team="ads")
    with pytest.raises(BudgetExceeded) as info:
        spend(tracker, tags=["a", "b"])
    assert info.value.key == "b"
    assert status_of(tracker, "a").reserved == 0  # a's reservation released with the refusal
    spend(tracker, tags=["a"], team="search")
    with pytest.raises(BudgetExceeded) as info:
        spend(tracker, tags=["c"], team="search")
    assert info.value.scope == "0.01 USD/day where team=search"
    spend(tracker, tags=["c"], team="ads")


def test_unknown_model_reserves_and_settles_the_default(pricer: Pricer) -> None:
    budget = Budget(
        "0.25 USD", "day", estimator=Estimator(default_reserve=Decimal("0.10")), clock=Clock()
    )
    tracker = make_tracker(pricer, budget)
    for _ in range(2):
        call = tracker.start(source="api", model="mystery-model", prompt_text="hi")
        assert status_of(tracker).reserved == Decimal("0.1")
        event = tracker.finish(call, usage=Usage(input_tokens=5, output_tokens=5))
        assert event is not None
        assert event.cost.total is None
    # Unpriced calls settled at their reservation: an unknown model cannot slip past.
    assert status_of(tracker).spent == Decimal("0.2")
    with pytest.raises(BudgetExceeded):
        tracker.start(source="api", model="mystery-model", prompt_text="hi")


def test_estimate_from_prompt_and_max_tokens(pricer: Pricer) -> None:
    budget = Budget("0.01 USD", "day", clock=Clock())
    tracker = make_tracker(pricer, budget)
    # 400 chars -> 116 input tokens (heuristic), 400 output: 116*10e-6 + 400*20e-6 = 0.00916
    call = tracker.start(source="api", model="m", prompt_text="x" * 400, max_output_tokens=400)
    assert status_of(tracker).reserved == Decimal("0.00916")
    assert call.prompt_text is None  # dropped once reserved
    with pytest.raises(BudgetExceeded):
        tracker.start(source="api", model="m", prompt_text="x" * 40, max_output_tokens=400)
    tracker.finish(call, usage=Usage(input_tokens=100, output_tokens=10))
    assert status_of(tracker).spent == Decimal("0.0012")


def test_token_budget_counts_input_and_output(pricer: Pricer) -> None:
    budget = Budget("10k tokens", "day", clock=Clock())
    tracker = make_tracker(pricer, budget)
    call = tracker.start(source="api", model="m", prompt_text="x" * 40, max_output_tokens=1000)
    assert status_of(tracker).reserved == Decimal(26 + 1000)
    tracker.finish(call, usage=Usage(input_tokens=3000, cache_read_tokens=1000, output_tokens=500))
    row = status_of(tracker)
    assert (row.unit, row.spent, row.remaining) == ("tokens", Decimal(3500), Decimal(6500))
    call = tracker.start(source="api", model="m", max_output_tokens=4000)  # 2000 default in
    with pytest.raises(BudgetExceeded) as info:
        tracker.start(source="api", model="m", max_output_tokens=4000)
    assert (info.value.unit, info.value.reserved) == ("tokens", Decimal(6000))
    tracker.cancel(call)


def test_reservations_of_crashed_callers_expire(pricer: Pricer) -> None:
    clock = Clock()
    budget = Budget("0.05 USD", "day", reservation_ttl="10m", clock=clock)
    tracker = make_tracker(pricer, budget)
    lost = tracker.start(source="api", model="m", estimate=Decimal("0.05"))  # never finishes
    with pytest.raises(BudgetExceeded):
        spend(tracker)
    clock.now += 599
    with pytest.raises(BudgetExceeded):
        spend(tracker)
    clock.now += 2
    spend(tracker)  # the lost reservation lapsed
    assert status_of(tracker).reserved == 0
    # The "crashed" call does finish after all: its settle is not lost.
    tracker.finish(lost, usage=Usage(input_tokens=3000))
    assert status_of(tracker).spent == Decimal("0.04")


def test_rolling_window_lets_old_spend_leave(pricer: Pricer) -> None:
    clock = Clock("2026-03-10T00:00:00+00:00")
    budget = Budget("0.03 USD", "1h", clock=clock)
    tracker = make_tracker(pricer, budget)
    for minutes in (0, 20, 40):
        clock.set(f"2026-03-10T00:{minutes:02d}:00+00:00")
        spend(tracker)
    with pytest.raises(BudgetExceeded) as info:
        spend(tracker)
    assert info.value.resets_at is None
    clock.set("2026-03-10T01:00:59+00:00")  # its bucket (00:00-00:01) counts until 01:01:00
    with pytest.raises(BudgetExceeded):
        spend(tracker)
    clock.set("2026-03-10T01:01:00+00:00")  # the first cent has left, never early
    spend(tracker)
    with pytest.raises(BudgetExceeded):
        spend(tracker)


def test_lifetime_budget(pricer: Pricer) -> None:
    clock = Clock()
    tracker = make_tracker(pricer, Budget("0.02 USD", "lifetime", clock=clock))
    spend(tracker)
    clock.set("2031-01-01T00:00:00+00:00")
    spend(tracker)
    with pytest.raises(BudgetExceeded) as info:
        spend(tracker)
    assert info.value.resets_at is None
    assert status_of(tracker).period_start is None


def test_restart_keeps_the_months_spend(pricer: Pricer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = Clock(datetime.now(timezone.utc).isoformat())
    with Ledger(url) as ledger:
        tracker = make_tracker(
            pricer, Budget("0.10 USD", "month", per="team", clock=clock), ledger=ledger
        )
        for _ in range(3):
            spend(tracker, team="search")
        spend(tracker, team="ads")
    # A new process: a new Tracker, an empty memory:// store, the same ledger.
    with Ledger(url) as ledger:
        budget = Budget("0.10 USD", "month", per="team", clock=clock)
        tracker = make_tracker(pricer, budget, ledger=ledger)
        rows = {s.key: (s.spent, s.reserved) for s in budget_status(tracker)}
        assert rows == {"search": (Decimal("0.03"), 0), "ads": (CENT, 0)}
        for _ in range(7):
            spend(tracker, team="search")
        with pytest.raises(BudgetExceeded) as info:
            spend(tracker, team="search")
        assert info.value.spent == Decimal("0.10")
        assert status_of(tracker, "ads").spent == CENT


def test_seed_respects_month_boundaries_in_the_budgets_time_zone(
    pricer: Pricer,
) -> None:
    ledger = InMemoryLedger()
    stamps = {
        "2026-01-31T14:30:00+00:00": 3,  # 23:30 on 31 January in Tokyo
        "2026-01-31T16:00:00+00:00": 2,  # 01:00 on 1 February in Tokyo
        "2026-02-10T00:00:00+00:00": 1,
    }
    for stamp, cents in stamps.items():
        ledger.record(
            costledger.UsageEvent(
                model="m",
                usage=Usage(input_tokens=1000 * cents),
                cost=costledger.Cost(status="priced", total=CENT * cents),
                timestamp=datetime.fromisoformat(stamp),
            )
        )
    clock = Clock("2026-02-15T00:00:00+00:00")
    tokyo = Budget("1 USD", "month", tz="Asia/Tokyo", clock=clock)
    utc = Budget("1 USD", "month", clock=clock)
    tracker = make_tracker(pricer, tokyo, utc, ledger=ledger)
    rows = {s.budget: s for s in budget_status(tracker)}
    assert rows["1 USD/month Asia/Tokyo"].spent == Decimal("0.03")
    assert rows["1 USD/month"].spent == CENT
    assert rows["1 USD/month Asia/Tokyo"].resets_at == datetime.fromisoformat(
        "2026-03-01T00:00:00+09:00"
    )
    spend(tracker)  # seeds both counters, then settles one more cent
    rows = {s.budget: s.spent for s in budget_status(tracker)}
    assert rows == {"1 USD/month Asia/Tokyo": Decimal("0.04"), "1 USD/month": Decimal("0.02")}


def test_hard_budget_fails_closed_naming_the_store_and_soft_fails_open(pricer: Pricer) -> None:
    down = "redis://:s3cret@127.0.0.1:1/0?timeout=0.5"
    hard = make_tracker(pricer, Budget("1 USD", "day"), guard_store=down)
    with pytest.raises(GuardStoreUnavailable) as info:
        spend(hard)
    assert isinstance(info.value, GuardRefusal)
    message = str(info.value)
    assert "redis://:***@127.0.0.1:1/0" in message
    assert "fails closed" in message
    assert "s3cret" not in message
    soft = make_tracker(pricer, Budget("1 USD", "day", hard=False), guard_store=down)
    assert spend(soft) is not None
    opened = make_tracker(pricer, Budget("1 USD", "day", on_store_error="open"), guard_store=down)
    assert spend(opened) is not None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres:pw@127.0.0.1:1/test?timeout=1", "postgres:***@127.0.0.1:1"),
        ("sqlite:////nonexistent-dir/sub/guards.db", "sqlite:////nonexistent-dir/sub/guards.db"),
    ],
)
def test_sql_store_down_fails_closed_naming_it(pricer: Pricer, url: str, shown: str) -> None:
    tracker = make_tracker(pricer, Budget("1 USD", "day"), guard_store=url)
    with pytest.raises(GuardStoreUnavailable) as info:
        spend(tracker)
    assert shown in str(info.value)
    assert "pw@" not in str(info.value)
    assert spend(make_tracker(pricer, RateLimit("5/minute"), guard_store=url)) is not None


def test_bad_guard_store_url_fails_when_the_tracker_is_built() -> None:
    with pytest.raises(ValueError, match="guard_store"):
        Tracker(InMemoryLedger(), guards=[Budget("1 USD", "day")], guard_store="nonsense")
    with pytest.raises(ValueError, match="in-memory SQLite"):
        Tracker(InMemoryLedger(), guards=[Budget("1 USD", "day")], guard_store="sqlite://")


def test_a_bad_estimate_is_a_clear_error_not_a_silent_pass(pricer: Pricer) -> None:
    budget = Budget("1 USD", "day")
    tracker = make_tracker(pricer, budget)
    call = Call(
        id="x",
        source="api",
        model="m",
        provider=None,
        attribution=tracker.default_attribution,
        started_at=datetime.now(timezone.utc),
        started=0.0,
        estimate=-1,  # type: ignore[arg-type]
    )
    with pytest.raises(ValueError, match="estimate must be a Decimal"):
        budget.reserve(call, tracker)


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any], str | None]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.received.append((self.path, json.loads(body), self.headers.get("X-Token")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[str]:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_alert_posts_json_and_retries_5xx(pricer: Pricer, hook_server: str) -> None:
    _Hook.fail_first = 1
    budget = Budget("0.02 USD", "month", per="user", warn_at=(0.5,), clock=Clock())
    budget.on_alert(webhook_alert(hook_server + "/hooks/T0K3N", headers={"X-Token": "abc"}))
    tracker = make_tracker(pricer, budget)
    spend(tracker, user="ann")
    assert flush_alerts(timeout=30)
    assert len(_Hook.received) == 1
    path, payload, token = _Hook.received[0]
    assert (path, token) == ("/hooks/T0K3N", "abc")
    assert payload == {
        "event": "costledger.budget_alert",
        "kind": "threshold",
        "budget": "0.02 USD/month per user #c40a5b",  # the digest of warn_at=0.5
        "per": "user",
        "key": "ann",
        "threshold": "0.5",
        "limit": "0.02",
        "spent": "0.01",
        "reserved": "0",
        "unit": "USD",
        "period": "2026-03",
        "resets_at": "2026-04-01T00:00:00+00:00",
        "hard": True,
        "at": "2026-03-10T12:00:00+00:00",
    }


def test_webhook_failure_never_reaches_the_caller_nor_logs_the_path(
    pricer: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    budget = Budget("0.02 USD", "month", warn_at=(0.5,), clock=Clock())
    budget.on_alert(webhook_alert("http://127.0.0.1:1/secret-path", attempts=1, timeout=0.5))
    tracker = make_tracker(pricer, budget)
    spend(tracker)
    assert flush_alerts(timeout=30)
    text = caplog.text
    assert "alerts.callback" in text
    assert "WebhookError" in text
    assert "127.0.0.1" in text
    assert "secret-path" not in text
    with pytest.raises(ValueError, match="http"):
        webhook_alert("ftp://example.invalid/x")


async def test_async_entry_points_use_the_same_budgets(pricer: Pricer) -> None:
    tracker = make_tracker(pricer, Budget("0.01 USD", "day", clock=Clock()))
    call = await tracker.astart(source="api", model="m", estimate=CENT)
    tracker.finish(call, usage=Usage(input_tokens=1000))
    with pytest.raises(BudgetExceeded):
        await tracker.astart(source="api", model="m", estimate=CENT)


def test_a_call_that_ends_without_usage_counts_its_reservation(pricer: Pricer) -> None:
    tokens = Budget("100k tokens", "day", clock=Clock())
    money = Budget("1 USD", "day", clock=Clock())
    tracker = make_tracker(pricer, tokens, money)
    call = tracker.start(
        source="decorator", model="m", max_output_tokens=1000, estimate=Decimal("0.05")
    )
    event = tracker.finish(call)  # an opaque function: nothing readable came back
    assert event is not None
    assert event.cost.status == "not_priced"
    rows = {s.unit: s.spent for s in budget_status(tracker)}
    assert rows == {"tokens": Decimal(2000 + 1000), "USD": Decimal("0.05")}


def test_the_decorator_is_refused_before_the_function_runs(pricer: Pricer) -> None:
    tracker = make_tracker(pricer, Budget("0.02 USD", "day", per="user", clock=Clock()))
    ran: list[str] = []

    @costledger.track_cost(
        tracker=tracker,
        model="m",
        estimate=lambda doc, **_: Decimal("0.01") * len(doc),
        attribution=lambda doc, user: {"user": user},
    )
    def summarise(doc: str, user: str) -> Usage:
        ran.append(doc)
        return Usage(input_tokens=1000 * len(doc))

    summarise("ab", user="ann")  # reserves 0.02, spends 0.02
    with pytest.raises(BudgetExceeded) as info:
        summarise("c", user="ann")
    assert ran == ["ab"]  # the refused call never ran
    assert info.value.key == "ann"
    summarise("c", user="bob")
    assert ran == ["ab", "c"]


def test_recorded_spend_counts_once_whether_or_not_the_counter_exists(pricer: Pricer) -> None:
    clock = Clock(datetime.now(timezone.utc).isoformat())
    budget = Budget("0.05 USD", "month", per="team", clock=clock)
    tracker = make_tracker(pricer, budget)
    usage = Usage(input_tokens=1000)
    # Before any call: the counter does not exist yet; the seed will read this from the ledger.
    tracker.record("m", usage, attribution={"team": "ads"})
    spend(tracker, team="ads")  # seeds 0.01 from the ledger, then settles 0.01
    assert status_of(tracker, "ads").spent == Decimal("0.02")
    # Now the counter exists: recorded spend (a tool cost, an ingested line) adds to it.
    tracker.record("m", usage, attribution={"team": "ads"})
    tracker.record("m", usage, attribution={"team": "ads"}, status="error", error="Timeout")
    assert status_of(tracker, "ads").spent == Decimal("0.04")
    tracker.record("m", None, attribution={"team": "ads"})  # nothing known: adds nothing
    assert status_of(tracker, "ads").spent == Decimal("0.04")
    spend(tracker, team="ads")
    with pytest.raises(BudgetExceeded):
        spend(tracker, team="ads")
    # A call of last month, ingested late, does not count against this month.
    tracker.record(
        "m",
        usage,
        attribution={"team": "ads"},
        started_at=datetime.now(timezone.utc) - timedelta(days=40),
    )
    assert status_of(tracker, "ads").spent == Decimal("0.05")
