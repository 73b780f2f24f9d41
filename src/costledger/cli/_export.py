"""``costledger export``: the selected events as CSV, JSON lines or Parquet."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._app import EXIT_BAD_INPUT, CliError
from ._options import Selection, open_ledger, selecting
from ._output import note

__all__ = ["export"]


class ExportFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


_SUFFIXES = {
    ".csv": ExportFormat.csv,
    ".jsonl": ExportFormat.jsonl,
    ".parquet": ExportFormat.parquet,
}


@selecting
def export(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (default: stdout). Written to FILE.part, then renamed.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="csv, jsonl (costledger.usage/1 records) or parquet (default: from the "
            "output's suffix, else csv).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    csv_raw: Annotated[
        bool,
        typer.Option(
            "--csv-raw",
            help="CSV: write text as stored, for a program to read. By default a text that "
            "starts with = + - @, a tab or a carriage return gets a leading ' so that a "
            "spreadsheet shows it instead of running it as a formula.",
        ),
    ] = False,
    *,
    selected: Selection,
) -> None:
    """Write the selected calls, in time order, streaming (constant memory)."""
    from .._reports import export as write

    chosen_format = fmt
    if chosen_format is None:
        chosen_format = _SUFFIXES.get(output.suffix.lower(), ExportFormat.csv) if output else None
        chosen_format = chosen_format or ExportFormat.csv
    if csv_raw and chosen_format is not ExportFormat.csv:
        raise typer.BadParameter(
            f"applies to the csv format, not {chosen_format.value}", param_hint="'--csv-raw'"
        )
    if output is not None and not output.parent.is_dir():
        raise CliError(f"cannot write {str(output)!r}: directory {str(output.parent)!r} is missing")
    with open_ledger(selected.db) as ledger:
        if output is None:
            sys.stdout.flush()
            result = write(
                ledger, sys.stdout.buffer, chosen_format.value, csv_raw=csv_raw, **selected.api
            )
            sys.stdout.buffer.flush()
        else:
            result = write(ledger, output, chosen_format.value, csv_raw=csv_raw, **selected.api)
    if result.rows == 0:
        raise CliError(f"no calls match ({selected.describe()})", EXIT_BAD_INPUT)
    if output is not None:
        note(f"exported {result.rows:,} calls to {output} ({chosen_format.value})")
