"""The Python ``export(ledger, path)`` reads the format from the path's suffix, with the
command line's table (one table: ``EXPORT_SUFFIXES``): ``export(l, "calls.jsonl")`` writes
JSON lines, not CSV under a name that promises something else. No suffix: csv. An
unknown suffix: ``ValueError`` naming the path and the known suffixes. A ``format`` given
wins over the suffix. A stream is csv unless ``format`` says otherwise."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger._reports import export
from costledger._reports._export import EXPORT_COLUMNS, EXPORT_SUFFIXES, EXPORT_SUFFIXES_TEXT
from costledger.cli import app

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
EVENTS = (
    ("ev-1", "u1", 10, 5, "0.000123456789"),
    ("ev-2", "u2", 2000, 100, "2.5"),
)
CSV_HEADER = ",".join(EXPORT_COLUMNS)


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            [
                UsageEvent(
                    id=event_id,
                    model="gpt-4o",
                    provider="openai",
                    timestamp=JUNE,
                    usage=Usage(input_tokens=inp, output_tokens=out),
                    cost=Cost("priced", total=Decimal(total), currency="USD"),
                    user=user,
                )
                for event_id, user, inp, out, total in EVENTS
            ]
        )
    return url


def streamed(db: str, fmt: str) -> bytes:
    """The export with ``fmt`` given, to a stream: what each file must hold, byte for byte."""
    buffer = io.BytesIO()
    assert export(db, buffer, fmt).rows == 2  # type: ignore[arg-type]
    return buffer.getvalue()


def check_csv(data: bytes) -> None:
    text = data.decode()
    assert text.splitlines()[0] == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [
        (r["id"], r["user"], r["input_tokens"], r["output_tokens"], r["total_cost"]) for r in rows
    ] == [("ev-1", "u1", "10", "5", "0.000123456789"), ("ev-2", "u2", "2000", "100", "2.5")]


def check_jsonl(data: bytes) -> None:
    records = [json.loads(line) for line in data.splitlines()]
    assert [
        (r["costledger.id"], r["costledger.user"], r["costledger.cost.total"]) for r in records
    ] == [("ev-1", "u1", "0.000123456789"), ("ev-2", "u2", "2.5")]
    assert {(r["event"], r["schema"]) for r in records} == {("llm.usage", "costledger.usage/1")}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("calls.jsonl", "jsonl"),
        ("calls.ndjson", "jsonl"),
        ("calls.JSONL", "jsonl"),
        ("calls.jsonl.gz", "jsonl"),
        ("calls.ndjson.GZ", "jsonl"),
        ("calls.csv", "csv"),
        ("calls.csv.gz", "csv"),
        ("calls", "csv"),
        ("calls.gz", "csv"),
        ("calls.parquet", "parquet"),
    ],
)
def test_the_format_comes_from_the_suffix(db: str, tmp_path: Path, name: str, fmt: str) -> None:
    out = tmp_path / name
    result = export(db, out)
    assert (result.rows, result.format, result.path) == (2, fmt, out)
    data = out.read_bytes()
    if name.lower().endswith(".gz"):
        assert data[:2] == b"\x1f\x8b"
        data = gzip.decompress(data)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column_names == list(EXPORT_COLUMNS)
        assert table.column("id").to_pylist() == ["ev-1", "ev-2"]
        assert table.column("total_cost").to_pylist() == [
            Decimal("0.000123456789000000"),
            Decimal("2.500000000000000000"),
        ]
    else:
        assert data == streamed(db, fmt)
        (check_csv if fmt == "csv" else check_jsonl)(data)
    assert list(tmp_path.glob("*.part")) == []


def test_the_command_line_reads_the_same_table(db: str, tmp_path: Path) -> None:
    """Every suffix of the one table: ``costledger export -o`` and ``export()`` write the
    same bytes (gzip too: no name or time in its header but the file's own name)."""
    for suffix in EXPORT_SUFFIXES:
        for gz in ("", ".gz") if suffix != ".parquet" else ("",):
            name = f"calls{suffix}{gz}"
            by_cli, by_api = tmp_path / "cli" / name, tmp_path / "api" / name
            by_cli.parent.mkdir(exist_ok=True)
            by_api.parent.mkdir(exist_ok=True)
            run = CliRunner().invoke(app, ["export", "--db", db, "-o", str(by_cli)])
            assert run.exit_code == 0, run.output
            assert export(db, by_api).format == EXPORT_SUFFIXES[suffix]
            if suffix != ".parquet":  # parquet files carry a writer's metadata
                assert by_cli.read_bytes() == by_api.read_bytes(), name


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("calls.json", ".json"),
        ("calls.txt.gz", ".txt.gz"),
        ("calls.jsonl.bak", ".bak"),
        ("june.2025.xlsx", ".xlsx"),
    ],
)
def test_an_unknown_suffix_is_refused(db: str, tmp_path: Path, name: str, shown: str) -> None:
    out = tmp_path / name
    with pytest.raises(ValueError, match="cannot tell the format") as info:
        export(db, out)
    assert str(info.value) == (
        f"export to {str(out)!r}: cannot tell the format from its suffix {shown!r}; "
        f"use one of {EXPORT_SUFFIXES_TEXT}, or pass format= (csv, jsonl, parquet)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.db"]


def test_a_given_format_wins_over_the_suffix(db: str, tmp_path: Path) -> None:
    """``format=`` is the caller's word, as ``--format`` is the command's: it wins over
    the suffix, a contradicting one (``x.parquet`` as csv) or an unknown one."""
    out = tmp_path / "x.parquet"
    result = export(db, out, "csv")
    assert (result.rows, result.format) == (2, "csv")
    assert out.read_bytes() == streamed(db, "csv")
    check_csv(out.read_bytes())

    out = tmp_path / "calls.txt"
    assert export(db, out, format="jsonl").format == "jsonl"
    assert out.read_bytes() == streamed(db, "jsonl")
    check_jsonl(out.read_bytes())

    out = tmp_path / "calls.csv.gz"
    assert export(db, out, "jsonl").format == "jsonl"
    assert gzip.decompress(out.read_bytes()) == streamed(db, "jsonl")


def test_a_stream_is_csv_unless_told(db: str) -> None:
    buffer = io.BytesIO()
    result = export(db, buffer)
    assert (result.rows, result.format, result.path) == (2, "csv", None)
    check_csv(buffer.getvalue())
    assert buffer.getvalue() == streamed(db, "csv")


def test_suffix_errors_and_options_checked_against_the_inferred_format(
    db: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="Parquet compresses its own columns"):
        export(db, tmp_path / "calls.parquet.gz")
    with pytest.raises(ValueError, match="csv_raw applies to the csv format, not jsonl"):
        export(db, tmp_path / "calls.jsonl", csv_raw=True)
    with pytest.raises(ValueError, match=r"export format must be one of csv, jsonl, parquet"):
        export(db, tmp_path / "calls.csv", "xlsx")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.db"]
    raw = tmp_path / "raw.csv"
    assert export(db, raw, csv_raw=True).format == "csv"
    check_csv(raw.read_bytes())
