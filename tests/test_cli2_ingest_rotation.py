"""A cron job's ``costledger ingest logs/*.jsonl`` after a log rotation: the glob passes the
old ``app.jsonl.rejects.jsonl`` as an input, the new ``app.jsonl`` is read from its start
(which removes that rejects file); the rejects file is skipped, not a "cannot open" error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger import ingest
from costledger.cli import app

from .ingest_support import count_rows, make_event, own_line, write_lines


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["ingest", *args])
    return result.exit_code, result.stdout, result.stderr


def glob(logs: Path) -> list[str]:
    return sorted(str(p) for p in logs.glob("*.jsonl"))


@pytest.mark.parametrize("restart", [False, True])
def test_rotation_skips_the_rejects_file_the_glob_passed(tmp_path: Path, restart: bool) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app_log, rejects = logs / "app.jsonl", logs / "app.jsonl.rejects.jsonl"
    db = f"sqlite:///{tmp_path / 'l.db'}"
    common = ("--db", db, "--checkpoint-dir", str(tmp_path / "ck"), "-f", "json")

    write_lines(app_log, [own_line(make_event(1)), b"not json"])
    code, out, err = run(*glob(logs), *common)
    assert code == 0, err
    assert json.loads(out)["inputs"][0]["rejected"] == 1
    assert rejects.exists()

    write_lines(app_log, [own_line(make_event(2))])  # logrotate: a new, clean log
    inputs = glob(logs)
    assert inputs == [str(app_log), str(rejects)]
    code, out, err = run(*inputs, *common, *(["--restart"] if restart else []))
    assert code == 0, err
    assert err == ""
    doc = json.loads(out)
    assert (doc["lines"], doc["accepted"], doc["duplicates"], doc["rejected"]) == (1, 1, 0, 0)
    assert doc["costs"] == {"USD": "0.000195000"}
    assert doc["ok"] is True
    first, second = doc["inputs"]
    assert (first["input"], first["lines"], first["accepted"], first["rejected"]) == (
        str(app_log),
        1,
        1,
        0,
    )
    assert (first["skipped"], first["error"], first["rejects_file"]) == (None, None, None)
    assert second == {
        **second,
        "input": str(rejects),
        "lines": 0,
        "accepted": 0,
        "rejected": 0,
        "error": None,
        "skipped": "skipped: a rejects file costledger wrote (the rejected lines of a run), "
        "not a log",
    }
    assert sorted(p.name for p in logs.iterdir()) == ["app.jsonl"]  # this run rejected nothing
    assert count_rows(db) == 2

    # the next cron run: nothing new, only app.jsonl in the glob
    code, out, err = run(*glob(logs), *common)
    assert code == 0, err
    assert json.loads(out)["inputs"][0]["resumed_at_line"] == 2


def test_rotation_table_output(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app_log, rejects = logs / "app.jsonl", logs / "app.jsonl.rejects.jsonl"
    common = ("--db", f"sqlite:///{tmp_path / 'l.db'}", "--checkpoint-dir", str(tmp_path / "ck"))
    write_lines(app_log, [own_line(make_event(1)), b"not json"])
    assert run(*glob(logs), *common)[0] == 0
    write_lines(app_log, [own_line(make_event(2))])
    code, _, err = run(*glob(logs), *common)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == (
        f"{rejects}: skipped: a rejects file costledger wrote (the rejected lines of a run), "
        "not a log"
    )
    assert not any("error" in line or "cannot open" in line for line in lines)


def test_a_vanished_default_rejects_file_of_another_input_is_skipped(tmp_path: Path) -> None:
    # logrotate truncated the rejects file too (copytruncate): empty, so not recognisable
    # as a rejects file by its content; reading app.jsonl from its start removes it
    logs = tmp_path / "logs"
    logs.mkdir()
    app_log, rejects = logs / "app.jsonl", logs / "app.jsonl.rejects.jsonl"
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ck = tmp_path / "ck"
    write_lines(app_log, [own_line(make_event(1)), b"not json"])
    ingest(glob(logs), ledger=db, checkpoint_dir=ck)
    write_lines(app_log, [own_line(make_event(2))])
    rejects.write_bytes(b"")

    result = ingest(glob(logs), ledger=db, checkpoint_dir=ck)
    assert result.ok
    assert (result.lines, result.accepted, result.duplicates, result.rejected) == (1, 1, 0, 0)
    assert [(r.input, r.error) for r in result.inputs] == [
        (str(app_log), None),
        (str(rejects), None),
    ]
    assert result.inputs[1].skipped == (
        f"skipped: the rejects file of {app_log}, another input of this run (removed when "
        "that input was read from its start), not a log"
    )
    assert not rejects.exists()
    assert count_rows(db) == 2


def test_a_vanished_input_that_is_no_rejects_file_is_still_an_error(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    db = f"sqlite:///{tmp_path / 'l.db'}"
    write_lines(logs / "app.jsonl", [own_line(make_event(1))])
    result = ingest(
        [str(logs / "app.jsonl"), str(logs / "other.jsonl.rejects.jsonl")],
        ledger=db,
        checkpoint_dir=tmp_path / "ck",
    )
    assert result.errors == [
        f"{logs / 'other.jsonl.rejects.jsonl'}: cannot open: No such file or directory"
    ]
    assert not result.ok


def test_with_a_shared_rejects_file_a_vanished_default_rejects_file_is_an_error(
    tmp_path: Path,
) -> None:
    # --rejects: this run removes no <input>.rejects.jsonl, so one that is gone is an error
    logs = tmp_path / "logs"
    logs.mkdir()
    db = f"sqlite:///{tmp_path / 'l.db'}"
    write_lines(logs / "app.jsonl", [own_line(make_event(1))])
    gone = logs / "app.jsonl.rejects.jsonl"
    result = ingest(
        [str(logs / "app.jsonl"), str(gone)],
        ledger=db,
        rejects=tmp_path / "all.rejects.jsonl",
        checkpoint_dir=tmp_path / "ck",
    )
    assert result.errors == [f"{gone}: cannot open: No such file or directory"]
