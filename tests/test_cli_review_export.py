"""``costledger export -o FILE``: the format comes from a suffix the command knows (.csv,
.jsonl, .ndjson, .parquet, and .gz for gzip csv/jsonl); an unknown suffix is a usage error,
never CSV under a name that promises something else."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent, ingest
from costledger._ledger import Ledger
from costledger._reports import export
from costledger.cli import app

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
TOTALS = ("0.000123456789", "2.5", "10")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            [
                UsageEvent(
                    model="gpt-4o",
                    timestamp=JUNE,
                    usage=Usage(input_tokens=10, output_tokens=5),
                    cost=Cost("priced", total=Decimal(total), currency="USD"),
                    user=f"u{i}",
                )
                for i, total in enumerate(TOTALS)
            ]
        )
    return url


def read_back(path: Path, fmt: str) -> list[str]:
    """The exported totals, read the way the format is read."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        assert data[:2] == b"\x1f\x8b"
        data = gzip.decompress(data)
    if fmt == "csv":
        return [r["total_cost"] for r in csv.DictReader(io.StringIO(data.decode()))]
    if fmt == "jsonl":
        return [json.loads(line)["costledger.cost.total"] for line in data.splitlines()]
    import pyarrow.parquet as pq

    return [format(v.as_py().normalize(), "f") for v in pq.read_table(path).column("total_cost")]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("calls.csv", "csv"),
        ("calls.CSV", "csv"),
        ("calls", "csv"),
        ("calls.jsonl", "jsonl"),
        ("calls.ndjson", "jsonl"),
        ("calls.parquet", "parquet"),
        ("calls.csv.gz", "csv"),
        ("calls.jsonl.gz", "jsonl"),
        ("calls.ndjson.gz", "jsonl"),
        ("calls.JSONL.GZ", "jsonl"),
        ("calls.gz", "csv"),
    ],
)
def test_the_suffix_decides_format_and_compression(
    db: str, tmp_path: Path, name: str, fmt: str
) -> None:
    out = tmp_path / name
    result = run("export", "--db", db, "-o", str(out))
    assert result.exit_code == 0, result.output
    gz = ", gzip" if name.lower().endswith(".gz") else ""
    assert result.stderr.strip() == f"exported 3 calls to {out} ({fmt}{gz})"
    assert read_back(out, fmt) == list(TOTALS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["calls.db", name])


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("calls.json", ".json"),
        ("calls.json.gz", ".json.gz"),
        ("calls.tsv", ".tsv"),
        ("calls.tar.gz", ".tar.gz"),
        ("calls.XLSX", ".XLSX"),
    ],
)
def test_an_unknown_suffix_is_a_usage_error(
    db: str, tmp_path: Path, name: str, suffix: str
) -> None:
    out = tmp_path / name
    result = run("export", "--db", db, "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: Invalid value for '--output': cannot tell the format of {str(out)!r} from "
        f"its suffix {suffix!r}; use one of .csv, .jsonl, .ndjson (JSON lines), .parquet; "
        ".csv.gz, .jsonl.gz, .ndjson.gz (gzip), or give --format "
        "(see 'costledger export --help')"
    )
    assert not out.exists()
    assert not out.with_name(name + ".part").exists()


def test_format_given_wins_over_an_unknown_suffix_and_gz_still_compresses(
    db: str, tmp_path: Path
) -> None:
    out = tmp_path / "calls.json"
    assert run("export", "--db", db, "-o", str(out), "-f", "jsonl").exit_code == 0
    assert read_back(out, "jsonl") == list(TOTALS)
    packed = tmp_path / "calls.data.gz"
    assert run("export", "--db", db, "-o", str(packed), "-f", "jsonl").exit_code == 0
    assert read_back(packed, "jsonl") == list(TOTALS)


def test_parquet_gz_is_refused(db: str, tmp_path: Path) -> None:
    out = tmp_path / "calls.parquet.gz"
    result = run("export", "--db", db, "-o", str(out))
    assert result.exit_code == 2
    assert "Parquet compresses its own columns; write it without .gz" in result.stderr
    result = run("export", "--db", db, "-o", str(tmp_path / "x.gz"), "-f", "parquet")
    assert result.exit_code == 2
    with pytest.raises(ValueError, match="Parquet compresses its own columns"):
        export(db, out, "parquet")
    assert not out.exists()


def test_api_writes_gzip_for_a_gz_path(db: str, tmp_path: Path) -> None:
    out = tmp_path / "calls.csv.gz"
    result = export(db, out, "csv")
    assert (result.rows, result.path) == (3, out)
    assert read_back(out, "csv") == list(TOTALS)
    with gzip.open(out) as f:  # the name inside is the file's without .gz
        assert f.read(2) == b"id"
    assert out.read_bytes()[10:20] == b"calls.csv\x00"


def test_a_jsonl_gz_export_ingests_back(db: str, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl.gz"
    assert run("export", "--db", db, "-o", str(out)).exit_code == 0
    back = f"sqlite:///{tmp_path / 'back.db'}"
    result = ingest([str(out)], ledger=back, checkpoint_dir=tmp_path / "ck")
    assert (result.accepted, result.rejected) == (3, 0)
    assert result.costs == {"USD": sum((Decimal(t) for t in TOTALS), Decimal(0))}
