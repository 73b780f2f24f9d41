"""Ingesting batch results: OpenAI Batch API output and Anthropic Message Batches results,
one request per line, priced at the batch price; failed requests recorded as errors
with nothing to price."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costledger import Ledger, ingest

UTC = timezone.utc
NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)  # after genai-prices' batch variants start
CREATED = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())


def _openai_ok(n: int) -> dict[str, Any]:
    return {
        "id": f"batch_req_{n}",
        "custom_id": f"request-{n}",
        "response": {
            "status_code": 200,
            "request_id": f"req_{n}",
            "body": {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "created": CREATED,
                "model": "gpt-5-2025-08-07",
                "choices": [],
                "usage": {
                    "prompt_tokens": 10_000,
                    "completion_tokens": 2_000,
                    "total_tokens": 12_000,
                },
                "service_tier": "default",
            },
        },
        "error": None,
    }


LINES: list[dict[str, Any]] = [
    _openai_ok(1),
    {
        "id": "batch_req_2",
        "custom_id": "request-2",
        "response": {
            "status_code": 400,
            "request_id": "req_2",
            "body": {
                "error": {
                    "message": "bad",
                    "type": "invalid_request_error",
                    "code": "invalid_value",
                }
            },
        },
        "error": None,
    },
    {
        "id": "batch_req_3",
        "custom_id": "request-3",
        "response": None,
        "error": {"code": "batch_expired", "message": "not executed in the completion window"},
    },
    {
        "custom_id": "a-1",
        "result": {
            "type": "succeeded",
            "message": {
                "id": "msg_batch_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-opus-4-8",
                "content": [],
                "usage": {"input_tokens": 10_000, "output_tokens": 2_000, "service_tier": "batch"},
            },
        },
    },
    {
        "custom_id": "a-2",
        "result": {
            "type": "errored",
            "error": {"type": "error", "error": {"type": "overloaded_error", "message": "x"}},
        },
    },
    {"custom_id": "a-3", "result": {"type": "expired"}},
]


def _rows(db: str) -> dict[str, Any]:
    with Ledger(db, sync=True) as ledger:
        return {e.request_id or e.error_type: e for e in ledger.events()}


def test_batch_results_are_priced_at_the_batch_price_and_failures_cost_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "batch_output.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = ingest(path, ledger=db, resume=False, now=NOW)
    assert (result.accepted, result.rejected) == (6, 0)
    rows = _rows(db)
    openai = rows["chatcmpl-1"]
    # gpt-5 at $1.25 / $10 per MTok, half in a batch: 10k in + 2k out = $0.01625
    assert openai.total_cost == Decimal("0.01625")
    assert dict(openai.price_context) == {"service_tier": "default", "processing": "batch"}
    assert openai.timestamp == datetime(2026, 12, 1, tzinfo=UTC)
    anthropic = rows["msg_batch_1"]
    # claude-opus-4-8 at $5 / $25, half in a batch: $0.05
    assert anthropic.total_cost == Decimal("0.05")
    assert dict(anthropic.price_context) == {"processing": "batch"}
    assert anthropic.timestamp == NOW
    failed = {k: v for k, v in rows.items() if v.status == "error"}
    assert sorted(v.error_type for v in failed.values()) == [
        "batch_expired",
        "expired",
        "invalid_value",
        "overloaded_error",
    ]
    assert all(v.total_cost is None and v.pricing_status == "not_priced" for v in failed.values())
    assert all(v.input_tokens == v.output_tokens == 0 for v in failed.values())
    # ingesting the file again adds nothing
    again = ingest(path, ledger=db, resume=False, now=NOW)
    assert (again.accepted, again.duplicates) == (0, 6)


def test_a_batch_line_with_a_result_that_is_not_an_object_is_rejected_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"custom_id": "x", "result": "succeeded"}) + "\n")
    result = ingest(path, ledger=f"sqlite:///{tmp_path / 'l.db'}", resume=False, now=NOW)
    assert (result.accepted, result.rejected) == (0, 1)
    (first,) = result.inputs
    (reject,) = first.first_rejects
    assert "batch result field 'result' must be an object, got str" in reject.reason
    assert (reject.line, reject.field) == (1, "result")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (
            {"id": "batch_req_9", "custom_id": "r", "response": {"status_code": 200, "body": None}},
            "batch result field 'response.body' must be the response object",
        ),
        (
            {
                "id": "batch_req_9",
                "custom_id": "r",
                "response": {"status_code": 200, "body": {"id": "chatcmpl-9"}},
            },
            "a provider response with usage (keys: 'id')",
        ),
        (
            {"custom_id": "a", "result": {"type": "succeeded"}},
            "'result.message' must be the message",
        ),
    ],
)
def test_a_succeeded_batch_line_without_its_response_is_rejected_not_an_error_row(
    tmp_path: Path, line: dict[str, Any], words: str
) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps(line) + "\n")
    result = ingest(path, ledger=f"sqlite:///{tmp_path / 'l.db'}", resume=False, now=NOW)
    assert (result.accepted, result.rejected) == (0, 1)
    (first,) = result.inputs
    (reject,) = first.first_rejects
    assert words in reject.reason
