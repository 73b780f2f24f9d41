"""Report latency over a large ledger (default 10,000,000 events) on SQLite and PostgreSQL.

    python benchmarks/bench_reports.py [--events 10000000] [--days 180] [--users 2000]
        [--sqlite PATH] [--keep] [--postgres-db NAME] [--no-sqlite] [--no-postgres]
        [--verify] [--only TEXT]
    python benchmarks/bench_reports.py --write-cost 50000     # the rollups' price on write

Generates a realistic history (2,000 users in 20 teams with Zipf-like activity, each using
one to three of 12 features; a feature has its model and entry point, a tenth of its
calls try an alternative model; 3% errors and cancellations, one unpriced private model,
tags on most calls, exact Decimal costs) over 180 days, bulk-loads it
(SQLite ``executemany``, PostgreSQL ``COPY``; secondary indexes dropped during the load
and rebuilt after) and builds the daily rollups from the very same rows with the
ledger's own arithmetic (``RollupDelta``), as the insert hook does. Then times
``costledger._reports.report`` for several groupings: the first (cold) run and the best
of three. ``--verify`` also answers one report from the events table alone, checks
that both answers are identical to the last decimal, and prints that time (the peer:
what a report costs without rollups). ``--sqlite PATH`` keeps (and reuses) the SQLite
file. PostgreSQL URL: $COSTLEDGER_BENCH_POSTGRES_URL, else $COSTLEDGER_TEST_POSTGRES_URL
(a scratch database is created, and dropped unless ``--keep``; ``--postgres-db NAME``
reuses one that ``--keep`` left). A reused ledger is first brought to the current schema
(``costledger db upgrade``; the time is printed: a migration that recomputes the rollups
reads every event). ``--only TEXT`` times only the cases whose name contains TEXT
(``--only top``). ``top`` also prints its peer: the same answer from one scan of the
events table (``ORDER BY`` the exact cost), checked identical.

Target (issue 5 §3): every report <= 1 s over 10,000,000 events on both databases.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

from costledger._ledger import Ledger, upgrade
from costledger._ledger._engine import resolve_url
from costledger._ledger._rollups import RollupDelta, write_delta
from costledger._ledger._rows import COLUMNS
from costledger._reports import report, top

UTC = timezone.utc
EXACT = Context(prec=60)
MTOK = Decimal(1_000_000)
CHUNK = 50_000

# model -> provider, response model, $ per million input / cache read / output (None: unknown)
MODELS: dict[str, tuple[str, str | None, tuple[str, str, str] | None]] = {
    "gpt-4o": ("openai", "gpt-4o-2024-08-06", ("2.50", "1.25", "10")),
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18", ("0.15", "0.075", "0.60")),
    "gpt-4.1": ("openai", "gpt-4.1-2025-04-14", ("2", "0.50", "8")),
    "gpt-4.1-mini": ("openai", "gpt-4.1-mini-2025-04-14", ("0.40", "0.10", "1.60")),
    "o3-mini": ("openai", "o3-mini-2025-01-31", ("1.10", "0.55", "4.40")),
    "claude-sonnet-4": ("anthropic", "claude-sonnet-4-20250514", ("3", "0.30", "15")),
    "claude-3-5-haiku": ("anthropic", "claude-3-5-haiku-20241022", ("0.80", "0.08", "4")),
    "gemini-2.5-pro": ("google", None, ("1.25", "0.31", "10")),
    "gemini-2.5-flash": ("google", None, ("0.30", "0.075", "2.50")),
    "mistral-large": ("mistral", "mistral-large-2411", ("2", "2", "6")),
    "llama-3.1-70b": ("groq", None, ("0.59", "0.59", "0.79")),
    "acme-finetune-v2": ("azure", None, None),  # a private model nobody prices
}
# feature -> (its model, an alternative some calls try, the entry point it is built on):
# in an application the feature picks the model and the framework, the user does not
FEATURES: dict[str, tuple[str, str, str]] = {
    "search": ("gpt-4o-mini", "gemini-2.5-flash", "langchain"),
    "chat": ("claude-sonnet-4", "gpt-4.1", "litellm"),
    "summarise": ("gpt-4.1-mini", "claude-3-5-haiku", "langchain"),
    "extract": ("gpt-4o-mini", "gpt-4.1-mini", "decorator"),
    "classify": ("gpt-4.1-mini", "llama-3.1-70b", "http"),
    "translate": ("gemini-2.5-flash", "mistral-large", "litellm"),
    "code-review": ("o3-mini", "claude-sonnet-4", "http"),
    "agent": ("gpt-4.1", "claude-sonnet-4", "langchain"),
    "email-draft": ("claude-3-5-haiku", "gpt-4o-mini", "decorator"),
    "rag-answer": ("gpt-4o", "gemini-2.5-pro", "langchain"),
    "moderation": ("llama-3.1-70b", "gpt-4o-mini", "http"),
    "legal-draft": ("acme-finetune-v2", "gpt-4o", "litellm"),
}
TAG_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("prod",),
    ("prod",),
    ("prod",),
    ("prod", "batch"),
    ("staging",),
    ("prod", "experiment-a"),
    ("eval",),
    ("prod", "priority"),
    ("prod", "batch", "eu"),
)


class History:
    """A deterministic, realistic stream of ledger rows."""

    def __init__(self, n: int, days: int, users: int, seed: int = 42) -> None:
        self.n = n
        self.days = days
        self.end = date(2025, 7, 1)
        self.start = self.end - timedelta(days=days)
        rng = random.Random(seed)
        self.rng = rng
        self.users = []
        weights = []
        names = list(FEATURES)
        for i in range(users):
            team = f"team-{i % 20:02d}"
            self.users.append(
                (
                    f"user-{i:05d}",
                    team,
                    f"project-{(i % 20) // 2:02d}",
                    tuple(rng.sample(names, rng.randint(1, 3))),
                )
            )
            weights.append(1.0 / (i + 10))
        total = sum(weights)
        self.cum = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self.cum.append(acc)
        self.rates = {
            m: None
            if r is None
            else tuple(EXACT.divide(Decimal(x), MTOK) for x in r)  # per token, exact
            for m, (_, _, r) in MODELS.items()
        }

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """SQLite-ready rows in ``COLUMNS`` order, in time order."""
        rng = self.rng
        per_day, extra = divmod(self.n, self.days)
        i = 0
        for d in range(self.days):
            day = self.start + timedelta(days=d)
            count = per_day + (1 if d < extra else 0)
            offsets = sorted(rng.randrange(0, 86_400_000_000) for _ in range(count))
            base = datetime(day.year, day.month, day.day, tzinfo=UTC)
            for micros in offsets:
                yield self._row(i, base + timedelta(microseconds=micros))
                i += 1

    def _row(self, i: int, ts: datetime) -> tuple[Any, ...]:
        rng = self.rng
        user, team, project, features = self.users[
            min(bisect.bisect_left(self.cum, rng.random()), len(self.users) - 1)
        ]
        feature = features[0] if len(features) == 1 else rng.choice(features)
        main, other, source = FEATURES[feature]
        model = other if rng.random() < 0.1 else main  # a tenth of the calls try the other
        provider, response_model, _ = MODELS[model]
        roll = rng.random()
        status = "ok" if roll < 0.97 else ("error" if roll < 0.995 else "cancelled")
        if status == "error" and rng.random() < 0.5:
            inp = out = cached = reasoning = 0
        else:
            inp = rng.randrange(200, 12_000)
            cached = rng.randrange(0, inp) if rng.random() < 0.4 else 0
            out = rng.randrange(20, 1500)
            reasoning = rng.randrange(0, out) if model == "o3-mini" else 0
        rates = self.rates[model]
        if not inp and not out:
            pricing, total, input_cost, cache_cost, output_cost = (
                "not_priced",
                None,
                None,
                None,
                None,
            )
        elif rates is None:
            pricing, total, input_cost, cache_cost, output_cost = (
                "unknown_model",
                None,
                None,
                None,
                None,
            )
        else:
            pricing = "priced"
            input_cost = EXACT.multiply(rates[0], inp - cached)
            cache_cost = EXACT.multiply(rates[1], cached)
            output_cost = EXACT.multiply(rates[2], out)
            total = EXACT.add(EXACT.add(input_cost, cache_cost), output_cost)
        tags = TAG_SETS[rng.randrange(len(TAG_SETS))]

        def text(d: Decimal | None) -> str | None:
            return None if d is None else format(d, "f")

        return (
            f"bench-{i:012d}",
            ts.isoformat(timespec="microseconds"),
            source,
            provider,
            model,
            response_model,
            status,
            "APIError" if status == "error" else None,
            float(rng.randrange(80, 9000)),
            None,
            None,
            None,
            None,
            user,
            team,
            project,
            feature,
            json.dumps(list(tags)) if tags else "[]",
            "{}",
            0,
            0,
            inp,
            out,
            cached,
            0,
            0,
            reasoning,
            0,
            0,
            pricing,
            "USD",
            text(total),
            text(input_cost),
            text(cache_cost),
            None,
            text(output_cost),
            None,
            "genai-prices" if total is not None else None,
            model if total is not None else None,
            provider if total is not None else None,
            None,
        )


def _secondary_indexes_sqlite(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return list(
        conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'costledger_events' AND sql IS NOT NULL"
        )
    )


class SqliteSink:
    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        upgrade(self.url)
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous = OFF")  # a bulk load for a benchmark only
        self.conn.execute("PRAGMA cache_size = -400000")
        self.indexes = _secondary_indexes_sqlite(self.conn)
        for name, _ in self.indexes:
            self.conn.execute(f'DROP INDEX "{name}"')
        cols = ",".join(f'"{c}"' for c in COLUMNS)
        self.sql = f"INSERT INTO costledger_events ({cols}) VALUES ({','.join('?' * len(COLUMNS))})"

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(self.sql, rows)
        self.conn.execute("COMMIT")

    def finish(self) -> None:
        for _, sql in self.indexes:
            self.conn.execute(sql)
        self.conn.execute("ANALYZE")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.close()


class PostgresSink:
    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        upgrade(url)
        plain = resolve_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(plain, autocommit=True)
        self.indexes = [
            (name, sql)
            for name, sql in self.conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'costledger_events' "
                "AND indexname <> 'costledger_events_pkey'"
            )
        ]
        for name, _ in self.indexes:
            self.conn.execute(f'DROP INDEX "{name}"')
        self.copy_sql = (
            f"COPY costledger_events ({','.join(f'{chr(34)}{c}{chr(34)}' for c in COLUMNS)}) "
            "FROM STDIN"
        )

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cur, cur.copy(self.copy_sql) as copy:
            for row in rows:
                copy.write_row((*row[:19], bool(row[19]), bool(row[20]), *row[21:]))

    def finish(self) -> None:
        for _, sql in self.indexes:
            self.conn.execute(sql)
        self.conn.execute("VACUUM ANALYZE costledger_events")
        self.conn.close()


def load(history: History, sinks: list[Any], urls: list[str]) -> float:
    start = time.perf_counter()
    delta = RollupDelta()
    chunk: list[tuple[Any, ...]] = []
    done = 0

    def flush_rollups() -> None:
        for url in urls:
            with Ledger(url, sync=True) as ledger:
                store = ledger._core.store
                with store.write_transaction() as conn:
                    copy = RollupDelta()
                    copy.groups = dict(delta.groups)
                    write_delta(conn, copy)
        delta.groups.clear()

    for row in history.rows():
        chunk.append(row)
        delta.add_rows((row,))
        if len(chunk) >= CHUNK:
            for sink in sinks:
                sink.write(chunk)
            done += len(chunk)
            chunk = []
            if len(delta) > 300_000:
                flush_rollups()
            if done % 1_000_000 == 0:
                rate = done / (time.perf_counter() - start)
                print(f"  loaded {done:>11,} events ({rate:,.0f}/s)", flush=True)
    if chunk:
        for sink in sinks:
            sink.write(chunk)
    flush_rollups()
    print("  rebuilding secondary indexes ...", flush=True)
    for sink in sinks:
        sink.finish()
    return time.perf_counter() - start


# -- timing ----------------------------------------------------------------------------------------

END = datetime(2025, 7, 1, tzinfo=UTC)
NOW = END - timedelta(hours=5, minutes=17)  # "now" for the relative ranges: mid-day


def cases() -> list[tuple[str, Callable[[Ledger], Any]]]:
    month_start = date(2025, 6, 1)
    return [
        ("totals, all time", lambda lg: report(lg)),
        ("by day", lambda lg: report(lg, "day")),
        ("by month,model", lambda lg: report(lg, "month,model")),
        ("by model", lambda lg: report(lg, "model")),
        ("by user (2000 users)", lambda lg: report(lg, "user")),
        ("by team,feature", lambda lg: report(lg, "team,feature")),
        ("by tag", lambda lg: report(lg, "tag")),
        ("by day,model, June", lambda lg: report(lg, "day,model", since=month_start)),
        ("by user, --since 7d", lambda lg: report(lg, "user", since="7d", now=NOW)),
        ("by provider, team-03", lambda lg: report(lg, "provider", team="team-03")),
        ("by week,feature, tag=batch", lambda lg: report(lg, "week,feature", tag="batch")),
        ("top 10 calls, June", lambda lg: top(lg, 10, since=month_start)),
        ("top 10 calls, all time", lambda lg: top(lg, 10)),
    ]


def time_reports(label: str, url: str, verify: bool, only: str | None = None) -> None:
    print(f"\n{label}: report timings (cold, then best of 3)")
    with Ledger(url, sync=True) as ledger:
        worst = 0.0
        for name, run in cases():
            if only is not None and only not in name:
                continue
            t0 = time.perf_counter()
            first = run(ledger)
            cold = time.perf_counter() - t0
            best = cold
            for _ in range(3):
                t0 = time.perf_counter()
                run(ledger)
                best = min(best, time.perf_counter() - t0)
            worst = max(worst, best)
            size = len(first.rows) if hasattr(first, "rows") else len(first)
            print(f"  {name:<30} cold {cold:7.3f} s   best {best:7.3f} s   ({size} rows)")
        print(f"  slowest report (best of 3): {worst:.3f} s  (target <= 1 s)")
        if only is None or only in "top 10 calls, all time":
            time_top_peer(ledger)
        if verify:
            t0 = time.perf_counter()
            fast = report(ledger, "model")
            t_fast = time.perf_counter() - t0
            t0 = time.perf_counter()
            slow = report(ledger, "model", use_rollups=False)
            t_slow = time.perf_counter() - t0
            same = fast.rows == slow.rows and fast.totals == slow.totals
            print(
                f"  verify: by model from rollups {t_fast:.3f} s, from the events table "
                f"{t_slow:.2f} s ({t_slow / max(t_fast, 1e-9):,.0f}x); identical: {same}"
            )
            if not same:
                raise SystemExit("rollups and events table disagree")


def time_top_peer(ledger: Ledger) -> None:
    """All-time ``top 10`` against its peer: one scan of the events table (what ``top``
    did before the rollups bounded each group's dearest call), checked identical."""
    from costledger._reports._report import _top_scan

    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fast = top(ledger, 10)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    slow = _top_scan(ledger, 10, None, None, {})
    t_slow = time.perf_counter() - t0
    same = [(e.id, e.total_cost) for e in fast] == [(e.id, e.total_cost) for e in slow]
    print(
        f"  peer: all-time top 10 by one scan of the events table {t_slow:.2f} s, "
        f"pruned by the rollups' bounds {min(times):.3f} s ({t_slow / min(times):,.0f}x); "
        f"identical: {same}"
    )
    if not same:
        raise SystemExit("top from the bounds and from a full scan disagree")


def upgrade_timed(label: str, url: str) -> None:
    """Bring a reused ledger to the current schema, timed (0003 recomputes the rollups)."""
    from costledger._ledger._engine import make_engine
    from costledger._ledger._migrate import HEAD, current_revision

    engine = make_engine(resolve_url(url))
    try:
        before = current_revision(engine)
    finally:
        engine.dispose()
    if before == HEAD:
        return
    t0 = time.perf_counter()
    upgrade(url)
    print(f"{label}: upgraded from revision {before} to {HEAD} in {time.perf_counter() - t0:.1f} s")


# -- the price on write -------------------------------------------------------------------------


def as_events(rows: Iterator[tuple[Any, ...]]) -> list[Any]:
    """History rows as ``UsageEvent`` objects (what an application records)."""
    from costledger import Cost, Usage, UsageEvent

    out = []
    for r in rows:
        status = r[29]
        if status == "priced":
            cost = Cost(status="priced", total=Decimal(r[31]), source="genai-prices")
        elif status == "unknown_model":
            cost = Cost.unknown(r[4])
        else:
            cost = Cost(status="not_priced")
        out.append(
            UsageEvent(
                id=uuid.uuid4().hex,
                model=r[4],
                response_model=r[5],
                provider=r[3],
                usage=Usage(
                    input_tokens=r[21],
                    output_tokens=r[22],
                    cache_read_tokens=r[23],
                    reasoning_tokens=r[26],
                ),
                cost=cost,
                timestamp=datetime.fromisoformat(r[1]),
                status=r[6],
                source=r[2],
                user=r[13],
                team=r[14],
                project=r[15],
                feature=r[16],
                tags=tuple(json.loads(r[17])),
            )
        )
    return out


def write_rate(url: str, events: list[Any], rollups: bool) -> float:
    """Events per second through ``Ledger.record`` + ``flush``, with or without the rollups."""
    with Ledger(url) as ledger:
        ledger.summary()  # schema first
        store = ledger._core.store
        if not rollups:
            # this ledger's inserts skip the rollups (and the rare extra hooks)
            store.on_inserted = lambda conn, rows: None  # type: ignore[method-assign]
        start = time.perf_counter()
        for event in events:
            ledger.record(event)
        assert ledger.flush(timeout=600)
        return len(events) / (time.perf_counter() - start)


def write_cost(n: int, pg: str | None) -> None:
    """What keeping the rollups costs the writer: the same events with and without them."""
    print(f"\nwrite throughput, {n:,} events per run, rollups off / on (best of 2)")
    targets: list[tuple[str, Callable[[], str]]] = []
    tmp = tempfile.TemporaryDirectory()
    targets.append(("SQLite", lambda: f"sqlite:///{tmp.name}/{uuid.uuid4().hex}.db"))
    admin = None
    names: list[str] = []
    if pg:
        import sqlalchemy as sa

        admin = sa.create_engine(resolve_url(pg), isolation_level="AUTOCOMMIT")

        def fresh_pg() -> str:
            assert admin is not None
            name = f"costledger_bench_{uuid.uuid4().hex[:10]}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            names.append(name)
            return resolve_url(pg).set(database=name).render_as_string(hide_password=False)

        targets.append(("PostgreSQL", fresh_pg))
    try:
        for users in (50, 2000):
            for label, make_url in targets:
                rates = {False: 0.0, True: 0.0}
                for _ in range(2):
                    for rollups in (False, True):
                        events = as_events(History(n, 3, users, seed=7).rows())
                        rate = write_rate(make_url(), events, rollups)
                        rates[rollups] = max(rates[rollups], rate)
                print(
                    f"  {label:<10} {users:>5} users: {rates[False]:>8,.0f}/s without, "
                    f"{rates[True]:>8,.0f}/s with rollups ({rates[True] / rates[False]:.2f}x)"
                )
    finally:
        if admin is not None:
            with admin.connect() as conn:
                for name in names:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--sqlite", type=Path, help="SQLite file to create, or reuse if loaded")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument("--postgres-db", help="reuse this PostgreSQL database (from --keep)")
    parser.add_argument("--only", help="time only the cases whose name contains this text")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--verify", action="store_true")
    parser.add_argument(
        "--write-cost",
        type=int,
        metavar="N",
        help="instead: write N events through the Ledger with and without rollups",
    )
    args = parser.parse_args()
    pg_env = os.environ.get("COSTLEDGER_BENCH_POSTGRES_URL") or os.environ.get(
        "COSTLEDGER_TEST_POSTGRES_URL"
    )
    if args.write_cost:
        write_cost(args.write_cost, None if args.no_postgres else pg_env)
        return
    print(
        f"{args.events:,} events over {args.days} days, {args.users} users; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    tmp = tempfile.TemporaryDirectory()
    sinks: list[Any] = []
    urls: list[tuple[str, str]] = []
    admin = None
    pg_name = None
    if not args.no_sqlite:
        path = args.sqlite or Path(tmp.name) / "bench.db"
        url = f"sqlite:///{path}"
        if path.exists():
            print(f"SQLite: reusing {path} ({path.stat().st_size / 1e9:.1f} GB)")
        else:
            sinks.append(SqliteSink(path))
        urls.append(("SQLite", url))
    pg = os.environ.get("COSTLEDGER_BENCH_POSTGRES_URL") or os.environ.get(
        "COSTLEDGER_TEST_POSTGRES_URL"
    )
    if not args.no_postgres and pg and args.postgres_db:
        pg_url = resolve_url(pg).set(database=args.postgres_db)
        urls.append(("PostgreSQL", pg_url.render_as_string(hide_password=False)))
        print(f"PostgreSQL: reusing database {args.postgres_db}")
    elif not args.no_postgres and pg:
        import sqlalchemy as sa

        admin = sa.create_engine(resolve_url(pg), isolation_level="AUTOCOMMIT")
        pg_name = f"costledger_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{pg_name}"')
        pg_url = resolve_url(pg).set(database=pg_name).render_as_string(hide_password=False)
        sinks.append(PostgresSink(pg_url))
        urls.append(("PostgreSQL", pg_url))
    elif not args.no_postgres:
        print("PostgreSQL: skipped (set COSTLEDGER_BENCH_POSTGRES_URL)")
    try:
        if sinks:
            print(f"loading into {', '.join(type(s).__name__ for s in sinks)} ...", flush=True)
            seconds = load(
                History(args.events, args.days, args.users), sinks, [s.url for s in sinks]
            )
            print(f"loaded {args.events:,} events in {seconds:,.0f} s")
        for label, url in urls:
            upgrade_timed(label, url)
        for label, url in urls:
            if label == "SQLite":
                file = Path(url[len("sqlite:///") :])
                print(f"\nSQLite file: {file.stat().st_size / 1e9:.2f} GB")
            time_reports(label, url, args.verify, args.only)
    finally:
        if admin is not None and pg_name is not None and not args.keep:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        elif pg_name is not None:
            print(f"kept PostgreSQL database {pg_name}")
        if admin is not None:
            admin.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    main()
