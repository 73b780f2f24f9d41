"""Ledger write throughput: events/s through ``record`` + ``flush`` into SQLite and PostgreSQL.

    python benchmarks/bench_ledger.py [--events 100000]

PostgreSQL URL: $COSTLEDGER_BENCH_POSTGRES_URL, else $COSTLEDGER_TEST_POSTGRES_URL (a
scratch database is created and dropped). Each figure is printed next to its peer: a
raw ``sqlite3`` executemany of the same rows (no costledger, no SQLAlchemy) so a busy
machine can be told from a slow ledger. Targets: 50,000/s SQLite, 20,000/s PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger._ledger._rows import COLUMNS
from costledger._ledger._store import sqlite_params


def make_events(n: int) -> list[UsageEvent]:
    """Realistic events: attribution on most, tags on some, priced with 4 components."""
    users = [f"user{i}" for i in range(50)]
    return [
        UsageEvent(
            model="gpt-4o-mini",
            provider="openai",
            response_model="gpt-4o-mini-2024-07-18",
            usage=Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=1024),
            cost=Cost(
                status="priced",
                total=Decimal("0.00008016"),
                input=Decimal("0.0000264"),
                cache_read=Decimal("0.0000768"),
                output=Decimal("0.000048"),
                source="genai-prices",
            ),
            latency_ms=812.5,
            user=users[i % 50],
            team=("search", "chat")[i % 2],
            project="assistant",
            tags=("prod",) if i % 3 == 0 else (),
        )
        for i in range(n)
    ]


def bench_ledger(url: str, events: list[UsageEvent], **kwargs: object) -> tuple[float, float]:
    """Events per wall-clock second, and per CPU-second of this process (all threads):
    the second figure is steadier on a machine shared with other work."""
    with Ledger(url, **kwargs) as ledger:  # type: ignore[arg-type]
        ledger.summary()  # schema created before the clock starts
        start, cpu = time.perf_counter(), time.process_time()
        for event in events:
            ledger.record(event)
        assert ledger.flush(timeout=600)
        elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
        assert ledger.stats().inserted == len(events), ledger.stats()
    return len(events) / elapsed, len(events) / cpu_used


def bench_raw_sqlite(path: Path, events: list[UsageEvent]) -> tuple[float, float]:
    """The peer: plain sqlite3 executemany of already-converted rows into a bare table."""
    rows = [sqlite_params(e) for e in events]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    cols = ",".join(f'"{c}"' for c in COLUMNS)
    conn.execute(f"CREATE TABLE t ({cols}, PRIMARY KEY (id))")
    marks = ",".join("?" * len(COLUMNS))
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(rows), 5000):
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO t VALUES ({marks})", rows[i : i + 5000])
        conn.execute("COMMIT")
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    return len(rows) / elapsed, len(rows) / cpu_used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    n = args.events
    print(f"events per run: {n}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        raw, raw_cpu = bench_raw_sqlite(base / "raw.db", make_events(n))
        print(
            f"{'sqlite3 executemany, pre-converted (peer)':<42}: {raw:>9,.0f} rows/s"
            f"  {raw_cpu:>9,.0f} rows/CPU-s"
        )
        for label, kwargs in (
            ("Ledger SQLite (record + flush)", {}),
            ("Ledger SQLite durable=True", {"durable": True}),
        ):
            rate, per_cpu = bench_ledger(
                f"sqlite:///{base / (uuid.uuid4().hex + '.db')}", make_events(n), **kwargs
            )
            print(
                f"{label:<42}: {rate:>9,.0f} events/s  {per_cpu:>9,.0f} events/CPU-s"
                f"  ({rate / raw:.2f}x the peer)"
            )
    pg = os.environ.get("COSTLEDGER_BENCH_POSTGRES_URL") or os.environ.get(
        "COSTLEDGER_TEST_POSTGRES_URL"
    )
    if not pg:
        print("PostgreSQL: skipped (set COSTLEDGER_BENCH_POSTGRES_URL)")
        return
    import sqlalchemy as sa

    from costledger._ledger._engine import resolve_url

    admin = sa.create_engine(resolve_url(pg), isolation_level="AUTOCOMMIT")
    name = f"costledger_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = resolve_url(pg).set(database=name).render_as_string(hide_password=False)
        rate, per_cpu = bench_ledger(url, make_events(n))
        print(
            f"{'Ledger PostgreSQL (record + flush)':<42}: {rate:>9,.0f} events/s"
            f"  {per_cpu:>9,.0f} events/CPU-s (client side)"
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
