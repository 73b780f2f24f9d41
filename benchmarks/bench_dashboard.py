"""Dashboard computation and page rendering over a SQLite ledger.

    python benchmarks/bench_dashboard.py [--events 100000] [--days 180] [--sqlite PATH]

Records a history through the ledger's own write path (rollups kept on write), then times
``build_dashboard`` (cold, then best of 3) for a few selections, and ``render_dashboard``.
The peer is the same ledger answering the three summaries the dashboard needs
(day and model, user, feature) through ``Ledger.summary``: the ratio shows what the
dashboard adds on top of the ledger's own queries (top calls, month burn, assembly).
``--sqlite PATH`` keeps (and reuses) the database file.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from costledger import Cost, Usage, UsageEvent
from costledger._dashboard import build_dashboard, render_dashboard
from costledger._ledger import Ledger

UTC = timezone.utc
NOW = datetime(2025, 6, 30, tzinfo=UTC)


def fill(ledger: Ledger, n: int, days: int) -> None:
    rng = random.Random(1)
    models = [f"model-{i}" for i in range(12)]
    users = [f"u{i:04d}" for i in range(2000)]
    features = ["search", "chat", "summarise", "agent", "eval", None]
    batch: list[UsageEvent] = []
    for _ in range(n):
        inp = rng.randrange(0, 5000)
        out = rng.randrange(0, 1500)
        model = rng.choice(models)
        if rng.random() < 0.97:
            total = Decimal(rng.randrange(1, 10**7)) * Decimal("1E-9")
            cost = Cost(status="priced", total=total, input=total, source="bench")
        else:
            cost = Cost.unknown(model)
        batch.append(
            UsageEvent(
                model=model,
                usage=Usage(
                    input_tokens=inp,
                    cache_read_tokens=rng.randrange(0, inp + 1),
                    output_tokens=out,
                    reasoning_tokens=rng.randrange(0, out + 1),
                ),
                cost=cost,
                timestamp=NOW - timedelta(seconds=rng.randrange(0, 86400 * days)),
                user=rng.choice(users),
                feature=rng.choice(features),
                team=rng.choice(["a", "b", "c"]),
            )
        )
        if len(batch) == 20_000:
            ledger.record_many(batch)
            batch = []
    ledger.record_many(batch)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    start = time.perf_counter()
    result = fn()
    cold = time.perf_counter() - start
    best = cold
    for _ in range(3):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return cold, best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--sqlite", type=Path, default=None)
    args = parser.parse_args()
    path = args.sqlite or Path(tempfile.mkdtemp()) / "dashboard.db"
    fresh = not path.exists()
    with Ledger(f"sqlite:///{path}", sync=True) as ledger:
        if fresh:
            start = time.perf_counter()
            fill(ledger, args.events, args.days)
            print(f"recorded {args.events} events in {time.perf_counter() - start:.1f} s")
        selections: list[tuple[str, dict[str, Any]]] = [
            ("all time", {}),
            ("last month", {"since": date(2025, 6, 1)}),
            ("one user, all time", {"user": "u0007"}),
            ("one feature, 7d", {"feature": "chat", "since": NOW - timedelta(days=7)}),
        ]
        print(f"{'selection':22s} {'dashboard':>22s} {'3 summaries (peer)':>22s} {'ratio':>6s}")
        for label, sel in selections:
            cold, best, dash = timed(lambda sel=sel: build_dashboard(ledger, now=NOW, **sel))
            since = sel.get("since")
            filters = {k: v for k, v in sel.items() if k != "since"}

            def peer(since: Any = since, filters: dict[str, Any] = filters) -> None:
                for by in (["day", "model"], ["user"], ["feature"]):
                    ledger.summary(by=by, since=since, **filters)

            p_cold, p_best, _ = timed(peer)
            calls = sum(r.requests for r in dash.totals)
            print(
                f"{label:22s} cold {cold:6.3f} best {best:6.3f} s"
                f"   cold {p_cold:6.3f} best {p_best:6.3f} s {best / p_best:6.2f}"
                f"   ({calls} calls)"
            )
        _, render_best, html = timed(lambda: render_dashboard(build_dashboard(ledger, now=NOW)))
        print(f"build + render, all time: best {render_best:.3f} s, page {len(html) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
