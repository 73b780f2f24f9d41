"""A damaged ``.gz`` (cut short by a copy still running, a flipped byte) commits no line of
the member that does not check out, and the checkpoint never passes the last line read
whole: once the file is whole, the next run ingests every call, and nothing made up.
Real files, real SQLite, the real CLI for stdin."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from costledger._ingest import ingest
from costledger._ledger._engine import resolve_url
from costledger._pricing import Pricer

from .ingest_support import count_rows, pricer

__all__ = ["pricer"]  # fixtures

COSTLEDGER = Path(sys.executable).with_name("costledger")
# gpt-4o-mini: $0.15 / 1M input, $0.60 / 1M output
_PER_CALL = {
    n: Decimal(10 + n) * Decimal("0.00000015") + 5 * Decimal("0.0000006") for n in range(7)
}


def _chat(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"chatcmpl-s13gz-{i}",
            "object": "chat.completion",
            "created": 1748779200 + i,
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 10 + i % 7, "completion_tokens": 5},
            "pad": hashlib.sha256(str(i).encode()).hexdigest(),  # (a .gz over 4 KiB)
        }
    )


def _data(first: int, last: int) -> bytes:
    return b"".join(_chat(i) + b"\n" for i in range(first, last))


def _rows(url: str) -> dict[str, tuple[int, Decimal]]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT request_id, input_tokens, total_cost FROM costledger_events"
            )
            return {r[0]: (r[1], Decimal(r[2])) for r in rows}
    finally:
        engine.dispose()


def _expected(first: int, last: int) -> dict[str, tuple[int, Decimal]]:
    return {f"chatcmpl-s13gz-{i}": (10 + i % 7, _PER_CALL[i % 7]) for i in range(first, last)}


def _ledger_total(url: str) -> Decimal:
    return sum((cost for _, cost in _rows(url).values()), Decimal(0))


def _damaged_error(cause: str, at: int) -> str:
    return (
        f"could not read the input: {cause}; no line of the gzip member that holds it (from "
        f"byte {at:,} of the decompressed data on) was read, as a member's lines are read "
        "only once its checksum is verified: run the same command again once the file is whole"
    )


_CUT = "EOFError: Compressed file ended before the end-of-stream marker was reached"
_CRC = "zlib.error: Error -3 while decompressing data: incorrect data check"


def test_a_gz_still_being_copied_then_completed_loses_no_call(
    tmp_path: Path, pricer: Pricer
) -> None:
    """The reviewer's case: 9,999 accepted, the cut line rejected, the checkpoint past it; the
    rest of that line was then rejected as a line of its own: 19,999 calls of 20,000."""
    n = 20_000
    whole = gzip.compress(_data(0, n))
    path = tmp_path / "usage.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])  # the copy is half done
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"

    first = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)

    (only,) = first.inputs
    assert (only.lines, only.accepted, only.rejected, only.incomplete) == (0, 0, 0, 0)
    assert only.error == _damaged_error(_CUT, 0)
    assert not first.ok
    assert count_rows(url) == 0
    assert not Path(f"{path}.rejects.jsonl").exists()

    with path.open("r+b") as out:  # the copy completes: the same file, the same inode
        out.write(whole)
    second = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)

    (only,) = second.inputs
    assert (only.resumed_at_line, only.lines, only.accepted, only.rejected) == (1, n, n, 0)
    assert only.error is None
    assert second.ok
    assert _rows(url) == _expected(0, n)
    assert second.costs == {"USD": _ledger_total(url)}
    assert _ledger_total(url) == Decimal("0.09899955")  # 259,997 input, 100,000 output tokens


def test_a_flipped_byte_commits_no_made_up_row_and_the_good_copy_is_read(
    tmp_path: Path, pricer: Pricer
) -> None:
    """zlib notices a flipped byte only at the member's CRC: the garbage lines before it
    parsed and 5 made-up calls were committed; the good copy then added nothing, exit 0."""
    n = 20_000
    whole = gzip.compress(_data(0, n))
    bad = bytearray(whole)
    bad[len(whole) // 2] ^= 0xFF
    path = tmp_path / "usage.jsonl.gz"
    path.write_bytes(bytes(bad))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"

    first = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)

    (only,) = first.inputs
    assert (only.lines, only.accepted, only.rejected) == (0, 0, 0)
    assert only.error is not None
    assert only.error.startswith("could not read the input: zlib.error")
    assert count_rows(url) == 0

    path.write_bytes(whole)  # the good copy, in place
    second = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)

    assert (second.accepted, second.rejected, second.inputs[0].error) == (n, 0, None)
    assert _rows(url) == _expected(0, n)


def test_a_bad_checksum_at_the_end_commits_nothing_of_its_member(
    tmp_path: Path, pricer: Pricer
) -> None:
    packed = bytearray(gzip.compress(_data(0, 3000)))
    packed[-8] ^= 0xFF  # the CRC-32 of the trailer: every byte decompresses, none verifies
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(packed))
    url = f"sqlite:///{tmp_path / 'l.db'}"

    result = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")

    assert (result.lines, result.accepted, result.rejected) == (0, 0, 0)
    assert result.inputs[0].error == _damaged_error(_CRC, 0)
    assert count_rows(url) == 0


def test_the_members_before_a_damaged_one_are_read_and_resumed_from_exactly(
    tmp_path: Path, pricer: Pricer
) -> None:
    """``cat a.gz b.gz`` whose second member is cut short, a line across the two: the first
    member's 300 whole lines are committed; the line cut at the member boundary is neither
    rejected nor passed by the checkpoint; once whole, the next run resumes at it."""
    data = _data(0, 600)
    split = len(_data(0, 300)) + 40  # line 301 starts in the first member, ends in the second
    first_member = gzip.compress(data[:split])
    second_member = gzip.compress(data[split:])
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(first_member + second_member[: len(second_member) // 2])
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"

    first = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)

    (only,) = first.inputs
    assert (only.lines, only.accepted, only.rejected, only.incomplete) == (300, 300, 0, 1)
    assert only.offset == len(_data(0, 300))
    assert only.error == _damaged_error(_CUT, split)
    assert _rows(url) == _expected(0, 300)
    assert not Path(f"{path}.rejects.jsonl").exists()

    path.write_bytes(first_member + second_member)
    second = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)

    (only,) = second.inputs
    assert (only.resumed_at_line, only.lines, only.accepted, only.rejected) == (301, 300, 300, 0)
    assert only.error is None
    assert only.incomplete == 0
    assert _rows(url) == _expected(0, 600)
    assert not Path(f"{path}.rejects.jsonl").exists()


def test_a_gz_damaged_after_its_checkpoint_is_reported_not_raised(
    tmp_path: Path, pricer: Pricer
) -> None:
    """A resumed .gz whose already-read part no longer checks out stops with its error (the
    checkpoint is kept for the repaired file), instead of an exception out of ``ingest``."""
    whole = gzip.compress(_data(0, 200))
    assert len(whole) > 4096  # its first 4 KiB, which identify it, stay the same
    path = tmp_path / "usage.jsonl.gz"
    path.write_bytes(whole)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    assert ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck).accepted == 200
    bad = bytearray(whole)
    bad[-8] ^= 0xFF
    path.write_bytes(bytes(bad))

    again = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)

    assert (again.lines, again.accepted, again.inputs[0].error) == (
        0,
        0,
        _damaged_error(_CRC, 0),
    )
    path.write_bytes(whole)
    repaired = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck)
    assert (repaired.inputs[0].resumed_at_line, repaired.lines, repaired.ok) == (201, 0, True)
    assert _rows(url) == _expected(0, 200)


class _Pipe(io.RawIOBase):
    """A stream that cannot seek (a pipe, a socket), served from bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 4096))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_a_gz_stream_that_cannot_seek_is_checked_before_its_lines_are_read(
    tmp_path: Path, pricer: Pricer
) -> None:
    whole = gzip.compress(_data(0, 1000))
    bad = bytearray(whole)
    bad[len(whole) // 2] ^= 0xFF
    url = f"sqlite:///{tmp_path / 'l.db'}"

    damaged = ingest(io.BufferedReader(_Pipe(bytes(bad))), ledger=url, pricer=pricer)
    assert (damaged.lines, damaged.accepted, count_rows(url)) == (0, 0, 0)
    assert damaged.inputs[0].error is not None
    assert damaged.inputs[0].error.startswith("could not read the input: zlib.error: ")

    good = ingest(io.BufferedReader(_Pipe(whole)), ledger=url, pricer=pricer)
    assert (good.lines, good.accepted, good.inputs[0].error) == (1000, 1000, None)
    assert _rows(url) == _expected(0, 1000)


def test_the_cli_reading_a_damaged_gz_on_stdin_commits_nothing_and_exits_1(
    tmp_path: Path,
) -> None:
    whole = gzip.compress(_data(0, 2000))
    db = f"sqlite:///{tmp_path / 'l.db'}"
    done = subprocess.run(
        [str(COSTLEDGER), "ingest", "-", "--db", db, "-f", "json"],
        input=whole[: len(whole) - 100],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip() == f"error: <stdin>: {_damaged_error(_CUT, 0)}"
    assert orjson.loads(done.stdout)["accepted"] == 0
    assert count_rows(db) == 0


@pytest.mark.parametrize("cut", [10, 100, 1000])
def test_a_gz_cut_anywhere_commits_no_line_and_loses_none_once_whole(
    tmp_path: Path, pricer: Pricer, cut: int
) -> None:
    whole = gzip.compress(_data(0, 700))
    path = tmp_path / "usage.jsonl.gz"
    path.write_bytes(whole[:cut])
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    assert ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck).accepted == 0
    path.write_bytes(whole)
    assert ingest(path, ledger=url, pricer=pricer, checkpoint_dir=ck).accepted == 700
    assert _rows(url) == _expected(0, 700)
