"""Overhead of ``@track_cost`` per call, against the bare function, in one run.

Run: python benchmarks/bench_decorator.py
Target (issue 3): <= 15 us added per call (in-memory ledger, background writer, logging off).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from costledger import Ledger, Tracker, track_cost

RESPONSE = {
    "id": "chatcmpl-1",
    "model": "gpt-4o-mini-2024-07-18",
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1024},
    },
}


def bare() -> dict[str, Any]:
    return RESPONSE


def per_call_us(fn: Callable[[], Any], n: int = 20_000, rounds: int = 7) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/bench.db")
        tracker = Tracker(ledger, log="off")
        tracked = track_cost(tracker=tracker, model="gpt-4o-mini", provider="openai")(bare)
        tracked()  # warm the price card cache and the writer
        base = per_call_us(bare)
        ours = per_call_us(tracked)
        ledger.close()
    print(f"bare function        : {base:8.2f} us/call")
    print(f"@track_cost          : {ours:8.2f} us/call")
    print(f"added by @track_cost : {ours - base:8.2f} us/call (target <= 15 us)")


if __name__ == "__main__":
    main()
