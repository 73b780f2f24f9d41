"""Text the databases cannot store: a NUL character, a lone surrogate.

PostgreSQL's ``text`` and ``jsonb`` take no NUL, and no driver can encode a lone
surrogate (half of a UTF-16 pair, ``"\\ud83d"``) as UTF-8: either rejected the whole
event. Every text column is cleaned when the row is built, on SQLite and PostgreSQL
alike and for every entry point: NUL left out, a lone surrogate as U+FFFD (a pair held as
two code points as its character). The spool and the usage log line carry such text
without failing."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from costledger import Cost, Usage, UsageEvent
from costledger._ingest import ingest
from costledger._ingest._convert import Converter
from costledger._ledger import Ledger
from costledger._ledger._engine import resolve_url
from costledger._ledger._money import dumps
from costledger._ledger._rows import decode_spool_line
from costledger._ledger._store import sqlite_params
from costledger._logging import UsageLogger, _stdlib_dumps
from costledger._pricing import Pricer
from costledger._schema import event_from_line, event_to_record, loads_line

UTC = timezone.utc
FFFD = "\ufffd"
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def odd_event(**overrides: Any) -> UsageEvent:
    """Every text field holding a NUL or a lone surrogate (and one pair, split)."""
    fields: dict[str, Any] = {
        "id": "evt\x00-odd",
        "timestamp": AT,
        "source": "api\x00",
        "provider": "open\x00ai",
        "model": "gpt-4o-mini\x00",
        "response_model": "gpt-4o-mini-2024\udc80",
        "status": "error",
        "error_type": "Time\x00out\ud83d",
        "request_id": "req\x00-1",
        "trace_id": "tr\ud800",
        "run_id": "run\x00",
        "parent_run_id": "p\ud83d\ude00",
        "user": "u\x0042",
        "team": "t\udc80",
        "project": "proj\x00\ud83d",
        "feature": "search\x00",
        "tags": ("beta\x00", "half \ud83d"),
        "metadata": {"q": "half emoji \ud83d", "k\x00ey\udc80": ["x\x00", {"n\ud83d": "ok"}]},
        "price_context": {"service_tier\x00": "flex\udc80"},
        "usage": Usage(input_tokens=10, output_tokens=20),
        "cost": Cost(
            status="priced",
            total=Decimal("0.0000135"),
            currency="US\x00D",
            provider="open\x00ai",
            model="gpt-4o-mini\ud83d",
            source="book\x00",
        ),
    }
    fields.update(overrides)
    return UsageEvent(**fields)


CLEAN_ID = "evt-odd"
CLEAN: dict[str, Any] = {
    "id": CLEAN_ID,
    "source": "api",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "response_model": "gpt-4o-mini-2024" + FFFD,
    "status": "error",
    "error_type": "Timeout" + FFFD,
    "request_id": "req-1",
    "trace_id": "tr" + FFFD,
    "run_id": "run",
    "parent_run_id": "p\U0001f600",  # the pair, as the one character it encodes
    "user": "u42",
    "team": "t" + FFFD,
    "project": "proj" + FFFD,
    "feature": "search",
    "tags": ["beta", "half " + FFFD],
    "metadata": {"q": "half emoji " + FFFD, "key" + FFFD: ["x", {"n" + FFFD: "ok"}]},
    "price_context": {"service_tier": "flex" + FFFD},
    "pricing_status": "priced",
    "currency": "USD",
    "pricing_source": "book",
    "priced_model": "gpt-4o-mini" + FFFD,
    "priced_provider": "openai",
}


def stored_text(row: Any) -> dict[str, Any]:
    """The columns of ``CLEAN`` of a ``StoredEvent``, as plain values."""
    values = row.as_row()
    return {
        name: dict(values[name]) if name in ("metadata", "price_context") else values[name]
        for name in CLEAN
    }


def sql_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def raw_columns(url: str) -> list[tuple[Any, ...]]:
    """What the database holds, read without the ledger: attribution columns and JSON values."""
    if url.startswith("sqlite"):
        json_sql = (
            "json_extract(metadata, '$.q'), json_extract(tags, '$[1]'),"
            " json_extract(price_context, '$.service_tier')"
        )
    else:
        json_sql = "metadata->>'q', tags->>1, price_context->>'service_tier'"
    return sql_rows(
        url,
        f'SELECT id, "user", team, feature, currency, {json_sql} FROM costledger_events'
        " WHERE id <> 'e-1'",
    )


RAW = [
    (
        CLEAN_ID,
        "u42",
        "t" + FFFD,
        "search",
        "USD",
        "half emoji " + FFFD,
        "half " + FFFD,
        "flex" + FFFD,
    )
]


# -- the record path ---------------------------------------------------------------------------


def test_every_text_column_is_stored_clean(url: str) -> None:
    event = odd_event()
    # valid text beyond ASCII is stored as it is
    fine = UsageEvent(
        id="e-1",
        timestamp=AT,
        model="gpt-4o-mini",
        error_type="Zeitüberschreitung",
        parent_run_id="p\U0001f600",
        user="José",
        team="検索",
        tags=("beta",),
        metadata={"k": "vé"},
        usage=Usage(input_tokens=10, output_tokens=20),
        cost=Cost(status="priced", total=Decimal("0.0000135"), model="m\u00e9"),
    )
    with Ledger(url, sync=True) as ledger:
        ledger.record_many([event, fine])
        assert ledger.flush(timeout=30)
        stats = ledger.stats()
        stored = ledger.get(CLEAN_ID)
        other = ledger.get("e-1")
    assert (stats.inserted, stats.rejected) == (2, 0)
    assert other is not None
    assert other.to_event() == fine
    assert stored is not None
    assert stored_text(stored) == CLEAN
    assert stored.total_cost == Decimal("0.0000135")
    assert raw_columns(url) == RAW
    # the rollups group by the same text
    rollups = sql_rows(url, 'SELECT "user", team, feature, source FROM costledger_rollup_daily')
    assert sorted(rollups) == [("José", "検索", None, "api"), ("u42", "t" + FFFD, "search", "api")]


@pytest.mark.parametrize("mode", ["buffered", "durable"])
def test_buffered_and_durable_ledgers_store_clean_text(url: str, tmp_path: Path, mode: str) -> None:
    event = odd_event()
    kwargs: dict[str, Any] = {"durable": True} if mode == "durable" else {}
    with Ledger(url, spool_dir=tmp_path / "spool", **kwargs) as ledger:
        ledger.record(event)  # durable: spooled before it returns
        assert ledger.flush(timeout=30)
        stats = ledger.stats()
        stored = ledger.get(CLEAN_ID)
    assert (stats.inserted, stats.rejected, stats.dropped) == (1, 0, 0)
    assert stored is not None
    assert stored_text(stored) == CLEAN
    assert raw_columns(url) == RAW


def test_an_id_of_nul_only_is_rejected_not_stored_empty(tmp_path: Path) -> None:
    event = odd_event(id="\x00\x00")
    with Ledger(f"sqlite:///{tmp_path / 'l.db'}", sync=True) as ledger:
        ledger.record(event)
        stats = ledger.stats()
        assert [e.id for e in ledger.events()] == []
        rejected = list(ledger.spool_dir.glob("rejected-*.jsonl"))
    assert (stats.inserted, stats.rejected) == (0, 1)
    assert len(rejected) == 1


# -- reading and re-pricing with the text as given -------------------------------------------------


def test_lookups_filters_and_repricing_take_the_text_as_recorded(url: str) -> None:
    event = odd_event()
    with Ledger(url, sync=True) as ledger:
        ledger.record(event)
        assert ledger.get(event.id) is not None  # "evt\x00-odd": the stored "evt-odd"
        assert [e.id for e in ledger.events(user="u\x0042", team="t\udc80")] == [CLEAN_ID]
        assert [e.id for e in ledger.events(feature=["search\x00"], tag="half \ud83d")] == [
            CLEAN_ID
        ]
        (row,) = ledger.summary(by=["user"], user="u\x0042")
        assert (row.user, row.requests, row.cost) == ("u42", 1, Decimal("0.0000135"))
        new = Cost(status="priced", total=Decimal("0.5"), model="m\x00", provider="p\ud83d")
        assert ledger.update_cost(event.id, new)
        stored = ledger.get(CLEAN_ID)
    assert stored is not None
    assert (stored.total_cost, stored.priced_model, stored.priced_provider) == (
        Decimal("0.5"),
        "m",
        "p" + FFFD,
    )


# -- the spool ------------------------------------------------------------------------------------


def _spool_lines(directory: Path, pattern: str) -> list[bytes]:
    return [line for p in sorted(directory.glob(pattern)) for line in p.read_bytes().splitlines()]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_spool_holds_clean_text_and_replays_it(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    spool = tmp_path / "spool"
    if backend == "sqlite":
        blocker = tmp_path / "data"
        blocker.write_text("a file where the database directory should be")
        down = f"sqlite:///{blocker / 'ledger.db'}"
        target = down
    else:
        blocker = None
        down = "postgresql+psycopg://postgres@127.0.0.1:1/nothing_listens_here"
        target = request.getfixturevalue("fresh_pg_url")
    event = odd_event()
    ledger = Ledger(down, spool_dir=spool, flush_interval=0.05)
    try:
        ledger.record(event)
        assert ledger.flush(timeout=30) is False
        stats = ledger.stats()
    finally:
        ledger.close(timeout=5)
    assert (stats.spooled, stats.dropped) == (1, 0)
    (line,) = _spool_lines(spool, "[0-9]*.jsonl")
    text = line.decode("utf-8")  # valid UTF-8
    assert "\\u0000" not in text
    row = decode_spool_line(line)
    assert {k: row[k] for k in ("id", "user", "team", "feature", "tags", "metadata")} == {
        k: CLEAN[k] for k in ("id", "user", "team", "feature", "tags", "metadata")
    }

    if blocker is not None:
        blocker.unlink()
    with Ledger(target, spool_dir=spool) as recovered:
        assert recovered.flush(timeout=60)
        assert recovered.stats().replayed == 1
        stored = recovered.get(CLEAN_ID)
    assert stored is not None
    assert stored_text(stored) == CLEAN
    assert raw_columns(target) == RAW


def test_a_rejected_event_is_kept_as_it_was(url: str) -> None:
    """An event rejected for its money keeps its text as recorded in rejected-*.jsonl:
    a lone surrogate as its JSON escape, so the file stays UTF-8."""
    # Cost refuses a NaN itself now: one made past its check, for the ledger's own rejection
    nan = Cost(status="priced", total=Decimal(0))
    object.__setattr__(nan, "total", Decimal("NaN"))
    bad = odd_event(cost=nan, user="u\udc80\x00")
    with Ledger(url, sync=True) as ledger:
        ledger.record(bad)
        stats = ledger.stats()
        lines = _spool_lines(ledger.spool_dir, "rejected-*.jsonl")
    assert (stats.inserted, stats.rejected) == (0, 1)
    assert len(lines) == 1
    assert b"\\udc80" in lines[0]
    kept = json.loads(lines[0].decode("utf-8"))
    assert (kept["id"], kept["user"], kept["metadata"]) == (
        "evt\x00-odd",
        "u\udc80\x00",
        {"q": "half emoji \ud83d", "k\x00ey\udc80": ["x\x00", {"n\ud83d": "ok"}]},
    )


# -- the JSON encoder ---------------------------------------------------------------------------


def test_the_json_columns_are_cleaned_keys_included() -> None:
    assert dumps({"q": "a\ud83d", "k\udc80": ["\ud83d\ude00", "x\x00"]}) == (
        '{"q":"a\ufffd","k\ufffd":["\U0001f600","x"]}'
    )
    assert dumps(["t\udc80"]) == '["t\ufffd"]'
    # valid text is json.dumps' own, unchanged
    assert dumps({"user": "José", "e": "\U0001f600"}) == '{"user":"José","e":"\U0001f600"}'


# -- the usage log line ---------------------------------------------------------------------------


def test_the_usage_log_line_keeps_the_text_as_json_escapes() -> None:
    event = odd_event()
    out = io.StringIO()
    UsageLogger(out).emit(event)
    line = out.getvalue()
    assert line.count("\n") == 1
    data = line.encode("utf-8")  # no lone surrogate in the text written
    assert b'"costledger.user":"u\\u000042"' in data
    assert b'"costledger.team":"t\\udc80"' in data
    # the event read back: exactly, but for the pair held as two code points, which JSON
    # reads as the one character it encodes
    expected = replace(event, parent_run_id="p\U0001f600")
    assert event_from_line(data) == expected

    # without orjson: the standard library's line, the same
    plain = _stdlib_dumps(event_to_record(event))
    plain.encode("utf-8")
    assert event_from_line(plain) == expected


# -- ingestion ------------------------------------------------------------------------------------


def _log_line(event: UsageEvent, tmp_path: Path) -> Path:
    path = tmp_path / "usage.jsonl"
    logger = UsageLogger(str(path))
    try:
        logger.emit(event)
    finally:
        logger.close()
    return path


def nul_event() -> UsageEvent:
    """NUL in text fields and JSON (a lone surrogate's line: see the converter test below)."""
    return odd_event(
        response_model="gpt-4o-mini-2024",
        error_type="Time\x00out",
        trace_id="tr\x00",
        parent_run_id=None,
        team="t\x00eam",
        project="proj\x00",
        tags=("beta\x00",),
        metadata={"q\x00": "a\x00b"},
        price_context={},  # a line with one takes the canonical reader: here, the fast path
        cost=Cost(status="priced", total=Decimal("0.0000135"), model="m\x00", source="b\x00"),
    )


def test_an_ingested_log_line_is_stored_as_recorded(url: str, tmp_path: Path) -> None:
    event = nul_event()
    with Ledger(url, sync=True, spool_dir=tmp_path / "spool") as ledger:
        ledger.record(replace(event, id="recorded\x00"))  # the same call, recorded
        recorded = ledger.get("recorded")
    assert recorded is not None

    path = _log_line(event, tmp_path)
    result = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ckpt", resume=False)
    assert (result.accepted, result.duplicates, result.rejected) == (1, 0, 0)
    with Ledger(url, sync=True, spool_dir=tmp_path / "spool") as ledger:
        stored = ledger.get(CLEAN_ID)
    assert stored is not None
    assert stored.as_row() == {**recorded.as_row(), "id": CLEAN_ID}
    assert (stored.user, stored.team, stored.feature, stored.trace_id, stored.priced_model) == (
        "u42",
        "team",
        "search",
        "tr",
        "m",
    )
    assert (list(stored.tags), dict(stored.metadata)) == (["beta"], {"q": "ab"})


def test_ingested_rows_equal_the_record_paths_row(tmp_path: Path) -> None:
    """The ingest fast paths clean as ``sqlite_params`` does: the same row."""
    converter = Converter(Pricer(), now=AT)
    # a split pair would be read back joined; a price context takes the canonical reader
    event = odd_event(parent_run_id="p\ud83d", price_context={})
    line = _log_line(event, tmp_path).read_bytes().strip()
    assert converter.own_fast(loads_line(line)) == sqlite_params(event)
    assert converter.convert(loads_line(line), line, 1) == sqlite_params(event)
    assert converter.counts["costledger"] == 1

    response = {
        "id": "chatcmpl-\x00abc",
        "object": "chat.completion",
        "created": int(AT.timestamp()),
        "model": "gpt-4o-mini\ud83d",
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    raw = json.dumps(response).encode()  # as escapes, as a provider would write them
    row = converter.convert(loads_line(raw), raw, 1)
    assert (row[3], row[4], row[5], row[9]) == (
        None,
        "gpt-4o-mini" + FFFD,
        "gpt-4o-mini" + FFFD,
        "chatcmpl-abc",
    )
