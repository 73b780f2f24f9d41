"""The SQL ledger on real SQLite files and a real PostgreSQL server: exact round trips,
idempotency, batching, summaries checked against a direct computation, re-pricing hooks."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import InMemoryLedger, Ledger, StoredEvent, event_to_row, row_to_event
from costledger._ledger._engine import resolve_url
from costledger._ledger._money import decimal_sum_aggregate
from costledger._ledger._rows import decode_spool_line, encode_spool_line
from costledger._ledger._store import sqlite_params

from .test_reports_helpers import expected_summary, history, summary_dict

UTC = timezone.utc


# -- backends ---------------------------------------------------------------------------------


def _count(url: str) -> int:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM costledger_events").scalar_one())
    finally:
        engine.dispose()


# -- events -----------------------------------------------------------------------------------


def full_event(**overrides: Any) -> UsageEvent:
    """An event with every field set to a value that can tell a lossy round trip."""
    fields: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "usage": Usage(
            input_tokens=123_456,
            output_tokens=7_890,
            cache_read_tokens=100_000,
            cache_write_tokens=20_000,
            cache_write_1h_tokens=5_000,
            reasoning_tokens=1_234,
            input_audio_tokens=11,
            output_audio_tokens=22,
        ),
        "cost": Cost(
            status="priced",
            total=Decimal("0.000000037500"),
            input=Decimal("0.0000000000010"),
            cache_read=Decimal("0.000000000000000001"),
            cache_write=Decimal("12345678901234567890.123456789012345678")
            - Decimal("12345678901234567890"),
            output=Decimal("99999999999999999999.999999999999999999"),
            audio=Decimal("0"),
            currency="EUR",
            provider="anthropic",
            model="claude-sonnet-4-5-20250929",
            source="genai-prices 0.2.3",
        ),
        "timestamp": datetime(2025, 3, 9, 23, 59, 59, 999_999, tzinfo=UTC),
        "source": "langchain",
        "provider": "anthropic",
        "response_model": "claude-sonnet-4-5-20250929",
        "status": "error",
        "error_type": "RateLimitError",
        "latency_ms": 1234.5678901234567,
        "request_id": "req_01ABC",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "run_id": str(uuid.uuid4()),
        "parent_run_id": str(uuid.uuid4()),
        "user": "alice@example.com",
        "team": "search",
        "project": "assistant",
        "feature": "summarise",
        "tags": ("prod", "experiment:b", "ünïcode"),
        "metadata": {"k": "v", "n": 3, "nested": {"a": [1, 2, None]}, "flag": True},
        "streamed": True,
        "cache_hit": True,
        "reported_cost": Decimal("0.00003750"),
    }
    fields.update(overrides)
    return UsageEvent(**fields)


def simple_event(**overrides: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "usage": Usage(input_tokens=100, output_tokens=20),
        "cost": Cost(status="priced", total=Decimal("0.000027")),
    }
    fields.update(overrides)
    return UsageEvent(**fields)


# -- round trips ------------------------------------------------------------------------------


def test_event_to_row_and_back_is_exact() -> None:
    event = full_event()
    row = event_to_row(event)
    assert row["total_cost"] == Decimal("0.000000037500")
    assert row["tags"] == ["prod", "experiment:b", "ünïcode"]
    assert row_to_event(row) == event


def test_spool_line_round_trip_keeps_every_digit() -> None:
    event = full_event()
    line = encode_spool_line(event_to_row(event))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b'"total_cost":"0.000000037500"' in line  # text, never a JSON float
    back = row_to_event(decode_spool_line(line))
    assert back == event
    assert back.cost.total is not None
    assert back.cost.total.as_tuple() == Decimal("0.000000037500").as_tuple()
    assert back.timestamp.tzinfo is not None


def test_spool_line_refuses_a_float_amount() -> None:
    line = encode_spool_line(event_to_row(simple_event())).replace(
        b'"total_cost":"0.000027"', b'"total_cost":0.000027'
    )
    with pytest.raises(ValueError, match="total_cost"):
        decode_spool_line(line)


def test_round_trip_of_every_field(url: str) -> None:
    event = full_event()
    with Ledger(url) as ledger:
        ledger.record(event)
        assert ledger.flush(timeout=30)
        stored = ledger.get(event.id)
    assert stored is not None
    assert stored.to_event() == event
    assert stored.timestamp == event.timestamp
    assert stored.timestamp.tzinfo is not None
    assert stored.total_cost == Decimal("0.000000037500")
    assert stored.cache_read_cost == Decimal("0.000000000000000001")
    assert stored.output_cost == Decimal("99999999999999999999.999999999999999999")
    assert stored.tags == ["prod", "experiment:b", "ünïcode"]
    assert dict(stored.metadata) == {"k": "v", "n": 3, "nested": {"a": [1, 2, None]}, "flag": True}
    assert stored.latency_ms == 1234.5678901234567
    assert stored.model_key == "claude-sonnet-4-5-20250929"
    if url.startswith("sqlite"):  # text storage keeps even the exponent
        assert stored.total_cost is not None
        assert str(stored.total_cost) == str(Decimal("0.000000037500"))


def test_unpriced_and_minimal_events_round_trip(url: str) -> None:
    unpriced = UsageEvent(
        model="my-finetune", usage=Usage(input_tokens=5), cost=Cost.unknown("my-finetune")
    )
    bare = UsageEvent(model=None, usage=Usage(), cost=Cost(status="not_priced"), status="cancelled")
    with Ledger(url, sync=True) as ledger:
        ledger.record_many([unpriced, bare])
        for event in (unpriced, bare):
            stored = ledger.get(event.id)
            assert stored is not None
            assert stored.to_event() == event
        got = ledger.get(unpriced.id)
        assert got is not None
        assert got.total_cost is None
        assert got.pricing_status == "unknown_model"
        assert ledger.get("no-such-id") is None


def test_more_than_18_places_round_half_even_on_both_dialects(url: str) -> None:
    third = Decimal(1) / Decimal(3)  # 0.3333333333333333333333333333
    event = simple_event(cost=Cost(status="priced", total=third))
    half = simple_event(cost=Cost(status="priced", total=Decimal("0.0000000000000000025")))
    with Ledger(url, sync=True) as ledger:
        ledger.record_many([event, half])
        a, b = ledger.get(event.id), ledger.get(half.id)
    assert a is not None
    assert b is not None
    assert a.total_cost == Decimal("0.333333333333333333")
    assert b.total_cost == Decimal("0.000000000000000002")  # half-even


# -- idempotency, batching, flush ----------------------------------------------------------------


def test_same_id_twice_is_one_row(url: str) -> None:
    event = simple_event()
    with Ledger(url) as ledger:
        ledger.record(event)
        ledger.record(event)
        ledger.record_many([event, simple_event(id=event.id, model="other")])
        assert ledger.flush(timeout=30)
        assert ledger.stats().inserted == 1
        assert ledger.stats().duplicates == 3
    with Ledger(url, sync=True) as again:
        again.record(event)
        assert again.stats().duplicates == 1
        stored = again.get(event.id)
        assert stored is not None
        assert stored.model == "gpt-4o-mini"
    assert _count(url) == 1


def test_a_batch_out_of_time_order_with_stored_ids_adds_exactly_the_new_ones(url: str) -> None:
    # SQLite inserts a batch in time order (for index locality): which ids were new must
    # still be exact when the batch mixes stored and new ids in no order of time
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    events = [
        simple_event(timestamp=t0.replace(hour=h), user=f"u{h % 3}", model=f"m{h}")
        for h in range(24)
    ]
    stored = events[::2]
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(stored)
        inserted = ledger._core.store.insert_rows([sqlite_params(e) for e in reversed(events)])
        assert sorted(row[0] for row in inserted) == sorted(e.id for e in events[1::2])
        by_id = {e.id: e for e in ledger.events(limit=100)}
        assert sorted(by_id) == sorted(e.id for e in events)
        assert {i: by_id[e.id].model for i, e in enumerate(events)} == {
            i: f"m{i}" for i in range(24)
        }
        (day,) = ledger.summary(by=["day"])
        assert day.requests == 24
        assert day.cost == Decimal("0.000027") * 24


def test_batches_by_size_before_the_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with Ledger(url, batch_size=100, flush_interval=3600) as ledger:
        ledger.summary()  # schema ready, nothing pending
        for _ in range(250):
            ledger.record(simple_event())
        deadline = time.monotonic() + 20
        while _count(url) < 151 and time.monotonic() < deadline:
            time.sleep(0.02)
        # without a flush and long before the interval, fewer than a batch are left waiting
        assert _count(url) >= 151
        assert ledger.flush(timeout=30)
        assert _count(url) == 250


def test_batches_by_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    with Ledger(url, batch_size=10_000, flush_interval=0.05) as ledger:
        ledger.summary()
        ledger.record(simple_event())
        deadline = time.monotonic() + 20
        while _count(url) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _count(url) == 1


def test_record_returns_before_the_database_is_touched(tmp_path: Path) -> None:
    """The caller's thread does no I/O: with the writer held on the database's write
    lock, record() still returns at once."""
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    with Ledger(url, flush_interval=0.01) as ledger:
        ledger.summary()
        blocker = sa.create_engine(resolve_url(url))
        with blocker.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the writer now waits (busy_timeout)
            started = time.perf_counter()
            for _ in range(1000):
                ledger.record(simple_event())
            elapsed = time.perf_counter() - started
            conn.exec_driver_sql("ROLLBACK")
        blocker.dispose()
        assert elapsed < 1.0
        assert ledger.flush(timeout=60)
    assert _count(url) == 1000


def test_full_buffer_spills_to_the_spool_and_nothing_is_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}"
    with Ledger(url, max_buffer=10, batch_size=1000, flush_interval=3600) as ledger:
        ledger.summary()
        events = [simple_event() for _ in range(100)]
        for event in events:
            ledger.record(event)
        assert ledger.stats().spooled >= 80
        assert ledger.flush(timeout=30)
        assert {e.id for e in ledger.events()} == {e.id for e in events}
        assert list(ledger.spool_dir.glob("[0-9]*.jsonl")) == []


def test_buffered_events_are_rows_the_gc_stops_tracking(tmp_path: Path) -> None:
    """What waits for the writer is a row of strings and numbers per event, not the event:
    the cyclic GC drops it from its lists the first time it sees it, so a busy host's
    collections do not scan the backlog (the events themselves can be freed at once)."""
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    with Ledger(url, batch_size=1000, flush_interval=3600) as ledger:
        events = [full_event(id=f"e{i}") for i in range(50)]
        for event in events:
            ledger.record(event)
        buffered = list(ledger._core.buffer)
        assert len(buffered) == 50
        gc.collect()  # untracks each row: it holds only strings, numbers and None
        gc.collect()  # then the (row, segment) item holding it
        assert [gc.is_tracked(item) for item in buffered] == [False] * 50
        assert ledger.flush(timeout=30)
        stored = [ledger.get(e.id) for e in events]
        assert [s.to_event() if s else None for s in stored] == events
        # text storage keeps even the exponent, through the spool too
        assert [str(s.total_cost) if s else None for s in stored] == [
            str(e.cost.total) for e in events
        ]


def test_concurrent_threads_recording(url: str) -> None:
    per_thread, threads = 400, 8
    with Ledger(url, batch_size=128) as ledger:

        def work() -> None:
            for _ in range(per_thread):
                ledger.record(simple_event())

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert ledger.flush(timeout=60)
        assert ledger.stats().inserted == per_thread * threads
    assert _count(url) == per_thread * threads


def test_two_ledgers_on_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = Ledger(url, batch_size=50), Ledger(url, batch_size=50)
    try:
        shared = [simple_event() for _ in range(300)]

        def feed(ledger: Ledger) -> None:
            for event in shared:
                ledger.record(event)
            for _ in range(200):
                ledger.record(simple_event())

        ts = [threading.Thread(target=feed, args=(x,)) for x in (a, b)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        assert a.flush(timeout=60)
        assert b.flush(timeout=60)
        assert a.stats().inserted + b.stats().inserted == 700
    finally:
        a.close()
        b.close()
    assert _count(url) == 700


def test_bad_event_is_rejected_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    # Cost refuses a NaN itself now: one made past its check, for the ledger's own rejection
    nan = Cost(status="priced", total=Decimal(0))
    object.__setattr__(nan, "total", Decimal("NaN"))
    bad = simple_event(cost=nan)
    good = [simple_event() for _ in range(9)]
    with Ledger(url) as ledger:
        for event in [*good[:5], bad, *good[5:]]:
            ledger.record(event)
        assert ledger.flush(timeout=30)
        assert ledger.stats().rejected == 1
        assert {e.id for e in ledger.events()} == {e.id for e in good}
        rejected = list(ledger.spool_dir.glob("rejected-*.jsonl"))
    assert len(rejected) == 1
    assert bad.id.encode() in rejected[0].read_bytes()


def test_record_refuses_what_is_not_an_event(tmp_path: Path) -> None:
    with InMemoryLedger() as ledger, pytest.raises(TypeError, match="UsageEvent"):
        ledger.record({"id": "x"})  # type: ignore[arg-type]


def test_in_memory_ledger_is_sync_and_private() -> None:
    a, b = InMemoryLedger(), InMemoryLedger()
    event = simple_event()
    a.record(event)
    assert a.get(event.id) is not None  # no flush needed: written in the caller's thread
    assert b.get(event.id) is None
    assert [e.id for e in a.events()] == [event.id]
    a.close()
    b.close()


def test_close_flushes_and_later_records_wait_in_the_spool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spool = tmp_path / "spool"
    ledger = Ledger(url, spool_dir=spool, flush_interval=3600)
    first = simple_event()
    ledger.record(first)
    ledger.close()
    assert _count(url) == 1
    late = simple_event()
    ledger.record(late)  # never raises, never lost
    assert ledger.stats().spooled == 1
    with Ledger(url, spool_dir=spool) as reopened:
        assert reopened.flush(timeout=30)
        assert reopened.get(late.id) is not None
        assert reopened.stats().replayed == 1


def test_interpreter_exit_flushes(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'exit.db'}"
    code = (
        "from decimal import Decimal\n"
        "from costledger import Cost, Usage, UsageEvent\n"
        "from costledger._ledger import Ledger\n"
        f"ledger = Ledger({url!r}, flush_interval=3600)\n"
        "for _ in range(321):\n"
        "    ledger.record(UsageEvent(model='m', usage=Usage(1, 1),"
        " cost=Cost('priced', total=Decimal('0.1'))))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert _count(url) == 321


def test_garbage_collected_ledger_stops_its_writer(tmp_path: Path) -> None:
    import gc

    url = f"sqlite:///{tmp_path / 'gc.db'}"
    ledger = Ledger(url, flush_interval=3600)
    ledger.record(simple_event())
    thread = ledger._core.thread
    assert thread is not None
    assert thread.is_alive()
    del ledger
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
    assert _count(url) == 1


# -- queries -----------------------------------------------------------------------------------


@pytest.fixture
def loaded(url: str) -> Iterator[tuple[Ledger, list[UsageEvent]]]:
    events = history(400, seed=7)
    with Ledger(url) as ledger:
        ledger.record_many(events)
        assert ledger.flush(timeout=60)
        yield ledger, events


SUMMARY_CASES = [
    ("day",),
    ("week",),
    ("month",),
    ("model",),
    ("provider",),
    ("user",),
    ("team",),
    ("project",),
    ("feature",),
    ("tag",),
    ("source",),
    ("status",),
    ("month", "model", "tag"),
    (),
]


@pytest.mark.parametrize("by", SUMMARY_CASES, ids=lambda b: "+".join(b) or "total")
def test_summary_equals_direct_computation(
    loaded: tuple[Ledger, list[UsageEvent]], by: tuple[str, ...]
) -> None:
    ledger, events = loaded
    rows = ledger.summary(by=by)
    assert summary_dict(rows) == expected_summary(events, by)
    for r in rows:
        assert isinstance(r.cost, Decimal)


def test_summary_with_filters_and_time_range(loaded: tuple[Ledger, list[UsageEvent]]) -> None:
    ledger, events = loaded
    since = datetime(2025, 2, 3, tzinfo=UTC)
    until = date(2025, 2, 17)
    chosen = [
        e
        for e in events
        if since <= e.timestamp < datetime(2025, 2, 17, tzinfo=UTC)
        and e.team == "search"
        and e.user in ("u1", "u2")
        and "a" in e.tags
    ]
    rows = ledger.summary(
        by=["user", "tag"], since=since, until=until, team="search", user=["u1", "u2"], tag="a"
    )
    expected = {
        k: v for k, v in expected_summary(chosen, ("user", "tag")).items() if k[1] == "a"
    }  # grouped by tag and filtered by tag: only the wanted tag's rows
    assert {(*r.key, r.currency): r.cost for r in rows} == {
        k: v["cost"] for k, v in expected.items()
    }
    assert sum(r.requests for r in rows) == len(chosen)


def test_events_filters_order_and_limit(loaded: tuple[Ledger, list[UsageEvent]]) -> None:
    ledger, events = loaded
    ordered = sorted(events, key=lambda e: (e.timestamp, e.id))
    got = list(ledger.events())
    assert [e.id for e in got] == [e.id for e in ordered]
    assert all(isinstance(e, StoredEvent) for e in got)
    assert [e.id for e in ledger.events(order="desc", limit=5)] == [e.id for e in ordered[::-1][:5]]
    assert {e.id for e in ledger.events(model="gpt-4o-2025")} == {
        e.id for e in events if "gpt-4o-2025" in (e.model, e.response_model)
    }
    assert {e.id for e in ledger.events(model="gpt-4o")} == {
        e.id for e in events if "gpt-4o" in (e.model, e.response_model)
    }
    for name, value in [
        ("provider", "openai"),
        ("user", "u2"),
        ("team", "chat"),
        ("project", "p1"),
        ("feature", "f2"),
        ("status", "error"),
        ("source", "litellm"),
    ]:
        want = {e.id for e in events if getattr(e, name) == value}
        assert want, name
        filters: dict[str, Any] = {name: value}
        assert {e.id for e in ledger.events(**filters)} == want, name
    assert {e.id for e in ledger.events(tag=["c", "d"])} == {
        e.id for e in events if {"c", "d"} & set(e.tags)
    }
    mid = ordered[200].timestamp
    assert [e.id for e in ledger.events(since=mid, limit=3)] == [e.id for e in ordered[200:203]]
    assert [e.id for e in ledger.events(until=mid)] == [e.id for e in ordered[:200]]
    # streaming: a generator that reads in batches, not a list
    stream = ledger.events(batch_size=7)
    assert next(iter(stream)).id == ordered[0].id


def test_query_arguments_are_checked(tmp_path: Path) -> None:
    with InMemoryLedger() as ledger:
        with pytest.raises(ValueError, match="'colour'"):
            ledger.summary(by=["colour"])
        with pytest.raises(ValueError, match="unknown filter 'colour'"):
            ledger.summary(colour="red")
        with pytest.raises(ValueError, match="order"):
            list(ledger.events(order="sideways"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'user'"):
            list(ledger.events(user=[1]))  # type: ignore[list-item]


def test_decimal_sum_aggregate_is_exact() -> None:
    agg = decimal_sum_aggregate()
    for value in ["0.1"] * 10 + [None, "0.000000000000000001", 3]:
        agg.step(value)
    assert agg.finalize() == "4.000000000000000001"
    assert sum([0.1] * 10) != 1.0  # why the aggregate exists
    with pytest.raises(TypeError):
        agg.step(0.5)
    empty = decimal_sum_aggregate()
    assert empty.finalize() is None


def test_sqlite_sums_in_sql_without_float(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sum.db'}"
    tiny = [simple_event(cost=Cost(status="priced", total=Decimal("0.1"))) for _ in range(10)]
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(tiny)
        (row,) = ledger.summary()
    assert row.cost == Decimal("1.0")
    assert str(row.cost) == "1.0"


# -- re-pricing and hooks ----------------------------------------------------------------------


def test_update_cost_and_hooks(url: str) -> None:
    inserted: list[list[str]] = []
    changes: list[Any] = []
    with Ledger(url) as ledger:
        ledger._add_insert_hook(lambda conn, evs: inserted.append([e.id for e in evs]))
        ledger._add_cost_hook(lambda conn, ch: changes.extend(ch))
        unknown = UsageEvent(model="new-model", usage=Usage(1000, 10), cost=Cost.unknown("new"))
        other = simple_event()
        ledger.record_many([unknown, other, unknown])
        assert ledger.flush(timeout=30)
        assert sorted(id for batch in inserted for id in batch) == sorted([unknown.id, other.id])
        ledger.record(unknown)
        assert ledger.flush(timeout=30)
        assert sum(len(b) for b in inserted) == 2  # a duplicate never reaches the hook
        price = Cost(status="priced", total=Decimal("0.0123"), input=Decimal("0.01"), source="book")
        assert ledger.update_cost(unknown.id, price)
        assert not ledger.update_cost("missing", price)
        assert ledger.update_costs({other.id: Cost.unknown("gpt-4o-mini")}) == 1
        stored = ledger.get(unknown.id)
        assert stored is not None
        assert stored.total_cost == Decimal("0.0123")
        assert stored.pricing_status == "priced"
        assert stored.pricing_source == "book"
        (before_after, second) = changes
        assert before_after.before.total_cost is None
        assert before_after.after.total_cost == Decimal("0.0123")
        assert second.after.total_cost is None
        (row,) = ledger.summary()
        assert row.cost == Decimal("0.0123")
        assert row.unpriced == 1


def test_a_failing_hook_rolls_the_batch_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hook.db'}"

    def boom(conn: Any, events: Any) -> None:
        raise RuntimeError("rollup broken")

    with Ledger(url, sync=True, spool_dir=tmp_path / "spool") as ledger:
        ledger._add_insert_hook(boom)
        ledger.record(simple_event())
        assert _count(url) == 0  # not half-written: rows and hook share a transaction
        assert ledger.stats().spooled == 1


# -- configuration -------------------------------------------------------------------------------


def test_url_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COSTLEDGER_DATABASE_URL", raising=False)
    assert resolve_url(None).render_as_string() == "sqlite:///costledger.db"
    monkeypatch.setenv("COSTLEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert resolve_url(None).database == str(tmp_path / "env.db")
    assert resolve_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="mysql"):
        resolve_url("mysql://u@h/db")
    with pytest.raises(ValueError, match="batch_size"):
        Ledger("sqlite://", batch_size=0)


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        (
            "postgresql://admin:TopS3cretPW@db.internal:54x2/prod",
            "postgresql://admin:***@db.internal:54x2/prod",
            "invalid literal for int() with base 10: '54x2'",
        ),
        (  # an unencoded "@": SQLAlchemy would quote the password's tail as the port
            "postgres://admin:TopS3c@ret:PW@db.internal:5432/prod",
            "postgres://admin:***@db.internal:5432/prod",
            "a character in the password (such as @ / : ?) must be percent-encoded",
        ),
        (
            "postgresql:/admin:TopS3cretPW@db.internal/prod",  # a slash missing
            "postgresql:/admin:***@db.internal/prod",
            "Could not parse SQLAlchemy URL from given URL string",
        ),
        (  # no password: shown as given
            "postgresql://admin@db.internal:54x2/prod",
            "postgresql://admin@db.internal:54x2/prod",
            "invalid literal for int() with base 10: '54x2'",
        ),
    ],
)
def test_an_unparsable_url_is_shown_without_its_password(url: str, shown: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_url(url)
    assert str(info.value) == f"database url {shown!r} is not a valid URL: {why}"
    assert "TopS3c" not in str(info.value)
    assert "PW" not in str(info.value)
    with pytest.raises(ValueError) as info:
        Ledger(url)
    assert str(info.value) == f"database url {shown!r} is not a valid URL: {why}"


def test_sqlite_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Ledger(url) as ledger:
        ledger.summary()
        with ledger._core.store.read_connection() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
        assert ledger.spool_dir == tmp_path / "p.db.spool"


def test_default_spool_dir_for_postgres_is_per_url() -> None:
    a = Ledger("postgresql://u:secret@127.0.0.1:1/a")
    b = Ledger("postgresql://u:other@127.0.0.1:1/b")
    try:
        assert a.spool_dir.parent == Path.home() / ".costledger" / "spool"
        assert a.spool_dir != b.spool_dir
        assert "secret" not in repr(a)
    finally:
        a.close(timeout=1)
        b.close(timeout=1)


def test_events_are_not_written_with_prompts() -> None:
    names = set(event_to_row(full_event()))
    assert not names & {"prompt", "prompts", "completion", "messages", "input", "output"}


def test_env_var_module_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from costledger._ledger import Ledger, InMemoryLedger, event_to_row; "
        "print(','.join(m for m in ('sqlalchemy', 'sqlmodel', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_raw_driver_data_errors_count_as_bad_rows(postgres_url: str) -> None:
    """Unwrapped psycopg errors for a bad row (a NUL in text) isolate the row, not spool all."""
    import psycopg

    from costledger._ledger._store import is_data_error

    assert is_data_error(psycopg.errors.UntranslatableCharacter("nul"))
    assert is_data_error(psycopg.DataError("bad"))
    assert not is_data_error(psycopg.OperationalError("server gone"))
