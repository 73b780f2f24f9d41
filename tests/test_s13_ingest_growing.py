"""An over-long last line caught while still being written is held like any unfinished line:
rejected once, whole, by the run that sees its end; the lines after it keep their numbers and
nothing is counted twice. Real files, real SQLite."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson

from costledger._ingest import ingest
from costledger._pricing import Pricer

from .ingest_support import count_rows, pricer

__all__ = ["pricer"]  # fixtures

_LIMIT = 1000


def _chat(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"chatcmpl-s13grow-{i}",
            "created": 1748779200 + i,
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }
    )


_EMBEDDING = orjson.dumps(
    {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 7}}
)
_BIG = b'{"id":"chatcmpl-big","pad":"' + b"x" * 5000 + b'"}'
_FINAL = b"\n".join([_chat(1), _chat(2), _BIG, _EMBEDDING, _chat(4), b"oops not json"]) + b"\n"


def _rejects(path: Path) -> list[tuple[int, int, int, str]]:
    out = []
    for line in Path(f"{path}.rejects.jsonl").read_bytes().splitlines():
        r = json.loads(line)
        out.append((r["line"], r["offset"], r["bytes"], r["reason"][:44]))
    return out


def test_an_over_long_line_being_written_is_rejected_once_whole(
    tmp_path: Path, pricer: Pricer
) -> None:
    """It was rejected at once (at the length written so far) and the checkpoint moved past
    it; the next run read the rest of it as a new line: 5 rows against 4, the lines after it
    numbered one too far, and the rejects file saying so."""
    head = len(_chat(1)) + len(_chat(2)) + 2
    live = tmp_path / "live.jsonl"
    live.write_bytes(_FINAL[: head + 3000])  # the big line is half written
    url = f"sqlite:///{tmp_path / 'live.db'}"
    ck = tmp_path / "ck"

    first = ingest(live, ledger=url, pricer=pricer, checkpoint_dir=ck, max_line_bytes=_LIMIT)

    (only,) = first.inputs
    assert (only.lines, only.accepted, only.rejected, only.incomplete) == (2, 2, 0, 1)
    assert only.offset == head
    assert not Path(f"{live}.rejects.jsonl").exists()

    with live.open("ab") as out:  # the writer finishes the line, and writes on
        out.write(_FINAL[head + 3000 :])
    second = ingest(live, ledger=url, pricer=pricer, checkpoint_dir=ck, max_line_bytes=_LIMIT)

    (only,) = second.inputs
    assert (only.resumed_at_line, only.lines, only.accepted, only.rejected) == (3, 4, 2, 2)
    assert only.incomplete == 0
    reason = f"line is {len(_BIG)} bytes, over the {_LIMIT}-byte limit"
    assert _rejects(live) == [
        (3, head, len(_BIG), reason[:44]),
        (6, len(_FINAL) - 14, 13, "not valid JSON: unexpected character, expect"),
    ]
    assert count_rows(url) == 4

    # the same as one run over the finished file
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(_FINAL)
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    once = ingest(clean, ledger=clean_url, pricer=pricer, checkpoint_dir=ck, max_line_bytes=_LIMIT)
    assert (once.lines, once.accepted, once.rejected) == (6, 4, 2)
    assert _rejects(clean) == _rejects(live)
    assert count_rows(clean_url) == 4


def test_an_over_long_last_line_of_a_gz_is_still_rejected(tmp_path: Path, pricer: Pricer) -> None:
    """A compressed file does not grow: its over-long unfinished last line is rejected now."""
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(_chat(1) + b"\n" + _BIG[:3000]))
    result = ingest(
        path,
        ledger=f"sqlite:///{tmp_path / 'l.db'}",
        pricer=pricer,
        checkpoint_dir=tmp_path / "ck",
        max_line_bytes=_LIMIT,
    )
    assert (result.lines, result.accepted, result.rejected, result.inputs[0].incomplete) == (
        2,
        1,
        1,
        0,
    )
    assert _rejects(path) == [
        (2, len(_chat(1)) + 1, 3000, "line is 3000 bytes, over the 1000-byte limit")
    ]
