"""Options shared by the commands (``--db``, ``--since``/``--until``, the filters, ``--format``)
and the helpers that turn them into API arguments. New commands import these::

    from ._options import Db, Format, Since, Until, Model, ..., selection

    def mycommand(db: Db = None, since: Since = None, ..., fmt: Format = OutputFormat.table):
        with open_ledger(db) as ledger:
            rows = api(ledger, **selection(since, until, model=model, ...))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._app import CliError

if TYPE_CHECKING:
    from .._ledger import Ledger

__all__ = [
    "Db",
    "Feature",
    "Format",
    "Model",
    "OutputFormat",
    "Project",
    "Provider",
    "Since",
    "Source",
    "Status",
    "Tag",
    "Team",
    "Until",
    "User",
    "filters",
    "open_ledger",
    "selection",
]

_DB_HELP = "Ledger database URL (default: $COSTLEDGER_DATABASE_URL, else sqlite:///costledger.db)."
_WHEN_HELP = (
    "an ISO date or time (2025-01-31, 2025-01-31T12:00Z), a duration before now "
    "(7d, 24h, 30m, 2w), or today, yesterday, this-week, last-week, this-month, "
    "last-month, this-year, last-year. Days are UTC."
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _check_when(bound: str) -> Any:
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        from .._reports import parse_when

        try:
            parse_when(value, "since" if bound == "since" else "until")
        except ValueError:
            raise typer.BadParameter(f"cannot read {value!r} as a time; use {_WHEN_HELP}") from None
        return value

    return check


def _filter_option(name: str, what: str) -> Any:
    return typer.Option(
        f"--{name}",
        help=f"Only calls of this {what} (repeat, or separate with commas, for several).",
        show_default=False,
    )


Db = Annotated[str | None, typer.Option("--db", help=_DB_HELP, show_default=False)]
Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        help=f"From this time on (inclusive): {_WHEN_HELP}",
        callback=_check_when("since"),
        show_default=False,
    ),
]
Until = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="Up to this time (exclusive; a date or period includes its whole last day). "
        "Same forms as --since.",
        callback=_check_when("until"),
        show_default=False,
    ),
]
Model = Annotated[list[str] | None, _filter_option("model", "model (requested or response)")]
Provider = Annotated[list[str] | None, _filter_option("provider", "provider")]
User = Annotated[list[str] | None, _filter_option("user", "user")]
Team = Annotated[list[str] | None, _filter_option("team", "team")]
Project = Annotated[list[str] | None, _filter_option("project", "project")]
Feature = Annotated[list[str] | None, _filter_option("feature", "feature")]
Tag = Annotated[list[str] | None, _filter_option("tag", "tag")]
Status = Annotated[list[str] | None, _filter_option("status", "status (ok, error, cancelled)")]
Source = Annotated[
    list[str] | None,
    _filter_option("source", "entry point (langchain, litellm, decorator, http, ingest, api)"),
]
Format = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output format.", case_sensitive=False),
]


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [part.strip() for v in values for part in v.split(",") if part.strip()]
    return out or None


def filters(
    *,
    model: list[str] | None = None,
    provider: list[str] | None = None,
    user: list[str] | None = None,
    team: list[str] | None = None,
    project: list[str] | None = None,
    feature: list[str] | None = None,
    tag: list[str] | None = None,
    status: list[str] | None = None,
    source: list[str] | None = None,
) -> dict[str, list[str]]:
    """The filter options that were given, comma-separated values split."""
    given = {
        "model": model,
        "provider": provider,
        "user": user,
        "team": team,
        "project": project,
        "feature": feature,
        "tag": tag,
        "status": status,
        "source": source,
    }
    out: dict[str, list[str]] = {}
    for name, values in given.items():
        split = _split(values)
        if split is not None:
            out[name] = split
    return out


def selection(since: str | None, until: str | None, **filter_values: Any) -> dict[str, Any]:
    """Keyword arguments for the report API: ``since``, ``until`` and the given filters."""
    return {"since": since, "until": until, **filters(**filter_values)}


def describe(selected: dict[str, Any]) -> str:
    """The selection in words, for "nothing matched" messages."""
    parts = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in selected.items() if v]
    return " ".join(parts) if parts else "all time"


@contextlib.contextmanager
def open_ledger(db: str | None, *, must_exist: bool = True) -> Iterator[Ledger]:
    """The ledger at ``db`` for the length of a command.

    A SQLite file that does not exist is an error for a command that only reads (it
    would otherwise be created empty, and every report would silently say nothing).
    """
    from .._ledger import Ledger
    from .._ledger._engine import display_url, resolve_url, sqlite_path

    url = resolve_url(db)
    path = sqlite_path(url)
    if must_exist and path is not None and not path.exists():
        raise CliError(f"no ledger at {display_url(url)} (file {path} does not exist); use --db")
    ledger = Ledger(url, sync=True)
    try:
        yield ledger
    finally:
        ledger.close()
