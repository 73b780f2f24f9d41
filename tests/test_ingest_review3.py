"""Ingestion review, third round: a ``.gz`` cut short or followed by other bytes keeps every
line it holds; a CRLF log's line left open is ended by its ``\\r\\n``; two overlapping runs of
one ingestion do not both write the rejects; responses without an id in two files are two
calls, and an upgrade does not store twice what an earlier version stored. Real files, real
SQLite (and PostgreSQL for the ledger lookups), the real CLI for what the CLI shows."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from costledger._ingest import IngestProgress, ingest, response_event_id
from costledger._ledger._engine import resolve_url
from costledger._pricing import Pricer

from .ingest_support import count_rows, pricer

__all__ = ["pricer"]  # fixtures

COSTLEDGER = Path(sys.executable).with_name("costledger")


def _chat(i: int, prompt: int = 1000) -> bytes:
    return orjson.dumps(
        {
            "id": f"chatcmpl-r3-{i}",
            "object": "chat.completion",
            "created": 1748779200,
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": prompt, "completion_tokens": 100, "total_tokens": 1100},
        }
    )


def _embedding(tokens: int = 8) -> bytes:
    """An OpenAI embeddings response without its vectors: no id, no time."""
    return orjson.dumps(
        {
            "object": "list",
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COSTLEDGER), "ingest", *args], capture_output=True, text=True, timeout=300
    )


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _ids(url: str) -> set[str]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.exec_driver_sql("SELECT id FROM costledger_events")}
    finally:
        engine.dispose()


# -- 1. gzip: what decompresses is read --------------------------------------------------------


def _gz_lines(n: int) -> list[bytes]:
    return [_chat(i) for i in range(n)]


def test_a_gz_cut_short_commits_nothing_until_it_is_whole(tmp_path: Path, pricer: Pricer) -> None:
    """A member cut short cannot be verified: none of its lines is committed, and the
    checkpoint does not move past them (a copy still being written was resumed after its
    cut line, losing the call it held). Once the file is whole, the same command reads all."""
    lines = _gz_lines(20_000)
    packed = gzip.compress(b"\n".join(lines) + b"\n")
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[:-100])
    url = f"sqlite:///{tmp_path / 'l.db'}"

    result = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")

    assert (result.lines, result.accepted, result.rejected) == (0, 0, 0)
    assert count_rows(url) == 0
    (only,) = result.inputs
    assert only.error == (
        "could not read the input: EOFError: "
        "Compressed file ended before the end-of-stream marker was reached; no line of the "
        "gzip member that holds it (from byte 0 of the decompressed data on) was read, as a "
        "member's lines are read only once its checksum is verified: run the same command "
        "again once the file is whole"
    )
    assert not Path(f"{path}.rejects.jsonl").exists()
    assert not result.ok

    path.write_bytes(packed)
    again = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")
    assert (again.accepted, again.rejected, count_rows(url)) == (20_000, 0, 20_000)


def test_a_bad_checksum_commits_nothing_of_its_member(tmp_path: Path, pricer: Pricer) -> None:
    """A member whose data decompress but whose CRC does not match may hold lines that never
    were (a flipped byte): none of them is committed, and the input is an error."""
    lines = _gz_lines(12_000)
    packed = bytearray(gzip.compress(b"\n".join(lines) + b"\n"))
    packed[-8] ^= 0xFF  # the CRC-32 of the trailer
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(packed))
    url = f"sqlite:///{tmp_path / 'l.db'}"

    result = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=tmp_path / "ck")

    assert (result.lines, result.accepted, result.rejected) == (0, 0, 0)
    assert result.inputs[0].error == (
        "could not read the input: zlib.error: Error -3 while decompressing data: incorrect "
        "data check; no line of the gzip member that holds it (from byte 0 of the decompressed "
        "data on) was read, as a member's lines are read only once its checksum is verified: "
        "run the same command again once the file is whole"
    )
    assert count_rows(url) == 0


def test_trailing_garbage_after_a_gz_is_ignored_with_a_note(tmp_path: Path) -> None:
    """A complete member followed by other bytes lost everything (BadGzipFile); now the
    lines are read and the rest ignored with a note, as gzip -d does; exit 0."""
    lines = _gz_lines(500)
    packed = gzip.compress(b"\n".join(lines) + b"\n")
    path = tmp_path / "padded.jsonl.gz"
    path.write_bytes(packed + b"junk after the gzip member\n")
    db = f"sqlite:///{tmp_path / 'l.db'}"

    done = _cli(str(path), "--db", db, "--checkpoint-dir", str(tmp_path / "ck"), "-f", "json")

    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["lines"], doc["accepted"], doc["rejected"]) == (500, 500, 0)
    assert doc["inputs"][0]["error"] is None
    assert doc["inputs"][0]["notes"] == [
        f"trailing garbage ignored: 27 byte(s) after the gzip data (from byte {len(packed):,}) "
        "are not gzip (as gzip -d does)"
    ]
    assert done.stderr.splitlines() == [
        f"{path}: trailing garbage ignored: 27 byte(s) after the gzip data "
        f"(from byte {len(packed):,}) are not gzip (as gzip -d does)"
    ]
    assert count_rows(db) == 500

    api = ingest(path, ledger=db, checkpoint_dir=tmp_path / "ck2")
    assert api.inputs[0].notes == (
        f"trailing garbage ignored: 27 byte(s) after the gzip data (from byte {len(packed):,}) "
        "are not gzip (as gzip -d does)",
    )
    assert (api.accepted, api.duplicates) == (0, 500)


def test_gz_members_and_zero_padding_are_read_in_turn(tmp_path: Path, pricer: Pricer) -> None:
    lines = _gz_lines(900)
    first = gzip.compress(b"\n".join(lines[:300]) + b"\n")
    second = gzip.compress(b"\n".join(lines[300:]) + b"\n")
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(first + b"\0" * 7 + second + b"\0" * 512)  # cat a.gz b.gz; tape padding

    result = ingest(path, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path)

    assert (result.lines, result.accepted, result.rejected) == (900, 900, 0)
    assert result.inputs[0].error is None
    assert result.inputs[0].notes == ()


def test_gzip_reader_returns_what_zlib_decompresses_at_every_cut(tmp_path: Path) -> None:
    """Cut anywhere (in a header, in the data, in a trailer, between members): the reader
    returns exactly what decompresses, in reads of any size, then raises once."""
    from costledger._ingest._lines import GzipReader

    rng = random.Random(3)
    text = b"".join(
        b"%d %s\n" % (i, rng.randbytes(rng.randint(0, 40)).hex().encode()) for i in range(3000)
    )
    packed = gzip.compress(text[:70_000]) + gzip.compress(text[70_000:])
    cuts = [0, 1, 2, 5, 11, 500, len(packed) // 3, len(packed) // 2, len(packed) - 9]
    cuts += [len(packed) - 4, len(packed) - 1, len(packed), *rng.sample(range(len(packed)), 12)]
    member = len(gzip.compress(text[:70_000]))
    cuts += [member - 1, member, member + 1, member + 10]
    for cut in cuts:
        path = tmp_path / f"cut-{cut}.gz"
        path.write_bytes(packed[:cut])
        expected = b""
        rest = packed[:cut]
        while rest:  # every member, as zcat would
            d = zlib.decompressobj(31)
            expected += d.decompress(rest)
            if not d.eof:
                break
            rest = d.unused_data
        with open(path, "rb") as raw:
            reader = GzipReader(raw)
            got = []
            while True:
                try:
                    chunk = reader.read(rng.choice((1, 7, 4096, 1 << 20)))
                except EOFError:
                    error = True
                    break
                if not chunk:
                    error = False
                    break
                got.append(chunk)
            assert b"".join(got) == expected, cut
            complete = cut in (len(packed), member)
            assert error is not complete, cut
            assert reader.read(100) == b"", cut  # raised once, then the end


# -- 2. a CRLF log whose last line was still open ----------------------------------------------


def test_crlf_open_line_is_ended_by_its_crlf(url: str, tmp_path: Path, pricer: Pricer) -> None:
    """The \\r\\n written after a line read without its newline ends it: no blank line, the
    next lines keep their numbers, and an id-less response is stored once."""
    log = tmp_path / "app.log"
    log.write_bytes(_chat(1) + b"\r\n" + _chat(2))  # the writer is mid-line: no CRLF yet
    ck = tmp_path / "ck"

    first = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)
    assert (first.lines, first.accepted, first.inputs[0].blank) == (2, 2, 0)

    with open(log, "ab") as f:
        f.write(b"\r\n{bad line 3}\r\n" + _embedding() + b"\r\n")
    second = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)
    assert (second.lines, second.accepted, second.rejected) == (2, 1, 1)
    assert second.inputs[0].blank == 0
    assert second.inputs[0].resumed_at_line == 3
    assert [r.line for r in second.inputs[0].first_rejects] == [3]

    again = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, resume=False)
    assert (again.lines, again.accepted, again.duplicates, again.rejected) == (4, 0, 3, 1)
    assert count_rows(url) == 3


def test_an_idless_open_line_keeps_its_id_once_its_crlf_comes(
    tmp_path: Path, pricer: Pricer
) -> None:
    """An id-less response read as the open last line of a CRLF log, then read again whole
    (``--restart``) with its \\r\\n: the same event, not a second one."""
    log = tmp_path / "app.log"
    log.write_bytes(_chat(1) + b"\r\n" + _embedding())
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    first = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)
    with open(log, "ab") as f:
        f.write(b"\r\n")
    restarted = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, resume=False)

    assert (first.accepted, restarted.accepted, restarted.duplicates) == (2, 0, 2)
    assert count_rows(url) == 2


def test_a_lone_cr_keeps_the_line_open(tmp_path: Path, pricer: Pricer) -> None:
    """Resumed after an open line: nothing new, then only the \\r of a \\r\\n, then the \\n
    and a line: every run keeps the line open until its newline, no line is blank."""
    log = tmp_path / "app.log"
    log.write_bytes(_chat(1) + b"\r\n" + _chat(2))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    runs = [ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)]
    runs.append(ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck))  # nothing new
    with open(log, "ab") as f:
        f.write(b"\r")
    runs.append(ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck))
    with open(log, "ab") as f:
        f.write(b"\n{not json 3}\r\n")
    runs.append(ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck))

    assert [(r.lines, r.accepted, r.rejected, r.inputs[0].blank) for r in runs] == [
        (2, 2, 0, 0),
        (0, 0, 0, 0),
        (0, 0, 0, 0),
        (1, 0, 1, 0),
    ]
    assert [r.line for r in runs[3].inputs[0].first_rejects] == [3]


def test_crlf_reject_records_leave_out_the_cr(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(_chat(1) + b"\r\n" + b'{"broken":\r\n' + b"[1, 2]\r\n")
    ingest(log, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path / "ck")

    records = _records(Path(f"{log}.rejects.jsonl"))
    assert [(r["line"], r["bytes"], r["excerpt"]) for r in records] == [
        (2, 10, '{"broken":'),
        (3, 6, "[1, 2]"),
    ]


# -- 3. overlapping runs of one ingestion ------------------------------------------------------


def test_a_second_run_of_the_same_ingestion_is_refused(tmp_path: Path) -> None:
    """While an ingestion runs, the same command in another process exits 1 in one line
    naming the running pid, and touches neither the rejects file nor the ledger."""
    log = tmp_path / "app.log"
    log.write_bytes(
        b"".join((b"{not json %d" % i if i % 10 == 0 else _chat(i)) + b"\n" for i in range(1, 2001))
    )
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    seen: list[subprocess.CompletedProcess[str]] = []

    def second_run(p: IngestProgress) -> None:
        if p.committed and not seen:  # the first batch and its rejects are written
            seen.append(_cli(str(log), "--db", db, "--checkpoint-dir", str(ck), "-f", "json"))

    result = ingest(log, ledger=db, checkpoint_dir=ck, batch_lines=500, progress=second_run)

    (other,) = seen
    assert other.returncode == 1
    assert other.stderr.splitlines()[-1] == (
        f"error: {log}: already being ingested (pid {os.getpid()}); "
        "run it again once that run has ended"
    )
    doc = json.loads(other.stdout)
    assert (doc["lines"], doc["accepted"], doc["rejected"]) == (0, 0, 0)
    assert (result.accepted, result.rejected) == (1800, 200)
    lines = [r["line"] for r in _records(Path(f"{log}.rejects.jsonl"))]
    assert lines == list(range(10, 2001, 10))
    assert count_rows(db) == 1800

    # the lock is let go with the run: the same command now runs (nothing new to read)
    after = _cli(str(log), "--db", db, "--checkpoint-dir", str(ck), "-f", "json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["lines"] == 0


def test_two_overlapping_processes_write_each_reject_once(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(
        b"".join((b"{not json %d" % i if i % 10 == 0 else _chat(i)) + b"\n" for i in range(20_000))
    )
    db = f"sqlite:///{tmp_path / 'l.db'}"
    cmd = [
        str(COSTLEDGER),
        "ingest",
        str(log),
        "--db",
        db,
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    ]
    cmd += ["--batch-size", "1000", "-f", "json"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [
        (p.wait(timeout=300), p.stdout.read(), p.stderr.read())
        for p in procs
        if p.stdout and p.stderr
    ]

    records = [r["line"] for r in _records(Path(f"{log}.rejects.jsonl"))]
    assert records == list(range(1, 20_000, 10))  # line i + 1 holds "{not json i"
    assert count_rows(db) == 18_000
    for code, out, err in outcomes:
        doc = json.loads(out)
        if code == 1:  # it ran while the other one did
            assert "already being ingested (pid " in err.splitlines()[-1]
            assert doc["lines"] == 0
        else:
            assert code == 0, err
    assert sum(json.loads(out)["rejected"] for _, out, _ in outcomes) == 2000


# -- 4. responses without an id ----------------------------------------------------------------


def test_idless_lines_of_two_files_are_two_calls(url: str, tmp_path: Path, pricer: Pricer) -> None:
    """Two daily logs whose id-less lines are identical, at the same line numbers: the
    second day's calls were dropped as duplicates of the first's. The files differ in
    their first line, which now identifies each."""
    ck = tmp_path / "ck"
    for day in (1, 2):
        (tmp_path / f"embed-0{day}.jsonl").write_bytes(
            _chat(day) + b"\n" + _embedding() + b"\n" + _embedding() + b"\n"
        )
    first = ingest(tmp_path / "embed-01.jsonl", ledger=url, pricer=pricer, checkpoint_dir=ck)
    second = ingest(tmp_path / "embed-02.jsonl", ledger=url, pricer=pricer, checkpoint_dir=ck)

    assert (first.accepted, first.duplicates) == (3, 0)
    assert (second.accepted, second.duplicates) == (3, 0)
    assert count_rows(url) == 6

    # The case left (docs/ingestion.md): files whose id-less lines, and their first bytes up
    # to them, are identical cannot be told apart from one file read twice.
    for day in (3, 4):
        (tmp_path / f"embed-0{day}.jsonl").write_bytes(
            _embedding(9) + b"\n" + _embedding(9) + b"\n"
        )
    same = [
        ingest(tmp_path / f"embed-0{day}.jsonl", ledger=url, pricer=pricer, checkpoint_dir=ck)
        for day in (3, 4)
    ]
    assert [(r.accepted, r.duplicates) for r in same] == [(2, 0), (0, 2)]


def test_idless_ids_survive_rename_recompression_and_appends(
    tmp_path: Path, pricer: Pricer
) -> None:
    """The input's identity is its first bytes up to the line (at most 4 KiB): the same
    file renamed and gzipped, or grown past 4 KiB since, gives its old lines the same ids."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    lines = [_embedding(tokens) for tokens in range(1, 11)]  # 10 small lines: under 4 KiB
    log = tmp_path / "embed.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert log.stat().st_size < 4096
    assert ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck).accepted == 10

    grown = lines + [_embedding(tokens) for tokens in range(11, 111)]
    log.write_bytes(b"\n".join(grown) + b"\n")  # the log grew past 4 KiB
    assert log.stat().st_size > 4096
    resumed = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck)
    assert (resumed.accepted, resumed.duplicates) == (100, 0)
    restarted = ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck, resume=False)
    assert (restarted.accepted, restarted.duplicates) == (0, 110)

    rotated = tmp_path / "embed.log.1.gz"  # logrotate: renamed, compressed
    rotated.write_bytes(gzip.compress(log.read_bytes()))
    again = ingest(rotated, ledger=url, pricer=pricer, checkpoint_dir=ck)
    assert (again.accepted, again.duplicates) == (0, 110)
    assert count_rows(url) == 110

    # line n's id: its bytes, its number, and the input's first bytes up to it (<= 4 KiB)
    data = log.read_bytes()
    ends = [len(b"\n".join(grown[:n])) for n in range(1, 111)]
    expected = {
        response_event_id(None, line, n, hashlib.sha256(data[: min(end, 4096)]).hexdigest())
        for n, (line, end) in enumerate(zip(grown, ends, strict=True), 1)
    }
    assert _ids(url) == expected


def _legacy_ids(url: str, lines: list[bytes], data: bytes) -> None:
    """Make the ledger what an earlier version left: the id-less lines under their old ids."""
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.begin() as conn:
            for n, line in enumerate(lines, 1):
                end = len(b"\n".join(lines[:n]))
                new = response_event_id(
                    None, line, n, hashlib.sha256(data[: min(end, 4096)]).hexdigest()
                )
                conn.execute(
                    sa.text("UPDATE costledger_events SET id = :old WHERE id = :new"),
                    {"old": response_event_id(None, line, n), "new": new},
                )
    finally:
        engine.dispose()


def test_lines_an_earlier_version_stored_are_not_stored_twice(
    url: str, tmp_path: Path, pricer: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    """A ledger holding id-less lines under the ids an earlier version gave them (bytes and
    line number): reading that file again after the upgrade adds nothing, and says why."""
    lines = [_embedding(tokens) for tokens in range(1, 601)] + [_chat(1)]
    log = tmp_path / "embed.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    ck = tmp_path / "ck"
    assert ingest(log, ledger=url, pricer=pricer, checkpoint_dir=ck).accepted == 601
    _legacy_ids(url, lines[:600], log.read_bytes())
    assert response_event_id(None, lines[0], 1) in _ids(url)

    with caplog.at_level(logging.WARNING, logger="costledger"):
        again = ingest(
            log, ledger=url, pricer=pricer, checkpoint_dir=ck, resume=False, batch_lines=250
        )

    assert (again.accepted, again.duplicates) == (0, 601)
    note = (
        "600 line(s) without a response id matched events an earlier version of costledger "
        "stored (by the line's bytes and number only) and were counted as duplicates; if this "
        "input was not ingested before, they are calls of another file's: see docs/ingestion.md"
    )
    assert again.inputs[0].notes == (note,)
    assert [r.getMessage() for r in caplog.records] == [f"{log}: {note}"]
    assert count_rows(url) == 601


# -- minor: exact integers in reasons ----------------------------------------------------------


def test_a_huge_integer_is_named_exactly_in_the_reason(tmp_path: Path) -> None:
    huge = 2**70
    log = tmp_path / "big.jsonl"
    log.write_bytes(
        json.dumps(
            {
                "id": "chatcmpl-huge",
                "object": "chat.completion",
                "created": 1748779200,
                "model": "gpt-4o-mini",
                "usage": {"prompt_tokens": huge, "completion_tokens": 1, "total_tokens": 11},
            }
        ).encode()
        + b"\n"
        + json.dumps(
            {
                "id": "chatcmpl-late",
                "created": huge,
                "model": "gpt-4o-mini",
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        ).encode()
        + b"\n"
    )
    result = ingest(log, ledger=f"sqlite:///{tmp_path / 'l.db'}", checkpoint_dir=tmp_path / "ck")

    assert [(r.line, r.field, r.reason) for r in result.inputs[0].first_rejects] == [
        (
            1,
            "usage.prompt_tokens",
            "usage field 'usage.prompt_tokens' gives 1180591620717411303424 input tokens in "
            "all, more than the 10^16 one call may count",
        ),
        (2, "created", "response field 'created' is not a valid time: 1180591620717411303424"),
    ]
