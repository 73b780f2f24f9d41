"""``Tracker``, ``configure`` and ``capture_costs`` take attribution metadata as keywords:
a keyword close to one of their parameters (``guard=``), or a ``Tracker`` as a keyword's
value, is a slip, refused with a ``TypeError``, never stored as metadata (where a
misspelt ``guards=`` left the budget out without a word)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

import costledger
from costledger import Budget, BudgetExceeded, Tracker, Usage, configure, get_tracker
from costledger.testing import InMemoryLedger, MemoryStore, capture_costs

# gpt-4o-mini: 0.15 USD per million input tokens, 0.60 output.
COST_10_20 = Decimal("0.0000135")


@pytest.fixture(autouse=True)
def _default_restored() -> Iterator[None]:
    from costledger import _tracker

    before = _tracker._default
    yield
    _tracker._set_default(before)


def test_a_misspelt_guards_keyword_is_refused_not_metadata() -> None:
    with pytest.raises(TypeError) as info:
        Tracker(InMemoryLedger(), guard=[Budget("0.000001 USD", "day")], log="off")
    assert str(info.value) == (
        "Tracker() got an unexpected keyword argument 'guard': did you mean 'guards'? "
        "(keywords it does not take are attribution metadata; to record metadata named "
        "'guard', pass metadata={'guard': ...})"
    )
    # spelt right, the budget is in force
    tracker = Tracker(
        InMemoryLedger(),
        guards=[Budget("0.000001 USD", "day")],
        guard_store=MemoryStore(),
        log="off",
    )
    with pytest.raises(BudgetExceeded):
        tracker.start(source="api", model="gpt-4o", estimate=Decimal("1"))


def test_a_tracker_as_a_keyword_value_is_refused() -> None:
    mine = Tracker(InMemoryLedger(), log="off")
    with pytest.raises(TypeError) as info:
        Tracker(InMemoryLedger(), tracker=mine, log="off")
    assert str(info.value) == (
        "Tracker() got a Tracker as the keyword argument 'tracker', which it would store as "
        "attribution metadata"
    )


def test_other_keywords_are_still_metadata() -> None:
    tracker = Tracker(InMemoryLedger(), log="off", team="search", env="prod")
    event = tracker.record("gpt-4o-mini", Usage(10, 20))
    assert (event.team, dict(event.metadata), event.cost.total) == (
        "search",
        {"env": "prod"},
        COST_10_20,
    )


def test_configure_tracker_none_is_not_given_not_metadata() -> None:
    tracker = configure(tracker=None, ledger=InMemoryLedger(), log="off")
    event = tracker.record("gpt-4o-mini", Usage(10, 20))
    assert dict(event.metadata) == {}
    assert dict(tracker.default_attribution.metadata) == {}
    assert get_tracker() is tracker


def test_configure_tracker_keyword_takes_a_tracker_and_nothing_else() -> None:
    mine = Tracker(InMemoryLedger(), log="off")
    assert configure(tracker=mine) is mine
    assert get_tracker() is mine
    with pytest.raises(TypeError) as info:
        configure(tracker="my-tracker", ledger=InMemoryLedger(), log="off")
    assert str(info.value) == (
        "configure() tracker must be a costledger Tracker or None, got str 'my-tracker' "
        "(for a ledger URL: tracker=Tracker(Ledger(url)))"
    )
    with pytest.raises(TypeError, match=r"^configure\(\) got a Tracker both positionally"):
        configure(mine, tracker=mine)
    assert get_tracker() is mine


def test_configure_refuses_a_misspelt_parameter() -> None:
    before = get_tracker()
    with pytest.raises(TypeError) as info:
        configure(ledgr=InMemoryLedger(), log="off")
    assert str(info.value).startswith(
        "configure() got an unexpected keyword argument 'ledgr': did you mean 'ledger'?"
    )
    assert get_tracker() is before  # nothing configured


def test_capture_costs_refuses_a_tracker_and_misspelt_tracker_arguments() -> None:
    mine = Tracker(InMemoryLedger(), log="off")
    before = get_tracker()
    with pytest.raises(TypeError) as info, capture_costs(tracker=mine):
        pass  # pragma: no cover - refused before the block
    assert str(info.value) == (
        "capture_costs() got a Tracker as the keyword argument 'tracker', which it would "
        "store as attribution metadata"
    )
    with (
        pytest.raises(TypeError, match=r"'gaurds': did you mean 'guards'\?"),
        capture_costs(gaurds=[Budget("1 USD", "day")]),
    ):
        pass  # pragma: no cover
    with pytest.raises(TypeError) as info, capture_costs(isolate=False, team="search"):
        pass  # pragma: no cover
    assert str(info.value) == (
        "capture_costs(isolate=False) makes no Tracker, so it takes no Tracker arguments, got team"
    )
    assert get_tracker() is before


def test_capture_costs_passes_tracker_arguments_and_metadata_on() -> None:
    with capture_costs(team="search", env="test") as costs:
        costledger.get_tracker().record("gpt-4o-mini", Usage(10, 20))
    (event,) = costs.events
    assert (event.team, dict(event.metadata), event.cost.total) == (
        "search",
        {"env": "test"},
        COST_10_20,
    )


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("ledgr", "ledger"),
        ("pricr", "pricer"),
        ("guard", "guards"),
        ("tag", "tags"),
        ("teams", "team"),
        ("logs", "log"),
    ],
)
def test_one_slip_from_a_parameter_is_a_misspelling(key: str, meant: str) -> None:
    with pytest.raises(TypeError, match=rf"'{key}': did you mean '{meant}'\?"):
        Tracker(InMemoryLedger(), log="off", **{key: "x"})


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("traker", "tracker"),
        ("tracer", "tracker"),
        ("modle", "model"),
        ("mdoel", "model"),
        ("provder", "provider"),
    ],
)
def test_one_slip_from_a_decorator_parameter_is_a_misspelling(key: str, meant: str) -> None:
    with pytest.raises(TypeError, match=rf"'{key}': did you mean '{meant}'\?"):
        costledger.track_cost(**{key: "x"})


@pytest.mark.parametrize(
    "key", ["trace", "mode", "org", "env", "region", "session", "version", "tenant", "stage"]
)
def test_metadata_names_near_a_parameter_are_still_metadata(key: str) -> None:
    tracker = Tracker(InMemoryLedger(), log="off", **{key: "x"})
    assert dict(tracker.default_attribution.metadata) == {key: "x"}


def test_metadata_named_like_a_parameter_goes_through_metadata() -> None:
    tracker = Tracker(InMemoryLedger(), log="off", metadata={"guard": "g1", "env": "x"}, env="prod")
    assert dict(tracker.default_attribution.metadata) == {"guard": "g1", "env": "prod"}
    with costledger.attribute(metadata={"models": "a,b"}, region="eu") as scope:
        assert dict(scope.metadata) == {"models": "a,b", "region": "eu"}
