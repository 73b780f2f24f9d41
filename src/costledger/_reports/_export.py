"""``export``: the selected events as CSV, JSON lines or Parquet, streamed in constant memory.

- ``csv``: one row per event, the ledger's columns (``EXPORT_COLUMNS``) in table order;
  money as exact decimal strings, timestamps ISO 8601 UTC, tags, metadata and
  price_context as JSON text, booleans ``true``/``false``, no value as an empty field;
  a text field that a spreadsheet would run as a formula (it starts with ``=``, ``+``,
  ``-``, ``@``, a tab or a carriage return) starts with ``'`` (``csv_raw=True``: as
  stored). ``csv_cell`` is that encoding for one value; every CSV the CLI prints uses it.
- ``jsonl``: one ``costledger.usage/1`` record per line (docs/log-schema.md), the same
  record the usage logger writes, so ``costledger ingest`` reads an export back.
- ``parquet``: the ledger's columns; money as ``decimal128(38, 18)`` (exactly the
  ledger's ``NUMERIC(38, 18)``), timestamps ``timestamp[us, UTC]``, tags
  ``list<string>``, metadata and price_context JSON text. Written one row group per
  ``batch_size`` events.

A path's format, unless given, comes from its suffix (``EXPORT_SUFFIXES``: ``.csv``,
``.jsonl``, ``.ndjson``, ``.parquet``; csv for a name with no suffix; any other suffix is
refused); ``costledger export -o`` reads it from the same table. A path whose name ends
with ``.gz`` is written gzip-compressed (csv and jsonl; Parquet compresses its own
columns, so ``.parquet.gz`` is refused).
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import json
import operator
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Literal, cast

from .._cost import money_text
from .._ledger._rows import COLUMNS, FLAG_COLUMNS, MONEY_COLUMNS, TOKEN_COLUMNS
from ._common import check_filters, open_ledger
from ._when import resolve_bounds

if TYPE_CHECKING:
    from .._ledger import Ledger, StoredEvent
    from .._tracker import LedgerLike

__all__ = [
    "EXPORT_COLUMNS",
    "EXPORT_FORMATS",
    "EXPORT_SUFFIXES",
    "EXPORT_SUFFIXES_TEXT",
    "GZIP_SUFFIX",
    "ExportFormat",
    "ExportResult",
    "csv_cell",
    "csv_text",
    "csv_writer",
    "export",
    "finite",
    "json_text",
    "replacing",
    "suffix_format",
]

ExportFormat = Literal["csv", "jsonl", "parquet"]
EXPORT_FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")
GZIP_SUFFIX = ".gz"
EXPORT_SUFFIXES: Mapping[str, ExportFormat] = MappingProxyType(
    {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
)
"""The file suffixes an export's format is read from (``export`` and ``costledger export
-o``), lower case; each but ``.parquet`` may be followed by ``.gz`` (gzip)."""
EXPORT_SUFFIXES_TEXT = (
    ".csv, .jsonl, .ndjson (JSON lines), .parquet; .csv.gz, .jsonl.gz, .ndjson.gz (gzip)"
)
"""``EXPORT_SUFFIXES`` as an error message lists them."""
_MONEY = frozenset(MONEY_COLUMNS)
_INTS = frozenset(TOKEN_COLUMNS)
_BOOLS = frozenset(FLAG_COLUMNS)


EXPORT_COLUMNS: tuple[str, ...] = COLUMNS
"""CSV and Parquet columns: the ledger table's, in its order."""


def finite(value: Any) -> Any:
    """``value`` with every infinite or NaN float (JSON has neither) replaced by ``None``,
    in nested dicts, lists and tuples too; the same object when there was none."""
    if isinstance(value, float):
        return None if value - value != 0.0 else value
    if isinstance(value, Mapping):
        items = {k: finite(v) for k, v in value.items()}
        same = all(items[k] is v for k, v in value.items())
        return value if same else items
    if isinstance(value, (list, tuple)):
        seq = [finite(v) for v in value]
        return value if all(a is b for a, b in zip(seq, value, strict=True)) else seq
    return value


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps`` that never writes ``Infinity`` or ``NaN`` (not JSON): they become null."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, **options)


@dataclass(frozen=True, slots=True)
class ExportResult:
    rows: int
    format: str
    path: Path | None


_FORMULA_START = frozenset("=+-@\t\r")
_NEGATIVE_NUMBER = re.compile(r"-\d+(?:\.\d+)?")


def csv_text(value: str) -> str:
    """A text field as a spreadsheet must not run it: one that starts with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return (``=HYPERLINK(...)``, ``+cmd|...``) gets a
    leading ``'``, which Excel, LibreOffice and Google Sheets read as "text" (OWASP's
    advice against CSV injection). A plain negative number (``-0.25``) is a number, not
    a formula, and stays as it is."""
    if value and value[0] in _FORMULA_START and not _NEGATIVE_NUMBER.fullmatch(value):
        return "'" + value
    return value


class _LineFeedRows:
    """The file a ``csv_writer`` writes to: each row (``csv.writer`` writes one string per
    row) with ``\n`` in place of the ``\r\n`` it was told to end rows with."""

    __slots__ = ("_write",)

    def __init__(self, write: Callable[[str], Any]) -> None:
        self._write = write

    def write(self, row: str) -> Any:
        return self._write(row[:-2] + "\n")


def csv_writer(write: Callable[[str], Any]) -> Any:
    """A ``csv.writer`` whose rows end with ``\n`` and that quotes every field holding a
    carriage return or a line feed. (Told to end rows with ``\n``, ``csv`` leaves a field
    with a bare ``\r`` unquoted, which every reader takes for the end of the row.)"""
    return csv.writer(_LineFeedRows(write), lineterminator="\r\n")


def _money_cell(v: Any) -> str:
    return "" if v is None else money_text(v)


def _when_cell(v: Any) -> str:
    return "" if v is None else str(v.isoformat())


def _flag_cell(v: Any) -> str:
    return "true" if v else "false"


def _list_cell(v: Any) -> str:
    from .._ledger._money import dumps

    return dumps(finite(list(v or ())))


def _mapping_cell(v: Any) -> str:
    from .._ledger._money import dumps

    return dumps(finite(dict(v or {})))


def _float_cell(v: Any) -> str:
    return "" if v is None or v - v != 0.0 else repr(float(v))


def csv_cell(value: Any, *, raw: bool = False) -> str:
    """One value as a CSV field, as every CSV costledger writes it (``export`` and the
    CLI's ``--format csv``): no value an empty field, money exact in plain notation
    (``0.0000002``), booleans ``true``/``false``, times ISO 8601, lists and mappings
    JSON text, an infinite or NaN float an empty field, text through ``csv_text``
    (``raw=True``: as it is)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value if raw else csv_text(value)
    if isinstance(value, bool):
        return _flag_cell(value)
    if isinstance(value, Decimal):
        return money_text(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_cell(value)
    if isinstance(value, (datetime, date)):
        return _when_cell(value)
    if isinstance(value, Mapping):
        return _mapping_cell(value)
    if isinstance(value, (list, tuple)):
        return _list_cell(value)
    text = str(value)
    return text if raw else csv_text(text)


def _csv_formatters(raw: bool = False) -> list[tuple[int, Callable[[Any], str]]]:
    """``(column index, function)`` for the fields whose CSV text is not what ``csv``
    writes by itself (it writes ``None`` as an empty field and numbers and text as they
    are, but a Decimal may come out in exponent form, a datetime with a space, a text
    as a formula): for each column, the function ``csv_cell`` uses for its type."""
    chosen: dict[str, Callable[[Any], str]] = {"timestamp": _when_cell, "tags": _list_cell}
    chosen["metadata"] = _mapping_cell
    chosen["price_context"] = _mapping_cell
    chosen["latency_ms"] = _float_cell
    out: list[tuple[int, Callable[[Any], str]]] = []
    for i, name in enumerate(EXPORT_COLUMNS):
        if name in _MONEY:
            out.append((i, _money_cell))
        elif name in _BOOLS:
            out.append((i, _flag_cell))
        elif name in chosen:
            out.append((i, chosen[name]))
        elif name not in _INTS and not raw:
            out.append((i, _text_cell))
    return out


def _text_cell(v: Any) -> Any:
    return v if v is None else csv_text(v)


def _write_csv(events: Iterable[StoredEvent], out: IO[bytes], raw: bool = False) -> int:
    formatters = _csv_formatters(raw)
    values_of = operator.attrgetter(*EXPORT_COLUMNS)
    buffer = io.StringIO()
    writer = csv_writer(buffer.write)
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for e in events:
        row = list(values_of(e))
        for i, f in formatters:
            row[i] = f(row[i])
        writer.writerow(row)
        n += 1
        if n % 2000 == 0:
            out.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue().encode())
    return n


def _write_jsonl(events: Iterable[StoredEvent], out: IO[bytes]) -> int:
    from .._schema import event_to_record

    n = 0
    lines: list[bytes] = []
    for e in events:
        record = event_to_record(e.to_event())
        lines.append(json_text(record, ensure_ascii=False, separators=(",", ":")).encode())
        n += 1
        if len(lines) >= 1000:
            out.write(b"\n".join(lines) + b"\n")
            lines.clear()
    if lines:
        out.write(b"\n".join(lines) + b"\n")
    return n


def parquet_schema() -> Any:
    """The Parquet schema of an export (pyarrow)."""
    import pyarrow as pa

    fields = []
    for name in EXPORT_COLUMNS:
        if name in _MONEY:
            typ = pa.decimal128(38, 18)
        elif name in _INTS:
            typ = pa.int64()
        elif name in _BOOLS:
            typ = pa.bool_()
        elif name == "timestamp":
            typ = pa.timestamp("us", tz="UTC")
        elif name == "latency_ms":
            typ = pa.float64()
        elif name == "tags":
            typ = pa.list_(pa.string())
        else:
            typ = pa.string()
        fields.append(
            pa.field(name, typ, nullable=name not in _INTS | _BOOLS | {"id", "timestamp"})
        )
    return pa.schema(fields)


def _write_parquet(events: Iterable[StoredEvent], out: IO[bytes], batch_size: int) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:  # the ``parquet`` extra
        from .._errors import missing_extra

        # ImportError, as for every other extra (psycopg, redis, plotly): the one error a
        # caller catches for "not installed"
        raise missing_extra(exc, "Parquet export", "parquet") from None
    from .._ledger._money import dumps

    schema = parquet_schema()
    n = 0
    columns: dict[str, list[Any]] = {name: [] for name in EXPORT_COLUMNS}

    def flush(writer: Any) -> None:
        batch = pa.record_batch(
            [pa.array(columns[f.name], type=f.type) for f in schema], schema=schema
        )
        writer.write_batch(batch)
        for values in columns.values():
            values.clear()

    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for e in events:
            for name in EXPORT_COLUMNS:
                value = getattr(e, name)
                if name in ("metadata", "price_context"):
                    value = dumps(finite(dict(value)))
                elif name == "latency_ms" and value is not None:
                    value = finite(float(value))
                columns[name].append(value)
            n += 1
            if len(columns["id"]) >= batch_size:
                flush(writer)
        if columns["id"] or n == 0:
            flush(writer)
    return n


def suffix_format(name: str) -> tuple[ExportFormat | None, str, bool]:
    """What a file name's suffix says of its export: the format (``EXPORT_SUFFIXES``,
    any case; ``"csv"`` for a name with no suffix, ``None`` for a suffix not in the
    table), the suffix as written (``".jsonl.gz"``, ``""``), and whether the name ends
    with ``.gz``."""
    compressed = name.lower().endswith(GZIP_SUFFIX)
    stem = PurePath(name[: -len(GZIP_SUFFIX)] if compressed else name)
    suffix = stem.suffix.lower()
    shown = name[len(stem.stem) :] if stem.name else name
    if suffix == "":
        return "csv", shown, compressed
    return EXPORT_SUFFIXES.get(suffix), shown, compressed


def export(
    ledger: Ledger | LedgerLike | str | None,
    out: str | os.PathLike[str] | IO[bytes],
    format: ExportFormat | None = None,
    *,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    batch_size: int = 10_000,
    now: datetime | None = None,
    csv_raw: bool = False,
    **filters: str | Sequence[str] | None,
) -> ExportResult:
    """Write the selected events, in time order, to ``out`` (a path or a binary stream).

    ``format`` is ``"csv"``, ``"jsonl"`` or ``"parquet"``. Left out, a path's suffix says
    it, as for ``costledger export -o``: ``.csv``, ``.jsonl`` or ``.ndjson`` (JSON lines),
    ``.parquet``, each but ``.parquet`` optionally followed by ``.gz``; a name with no
    suffix is csv, and any other suffix raises ``ValueError`` (``calls.json``: a JSON
    array is not JSON lines) rather than write CSV under a name that promises something
    else. A ``format`` given wins over the suffix (``export(l, "calls.txt", "jsonl")``).
    A stream is written as csv unless ``format`` says otherwise.

    Memory stays constant whatever the number of events: rows are read ``batch_size``
    at a time (a server-side cursor on PostgreSQL) and written as they come. Money is
    never a float (see the module docstring for each format's types). A path is written
    as ``<path>.part``, renamed when complete; one whose name ends with ``.gz`` is
    gzip-compressed (csv and jsonl; ``.parquet.gz`` raises ``ValueError``).

    In CSV, a text field that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return is written with a leading ``'`` so that a spreadsheet shows it instead of
    running it as a formula (``csv_text``); ``csv_raw=True`` writes every text as stored,
    for a program that reads the file.
    """
    if format is not None and format not in EXPORT_FORMATS:
        raise ValueError(
            f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}"
        )
    path = None if hasattr(out, "write") else Path(out)
    compressed = False
    if path is not None:
        if path.is_dir():  # found now, not after every row went to "<dir>.part"
            raise IsADirectoryError(f"export to {str(path)!r}: it is a directory; give a file name")
        inferred, shown, compressed = suffix_format(path.name)
        if format is None:
            if inferred is None:
                raise ValueError(
                    f"export to {str(path)!r}: cannot tell the format from its suffix "
                    f"{shown!r}; use one of {EXPORT_SUFFIXES_TEXT}, or pass format= "
                    f"({', '.join(EXPORT_FORMATS)})"
                )
            format = inferred
    elif format is None:
        format = "csv"
    if not isinstance(csv_raw, bool):
        raise ValueError(f"csv_raw must be True or False, got {csv_raw!r}")
    if csv_raw and format != "csv":
        raise ValueError(f"csv_raw applies to the csv format, not {format}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    checked = check_filters(filters)
    lo, hi = resolve_bounds(since, until, now=now)
    if compressed and format == "parquet":
        raise ValueError(
            f"export to {str(path)!r}: Parquet compresses its own columns; "
            "write it without .gz (a .gz path is gzip for csv and jsonl)"
        )
    with open_ledger(ledger) as opened:
        from .._ledger._query import iter_events

        opened._fresh()
        events = iter_events(
            opened._core.store,
            since=lo,
            until=hi,
            filters=checked,
            order="asc",
            limit=None,
            batch_size=batch_size,
        )
        if path is None:
            stream: IO[bytes] = out  # type: ignore[assignment]
            n = _write(events, stream, format, batch_size, csv_raw)
        else:
            with replacing(path, ".part") as f:  # a reader never sees half a file
                if compressed:
                    inner = path.name[: -len(GZIP_SUFFIX)]  # the name gunzip gives
                    with gzip.GzipFile(inner, "wb", 6, f, mtime=0) as packed:
                        n = _write(events, cast(IO[bytes], packed), format, batch_size, csv_raw)
                else:
                    n = _write(events, f, format, batch_size, csv_raw)
    return ExportResult(rows=n, format=format, path=path)


# O_EXCL with O_CREAT refuses any existing name, a symbolic link included (O_NOFOLLOW says
# so again): a link planted in a shared directory cannot redirect the write. Mode 0o666
# goes through the umask as a plain open() does, so the file is as shareable as any other
# the user writes (mkstemp's 0o600 would not be, and reading the umask is not thread-safe).
_NEW_FILE = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _new_temporary(path: Path, suffix: str) -> tuple[int, str]:
    """A new file next to ``path`` under an unguessable name: ``.NAME.<random><suffix>``
    (NAME cut to 100 bytes: a name the file system takes must not fail as a temporary)."""
    stem = os.fsdecode(os.fsencode(path.name)[:100])
    for _ in range(100):
        tmp = str(path.with_name(f".{stem}.{secrets.token_hex(8)}{suffix}"))
        try:
            return os.open(tmp, _NEW_FILE, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:  # about the file asked for: named so
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    raise FileExistsError(errno.EEXIST, "no free temporary name next to it", str(path))


@contextmanager
def replacing(path: Path, suffix: str) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` once the block completes (a reader of
    ``path`` never sees half a file; on an error it is removed and ``path`` is untouched).

    Written next to ``path`` (a rename never crosses file systems) under a fresh,
    unguessable name, created exclusively. An ``OSError`` about that temporary file
    names ``path``, the file the caller asked for."""
    tmp = ""
    replaced = False
    try:
        fd, tmp = _new_temporary(path, suffix)
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
        replaced = True
    except OSError as exc:
        if tmp and tmp in (exc.filename, exc.filename2):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    finally:
        if tmp and not replaced:
            with suppress(FileNotFoundError):
                os.unlink(tmp)


def _write(
    events: Iterator[StoredEvent], out: IO[bytes], format: str, batch_size: int, raw: bool
) -> int:
    if format == "csv":
        return _write_csv(events, out, raw)
    if format == "jsonl":
        return _write_jsonl(events, out)
    return _write_parquet(events, out, batch_size)
