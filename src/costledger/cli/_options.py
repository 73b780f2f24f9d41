"""Options shared by the commands (``--db``, ``--since``/``--until``, the filters, ``--format``)
and the helpers that turn them into API arguments. A command that reads a selection of the
ledger takes one ``Selection`` parameter and is wrapped in ``@selecting``, which gives it
all of those options, in the same order and with the same help as every other such command::

    from ._options import Format, OutputFormat, Selection, open_ledger, selecting

    @selecting
    def mycommand(*, selected: Selection, fmt: Format = OutputFormat.table) -> None:
        with open_ledger(selected.db) as ledger:
            rows = api(ledger, **selected.api)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._app import EXIT_USAGE, CliError

if TYPE_CHECKING:
    from .._ledger import Ledger

__all__ = [
    "Db",
    "Format",
    "OutputFormat",
    "Selection",
    "Since",
    "Until",
    "open_ledger",
    "selecting",
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
        from .._reports._when import WhenOutOfRange

        try:
            parse_when(value, "since" if bound == "since" else "until")
        except WhenOutOfRange as exc:  # 99999999999d, or --until 9999-12-31
            raise typer.BadParameter(str(exc).partition(": ")[2]) from None
        except ValueError:
            raise typer.BadParameter(f"cannot read {value!r} as a time; use {_WHEN_HELP}") from None
        return value

    return check


def _check_range(since: str | None, until: str | None) -> None:
    """A usage error (exit 2) when ``--since`` is not before ``--until``: such a range holds
    nothing, so the command could only ever answer "no calls match"."""
    if since is None or until is None:
        return
    from datetime import datetime, timezone

    from .._reports._when import EmptyRange, resolve_bounds

    try:  # one "now" for both, as a person reading "--since 1h --until now" means
        resolve_bounds(since, until, now=datetime.now(timezone.utc))
    except EmptyRange as exc:
        raise CliError(
            f"--since {since} ({exc.lo.isoformat()}) is not before --until {until} "
            f"({exc.hi.isoformat()}): the range is empty; give an earlier --since or a later "
            "--until",
            EXIT_USAGE,
        ) from None


def _filter_checker(name: str) -> Callable[[list[str] | None], list[str] | None]:
    def check(values: list[str] | None) -> list[str] | None:
        """An empty value (``--team ""``, ``--tag ,``: an unset shell variable, say) would
        otherwise be dropped, and the command would silently read every call; a value
        outside a closed set (``--status eror``) would match nothing."""
        if not values:
            return values
        split = _split(values)
        if split is None:
            given = ", ".join(repr(v) for v in values)
            raise typer.BadParameter(f"needs a non-empty value, got {given}")
        from .._reports._common import check_filters

        try:
            check_filters({name: split})
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return values

    return check


def _filter_option(name: str, what: str) -> Any:
    return Annotated[
        list[str] | None,
        typer.Option(
            f"--{name}",
            help=f"Only calls of this {what} (repeat, or separate with commas, for several).",
            callback=_filter_checker(name),
            show_default=False,
        ),
    ]


# Each filter: its option (and Selection.filters key), and what "Only calls of this ..." says.
_FILTERS = {
    "model": "model (requested or response)",
    "provider": "provider",
    "user": "user",
    "team": "team",
    "project": "project",
    "feature": "feature",
    "tag": "tag",
    "status": "status (ok, error, cancelled)",
    "source": "entry point (langchain, litellm, decorator, http, ingest, api)",
}


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
Format = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output format.", case_sensitive=False),
]


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [part.strip() for v in values for part in v.split(",") if part.strip()]
    return out or None


@dataclass(frozen=True)
class Selection:
    """Which ledger (``--db``) and which of its calls (``--since``/``--until``, the filters)
    a command reads. Filters hold only the options given, comma-separated values split."""

    db: str | None = None
    since: str | None = None
    until: str | None = None
    filters: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def api(self) -> dict[str, Any]:
        """Keyword arguments for the report API: ``since``, ``until`` and the filters."""
        return {"since": self.since, "until": self.until, **self.filters}

    def describe(self) -> str:
        """The selection in words, for "nothing matched" messages."""
        given = self.api.items()
        parts = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in given if v]
        return " ".join(parts) if parts else "all time"


_SELECTION_OPTIONS: dict[str, Any] = {
    "db": Db,
    "since": Since,
    "until": Until,
    **{name: _filter_option(name, what) for name, what in _FILTERS.items()},
}


def selecting(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with the options ``--db``, ``--since``, ``--until`` and the filters in
    place of its ``Selection`` parameter, which receives them as one ``Selection``.

    Typer reads a command's options from its signature, so the wrapper publishes the
    command's signature with that one parameter spread into the options it stands for.
    """
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    at, marker = next((i, p) for i, p in enumerate(params) if p.annotation is Selection)
    params[at : at + 1] = [
        inspect.Parameter(name, marker.kind, default=None, annotation=option)
        for name, option in _SELECTION_OPTIONS.items()
    ]

    @functools.wraps(command)
    def run(**values: Any) -> None:
        given = {name: values.pop(name) for name in _SELECTION_OPTIONS}
        _check_range(given["since"], given["until"])
        filters = {name: split for name in _FILTERS if (split := _split(given[name]))}
        selected = Selection(given["db"], given["since"], given["until"], filters)
        command(**values, **{marker.name: selected})

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    # typer also asks typing.get_type_hints, which reads __annotations__
    run.__annotations__ = {p.name: p.annotation for p in params}
    run.__annotations__["return"] = signature.return_annotation
    return run


@contextlib.contextmanager
def open_ledger(db: str | None, *, must_exist: bool = True) -> Iterator[Ledger]:
    """The ledger at ``db`` for the length of a command.

    A SQLite file that does not exist is an error for a command that only reads (it
    would otherwise be created empty, and every report would silently say nothing).
    """
    from .._reports._common import open_ledger as open_for_read

    with contextlib.ExitStack() as stack:
        try:
            ledger = stack.enter_context(open_for_read(db, must_exist=must_exist))
        except FileNotFoundError as exc:
            raise CliError(f"{exc}; use --db") from None
        yield ledger
