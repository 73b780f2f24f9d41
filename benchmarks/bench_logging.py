"""Speed of the usage log path: record building, redaction, emitting to each output, reading back.

Run: /work/venv/bin/python benchmarks/bench_logging.py
Prints microseconds per call (best of several rounds) and ratios against the cheapest peer
measured in the same run; the machine is shared and noisy, so compare ratios, not absolutes.
"""

from __future__ import annotations

import json
import os
import tempfile
import timeit
from collections.abc import Callable
from decimal import Decimal

import structlog

from costledger._cost import Cost
from costledger._events import UsageEvent
from costledger._logging import UsageLogger, _stdlib_dumps, dumps_record
from costledger._redact import _clean_texts, redact, redact_text
from costledger._schema import event_from_line, event_from_record, event_to_record, loads_line
from costledger._usage import Usage

EVENT = UsageEvent(
    model="gpt-4o-mini",
    response_model="gpt-4o-mini-2024-07-18",
    provider="openai",
    usage=Usage(input_tokens=1200, output_tokens=350, cache_read_tokens=1024, reasoning_tokens=64),
    cost=Cost(
        status="priced",
        total=Decimal("0.000390600"),
        input=Decimal("0.0000264"),
        cache_read=Decimal("0.0000768"),
        cache_write=Decimal("0"),
        output=Decimal("0.00021"),
        audio=Decimal("0"),
        provider="openai",
        model="gpt-4o-mini",
        source="genai-prices",
    ),
    source="langchain",
    latency_ms=812.25,
    request_id="chatcmpl-AbC123dEf456",
    run_id="6f1c9a52-0b55-4d3e-9c7a-2f5e8d3c1a90",
    user="user-42",
    team="search",
    project="assistant",
    feature="summarise",
    tags=("prod", "eu"),
    metadata={"tenant": "acme", "ticket": 1234, "flags": ["a", "b"]},
)


def best_us(stmt: Callable[[], object], number: int = 20_000, repeat: int = 5) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    record = event_to_record(EVENT)
    line = dumps_record(record)
    results: list[tuple[str, float]] = []

    def run(name: str, stmt: Callable[[], object], number: int = 20_000) -> None:
        results.append((name, best_us(stmt, number)))

    off = UsageLogger("off")
    run("emit to off", lambda: off.emit(EVENT), 200_000)
    auto = UsageLogger("auto")  # structlog not configured: does nothing
    run("emit to auto (structlog unconfigured)", lambda: auto.emit(EVENT), 200_000)
    run("event_to_record", lambda: event_to_record(EVENT))
    run("redact(record)", lambda: redact(record))
    clean = "gpt-4o-mini-2024-07-18 summarise ok"
    run("redact_text(clean 35 chars, cached)", lambda: redact_text(clean), 200_000)

    def first_sight() -> None:
        _clean_texts.clear()
        redact_text(clean)

    run("redact_text(clean 35 chars, first sight)", first_sight, 100_000)
    secret = "401 for key sk-proj-Q7fK2mZp9XvB4nL1cR8tY3wE6uH0jDsA5gT2kV9b (retry)"
    run("redact_text(text with a key)", lambda: redact_text(secret))

    def bare_loop() -> dict[str, object]:
        # Machine-speed peer: a plain Python loop over the record's 43 items.
        out = {}
        for key, value in record.items():
            out[key] = value
        return out

    run("peer: bare loop over the record", bare_loop)
    run("dumps_record (orjson if installed)", lambda: dumps_record(record))
    run("json.dumps record (stdlib)", lambda: _stdlib_dumps(record))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "usage.jsonl")
        with UsageLogger(path) as to_file:
            run("emit to file", lambda: to_file.emit(EVENT))
        with UsageLogger(os.devnull) as to_null:
            run("emit to /dev/null", lambda: to_null.emit(EVENT))
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(open(os.devnull, "w")),  # noqa: SIM115
        cache_logger_on_first_use=True,
    )
    to_app = UsageLogger("structlog")
    run("emit to structlog (app chain: JSONRenderer)", lambda: to_app.emit(EVENT))
    structlog.reset_defaults()
    run("loads_line (orjson if installed)", lambda: loads_line(line))
    run("json.loads line (stdlib)", lambda: json.loads(line))
    run("event_from_record", lambda: event_from_record(record))
    run("event_from_line", lambda: event_from_line(line))

    base = dict(results)["event_to_record"]
    print(f"{'operation':44} {'us/call':>9} {'x event_to_record':>18}")
    for name, us in results:
        print(f"{name:44} {us:9.2f} {us / base:18.2f}")


if __name__ == "__main__":
    main()
