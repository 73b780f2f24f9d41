"""``costledger ingest logs/*.jsonl`` (a cron job's glob) no longer reads back its own
``<input>.rejects.jsonl`` files; a ``--rejects`` that is an input is refused; the failure
message names the rejects file of the input whose lines were rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger import ingest
from costledger._ingest._run import is_rejects_file
from costledger.cli import app

from .ingest_support import count_rows, make_event, own_line, write_lines


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["ingest", *args])
    return result.exit_code, result.stdout, result.stderr


def glob(logs: Path) -> list[str]:
    return sorted(str(p) for p in logs.glob("*.jsonl"))


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.jsonl", [own_line(make_event(1)), b"not json"])
    return logs


def test_a_glob_skips_the_rejects_files_of_earlier_runs(logs: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    common = ("--db", db, "--checkpoint-dir", str(tmp_path / "ck"))
    code, _, err = run(*glob(logs), *common)
    assert code == 0, err
    rejects = logs / "app.jsonl.rejects.jsonl"
    first = rejects.read_bytes()
    assert json.loads(first)["line"] == 2

    for _ in range(2):  # every later run sees the rejects file in the glob
        assert glob(logs) == [str(logs / "app.jsonl"), str(rejects)]
        code, _, err = run(*glob(logs), *common, "-f", "json")
        assert code == 0, err
        assert sorted(p.name for p in logs.iterdir()) == ["app.jsonl", "app.jsonl.rejects.jsonl"]
        assert rejects.read_bytes() == first  # not read, not rewritten
    doc = json.loads(run(*glob(logs), *common, "-f", "json")[1])
    skipped = doc["inputs"][1]
    assert skipped["input"] == str(rejects)
    assert skipped["skipped"].startswith("skipped: a rejects file costledger wrote")
    assert (skipped["lines"], skipped["rejected"]) == (0, 0)
    assert doc["inputs"][0]["skipped"] is None
    assert count_rows(db) == 1

    code, _, err = run(*glob(logs), *common)  # the table says so on stderr
    assert code == 0
    assert f"{rejects}: skipped: a rejects file costledger wrote" in err


def test_only_rejects_files_read_nothing_exit_1(logs: Path, tmp_path: Path) -> None:
    common = ("--db", f"sqlite:///{tmp_path / 'l.db'}", "--checkpoint-dir", str(tmp_path / "ck"))
    assert run(*glob(logs), *common)[0] == 0
    code, _, err = run(str(logs / "app.jsonl.rejects.jsonl"), *common)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: nothing to read: every input is a rejects file costledger wrote (skipped)"
    )


def test_a_log_named_like_a_rejects_file_is_read(tmp_path: Path) -> None:
    # the name alone does not make a rejects file: its first line must be a reject record
    log = write_lines(tmp_path / "x.rejects.jsonl", [own_line(make_event(n)) for n in (1, 2)])
    assert not is_rejects_file(log)
    db = f"sqlite:///{tmp_path / 'l.db'}"
    result = ingest([str(log)], ledger=db, checkpoint_dir=tmp_path / "ck")
    assert (result.accepted, result.inputs[0].skipped) == (2, None)
    assert count_rows(db) == 2


def test_api_skips_rejects_files_too(logs: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ingest(glob(logs), ledger=db, checkpoint_dir=tmp_path / "ck")
    rejects = logs / "app.jsonl.rejects.jsonl"
    assert is_rejects_file(rejects)
    result = ingest(glob(logs), ledger=db, checkpoint_dir=tmp_path / "ck", resume=False)
    assert [r.skipped is not None for r in result.inputs] == [False, True]
    assert (result.lines, result.accepted, result.duplicates, result.rejected) == (2, 0, 1, 1)
    assert result.ok
    assert not (logs / "app.jsonl.rejects.jsonl.rejects.jsonl").exists()


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink"])
def test_rejects_equal_to_an_input_is_a_usage_error(
    logs: Path, tmp_path: Path, spelling: str
) -> None:
    log = logs / "app.jsonl"
    before = log.read_bytes()
    target = {
        "same": str(log),
        "dot": str(logs / "." / "app.jsonl"),
        "symlink": str(tmp_path / "link.jsonl"),
    }[spelling]
    if spelling == "symlink":
        Path(target).symlink_to(log)
    db = f"sqlite:///{tmp_path / 'l.db'}"
    code, _, err = run(str(log), "--rejects", target, "--db", db)
    assert code == 2
    assert err.startswith(f"error: Invalid value for '--rejects': {target!r} is also an input")
    assert str(log) in err
    assert log.read_bytes() == before
    with pytest.raises(ValueError, match="is also an input"):
        ingest([str(log)], ledger=db, rejects=target, checkpoint_dir=tmp_path / "ck")
    assert log.read_bytes() == before


def test_a_new_rejects_file_is_fine(logs: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    out = tmp_path / "all.rejects.jsonl"
    code, _, err = run(
        str(logs / "app.jsonl"),
        "--rejects",
        str(out),
        "--db",
        db,
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert code == 0, err
    assert json.loads(out.read_bytes())["line"] == 2


def test_failure_names_the_rejects_file_of_the_input_that_failed(
    logs: Path, tmp_path: Path
) -> None:
    common = ("--db", f"sqlite:///{tmp_path / 'l.db'}", "--checkpoint-dir", str(tmp_path / "ck"))
    assert run(*glob(logs), *common)[0] == 0  # app.jsonl.rejects.jsonl now exists
    bad = write_lines(logs / "bad.jsonl", [b"nope", b"[]"])
    code, _, err = run(str(logs / "app.jsonl"), str(bad), *common)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"error: every line was rejected (2 lines); reasons in {bad}.rejects.jsonl"
    )
