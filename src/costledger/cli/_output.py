"""Printing results as a rich table, JSON or CSV (stdout), and notes (stderr)."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import typer

from .._cost import money_text

if TYPE_CHECKING:
    from rich.console import Console

    from ._options import OutputFormat

__all__ = ["Col", "console", "emit", "money_cell", "note", "printable", "share_cell"]

Kind = Literal["text", "int", "money", "amount", "share", "bool"]
"""``amount``: money, or a count of tokens when the row gives it as an ``int``."""
_HUNDRED = Decimal(100)
_TENTH = Decimal("0.1")

_SHOWN_AS = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_CONTROL = re.compile(
    # C0, DEL and C1 controls (ESC starts a terminal escape sequence; CSI/OSC/ST exist
    # as single C1 code points too), the line and paragraph separators, and the bidi
    # embedding, override and isolate marks (which reorder the text shown after them)
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHOWN_AS.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: each control character (C0, DEL, C1, line
    separators, bidi overrides) is shown as its escape, ``\\x1b``, ``\\n``, ``\\u202e``, as
    visible characters, so that data (a user name, a tag, a model) can neither move the
    cursor, clear the screen, hide the rest of a table nor break a row in two."""
    return _CONTROL.sub(_shown, text)


@dataclass(frozen=True, slots=True)
class Col:
    """A table column: the row key it shows, its header, how to show the value."""

    key: str
    header: str
    kind: Kind = "text"


def console() -> Console:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit 1 here; the root command ends quietly with 141 (see _app)
            self.quiet = True
            raise BrokenPipeError

    out = sys.stdout
    width = shutil.get_terminal_size((200, 24)).columns if out.isatty() else 240
    # Cells, titles and headers hold ledger text (user names, models, tags, paths) that
    # rich must print as it is: "[/bold]" or ":smile:" is a name, not markup or an emoji.
    # Styling goes through style= (the bold totals, the table's header style) instead.
    return _Console(
        file=out,
        width=max(80, width),
        soft_wrap=False,
        highlight=False,
        markup=False,
        emoji=False,
    )


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr, so pipes get only the data); the
    data it quotes (a file name, a reject's reason) is shown with its controls escaped."""
    typer.echo(printable(message), err=True)


def money_cell(value: Any) -> str:
    """Exact money, padded to two decimals for reading (``1.5`` -> ``1.50``), with thousands
    separators; never rounded, whatever its number of digits (the text is built from the
    exact digits: no decimal context, whose precision would round, is involved)."""
    if value is None or value == "":
        return "-"
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if not d.is_finite():
        return str(d)
    whole, _, fraction = money_text(d).partition(".")
    sign = "-" if whole.startswith("-") else ""
    whole = whole.lstrip("-")
    fraction = fraction.rstrip("0").ljust(2, "0")  # stored trailing zeros say nothing
    if d.is_zero():
        sign = ""  # -0 is 0
    head = len(whole) % 3 or 3
    groups = [whole[:head], *(whole[i : i + 3] for i in range(head, len(whole), 3))]
    return f"{sign}{','.join(groups)}.{fraction}"


def share_cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    from .._reports._common import EXACT  # wide enough for any share

    d = value if isinstance(value, Decimal) else Decimal(str(value))
    percent = EXACT.multiply(d, _HUNDRED).quantize(_TENTH, context=EXACT)
    return f"{money_text(percent)}%"


def _cell(value: Any, kind: Kind, is_group: bool) -> str:
    if kind == "amount" and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if kind in ("money", "amount"):
        return money_cell(value)
    if kind == "share":
        return share_cell(value)
    if value is None:
        return "(none)" if is_group else "-"
    if kind == "int" and isinstance(value, int):
        return f"{value:,}"
    if kind == "bool":
        return "yes" if value else "no"
    return printable(str(value))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money_text(value)
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
        # the export's encoding: JSON lists and mappings, true/false, no formula-like text
        from .._reports._export import csv_cell, csv_writer

        names = list(fields) if fields is not None else (list(rows[0]) if rows else [])
        writer = csv_writer(sys.stdout.write)
        writer.writerow([csv_cell(n) for n in names])
        for r in rows:
            writer.writerow([csv_cell(r.get(n)) for n in names])
        sys.stdout.flush()
        return
    from rich.table import Table

    table = Table(
        title=None if title is None else printable(title),
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for col in cols:
        right = col.kind in ("int", "money", "amount", "share")
        table.add_column(printable(col.header), justify="right" if right else "left", no_wrap=True)
    for i, r in enumerate(rows):
        table.add_row(
            *(_cell(r.get(c.key), c.kind, c.key in group_keys) for c in cols),
            end_section=bool(footer) and i == len(rows) - 1,
        )
    for r in footer:
        table.add_row(*(_cell(r.get(c.key), c.kind, False) for c in cols), style="bold")
    console().print(table)
