"""Ingestion throughput: lines/s of ``costledger.ingest`` into SQLite (and PostgreSQL).

    python benchmarks/bench_ingest.py [--lines 500000] [--mix costledger=70,litellm=20,response=10]
                                      [--postgres] [--rounds 1]

Generates a mixed JSONL file (costledger usage records with varied attribution and
models, LiteLLM StandardLoggingPayloads in the shape LiteLLM 1.x logs them, raw
OpenAI / Anthropic responses), then ingests it into a fresh SQLite ledger with each
writer (``COSTLEDGER_INGEST_WRITER=process`` and ``=thread``), again (every line a
duplicate), the same lines shuffled out of time order, and each format on its own
(the default writer). CPU time includes the writer process's. Printed next to each
figure is the peer on the same file in the same run: ``orjson.loads`` of every line and
nothing else, the floor of any JSON-lines reader in Python, so a busy machine can be
told from a slow ingester. Target: 100,000 lines/s into SQLite.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from costledger import Usage, UsageEvent
from costledger._ingest import ingest
from costledger._ingest._run import WRITER_PROCESS_ENV
from costledger._pricing import Pricer
from costledger._schema import event_to_record

UTC = timezone.utc
T0 = datetime(2025, 6, 1, tzinfo=UTC)
MODELS = [
    ("gpt-4o-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-3-5-haiku-20241022", "anthropic"),
    ("gemini-2.5-flash", "google"),
]
USERS = [f"user-{i}" for i in range(200)]
TEAMS = ["search", "chat", "support", "growth"]
FEATURES = ["answer", "summarize", "classify", "extract", None]


def costledger_lines(n: int, rng: random.Random, pricer: Pricer) -> list[bytes]:
    out = []
    for i in range(n):
        model, provider = MODELS[i % len(MODELS)]
        prompt = rng.randint(50, 20_000)
        cached = rng.choice((0, 0, prompt // 2))
        usage = Usage(
            input_tokens=prompt,
            output_tokens=rng.randint(1, 2_000),
            cache_read_tokens=cached,
        )
        at = T0 + timedelta(seconds=i * 3)
        event = UsageEvent(
            model=model,
            usage=usage,
            cost=pricer.price(model, usage, provider=provider, at=at),
            timestamp=at,
            provider=provider,
            response_model=model,
            latency_ms=round(rng.uniform(80, 9000), 3),
            request_id=f"req-{i}",
            user=USERS[i % len(USERS)],
            team=TEAMS[i % len(TEAMS)],
            project="assistant",
            feature=FEATURES[i % len(FEATURES)],
            tags=("prod",) if i % 3 == 0 else (),
            source="decorator",
        )
        record = event_to_record(event)
        record["level"] = "info"  # what an application's structlog chain adds
        record["timestamp"] = record["costledger.timestamp"]
        out.append(orjson.dumps(record))
    return out


def _slo_template() -> dict[str, Any]:
    none_meta = dict.fromkeys(
        [
            "user_api_key_hash",
            "user_api_key_alias",
            "user_api_key_spend",
            "user_api_key_max_budget",
            "user_api_key_budget_reset_at",
            "user_api_key_user_spend",
            "user_api_key_user_max_budget",
            "user_api_key_team_spend",
            "user_api_key_team_max_budget",
            "user_api_key_org_id",
            "user_api_key_org_alias",
            "user_api_key_project_id",
            "user_api_key_project_alias",
            "user_api_key_user_email",
            "user_api_key_team_alias",
            "user_api_key_request_route",
            "requester_ip_address",
            "user_agent",
            "prompt_management_metadata",
            "mcp_tool_call_metadata",
            "vector_store_request_metadata",
            "routing_decision",
            "requester_custom_headers",
            "cold_storage_object_key",
            "user_api_key_auth_metadata",
            "team_alias",
            "team_id",
            "kubernetes_pod_routing",
            "used_client_oauth_token",
        ]
    )
    return {
        "trace_id": None,
        "session_id": "",
        "call_type": "acompletion",
        "cache_hit": None,
        "stream": None,
        "status": "success",
        "status_fields": {"llm_api_status": "success", "guardrail_status": "not_run"},
        "custom_llm_provider": "openai",
        "saved_cache_cost": 0.0,
        "metadata": {**none_meta, "applied_guardrails": [], "spend_logs_metadata": None},
        "cache_key": None,
        "cost_finalized": False,
        "cost_breakdown": None,
        "request_tags": ["prod"],
        "request_model_access_groups": [],
        "end_user": None,
        "api_base": "https://api.openai.com",
        "model_group": "gpt-4o-mini",
        "model_id": "4d1a",
        "requester_ip_address": None,
        "user_agent": None,
        "messages": [{"role": "user", "content": "Summarize the ticket in one line."}],
        "model_parameters": {"temperature": 0.2},
        "hidden_params": {"model_id": "4d1a", "api_base": "https://api.openai.com"},
        "error_str": None,
        "error_information": {"error_code": "", "error_class": "", "llm_provider": ""},
        "response_cost_failure_debug_info": None,
        "guardrail_information": None,
        "standard_built_in_tools_params": {"web_search_options": None, "file_search": None},
    }


def litellm_lines(n: int, rng: random.Random) -> list[bytes]:
    template = _slo_template()
    out = []
    for i in range(n):
        prompt, completion = rng.randint(50, 8000), rng.randint(1, 1500)
        start = T0.timestamp() + i * 2 + 0.25
        usage = {
            "completion_tokens": completion,
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens_details": None,
            "prompt_tokens_details": {"cached_tokens": prompt // 4 if i % 2 else 0},
        }
        call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        payload = {
            **template,
            "id": f"chatcmpl-{i}",
            "litellm_call_id": call_id,
            "model": "gpt-4o-mini",
            "startTime": start,
            "endTime": start + 0.8,
            "completionStartTime": start + 0.3,
            "response_time": 0.8,
            "response_cost": 0.0001,
            "total_tokens": prompt + completion,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "metadata": {
                **template["metadata"],
                "user_api_key_user_id": USERS[i % len(USERS)],
                "user_api_key_team_id": TEAMS[i % len(TEAMS)],
                "user_api_key_end_user_id": None,
                "requester_metadata": {"feature": FEATURES[i % 4]},
                "usage_object": usage,
            },
            "response": {
                "id": f"chatcmpl-{i}",
                "created": int(start),
                "model": "gpt-4o-mini-2024-07-18",
                "object": "chat.completion",
                "choices": [
                    {
                        "finish_reason": "stop",
                        "index": 0,
                        "message": {"content": "Customer cannot log in.", "role": "assistant"},
                    }
                ],
                "usage": usage,
            },
        }
        out.append(orjson.dumps(payload))
    return out


def response_lines(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        created = int(T0.timestamp()) + i
        if i % 2:
            body: dict[str, Any] = {
                "id": f"msg_{i:012d}",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [{"type": "text", "text": "Done."}],
                "stop_reason": "end_turn",
                "usage": {
                    "input_tokens": rng.randint(10, 5000),
                    "output_tokens": rng.randint(1, 900),
                    "cache_read_input_tokens": rng.choice((0, 2048)),
                    "cache_creation_input_tokens": 0,
                },
            }
        else:
            prompt = rng.randint(10, 9000)
            body = {
                "id": f"chatcmpl-raw-{i}",
                "object": "chat.completion",
                "created": created,
                "model": "gpt-4.1-2025-04-14",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "42"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": 7,
                    "total_tokens": prompt + 7,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                },
            }
        out.append(orjson.dumps(body))
    return out


def write(path: Path, lines: list[bytes]) -> int:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    return len(data)


class Timing:
    """Wall seconds and CPU seconds (every thread of this process) of the best round."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall = wall
        self.cpu = cpu


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the writer process)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], Any], rounds: int) -> tuple[Timing, Any]:
    best, result = Timing(float("inf"), float("inf")), None
    for _ in range(rounds):
        start, cpu = time.perf_counter(), _cpu()
        result = fn()
        wall = time.perf_counter() - start
        if wall < best.wall:
            best = Timing(wall, _cpu() - cpu)
    return best, result


def orjson_floor(path: Path) -> float:
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            loads(line)
    return 0.0


def sqlite_floor(path: Path, pricer: Pricer, work: Path) -> Timing:
    """Seconds for plain ``sqlite3.executemany`` of the file's rows (converted beforehand,
    not timed) into an empty ledger schema: what the database alone costs."""
    from costledger._ingest._convert import Converter
    from costledger._ledger import Ledger

    converter = Converter(pricer)
    with open(path, "rb") as f:
        rows = [converter.convert(orjson.loads(line), line, n) for n, line in enumerate(f, 1)]
    db = work / f"floor-{uuid.uuid4().hex[:8]}.db"
    Ledger(f"sqlite:///{db}", sync=True).summary()  # the schema, by the ledger's migrations
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    sql = "INSERT INTO costledger_events VALUES (" + ",".join("?" * len(rows[0])) + ")"
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(rows), 20_000):
        con.executemany(sql, rows[i : i + 20_000])
        con.commit()
    timing = Timing(time.perf_counter() - start, time.process_time() - cpu)
    con.close()
    return timing


def bench_file(
    label: str,
    path: Path,
    n: int,
    url_for: Callable[[], str],
    rounds: int,
    pricer: Pricer,
    writers: tuple[str, ...] = ("auto",),
) -> None:
    size = path.stat().st_size
    floor, _ = timed(lambda: orjson_floor(path), rounds)
    db_floor = sqlite_floor(path, pricer, path.parent) if "sqlite" in url_for.__name__ else None
    print(f"{label}: {n:,} lines, {size / 1e6:.1f} MB")
    for writer in writers:
        if writer == "auto":
            os.environ.pop(WRITER_PROCESS_ENV, None)
        else:
            os.environ[WRITER_PROCESS_ENV] = writer
        try:
            _bench_ingest(path, n, url_for, rounds, pricer, writer, floor)
        finally:
            os.environ.pop(WRITER_PROCESS_ENV, None)
    if db_floor is not None:
        print(
            f"  peer: sqlite3 insert    {_rate(n, db_floor)}  (plain executemany of "
            "pre-converted rows: no parsing, no conflict check, no rollups)"
        )


def _rate(n: int, t: Timing) -> str:
    return f"{n / t.wall:>9,.0f} /s wall  {n / t.cpu:>9,.0f} per CPU-second"


def _bench_ingest(
    path: Path,
    n: int,
    url_for: Callable[[], str],
    rounds: int,
    pricer: Pricer,
    writer: str,
    floor: Timing,
) -> None:
    size = path.stat().st_size
    state = Path(tempfile.mkdtemp(prefix="bench-ingest-state-"))

    def fresh() -> Any:
        return ingest(path, ledger=url_for(), pricer=pricer, resume=False, checkpoint_dir=state)

    took, result = timed(fresh, rounds)
    assert result.accepted == n, result
    assert result.rejected == 0, result
    last_url = url_for.last  # type: ignore[attr-defined]
    again, result2 = timed(
        lambda: ingest(path, ledger=last_url, pricer=pricer, resume=False, checkpoint_dir=state),
        rounds,
    )
    assert result2.accepted == 0, result2
    assert result2.duplicates == n, result2
    shutil.rmtree(state, ignore_errors=True)

    mode = "" if writer == "auto" else f" ({WRITER_PROCESS_ENV}={writer})"
    print(
        f"  ingest{mode}\n"
        f"    fresh ledger          {_rate(n, took)}  ({size / took.wall / 1e6:.1f} MB/s; "
        f"{took.cpu / n * 1e6:.1f} us CPU a line)\n"
        f"    again (duplicates)    {_rate(n, again)}\n"
        f"    peer: orjson.loads    {_rate(n, floor)}  (ingest/peer: wall "
        f"{floor.wall / took.wall:.3f}, CPU {floor.cpu / took.cpu:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--mix", default="costledger=70,litellm=20,response=10")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--postgres", action="store_true", help="also PostgreSQL (scratch db)")
    parser.add_argument("--per-format", type=int, default=100_000, help="lines per format run")
    args = parser.parse_args()

    weights = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    total_weight = sum(weights.values())
    counts = {k: args.lines * w // total_weight for k, w in weights.items()}
    rng = random.Random(7)
    pricer = Pricer()
    pricer.preload(litellm=True)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    print(f"generating {sum(counts.values()):,} lines in {work} ...", flush=True)
    start = time.perf_counter()
    per_format = {
        "costledger": costledger_lines(
            max(counts.get("costledger", 0), args.per_format), rng, pricer
        ),
        "litellm": litellm_lines(max(counts.get("litellm", 0), args.per_format), rng),
        "response": response_lines(max(counts.get("response", 0), args.per_format), rng),
    }
    # interleaved, each format in its own time order, as services' logs merged by time are
    streams = {k: iter(per_format[k][:n]) for k, n in counts.items()}
    pattern = [k for k, n in counts.items() for _ in range(weights[k])]
    mixed: list[bytes] = []
    while len(mixed) < sum(counts.values()):
        for k in pattern:
            line = next(streams[k], None)
            if line is not None:
                mixed.append(line)
    write(work / "mixed.jsonl", mixed)
    # the same lines in no time order: logs of several writers interleaved at random
    shuffled = list(mixed)
    random.Random(11).shuffle(shuffled)
    write(work / "shuffled.jsonl", shuffled)
    for k, lines in per_format.items() if args.per_format > 0 else ():
        write(work / f"{k}.jsonl", lines[: args.per_format])
    print(f"generated in {time.perf_counter() - start:.1f} s; cpus {os.cpu_count()}", flush=True)

    def sqlite_url() -> str:
        db = work / f"ledger-{uuid.uuid4().hex[:8]}.db"
        sqlite_url.last = f"sqlite:///{db}"  # type: ignore[attr-defined]
        return sqlite_url.last  # type: ignore[attr-defined,no-any-return]

    # imports (SQLAlchemy, Alembic) and compiled price cards before any clock starts
    warm = work / "warm.jsonl"
    write(warm, mixed[:200])
    ingest(warm, ledger=sqlite_url(), pricer=pricer, resume=False, checkpoint_dir=work)
    print("SQLite (fresh ledger file per run, WAL, synchronous=NORMAL):")
    bench_file(
        "mixed " + args.mix,
        work / "mixed.jsonl",
        len(mixed),
        sqlite_url,
        args.rounds,
        pricer,
        writers=("process", "thread"),
    )
    bench_file(
        "the same lines in no time order",
        work / "shuffled.jsonl",
        len(shuffled),
        sqlite_url,
        args.rounds,
        pricer,
    )
    for k in per_format if args.per_format > 0 else ():
        bench_file(
            f"{k} only", work / f"{k}.jsonl", args.per_format, sqlite_url, args.rounds, pricer
        )

    if args.postgres:
        bench_postgres(work, len(mixed), args.rounds, pricer)
    shutil.rmtree(work, ignore_errors=True)


def bench_postgres(work: Path, n: int, rounds: int, pricer: Pricer) -> None:
    import sqlalchemy as sa

    from costledger._ledger._engine import resolve_url

    base = os.environ.get("COSTLEDGER_BENCH_POSTGRES_URL") or os.environ.get(
        "COSTLEDGER_TEST_POSTGRES_URL"
    )
    if not base:
        print("PostgreSQL: skipped (set COSTLEDGER_TEST_POSTGRES_URL)")
        return
    admin = sa.create_engine(resolve_url(base), isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def pg_url() -> str:
        name = f"costledger_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = resolve_url(base).set(database=name).render_as_string(hide_password=False)
        pg_url.last = url  # type: ignore[attr-defined]
        return url

    print("PostgreSQL (fresh database per run):")
    try:
        bench_file("mixed", work / "mixed.jsonl", n, pg_url, rounds, pricer)
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
