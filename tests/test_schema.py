"""The usage log record: exact field names, exact round trips, and a strict reader."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costledger import Cost, Usage, UsageError, UsageEvent
from costledger._logging import _stdlib_dumps, dumps_record
from costledger._schema import (
    RECORD_FIELDS,
    USAGE_SCHEMA,
    event_from_line,
    event_from_record,
    event_to_record,
    loads_line,
)

# ------------------------------------------------------------------------ strategies

# amounts a Cost holds: under 10^20 once rounded to 18 places (the ledger's NUMERIC(38, 18))
money = st.decimals(
    allow_nan=False, allow_infinity=False, min_value=-(10**19), max_value=10**19
) | st.decimals(allow_nan=False, allow_infinity=False, places=18, min_value=0, max_value=10**6)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson cannot carry those
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
optional_text = st.none() | st.text()
timestamps = st.datetimes(
    min_value=datetime(1900, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cache_read = draw(st.integers(0, 10**7))
    cache_write = draw(st.integers(0, 10**7))
    uncached = draw(st.integers(0, 10**9))
    input_tokens = cache_read + cache_write + uncached
    output_tokens = draw(st.integers(0, 10**7))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=draw(st.integers(0, cache_write)),
        reasoning_tokens=draw(st.integers(0, output_tokens)),
        input_audio_tokens=draw(st.integers(0, input_tokens)),
        output_audio_tokens=draw(st.integers(0, output_tokens)),
    )


@st.composite
def costs(draw: st.DrawFn) -> Cost:
    status = draw(st.sampled_from(["priced", "unknown_model", "not_priced"]))
    amount = money if status == "priced" else st.none()
    return Cost(
        status=status,
        total=draw(amount),
        input=draw(amount),
        cache_read=draw(amount),
        cache_write=draw(amount),
        output=draw(amount),
        audio=draw(amount),
        currency=draw(st.sampled_from(["USD", "EUR", "JPY"])),
        provider=draw(optional_text),
        model=draw(optional_text),
        source=draw(st.none() | st.sampled_from(["genai-prices", "custom:book.toml"])),
    )


@st.composite
def events(draw: st.DrawFn) -> UsageEvent:
    return UsageEvent(
        model=draw(optional_text),
        usage=draw(usages()),
        cost=draw(costs()),
        id=draw(st.text(min_size=1)),
        timestamp=draw(timestamps),
        source=draw(
            st.sampled_from(["langchain", "litellm", "decorator", "http", "ingest", "api"])
        ),
        provider=draw(optional_text),
        response_model=draw(optional_text),
        status=draw(st.sampled_from(["ok", "error", "cancelled"])),
        error_type=draw(optional_text),
        latency_ms=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        request_id=draw(optional_text),
        trace_id=draw(optional_text),
        run_id=draw(optional_text),
        parent_run_id=draw(optional_text),
        user=draw(optional_text),
        team=draw(optional_text),
        project=draw(optional_text),
        feature=draw(optional_text),
        tags=tuple(draw(st.lists(st.text(), max_size=4))),
        metadata=draw(st.dictionaries(st.text(), json_value, max_size=5)),
        streamed=draw(st.booleans()),
        cache_hit=draw(st.booleans()),
        reported_cost=draw(st.none() | money),
    )


def _money_texts(event: UsageEvent) -> list[str | None]:
    """Money as text: ``Decimal("1.10") == Decimal("1.1")``; equality alone misses a lost digit."""
    c = event.cost
    amounts = [
        c.total,
        c.input,
        c.cache_read,
        c.cache_write,
        c.output,
        c.audio,
        event.reported_cost,
    ]
    return [None if a is None else str(a) for a in amounts]


def _assert_same(read: UsageEvent, event: UsageEvent) -> None:
    assert read == event
    assert _money_texts(read) == _money_texts(event)
    assert read.timestamp.tzinfo is not None
    assert read.timestamp.utcoffset() == timedelta(0)


# ----------------------------------------------------------------------- round trips


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_record_round_trip_is_exact(event: UsageEvent) -> None:
    _assert_same(event_from_record(event_to_record(event)), event)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_json_line_round_trip_is_exact(event: UsageEvent) -> None:
    line = dumps_record(event_to_record(event))
    assert "\n" not in line
    _assert_same(event_from_line(line), event)
    _assert_same(event_from_line(line.encode("utf-8")), event)
    # The standard-library writer (no orjson) produces a line that reads back the same.
    _assert_same(event_from_line(_stdlib_dumps(event_to_record(event))), event)


def _example() -> UsageEvent:
    return UsageEvent(
        model="claude-sonnet-4-5",
        response_model="claude-sonnet-4-5-20250929",
        provider="anthropic",
        usage=Usage(
            input_tokens=12_000,
            output_tokens=800,
            cache_read_tokens=9_000,
            cache_write_tokens=2_000,
            cache_write_1h_tokens=500,
            reasoning_tokens=300,
        ),
        cost=Cost(
            status="priced",
            total=Decimal("0.0243525"),
            input=Decimal("0.003"),
            cache_read=Decimal("0.0027"),
            cache_write=Decimal("0.0066525"),
            output=Decimal("0.012"),
            audio=Decimal("0"),
            provider="anthropic",
            model="claude-sonnet-4-5",
            source="genai-prices",
        ),
        id="0190c2a0-0000-7000-8000-000000000001",
        timestamp=datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc),
        source="langchain",
        latency_ms=1234.5,
        request_id="msg_01ABC",
        trace_id="trace-1",
        run_id="run-1",
        parent_run_id="run-0",
        user="alice",
        team="search",
        project="assistant",
        feature="summarise",
        tags=("prod", "eu"),
        metadata={"tenant": "acme", "ticket": 1234, "ratio": 0.25, "nested": {"a": [1, None]}},
        streamed=True,
        reported_cost=Decimal("0.02435"),
    )


def test_record_has_exactly_the_documented_fields_in_order() -> None:
    record = event_to_record(_example())
    assert list(record) == [
        "event",
        "schema",
        "costledger.id",
        "costledger.timestamp",
        "costledger.source",
        "costledger.status",
        "error.type",
        "costledger.latency_ms",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.id",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "costledger.usage.cache_write_1h.input_tokens",
        "costledger.usage.audio.input_tokens",
        "costledger.usage.audio.output_tokens",
        "costledger.cost.status",
        "costledger.cost.total",
        "costledger.cost.input",
        "costledger.cost.cache_read",
        "costledger.cost.cache_write",
        "costledger.cost.output",
        "costledger.cost.audio",
        "costledger.cost.currency",
        "costledger.cost.provider",
        "costledger.cost.model",
        "costledger.cost.source",
        "costledger.reported_cost",
        "costledger.trace_id",
        "costledger.run_id",
        "costledger.parent_run_id",
        "costledger.user",
        "costledger.team",
        "costledger.project",
        "costledger.feature",
        "costledger.tags",
        "costledger.metadata",
        "costledger.streamed",
        "costledger.cache_hit",
    ]
    assert tuple(record) == RECORD_FIELDS


def test_record_values_are_exact_and_json_ready() -> None:
    record = event_to_record(_example())
    assert record["event"] == "llm.usage"
    assert record["schema"] == "costledger.usage/1" == USAGE_SCHEMA
    assert record["costledger.timestamp"] == "2025-03-04T05:06:07.890123Z"
    assert record["gen_ai.provider.name"] == "anthropic"
    assert record["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert record["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert record["gen_ai.response.id"] == "msg_01ABC"
    assert record["gen_ai.usage.input_tokens"] == 12_000
    assert record["gen_ai.usage.output_tokens"] == 800
    assert record["gen_ai.usage.cache_read.input_tokens"] == 9_000
    assert record["gen_ai.usage.cache_write.input_tokens"] == 2_000
    assert record["gen_ai.usage.reasoning.output_tokens"] == 300
    assert record["costledger.usage.cache_write_1h.input_tokens"] == 500
    # Money is text, digit for digit, trailing zeros kept.
    assert record["costledger.cost.total"] == "0.0243525"
    assert record["costledger.cost.cache_write"] == "0.0066525"
    assert record["costledger.cost.audio"] == "0"
    assert record["costledger.reported_cost"] == "0.02435"
    assert record["costledger.cost.currency"] == "USD"
    assert record["costledger.tags"] == ["prod", "eu"]
    assert record["costledger.metadata"] == {
        "tenant": "acme",
        "ticket": 1234,
        "ratio": 0.25,
        "nested": {"a": [1, None]},
    }
    # No float and no Decimal anywhere outside metadata and latency: json.dumps takes it as is.
    assert json.loads(json.dumps(record)) == record


def test_unknown_model_cost_is_null_not_zero() -> None:
    event = UsageEvent(
        model="brand-new-model", usage=Usage(10, 5), cost=Cost.unknown("brand-new-model")
    )
    record = event_to_record(event)
    assert record["costledger.cost.status"] == "unknown_model"
    assert record["costledger.cost.total"] is None
    assert record["costledger.cost.model"] == "brand-new-model"
    read = event_from_record(record)
    assert read.cost.total is None
    assert read.cost.status == "unknown_model"


def test_naive_and_offset_timestamps_are_written_as_utc() -> None:
    local = datetime(2025, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    event = UsageEvent(model="m", usage=Usage(), cost=Cost("not_priced"), timestamp=local)
    assert event_to_record(event)["costledger.timestamp"] == "2024-12-31T23:30:00.000000Z"
    naive = UsageEvent(
        model="m", usage=Usage(), cost=Cost("not_priced"), timestamp=datetime(2025, 1, 1)
    )
    assert event_to_record(naive)["costledger.timestamp"] == "2025-01-01T00:00:00.000000Z"


def test_huge_integers_in_metadata_stay_exact_through_a_line() -> None:
    big = 2**70 + 1
    event = UsageEvent(
        model="m",
        usage=Usage(),
        cost=Cost("not_priced"),
        metadata={"big": big, "neg": -(2**64) - 3},
    )
    line = dumps_record(event_to_record(event))
    assert str(big) in line
    read = event_from_line(line)
    assert read.metadata["big"] == big
    assert type(read.metadata["big"]) is int
    assert read.metadata["neg"] == -(2**64) - 3


def test_extra_keys_from_an_application_chain_are_ignored() -> None:
    record = event_to_record(_example())
    record.update(
        {
            "level": "info",
            "logger": "costledger.usage",
            "timestamp": "2025-03-04T05:06:08Z",
            "gen_ai.operation.name": "chat",
            "request_id": "app-req-7",
        }
    )
    assert event_from_record(record) == _example()


def test_a_record_without_event_key_is_read() -> None:
    # An application chain may rename "event" (structlog's EventRenamer); "schema" identifies it.
    record = event_to_record(_example())
    del record["event"]
    assert event_from_record(record) == _example()


def test_minimal_hand_written_record_takes_defaults() -> None:
    event = event_from_record(
        {
            "schema": "costledger.usage/1",
            "costledger.id": "abc",
            "costledger.timestamp": "2025-01-01T00:00:00Z",
            "costledger.cost.status": "priced",
            "costledger.cost.total": "0.5",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10,
        }
    )
    assert event.id == "abc"
    assert event.model == "gpt-4o"
    assert event.usage == Usage(input_tokens=10)
    assert event.cost.total == Decimal("0.5")
    assert event.cost.currency == "USD"
    assert event.source == "api"
    assert event.status == "ok"
    assert event.tags == ()
    assert dict(event.metadata) == {}
    assert event.timestamp == datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_integer_money_is_accepted_exactly() -> None:
    record = event_to_record(_example())
    record["costledger.cost.total"] = 3
    assert event_from_record(record).cost.total == Decimal(3)


# ----------------------------------------------------------------------- strict reader


def _bad(field: str, value: Any) -> UsageError:
    record = event_to_record(_example())
    record[field] = value
    with pytest.raises(UsageError) as info:
        event_from_record(record)
    return info.value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("costledger.cost.total", 0.0243525),
        ("costledger.cost.input", Decimal("0.003")),
        ("costledger.cost.output", "0.01 USD"),
        ("costledger.cost.output", "NaN"),
        ("costledger.cost.output", "Infinity"),
        ("costledger.cost.output", "1_000"),
        ("costledger.cost.output", " 1.5"),
        ("costledger.cost.output", True),
        ("costledger.reported_cost", 0.1),
        ("gen_ai.usage.input_tokens", "12000"),
        ("gen_ai.usage.input_tokens", 12000.0),
        ("gen_ai.usage.output_tokens", True),
        ("gen_ai.usage.output_tokens", -1),
        ("gen_ai.request.model", 4),
        ("costledger.id", ""),
        ("costledger.id", None),
        ("costledger.timestamp", "2025-03-04T05:06:07"),
        ("costledger.timestamp", "yesterday"),
        ("costledger.timestamp", 1741064767),
        ("costledger.status", "fine"),
        ("costledger.cost.status", "free"),
        ("costledger.cost.status", None),
        ("costledger.latency_ms", "12"),
        ("costledger.latency_ms", float("inf")),
        ("costledger.latency_ms", False),
        ("costledger.tags", "prod"),
        ("costledger.tags", ["prod", 3]),
        ("costledger.metadata", ["a"]),
        ("costledger.metadata", {1: "a"}),
        ("costledger.streamed", "true"),
        ("costledger.cache_hit", 1),
        ("costledger.cost.currency", 840),
    ],
)
def test_wrong_values_are_refused_naming_field_and_value(field: str, value: Any) -> None:
    error = _bad(field, value)
    assert error.field == field
    assert repr(field) in str(error)
    assert error.value is value or error.value == value


def test_float_money_error_explains_why() -> None:
    error = _bad("costledger.cost.total", 0.1)
    assert "'costledger.cost.total'" in str(error)
    assert "0.1" in str(error)
    assert "decimal string" in str(error)
    assert "float" in str(error)


def test_inconsistent_token_counts_name_the_record_field() -> None:
    error = _bad("gen_ai.usage.cache_read.input_tokens", 20_000)
    assert error.field == "gen_ai.usage.cache_read.input_tokens"
    assert "'gen_ai.usage.cache_read.input_tokens'" in str(error)


@pytest.mark.parametrize(
    ("schema", "hint"),
    [
        (None, "not a costledger usage record"),
        ("costledger.usage/2", "upgrade"),
        ("otel.logs/1", "not a costledger usage record"),
    ],
)
def test_schema_is_checked(schema: Any, hint: str) -> None:
    record = event_to_record(_example())
    record["schema"] = schema
    with pytest.raises(UsageError, match=hint) as info:
        event_from_record(record)
    assert info.value.field == "schema"


def test_missing_schema_is_refused() -> None:
    record = event_to_record(_example())
    del record["schema"]
    with pytest.raises(UsageError, match="'schema'"):
        event_from_record(record)


def test_other_event_name_is_refused() -> None:
    with pytest.raises(UsageError, match="'event'"):
        event_from_record({**event_to_record(_example()), "event": "http.request"})


def test_unknown_costledger_key_is_refused_as_a_typo_or_newer_schema() -> None:
    record = event_to_record(_example())
    record["costledger.cost.totl"] = "1"
    with pytest.raises(UsageError, match=re.escape("'costledger.cost.totl'")) as info:
        event_from_record(record)
    assert info.value.field == "costledger.cost.totl"


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(UsageError, match="mapping"):
        event_from_record(["schema"])  # type: ignore[arg-type]  # the wrong type is the test


def test_json_float_money_in_a_line_is_refused() -> None:
    line = dumps_record(event_to_record(_example())).replace(
        '"costledger.cost.total":"0.0243525"', '"costledger.cost.total":0.0243525'
    )
    assert '"costledger.cost.total":0.0243525' in line
    with pytest.raises(UsageError, match=re.escape("'costledger.cost.total'")):
        event_from_line(line)


@pytest.mark.parametrize("line", ["", "not json", '{"a": ', "[1, 2]", "42", '"text"'])
def test_bad_lines_raise_usage_error(line: str) -> None:
    with pytest.raises(UsageError):
        event_from_line(line)


def test_bad_line_error_does_not_repeat_a_secret() -> None:
    secret = "sk-proj-" + "Ab3" * 14
    with pytest.raises(UsageError) as info:
        loads_line('{"api_key": "' + secret + '", oops}')
    assert secret not in str(info.value)
    assert secret not in repr(info.value.value)


def test_error_for_a_bad_value_does_not_repeat_a_secret() -> None:
    secret = "sk-ant-api03-" + "Zx9" * 30
    error = _bad("costledger.cost.total", f"key {secret}")
    assert secret not in str(error)


def test_loads_line_reads_nan_and_big_numbers_like_json() -> None:
    assert loads_line('{"a": NaN, "b": 123456789012345678901234567890}')["b"] == (
        123456789012345678901234567890
    )


@pytest.fixture
def without_orjson(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """orjson is optional: make ``import orjson`` fail, as on a machine without it."""
    from costledger import _logging, _schema

    monkeypatch.setitem(sys.modules, "orjson", None)
    _logging._serializer.cache_clear()
    _schema._orjson_loads.cache_clear()
    yield
    # monkeypatch puts orjson back after this; the caches look it up again on next use.
    _logging._serializer.cache_clear()
    _schema._orjson_loads.cache_clear()


def test_standard_library_path_without_orjson(without_orjson: None) -> None:
    from costledger import _logging, _schema

    assert _logging._serializer() is _stdlib_dumps
    assert _schema._orjson_loads() is None
    event = dataclasses.replace(_example(), metadata={"big": 2**80, "f": 0.1, "s": "é"})
    line = dumps_record(event_to_record(event))
    assert '"s":"é"' in line
    _assert_same(event_from_line(line), event)
    with pytest.raises(UsageError):
        event_from_line("{broken")


def test_orjson_and_json_writers_agree() -> None:
    record = event_to_record(_example())
    assert json.loads(dumps_record(record)) == json.loads(_stdlib_dumps(record))
