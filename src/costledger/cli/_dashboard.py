"""``costledger dashboard -o FILE.html`` and ``costledger serve``: the same page, as one
self-contained file or live on a local port."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._app import CliError
from ._options import Selection, open_ledger, selecting
from ._output import printable

if TYPE_CHECKING:
    from .._dashboard import Dashboard
    from .._guards import Budget
    from .._ledger import Ledger
    from .._tracker import Tracker

__all__ = ["dashboard", "serve"]

Config = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Budgets to burn down: module:attr of a Tracker, a Budget, a list of Budgets "
        "or a function returning one (as for 'budget status').",
        show_default=False,
    ),
]
BudgetsFile = Annotated[
    Path | None,
    typer.Option(
        "--budgets",
        "-b",
        # help is rich markup: "[\\[budget]]" shows "[[budget]]" ("[budget]" would be a style tag)
        help="Budgets to burn down: a TOML file of [\\[budget]] tables (as for 'budget status'). "
        "Without budgets (nor $COSTLEDGER_BUDGETS), the page shows this month's spend "
        "with a forecast to the month's end.",
        show_default=False,
    ),
]
GuardStore = Annotated[
    str | None,
    typer.Option(
        "--guard-store",
        # rich markup: "\\[" keeps the bracketed text (typer's show_default would add parentheses)
        help="Guard store URL the budgets count in \\[default: memory, counted from the ledger].",
        show_default=False,
    ),
]
TopN = Annotated[
    int,
    typer.Option("--top", min=1, max=1000, help="How many of the most expensive calls to list."),
]


def _require_plotly() -> None:
    """Fail now, in one line saying what to install, when the ``dashboard`` extra is missing:
    the page is useless without Plotly.js (``serve`` would otherwise start and serve a page
    with no charts that never updates)."""
    try:
        import plotly  # noqa: F401
    except ModuleNotFoundError as exc:
        from .._errors import missing_extra

        raise missing_extra(exc, "the dashboard", "dashboard") from None


@contextmanager
def _view(
    selected: Selection,
    config: str | None,
    budgets_file: Path | None,
    guard_store: str | None,
    top_n: int,
) -> Iterator[tuple[Ledger, Callable[[], Dashboard]]]:
    """The ledger, and a function computing the dashboard of the selection now (relative
    times such as ``7d`` or ``this-month`` are read again on every call)."""
    from .._dashboard import build_dashboard
    from .._tracker import Tracker
    from ._budget import _tracker_and_budgets, budget_source

    source, guard_store = budget_source(config, budgets_file, guard_store)
    with open_ledger(selected.db) as ledger:
        tracker: Tracker | None = None
        budgets: list[Budget] | None = None
        if isinstance(source, Tracker):
            tracker = source
        elif source is not None:
            tracker, budgets = _tracker_and_budgets(source, selected.db, guard_store, ledger)

        def compute() -> Dashboard:
            return build_dashboard(
                ledger, budgets=budgets, tracker=tracker, top_n=top_n, **selected.api
            )

        yield ledger, compute


@selecting
def dashboard(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The HTML file to write (one self-contained file: it opens with no network).",
            show_default=False,
        ),
    ],
    *,
    selected: Selection,
    config: Config = None,
    budgets_file: BudgetsFile = None,
    guard_store: GuardStore = None,
    top_n: TopN = 20,
) -> None:
    """Write the dashboard (cost per day by model, by user and feature, tokens by kind, the
    most expensive calls, budget burn-down, unpriced calls) to one HTML file."""
    from .._dashboard import render_dashboard, write_dashboard
    from .._dashboard._data import known_cost

    _require_plotly()
    to_stdout = str(output) == "-"
    if not to_stdout and output.is_dir():
        raise CliError(f"--output {str(output)!r} is a directory; give a file name")
    with _view(selected, config, budgets_file, guard_store, top_n) as (_, compute):
        data = compute()
        calls = sum(r.requests for r in data.totals)
        if not calls:
            raise CliError(f"no calls match ({selected.describe()}); nothing written")
        if to_stdout:
            sys.stdout.write(render_dashboard(data))
            sys.stdout.flush()
            written = "the HTML to stdout"
        else:
            written = str(write_dashboard(data, output))
    from .._reports._common import exact_text

    # the page's text of an amount (0.24 on every backend, not PostgreSQL's 0.240000000...)
    costs = ", ".join(
        f"{'unknown' if (cost := known_cost(r)) is None else exact_text(cost)} {r.currency}"
        for r in data.totals
    )
    costs = costs or "nothing"
    unpriced = sum(data.unpriced.values())
    line = f"wrote {written} ({calls} calls, {costs}"
    no_usage = sum(data.no_usage.values())
    blind = [f"{unpriced} unpriced"] if unpriced else []
    blind += [f"{no_usage} without usage"] if no_usage else []
    line += f"; {', '.join(blind)})" if blind else ")"
    # currencies and the path are text from the ledger and the user: shown, never obeyed
    typer.echo(printable(line), err=to_stdout)  # the HTML alone on stdout


@selecting
def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Anything but loopback shows the ledger to the network.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: any free port).")
    ] = 8765,
    refresh: Annotated[
        float,
        typer.Option("--refresh", min=0.5, max=3600, help="Seconds between the page's updates."),
    ] = 5.0,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="COSTLEDGER_DASHBOARD_TOKEN",
            help="Access token the page asks for (default: none on loopback, a random one "
            "on any other address, printed in the URL).",
        ),
    ] = None,
    *,
    selected: Selection,
    config: Config = None,
    budgets_file: BudgetsFile = None,
    guard_store: GuardStore = None,
    top_n: TopN = 20,
) -> None:
    """Serve the dashboard live on http://127.0.0.1:PORT/, updating as events land."""
    from .._dashboard import DashboardServer

    _require_plotly()
    with _view(selected, config, budgets_file, guard_store, top_n) as (_, compute):
        compute()  # a bad selection or an unreachable ledger fails now, not in the page
        try:
            server = DashboardServer(
                compute, host=host, port=port, refresh_seconds=refresh, token=token
            )
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        if not server.loopback and not server.token:
            typer.echo(
                f"warning: listening on {host} without a token: anyone who can reach it can"
                " read the ledger",
                err=True,
            )
        typer.echo(f"serving the costledger dashboard on {server.url} (Ctrl-C to stop)")
        with suppress(KeyboardInterrupt):
            server.serve_forever()
