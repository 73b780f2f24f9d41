"""The ``costledger`` command line: a thin typer layer over the Python API."""

from __future__ import annotations

import typer

from ._demo import demo

app = typer.Typer(
    name="costledger",
    help="Exact LLM cost tracking: reports, what-if re-pricing, ingestion, budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Exact LLM cost tracking: reports, what-if re-pricing, ingestion, budgets."""


app.command("demo")(demo)


def main() -> None:
    app()


__all__ = ["app", "main"]
