"""Guard fixes from review, each on real stores (memory, Redis, PostgreSQL, SQLite file):
unreadable call inputs, budgets that fail closed on their own errors, billed failed calls,
rolling windows that free room late (never early), reservation ids, token limits cancelled
while waiting, status rows, rolling alerts, configuration errors, the CLI, and amounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import textwrap
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costledger import BudgetExceeded, GuardRefusal, RateLimited, Tracker, Usage, UsageEvent
from costledger._guards import (
    Budget,
    BudgetAlert,
    Estimate,
    Estimator,
    RateLimit,
    TokenRateLimit,
    budget_status,
    flush_alerts,
    guards_from_config,
    store_for,
)
from costledger._guards._budget import BudgetCheckFailed, _reservation_id
from costledger._ledger import InMemoryLedger, Ledger
from costledger._pricing import Pricer
from costledger._tracker import Call
from costledger.cli import app

from .test_guards_backends import store_url

__all__ = ["store_url"]  # fixtures

BACKENDS = ["memory", "redis", "postgres", "sqlite"]
PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
DATED = {**PRICES, "m-2026-01-01": {"input": "10", "output": "20"}}
CENT = Decimal("0.01")


def backends(*kinds: str) -> Any:
    return pytest.mark.parametrize("store_url", kinds, indirect=True)


class Clock:
    """Seconds since the epoch, set by hand. Tests on shared stores use dates ahead of
    today: Redis drops a key whose expiry is already past."""

    def __init__(self, when: str) -> None:
        self.now = datetime.fromisoformat(when).timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: str) -> None:
        self.now = datetime.fromisoformat(when).timestamp()


def tracker_for(
    *guards: Any,
    store: str = "memory://",
    ledger: Any = None,
    prices: dict[str, Any] = PRICES,
) -> Tracker:
    pricer = Pricer(prices, genai_prices=False, litellm=False)
    return Tracker(ledger or InMemoryLedger(), pricer, guards, guard_store=store, log="off")


def spend(tracker: Tracker, cents: int = 1, *, estimate: Decimal = CENT, **who: Any) -> None:
    call = tracker.start(source="api", model="m", attribution=who, estimate=estimate)
    tracker.finish(call, usage=Usage(input_tokens=1000 * cents))


def figures(tracker: Tracker) -> list[tuple[str | None, Decimal, Decimal]]:
    return [(s.key, s.spent, s.reserved) for s in budget_status(tracker)]


# -- 1. call inputs a guard cannot read; a budget's own failure ---------------------------------


@pytest.mark.parametrize(
    "bad", [0.01, 1.0, "lots", "-1", -1, True, Decimal("NaN"), Decimal("-0.01"), [1]]
)
def test_an_unreadable_estimate_is_a_value_error_naming_it(bad: object) -> None:
    tracker = tracker_for(Budget("0.05 USD", "month"))
    with pytest.raises(ValueError) as info:
        tracker.start(source="api", model="m", estimate=bad)  # type: ignore[arg-type]
    assert not isinstance(info.value, GuardRefusal)
    text = str(info.value)
    assert text.startswith("estimate must be a Decimal, an int or a decimal string such as")
    assert text.endswith(f"got {bad!r}")
    if isinstance(bad, float):
        assert "never a float" in text
    assert figures(tracker) == [(None, 0, 0)]


def test_an_int_or_a_decimal_string_estimate_is_that_amount() -> None:
    tracker = tracker_for(Budget("5 USD", "month"))
    two = tracker.start(source="api", model="m", estimate=2)  # type: ignore[arg-type]
    quarter = tracker.start(source="api", model="m", estimate=" 0.25 ")  # type: ignore[arg-type]
    assert (two.estimate, quarter.estimate) == (Decimal(2), Decimal("0.25"))
    assert type(two.estimate) is Decimal
    assert figures(tracker) == [(None, 0, Decimal("2.25"))]
    with pytest.raises(BudgetExceeded):  # 2.25 held + 3 > 5
        tracker.start(source="api", model="m", estimate=3)  # type: ignore[arg-type]
    tracker.finish(two, usage=Usage(input_tokens=1000))
    tracker.finish(quarter, usage=Usage(input_tokens=2000))
    assert figures(tracker) == [(None, Decimal("0.03"), 0)]


@pytest.mark.parametrize("bad", ["200", 200.0, True, -1, Decimal(200)])
def test_unreadable_max_output_tokens_is_a_value_error_naming_it(bad: object) -> None:
    tracker = tracker_for(Budget("1000 tokens", "month"))
    with pytest.raises(ValueError) as info:
        tracker.start(source="api", model="m", prompt_text="hello", max_output_tokens=bad)  # type: ignore[arg-type]
    assert str(info.value) == f"max_output_tokens must be an int >= 0, got {bad!r}"
    assert figures(tracker) == [(None, 0, 0)]
    # an int is the output's worst case: "hello" is 2 + 16 tokens by the heuristic
    call = tracker.start(source="api", model="m", prompt_text="hello", max_output_tokens=200)
    assert figures(tracker) == [(None, 0, 218)]
    tracker.cancel(call)


class _BrokenEstimator(Estimator):
    def estimate(self, call: Call, tracker: Tracker) -> Estimate:
        raise RuntimeError("estimator broke")


def test_a_hard_budget_fails_closed_on_its_own_error() -> None:
    budget = Budget("1 USD", "month", estimator=_BrokenEstimator())
    tracker = tracker_for(budget)
    with pytest.raises(BudgetCheckFailed) as info:
        tracker.start(source="api", model="m", prompt_text="hi", max_output_tokens=100)
    assert isinstance(info.value, BudgetExceeded)
    assert str(info.value) == (
        "budget '1 USD/month' could not check this call: RuntimeError: estimator broke;"
        " it fails closed, so the call is refused"
    )
    assert isinstance(info.value.cause, RuntimeError)
    assert (info.value.scope, info.value.limit, info.value.unit) == (budget.name, 1, "USD")


@backends(*BACKENDS)
def test_a_failing_budget_gives_back_what_it_held(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = Budget("1 USD", "month", per="tag", clock=Clock("2030-03-10T12:00:00+00:00"))
    tracker = tracker_for(budget, store=store_url)
    spend(tracker, tags=["a", "b"])  # both counters exist
    store = store_for(tracker)
    reserve = store.reserve
    seen: list[str] = []

    def second_fails(counter: str, **kwargs: Any) -> Any:
        seen.append(counter)
        if len(seen) == 2:
            raise RuntimeError("the store answered nonsense")
        return reserve(counter, **kwargs)

    monkeypatch.setattr(store, "reserve", second_fails)
    with pytest.raises(BudgetCheckFailed, match="RuntimeError: the store answered nonsense"):
        tracker.start(source="api", model="m", estimate=CENT, attribution={"tags": ["a", "b"]})
    monkeypatch.undo()
    assert figures(tracker) == [("a", CENT, 0), ("b", CENT, 0)]  # "a" holds nothing


def test_a_soft_budget_fails_open_and_still_counts_the_spend() -> None:
    budget = Budget("1 USD", "month", hard=False, estimator=_BrokenEstimator())
    tracker = tracker_for(budget)
    spend(tracker)  # an explicit estimate: the estimator is not asked
    call = tracker.start(source="api", model="m", prompt_text="hi", max_output_tokens=100)
    assert figures(tracker) == [(None, CENT, 0)]
    tracker.finish(call, usage=Usage(input_tokens=3000))
    assert figures(tracker) == [(None, Decimal("0.04"), 0)]  # the store counted it


# -- 2. a failed call that reported usage is settled ---------------------------------------------


def test_a_failed_call_that_reported_usage_is_settled_even_unpriced() -> None:
    tokens = Budget("10000 tokens", "month")
    money = Budget("1 USD", "month")
    tracker = tracker_for(tokens, money)
    kw: dict[str, Any] = {"source": "api", "model": "unknown-model", "prompt_text": "hi"}
    billed = tracker.start(**kw, max_output_tokens=100)
    event = tracker.finish(
        billed, usage=Usage(input_tokens=900, output_tokens=50), status="error", error="Timeout"
    )
    assert isinstance(event, UsageEvent)
    assert (event.status, event.cost.status) == ("error", "unknown_model")
    # no usage at all: nothing was billed, the reservation is given back
    tracker.finish(tracker.start(**kw, max_output_tokens=100), status="error", error="Timeout")
    rows = {s.budget: (s.spent, s.reserved) for s in budget_status(tracker)}
    assert rows == {
        tokens.name: (Decimal(950), 0),  # the tokens it used
        money.name: (Decimal("0.1"), 0),  # unpriced: its reservation (default_reserve)
    }


# -- 3. rolling windows free room late, never early -----------------------------------------------


@backends(*BACKENDS)
def test_rolling_budget_spend_leaves_late_never_early(store_url: str) -> None:
    clock = Clock("2030-03-10T12:00:59+00:00")
    tracker = tracker_for(Budget("0.05 USD", "1h", clock=clock), store=store_url)
    spend(tracker, 5, estimate=Decimal("0.05"))  # the limit, spent at 12:00:59
    for when in ("12:59:59", "13:00:00", "13:00:58.999"):
        clock.set(f"2030-03-10T{when}+00:00")
        with pytest.raises(BudgetExceeded) as info:
            tracker.start(source="api", model="m", estimate=CENT)
        assert info.value.spent == Decimal("0.05")
    clock.set("2030-03-10T13:01:00+00:00")  # its bucket (12:00-12:01) has left
    tracker.cancel(tracker.start(source="api", model="m", estimate=CENT))


@backends(*BACKENDS)
def test_token_window_frees_room_late_never_early(store_url: str) -> None:
    clock = Clock("2030-03-10T12:00:00.990+00:00")
    tracker = tracker_for(TokenRateLimit("1000/minute", clock=clock), store=store_url)
    kw: dict[str, Any] = {"source": "api", "model": "m", "prompt_text": ""}  # 16 tokens
    tracker.finish(tracker.start(**kw, max_output_tokens=984), usage=Usage(input_tokens=1000))
    for when, retry in (("12:01:00.000", 1.0), ("12:01:00.999", 0.001)):
        clock.set(f"2030-03-10T{when}+00:00")
        with pytest.raises(RateLimited) as info:
            tracker.start(**kw, max_output_tokens=84)
        assert info.value.retry_after == retry
    clock.set("2030-03-10T12:01:01.000+00:00")
    tracker.cancel(tracker.start(**kw, max_output_tokens=84))


@backends("postgres", "sqlite")
def test_request_window_in_sql_frees_room_late_never_early(store_url: str) -> None:
    clock = Clock("2030-03-10T12:00:00.990+00:00")
    tracker = tracker_for(RateLimit("2/minute", clock=clock), store=store_url)
    for _ in range(2):
        tracker.cancel(tracker.start(source="api", model="m"))
    clock.set("2030-03-10T12:01:00.000+00:00")
    with pytest.raises(RateLimited) as info:
        tracker.start(source="api", model="m")
    assert info.value.retry_after == 1.0
    clock.set("2030-03-10T12:01:01.000+00:00")
    tracker.cancel(tracker.start(source="api", model="m"))


# -- 5. each reservation its own id ---------------------------------------------------------------


@backends(*BACKENDS)
def test_calls_sharing_an_id_or_with_a_long_one_hold_their_own_reservations(
    store_url: str,
) -> None:
    clock = Clock("2030-03-10T12:00:00+00:00")
    tracker = tracker_for(Budget("0.05 USD", "month", clock=clock), store=store_url)
    kw: dict[str, Any] = {"source": "api", "model": "m"}
    first = tracker.start(**kw, estimate=Decimal("0.02"), call_id="req-1")
    second = tracker.start(**kw, estimate=Decimal("0.02"), call_id="req-1")
    long = tracker.start(**kw, estimate=CENT, call_id="chatcmpl-" + "a" * 91)
    assert figures(tracker) == [(None, 0, Decimal("0.05"))]
    with pytest.raises(BudgetExceeded):
        tracker.start(**kw, estimate=CENT)
    for call in (first, second, long):
        tracker.finish(call, usage=Usage(input_tokens=1000))
    assert figures(tracker) == [(None, Decimal("0.03"), 0)]


def _child_reservation_id(_: int) -> str:
    return _reservation_id()


def test_reservation_ids_differ_in_a_forked_child() -> None:
    parent = _reservation_id()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.map(_child_reservation_id, [0])[0]
    assert len(parent) <= 64
    assert len(child) <= 64
    assert parent.split(".")[0] != child.split(".")[0]


# -- 8. a token limit cancelled while waiting gives back what it took ------------------------------


@backends(*BACKENDS)
async def test_token_limit_cancelled_while_waiting_gives_back_earlier_tags(
    store_url: str,
) -> None:
    limit = TokenRateLimit("1000/10 seconds", per="tag", wait=30)
    tracker = tracker_for(limit, store=store_url)
    kw: dict[str, Any] = {"source": "api", "model": "m", "prompt_text": ""}  # 16 tokens
    held = await tracker.astart(**kw, attribution={"tags": ["b"]}, max_output_tokens=984)
    waiting = asyncio.create_task(
        tracker.astart(**kw, attribution={"tags": ["a", "b"]}, max_output_tokens=584)
    )
    await asyncio.sleep(0.5)  # it took 600 of "a" and waits for room in "b"
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # "a" is empty again: a probe that never waits takes the whole limit at once
    probe = TokenRateLimit("1000/10 seconds", per="tag", name=limit.name)
    call = tracker.start(**kw, attribution={"tags": ["a"]}, max_output_tokens=984, _reserve=False)
    probe.release(probe.reserve(call, tracker))
    tracker.cancel(held)


# -- 10. / 11. status rows ------------------------------------------------------------------------


@backends(*BACKENDS)
def test_status_shows_a_long_key_once_in_full(store_url: str) -> None:
    # real time: the full key comes from the ledger, whose events are at the real time
    tracker = tracker_for(Budget("1 USD", "month", per="user"), store=store_url)
    user = "u" * 250
    spend(tracker, 3, user=user)
    assert figures(tracker) == [(user, Decimal("0.03"), 0)]


def test_per_model_status_counts_the_requested_model() -> None:
    ledger = InMemoryLedger()
    tracker = tracker_for(Budget("1 USD", "month", per="model"), ledger=ledger, prices=DATED)
    call = tracker.start(source="api", model="m", estimate=Decimal("0.05"))
    tracker.finish(call, usage=Usage(input_tokens=3000), response_model="m-2026-01-01")
    assert figures(tracker) == [("m", Decimal("0.03"), 0)]
    # after a restart (a new memory store), the keys come from the ledger
    restarted = tracker_for(Budget("1 USD", "month", per="model"), ledger=ledger, prices=DATED)
    assert figures(restarted) == [("m", Decimal("0.03"), 0)]


def test_per_model_rolling_status_after_a_restart_counts_each_requested_model() -> None:
    ledger = InMemoryLedger()
    tracker = tracker_for(Budget("1 USD", "24h", per="model"), ledger=ledger, prices=DATED)
    for model, tokens in (("m", 3000), ("m-2026-01-01", 2000)):
        call = tracker.start(source="api", model=model, estimate=Decimal("0.05"))
        tracker.finish(call, usage=Usage(input_tokens=tokens), response_model="m-2026-01-01")
    expected = [("m", Decimal("0.03"), 0), ("m-2026-01-01", Decimal("0.02"), 0)]
    assert figures(tracker) == expected
    restarted = tracker_for(Budget("1 USD", "24h", per="model"), ledger=ledger, prices=DATED)
    assert figures(restarted) == expected


# -- 12. rolling alerts fire again in each window --------------------------------------------------


@backends(*BACKENDS)
def test_rolling_alerts_fire_again_in_each_window(store_url: str) -> None:
    clock = Clock("2030-03-10T12:00:00+00:00")
    budget = Budget("0.05 USD", "1h", clock=clock, warn_at=(0.5,))
    alerts: list[tuple[str, Decimal | None, str]] = []

    def note(alert: BudgetAlert) -> None:
        alerts.append((alert.kind, alert.threshold, alert.at.strftime("%H:%M")))

    budget.on_alert(note)
    tracker = tracker_for(budget, store=store_url)
    # Every other hour: 2 cents a minute until a call is refused; the window empties in
    # between, while the counter lives on (it is kept for the window and 70 minutes more).
    for hour in (12, 14, 16):
        for minute in (0, 1, 2):
            clock.set(f"2030-03-10T{hour}:{minute:02d}:00+00:00")
            with contextlib.suppress(BudgetExceeded):
                spend(tracker, 2, estimate=Decimal("0.02"))
        assert figures(tracker) == [(None, Decimal("0.04"), 0)]
    assert flush_alerts(5)
    half = Decimal("0.5")
    assert alerts == [
        ("threshold", half, "12:01"),
        ("exceeded", None, "12:02"),
        ("threshold", half, "14:01"),
        ("exceeded", None, "14:02"),
        ("threshold", half, "16:01"),
        ("exceeded", None, "16:02"),
    ]


# -- 13. configuration errors name the field ----------------------------------------------------

_PER = "user, team, project, feature, model, provider, tag"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"budget": [{"limit": "5 USD", "where": {"colour": "red"}}]},
            "budget[1].where: where['colour']: where keys are per keys, and per must be one"
            f" of {_PER}; got 'colour'",
        ),
        (
            {"rate_limit": [{"limit": "5/minute", "where": {"colour": "red"}}]},
            "rate_limit[1].where: where['colour']: where keys are per keys, and per must be"
            f" one of {_PER}; got 'colour'",
        ),
        (
            {"token_rate_limit": [{"limit": "5k/minute", "where": {"team": 3}}]},
            "token_rate_limit[1].where: where['team'] must be a string, got 3",
        ),
        (
            {"budget": [{"limit": "5 USD", "where": "team=a"}]},
            "budget[1].where: where must be a mapping such as {'team': 'search'}, got 'team=a'",
        ),
        (
            {"budget": [{"limit": "5 USD", "warn_at": Decimal("0.8")}]},
            "budget[1].warn_at: warn_at must be a list of fractions such as [0.5, 0.8, 1.0],"
            " got Decimal('0.8')",
        ),
        (
            {"budget": [{"limit": "5 USD", "hard": "false"}]},
            "budget[1].hard: hard must be True or False, got 'false'",
        ),
    ],
)
def test_config_errors_name_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        guards_from_config(config)
    assert str(info.value) == message


def test_hard_false_from_a_file_is_soft(tmp_path: Path) -> None:
    path = tmp_path / "guards.toml"
    path.write_text('[[budget]]\nlimit = "5 USD"\nhard = false\n')
    (soft,) = guards_from_config(path).guards
    assert isinstance(soft, Budget)
    assert soft.hard is False
    with pytest.raises(ValueError, match="hard must be True or False, got 1"):
        Budget("5 USD", hard=1)  # type: ignore[arg-type]


# -- 14. costledger budget status ------------------------------------------------------------------


def test_cli_status_shows_a_per_key_budget_without_spend_and_times_in_utc(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url, sync=True)
    ledger.summary()  # creates the database
    ledger.close()
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(
        textwrap.dedent(
            """\
            [[budget]]
            limit = "10 USD"
            per = "user"

            [[budget]]
            limit = "3 USD"
            period = "day"
            tz = "Asia/Tokyo"
            """
        )
    )
    args = ["budget", "status", "--db", url, "--budgets", str(budgets)]
    result = CliRunner().invoke(app, [*args, "-f", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["budget"], r["key"], r["spent"], r["remaining"], r["limit"]) for r in rows] == [
        ("10 USD/month per user", "(none yet)", "0", "10", "10"),
        ("3 USD/day Asia/Tokyo", "(all)", "0", "3", "3"),
    ]
    # Tokyo's day starts and ends at 15:00 UTC (no daylight saving time there)
    tokyo = rows[1]
    assert tokyo["period_start"].endswith("T15:00:00+00:00")
    assert tokyo["resets_at"].endswith("T15:00:00+00:00")
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "(none yet)" in table.stdout
    assert "resets at (UTC)" in table.stdout


# -- 15. amounts print without an exponent -------------------------------------------------------


def test_whole_amounts_print_without_an_exponent() -> None:
    clock = Clock("2030-03-10T12:00:00+00:00")
    alerts: list[BudgetAlert] = []
    budget = Budget("100 USD", "month", clock=clock, warn_at=(0.5,))
    budget.on_alert(alerts.append)
    tracker = tracker_for(budget)
    call = tracker.start(source="api", model="m", estimate=Decimal("100"))
    tracker.finish(call, usage=Usage(input_tokens=10_000_000))  # $100 exactly
    with pytest.raises(BudgetExceeded) as info:
        spend(tracker)
    assert str(info.value) == (
        "budget '100 USD/month #c40a5b' would be exceeded: spent 100 + reserved 0 + this call's"
        " estimate 0.01 > limit 100 USD; resets at 2030-04-01T00:00:00+00:00"
    )
    assert str(info.value.spent) == "100"
    assert flush_alerts(5)
    assert [(a.kind, a.to_dict()["spent"]) for a in alerts] == [
        ("threshold", "100"),
        ("exceeded", "100"),
    ]
    (status,) = budget_status(tracker)
    assert (str(status.spent), str(status.remaining)) == ("100", "0")
    assert str(Budget(Decimal("1E+3")).limit.amount) == "1000"
    assert str(Budget("2 USD", warn_at=(10,)).warn_at[0]) == "10"
