"""The Tracker makes every text field of the event it builds text: a value whose text is
obvious (a number, a UUID, an enum, bytes) becomes that text; any other value (a list for
``status``) is left out, the call still recorded, with a warning and a note naming the
field and the value. Nothing reaches the ledger that it would have to reject, and nothing
is raised into the host."""

from __future__ import annotations

import enum
import logging
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import costledger
from costledger import Tracker, Usage
from costledger._ledger import Ledger
from costledger._logging import _reporter
from costledger._pricing import Pricer

# 1,000 input tokens of "m" cost exactly one cent, 1,000 output tokens two.
PRICES = {"m": {"input": "10", "output": "20"}}
USAGE = Usage(input_tokens=1000, output_tokens=500)
COST = Decimal("0.02")
REQUEST = uuid.UUID("12345678-1234-5678-1234-567812345678")


class Provider(enum.Enum):
    OPENAI = "openai"


class Status(str, enum.Enum):
    ERROR = "error"


@pytest.fixture(autouse=True)
def _fresh_reporter() -> None:
    _reporter.reset()  # the warnings are rate-limited per process


def _tracker(ledger: Any) -> Tracker:
    return Tracker(ledger, Pricer(PRICES, genai_prices=False, litellm=False), log="off")


def _ledger(url: str, tmp_path: Path, mode: str = "buffered") -> Ledger:
    return Ledger(url, spool_dir=tmp_path / "spool", sync=mode == "sync", durable=mode == "durable")


def test_values_with_an_obvious_text_are_stored_as_that_text(url: str, tmp_path: Path) -> None:
    ledger = _ledger(url, tmp_path)
    tracker = _tracker(ledger)
    event = tracker.record(
        b"m",
        USAGE,
        provider=Provider.OPENAI,
        response_model=b"m",
        status=Status.ERROR,
        error=500,
        request_id=REQUEST,
        source=42,
        call_id=7,
    )
    assert ledger.flush(10) is True
    [stored] = ledger.events()
    got = (
        stored.id,
        stored.model,
        stored.provider,
        stored.response_model,
        stored.status,
        stored.error_type,
        stored.request_id,
        stored.source,
        stored.total_cost,
        dict(stored.metadata),
    )
    assert got == (
        "7",
        "m",
        "openai",
        "m",
        "error",
        "500",
        "12345678-1234-5678-1234-567812345678",
        "42",
        COST,
        {},
    )
    assert event.id == "7"
    assert ledger.stats().rejected == 0
    ledger.close(5)


BAD = [
    ("status", ["error"], "status", "ok"),
    ("status", {"a": 1}, "status", "ok"),
    ("status", "weird", "status", "ok"),
    ("request_id", [1], "request_id", None),
    ("request_id", {"id": 1}, "request_id", None),
    ("response_model", ["m"], "response_model", None),
    ("source", ["x"], "source", "api"),
    ("provider", ("openai",), "provider", None),
    ("error", {"code": 500}, "error_type", None),
    ("call_id", ["x"], "id", "<new>"),
    ("call_id", "", "id", "<new>"),
    ("model", ["m"], "model", "m"),  # the requested model left out: the one that answered
]


@pytest.mark.parametrize("mode", ["buffered", "sync", "durable"])
@pytest.mark.parametrize(
    ("field", "value", "column", "stored_as"), BAD, ids=[f"{f}-{v!r}" for f, v, _, _ in BAD]
)
def test_a_value_without_a_text_is_left_out_and_the_call_recorded(
    url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    field: str,
    value: Any,
    column: str,
    stored_as: Any,
) -> None:
    ledger = _ledger(url, tmp_path, mode)
    tracker = _tracker(ledger)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        if field == "model":
            bad = tracker.record(value, USAGE, response_model="m")
        else:
            bad = tracker.record("m", USAGE, **{field: value})
    good = [tracker.record("m", USAGE).id for _ in range(5)]
    assert ledger.flush(10) is True
    stats = ledger.stats()
    assert (stats.inserted, stats.rejected, stats.spooled, stats.healthy) == (6, 0, 0, True)
    rows = {e.id: e for e in ledger.events()}
    assert set(rows) == {bad.id, *good}
    stored = rows[bad.id]
    if stored_as == "<new>":
        assert isinstance(bad.id, str)
        assert len(bad.id) == 36  # a UUIDv7 of the tracker's
    else:
        assert getattr(stored, column) == stored_as
    assert stored.total_cost == COST  # priced all the same (the model: by response_model)
    assert dict(stored.metadata) == {f"costledger.invalid.{field}": repr(value)}
    assert f"{field} must be " in caplog.text
    assert repr(value) in caplog.text
    ledger.close(5)


def test_a_status_in_another_case_is_the_status_and_a_bad_one_with_an_error_is_error() -> None:
    from costledger._ledger import InMemoryLedger

    tracker = _tracker(InMemoryLedger())
    assert tracker.record("m", USAGE, status=" Error ").status == "error"
    assert tracker.record("m", USAGE, status="CANCELLED").status == "cancelled"
    assert tracker.record("m", USAGE, status=b"ok").status == "ok"
    failed = tracker.record("m", USAGE, status=["failed"], error=TimeoutError("slow"))
    assert (failed.status, failed.error_type) == ("error", "TimeoutError")
    assert dict(failed.metadata) == {"costledger.invalid.status": "['failed']"}
    assert tracker.record("m", USAGE, error=KeyError).error_type == "KeyError"


def test_an_entry_point_call_is_checked_too_deferred_or_not(url: str, tmp_path: Path) -> None:
    ledger = _ledger(url, tmp_path)
    tracker = _tracker(ledger)
    call = tracker.start(source="decorator", model=["m"], provider=1, call_id=uuid.UUID(int=5))
    tracker.finish(call, usage=USAGE, response_model="m", status=["ok"], defer=True)
    other = tracker.start(source="decorator", model="m")
    event = tracker.finish(other, usage=USAGE, request_id={"r": 1})
    costledger.drain_deferred(10.0)
    assert ledger.flush(10) is True
    rows = {e.id: e for e in ledger.events()}
    first = rows["00000000-0000-0000-0000-000000000005"]
    assert (first.model, first.response_model, first.provider, first.status) == (
        "m",  # the requested model left out: the one that answered
        "m",
        "1",
        "ok",
    )
    assert first.total_cost == COST
    assert dict(first.metadata) == {
        "costledger.invalid.model": "['m']",
        "costledger.invalid.status": "['ok']",
    }
    assert event is not None
    assert rows[event.id].request_id is None
    assert dict(rows[event.id].metadata) == {"costledger.invalid.request_id": "{'r': 1}"}
    ledger.close(5)


def test_a_value_that_cannot_even_be_shown_never_raises_into_the_host() -> None:
    from costledger._ledger import InMemoryLedger

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        def __str__(self) -> str:
            raise RuntimeError("no str")

    tracker = _tracker(InMemoryLedger())
    event = tracker.record("m", USAGE, status=Hostile(), request_id=Hostile())
    assert (event.status, event.request_id, event.total_cost) == ("ok", None, COST)
    assert dict(event.metadata) == {
        "costledger.invalid.status": "<Hostile object>",
        "costledger.invalid.request_id": "<Hostile object>",
    }
    assert [e.id for e in tracker.ledger.events()] == [event.id]  # type: ignore[attr-defined]
