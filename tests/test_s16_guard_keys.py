"""Guard keys are the texts the ledger stores: a lone surrogate or a NUL in a per-key value
is counted under its cleaned form on every store, and an empty key is no key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import BudgetExceeded, Ledger, RateLimited, Tracker, Usage, drain_deferred
from costledger._guards import Budget, RateLimit, TokenRateLimit, budget_status
from costledger._pricing import Pricer

from .test_guards_backends import backends, store_url

__all__ = ["store_url"]  # the per-backend fixture, shared with the store contract's tests

BACKENDS = ["memory", "redis", "postgres", "sqlite"]
PRICES = {"m": {"input": "10", "output": "20"}}  # 1,000 input tokens = one cent
CENT = Decimal("0.01")
HALF_EMOJI = "ren\ud83d"  # 'ren🎉' cut after the first half of its UTF-16 pair
AS_STORED = "ren\ufffd"  # as the ledger stores it


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """The test's one SQLite ledger: its trackers share it, so each reads what the others
    recorded (its buffer included). Closed here, not when collected: a collected ledger's
    close waits for its writer, which may wait for the schema lock a later test holds."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield ledger
    ledger.close()


def _tracker(ledger: Ledger, store_url: str, *guards: Any) -> Tracker:
    pricer = Pricer(PRICES, genai_prices=False, litellm=False)
    return Tracker(ledger, pricer, list(guards), guard_store=store_url, log="off")


def _spend(tracker: Tracker, **kw: Any) -> None:
    """A call estimated at, and spending, one cent (1,000 input tokens of model m)."""
    kw.setdefault("model", "m")
    call = tracker.start(source="api", estimate=CENT, **kw)
    tracker.finish(call, usage=Usage(input_tokens=1000))


def _status(tracker: Tracker) -> list[tuple[str | None, Decimal]]:
    return [(row.key, row.spent) for row in budget_status(tracker)]


# -- texts the ledger cleans -----------------------------------------------------------------


@backends(*BACKENDS)
def test_a_lone_surrogate_in_a_user_is_counted_under_the_key_the_ledger_stores(
    store_url: str, ledger: Ledger
) -> None:
    budget = Budget("0.03 USD", "day", per="user", name=f"keys-{uuid.uuid4().hex[:6]}")
    tracker = _tracker(ledger, store_url, budget)
    _spend(tracker, attribution={"user": HALF_EMOJI})
    _spend(tracker, attribution={"user": AS_STORED})  # the same user, as the ledger has it
    _spend(tracker, attribution={"user": HALF_EMOJI})
    with pytest.raises(BudgetExceeded) as info:
        _spend(tracker, attribution={"user": HALF_EMOJI})
    assert (info.value.key, info.value.spent) == (AS_STORED, Decimal("0.03"))
    assert _status(tracker) == [(AS_STORED, Decimal("0.03"))]
    (asked,) = budget.status(tracker, keys=[HALF_EMOJI])
    assert (asked.key, asked.spent) == (AS_STORED, Decimal("0.03"))
    assert [e.user for e in ledger.events()] == [AS_STORED] * 3
    # A fresh store is seeded from the ledger under the same key: the same three cents.
    again = _tracker(ledger, "memory://", Budget("0.03 USD", "day", per="user", name=budget.name))
    assert _status(again) == [(AS_STORED, Decimal("0.03"))]
    with pytest.raises(BudgetExceeded) as seeded:
        _spend(again, attribution={"user": HALF_EMOJI})
    assert (seeded.value.key, seeded.value.spent) == (AS_STORED, Decimal("0.03"))


@backends(*BACKENDS)
def test_a_nul_in_a_team_is_left_out_of_its_key(store_url: str, ledger: Ledger) -> None:
    budget = Budget("0.02 USD", "day", per="team", name=f"nul-{uuid.uuid4().hex[:6]}")
    tracker = _tracker(ledger, store_url, budget)
    _spend(tracker, attribution={"team": "se\x00arch"})
    _spend(tracker, attribution={"team": "search"})
    with pytest.raises(BudgetExceeded) as info:
        _spend(tracker, attribution={"team": "search\x00"})
    assert (info.value.key, info.value.spent) == ("search", Decimal("0.02"))
    # a team of nothing but NUL is stored as "": no team, as a call without one
    _spend(tracker, attribution={"team": "\x00"})
    _spend(tracker)
    assert _status(tracker) == [(None, Decimal("0.02")), ("search", Decimal("0.02"))]


@backends(*BACKENDS)
def test_tags_that_the_ledger_stores_alike_count_once(store_url: str, ledger: Ledger) -> None:
    budget = Budget("0.05 USD", "day", per="tag", name=f"tags-{uuid.uuid4().hex[:6]}")
    tracker = _tracker(ledger, store_url, budget)
    _spend(tracker, attribution={"tags": ["eu\ud83d", "eu\ufffd", "beta"]})
    _spend(tracker, attribution={"tags": ["\x00"]})  # no tag once cleaned
    assert _status(tracker) == [
        (None, Decimal("0.01")),
        ("beta", Decimal("0.01")),
        ("eu\ufffd", Decimal("0.01")),
    ]


@backends(*BACKENDS)
def test_a_rate_limit_counts_a_lone_surrogate_user(store_url: str, ledger: Ledger) -> None:
    limit = RateLimit("2/minute", per="user", name=f"rl-{uuid.uuid4().hex[:6]}")
    tracker = _tracker(ledger, store_url, limit)
    _spend(tracker, attribution={"user": HALF_EMOJI})
    _spend(tracker, attribution={"user": AS_STORED})
    with pytest.raises(RateLimited) as info:
        _spend(tracker, attribution={"user": HALF_EMOJI})
    assert info.value.key == AS_STORED
    _spend(tracker, attribution={"user": "alice"})  # a window of her own


@backends(*BACKENDS)
def test_a_token_rate_limit_counts_a_lone_surrogate_user(store_url: str, ledger: Ledger) -> None:
    limit = TokenRateLimit("10000/minute", per="user", name=f"trl-{uuid.uuid4().hex[:6]}")
    tracker = _tracker(ledger, store_url, limit)
    # no prompt: 2,000 default input tokens + 6,000 max output = 8,000 reserved
    first = tracker.start(
        source="api", model="m", max_output_tokens=6000, attribution={"user": HALF_EMOJI}
    )
    with pytest.raises(RateLimited) as info:
        tracker.start(
            source="api", model="m", max_output_tokens=6000, attribution={"user": AS_STORED}
        )
    assert info.value.key == AS_STORED
    tracker.finish(first, usage=Usage(input_tokens=600, output_tokens=400))  # 1,000 used
    tracker.cancel(
        tracker.start(
            source="api", model="m", max_output_tokens=6000, attribution={"user": HALF_EMOJI}
        )
    )


def test_where_values_are_cleaned_as_keys_are(ledger: Ledger) -> None:
    budget = Budget("0.02 USD", "day", where={"user": HALF_EMOJI}, name="where-surrogate")
    assert budget.where == {"user": AS_STORED}
    tracker = _tracker(ledger, "memory://", budget)
    _spend(tracker, attribution={"user": AS_STORED})
    _spend(tracker, attribution={"user": HALF_EMOJI})
    _spend(tracker, attribution={"user": "alice"})  # not under the budget
    with pytest.raises(BudgetExceeded) as info:
        _spend(tracker, attribution={"user": HALF_EMOJI})
    assert info.value.spent == Decimal("0.02")


@pytest.mark.parametrize("value", ["", "\x00"])
def test_an_empty_where_value_is_refused_when_the_guard_is_made(value: str) -> None:
    message = (
        f"where['team'] must be a non-empty string, got {value!r}: an empty team is no"
        " team, which where= cannot select"
    )
    with pytest.raises(ValueError) as info:
        Budget("1 USD", "day", where={"team": value})
    assert str(info.value) == message
    with pytest.raises(ValueError) as info:
        RateLimit("10/minute", where={"team": value})
    assert str(info.value) == message


# -- empty keys ------------------------------------------------------------------------------


@backends(*BACKENDS)
def test_an_empty_model_is_no_model(store_url: str, ledger: Ledger) -> None:
    budget = Budget("5000 tokens", "day", per="model", name=f"empty-{uuid.uuid4().hex[:6]}")
    tracker = _tracker(ledger, store_url, budget)
    for model in ("", None, ""):
        call = tracker.start(source="api", model=model, max_output_tokens=10)
        tracker.finish(call, usage=Usage(input_tokens=900, output_tokens=100))
    assert _status(tracker) == [(None, Decimal(3000))]
    with pytest.raises(BudgetExceeded) as info:  # 3,000 + 2,010 (2,000 default input + 10)
        tracker.start(source="api", model="", max_output_tokens=10)
    assert (info.value.key, info.value.spent) == (None, Decimal(3000))
    # a fresh store seeds "no model" from the ledger, the calls with model="" included
    again = _tracker(
        ledger, "memory://", Budget("5000 tokens", "day", per="model", name=budget.name)
    )
    assert _status(again) == [(None, Decimal(3000))]


@backends(*BACKENDS)
def test_an_empty_provider_is_no_provider(store_url: str, ledger: Ledger) -> None:
    budget = Budget("0.05 USD", "day", per="provider", name=f"prov-{uuid.uuid4().hex[:6]}")
    limit = RateLimit("3/minute", per="provider", name=f"prl-{uuid.uuid4().hex[:6]}")
    tracker = _tracker(ledger, store_url, budget, limit)
    _spend(tracker, provider="")
    _spend(tracker)
    _spend(tracker, provider="")
    with pytest.raises(RateLimited) as info:
        _spend(tracker, provider="")
    assert info.value.key is None
    assert _status(tracker) == [(None, Decimal("0.03"))]
    # the ledger stores provider "" as ""; read back, it is the no-provider key's spend
    assert sorted(repr(e.provider) for e in ledger.events()) == ["''", "''", "None"]
    again = _tracker(
        ledger, "memory://", Budget("0.05 USD", "day", per="provider", name=budget.name)
    )
    assert _status(again) == [(None, Decimal("0.03"))]


@pytest.mark.parametrize("period", ["day", "24h"])
def test_an_empty_key_is_seeded_on_calendar_and_rolling_periods(
    ledger: Ledger, period: str
) -> None:
    first = _tracker(ledger, "memory://")
    _spend(first, provider="")
    _spend(first, provider="")
    _spend(first, provider="openai")
    budget = Budget("0.03 USD", period, per="provider", name="seeded")
    tracker = _tracker(ledger, "memory://", budget)
    _spend(tracker, provider="")
    with pytest.raises(BudgetExceeded) as info:
        _spend(tracker, provider="")
    assert (info.value.key, info.value.spent) == (None, Decimal("0.03"))
    assert _status(tracker) == [(None, Decimal("0.03")), ("openai", Decimal("0.01"))]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Budget("1 USD", "day", name="spend\ud83d"),
        lambda: RateLimit("2/minute", name="calls\x00"),
        lambda: TokenRateLimit("1000/minute", name="tokens\udc00"),
    ],
)
def test_a_guard_name_no_store_can_write_is_refused_when_made(make: Any) -> None:
    """Counters are named after the guard: on Redis and SQL such a name failed every call."""
    with pytest.raises(ValueError, match="name must be text without NUL characters or lone"):
        make()


@backends(*BACKENDS)
def test_a_recorded_call_id_with_a_lone_surrogate_is_counted(
    store_url: str, ledger: Ledger
) -> None:
    """``Tracker.record``'s settle is keyed by the call id: a lone surrogate in it failed
    the settle on Redis and SQL (UnicodeEncodeError), and the spend was not counted."""
    budget = Budget("1 USD", "day", name=f"rec-{uuid.uuid4().hex[:8]}")
    tracker = _tracker(ledger, store_url, budget)
    tracker.record("m", Usage(input_tokens=1000, output_tokens=0), call_id=f"rec-{HALF_EMOJI}")
    assert drain_deferred(10)
    assert budget.status(tracker)[0].spent == CENT
