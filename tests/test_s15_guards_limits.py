"""Limits read as written, on every store: a decimal comma is refused (it was read as a
thousands separator: "1,50 EUR" was 150 EUR), a limit too large for a counter is refused
(it broke every call on PostgreSQL), a soft "0 USD" budget alerts at its first spend (it
never alerted), a zero rate window is refused ("10/0minutes" was 10 a minute), and an hour
in a zone whose clocks move 30 minutes ends when the local clock next reads a whole hour
(it ended 30 minutes early, before the calls it held)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import (
    Budget,
    BudgetAlert,
    BudgetExceeded,
    RateLimit,
    TokenRateLimit,
    Tracker,
    Usage,
    flush_alerts,
    guards_from_config,
)
from costledger._guards._spec import MAX_UNITS, Period
from costledger.testing import InMemoryLedger

from .test_guards_backends import store_url

__all__ = ["store_url"]  # fixtures

_MARKS = {"redis": pytest.mark.redis, "postgres": pytest.mark.postgres}


def backends(*kinds: str) -> Any:
    params = [pytest.param(k, marks=_MARKS[k]) if k in _MARKS else k for k in kinds]
    return pytest.mark.parametrize("store_url", params, indirect=True)


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


# -- B: a comma only separates thousands -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["1,50 EUR", "2,5 USD", "$1,5", "10,00 EUR", "1,0000 USD", "2,5M tokens", "1_000,000 USD"],
)
def test_a_decimal_comma_in_a_budget_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="decimal point") as info:
        Budget(text, "day")
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("1,000 USD", Decimal("1000"), "USD"),
        ("1,234.50 EUR", Decimal("1234.50"), "EUR"),
        ("$1,234,567.5", Decimal("1234567.5"), "USD"),
        ("1,000,000 tokens", Decimal("1000000"), "tokens"),
        ("2,000k tokens", Decimal("2000000"), "tokens"),
    ],
)
def test_thousands_separators_still_read(text: str, amount: Decimal, unit: str) -> None:
    limit = Budget(text, "day").limit
    assert (limit.amount, limit.unit) == (amount, unit)


@pytest.mark.parametrize("text", ["1,5/second", "10,0/minute", "1,5k/hour"])
def test_a_decimal_comma_in_a_rate_limit_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="decimal point") as info:
        RateLimit(text)
    assert repr(text) in str(info.value)
    with pytest.raises(ValueError, match="decimal point"):
        TokenRateLimit(text)


def test_a_rate_limit_reads_thousands() -> None:
    assert RateLimit("1,000/minute").amount == 1000
    assert RateLimit("2,000 per hour").amount == 2000
    assert TokenRateLimit("1,000k/hour").amount == 1_000_000


def test_a_decimal_comma_in_a_configuration_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "guards.toml"
    path.write_text('[[budget]]\nlimit = "1,50 EUR"\nperiod = "day"\n')
    with pytest.raises(ValueError, match=r"budget\[1\]\.limit: .*'1,50 EUR'.*decimal point"):
        guards_from_config(path)
    path.write_text('[[rate_limit]]\nlimit = "1,5/second"\n')
    with pytest.raises(ValueError, match="decimal point"):
        guards_from_config(path)


# -- C: a limit a counter cannot hold ----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [10**10, Decimal("9223372036.854775808"), "$10b", "20B EUR", Decimal("1e999")],
)
def test_a_money_limit_beyond_a_counter_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"too large.*9,223,372,036\.854775807") as info:
        Budget(value, "day")  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


def test_a_token_limit_beyond_a_counter_is_refused() -> None:
    assert Budget("9223372036854775807 tokens", "day").limit.units() == MAX_UNITS
    with pytest.raises(ValueError, match=r"too large.*9,223,372,036,854,775,807 tokens"):
        Budget("9223372036854775808 tokens", "day")


def test_a_huge_limit_in_a_configuration_file_names_the_limit(tmp_path: Path) -> None:
    # was: "default name longer than 200 characters", about a name nobody wrote
    path = tmp_path / "guards.toml"
    path.write_text('[[budget]]\nlimit = 1e999\nperiod = "day"\n')
    with pytest.raises(ValueError, match=r"budget\[1\]\.limit: .*too large"):
        guards_from_config(path)


@backends("memory", "sqlite", "redis", "postgres")
def test_the_largest_limit_works_on_every_store(store_url: str) -> None:
    largest = Decimal(MAX_UNITS).scaleb(-9)  # 9,223,372,036.854775807
    hard = Budget(largest, "day", name="largest hard")
    # a warn_at above 1 of the largest limit: its mark is what a counter holds, at most
    soft = Budget(largest, "day", hard=False, warn_at=(0.5, 2), name="largest soft")
    tracker = Tracker(InMemoryLedger(), guards=[hard, soft], guard_store=store_url, log="off")
    call = tracker.start(source="api", model="gpt-4o", estimate=Decimal("0.01"))
    tracker.finish(call, usage=Usage(input_tokens=1000, output_tokens=100))  # 0.0035
    for budget in (hard, soft):
        (status,) = budget.status(tracker)
        assert status.limit == Decimal("9223372036.854775807")
        assert status.spent == Decimal("0.0035")
        assert status.reserved == 0


# -- D: a soft budget of 0 alerts ---------------------------------------------------------------


@backends("memory", "sqlite", "redis", "postgres")
def test_a_soft_zero_budget_alerts_at_its_first_spend(store_url: str) -> None:
    got: list[BudgetAlert] = []
    budget = Budget("0 USD", "day", hard=False, warn_at=(0.5, 1.0), name="zero soft")
    budget.on_alert(got.append)
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=store_url, log="off")
    for _ in range(2):
        call = tracker.start(source="api", model="gpt-4o", estimate=Decimal("0.01"))
        tracker.finish(call, usage=Usage(input_tokens=2000, output_tokens=500))  # 0.01
    assert flush_alerts(5)
    assert [(a.kind, a.threshold, a.spent) for a in got] == [
        ("threshold", Decimal("0.5"), Decimal("0.01")),
        ("threshold", Decimal("1"), Decimal("0.01")),
    ]
    assert budget.status(tracker)[0].spent == Decimal("0.02")


def test_a_hard_zero_budget_still_refuses_every_call() -> None:
    budget = Budget("0 USD", "day")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store="memory://", log="off")
    with pytest.raises(BudgetExceeded):
        tracker.start(source="api", model="gpt-4o", estimate=Decimal("0.000000001"))


# -- E: a zero rate window -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["10/0minutes", "10/0 minutes", "10/0.0 s", "10/00h", "10/.0 second", "10 per 0 hour"]
)
def test_a_zero_window_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="window longer than zero") as info:
        RateLimit(text)
    assert repr(text) in str(info.value)
    with pytest.raises(ValueError, match="window longer than zero"):
        TokenRateLimit(text)


def test_windows_with_a_count_still_read() -> None:
    assert RateLimit("10/10minutes").window_ms == 600_000
    assert RateLimit("10/5 minutes").window_ms == 300_000
    assert RateLimit("10/01 minute").window_ms == 60_000


# -- F: an hour in a zone whose clocks move 30 minutes ------------------------------------------


def _hour(zone: str, at: str) -> tuple[str, str, str]:
    win = Period("hour", zone).window(_utc(at))
    assert win.end is not None
    assert win.start <= _utc(at) * 1000 < win.end
    show = lambda ms: datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%d %H:%M")  # noqa: E731
    return win.label, show(win.start), show(win.end)


def test_an_hour_the_clocks_go_back_half_over_lasts_90_minutes() -> None:
    # Lord Howe, 2026-04-05 02:00 +11:00 (04 15:00 UTC): the clocks go back to 01:30 +10:30
    zone = "Australia/Lord_Howe"
    local_one = ("2026-04-05T01+1100", "04 14:00", "04 15:30")
    assert _hour(zone, "2026-04-04T14:40:00") == local_one
    assert _hour(zone, "2026-04-04T15:10:00") == local_one  # was 14:00-15:00: already over
    assert _hour(zone, "2026-04-04T15:40:00") == ("2026-04-05T02+1030", "04 15:30", "04 16:30")


def test_an_hour_the_clocks_jump_half_over_lasts_30_minutes() -> None:
    # Lord Howe, 2026-10-04 02:00 +10:30 (03 15:30 UTC): the clocks jump to 02:30 +11:00
    zone = "Australia/Lord_Howe"
    assert _hour(zone, "2026-10-03T15:10:00") == ("2026-10-04T01+1030", "03 14:30", "03 15:30")
    assert _hour(zone, "2026-10-03T15:45:00") == ("2026-10-04T02+1030", "03 15:30", "03 16:00")
    # was 15:30-16:30: two windows over 16:00-16:30, spend there counted in hour 02
    assert _hour(zone, "2026-10-03T16:10:00") == ("2026-10-04T03+1100", "03 16:00", "03 17:00")


def test_a_repeated_hour_is_still_two_windows() -> None:
    zone = "Europe/Paris"  # 2026-10-25 03:00 CEST: back to 02:00 CET
    assert _hour(zone, "2026-10-25T00:30:00") == ("2026-10-25T02+0200", "25 00:00", "25 01:00")
    assert _hour(zone, "2026-10-25T01:30:00") == ("2026-10-25T02+0100", "25 01:00", "25 02:00")
    assert _hour(zone, "2026-03-29T01:30:00") == ("2026-03-29T03+0200", "29 01:00", "29 02:00")


@backends("memory", "sqlite")
def test_an_hourly_budget_keeps_the_whole_lord_howe_hour(store_url: str) -> None:
    now = [_utc("2026-04-04T14:40:00")]
    budget = Budget("1 USD", "hour", tz="Australia/Lord_Howe", clock=lambda: now[0])
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=store_url, log="off")
    call = tracker.start(source="api", model="gpt-4o", estimate=Decimal("0.6"))
    tracker.finish(call, usage=Usage(input_tokens=240_000))  # 0.6 USD
    now[0] = _utc("2026-04-04T15:10:00")  # local 01:40 again, the same hour
    with pytest.raises(BudgetExceeded) as info:
        tracker.start(source="api", model="gpt-4o", estimate=Decimal("0.6"))
    assert info.value.spent == Decimal("0.6")
    assert info.value.resets_at == datetime(2026, 4, 4, 15, 30, tzinfo=timezone.utc)
    (status,) = budget.status(tracker, now=now[0])
    assert status.period == "2026-04-05T01+1100"
    assert status.resets_at == datetime(2026, 4, 4, 15, 30, tzinfo=timezone.utc)
    now[0] = _utc("2026-04-04T15:40:00")  # local 02:10: a new hour
    tracker.start(source="api", model="gpt-4o", estimate=Decimal("0.6"))
