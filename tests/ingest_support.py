"""Shared pieces of the ingestion tests: ledgers on SQLite files and a scratch PostgreSQL
database, events with every field set, and the lines of each format."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from costledger import Cost, Usage, UsageEvent
from costledger._ledger._engine import resolve_url
from costledger._logging import dumps_record
from costledger._pricing import Pricer
from costledger._schema import event_to_record

UTC = timezone.utc
FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
LITELLM_PAYLOADS = FIXTURES / "litellm_payloads.jsonl"


@pytest.fixture(scope="session")
def pricer() -> Pricer:
    return Pricer()


def count_rows(url: str, table: str = "costledger_events") -> int:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())
    finally:
        engine.dispose()


def own_line(event: UsageEvent, **extra: Any) -> bytes:
    """``event`` as UsageLogger writes it, with any keys an application's chain adds."""
    return dumps_record({**event_to_record(event), **extra}).encode()


def make_event(n: int, **overrides: Any) -> UsageEvent:
    """A priced gpt-4o-mini call (input 1000 with 200 cached, output 100: $0.000195)."""
    fields: dict[str, Any] = {
        "id": f"evt-{n:06d}",
        "model": "gpt-4o-mini",
        "usage": Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=200),
        "cost": Cost(
            status="priced",
            total=Decimal("0.000195000"),
            input=Decimal("0.00012000"),
            cache_read=Decimal("0.000015000"),
            cache_write=Decimal("0"),
            output=Decimal("0.0000600"),
            audio=Decimal("0"),
            provider="openai",
            model="gpt-4o-mini",
            source="genai-prices 0.2.3",
        ),
        "timestamp": datetime(2025, 6, 1, 12, 0, n % 60, n, tzinfo=UTC),
        "source": "decorator",
        "provider": "openai",
        "user": f"user-{n % 3}",
        "team": "search",
        "latency_ms": 250.5 + n,
    }
    fields.update(overrides)
    return UsageEvent(**fields)


def write_lines(path: Path, lines: list[bytes], *, end: bytes = b"\n") -> Path:
    path.write_bytes(b"\n".join(lines) + end)
    return path


def rich_events() -> list[UsageEvent]:
    """Events that can tell a lossy round trip: every field set, odd values everywhere."""
    return [
        make_event(1),
        make_event(
            2,
            model="claude-sonnet-4-5",
            response_model="claude-sonnet-4-5-20250929",
            provider="anthropic",
            usage=Usage(
                input_tokens=123_456,
                output_tokens=7_890,
                cache_read_tokens=100_000,
                cache_write_tokens=20_000,
                cache_write_1h_tokens=5_000,
                reasoning_tokens=1_234,
                input_audio_tokens=11,
                output_audio_tokens=22,
            ),
            cost=Cost(
                status="priced",
                total=Decimal("0.000000037500"),
                input=Decimal("1E-12"),
                cache_read=Decimal("0.000000000000000001"),
                cache_write=Decimal("0.123456789012345678"),
                output=Decimal("99999999999999999999.999999999999999999"),
                audio=Decimal("0E-8"),
                currency="EUR",
                provider="anthropic",
                model="claude-sonnet-4-5-20250929",
                source="book: negotiated.toml",
            ),
            timestamp=datetime(2025, 3, 9, 23, 59, 59, 999_999, tzinfo=UTC),
            source="langchain",
            status="ok",
            request_id="msg_01ABC",
            trace_id="trace-1",
            run_id="run-1",
            parent_run_id="run-0",
            user="ünïcødé 用户",
            team='team "quoted"',
            project="p\nnewline",
            feature="f\u2028sep",
            tags=("a", "b", "ü"),
            metadata={"ticket": 42, "nested": {"list": [1, 2.5, None, True]}, "big": 2**70},
            streamed=True,
            reported_cost=Decimal("1.35E-7"),
        ),
        make_event(
            3,
            model="my-private-model",
            cost=Cost.unknown("my-private-model", "openai"),
            status="error",
            error_type="RateLimitError",
            latency_ms=None,
            user=None,
            team=None,
        ),
        make_event(
            4,
            cache_hit=True,
            cost=Cost.zero(model="gpt-4o-mini", provider="openai", source="cache hit"),
            timestamp=datetime(2025, 6, 1, 0, 0, tzinfo=UTC),
            latency_ms=0.0,
        ),
        make_event(
            5,
            usage=Usage(),
            cost=Cost(status="not_priced", model="gpt-4o-mini", provider="openai"),
            status="cancelled",
            error_type="CancelledError",
        ),
    ]


REFUSED_USER = "refused-user"


def lines_with_a_refused_user() -> list[bytes]:
    """Eight own-format lines; the fifth names ``REFUSED_USER``, which a ledger given
    ``refuse_user`` refuses (a row the database refuses: the ledger cleans what PostgreSQL
    itself would refuse, such as NUL, so a constraint stands in for it)."""
    lines = [own_line(make_event(n)) for n in range(1, 9)]
    refused = orjson.loads(lines[4])
    refused["costledger.user"] = REFUSED_USER
    lines[4] = orjson.dumps(refused)
    return lines


REFUSAL = (
    'refused by the database: CheckViolation: new row for relation "costledger_events" '
    'violates check constraint "costledger_test_refuse"'
)
"""The start of the reason a row of ``REFUSED_USER`` is rejected with."""


def refuse_user(url: str) -> None:
    """Make the PostgreSQL ledger at ``url`` (a database of the test's own) refuse rows
    of ``REFUSED_USER``."""
    import sqlalchemy as sa

    from costledger._ledger._migrate import upgrade

    upgrade(url)  # the schema
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE costledger_events ADD CONSTRAINT costledger_test_refuse "
            f"CHECK (\"user\" IS DISTINCT FROM '{REFUSED_USER}')"
        )
    engine.dispose()
