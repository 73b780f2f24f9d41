"""Overhead of ``CostLedgerCallbackHandler`` per sync ``invoke``, against LangChain's own
``UsageMetadataCallbackHandler``, on the same fake chat model, in one run.

Run: python benchmarks/bench_langchain.py [--calls 1000] [--rounds 15] [--split] [--latency-ms 2]
Target (issue 3): ours adds no more than ``UsageMetadataCallbackHandler`` (about 40-90 us here).

Variants are timed in interleaved rounds (each round runs every variant once), so noise
from other work on the machine falls on all of them alike. Two clocks: wall time, and CPU
time of the calling thread (what a call costs its thread, steadier on a shared machine; a
ledger's background writer is not in it). Each is the median round; the best round is
shown too. Ours records through a real Tracker: usage read, priced, an event built and
handed to the ledger (a queue put: its background writer commits to a SQLite file),
logging off.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import (
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
    UsageMetadataCallbackHandler,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from costledger import Ledger, Tracker, _tracker, drain_deferred
from costledger_langchain import CostLedgerCallbackHandler


class FakeOpenAI(BaseChatModel):
    """Answers with ChatOpenAI's shape of usage and metadata: at once, or after
    ``latency`` seconds (a stand-in for the network: the thread sleeps, using no CPU)."""

    model_name: str = "gpt-4o-mini"
    latency: float = 0.0

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            time.sleep(self.latency)
        message = AIMessage(
            content="forty two",
            usage_metadata={
                "input_tokens": 1200,
                "output_tokens": 300,
                "total_tokens": 1500,
                "input_token_details": {"cache_read": 1024},
            },
            response_metadata={"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        return params

    @property
    def _llm_type(self) -> str:
        return "bench-fake-openai"


_DISCARDED = "ours, background queue discarded"


class _Discard:
    """Stands in for costledger's background queue in the diagnostic variant: drops work."""

    pending = False

    def submit(self, item: tuple[Any, ...]) -> None:
        pass

    def drain(self, timeout: float | None = None) -> bool:
        return True


class _GcClock:
    """Seconds the cyclic GC ran on the caller's thread, per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0
        self._caller = threading.get_ident()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self._caller:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started


def _invoker(model: FakeOpenAI, handler: BaseCallbackHandler | None) -> Callable[[], Any]:
    config: Any = {"callbacks": [handler]} if handler is not None else {}

    def call() -> Any:
        return model.invoke("What is six times seven?", config=config)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="invokes per variant per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--split",
        action="store_true",
        help="also time ours with costledger's background queue discarded instead of run "
        "(a diagnostic: the handler's own cost on the call path, without the worker beside "
        "it and the objects its queue keeps alive), and count and time GC collections per variant",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="the fake model's answer time (a sleep): 0 is the tight loop, the worst case "
        "for ours, whose background work then competes with the calls for the CPU; with a "
        "model that takes time, as any remote one does, that work fits in the waits",
    )
    args = parser.parse_args()

    model = FakeOpenAI(latency=args.latency_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_ledger = Ledger(f"sqlite:///{tmp}/bench.db")
        ours_sqlite = CostLedgerCallbackHandler(Tracker(sqlite_ledger, log="off"))
        variants: dict[str, Callable[[], Any]] = {
            "no handler": _invoker(model, None),
            "UsageMetadataCallbackHandler": _invoker(model, UsageMetadataCallbackHandler()),
            "CostLedgerCallbackHandler": _invoker(model, ours_sqlite),
        }
        if args.split:
            variants[_DISCARDED] = variants["CostLedgerCallbackHandler"]
        for call in variants.values():  # warm up: imports, price card, schema, writer thread
            for _ in range(300):
                call()
        sqlite_ledger.flush()
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        collections: dict[str, list[int]] = {name: [0, 0, 0] for name in variants}
        gc_seconds: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in variants}
        gc_clock = _GcClock()
        gc.callbacks.append(gc_clock)
        real_queue = _tracker._deferred
        for _ in range(args.rounds):
            for name, call in variants.items():
                if name == _DISCARDED:
                    _tracker._deferred = _Discard()  # type: ignore[assignment]
                before = [g["collections"] for g in gc.get_stats()]
                gc_clock.seconds = gc_seconds[name]
                w0, c0 = time.perf_counter(), time.thread_time()
                for _ in range(args.calls):
                    call()
                c1 = time.thread_time()
                gc_clock.seconds = [0.0, 0.0, 0.0]  # drains and flushes are not charged
                _tracker._deferred = real_queue
                after = [g["collections"] for g in gc.get_stats()]
                for gen in range(3):
                    collections[name][gen] += after[gen] - before[gen]
                # Wall time includes the background work (pricing, storage) the calls left,
                # so that it is charged to ours and does not leak into the next variant.
                drain_deferred()
                sqlite_ledger.flush()
                w1 = time.perf_counter()
                wall[name].append((w1 - w0) / args.calls * 1e6)
                cpu[name].append((c1 - c0) / args.calls * 1e6)
        gc.callbacks.remove(gc_clock)
        stored = sum(1 for _ in sqlite_ledger.events())
        sqlite_ledger.close()

    print(
        f"sync invoke: {args.calls} calls x {args.rounds} interleaved rounds,"
        f" model answer time {args.latency_ms:g} ms"
    )
    for clock, samples in (("wall", wall), ("caller-thread CPU", cpu)):
        median = {name: statistics.median(v) for name, v in samples.items()}
        best = {name: min(v) for name, v in samples.items()}
        print(
            f"\n{clock} time, us per call     median (added, / UMCH's)  |  best (added, / UMCH's)"
        )
        for name in samples:
            cells = []
            for table in (median, best):
                added = table[name] - table["no handler"]
                reference = table["UsageMetadataCallbackHandler"] - table["no handler"]
                ratio = f"{added / reference:5.2f}x" if reference > 0 else "  n/a"
                cells.append(f"{table[name]:7.1f} ({added:+6.1f}, {ratio})")
            print(f"  {name:34} {cells[0]}  |  {cells[1]}")
    # Paired by round: each round's added time against the same round's no-handler and
    # UMCH figures, so a load that comes and goes between rounds falls on both sides.
    print("\nper-round ratio of added caller-thread CPU to UMCH's (median, quartiles):")
    for name in cpu:
        if name in ("no handler", "UsageMetadataCallbackHandler"):
            continue
        ratios = []
        for i in range(args.rounds):
            reference = cpu["UsageMetadataCallbackHandler"][i] - cpu["no handler"][i]
            if reference > 0:
                ratios.append((cpu[name][i] - cpu["no handler"][i]) / reference)
        if len(ratios) >= 4:
            q1, q2, q3 = statistics.quantiles(ratios, n=4)
            print(f"  {name:34} {q2:5.2f}x  ({q1:.2f}x - {q3:.2f}x, {len(ratios)} rounds)")
    if args.split:
        print("\nGC collections per 1,000 calls (generation 0 / 1 / 2):")
        for name, counts in collections.items():
            per = " / ".join(f"{c * 1000 / (args.calls * args.rounds):.2f}" for c in counts)
            print(f"  {name:34} {per}")
        print("\nGC time on the caller's thread, us per call (generation 0 / 1 / 2):")
        for name, seconds in gc_seconds.items():
            per = " / ".join(f"{s * 1e6 / (args.calls * args.rounds):.2f}" for s in seconds)
            print(f"  {name:34} {per}")
    totals = ours_sqlite.totals
    if totals.unpriced or totals.requests != stored:
        raise SystemExit(f"ours lost or mispriced calls: {totals!r}, {stored} rows stored")
    print(f"\nours recorded and stored {stored} calls, ${totals.total_cost} in all")


if __name__ == "__main__":
    main()
