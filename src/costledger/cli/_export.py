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


def _format_of(output: Path, given: ExportFormat | None) -> ExportFormat:
    """The format of ``output``: ``given`` (--format), else its suffix, read from the
    Python ``export``'s table (``EXPORT_SUFFIXES``); a name with no suffix is CSV. A
    suffix the command does not know is a usage error rather than CSV under a name that
    promises something else (``calls.json``, ``calls.jsonl.bak``)."""
    from .._reports._export import EXPORT_SUFFIXES_TEXT, suffix_format

    inferred, shown, compressed = suffix_format(output.name)
    if given is not None:
        chosen = given
    elif inferred is not None:
        chosen = ExportFormat(inferred)
    else:
        raise typer.BadParameter(
            f"cannot tell the format of {str(output)!r} from its suffix {shown!r}; "
            f"use one of {EXPORT_SUFFIXES_TEXT}, or give --format",
            param_hint="'--output'",
        )
    if compressed and chosen is ExportFormat.parquet:
        raise typer.BadParameter(
            f"{str(output)!r}: Parquet compresses its own columns; write it without .gz "
            "(.gz means gzip for csv and jsonl)",
            param_hint="'--output'",
        )
    return chosen


@selecting
def export(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (default, or -: stdout). Written to a hidden "
            ".FILE.<random>.part beside it, then renamed. "
            "A name ending in .gz is gzip-compressed (csv, jsonl).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="csv, jsonl (costledger.usage/1 records) or parquet (default: from the "
            "output's suffix, .csv, .jsonl, .ndjson or .parquet, with .gz for gzip; csv "
            "without -o or for a name with no suffix).",
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

    if output is not None and str(output) == "-":
        output = None  # -o -: stdout, as without -o
    if output is not None and output.is_dir():
        raise CliError(f"--output {str(output)!r} is a directory; give a file name")
    chosen_format = _format_of(output, fmt) if output is not None else fmt or ExportFormat.csv
    if output is None and chosen_format is ExportFormat.parquet and sys.stdout.isatty():
        # binary a terminal cannot show (a pipe or a redirect takes it, as gzip does)
        raise typer.BadParameter(
            "parquet is not written to a terminal: give -o FILE.parquet, or pipe or "
            "redirect stdout",
            param_hint="'--format'",
        )
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
        from .._reports._export import GZIP_SUFFIX

        gzipped = output.name.lower().endswith(GZIP_SUFFIX)
        how = f"{chosen_format.value}, gzip" if gzipped else None
        note(f"exported {result.rows:,} calls to {output} ({how or chosen_format.value})")
