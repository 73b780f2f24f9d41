"""LiteLLM's ``request_tags`` as docs/ingestion.md describes it: a string is one tag, a list
its strings, another value is left out with a warning naming the field."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import costledger
from costledger import Ledger

BASE = {
    "status": "success",
    "custom_llm_provider": "openai",
    "model": "gpt-4o-mini",
    "startTime": 1748736000.0,
    "endTime": 1748736001.0,
    "prompt_tokens": 10,
    "completion_tokens": 1,
    "metadata": {},
}


def test_request_tags_a_string_is_one_tag_another_value_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [
        {**BASE, "litellm_call_id": "list", "request_tags": ["a", "b"]},
        {**BASE, "litellm_call_id": "string", "request_tags": "beta"},
        {**BASE, "litellm_call_id": "number", "request_tags": 5},
        {**BASE, "litellm_call_id": "empty", "request_tags": ""},
    ]
    path = tmp_path / "litellm.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with caplog.at_level(logging.WARNING, logger="costledger"):
        costledger.ingest(path, ledger=url, checkpoint_dir=tmp_path)
    with Ledger(url) as ledger:
        tags = {e.id: e.tags for e in ledger.events()}
    assert tags == {"list": ["a", "b"], "string": ["beta"], "number": [], "empty": []}
    warnings = [r.getMessage() for r in caplog.records if "request_tags" in r.getMessage()]
    assert len(warnings) == 1
    assert "LiteLLM payload 'request_tags' must be a string or a list of strings" in warnings[0]
    assert "value=5" in warnings[0]
