"""Ingestion builds ledger rows without building ``UsageEvent`` objects; these tests hold it to
the canonical path: the row of every line equals the row ``Store.params`` makes of the event
the schema reader, or the Tracker, would have built. Rollups fed from rows equal the ones
``Ledger.record`` keeps."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costledger import Cost, Tracker, Usage, UsageEvent
from costledger._errors import UsageError
from costledger._extract import read_response
from costledger._ingest import ingest
from costledger._ingest._convert import Converter, _Fallback
from costledger._ledger import InMemoryLedger, Ledger
from costledger._ledger._engine import resolve_url
from costledger._ledger._rows import postgresql_row
from costledger._ledger._store import sqlite_params
from costledger._pricing import Pricer
from costledger._redact import redact
from costledger._sources.litellm_payload import read_standard_logging_payload

from .ingest_support import LITELLM_PAYLOADS, UTC, own_line, rich_events, write_lines

_PRICER = Pricer()
_CONVERTER = Converter(_PRICER, now=datetime(2025, 7, 1, tzinfo=UTC))

# -- events of every shape ------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_opt_text = st.none() | _text
_money = (
    st.none()
    | st.decimals(
        min_value=Decimal("-99999999999999999999"),
        max_value=Decimal("99999999999999999999"),
        places=18,
        allow_nan=False,
        allow_infinity=False,
    ).map(lambda d: d.normalize() if d.is_zero() else d)
    | st.sampled_from(
        [Decimal("1E-7"), Decimal("2.0E-7"), Decimal("0E-8"), Decimal("0.10"), Decimal("1E+2")]
    )
)
_plain = st.text(alphabet="abcdefgh xyz", max_size=8)
_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _plain,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_plain, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _usage(draw: st.DrawFn) -> Usage:
    uncached = draw(st.integers(0, 10**9))
    read = draw(st.integers(0, 10**6))
    write = draw(st.integers(0, 10**6))
    write_1h = draw(st.integers(0, write))
    visible = draw(st.integers(0, 10**6))
    reasoning = draw(st.integers(0, 10**6))
    return Usage(
        input_tokens=uncached + read + write,
        output_tokens=visible + reasoning,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=reasoning,
        input_audio_tokens=draw(st.integers(0, uncached)),
        output_audio_tokens=draw(st.integers(0, visible)),
    )


@st.composite
def _events(draw: st.DrawFn) -> UsageEvent:
    status = draw(st.sampled_from(["priced", "unknown_model", "not_priced"]))
    cost = Cost(
        status=status,
        total=draw(_money),
        input=draw(_money),
        cache_read=draw(_money),
        cache_write=draw(_money),
        output=draw(_money),
        audio=draw(_money),
        currency=draw(st.sampled_from(["USD", "EUR", "JPY"])),
        provider=draw(_opt_text),
        model=draw(_opt_text),
        source=draw(_opt_text),
    )
    return UsageEvent(
        id=draw(_text.filter(lambda s: s.replace("\x00", ""))),  # a NUL-only id is refused
        model=draw(_opt_text),
        usage=draw(_usage()),
        cost=cost,
        timestamp=datetime(2020, 1, 1, tzinfo=UTC)
        + timedelta(microseconds=draw(st.integers(0, 10**16))),
        source=draw(st.sampled_from(["api", "langchain", "litellm", "http", "decorator"])),
        provider=draw(_opt_text),
        response_model=draw(_opt_text),
        status=draw(st.sampled_from(["ok", "error", "cancelled"])),
        error_type=draw(_opt_text),
        latency_ms=draw(st.none() | st.floats(0, 10**7, allow_nan=False)),
        request_id=draw(_opt_text),
        trace_id=draw(_opt_text),
        run_id=draw(_opt_text),
        parent_run_id=draw(_opt_text),
        user=draw(_opt_text),
        team=draw(_opt_text),
        project=draw(_opt_text),
        feature=draw(_opt_text),
        tags=tuple(draw(st.lists(_text, max_size=3))),
        metadata=draw(st.dictionaries(_plain, _json_value, max_size=3)),
        streamed=draw(st.booleans()),
        cache_hit=draw(st.booleans()),
        reported_cost=draw(_money),
    )


def _expected_row(event: UsageEvent) -> tuple[Any, ...]:
    if event.metadata:
        event = replace(event, metadata=redact(dict(event.metadata)))
    return sqlite_params(event)


# -- costledger's own records -----------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events())
def test_own_record_row_equals_the_events_row(event: UsageEvent) -> None:
    line = own_line(event)
    row = _CONVERTER.convert(orjson.loads(line), line, 1)
    assert row == _expected_row(event)
    # the PostgreSQL form too
    if event.metadata:
        event = replace(event, metadata=redact(dict(event.metadata)))
    assert postgresql_row(row) == postgresql_row(sqlite_params(event))


def test_logger_records_take_the_fast_path() -> None:
    for event in rich_events():
        record = orjson.loads(own_line(event))
        if "big" in event.metadata:  # an integer beyond 64 bits: read again exactly, by json
            with pytest.raises(_Fallback):
                _CONVERTER.own_fast(record)
            continue
        assert _CONVERTER.own_fast(record) == _CONVERTER.own_canonical(record, b"")


_MUTATIONS: list[tuple[str, Any]] = [
    ("gen_ai.usage.input_tokens", "12"),
    ("gen_ai.usage.input_tokens", 1.0),
    ("gen_ai.usage.input_tokens", -1),
    ("gen_ai.usage.input_tokens", True),
    ("gen_ai.usage.cache_read.input_tokens", 10**12),
    ("costledger.cost.total", 1),
    ("costledger.cost.total", 0.5),
    ("costledger.cost.total", "1e400"),
    ("costledger.cost.total", "1e19"),
    ("costledger.cost.total", "1e20"),
    ("costledger.cost.total", "0.0000000000000000001"),
    ("costledger.cost.total", "+1.50"),
    ("costledger.cost.total", "007"),
    ("costledger.cost.total", "NaN"),
    ("costledger.cost.total", " 1"),
    ("costledger.cost.currency", None),
    ("costledger.cost.currency", 5),
    ("costledger.cost.status", None),
    ("costledger.cost.status", "free"),
    ("costledger.status", None),
    ("costledger.status", "timeout"),
    ("costledger.timestamp", "2025-06-01T12:00:00+02:00"),
    ("costledger.timestamp", "2025-06-01T12:00:00Z"),
    ("costledger.timestamp", "2025-13-01T12:00:00.000000Z"),
    ("costledger.timestamp", "2025-06-01T12:00:00"),
    ("costledger.timestamp", 1748779200),
    ("costledger.latency_ms", True),
    ("costledger.latency_ms", "12"),
    ("costledger.latency_ms", 12),
    ("costledger.tags", ["a", 1]),
    ("costledger.tags", "a"),
    ("costledger.tags", []),
    ("costledger.metadata", []),
    ("costledger.metadata", {"api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"}),
    ("costledger.streamed", 1),
    ("costledger.streamed", None),
    ("costledger.id", ""),
    ("costledger.id", 7),
    ("costledger.source", None),
    ("costledger.source", 3),
    ("costledger.user", 3),
    ("costledger.whatever", 1),
    ("schema", "costledger.usage/2"),
    ("schema", None),
    ("event", "other"),
    ("event", None),
]


@pytest.mark.parametrize(("key", "value"), _MUTATIONS)
def test_fast_path_never_accepts_what_the_schema_refuses(key: str, value: Any) -> None:
    """Either the fast path steps aside, or it gives exactly the canonical row; and a record
    the schema reader refuses is refused, with the schema reader's own words."""
    record = {**orjson.loads(own_line(rich_events()[1])), key: value}
    record.pop("costledger.metadata")  # keep the fast path open for the mutated field
    try:
        expected: tuple[Any, ...] | Exception = _CONVERTER.own_canonical(record, b"")
    except (UsageError, ValueError) as exc:
        expected = exc
    fast: tuple[Any, ...] | Exception | None
    try:
        fast = _CONVERTER.own_fast(record)
    except _Fallback:
        fast = None
    except (UsageError, ValueError) as exc:  # only the storage check of a money amount
        fast = exc
    if isinstance(fast, Exception):
        assert isinstance(expected, Exception)
        assert str(fast) == str(expected)
    elif fast is not None:
        assert fast == expected
    converted: tuple[Any, ...] | Exception
    try:
        converted = _CONVERTER.convert(record, b"", 1)
    except (UsageError, ValueError) as exc:
        converted = exc
    if isinstance(expected, Exception):
        assert type(converted) is type(expected)
        assert str(converted) == str(expected)
    else:
        assert converted == expected


# -- LiteLLM payloads and raw responses, against the Tracker ------------------------------------


def _payload_variants() -> list[dict[str, Any]]:
    base = [json.loads(line) for line in LITELLM_PAYLOADS.read_text().splitlines()]
    ok = base[0]
    anthropic_usage = {
        "prompt_tokens": 1500,
        "completion_tokens": 80,
        "total_tokens": 1580,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }
    return [
        *base,
        {**ok, "litellm_call_id": "hit-1", "cache_hit": True},
        {**ok, "litellm_call_id": "stream-1", "stream": True, "call_type": "acompletion"},
        {
            **ok,
            "litellm_call_id": "claude-1",
            "model": "claude-sonnet-4-5-20250929",
            "custom_llm_provider": "anthropic",
            "model_group": "claude",
            "request_tags": ["prod"],
            "metadata": {**ok["metadata"], "usage_object": anthropic_usage},
            "response": {**ok["response"], "model": "claude-sonnet-4-5-20250929"},
        },
        {
            **ok,
            "litellm_call_id": "proxy-1",
            "metadata": {
                **ok["metadata"],
                "user_api_key_hash": "abc",
                "user_api_key_team_id": "t-1",
                "user_api_key_end_user_id": "end-9",
                "requester_metadata": {"feature": "chat", "password": "hunter2", "n": 3},
            },
        },
        {**ok, "litellm_call_id": "unknown-1", "model": "acme-llm-9000", "response": {}},
    ]


@pytest.mark.parametrize("payload", _payload_variants(), ids=lambda p: p["litellm_call_id"])
def test_litellm_row_equals_the_trackers_event(payload: dict[str, Any]) -> None:
    """The row equals that of the event ``Tracker.record`` builds from the same call, which
    is what the LiteLLM integration hands it."""
    line = orjson.dumps(payload)
    row = _CONVERTER.convert(orjson.loads(line), line, 1)
    call = read_standard_logging_payload(payload)
    tracker = Tracker(InMemoryLedger(), _PRICER, log="off")
    event = tracker.record(
        call.model,
        payload=call.usage,
        source="litellm",
        provider=call.provider,
        response_model=call.response_model,
        status=call.status,
        error=call.error_type,
        latency_ms=call.latency_ms,
        call_id=call.call_id,
        attribution=call.attribution,
        started_at=call.started_at,
        request_id=call.request_id,
        streamed=call.streamed,
        cache_hit=call.cache_hit,
        reported_cost=call.reported_cost,
        metadata=call.metadata,
    )
    assert event is not None
    assert "costledger.tracking_error" not in event.metadata
    assert row == sqlite_params(event)


_RESPONSES: list[dict[str, Any]] = [
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1748779200,
        "model": "gpt-4o-mini-2024-07-18",
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 100,
            "total_tokens": 1100,
            "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 40, "audio_tokens": 0},
        },
    },
    {
        "id": "msg_1",
        "type": "message",
        "model": "claude-sonnet-4-5-20250929",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 15},
        },
    },
    {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "object": "response",
            "created_at": 1748779300,
            "model": "gpt-4.1",
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 9,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 59,
            },
        },
    },
    {
        "responseId": "gem-1",
        "modelVersion": "gemini-2.5-flash",
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 40,
        },
    },
    {"object": "list", "model": "mystery-embedder", "usage": {"prompt_tokens": 3}},
]


@pytest.mark.parametrize("response", _RESPONSES, ids=lambda r: str(r.get("id") or r.get("type")))
def test_response_row_equals_the_trackers_event(response: dict[str, Any]) -> None:
    line = orjson.dumps(response)
    row = _CONVERTER.convert(orjson.loads(line), line, 7)
    info = read_response(response)
    at = datetime.fromisoformat(row[1])
    tracker = Tracker(InMemoryLedger(), _PRICER, log="off")
    event = tracker.record(
        info.model,
        payload=response,
        source="ingest",
        provider=row[3],
        call_id=row[0],
        started_at=at,
        latency_ms=1.0,
    )
    assert event is not None
    assert row == sqlite_params(replace(event, latency_ms=None))


# -- rollups ---------------------------------------------------------------------------------------


def _rollup_tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup table's rows, whatever tables the ledger keeps."""
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            names = [n for n in sa.inspect(conn).get_table_names() if "rollup" in n]
            assert names
            return {
                table: [
                    tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2")
                ]
                for table in names
            }
    finally:
        engine.dispose()


def test_rollups_from_rows_equal_rollups_from_events(tmp_path: Path) -> None:
    events = [*rich_events(), *(replace(e, id=e.id + "-b", tags=("x",)) for e in rich_events())]
    ingested, recorded = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    path = write_lines(tmp_path / "e.log", [own_line(e) for e in events])
    assert ingest(path, ledger=ingested, checkpoint_dir=tmp_path).accepted == len(events)
    with Ledger(recorded, sync=True) as ledger:
        ledger.record_many(events)
    assert _rollup_tables(ingested) == _rollup_tables(recorded)
    assert any(_rollup_tables(ingested).values())


_AMOUNTS = [
    "0",
    "0.00",
    "-0",
    "0E-8",
    "0E+30",
    "1E+19",
    "1E+20",
    "99999999999999999999.5",
    "0.000000000000000001",
    "0.0000000000000000005",
    "0.0000000000000000015",
    "-12.25",
    "1.10",
]


@pytest.mark.parametrize("text", _AMOUNTS)
def test_cost_amounts_are_stored_as_the_ledger_stores_them(text: str) -> None:
    """The six amounts of a priced cost, formatted and checked together, give what the
    ledger's own money check gives each (or its error)."""
    from costledger._ledger._store import _text_money

    amount = Decimal(text)
    others = [Decimal("0.5"), Decimal("1E-7"), Decimal("0"), Decimal("2.50"), Decimal("3")]
    for position in range(6):
        values = [*others[:position], amount, *others[position:]]
        cost = _as_priced(*values)
        fields = ["total", "input", "cache_read", "cache_write", "output", "audio"]
        try:
            pairs = zip(fields, values, strict=True)
            expected: Any = [_text_money(f"cost.{f}", v) for f, v in pairs]
        except ValueError as exc:
            expected = str(exc)
        try:
            got: Any = list(_CONVERTER._cost_texts(cost))
        except ValueError as exc:
            got = str(exc)
        assert got == expected


def _as_priced(*amounts: Decimal) -> Cost:
    """A priced cost of these six amounts as the pricer builds one: without ``Cost``'s
    range check, so that an amount past the ledger's range (an extreme price-book rate
    times a huge count) reaches the conversion under test."""
    from costledger._pricing._card import _new_cost

    return _new_cost("priced", *amounts, "USD", None, None, None)
