"""A LiteLLM payload's times are epoch seconds: one in milliseconds is refused naming the
field (it used to fail in ``datetime`` with ``year 57386 is out of range`` and no field)."""

from __future__ import annotations

import json
from pathlib import Path

from costledger import ingest

from .ingest_support import LITELLM_PAYLOADS


def test_a_start_time_in_milliseconds_is_refused_naming_the_field(tmp_path: Path) -> None:
    payload = json.loads(LITELLM_PAYLOADS.read_text(encoding="utf-8").splitlines()[0])
    good = dict(payload)
    payload["startTime"] = payload["startTime"] * 1000  # milliseconds
    payload["litellm_call_id"] = "ms-call"
    path = tmp_path / "payloads.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(payload) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ckpt")
    assert (result.accepted, result.rejected) == (1, 1)
    [record] = [json.loads(x) for x in Path(f"{path}.rejects.jsonl").read_text().splitlines()]
    assert (record["line"], record["field"]) == (2, "startTime")
    assert "epoch seconds, not milliseconds" in record["reason"]
