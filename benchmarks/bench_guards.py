"""Cost of a guard per call: check + reserve before, settle after, on each guard store.

Run: python benchmarks/bench_guards.py
     (Redis and PostgreSQL from COSTLEDGER_TEST_REDIS_URL / COSTLEDGER_TEST_POSTGRES_URL,
     skipped when unset)
Targets (issue 4): memory <= 10 us per call; Redis <= 2 round trips per call.

The machine is shared and noisy, so every figure is measured in rounds alternating
with a peer on the same backend, and printed as best / median of the rounds with the
median ratio of paired rounds: the memory store against one ``limits`` moving-window
hit, Redis against one PING, PostgreSQL and SQLite against one ``SELECT 1``.
Round trips are counted on the client (redis-py connection sends; PostgreSQL function
calls and SQL statements executed), not guessed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from costledger import Cost, Tracker, Usage, UsageEvent
from costledger._attribution import Attribution
from costledger._guards import Budget, RateLimit, TokenRateLimit, open_store
from costledger._pricing import Pricer
from costledger._tracker import Call

ROUNDS = 7


class NullLedger:
    """Takes events and keeps nothing: the benchmark measures guards, not storage."""

    def record(self, event: UsageEvent) -> None:
        pass


def timed_us(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def paired(ours: Callable[[], Any], peer: Callable[[], Any], n: int) -> tuple[list[float], ...]:
    """Alternate rounds of ``ours`` and ``peer``; per-round microseconds of each."""
    a, b = [], []
    for _ in range(ROUNDS):
        a.append(timed_us(ours, n))
        b.append(timed_us(peer, n))
    return a, b


def show(name: str, ours: list[float], peer: list[float], peer_name: str) -> None:
    ratio = statistics.median(x / y for x, y in zip(ours, peer, strict=True))
    print(
        f"  {name:26s} best {min(ours):9.1f} us  median {statistics.median(ours):9.1f} us"
        f"  = {ratio:5.2f} x {peer_name} (best {min(peer):.1f} us)"
    )


def make_call(**kw: Any) -> Call:
    return Call(
        id=str(uuid.uuid4()),
        source="api",
        model="gpt-4o-mini",
        provider="openai",
        attribution=Attribution(user="u-1", team="search"),
        started_at=datetime.now(timezone.utc),
        started=time.perf_counter(),
        **kw,
    )


EVENT = UsageEvent(
    model="gpt-4o-mini",
    usage=Usage(input_tokens=1200, output_tokens=300),
    cost=Cost(status="priced", total=Decimal("0.00036")),
)
PROMPT = "Summarise the following report. " * 60  # 1,980 characters


def cycles(tracker: Tracker) -> dict[str, Callable[[], None]]:
    """check + reserve + settle of each guard, as the Tracker runs them."""
    tag = uuid.uuid4().hex[:8]
    budget = Budget("1000000 USD", "month", per="user", name=f"bench-{tag}")
    tokens = TokenRateLimit("1000000000/minute", name=f"bench-tpm-{tag}")
    requests = RateLimit("1000000000/minute", name=f"bench-rpm-{tag}")
    explicit = make_call(estimate=Decimal("0.001"))

    def run(guard: Any) -> Callable[[], None]:
        def cycle() -> None:
            guard.settle(guard.reserve(explicit, tracker), EVENT)

        return cycle

    def with_prompt() -> None:
        # A new call each time: the estimator caches per call, and counting is the point.
        call = make_call(prompt_text=PROMPT, max_output_tokens=500)
        budget.settle(budget.reserve(call, tracker), EVENT)

    out = {
        "budget (estimate=)": run(budget),
        "budget (tiktoken+pricer)": with_prompt,
        "token rate limit": run(tokens),
        "request rate limit": run(requests),
    }
    for cycle in out.values():
        cycle()  # first use: tables, scripts, the ledger seed, the tokenizer
    return out


def bench(label: str, url: str, peer: Callable[[], Any], peer_name: str, n: int) -> None:
    tracker = Tracker(NullLedger(), Pricer(), guard_store=url, log="off")
    print(f"\n[{label}] {open_store(url).url}")
    for name, cycle in cycles(tracker).items():
        ours, theirs = paired(cycle, peer, n)
        show(name, ours, theirs, peer_name)


def bench_memory() -> None:
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter

    limiter = MovingWindowRateLimiter(MemoryStorage())
    item = parse("1000000000/minute")
    bench("memory", "memory://", lambda: limiter.hit(item, "peer"), "limits hit", 5_000)

    # The whole Tracker path with and without a budget, to show the guard's share.
    pricer = Pricer()
    usage = Usage(input_tokens=1200, output_tokens=300)

    def path(tracker: Tracker) -> Callable[[], None]:
        def run() -> None:
            call = tracker.start(
                source="api",
                model="gpt-4o-mini",
                estimate=Decimal("0.001"),
                attribution={"user": "u-1"},
            )
            tracker.finish(call, usage=usage)

        return run

    plain = path(Tracker(NullLedger(), pricer, log="off"))
    guarded = path(
        Tracker(NullLedger(), pricer, [Budget("1000000 USD", "month", per="user")], log="off")
    )
    plain()
    guarded()
    with_budget, without = paired(guarded, plain, 3_000)
    added = [x - y for x, y in zip(with_budget, without, strict=True)]
    print(
        f"  Tracker start+finish       median {statistics.median(without):.1f} us without"
        f" guards, {statistics.median(with_budget):.1f} us with a per-user budget"
        f" (added: median {statistics.median(added):.1f} us)"
    )


def bench_redis(url: str) -> None:
    import redis

    url = url + ("&" if "?" in url else "?") + f"prefix=bench:{uuid.uuid4().hex[:8]}"
    sent = [0]

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent[0] += 1
            super().send_packed_command(command, check_health)

    store = open_store(url)
    # Every request the client sends is counted (a pipeline would be one send).
    store.client.connection_pool.connection_class = CountingConnection  # type: ignore[attr-defined]
    bench("redis", url, store.client.ping, "PING", 300)  # type: ignore[attr-defined]
    tracker = Tracker(NullLedger(), Pricer(), guard_store=url, log="off")
    for name, cycle in cycles(tracker).items():
        before = sent[0]
        for _ in range(100):
            cycle()
        trips = (sent[0] - before) / 100
        print(f"  {name:26s} {trips:.2f} round trips per call")
    store.close()


def bench_sql(label: str, url: str) -> None:
    from sqlalchemy import text

    from costledger._guards import _sql

    store: Any = open_store(url)
    engine = store.engine

    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).one()

    bench(label, url, select_one, "SELECT 1", 100)
    statements = [0]
    real_execute = _sql._Raw.execute

    def counting_execute(self: Any, statement: str, params: Any) -> Any:
        statements[0] += 1
        return real_execute(self, statement, params)

    _sql._Raw.execute = counting_execute  # type: ignore[method-assign]
    calls = [0]
    if store._is_pg:
        real_call = store._call

        def counting_call(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return real_call(*args, **kwargs)

        store._call = counting_call
    tracker = Tracker(NullLedger(), Pricer(), guard_store=url, log="off")
    for name, cycle in cycles(tracker).items():
        before, before_calls = statements[0], calls[0]
        for _ in range(50):
            cycle()
        per = (statements[0] - before) / 50
        fn = (calls[0] - before_calls) / 50
        if store._is_pg:
            print(
                f"  {name:26s} {fn:.2f} function calls (one round trip each)"
                f" + {per:.2f} other statements per call"
            )
        else:
            print(
                f"  {name:26s} {per:.2f} statements per call (+ BEGIN IMMEDIATE and"
                " COMMIT per transaction, in-process)"
            )
    _sql._Raw.execute = real_execute  # type: ignore[method-assign]
    if label == "postgresql":
        store.drop()
    store.close()


def main() -> None:
    bench_memory()
    redis_url = os.environ.get("COSTLEDGER_TEST_REDIS_URL")
    if redis_url:
        bench_redis(redis_url)
    else:
        print("\n[redis] skipped: COSTLEDGER_TEST_REDIS_URL is not set")
    pg_url = os.environ.get("COSTLEDGER_TEST_POSTGRES_URL")
    if pg_url:
        prefix = f"bench_{uuid.uuid4().hex[:8]}"
        bench_sql("postgresql", pg_url + ("&" if "?" in pg_url else "?") + f"prefix={prefix}")
    else:
        print("\n[postgresql] skipped: COSTLEDGER_TEST_POSTGRES_URL is not set")
    with tempfile.TemporaryDirectory() as tmp:
        bench_sql("sqlite", f"sqlite:///{tmp}/guards.db")


if __name__ == "__main__":
    main()
