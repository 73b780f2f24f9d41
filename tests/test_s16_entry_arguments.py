"""Every entry point checks its ``tracker=`` where it is built, with one check
(``check_tracker``): a ledger URL there (a natural slip: ``Tracker()`` and the reports take
one) was accepted by the HTTP transports and clients, and every call through them then went
unrecorded and unguarded with only a rate-limited warning. And ``Tracker.record`` names
itself for a keyword it does not take (Python named ``Tracker.finish()``, which the caller
never called), and takes the attribution keywords ``Tracker()`` and ``track_cost()`` take.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

import costledger
from costledger import Tracker, Usage, track_cost
from costledger.http import (
    AsyncClient,
    AsyncHttpx2TrackingTransport,
    AsyncTrackingTransport,
    Client,
    Httpx2TrackingTransport,
    TrackingTransport,
)
from costledger.testing import InMemoryLedger

URL = "sqlite:///costs.db"
URL_HINT = " (for a ledger URL: tracker=Tracker(Ledger(url)))"
# gpt-4o-mini: 0.15 USD per million input tokens, 0.60 output.
COST_1000_IN_10_OUT = Decimal("0.000156")
assert (1000 * Decimal("0.15") + 10 * Decimal("0.60")) / 1_000_000 == COST_1000_IN_10_OUT

ENTRY_POINTS: list[tuple[str, Any]] = [
    ("TrackingTransport()", lambda t: TrackingTransport(httpx.MockTransport(_reply), tracker=t)),
    ("AsyncTrackingTransport()", lambda t: AsyncTrackingTransport(tracker=t)),
    ("Httpx2TrackingTransport()", lambda t: Httpx2TrackingTransport(tracker=t)),
    ("AsyncHttpx2TrackingTransport()", lambda t: AsyncHttpx2TrackingTransport(tracker=t)),
    ("Client()", lambda t: Client("http://127.0.0.1:9/v1", "sk-test", tracker=t)),
    ("AsyncClient()", lambda t: AsyncClient("http://127.0.0.1:9/v1", "sk-test", tracker=t)),
    ("track_cost()", lambda t: track_cost(tracker=t)),
]


def _reply(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "c1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 10},
        },
    )


@pytest.mark.parametrize(("entry", "make"), ENTRY_POINTS, ids=[e for e, _ in ENTRY_POINTS])
def test_a_ledger_url_as_tracker_is_refused_where_the_entry_point_is_built(
    entry: str, make: Any
) -> None:
    with pytest.raises(TypeError) as info:
        make(URL)
    assert str(info.value) == (
        f"{entry} tracker must be a costledger Tracker or None, got str 'sqlite:///costs.db'"
        + URL_HINT
    )


@pytest.mark.parametrize(("entry", "make"), ENTRY_POINTS, ids=[e for e, _ in ENTRY_POINTS])
def test_a_url_password_never_reaches_the_message(entry: str, make: Any) -> None:
    with pytest.raises(TypeError) as info:
        make("postgresql://app:hunter2@db/costs")
    assert str(info.value) == (
        f"{entry} tracker must be a costledger Tracker or None, got str "
        "'postgresql://app:***@db/costs'" + URL_HINT
    )


@pytest.mark.parametrize(("entry", "make"), ENTRY_POINTS, ids=[e for e, _ in ENTRY_POINTS])
def test_a_ledger_or_the_tracker_class_is_refused_with_how_to_make_a_tracker(
    entry: str, make: Any
) -> None:
    with pytest.raises(TypeError) as info:
        make(InMemoryLedger())
    assert str(info.value).startswith(
        f"{entry} tracker must be a costledger Tracker or None, got InMemoryLedger "
    )
    assert str(info.value).endswith(" (for a ledger: tracker=Tracker(ledger))")
    with pytest.raises(TypeError) as info:
        make(Tracker)
    assert str(info.value) == (
        f"{entry} tracker must be a costledger Tracker or None, got type "
        "<class 'costledger._tracker.Tracker'> (an instance: tracker=Tracker(...))"
    )
    with pytest.raises(TypeError) as info:
        make(42)
    assert str(info.value) == (f"{entry} tracker must be a costledger Tracker or None, got int 42")


def test_the_transport_with_a_tracker_records_the_exact_cost() -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, log="off", team="search")
    transport = TrackingTransport(httpx.MockTransport(_reply), tracker=tracker)
    with httpx.Client(transport=transport) as http:
        http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": []},
        )
    costledger.drain_deferred()
    [event] = list(ledger.events())
    assert (event.model, event.team, event.total_cost) == (
        "gpt-4o-mini",
        "search",
        COST_1000_IN_10_OUT,
    )


# -- Tracker.record's keywords ------------------------------------------------------------------


def _tracker(**defaults: Any) -> Tracker:
    return Tracker(InMemoryLedger(), log="off", **defaults)


def test_record_takes_the_attribution_keywords() -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, log="off", team="platform", tags=["nightly"])
    event = tracker.record(
        "gpt-4o-mini",
        Usage(input_tokens=1000, output_tokens=10),
        user=42,
        team="search",
        project="atlas",
        feature="rerank",
        tags="backfill",
    )
    assert (event.user, event.team, event.project, event.feature, event.tags) == (
        "42",
        "search",
        "atlas",
        "rerank",
        ("nightly", "backfill"),
    )
    assert event.cost.total == COST_1000_IN_10_OUT
    [stored] = list(ledger.events())
    assert (stored.user, stored.team, stored.tags, stored.total_cost) == (
        "42",
        "search",
        ["nightly", "backfill"],
        COST_1000_IN_10_OUT,
    )


def test_record_keywords_win_over_attribution_which_wins_over_the_scope() -> None:
    tracker = _tracker(team="platform")
    with costledger.attribute(team="scope", project="scoped", feature="chat"):
        event = tracker.record(
            "gpt-4o-mini",
            Usage(input_tokens=1000, output_tokens=10),
            attribution={"team": "mapping", "project": "mapped", "tags": ["a"], "ticket": "T-1"},
            team="keyword",
            tags=["b"],
        )
    assert (event.team, event.project, event.feature, event.tags, dict(event.metadata)) == (
        "keyword",
        "mapped",
        "chat",
        ("a", "b"),
        {"ticket": "T-1"},
    )


def test_record_keeps_a_call_whose_attribution_keyword_cannot_be_read() -> None:
    event = _tracker().record(
        "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=10), team="search", tags=7
    )
    assert (event.team, event.tags, event.cost.total) == ("search", (), COST_1000_IN_10_OUT)


@pytest.mark.parametrize(
    ("keyword", "advice"),
    [
        ("trace_id", "to store it with the call: metadata={'trace_id': ...}"),
        ("teem", "did you mean 'team'?"),
        ("metdata", "did you mean 'metadata'?"),
        ("started", "did you mean 'started_at'?"),
    ],
)
def test_record_names_itself_for_a_keyword_it_does_not_take(keyword: str, advice: str) -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(ledger, log="off")
    with pytest.raises(TypeError) as info:
        tracker.record("gpt-4o-mini", Usage(input_tokens=1), **{keyword: "x"})
    assert str(info.value) == (
        f"Tracker.record() got an unexpected keyword argument {keyword!r} ({advice})"
    )
    assert list(ledger.events()) == []


def test_record_still_hands_finish_its_keywords() -> None:
    event = _tracker().record(
        "gpt-4o-mini",
        Usage(input_tokens=1000, output_tokens=10),
        request_id="req-1",
        metadata={"trace_id": "t-1"},
        reported_cost="0.000156",
    )
    assert (event.request_id, dict(event.metadata), event.reported_cost) == (
        "req-1",
        {"trace_id": "t-1"},
        COST_1000_IN_10_OUT,
    )
