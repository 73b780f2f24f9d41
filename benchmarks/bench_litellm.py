"""Overhead of CostLedgerLogger per LiteLLM call, against a no-op CustomLogger and no logger.

Run: python benchmarks/bench_litellm.py [calls per round]

All in one run, interleaved, offline (``mock_response``; LiteLLM's bundled price map):

* ``litellm.completion`` (sync): LiteLLM runs success callbacks on its logging thread, so
  each round counts until every callback of every call has run (a counting logger, last in
  every configuration, tells when), not only until ``completion`` returned.
* ``litellm.acompletion`` (async): callbacks run on the event loop.
* the logger alone: ``log_success_event`` on a real record (a fresh call id each time).
* ``costledger_litellm.completion`` (guards run first) against ``litellm.completion``.

The ledger is a real SQLite ledger (background writer), usage logging off. The machine is
shared and timings are noisy: compare the ratios within one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map fetch

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from costledger import Ledger, Tracker, drain_deferred
from costledger_litellm import CostLedgerLogger
from costledger_litellm._logger import _registry

litellm.telemetry = False
litellm.suppress_debug_info = True

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
ROUNDS = 7


class NoOpLogger(CustomLogger):
    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        pass

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        pass


class Counter(CustomLogger):
    """Last in every configuration: when it has seen N events, all callbacks have run."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._lock = threading.Lock()

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        with self._lock:
            self.count += 1

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.count += 1


def _set_callbacks(callbacks: list[Any]) -> None:
    litellm.callbacks = callbacks
    for name in (
        "success_callback",
        "failure_callback",
        "_async_success_callback",
        "_async_failure_callback",
    ):
        setattr(litellm, name, [])


def _wait(counter: Counter, target: int) -> None:
    while counter.count < target:
        time.sleep(0.0005)


def sync_round(callbacks: list[Any], n: int) -> float:
    counter = Counter()
    _set_callbacks([*callbacks, counter])
    t0 = time.perf_counter()
    for _ in range(n):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    _wait(counter, n)
    return (time.perf_counter() - t0) / n * 1e6


def async_round(callbacks: list[Any], n: int) -> float:
    counter = Counter()
    _set_callbacks([*callbacks, counter])

    async def run() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
        while counter.count < n:
            await asyncio.sleep(0.0005)
        return (time.perf_counter() - t0) / n * 1e6

    return asyncio.run(run())


def wrapper_round(call: Callable[..., Any], callbacks: list[Any], n: int) -> float:
    counter = Counter()
    _set_callbacks([*callbacks, counter])
    t0 = time.perf_counter()
    for _ in range(n):
        call(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    _wait(counter, n)
    return (time.perf_counter() - t0) / n * 1e6


def logger_alone(logger: CostLedgerLogger, n: int) -> tuple[float, float]:
    """CPU of one event in our logger: a real record from LiteLLM, replayed with new ids."""
    seen: list[tuple[Any, ...]] = []

    class Keep(CustomLogger):
        def log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            seen.append((kwargs, response_obj, start_time, end_time))

    _set_callbacks([Keep()])
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    while not seen:
        time.sleep(0.001)
    kwargs, response, start, end = seen[0]
    records = []
    for i in range(n):
        slo = dict(kwargs["standard_logging_object"], litellm_call_id=f"bench-{time.time_ns()}-{i}")
        records.append(
            dict(kwargs, standard_logging_object=slo, litellm_call_id=slo["litellm_call_id"])
        )
    t0, c0 = time.perf_counter(), time.thread_time()
    for record in records:
        logger.log_success_event(record, response, start, end)
    c1 = time.thread_time()
    drain_deferred()  # pricing and storage left LiteLLM's thread: count them too
    return (c1 - c0) / n * 1e6, (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/bench.db")
        tracker = Tracker(ledger, log="off")
        ours = CostLedgerLogger(tracker)
        noop = NoOpLogger()
        configs = {"no logger": [], "no-op CustomLogger": [noop], "CostLedgerLogger": [ours]}

        # warm up every path (imports, price card, ledger writer, LiteLLM's caches)
        for callbacks in configs.values():
            sync_round(callbacks, 20)
            async_round(callbacks, 20)

        sync: dict[str, list[float]] = {name: [] for name in configs}
        asyn: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(ROUNDS):  # interleaved, so drift hits every configuration alike
            for name, callbacks in configs.items():
                sync[name].append(sync_round(callbacks, n))
                asyn[name].append(async_round(callbacks, n))
            _registry.clear()

        alone_runs = [logger_alone(ours, 2000) for _ in range(ROUNDS)]
        alone_caller = statistics.median(a[0] for a in alone_runs)
        alone = statistics.median(a[1] for a in alone_runs)
        bare_wrapped = []
        guarded = []
        for _ in range(ROUNDS):
            bare_wrapped.append(wrapper_round(litellm.completion, [ours], n))
            guarded.append(wrapper_round(ours.completion, [ours], n))
        ledger.close()

    def report(title: str, figures: dict[str, list[float]]) -> None:
        base = statistics.median(figures["no logger"])
        noop_us = statistics.median(figures["no-op CustomLogger"])
        print(f"\n{title} ({n} calls x {ROUNDS} rounds, median us/call)")
        for name, values in figures.items():
            us = statistics.median(values)
            print(f"  {name:<20}: {us:9.1f} us/call   x{us / base:5.3f} of no logger")
        ours_us = statistics.median(figures["CostLedgerLogger"])
        print(
            f"  added by CostLedgerLogger vs no-op logger: {ours_us - noop_us:8.1f} us/call "
            f"(x{ours_us / noop_us:5.3f})"
        )

    print(f"litellm {litellm.__version__ if hasattr(litellm, '__version__') else ''}".strip())
    report("litellm.completion (sync; until every callback ran)", sync)
    report("litellm.acompletion (async)", asyn)
    print(
        f"\nCostLedgerLogger.log_success_event alone: {alone_caller:8.1f} us/event on "
        f"LiteLLM's thread (record read, queued); {alone:8.1f} us/event with the background "
        "pricing and ledger enqueue drained"
    )
    plain = statistics.median(bare_wrapped)
    wrapped = statistics.median(guarded)
    print(
        f"costledger_litellm.completion vs litellm.completion (logger registered): "
        f"{wrapped:8.1f} vs {plain:8.1f} us/call (x{wrapped / plain:5.3f}, "
        f"+{wrapped - plain:.1f} us)"
    )


if __name__ == "__main__":
    main()
