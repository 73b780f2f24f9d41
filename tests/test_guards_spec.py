"""Parsing budgets and limits, calendar periods in time zones, and the worst-case estimator."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Tracker
from costledger._guards import (
    Budget,
    Estimator,
    RateLimit,
    TokenRateLimit,
    guards_from_config,
    heuristic_tokens,
)
from costledger._guards._estimate import count_tokens
from costledger._guards._spec import (
    MONEY_SCALE,
    Limit,
    from_units,
    parse_duration,
    parse_limit,
    parse_period,
    reserve_units,
    to_units,
)
from costledger._pricing import Pricer


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        (Decimal("100"), Decimal("100"), "USD"),
        (25, Decimal("25"), "USD"),
        ("100 USD", Decimal("100"), "USD"),
        ("$12.50", Decimal("12.50"), "USD"),
        ("2.5 eur", Decimal("2.5"), "EUR"),
        ("1,000 USD", Decimal("1000"), "USD"),
        ("2M tokens", Decimal("2000000"), "tokens"),
        ("1.5m tokens", Decimal("1500000"), "tokens"),
        ("500k tokens", Decimal("500000"), "tokens"),
        ("2,000,000 tokens", Decimal("2000000"), "tokens"),
        ("1 token", Decimal("1"), "tokens"),
        ("$2k", Decimal("2000"), "USD"),
        ("1.5k EUR", Decimal("1500"), "EUR"),
    ],
)
def test_parse_limit(text: object, amount: Decimal, unit: str) -> None:
    assert parse_limit(text) == Limit(amount, unit)


@pytest.mark.parametrize("bad", [1.5, True, "lots", "-5 USD", "1.5 tokens", "$5 EUR", "", None])
def test_parse_limit_rejects_bad_input_naming_the_field(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="limit"):
        parse_limit(bad)


def test_a_bare_suffix_is_ambiguous() -> None:
    with pytest.raises(ValueError, match="ambiguous: say '2M tokens' or '2M USD'"):
        parse_limit("2M")


def test_float_limit_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="never a float"):
        Budget(10.0, "day")  # type: ignore[arg-type]


def test_money_units_round_trip_and_round_up_reservations() -> None:
    assert to_units(Decimal("0.000000001"), tokens=False) == 1
    assert to_units(Decimal("1"), tokens=False) == MONEY_SCALE
    assert reserve_units(Decimal("0.0000000001"), tokens=False) == 1  # never under-reserve
    assert to_units(Decimal("0.0000000004"), tokens=False) == 0
    assert from_units(123_456_789, tokens=False) == Decimal("0.123456789")
    assert from_units(0, tokens=False) == Decimal(0)
    assert Limit(Decimal("0.0000000019"), "USD").units() == 1  # a limit rounds down


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400.0), ("30d", 2592000.0), ("15m", 900.0), ("90s", 90.0), ("1w", 604800.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, field="period") == seconds


@pytest.mark.parametrize("bad", ["fortnight", "0h", "-1d", "", None])
def test_bad_period_names_the_field(bad: object) -> None:
    with pytest.raises(ValueError, match="period"):
        Budget("1 USD", bad)  # type: ignore[arg-type]


def test_bad_tz_per_warn_and_where_name_the_field() -> None:
    with pytest.raises(ValueError, match="tz must be an IANA time zone"):
        Budget("1 USD", "day", tz="Mars/Olympus")
    with pytest.raises(ValueError, match="per must be None or one of"):
        Budget("1 USD", "day", per="country")
    with pytest.raises(ValueError, match="warn_at"):
        Budget("1 USD", "day", warn_at=(0,))
    with pytest.raises(ValueError, match="per must be"):
        Budget("1 USD", "day", where={"planet": "x"})
    with pytest.raises(ValueError, match="on_store_error"):
        Budget("1 USD", "day", on_store_error="maybe")  # type: ignore[arg-type]


def test_month_boundary_in_tokyo() -> None:
    period = parse_period("month", "Asia/Tokyo")
    # 2026-01-31T16:00Z is already 2026-02-01 01:00 in Tokyo.
    jan = period.window(ts("2026-01-31T14:59:59+00:00"))
    feb = period.window(ts("2026-01-31T16:00:00+00:00"))
    assert jan.label == "2026-01"
    assert feb.label == "2026-02"
    assert feb.start == int(ts("2026-02-01T00:00:00+09:00") * 1000)
    assert feb.end == int(ts("2026-03-01T00:00:00+09:00") * 1000)
    # The cache must not answer for an instant outside its period.
    assert period.window(ts("2026-01-31T14:00:00+00:00")).label == "2026-01"
    utc = parse_period("month", "UTC")
    assert utc.window(ts("2026-01-31T16:00:00+00:00")).label == "2026-01"


def test_day_week_year_and_dst() -> None:
    day = parse_period("day", "America/New_York")
    # 2026-03-08 is 23 hours long in New York (DST starts).
    w = day.window(ts("2026-03-08T12:00:00-04:00"))
    assert w.label == "2026-03-08"
    assert w.end is not None
    assert (w.end - w.start) == 23 * 3_600_000
    week = parse_period("week", "UTC").window(ts("2026-01-01T12:00:00+00:00"))  # a Thursday
    assert week.label == "2026-W01"
    assert week.start == int(ts("2025-12-29T00:00:00+00:00") * 1000)
    year = parse_period("year", "Europe/Paris").window(ts("2025-12-31T23:30:00+00:00"))
    assert year.label == "2026"
    hour = parse_period("hour", "Asia/Kolkata").window(ts("2026-05-01T10:45:00+00:00"))
    assert hour.start == int(ts("2026-05-01T10:30:00+00:00") * 1000)  # +05:30 zone


def test_rolling_window_buckets() -> None:
    period = parse_period("24h", "UTC")
    assert period.bucket_ms == 24 * 3_600_000 // 60
    w = period.window(1_000_000.0)
    assert w.bucket % period.bucket_ms == 0
    # the current bucket and the 60 before it: spend leaves late, never early
    assert w.bucket - w.floor == period.bucket_ms * 60
    life = parse_period("lifetime", "UTC").window(1_000_000.0)
    assert (life.label, life.floor, life.end) == ("all", 0, None)


def test_default_names_say_what_the_guard_is() -> None:
    assert Budget("100 USD", "month").name == "100 USD/month"
    assert Budget("5 USD", "day", per="user", tz="Asia/Tokyo").name == (
        "5 USD/day Asia/Tokyo per user"
    )
    assert Budget("2M tokens", "24h", where={"team": "a"}).name == (
        "2,000,000 tokens/24h where team=a"
    )
    assert RateLimit("60/minute", per="user").name == "60/minute per user"
    assert TokenRateLimit("200k/minute").name == "200k/minute tokens"
    assert TokenRateLimit("200k/minute").amount == 200_000


@pytest.mark.parametrize("bad", ["60", "sixty/minute", "0/minute", "60/fortnight", 60])
def test_bad_rate_limit(bad: object) -> None:
    with pytest.raises(ValueError, match="RateLimit limit must"):
        RateLimit(bad)  # type: ignore[arg-type]


def test_heuristic_errs_high() -> None:
    assert heuristic_tokens("") == 16
    assert heuristic_tokens("a" * 400) == 100 + 16
    # CJK: 3 UTF-8 bytes a character, about one token each: not under-counted.
    assert heuristic_tokens("漢" * 300) == 300 + 16


def test_tiktoken_counts_openai_prompts_without_network() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    tokens, method = count_tokens(text, "gpt-4o")
    if method == "heuristic":  # tiktoken or its encoding files are not on this machine
        pytest.skip("no local tiktoken encoding for gpt-4o")
    import tiktoken

    assert method == "tiktoken:o200k_base"
    assert tokens == len(tiktoken.get_encoding("o200k_base").encode(text)) + 16
    assert count_tokens(text, "openai/gpt-4")[1] == "tiktoken:cl100k_base"
    assert count_tokens(text, "claude-sonnet-4")[1] == "heuristic"


def _call(tracker: Tracker, **kwargs: object) -> object:
    return tracker.start(source="api", _reserve=False, **kwargs)  # type: ignore[arg-type]


def test_estimator_uses_max_tokens_then_model_limit_then_default() -> None:
    pricer = Pricer({"m": {"input": "3", "output": "15"}}, genai_prices=False, litellm=False)
    tracker = Tracker(pricer=pricer, log="off")
    est = Estimator(default_output_tokens=1000, default_input_tokens=500)
    call = _call(tracker, model="m", prompt_text="x" * 400, max_output_tokens=200)
    e = est.estimate(call, tracker)  # type: ignore[arg-type]
    assert (e.input_tokens, e.output_tokens) == (116, 200)
    assert e.cost == Decimal(116 * 3 + 200 * 15) / 1_000_000
    call = _call(tracker, model="m")
    e = est.estimate(call, tracker)  # type: ignore[arg-type]
    assert (e.input_tokens, e.output_tokens, e.method) == (500, 1000, "default")
    call = _call(tracker, model="nobody-prices-this", prompt_text="hi")
    assert est.estimate(call, tracker).cost is None  # type: ignore[arg-type]
    call = _call(tracker, model="m", estimate=Decimal("0.42"))
    assert est.estimate(call, tracker).cost == Decimal("0.42")  # type: ignore[arg-type]


def test_estimator_takes_the_models_output_limit() -> None:
    tracker = Tracker(log="off")
    card = tracker.pricer.rate_card("gpt-4o-mini")
    if card is None or card.max_output_tokens is None:
        pytest.skip("price data has no output limit for gpt-4o-mini")
    call = _call(tracker, model="gpt-4o-mini", prompt_text="hello")
    e = Estimator().estimate(call, tracker)  # type: ignore[arg-type]
    assert e.output_tokens == card.max_output_tokens
    assert e.cost == card.estimate(e.input_tokens, e.output_tokens)


def test_estimator_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="default_output_tokens"):
        Estimator(default_output_tokens=-1)
    with pytest.raises(ValueError, match="default_reserve"):
        Estimator(default_reserve=0.1)  # type: ignore[arg-type]


def test_utc_helper_sanity() -> None:
    assert datetime.fromtimestamp(ts("2026-01-31T16:00:00+00:00"), timezone.utc).day == 31


def test_guards_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "guards.toml"
    path.write_text(
        'guard_store = "redis://cache:6379/0"\n'
        "[[budget]]\n"
        'limit = "500 USD"\nperiod = "month"\nper = "team"\ntz = "Europe/Berlin"\n'
        "warn_at = [0.5, 0.9]\n"
        "[[budget]]\n"
        'limit = 12.5\nperiod = "day"\nwhere = { team = "search" }\nhard = false\n'
        "[[rate_limit]]\n"
        'limit = "60/minute"\nper = "user"\nwait = 2.5\n'
        "[[token_rate_limit]]\n"
        'limit = "200k/minute"\nper = "model"\n'
    )
    config = guards_from_config(path)
    assert config.guard_store == "redis://cache:6379/0"
    team, search, rpm, tpm = config.guards
    assert isinstance(team, Budget)
    assert (team.name, team.warn_at) == (
        "500 USD/month Europe/Berlin per team #8ae2aa",  # a digest of its own warn_at
        (Decimal("0.5"), Decimal("0.9")),
    )
    assert isinstance(search, Budget)
    assert (search.limit, search.hard, search.where) == (
        Limit(Decimal("12.5"), "USD"),
        False,
        {"team": "search"},
    )
    assert isinstance(rpm, RateLimit)
    assert (rpm.amount, rpm.wait) == (60, 2.5)
    assert isinstance(tpm, TokenRateLimit)
    assert tpm.amount == 200_000


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"budget": [{"limit": "1 USD", "period": "fortnight"}]}, r"budget\[1\]\.period"),
        ({"budget": [{"period": "day"}]}, r"budget\[1\]\.limit is missing"),
        (
            {"budget": [{"limit": "1 USD", "colour": "red"}]},
            r"budget\[1\]\.colour: unknown field 'colour'; budget takes hard,",
        ),
        ({"rate_limit": [{"limit": "lots"}]}, r"rate_limit\[1\]\.limit"),
        ({"budgets": [{"limit": 1.5}]}, r"budget\[1\]\.limit: .*never a float"),
        ({"budget": [{"limit": "1 USD", "clock": 1}]}, r"budget\[1\]\.clock cannot come"),
        ({"limits": []}, "unknown key"),
    ],
)
def test_bad_guard_config_names_the_entry_and_field(
    config: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        guards_from_config(config)
