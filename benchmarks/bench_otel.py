"""What ``costledger.otel`` costs: on the call path (``Tracker.start``) and per span made.

Run: python benchmarks/bench_otel.py [--calls 100000]
No target: the figures go into docs/performance.md. Needs opentelemetry-sdk.

- ``Tracker.start`` (the part of every entry point that runs when a call starts), not
  instrumented, instrumented outside any span, and inside an application span (where
  the parent is read and the event's trace id written).
- The worker's side per finished call: ``Tracker.record`` (pricing, the event; a ledger
  that keeps nothing) with and without instrumentation, against the peer, the
  OpenTelemetry SDK making one bare span with explicit times (``start_span`` + ``end``),
  all into a no-op span processor.
Best of 5 repeats, microseconds per call, in one run.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

import costledger.otel
from costledger import Tracker, Usage, UsageEvent

USAGE = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024)
STARTED = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


class Dropped:
    """A ledger that keeps nothing: the figures are pricing, the event and the span only."""

    def record(self, event: UsageEvent) -> None:
        pass


def best_us(fn: Callable[[], Any], calls: int) -> float:
    return min(timeit.repeat(fn, number=calls, repeat=5)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    calls = args.calls

    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())  # spans are made and ended, then dropped
    app = TracerProvider().get_tracer("app")
    tracker = Tracker(Dropped(), log="off")

    def start() -> None:
        tracker.start(source="api", model="gpt-4o-mini")

    def record() -> None:
        tracker.record("gpt-4o-mini", USAGE, started_at=STARTED, latency_ms=800.0)

    sdk_tracer = provider.get_tracer("peer")

    def bare_span() -> None:
        sdk_tracer.start_span("llm.usage gpt-4o-mini", start_time=1).end(end_time=2)

    rows: list[tuple[str, float]] = []
    rows.append(("Tracker.start, not instrumented", best_us(start, calls)))
    rows.append(("Tracker.record, not instrumented", best_us(record, calls // 10)))
    costledger.otel.instrument(provider)
    rows.append(("Tracker.start, instrumented, no current span", best_us(start, calls)))
    with app.start_as_current_span("request"):
        rows.append(("Tracker.start, instrumented, inside a span", best_us(start, calls)))
        rows.append(("Tracker.record, instrumented, inside a span", best_us(record, calls // 10)))
    costledger.otel.uninstrument()
    rows.append(("peer: SDK start_span + end, nothing else", best_us(bare_span, calls // 10)))

    print(f"best of 5 repeats, us per call ({calls} a repeat; record, spans: {calls // 10})")
    for name, us in rows:
        print(f"  {name:48} {us:7.2f}")
    added = rows[4][1] - rows[1][1]
    print(
        f"\nper finished call the span adds {added:.2f} us to the worker "
        f"({added / rows[5][1]:.2f}x the SDK's bare span)"
    )


if __name__ == "__main__":
    main()
