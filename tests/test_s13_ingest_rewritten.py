"""A log rewritten in place (the same inode, the same first 4 KiB, not shorter) is read again
from its start, not resumed into the middle of other lines: the checkpoint also holds a hash
of the bytes just before its offset. Real files, real SQLite."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson

from costledger._ingest import ingest
from costledger._pricing import Pricer

from .ingest_support import pricer

__all__ = ["pricer"]  # fixtures

# gpt-4o-mini, 10 input and 5 output tokens: 10 * $0.15/M + 5 * $0.60/M
_CALL_COST = Decimal("0.0000045")


def _lines(first: int, last: int, tag: str) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "id": f"chatcmpl-{tag}{n}",
                "object": "chat.completion",
                "created": 1748779200 + n,
                "model": "gpt-4o-mini",
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }
        )
        + b"\n"
        for n in range(first, last)
    )


def test_a_log_rewritten_in_place_with_the_same_start_is_read_from_its_start(
    tmp_path: Path, pricer: Pricer
) -> None:
    """It was resumed at line 301 of the old log: the 60 lines it shares were fine, the 240
    other lines before line 301 were never read."""
    log = tmp_path / "app.jsonl"
    log.write_bytes(_lines(0, 300, "a"))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    assert ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, batch_lines=50).accepted == 300

    rewritten = _lines(0, 60, "a") + _lines(60, 400, "z")
    assert rewritten[:4096] == log.read_bytes()[:4096]
    with log.open("r+b") as out:  # in place: the same inode, not shorter
        out.truncate()
        out.write(rewritten)
    second = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, batch_lines=50)

    (only,) = second.inputs
    assert (only.resumed_at_line, only.lines, only.accepted, only.duplicates) == (
        None,
        400,
        340,
        60,
    )
    assert second.costs == {"USD": 340 * _CALL_COST}


def test_a_log_that_only_grew_is_resumed_and_an_older_checkpoint_still_counts(
    tmp_path: Path, pricer: Pricer
) -> None:
    log = tmp_path / "app.jsonl"
    log.write_bytes(_lines(0, 300, "a"))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)
    (saved,) = ck.glob("*.json")
    checkpoint = json.loads(saved.read_text())
    assert checkpoint["tail_bytes"] == 4096
    assert isinstance(checkpoint["tail_sha256"], str)

    with log.open("ab") as out:
        out.write(_lines(300, 350, "a"))
    grown = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)
    assert (grown.inputs[0].resumed_at_line, grown.lines, grown.accepted) == (301, 50, 50)

    # a checkpoint an earlier version wrote has no tail hash: it is still resumed from
    checkpoint = json.loads(saved.read_text())
    del checkpoint["tail_bytes"], checkpoint["tail_sha256"]
    saved.write_text(json.dumps(checkpoint))
    with log.open("ab") as out:
        out.write(_lines(350, 360, "a"))
    older = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)
    assert (older.inputs[0].resumed_at_line, older.lines, older.accepted) == (351, 10, 10)
