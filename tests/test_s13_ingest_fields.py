"""Reject records name the field at fault for an amount too large to store (it said
``ValueError: UsageEvent cost.total = ...`` with ``field: null``), and token counts given as
digit strings are read as docs/ingestion.md now says: accepted in a provider response or a
LiteLLM payload, refused in a costledger record. Real files, real SQLite."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson

from costledger._ingest import ingest
from costledger._pricing import Pricer

from .ingest_support import make_event, own_line, pricer

__all__ = ["pricer"]  # fixtures


def _rejects(path: Path) -> dict[int, tuple[str, str | None]]:
    out = {}
    for line in Path(f"{path}.rejects.jsonl").read_bytes().splitlines():
        record = json.loads(line)
        out[record["line"]] = (record["reason"], record["field"])
    return out


def _record(n: int, **changes: object) -> bytes:
    return orjson.dumps({**orjson.loads(own_line(make_event(n))), **changes})


def _litellm(**changes: object) -> bytes:
    return orjson.dumps(
        {
            "litellm_call_id": "call-s13f",
            "status": "success",
            "custom_llm_provider": "openai",
            "model": "gpt-4o-mini",
            "startTime": 1748779200.0,
            "endTime": 1748779201.0,
            "response": {
                "id": "chatcmpl-s13f",
                "usage": {"prompt_tokens": "10", "completion_tokens": 5},
            },
            **changes,
        }
    )


def _response(tokens: object) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-s13f-raw",
            "object": "chat.completion",
            "created": 1748779200,
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": tokens, "completion_tokens": 5},
        }
    )


def test_an_amount_too_large_to_store_names_its_field(tmp_path: Path, pricer: Pricer) -> None:
    lines = [
        _record(1, **{"costledger.cost.total": "1e30"}),  # the fast path
        # a timestamp with an offset goes through the schema's own reader
        _record(
            2,
            **{
                "costledger.timestamp": "2025-06-01T14:00:00+02:00",
                "costledger.cost.total": "1e30",
            },
        ),
        _litellm(response_cost=1e300),
        _record(3, **{"gen_ai.usage.input_tokens": "1000"}),
        _response("10"),
        _litellm(litellm_call_id="call-s13f-ok"),
    ]
    log = tmp_path / "mixed.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    url = f"sqlite:///{tmp_path / 'l.db'}"

    result = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")

    assert (result.accepted, result.rejected) == (2, 4)
    too_large = "must be below 10^20 to be stored (the ledger's NUMERIC(38, 18)), got"
    assert _rejects(log) == {
        1: (
            f"usage record field 'costledger.cost.total' {too_large} '1e30'",
            "costledger.cost.total",
        ),
        2: (
            f"usage record field 'costledger.cost.total' {too_large} '1e30'",
            "costledger.cost.total",
        ),
        3: (f"LiteLLM payload field 'response_cost' {too_large} 1e+300", "response_cost"),
        4: (
            "usage record field 'gen_ai.usage.input_tokens' must be a whole number of tokens, "
            "got '1000'",
            "gen_ai.usage.input_tokens",
        ),
    }
    # "10" as a provider's token count is 10 tokens: 10 * $0.15/M + 5 * $0.60/M each
    assert result.costs == {"USD": 2 * Decimal("0.0000045")}
