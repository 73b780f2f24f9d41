"""``costledger ingest`` through typer's CliRunner and a real process: summaries, JSON, stdin,
gzip, exit codes, and errors that are one line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
from typer.testing import CliRunner

from costledger.cli import app

from .ingest_support import LITELLM_PAYLOADS, count_rows, make_event, own_line, write_lines


def _run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["ingest", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_summary_table_and_rejects_exit_0(tmp_path: Path) -> None:
    lines = [own_line(make_event(n)) for n in range(1, 5)] + [b'{"broken":', b"[]"]
    path = write_lines(tmp_path / "usage.log", lines)
    db = f"sqlite:///{tmp_path / 'l.db'}"
    code, out, err = _run(str(path), "--db", db, "--checkpoint-dir", str(tmp_path))
    assert code == 0, err
    row = next(line for line in out.splitlines() if "usage.log" in line)
    assert row.split("│")[1:6] == [" 6 ", " 4 ", " 0 ", " 2 ", " 0 "] or [
        cell.strip() for cell in row.split("│")[1:6]
    ] == ["6", "4", "0", "2", "0"]
    assert "0.00078 USD" in row  # 4 x 0.000195
    assert "2 rejected line(s)" in err
    assert "line 5: not valid JSON" in err
    assert f"{path}.rejects.jsonl" in err
    assert count_rows(db) == 4


def test_json_summary_is_exact(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    code, out, _ = _run(
        str(LITELLM_PAYLOADS), "--db", db, "--checkpoint-dir", str(tmp_path), "--format", "json"
    )
    assert code == 0
    doc = json.loads(out)
    assert (doc["lines"], doc["accepted"], doc["duplicates"], doc["rejected"]) == (3, 3, 0, 0)
    assert doc["costs"] == {"USD": "0.00001370"}
    assert Decimal(doc["costs"]["USD"]) == Decimal("0.0000137")
    assert doc["ok"] is True
    [one] = doc["inputs"]
    assert one["formats"] == {"litellm": 3}
    assert one["rejects_file"] is None

    code, out, _ = _run(
        str(LITELLM_PAYLOADS), "--db", db, "--checkpoint-dir", str(tmp_path), "-f", "json",
        "--restart",
    )  # fmt: skip
    assert code == 0
    assert (json.loads(out)["accepted"], json.loads(out)["duplicates"]) == (0, 3)


def test_csv_summary(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.log", [own_line(make_event(1))])
    code, out, _ = _run(
        str(path), "--db", f"sqlite:///{tmp_path / 'l.db'}", "--checkpoint-dir", str(tmp_path),
        "--format", "csv",
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == [
        "input,lines,accepted,duplicates,rejected,unpriced,blank,cost_USD",
        f"{path},1,1,0,0,0,0,0.000195000",
    ]


def test_stdin_plain_and_gzip(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    data = b"".join(own_line(make_event(n)) + b"\n" for n in range(1, 4))
    code, out, _ = _run("-", "--db", db, "-f", "json", stdin=data)
    assert code == 0
    assert json.loads(out)["accepted"] == 3
    more = b"".join(own_line(make_event(n)) + b"\n" for n in range(3, 6))
    code, out, _ = _run("-", "--db", db, "-f", "json", stdin=gzip.compress(more))
    assert code == 0
    assert (json.loads(out)["accepted"], json.loads(out)["duplicates"]) == (2, 1)
    assert count_rows(db) == 5


def test_price_book_prices_a_model_no_source_knows(tmp_path: Path) -> None:
    payload = json.loads(LITELLM_PAYLOADS.read_text().splitlines()[0])
    payload["model"] = "acme-llm-9000"
    payload["response"] = {**payload["response"], "model": "acme-llm-9000"}
    path = write_lines(tmp_path / "p.jsonl", [orjson.dumps(payload)])
    book = tmp_path / "book.toml"
    book.write_text('["acme-llm-9000"]\ninput = "1.5"\noutput = "2"\n')
    db = f"sqlite:///{tmp_path / 'l.db'}"
    code, out, err = _run(str(path), "--db", db, "--checkpoint-dir", str(tmp_path))
    assert code == 0
    assert "no price for acme-llm-9000 (1)" in err
    assert "no price for model" not in err  # the pricer's own warning: the summary says it
    code, out, _ = _run(
        str(path), "--db", db, "--checkpoint-dir", str(tmp_path), "-f", "json", "--restart"
    )
    assert code == 0
    assert json.loads(out)["unpriced"] == 0  # a duplicate now; nothing unpriced was added
    code, out, _ = _run(
        str(path), "--db", f"sqlite:///{tmp_path / 'm.db'}", "--checkpoint-dir", str(tmp_path),
        "--price-book", str(book), "-f", "json",
    )  # fmt: skip
    assert code == 0
    # 10 x 1.5 + 20 x 2 per million, as the rate card's exact arithmetic writes it
    assert json.loads(out)["costs"] == {"USD": "0.0000550"}


def test_every_line_rejected_exits_1_in_one_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "junk.log", [b"hello", b"world"])
    code, out, err = _run(
        str(path), "--db", f"sqlite:///{tmp_path / 'l.db'}", "--checkpoint-dir", str(tmp_path)
    )
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: every line was rejected (2 lines); reasons in {path}.rejects.jsonl"]
    assert "Traceback" not in out + err


def test_empty_input_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    code, _, err = _run(
        str(path), "--db", f"sqlite:///{tmp_path / 'l.db'}", "--checkpoint-dir", str(tmp_path)
    )
    assert code == 1
    assert err.strip().splitlines()[-1] == "error: nothing to read: the input is empty"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = _run(str(tmp_path / "missing.log"))
    assert code == 2
    assert "does not exist" in err
    assert len(err.strip().splitlines()) == 1
    path = write_lines(tmp_path / "a.log", [own_line(make_event(1))])
    code, _, err = _run(str(path), "--max-line-bytes", "0")
    assert code == 2
    assert "--max-line-bytes" in err
    code, _, err = _run("-", "-")
    assert code == 2
    assert "stdin (-) can be read only once" in err


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.log", [own_line(make_event(1))])
    code, out, err = _run(
        str(path), "--db", "postgresql://nobody@127.0.0.1:1/none", "--checkpoint-dir", str(tmp_path)
    )
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ")
    assert "Traceback" not in out + err


def test_a_real_process_reading_a_pipe(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("costledger")
    db = f"sqlite:///{tmp_path / 'l.db'}"
    data = gzip.compress(b"".join(own_line(make_event(n)) + b"\n" for n in range(1, 11)))
    done = subprocess.run(
        [str(script), "ingest", "-", "--db", db, "--format", "json"],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["accepted"], doc["costs"]) == (10, {"USD": "0.001950000"})
    assert done.stderr == b""  # no progress bar off a terminal
