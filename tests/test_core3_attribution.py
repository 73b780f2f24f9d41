"""Attribution values as text: bytes (what redis-py returns) decoded as UTF-8, ``tags`` one
tag for a string or bytes, none for ``None``; ``attribute()`` names the field of a value it
cannot use, per-call attribution (``Attribution.from_mapping``, on the host's call path)
leaves it out with a warning instead of raising."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

import costledger
from costledger import Tracker, Usage, attribute, track_cost
from costledger._attribution import Attribution
from costledger._ledger import InMemoryLedger
from costledger._logging import _reporter
from costledger._pricing import Pricer

# 1,000 input tokens of "m" cost exactly one cent.
PRICES = {"m": {"input": "10", "output": "20"}}
USAGE = Usage(input_tokens=1000)


@pytest.fixture(autouse=True)
def _fresh_reporter() -> None:
    _reporter.reset()  # the warnings are rate-limited per process


def _tracker(**default_attribution: Any) -> Tracker:
    return Tracker(
        InMemoryLedger(),
        Pricer(PRICES, genai_prices=False, litellm=False),
        log="off",
        **default_attribution,
    )


def _stored(tracker: Tracker) -> list[tuple[Any, ...]]:
    costledger.drain_deferred(10.0)
    return [
        (e.user, e.team, e.project, e.feature, e.tags, e.total_cost)
        for e in tracker.ledger.events()  # type: ignore[attr-defined]
    ]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("boom")

    def __repr__(self) -> str:
        return "Unprintable()"


def test_attribute_decodes_bytes_and_reads_tags_as_one_or_many() -> None:
    tracker = _tracker()
    with attribute(
        user=b"u-42",
        team=bytearray(b"search"),
        project=b"caf\xc3\xa9",
        feature=b"bad\xff",
        tags=b"beta",
    ):
        tracker.record("m", USAGE)
    with attribute(tags=None):
        tracker.record("m", USAGE)
    with attribute(tags=[b"a", "b", 3]):
        tracker.record("m", USAGE)
    with attribute(tags=""):
        tracker.record("m", USAGE)
    cent = Decimal("0.01")
    assert _stored(tracker) == [
        ("u-42", "search", "café", "bad\ufffd", ["beta"], cent),
        (None, None, None, None, [], cent),
        (None, None, None, None, ["a", "b", "3"], cent),
        (None, None, None, None, [], cent),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tags": 7}, "attribute() tags must be a string, bytes or an iterable of them, got int 7"),
        (
            {"tags": 1.5},
            "attribute() tags must be a string, bytes or an iterable of them, got float 1.5",
        ),
        (
            {"tags": [Unprintable()]},
            "attribute() tags: the tag Unprintable Unprintable() has no text (RuntimeError: boom)",
        ),
        (
            {"user": Unprintable()},
            "attribute() user must be text or have one, got Unprintable Unprintable() "
            "(RuntimeError: boom)",
        ),
    ],
)
def test_attribute_names_the_field_of_a_value_it_cannot_use(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError) as raised:
        attribute(**kwargs)
    assert str(raised.value) == message


def test_per_call_attribution_leaves_out_what_it_cannot_use_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = _tracker()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        first = tracker.record("m", USAGE, attribution={"user": b"u-42", "tags": b"beta"})
        second = tracker.record("m", USAGE, attribution={"tags": 7, "team": "t"})
        third = tracker.record(
            "m", USAGE, attribution={"user": Unprintable(), "tags": ["x", Unprintable()]}
        )
    assert (first.user, first.tags) == ("u-42", ("beta",))
    assert (second.team, second.tags) == ("t", ())
    assert (third.user, third.tags) == (None, ("x",))
    cent = Decimal("0.01")
    assert _stored(tracker) == [
        ("u-42", None, None, None, ["beta"], cent),
        (None, "t", None, None, [], cent),
        (None, None, None, None, ["x"], cent),
    ]
    assert (
        "attribution tags must be a string, bytes or an iterable of them, got int 7; left out"
    ) in caplog.text
    assert (
        "attribution user Unprintable Unprintable() has no text (RuntimeError: boom); left out"
    ) in caplog.text
    assert (
        "attribution tags: the tag Unprintable Unprintable() has no text (RuntimeError: boom);"
        " left out"
    ) in caplog.text


def test_from_mapping_and_the_trackers_defaults_never_raise() -> None:
    assert Attribution.from_mapping({"tags": None, "user": b"u"}) == Attribution(user="u")
    assert Attribution.from_mapping({"tags": 7}).tags == ()
    assert Attribution.from_mapping({"tags": b"beta"}).tags == ("beta",)
    assert Attribution.from_mapping({"tags": ""}).tags == ()
    tracker = _tracker(user=b"u-1", tags=None)
    assert tracker.record("m", USAGE).user == "u-1"


def test_a_decorated_calls_attribution_callable_gets_the_same_reading() -> None:
    tracker = _tracker()

    @track_cost(tracker=tracker, model="m", attribution=lambda q: {"user": q.encode(), "tags": 7})
    def ask(q: str) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}

    assert ask("u-9") == {"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}
    assert _stored(tracker) == [("u-9", None, None, None, [], Decimal("0.01"))]
