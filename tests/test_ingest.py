"""``costledger.ingest`` on real SQLite files and a real PostgreSQL server: each format to
exact values, idempotency, the hostile file, .gz and streams, round trip from UsageLogger."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tracemalloc
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import orjson

from costledger import Usage, UsageEvent
from costledger._ingest import ingest, response_event_id
from costledger._ledger import Ledger
from costledger._logging import UsageLogger
from costledger._pricing import Pricer

from .ingest_support import (
    LITELLM_PAYLOADS,
    UTC,
    count_rows,
    make_event,
    own_line,
    pricer,
    rich_events,
    write_lines,
)

__all__ = ["pricer"]  # fixtures

NOW = datetime(2025, 7, 1, 8, 30, tzinfo=UTC)


def _events(url: str) -> dict[str, UsageEvent]:
    with Ledger(url, sync=True) as ledger:
        return {s.id: s.to_event() for s in ledger.events()}


# -- costledger's own lines ---------------------------------------------------------------------


def test_usage_logger_lines_round_trip_exactly(url: str, tmp_path: Path, pricer: Pricer) -> None:
    originals = rich_events()
    log = tmp_path / "usage.log"
    with UsageLogger(log) as logger:
        for event in originals:
            logger.emit(event)

    result = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")

    assert (result.lines, result.accepted, result.duplicates, result.rejected) == (5, 5, 0, 0)
    assert result.inputs[0].formats == {"costledger": 5}
    stored = _events(url)
    assert stored == {e.id: e for e in originals}
    assert stored["evt-000002"].cost.output == Decimal("99999999999999999999.999999999999999999")
    assert stored["evt-000002"].metadata["big"] == 2**70
    # cost of what was added, per currency, exact; the unknown model counted, not priced
    assert result.costs == {"USD": Decimal("0.000195000"), "EUR": Decimal("0.000000037500")}
    assert result.unpriced == 1
    assert result.inputs[0].unpriced_models == {"my-private-model": 1}


def test_structlog_extras_and_prefixed_lines_are_read(url: str, tmp_path: Path) -> None:
    """Keys an application's chain adds are ignored; a shipper's prefix before the JSON too."""
    a, b = make_event(1), make_event(2)
    lines = [
        own_line(a, level="info", logger="costledger.usage", timestamp="2025-06-01T12:00:01Z"),
        b"2025-06-01T12:00:02.123Z stdout F " + own_line(b),
    ]
    result = ingest(write_lines(tmp_path / "app.log", lines), ledger=url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (2, 0)
    assert _events(url) == {"evt-000001": a, "evt-000002": b}


# -- LiteLLM payloads ---------------------------------------------------------------------------


def test_litellm_payloads_exact(url: str, tmp_path: Path, pricer: Pricer) -> None:
    """Payloads LiteLLM 1.110 logged for a completion, a failed call and an embedding."""
    result = ingest(LITELLM_PAYLOADS, ledger=url, pricer=pricer, checkpoint_dir=tmp_path)
    assert (result.lines, result.accepted, result.rejected) == (3, 3, 0)
    assert result.inputs[0].formats == {"litellm": 3}
    events = _events(url)

    ok = events["731d1f0a-c5d8-4450-9e51-3c5cf7dbe171"]
    assert ok.source == "litellm"
    assert (ok.model, ok.provider, ok.response_model) == ("gpt-4o-mini", "openai", "gpt-4o-mini")
    assert ok.request_id == "chatcmpl-feed089b-c0c5-4cf2-9c74-b054a6dc5d44"
    assert ok.usage == Usage(input_tokens=10, output_tokens=20)
    assert ok.cost.total == Decimal("0.0000135")
    assert (ok.cost.input, ok.cost.output) == (Decimal("0.0000015"), Decimal("0.000012"))
    assert ok.reported_cost == Decimal("0.0000135")
    assert ok.timestamp == datetime.fromtimestamp(1795808171.622335, UTC)
    assert ok.latency_ms == 165.377
    assert (ok.user, ok.feature) == ("enduser1", "x")  # OpenAI user; spend_logs_metadata
    assert ok.status == "ok"
    assert dict(ok.metadata) == {}

    # a failed attempt: its own id (the call's is left for a retry or fallback that answers)
    failed = events["db315d40-af02-412b-89af-051adffb0010:failed:1795808171901328"]
    assert failed.metadata["litellm_call_id"] == "db315d40-af02-412b-89af-051adffb0010"
    assert (failed.status, failed.error_type) == ("error", "InternalServerError")
    assert failed.cost.status == "not_priced"
    assert failed.cost.total is None
    assert failed.usage == Usage()
    assert failed.reported_cost is None  # LiteLLM's 0.0 placeholder is not a price
    assert failed.metadata["error_message"].endswith("litellm.MockException: boom")

    embedding = events["ac95a92f-0211-4625-8c2a-3586ab4ace4f"]
    assert embedding.usage == Usage(input_tokens=10)
    assert embedding.cost.total == Decimal("0.0000002")
    assert dict(embedding.metadata) == {"litellm_call_type": "embedding"}
    assert embedding.request_id is None

    assert result.costs == {"USD": Decimal("0.0000137")}


def test_litellm_proxy_attribution_and_wrapped_payload(url: str, tmp_path: Path) -> None:
    base = json.loads(LITELLM_PAYLOADS.read_text().splitlines()[0])
    proxy = {
        **base,
        "litellm_call_id": "proxy-call-1",
        "request_tags": ["prod", "eu"],
        "metadata": {
            **base["metadata"],
            "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
            "user_api_key_user_id": "key-owner",
            "user_api_key_team_id": "team-ml",
            "requester_metadata": {"feature": "chat", "project": "helpdesk", "ticket": 7},
            "spend_logs_metadata": None,
        },
        "model_parameters": {},
    }
    wrapped = {"standard_logging_object": {**base, "litellm_call_id": "wrapped-1"}}
    lines = [orjson.dumps(proxy), orjson.dumps(wrapped)]
    result = ingest(write_lines(tmp_path / "p.jsonl", lines), ledger=url, checkpoint_dir=tmp_path)
    assert result.accepted == 2
    e = _events(url)["proxy-call-1"]
    assert (e.user, e.team, e.project, e.feature) == ("key-owner", "team-ml", "helpdesk", "chat")
    assert e.tags == ("prod", "eu")
    assert dict(e.metadata) == {"ticket": 7}
    assert _events(url)["wrapped-1"].cost.total == Decimal("0.0000135")


# -- raw responses ------------------------------------------------------------------------------

CHAT = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1748779200,  # 2025-06-01T12:00:00Z
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "total_tokens": 1100,
        "prompt_tokens_details": {"cached_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}
ANTHROPIC = {
    "id": "msg_01XYZ",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "hello"}],
    "usage": {
        "input_tokens": 500,
        "output_tokens": 100,
        "cache_read_input_tokens": 200,
        "cache_creation_input_tokens": 300,
    },
}
RESPONSES = {
    "id": "resp_42",
    "object": "response",
    "created_at": 1748779260,
    "model": "gpt-4.1-2025-04-14",
    "output": [],
    "usage": {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 100,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1100,
    },
}
EMBEDDING = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 10, "total_tokens": 10},
}


def test_raw_responses_exact(url: str, tmp_path: Path, pricer: Pricer) -> None:
    lines = [orjson.dumps(r) for r in (CHAT, ANTHROPIC, RESPONSES, EMBEDDING, EMBEDDING)]
    path = write_lines(tmp_path / "responses.jsonl", lines)
    result = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=tmp_path, now=NOW)
    # two identical embeddings without an id on different lines: two calls
    assert (result.lines, result.accepted, result.duplicates) == (5, 5, 0)
    events = _events(url)

    chat = events[response_event_id("chatcmpl-abc123", b"", 0)]
    assert chat.source == "ingest"
    assert (chat.model, chat.response_model) == ("gpt-4o-mini-2024-07-18",) * 2
    assert chat.request_id == "chatcmpl-abc123"
    assert chat.usage == Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=200)
    assert chat.timestamp == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert chat.cost.total == Decimal("0.000195")  # 800 x 0.15 + 200 x 0.075 + 100 x 0.6 / 1e6

    claude = events[response_event_id("msg_01XYZ", b"", 0)]
    assert claude.provider == "anthropic"
    assert claude.usage == Usage(
        input_tokens=1000, output_tokens=100, cache_read_tokens=200, cache_write_tokens=300
    )
    assert claude.timestamp == NOW  # an Anthropic message carries no time
    assert claude.cost.total == Decimal("0.004185")  # 500x3 + 200x0.3 + 300x3.75 + 100x15

    responses = events[response_event_id("resp_42", b"", 0)]
    assert responses.cost.total == Decimal("0.0025")  # 800x2 + 200x0.5 + 100x8 / 1e6
    assert responses.timestamp == datetime(2025, 6, 1, 12, 1, tzinfo=UTC)

    # no id: the line's bytes and number, and the input's first bytes up to the line
    data = path.read_bytes()
    embedding_ids = {
        response_event_id(None, lines[n - 1], n, _head_key(data[: len(b"\n".join(lines[:n]))]))
        for n in (4, 5)
    }
    assert len(embedding_ids) == 2
    for event_id in embedding_ids:
        assert events[event_id].cost.total == Decimal("0.0000002")
    assert result.costs == {"USD": Decimal("0.0068804")}


def _head_key(head: bytes) -> str:
    return hashlib.sha256(head[:4096]).hexdigest()


# -- idempotency --------------------------------------------------------------------------------


def _mixed_file(tmp_path: Path) -> Path:
    lines = [own_line(make_event(n)) for n in range(40)]
    lines += LITELLM_PAYLOADS.read_bytes().splitlines()
    lines += [orjson.dumps(CHAT), orjson.dumps(ANTHROPIC)]
    return write_lines(tmp_path / "mixed.jsonl", lines)


def test_ingesting_twice_adds_nothing(url: str, tmp_path: Path) -> None:
    path = _mixed_file(tmp_path)
    first = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ck", batch_lines=7, now=NOW)
    assert (first.lines, first.accepted, first.duplicates, first.rejected) == (45, 45, 0, 0)
    with Ledger(url, sync=True) as ledger:
        summary_before = ledger.summary(by=["model"])

    # from the start again (no checkpoint): every line is a duplicate, nothing is added
    again = ingest(path, ledger=url, resume=False, checkpoint_dir=tmp_path / "ck", now=NOW)
    assert (again.lines, again.accepted, again.duplicates) == (45, 0, 45)
    assert again.costs == {}
    # resuming from the checkpoint: nothing new to read, and that is a success
    resumed = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ck", now=NOW)
    assert (resumed.lines, resumed.inputs[0].resumed_at_line) == (0, 46)
    assert resumed.ok

    assert count_rows(url) == 45
    with Ledger(url, sync=True) as ledger:
        assert ledger.summary(by=["model"]) == summary_before  # rollups not counted twice


def test_duplicate_ids_within_a_file_are_duplicates_not_errors(url: str, tmp_path: Path) -> None:
    a = make_event(1)
    changed = make_event(1, user="someone-else")  # same id: the first one stays
    lines = [own_line(a), own_line(a), own_line(changed), own_line(make_event(2))]
    result = ingest(
        write_lines(tmp_path / "d.jsonl", lines), ledger=url, checkpoint_dir=tmp_path, batch_lines=2
    )
    assert (result.accepted, result.duplicates, result.rejected) == (2, 2, 0)
    assert _events(url)["evt-000001"] == a


# -- the hostile file ---------------------------------------------------------------------------


def _hostile_lines() -> tuple[list[bytes], int, int, int, dict[int, str]]:
    """Lines and the exact outcome: accepted, duplicates, rejected, and reasons by line."""
    good = [make_event(n) for n in range(1, 7)]
    lines: list[bytes] = []
    reasons: dict[int, str] = {}

    def add(line: bytes, reason: str | None = None) -> None:
        lines.append(line)
        if reason is not None:
            reasons[len(lines)] = reason

    add(own_line(good[0]))
    add(own_line(good[1])[:57], "not valid JSON")  # truncated
    add(b'{"padding": "' + b"x" * 10_000_000 + b'"}', "over the 1048576-byte limit")
    add(b"[" * 100_000 + b"]" * 100_000, "nested too deeply")
    add(b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested too deeply")
    add(own_line(good[2]))
    bad_tokens = {**json.loads(own_line(good[3])), "gen_ai.usage.input_tokens": "1000"}
    add(orjson.dumps(bad_tokens), "'gen_ai.usage.input_tokens' must be a whole number")
    float_money = {**json.loads(own_line(good[3])), "costledger.cost.total": 0.000195}
    add(orjson.dumps(float_money), "'costledger.cost.total' must be a decimal string")
    naive_time = {**json.loads(own_line(good[3])), "costledger.timestamp": "2025-06-01T12:00:00"}
    add(orjson.dumps(naive_time), "'costledger.timestamp' must be an ISO-8601 timestamp")
    add(own_line(good[1]))  # the truncated one, whole this time
    add(own_line(good[0]))  # a duplicate id
    add(own_line(good[4]).replace(b"user-", b"us\xff\xfeer-"), "not valid UTF-8")
    add(b"")
    add(b"   \t")
    add(b"42", "must hold a JSON object")
    add(b'{"hello": "world"}', "not a costledger usage record")
    add(orjson.dumps({**CHAT, "usage": {"prompt_tokens": -5}}), "must not be negative")
    slo = json.loads(LITELLM_PAYLOADS.read_text().splitlines()[0])
    add(orjson.dumps({**slo, "startTime": "yesterday"}), "'startTime' must be epoch seconds")
    add(orjson.dumps({**slo, "litellm_call_id": 12345, "id": None}), "'litellm_call_id'")
    add(own_line(good[5]))
    add(own_line(good[4]))
    return lines, 5, 1, len(reasons), reasons


def test_hostile_file_exact_counts_and_rejects(url: str, tmp_path: Path) -> None:
    lines, accepted, duplicates, rejected, reasons = _hostile_lines()
    path = write_lines(tmp_path / "hostile.jsonl", lines)
    Ledger(url, sync=True).close()  # schema and imports before memory is traced
    ingest(io.BytesIO(b""), ledger=url)

    tracemalloc.start()
    try:
        result = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ck", batch_lines=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result.accepted, result.duplicates, result.rejected) == (accepted, duplicates, rejected)
    assert result.inputs[0].blank == 2
    assert result.ok
    assert count_rows(url) == accepted
    # the 10 MB line was never held whole (reads are 1 MiB blocks)
    assert peak < 6 * 2**20, peak
    records = [
        json.loads(r) for r in (tmp_path / "hostile.jsonl.rejects.jsonl").read_bytes().splitlines()
    ]
    assert [r["line"] for r in records] == sorted(reasons)
    for record in records:
        assert reasons[record["line"]] in record["reason"], record
        assert record["input"] == str(path)
    big = next(r for r in records if r["line"] == 3)
    assert (big["bytes"], big["excerpt"]) == (10_000_015, None)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    assert [r["offset"] for r in records] == [offsets[n - 1] for n in sorted(reasons)]
    fields = {r["line"]: r["field"] for r in records}
    assert fields[7] == "gen_ai.usage.input_tokens"
    assert fields[8] == "costledger.cost.total"


def test_every_line_rejected_is_not_ok(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "junk.txt", [b"not json", b"{broken"])
    result = ingest(path, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path)
    assert (result.lines, result.rejected, result.ok) == (2, 2, False)


# -- streams and compression --------------------------------------------------------------------


def test_gzip_file_and_file_objects(url: str, tmp_path: Path) -> None:
    events = [make_event(n) for n in range(10)]
    data = b"".join(own_line(e) + b"\n" for e in events)
    gz = tmp_path / "usage.log.gz"
    gz.write_bytes(gzip.compress(data[: len(data) // 2]))
    result = ingest(gz, ledger=url, checkpoint_dir=tmp_path)
    assert result.accepted == 5

    stream = io.BytesIO(gzip.compress(data))  # a file object, compressed, not seekable by name
    result = ingest(stream, ledger=url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.duplicates) == (5, 5)
    assert result.inputs[0].rejects_path is None
    assert _events(url) == {e.id: e for e in events}


def test_truncated_gzip_commits_nothing_of_its_unverified_member(tmp_path: Path) -> None:
    """A gzip member's lines are read only once its checksum is verified (a damaged member
    can decompress to lines that never were): a cut one commits none, and says so."""
    data = b"".join(own_line(make_event(n)) + b"\n" for n in range(2000))
    gz = tmp_path / "cut.log.gz"
    gz.write_bytes(gzip.compress(data)[:-2000])
    db = f"sqlite:///{tmp_path / 'l.db'}"
    result = ingest(gz, ledger=db, checkpoint_dir=tmp_path)
    assert result.inputs[0].error is not None
    assert "could not read the input" in result.inputs[0].error
    assert "run the same command again once the file is whole" in result.inputs[0].error
    assert not result.ok
    assert (result.accepted, count_rows(db)) == (0, 0)


def test_unterminated_last_line_is_left_for_the_next_run(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    whole = own_line(make_event(2))
    path = tmp_path / "live.log"
    path.write_bytes(own_line(make_event(1)) + b"\n" + whole[:40])
    first = ingest(path, ledger=db, checkpoint_dir=tmp_path / "ck")
    assert (first.accepted, first.rejected, first.inputs[0].incomplete) == (1, 0, 1)
    with path.open("ab") as f:  # the writer finishes the line, and adds one
        f.write(whole[40:] + b"\n" + own_line(make_event(3)) + b"\n")
    second = ingest(path, ledger=db, checkpoint_dir=tmp_path / "ck")
    assert (second.inputs[0].resumed_at_line, second.lines, second.accepted) == (2, 2, 2)
    assert count_rows(db) == 3


def test_blocks_split_lines_exactly_whatever_the_read_size() -> None:
    """Lines cut by any read size come back whole, numbered, at their byte offsets, and a
    line over the limit only by its length."""
    import random

    from costledger._ingest._lines import read_blocks

    rng = random.Random(1)
    for _ in range(300):
        parts = [
            bytes(rng.choice(b"ab{}") for _ in range(rng.randint(0, 30)))
            for _ in range(rng.randint(0, 12))
        ]
        data = b"\n".join(parts) + (b"\n" if rng.random() < 0.5 else b"")
        limit, read_size = rng.randint(1, 20), rng.randint(1, 16)
        got = []
        for block in read_blocks(io.BytesIO(data), max_line_bytes=limit, read_size=read_size):
            offset = block.start
            for i, line in enumerate(block.lines):
                size = block.oversized.get(i, len(line))
                shown = None if i in block.oversized else line
                got.append((block.first_line + i, offset, shown, size))
                offset += size + 1
        expected = []
        offset = 0
        segments = data.split(b"\n")
        if segments[-1] == b"":
            segments.pop()
        for number, segment in enumerate(segments, 1):
            shown = segment if len(segment) <= limit else None
            expected.append((number, offset, shown, len(segment)))
            offset += len(segment) + 1
        assert got == expected, (data, limit, read_size)


# -- found in review (2026-12-07) ---------------------------------------------------------------

KEY = "sk-proj-" + "Q7w" * 16 + "xQz"  # ends in letters no hex id or digest holds


def test_rejection_reasons_never_show_a_key(tmp_path: Path) -> None:
    lines = [
        json.dumps({"litellm_call_id": "c1", "startTime": 1.7e9, "status": KEY}).encode(),
        json.dumps({"id": "r2", "model": "gpt-4o", "usage": {"prompt_tokens": KEY}}).encode(),
        json.dumps({KEY: 1}).encode(),
    ]
    path = write_lines(tmp_path / "keys.log", lines)
    result = ingest(path, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path)
    assert result.rejected == 3
    shown = repr(result) + Path(f"{path}.rejects.jsonl").read_text()
    assert "xQz" not in shown
    assert "Q7wQ7w" not in shown
    assert [r.line for r in result.inputs[0].first_rejects] == [1, 2, 3]
    assert all("[REDACTED]" in r.reason for r in result.inputs[0].first_rejects)


def test_an_excerpt_is_scrubbed_before_it_is_cut(tmp_path: Path) -> None:
    """A key across the excerpt's 160th character is scrubbed whole, not cut and kept."""
    prefix = b'{"note": "'
    pad = b"x" * (160 - len(prefix) - 13) + b" "  # the cut leaves "sk-proj-Q7wQ"
    path = write_lines(tmp_path / "cut.log", [prefix + pad + KEY.encode() + b'" BROKEN'])
    ingest(path, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path)
    [record] = [json.loads(x) for x in Path(f"{path}.rejects.jsonl").read_bytes().splitlines()]
    assert " [REDACTED]" in record["excerpt"]
    assert "sk-proj-" not in record["excerpt"]


def test_a_gzip_whose_last_line_is_cut_rejects_it(tmp_path: Path) -> None:
    """A compressed file does not grow: a cut-off last line is bad, not 'still being written'."""
    whole = own_line(make_event(2))
    gz = tmp_path / "cut.log.gz"
    gz.write_bytes(gzip.compress(own_line(make_event(1)) + b"\n" + whole[:40]))
    result = ingest(gz, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected, result.inputs[0].incomplete) == (1, 1, 0)
    assert [r.line for r in result.inputs[0].first_rejects] == [2]


def test_a_responses_stream_completed_event_takes_the_responses_time(tmp_path: Path) -> None:
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    response = {
        "id": "resp_D",
        "object": "response",
        "created_at": 1748779200,
        "model": "gpt-4o-2024-08-06",
        "usage": usage,
    }
    event = {"type": "response.completed", "sequence_number": 7, "response": response}
    path = write_lines(tmp_path / "r.log", [json.dumps(event).encode()])
    db = f"sqlite:///{tmp_path / 'l.db'}"
    assert ingest(path, ledger=db, checkpoint_dir=tmp_path, now=NOW).accepted == 1
    [stored] = _events(db).values()
    assert stored.request_id == "resp_D"
    assert stored.timestamp == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_a_text_stream_is_read_as_utf8(tmp_path: Path) -> None:
    events = [make_event(n, user="zoë") for n in range(3)]
    text = "".join(own_line(e).decode() + "\n" for e in events)
    db = f"sqlite:///{tmp_path / 'l.db'}"
    result = ingest(io.StringIO(text), ledger=db, rejects=tmp_path / "r.jsonl")
    assert (result.lines, result.accepted) == (3, 3)
    assert _events(db) == {e.id: e for e in events}


def test_money_with_eleven_whole_digits_and_more_than_18_places_is_rounded(
    url: str, tmp_path: Path
) -> None:
    record = json.loads(own_line(make_event(1)))
    record["costledger.cost.total"] = "12345678901.1234567890123456789"
    path = write_lines(tmp_path / "big.log", [json.dumps(record).encode()])
    result = ingest(path, ledger=url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (1, 0)
    [stored] = _events(url).values()
    assert stored.cost.total == Decimal("12345678901.123456789012345679")  # half-even at 18


def test_an_empty_input_is_not_ok_on_its_second_run_either(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    db = f"sqlite:///{tmp_path / 'l.db'}"
    assert not ingest(path, ledger=db, checkpoint_dir=tmp_path).ok
    assert not ingest(path, ledger=db, checkpoint_dir=tmp_path).ok


def test_a_token_count_past_the_bound_is_a_line_error_naming_the_field(tmp_path: Path) -> None:
    record = json.loads(own_line(make_event(1)))
    record["gen_ai.usage.input_tokens"] = 2**62
    path = write_lines(tmp_path / "huge.log", [json.dumps(record).encode()])
    result = ingest(path, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (0, 1)
    [reject] = result.inputs[0].first_rejects
    assert reject.field == "gen_ai.usage.input_tokens"
    assert "refused by the database" not in reject.reason
    assert str(2**62) in reject.reason
