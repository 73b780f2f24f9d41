"""Ingest stores attribution, tags and request ids scrubbed, as the live Tracker does."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from costledger import Cost, Usage, UsageEvent
from costledger._ingest import ingest
from costledger._logging import event_to_record

KEY = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXyz0123456789abcd"
COLUMNS = ("user", "team", "project", "feature", "tags", "request_id")
SELECTED = ", ".join(f'"{c}"' for c in COLUMNS)


def _stored(tmp_path: Path, lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x, default=str) + "\n" for x in lines))
    db = tmp_path / "l.db"
    result = ingest(path, ledger=f"sqlite:///{db}", checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (len(lines), 0)
    with sqlite3.connect(db) as con:
        rows = con.execute(
            f"select {SELECTED}, * from costledger_events order by request_id"
        ).fetchall()
    assert not any(KEY[8:20] in json.dumps(r) for r in rows)
    return [r[: len(COLUMNS)] for r in rows]


def _payload(i: int, **kw: Any) -> dict[str, Any]:
    payload = {
        "id": f"call-{i}",
        "litellm_call_id": f"call-{i}",
        "call_type": "completion",
        "custom_llm_provider": "openai",
        "model": "gpt-4o-mini",
        "startTime": 1748779200.0 + i,
        "endTime": 1748779201.0 + i,
        "status": "success",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "response": {"id": f"chatcmpl-{i}", "model": "gpt-4o-mini"},
        "metadata": {
            "user_api_key_hash": "hash",
            "user_api_key_user_id": f"Bearer {KEY}",
            "user_api_key_team_id": "t1",
            "spend_logs_metadata": {"feature": KEY, "project": f"key={KEY}"},
        },
        "request_tags": ["prod", f"key={KEY}"],
    }
    payload.update(kw)
    return payload


def test_litellm_payload_attribution_tags_and_request_id_are_scrubbed(tmp_path: Path) -> None:
    # two lines with the same attribution: the second comes from the cache, scrubbed too
    second = _payload(1, response={"id": f"chatcmpl-1?api_key={KEY}", "model": "gpt-4o-mini"})
    rows = _stored(tmp_path, [_payload(0), second])
    assert [r[:5] for r in rows] == [
        (
            "Bearer [REDACTED]",
            "t1",
            "key=[REDACTED]",
            "[REDACTED]",
            '["prod","key=[REDACTED]"]',
        )
    ] * 2
    assert [r[5] for r in rows] == ["chatcmpl-0", "chatcmpl-1?api_key=[REDACTED]"]


def _record(i: int, **kw: Any) -> dict[str, Any]:
    event = UsageEvent(
        model="gpt-4o-mini",
        usage=Usage(input_tokens=1, output_tokens=1),
        cost=Cost(status="priced", total=Decimal("0.01")),
        team=f"Bearer {KEY}",
        user="alice",
        feature=KEY,
        tags=("prod", KEY),
        request_id=f"req-{i}?api_key={KEY}",
    )
    record = event_to_record(event)
    record.update(kw)
    return dict(record)


def test_costledger_records_are_scrubbed_on_both_paths(tmp_path: Path) -> None:
    fast = _record(0)
    canonical = _record(1, **{"costledger.timestamp": "2025-06-01T12:00:00+00:00"})  # slow path
    assert _stored(tmp_path, [fast, canonical]) == [
        (
            "alice",
            "Bearer [REDACTED]",
            None,
            "[REDACTED]",
            '["prod","[REDACTED]"]',
            f"req-{i}?api_key=[REDACTED]",
        )
        for i in (0, 1)
    ]


def test_raw_response_id_is_scrubbed(tmp_path: Path) -> None:
    response = {
        "id": f"chatcmpl-1 Authorization: Bearer {KEY}",
        "object": "chat.completion",
        "created": 1748779200,
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    assert _stored(tmp_path, [response]) == [
        (None, None, None, None, "[]", "chatcmpl-1 Authorization: [REDACTED]")
    ]
