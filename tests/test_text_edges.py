"""Odd text on the ingest and report paths: a lone surrogate escaped in a log line (JSON
allows it, orjson refuses it), a response id holding one, a file name that is not UTF-8,
and a NUL in a report filter on PostgreSQL. The ledger stores such text cleaned (NUL
dropped, a lone surrogate as U+FFFD); these paths must not lose or refuse the call."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Ledger, ingest, report

AT = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)
FFFD = "\ufffd"


def _response(response_id: str) -> bytes:
    # json.dumps writes a lone surrogate as its escape (\ud83d), as a provider's JSON would
    return json.dumps(
        {
            "id": response_id,
            "object": "chat.completion",
            "created": int(AT.timestamp()),
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
        }
    ).encode()


def test_a_line_with_an_escaped_lone_surrogate_is_ingested(tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    path.write_bytes(_response("chatcmpl-\ud83d-1") + b"\n" + _response("chatcmpl-2") + b"\n")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ckpt")
    assert (result.accepted, result.rejected) == (2, 0)
    with Ledger(url, sync=True) as ledger:
        events = sorted(ledger.events(), key=lambda e: e.request_id or "")
    assert [e.request_id for e in events] == ["chatcmpl-2", f"chatcmpl-{FFFD}-1"]
    # gpt-4o-mini: 1,000 x $0.15 + 500 x $0.60 per million
    assert [e.total_cost for e in events] == [Decimal("0.00045")] * 2
    # and once more: the same ids, nothing added
    again = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ckpt", resume=False)
    assert (again.accepted, again.duplicates) == (0, 2)


@pytest.mark.skipif(os.name != "posix", reason="a POSIX file name may hold any bytes")
def test_a_file_name_that_is_not_utf8_is_ingested(tmp_path: Path) -> None:
    name = os.fsdecode(b"responses-\xff.jsonl")  # "\udcff": the byte kept as it is
    path = tmp_path / name
    path.write_bytes(_response("chatcmpl-1") + b"\n")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ckpt")
    assert (result.accepted, result.rejected) == (1, 0)
    assert ingest(path, ledger=url, checkpoint_dir=tmp_path / "ckpt").accepted == 0  # resumed


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_report_filter_is_read_as_the_ledger_stores_text(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from costledger import Tracker, Usage

    url = (
        f"sqlite:///{tmp_path / 'ledger.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("fresh_pg_url")
    )
    with Ledger(url, sync=True) as ledger:
        Tracker(ledger=ledger, log="off").record(
            "gpt-4o-mini",
            Usage(input_tokens=1000, output_tokens=500),
            started_at=AT,
            attribution={"user": "u\x0042"},
        )
    (row,) = report(url, by=["user"], user="u\x0042", since=AT.date(), until="2026-11-03").rows
    assert (row.key, row.requests, row.cost) == (("u42",), 1, Decimal("0.00045"))
