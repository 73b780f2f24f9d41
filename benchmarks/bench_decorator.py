"""Overhead of ``@track_cost`` per call, against the bare function, in one run.

Run: python benchmarks/bench_decorator.py
Target (issue 3): <= 15 us added per call on the host's call path (SQLite ledger with its
background writer, logging off).

Two clocks: the caller thread's CPU time is what the host's call path pays (pricing,
storage and logging run on costledger's background threads); wall time per call, with
the background work drained inside the timed block, is the whole cost in a tight loop
on a busy interpreter, where the background threads compete for the GIL.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from costledger import Ledger, Tracker, track_cost
from costledger._tracker import drain_deferred

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


def measure(fn: Callable[[], Any], n: int, rounds: int) -> tuple[float, float]:
    """Median (caller-thread CPU us, wall us incl. drained background work) per call."""
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(n):
            fn()
        c1 = time.thread_time()
        drain_deferred()
        w1 = time.perf_counter()
        cpu.append((c1 - c0) / n * 1e6)
        wall.append((w1 - w0) / n * 1e6)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    n, rounds = 10_000, 7
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/bench.db")
        tracker = Tracker(ledger, log="off")
        tracked = track_cost(tracker=tracker, model="gpt-4o-mini", provider="openai")(bare)
        tracked()  # warm the price card cache and the writer
        ledger.flush()
        base_cpu, base_wall = measure(bare, n, rounds)
        ours_cpu, ours_wall = measure(tracked, n, rounds)
        ledger.flush()
        stored = sum(1 for _ in ledger.events())
        ledger.close()
    print(f"load average {os.getloadavg()[0]:.2f}; {n} calls x {rounds} rounds; {stored} stored")
    print("                         caller CPU us/call   wall us/call (incl. background)")
    print(f"bare function          : {base_cpu:12.2f}   {base_wall:12.2f}")
    print(f"@track_cost            : {ours_cpu:12.2f}   {ours_wall:12.2f}")
    print(
        f"added by @track_cost   : {ours_cpu - base_cpu:12.2f}   {ours_wall - base_wall:12.2f}"
        "   (target: <= 15 us on the call path)"
    )


if __name__ == "__main__":
    main()
