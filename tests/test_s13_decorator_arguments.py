"""``@track_cost`` checks its own arguments where it decorates: a slip raises there, in the
host's own code, naming the argument and the value, instead of failing on every call (a
``tracker=`` URL), being ignored on every call (``usage="usage"``, ``attribution={...}``)
or silently becoming attribution metadata (``traker=``, ``estimat=``: the budget skipped).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Budget, BudgetExceeded, Tracker, track_cost
from costledger.testing import InMemoryLedger, MemoryStore, capture_costs

ANSWER = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
# gpt-4o-mini: 0.15 USD per million input tokens, 0.60 output.
ANSWER_COST = (10 * Decimal("0.15") + 20 * Decimal("0.60")) / Decimal(1_000_000)
assert Decimal("0.0000135") == ANSWER_COST


def _guarded(limit: str = "0.01 USD") -> Tracker:
    return Tracker(
        InMemoryLedger(), guards=[Budget(limit, "day")], guard_store=MemoryStore(), log="off"
    )


def test_misspelt_keywords_are_refused_not_taken_as_metadata() -> None:
    guarded = _guarded()
    with pytest.raises(TypeError) as info:
        track_cost(traker=guarded, estimat=Decimal("5"), modle="gpt-4o", provder="openai")
    assert str(info.value) == (
        "track_cost() got an unexpected keyword argument 'traker': did you mean 'tracker'? "
        "(keywords it does not take are attribution metadata; to record metadata named "
        "'traker', pass metadata={'traker': ...})"
    )
    for keyword, meant in (("estimat", "estimate"), ("modle", "model"), ("provder", "provider")):
        with pytest.raises(
            TypeError,
            match=rf"^track_cost\(\) got an unexpected keyword "
            rf"argument '{keyword}': did you mean '{meant}'\?",
        ):
            track_cost(**{keyword: "x"})
    with pytest.raises(TypeError) as info:
        track_cost(ledger_tracker=guarded)
    assert str(info.value) == (
        "track_cost() got a Tracker as the keyword argument 'ledger_tracker', which it would "
        "store as attribution metadata; pass it as tracker="
    )


def test_the_spelt_right_keywords_run_the_budget() -> None:
    guarded = _guarded()

    @track_cost(tracker=guarded, estimate=Decimal("5"), model="gpt-4o", provider="openai")
    def ask() -> dict[str, Any]:
        return ANSWER

    with pytest.raises(BudgetExceeded):
        ask()
    # Metadata keywords far from every parameter stay metadata.
    with capture_costs() as costs:

        @track_cost(model="gpt-4o-mini", ticket="T-1", user="u-1")
        def tagged() -> dict[str, Any]:
            return ANSWER

        tagged()
    [event] = costs.events
    assert (event.user, dict(event.metadata), event.cost.total) == (
        "u-1",
        {"ticket": "T-1"},
        ANSWER_COST,
    )


def test_a_tracker_that_is_not_one_is_refused_with_its_url_redacted() -> None:
    with pytest.raises(TypeError) as info:
        track_cost(tracker="sqlite:///x.db")  # type: ignore[call-overload]
    assert str(info.value) == (
        "track_cost() tracker must be a costledger Tracker or None, got str "
        "'sqlite:///x.db' (for a ledger URL: tracker=Tracker(Ledger(url)))"
    )
    with pytest.raises(TypeError) as info:
        track_cost(tracker="postgresql://app:hunter2@db/costs")  # type: ignore[call-overload]
    assert "hunter2" not in str(info.value)
    assert "'postgresql://app:***@db/costs'" in str(info.value)
    with pytest.raises(
        TypeError,
        match=r"tracker must be a costledger Tracker or None, got "
        r"InMemoryLedger",
    ):
        track_cost(tracker=InMemoryLedger())  # type: ignore[call-overload]


def test_usage_and_attribution_must_be_callables() -> None:
    with pytest.raises(TypeError) as info:
        track_cost(usage="usage")  # type: ignore[call-overload]
    assert str(info.value) == "track_cost() usage must be a callable or None, got str 'usage'"
    with pytest.raises(TypeError) as info:
        track_cost(attribution={"user": "u"})  # type: ignore[call-overload]
    assert str(info.value) == (
        "track_cost() attribution must be a callable or None, got dict {'user': 'u'} "
        "(static attribution goes in keywords: user=..., feature=...)"
    )


def test_an_estimate_is_money_read_once_where_it_decorates() -> None:
    with pytest.raises(ValueError) as value_error:
        track_cost(estimate=0.05)  # type: ignore[call-overload]
    assert str(value_error.value) == (
        "estimate must be a Decimal, an int or a decimal string such as '0.05', never a float "
        "(which cannot hold money exactly), got 0.05"
    )
    for bad in ("five", "-1", True):
        with pytest.raises(ValueError, match=r"^estimate must be a Decimal, an int or a decimal"):
            track_cost(estimate=bad)  # type: ignore[call-overload]
    with pytest.raises(TypeError) as type_error:
        track_cost(estimate=[Decimal(1)])  # type: ignore[call-overload]
    assert str(type_error.value) == (
        "track_cost() estimate must be a Decimal, an int, a decimal string or a callable, "
        "got list [Decimal('1')]"
    )
    # An int and a decimal string are money: each is what the budget reserves.
    for estimate in (1, "0.0100001"):
        guarded = _guarded()

        @track_cost(tracker=guarded, model="gpt-4o-mini", estimate=estimate)
        def ask() -> dict[str, Any]:
            return ANSWER

        with pytest.raises(BudgetExceeded) as refused:
            ask()
        assert f"this call's estimate {estimate} > limit 0.01 USD" in str(refused.value)
    guarded = _guarded()

    @track_cost(tracker=guarded, model="gpt-4o-mini", estimate="0.0099999")
    def fits() -> dict[str, Any]:
        return ANSWER

    with capture_costs(isolate=False) as costs:
        fits()
    assert [e.cost.total for e in costs.events] == [ANSWER_COST]


def test_model_provider_and_the_function_itself() -> None:
    with pytest.raises(TypeError) as info:
        track_cost(model=["gpt-4o"])  # type: ignore[call-overload]
    assert str(info.value) == "track_cost() model must be text or None, got list ['gpt-4o']"
    with pytest.raises(TypeError) as info:
        track_cost(provider={"name": "openai"})  # type: ignore[call-overload]
    assert str(info.value) == (
        "track_cost() provider must be text or None, got dict {'name': 'openai'}"
    )
    with pytest.raises(TypeError) as info:
        track_cost("gpt-4o")  # type: ignore[call-overload]
    assert str(info.value) == (
        "track_cost() takes the function to decorate as its only positional argument, got "
        "str 'gpt-4o' (use keywords: model=..., tracker=...)"
    )
    # bytes and an enum's text are text, as the tracker reads them
    with capture_costs() as costs:

        @track_cost(model=b"gpt-4o-mini", provider="openai")
        def ask() -> dict[str, Any]:
            return {"usage": ANSWER["usage"]}

        ask()
    assert [(e.model, e.cost.total) for e in costs.events] == [("gpt-4o-mini", ANSWER_COST)]


def test_estimate_accepts_what_the_runtime_accepts_under_mypy(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(
        "from decimal import Decimal\n"
        "from costledger import track_cost\n"
        "@track_cost(estimate=1)\n"
        "def a() -> None: ...\n"
        '@track_cost(estimate="0.05")\n'
        "def b() -> None: ...\n"
        '@track_cost(estimate=Decimal("0.05"))\n'
        "def c() -> None: ...\n"
        'def per_call(n: int) -> str: return "0.05"\n'
        "@track_cost(estimate=per_call)\n"
        "def d(n: int) -> None: ...\n"
        "@track_cost(estimate=0.05)\n"
        "def e() -> None: ...\n"
    )
    api = pytest.importorskip("mypy.api")
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", "/dev/null", str(user)]
    )
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert status == 1
    # only the float (no overload matches it)
    assert {line.split(":")[1] for line in errors} == {"12"}
