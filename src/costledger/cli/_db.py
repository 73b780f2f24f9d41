"""``costledger db upgrade`` and ``costledger db rebuild-rollups``."""

from __future__ import annotations

from typing import Annotated

import typer

from ._options import Db, open_ledger
from ._output import note

__all__ = ["app"]

app = typer.Typer(help="The ledger's database: schema and rollups.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    db: Db = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the DDL (for a DBA to review); change nothing.")
    ] = False,
) -> None:
    """Create or migrate the ledger's tables (safe to repeat, and from several processes)."""
    from .._ledger import upgrade as migrate
    from .._ledger._engine import display_url, make_engine, resolve_url
    from .._ledger._migrate import current_revision

    url = resolve_url(db)
    migrate(url, sql=sql)
    if sql:
        return
    engine = make_engine(url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    note(f"ledger at {display_url(url)} is at revision {revision}")


@app.command("rebuild-rollups")
def rebuild_rollups(db: Db = None) -> None:
    """Recompute the daily rollups from the events (after rows were loaded or deleted
    with plain SQL, behind the ledger's back)."""
    from .._ledger._rollups import rebuild_rollups as rebuild

    with open_ledger(db) as ledger:
        n = rebuild(ledger)
    note(f"rollups rebuilt from {n:,} events")
