"""LiteLLM's ``spend_logs_metadata`` (its documented channel for custom keys on a logged
call) gives attribution live as it does when the call's log is ingested: the live logger
read it only from a proxy's metadata, so an SDK call's ``team`` / ``feature`` there were
in the ingested row and not in the live one. The call's own keys win over it (live: the
logged payload holds no SDK metadata beyond spend_logs_metadata)."""

from __future__ import annotations

from pathlib import Path

import litellm
import pytest

import costledger_litellm
from costledger import Ledger, Tracker, ingest

from .test_ingest_litellm import PayloadFile, _rows, _wait, isolated_litellm  # noqa: F401


@pytest.mark.usefixtures("isolated_litellm")
def test_spend_logs_metadata_attributes_the_call_live_and_ingested(tmp_path: Path) -> None:
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    ingested_url = f"sqlite:///{tmp_path / 'ingested.db'}"
    payloads = PayloadFile(tmp_path / "litellm.jsonl")
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    with Ledger(live_url, sync=True) as live:
        litellm.callbacks = [
            costledger_litellm.CostLedgerLogger(Tracker(live, log="off")),
            payloads,
        ]
        litellm.completion(
            model="gpt-4o-mini",
            messages=messages,
            mock_response="4",
            metadata={"spend_logs_metadata": {"team": "search", "feature": "answer"}},
        )
        litellm.completion(
            model="gpt-4o-mini",
            messages=messages,
            mock_response="4",
            metadata={"team": "ads", "spend_logs_metadata": {"team": "search", "feature": "x"}},
        )
        _wait(lambda: payloads.count == 2)
        _wait(lambda: len(list(live.events())) == 2)
    result = ingest(payloads.path, ledger=ingested_url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (2, 0)
    live_rows, ingested_rows = _rows(live_url), _rows(ingested_url)
    assert sorted((r["team"], r["feature"]) for r in live_rows.values()) == [
        ("ads", "x"),
        ("search", "answer"),
    ]
    # SDK metadata outside spend_logs_metadata is not in LiteLLM's logged payload
    # (docs/ingestion.md): the call that gave only spend_logs_metadata has one row both ways
    [(call_id, row)] = [(k, r) for k, r in live_rows.items() if r["team"] == "search"]
    other = ingested_rows[call_id]
    assert abs(row.pop("latency_ms") - other.pop("latency_ms")) < 0.002
    assert row == other
