"""The value objects hold what they say: ``UsageEvent`` and ``Attribution`` hash (a set of
events type-checks, so it must run); a ``Cost`` refuses float money and an unknown status
where it is built (not later, quarantined by the ledger's writer); ``UsageEvent.tags`` are
text (an int tag was stored as a JSON number, which reports merged with its text, or
crashed sorting); an empty attribution name is no name (``team=""`` was a group of its own
that printed like "no team" and that no filter could select)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path

import pytest

from costledger import Cost, Ledger, Tracker, Usage, UsageEvent, attribute, report
from costledger._attribution import Attribution
from costledger.testing import InMemoryLedger

ONE = Decimal("1")
JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)


def _event(**fields: object) -> UsageEvent:
    values: dict[str, object] = {
        "model": "m",
        "usage": Usage(1, 1),
        "cost": Cost(status="priced", total=ONE),
        "timestamp": JUNE,
    }
    values.update(fields)
    return UsageEvent(**values)  # type: ignore[arg-type]


# -- hashing ------------------------------------------------------------------------------------


def test_usage_events_hash_by_their_id() -> None:
    event = _event(id="e-1", metadata={"doc": ["a", "b"]}, price_context={"service_tier": "flex"})
    same = _event(id="e-1", metadata={"doc": ["a", "b"]}, price_context={"service_tier": "flex"})
    other = _event(id="e-2", metadata={"doc": ["a", "b"]}, price_context={"service_tier": "flex"})
    assert hash(event) == hash(same) == hash("e-1")
    assert event == same
    assert event != other
    assert {event, same, other} == {event, other}
    assert len({event, same, other}) == 2


def test_attributions_hash_by_their_names_and_tags() -> None:
    a = Attribution(user="u", tags=("x",), metadata={"doc": [1]})
    b = Attribution(user="u", tags=("x",), metadata={"doc": [1]})
    c = Attribution(user="u", tags=("x",), metadata={"doc": [2]})
    assert hash(a) == hash(b) == hash(c)
    assert a == b
    assert a != c
    assert len({a, b, c}) == 2


# -- Cost ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        (
            {"status": "priced", "total": 0.1},
            TypeError,
            "Cost total must be a Decimal or None (money is never a float), got float 0.1",
        ),
        (
            {"status": "priced", "total": ONE, "output": 1},
            TypeError,
            "Cost output must be a Decimal or None (money is never a float), got int 1",
        ),
        (
            {"status": "priced", "total": Decimal("NaN")},
            ValueError,
            "Cost total must be a finite amount, got Decimal('NaN')",
        ),
        (
            {"status": "bogus", "total": ONE},
            ValueError,
            "Cost status must be one of priced, unknown_model, not_priced, got 'bogus'",
        ),
        (
            {"status": "priced", "total": ONE, "currency": 978},
            TypeError,
            "Cost currency must be text (USD, EUR), got int 978",
        ),
    ],
)
def test_a_cost_refuses_what_it_cannot_hold(
    fields: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        Cost(**fields)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_valid_cost_is_as_given_and_replace_checks_too() -> None:
    cost = Cost("priced", Decimal("0.10"), output=Decimal("0.10"), currency="EUR")
    assert (cost.status, cost.total, cost.output, cost.currency, cost.request) == (
        "priced",
        Decimal("0.10"),
        Decimal("0.10"),
        "EUR",
        Decimal("0.00"),
    )
    assert hash(cost) == hash(
        Cost("priced", Decimal("0.10"), output=Decimal("0.10"), currency="EUR")
    )
    from dataclasses import replace

    with pytest.raises(TypeError, match=r"^Cost total must be a Decimal"):
        replace(cost, total=0.3)  # type: ignore[arg-type]


def test_the_pricer_still_builds_its_costs_by_the_fast_path() -> None:
    from costledger._pricing import _card

    assert _card._new_cost.__name__ == "build_fast"


# -- tags ---------------------------------------------------------------------------------------


class Tag(Enum):
    BETA = "beta"


def test_usage_event_tags_are_text() -> None:
    event = _event(tags=(5, "5", None, "", 1.5, Tag.BETA, b"raw"))
    assert event.tags == ("5", "5", "1.5", "beta", "raw")
    assert _event(tags=["a", "b"]).tags == ("a", "b")
    for bad in ((True,), (["a"],)):
        with pytest.raises(TypeError, match=r"^UsageEvent tags must be text or None, got "):
            _event(tags=bad)
    with pytest.raises(TypeError) as info:
        _event(tags="beta")
    assert str(info.value) == "UsageEvent tags must be a tuple of text, got str 'beta'"


def test_int_tags_report_as_their_text_from_events_and_rollups(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'tags.db'}", sync=True)
    ledger.record_many(
        _event(id=f"t{i}", tags=tags) for i, tags in enumerate([(5,), ("5",), (None,), (1.5,)])
    )
    assert sorted(list(e.tags) for e in ledger.events()) == [[], ["1.5"], ["5"], ["5"]]
    for rollups in (True, False):
        rows = report(ledger, "tag", use_rollups=rollups).rows
        assert [(row.key, row.requests, row.cost) for row in rows] == [
            (("5",), 2, Decimal("2")),
            (("1.5",), 1, ONE),
            ((None,), 1, ONE),  # the None tag was left out: an untagged call
        ]
        (total,) = report(ledger, tag="5", use_rollups=rollups).totals
        assert (total.requests, total.cost) == (2, Decimal("2"))
    ledger.close()


# -- empty names --------------------------------------------------------------------------------


def test_an_empty_attribution_name_is_no_name() -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, log="off")
    with attribute(team="", user=b"", tags=["", "x"]) as scope:
        assert (scope.team, scope.user, scope.tags) == (None, None, ("x",))
        first = tracker.record("gpt-4o-mini", Usage(1000, 100))
    second = tracker.record("gpt-4o-mini", Usage(2000, 100), attribution={"team": ""})
    third = Tracker(ledger, log="off", project="").record("gpt-4o-mini", Usage(10, 20))
    assert [(e.team, e.user, e.project, e.tags) for e in (first, second, third)] == [
        (None, None, None, ("x",)),
        (None, None, None, ()),
        (None, None, None, ()),
    ]
    direct = _event(user="", team="", project="", feature="")
    assert (direct.user, direct.team, direct.project, direct.feature) == (None,) * 4
    rows = report(ledger, "team").rows
    assert [(row.key, row.requests) for row in rows] == [((None,), 3)]
