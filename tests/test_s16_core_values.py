"""Values the host hands over that the core took as they were and paid for later:

- a ``reported_cost`` past the ledger's ``NUMERIC(38, 18)`` (``10**20``, a gateway's garbage)
  went into the event, and the ledger's writer then rejected the whole call (its row
  missing, the event in ``rejected-*.jsonl``); it is left out now, with a warning and a
  note, and the call is stored with its price. A ``Cost`` past that range, or with a
  ``model`` / ``provider`` / ``source`` that is not text, was accepted where it was built
  and refused by the writer; it is refused where it is built;
- a numpy integer token count (``np.int64``) was refused: ``Usage`` raised, and a payload
  holding them was stored with 0 tokens, not priced;
- ``start(model=True)`` under a per-model budget failed closed (``BudgetCheckFailed``:
  ``'bool' object is not iterable``) where ``finish`` and ``record`` leave such a value out;
- ``configure(tracker=...)`` had a check of its own: no hint, and a URL's password shown;
- ``extract_usage`` of deeply nested JSON text raised ``RecursionError``, not ``UsageError``;
- ``model`` and ``response_model`` were never scrubbed: a key a server echoed in the name of
  the model that answered reached the row, the span and the pricer's warning.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from decimal import Decimal
from numbers import Integral
from pathlib import Path

import pytest

import costledger
from costledger import (
    Budget,
    Cost,
    Ledger,
    Tracker,
    Usage,
    UsageError,
    UsageEvent,
    configure,
    extract_usage,
    get_tracker,
    read_response,
)
from costledger._logging import _reporter
from costledger.testing import InMemoryLedger, MemoryStore

# gpt-4o-mini: 0.15 USD per million input tokens, 0.60 output.
COST_1000_IN_100_OUT = Decimal("0.00021")
COST_1000_IN_10_OUT = Decimal("0.000156")
assert (1000 * Decimal("0.15") + 100 * Decimal("0.60")) / 1_000_000 == COST_1000_IN_100_OUT
assert (1000 * Decimal("0.15") + 10 * Decimal("0.60")) / 1_000_000 == COST_1000_IN_10_OUT

KEY = "sk-ant-api03-PLANTanthr0picKey11223344aabbccdd"


@pytest.fixture(autouse=True)
def _fresh_reporter() -> None:
    _reporter.reset()  # the warnings are rate-limited per process


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(f"sqlite:///{tmp_path / 'costs.db'}")
    yield led
    led.close(5)


def _tracker(ledger: object) -> Tracker:
    return Tracker(ledger, log="off")  # type: ignore[arg-type]


# -- 1. money the ledger cannot store ---------------------------------------------------------


def test_the_money_limits_are_the_ledgers() -> None:
    from costledger._cost import MONEY_PRECISION, MONEY_SCALE
    from costledger._ledger import _money

    assert (MONEY_PRECISION, MONEY_SCALE) == (_money.MONEY_PRECISION, _money.MONEY_SCALE)


@pytest.mark.parametrize(
    "reported",
    [10**20, Decimal("1E+20"), Decimal("-1E+20"), "1e30", 1e25],
    ids=["int", "decimal", "negative", "text", "float"],
)
def test_a_reported_cost_past_the_ledgers_range_is_left_out_and_the_call_stored(
    ledger: Ledger, caplog: pytest.LogCaptureFixture, reported: object
) -> None:
    tracker = _tracker(ledger)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        event = tracker.record(
            "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=100), reported_cost=reported
        )
    assert event.reported_cost is None
    assert event.cost.total == COST_1000_IN_100_OUT
    assert ledger.flush(10) is True
    stats = ledger.stats()
    assert (stats.inserted, stats.rejected, stats.spooled) == (1, 0, 0)
    row = ledger.get(event.id)
    assert row is not None
    assert row.reported_cost is None
    assert row.total_cost == COST_1000_IN_100_OUT
    assert row.input_tokens == 1000
    assert dict(row.metadata) == {"costledger.invalid.reported_cost": repr(reported)}
    assert (
        "reported_cost must be an amount under 10^20 (the ledger's NUMERIC(38, 18) holds 20 "
        f"whole digits), got {type(reported).__name__} {reported!r}; the call is recorded "
        "with reported_cost None"
    ) in caplog.text


def test_the_largest_storable_reported_cost_is_kept(ledger: Ledger) -> None:
    largest = Decimal("99999999999999999999.999999999999999999")
    event = _tracker(ledger).record("gpt-4o-mini", Usage(1000, 100), reported_cost=largest)
    assert event.reported_cost == largest
    assert ledger.flush(10) is True
    row = ledger.get(event.id)
    assert row is not None
    assert row.reported_cost == largest
    assert dict(row.metadata) == {}


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        (
            {"total": Decimal("1e30")},
            ValueError,
            "Cost total must be under 10^20 (the ledger's NUMERIC(38, 18) holds 20 whole "
            "digits), got Decimal('1E+30')",
        ),
        (
            {"total": Decimal(1), "output": Decimal("-1E+20")},
            ValueError,
            "Cost output must be under 10^20 (the ledger's NUMERIC(38, 18) holds 20 whole "
            "digits), got Decimal('-1E+20')",
        ),
        (
            {"total": Decimal(1), "input": Decimal("99999999999999999999.9999999999999999995")},
            ValueError,
            "Cost input must be under 10^20 (the ledger's NUMERIC(38, 18) holds 20 whole "
            "digits), got Decimal('99999999999999999999.9999999999999999995')",
        ),
        (
            {"total": Decimal(1), "model": ["x"]},
            TypeError,
            "Cost model must be text or None, got list ['x']",
        ),
        (
            {"total": Decimal(1), "provider": 5},
            TypeError,
            "Cost provider must be text or None, got int 5",
        ),
        (
            {"total": Decimal(1), "source": b"book"},
            TypeError,
            "Cost source must be text or None, got bytes b'book'",
        ),
    ],
    ids=["total", "output", "rounds-to-1e20", "model", "provider", "source"],
)
def test_a_cost_the_ledger_would_refuse_fails_where_it_is_built(
    fields: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        Cost("priced", **fields)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_cost_at_the_edge_of_the_range_is_stored_and_more_places_rounded(
    ledger: Ledger,
) -> None:
    # a component (a total's rollup sums have a tighter limit of their own, the ledger's)
    largest = Decimal("-99999999999999999999.999999999999999999")
    fine = Decimal("0.1234567890123456785")  # 19 places: kept, stored rounded half-even
    below = Decimal("99999999999999999999.9999999999999999994")  # rounds down: it fits
    costs = [
        Cost("priced", total=Decimal(1), output=largest, model="m", provider="p", source="b"),
        Cost("priced", total=fine, input=below, audio=Decimal("0E+30")),
    ]
    assert (costs[1].total, costs[1].input, costs[1].audio) == (fine, below, 0)
    events = [UsageEvent(model="m", usage=Usage(input_tokens=1), cost=c) for c in costs]
    for event in events:
        ledger.record(event)
    assert ledger.flush(10) is True
    assert ledger.stats().rejected == 0
    stored = [ledger.get(e.id) for e in events]
    assert stored[0] is not None
    assert stored[1] is not None
    assert (stored[0].output_cost, stored[0].priced_model) == (largest, "m")
    assert stored[1].total_cost == Decimal("0.123456789012345678")
    assert stored[1].input_cost == Decimal("99999999999999999999.999999999999999999")
    assert stored[1].audio_cost == 0


# -- 2. numpy integer counts -------------------------------------------------------------------


class _Index:
    """An integral number that is not an ``int`` (what numpy's integer scalars are: a
    ``numbers.Integral`` with ``__index__``)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"_Index({self.value})"


Integral.register(_Index)


def test_an_integral_number_is_read_as_its_plain_int() -> None:
    usage = Usage(input_tokens=_Index(10), output_tokens=_Index(3))  # type: ignore[arg-type]
    assert (usage.input_tokens, usage.output_tokens) == (10, 3)
    assert type(usage.input_tokens) is int
    with pytest.raises(UsageError) as info:
        Usage(input_tokens=_Index(-1))  # type: ignore[arg-type]
    assert str(info.value) == "usage field 'input_tokens' must not be negative, got -1"
    with pytest.raises(UsageError) as info:
        Usage(input_tokens=_Index(10**16 + 1))  # type: ignore[arg-type]
    assert str(info.value) == (
        "usage field 'input_tokens' must be at most 10^16 tokens, got 10000000000000001"
    )


def test_numpy_integer_counts_are_counted_and_numpy_floats_still_refused() -> None:
    np = pytest.importorskip("numpy")
    usage = Usage(input_tokens=np.int64(10), output_tokens=np.uint8(3))
    assert usage == Usage(input_tokens=10, output_tokens=3)
    assert type(usage.input_tokens) is int
    assert extract_usage(
        {"prompt_tokens": np.int32(1000), "completion_tokens": np.int64(10)}
    ) == Usage(input_tokens=1000, output_tokens=10)
    for value in (np.float64(10.0), np.bool_(True)):  # numpy < 2.4: np.True_.__index__ is 1
        with pytest.raises(UsageError) as info:
            Usage(input_tokens=value)
        assert str(info.value) == (
            f"usage field 'input_tokens' must be a whole number of tokens, got {value!r}"
        )


def test_a_payload_of_numpy_counts_is_recorded_and_priced(ledger: Ledger) -> None:
    np = pytest.importorskip("numpy")
    tracker = _tracker(ledger)
    event = tracker.record(
        "gpt-4o-mini", {"prompt_tokens": np.int64(1000), "completion_tokens": np.int64(10)}
    )
    assert ledger.flush(10) is True
    row = ledger.get(event.id)
    assert row is not None
    assert (row.input_tokens, row.output_tokens) == (1000, 10)
    assert row.pricing_status == "priced"
    assert row.total_cost == COST_1000_IN_10_OUT
    assert dict(row.metadata) == {}


# -- 3. start() with a model that is not text ---------------------------------------------------


@pytest.mark.parametrize(
    ("per", "field", "value"),
    [
        ("model", "model", True),
        ("model", "model", ["gpt-4o"]),
        ("provider", "provider", True),
        ("provider", "provider", {"a": 1}),
    ],
    ids=["model-bool", "model-list", "provider-bool", "provider-dict"],
)
def test_start_leaves_a_model_without_a_text_out_before_the_guards(
    caplog: pytest.LogCaptureFixture, per: str, field: str, value: object
) -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(
        ledger,
        guards=[Budget("1000 USD", "day", per=per)],  # type: ignore[arg-type]
        guard_store=MemoryStore(),
        log="off",
    )
    with caplog.at_level(logging.WARNING, logger="costledger"):
        call = tracker.start(source="api", **{field: value})  # type: ignore[arg-type]
        assert getattr(call, field) is None
        event = tracker.finish(call, usage=Usage(input_tokens=1000, output_tokens=10))
    assert event is not None
    costledger.drain_deferred()
    assert getattr(event, field) is None
    assert dict(event.metadata) == {f"costledger.invalid.{field}": repr(value)}
    assert ledger.get(event.id) is not None
    warned = [r.getMessage() for r in caplog.records if f"{field} must be" in r.getMessage()]
    assert warned == [
        f"costledger: tracking failed in event.{field}: TypeError: {field} must be text or "
        f"None, got {type(value).__name__} {value!r}; the call is recorded with {field} None"
    ]


def test_start_reads_an_obvious_text_as_before() -> None:
    tracker = Tracker(
        InMemoryLedger(),
        guards=[Budget("1000 USD", "day", per="model")],
        guard_store=MemoryStore(),
        log="off",
    )
    call = tracker.start(source="api", model=b"gpt-4o-mini", provider=b"openai")  # type: ignore[arg-type]
    assert (call.model, call.provider, call.notes) == ("gpt-4o-mini", "openai", None)
    event = tracker.finish(call, usage=Usage(input_tokens=1000, output_tokens=10), defer=False)
    assert event is not None
    assert event.cost.total == COST_1000_IN_10_OUT


# -- 4. configure(tracker=...) ---------------------------------------------------------------


def test_configure_checks_its_tracker_as_the_entry_points_do() -> None:
    before = get_tracker()
    url = "postgresql://app:hunter2secret@db.internal/costs"
    for call in (lambda: configure(url), lambda: configure(tracker=url)):  # type: ignore[arg-type]
        with pytest.raises(TypeError) as info:
            call()
        assert str(info.value) == (
            "configure() tracker must be a costledger Tracker or None, got str "
            "'postgresql://app:***@db.internal/costs' (for a ledger URL: "
            "tracker=Tracker(Ledger(url)))"
        )
    with pytest.raises(TypeError) as info:
        configure(tracker=InMemoryLedger())  # type: ignore[arg-type]
    assert str(info.value).startswith(
        "configure() tracker must be a costledger Tracker or None, got InMemoryLedger "
    )
    assert str(info.value).endswith(" (for a ledger: tracker=Tracker(ledger))")
    assert get_tracker() is before


# -- 5. deeply nested JSON text -----------------------------------------------------------------

DEEP = '{"usage":' * 10_000 + "1" + "}" * 10_000  # deeper than any recursion limit in use
DEEP_MESSAGE = (
    "usage payload is text nested too deeply for Python's JSON parser to read "
    "(no response nests that deep)"
)


@pytest.mark.parametrize(
    "payload", [DEEP, DEEP.encode(), "[" * 100_000], ids=["str", "bytes", "list"]
)
def test_deeply_nested_json_text_is_a_usage_error(payload: str | bytes) -> None:
    # Python's default limit: something earlier in a full run raises it past 10,000
    # levels, and json then parses the payload (a UsageError still, another message)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        for read in (extract_usage, read_response):
            with pytest.raises(UsageError) as info:
                read(payload)
            assert str(info.value) == DEEP_MESSAGE
            assert (info.value.field, info.value.value) == (None, None)
    finally:
        sys.setrecursionlimit(limit)


def test_a_deeply_nested_payload_is_recorded_unpriced_not_lost(ledger: Ledger) -> None:
    event = _tracker(ledger).finish(
        _tracker(ledger).start(source="api", model="gpt-4o-mini"), payload=DEEP, defer=False
    )
    assert event is not None
    assert dict(event.metadata) == {"costledger.tracking_error": "UsageError"}


# -- 6. secrets in the model names -----------------------------------------------------------


def test_a_key_in_the_response_model_never_reaches_the_row_or_a_log_line(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = _tracker(ledger)
    with caplog.at_level(logging.DEBUG, logger="costledger"):
        event = tracker.record(
            "gpt-4o-mini",
            Usage(input_tokens=1000, output_tokens=10),
            response_model=f"gpt-4o-mini-{KEY}",
        )
        unknown = tracker.record(f"my-model-{KEY}", Usage(input_tokens=1))
    assert event.response_model == "gpt-4o-mini-[REDACTED]"
    assert unknown.model == "my-model-[REDACTED]"
    assert unknown.cost.status == "unknown_model"
    assert unknown.cost.model == "my-model-[REDACTED]"
    assert ledger.flush(10) is True
    row = ledger.get(event.id)
    other = ledger.get(unknown.id)
    assert row is not None
    assert other is not None
    assert (row.model, row.response_model) == ("gpt-4o-mini", "gpt-4o-mini-[REDACTED]")
    assert (other.model, other.response_model) == ("my-model-[REDACTED]", None)
    assert KEY not in caplog.text
    assert "my-model-[REDACTED]" in caplog.text  # the pricer's "no price" warning


def test_a_key_in_the_requested_model_is_scrubbed_before_the_guards_count_it() -> None:
    ledger = InMemoryLedger()
    tracker = Tracker(
        ledger,
        guards=[Budget("1000 USD", "day", per="model")],
        guard_store=MemoryStore(),
        log="off",
    )
    call = tracker.start(source="api", model=f"gpt-4o-mini-{KEY}")
    assert call.model == "gpt-4o-mini-[REDACTED]"
    event = tracker.finish(call, usage=Usage(input_tokens=1000, output_tokens=10), defer=False)
    assert event is not None
    assert event.model == "gpt-4o-mini-[REDACTED]"
