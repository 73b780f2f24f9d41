"""Printing results as a rich table, JSON or CSV (stdout), and notes (stderr)."""

from __future__ import annotations

import csv
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ._options import OutputFormat

__all__ = ["Col", "console", "emit", "money_cell", "note", "share_cell"]

Kind = Literal["text", "int", "money", "share", "bool"]


@dataclass(frozen=True, slots=True)
class Col:
    """A table column: the row key it shows, its header, how to show the value."""

    key: str
    header: str
    kind: Kind = "text"


def console() -> Console:
    from rich.console import Console

    out = sys.stdout
    width = shutil.get_terminal_size((200, 24)).columns if out.isatty() else 240
    # Cells, titles and headers hold ledger text (user names, models, tags, paths) that
    # rich must print as it is: "[/bold]" or ":smile:" is a name, not markup or an emoji.
    # Styling goes through style= (the bold totals, the table's header style) instead.
    return Console(
        file=out,
        width=max(80, width),
        soft_wrap=False,
        highlight=False,
        markup=False,
        emoji=False,
    )


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr, so pipes get only the data)."""
    typer.echo(message, err=True)


def money_cell(value: Any) -> str:
    """Exact money, padded to two decimals for reading (``1.5`` -> ``1.50``, never rounded)."""
    if value is None or value == "":
        return "-"
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if not d.is_zero():
        d = d.normalize()  # stored trailing zeros say nothing
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        d = d.quantize(Decimal("0.01"))
    return f"{d:,f}"


def share_cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    return f"{(d * 100).quantize(Decimal('0.1'))}%"


def _cell(value: Any, kind: Kind, is_group: bool) -> str:
    if kind == "money":
        return money_cell(value)
    if kind == "share":
        return share_cell(value)
    if value is None:
        return "(none)" if is_group else "-"
    if kind == "int" and isinstance(value, int):
        return f"{value:,}"
    if kind == "bool":
        return "yes" if value else "no"
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    iso = getattr(value, "isoformat", None)
    return iso() if iso is not None else value


def emit(
    fmt: OutputFormat,
    rows: Sequence[Mapping[str, Any]],
    cols: Sequence[Col],
    *,
    title: str | None = None,
    footer: Sequence[Mapping[str, Any]] = (),
    fields: Sequence[str] | None = None,
    document: Any = None,
    group: Sequence[str] = (),
) -> None:
    """Print ``rows``.

    ``table``: ``cols`` of each row, then ``footer`` rows (totals) in bold. ``json``:
    ``document`` if given, else the rows as a list of objects. ``csv``: a header of
    ``fields`` (default: every key of the first row), one line per row. ``group``: the
    columns that are group keys (a missing value reads "(none)" there, "-" elsewhere).
    """
    kind = fmt.value
    group_keys = set(group)
    if kind == "json":
        from .._reports._export import json_text

        value = document if document is not None else [dict(r) for r in rows]
        # An infinite latency stored before it was refused must not print "Infinity".
        text = json_text(value, indent=2, ensure_ascii=False, default=_plain)
        typer.echo(text)
        return
    if kind == "csv":
        names = list(fields) if fields is not None else (list(rows[0]) if rows else [])
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for r in rows:
            writer.writerow(["" if r.get(n) is None else _plain(r.get(n)) for n in names])
        sys.stdout.flush()
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in cols:
        right = col.kind in ("int", "money", "share")
        table.add_column(col.header, justify="right" if right else "left", no_wrap=True)
    for i, r in enumerate(rows):
        table.add_row(
            *(_cell(r.get(c.key), c.kind, c.key in group_keys) for c in cols),
            end_section=bool(footer) and i == len(rows) - 1,
        )
    for r in footer:
        table.add_row(*(_cell(r.get(c.key), c.kind, False) for c in cols), style="bold")
    console().print(table)
