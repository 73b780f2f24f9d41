"""Rollups of the events table: per day and per month, with and without tags and users.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

The six cube tables are described in ``costledger/_ledger/_rollups.py``. Existing events
are summed into them in the same transaction. On PostgreSQL a statement trigger empties
them whenever ``costledger_events`` is truncated, so they never describe rows that are gone.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from costledger._ledger._rollups import CUBES, cube_columns, rebuild_on

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    tables = [cube.table for cube in CUBES]
    for cube in CUBES:
        items: list[Any] = list(cube_columns(cube, primary_key=False))
        items.append(sa.PrimaryKeyConstraint("day", "gkey", name=f"{cube.table}_pkey"))
        if dialect == "sqlite":
            # SQLite turns an integer sum that overflows 64 bits into a float: refuse instead
            for name in ("cost_units", "cost_nano", "cost_atto"):
                items.append(
                    sa.CheckConstraint(
                        f"typeof({name}) = 'integer'", name=f"{cube.table}_{name}_exact"
                    )
                )
        # SQLite: one B-tree keyed by (day, gkey) rather than a rowid table and an index
        op.create_table(cube.table, *items, sqlite_with_rowid=False)
    if dialect == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION costledger_rollups_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                TRUNCATE {", ".join(tables)};
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER costledger_events_truncate AFTER TRUNCATE ON costledger_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION costledger_rollups_truncate()"
        )
    if not op.get_context().as_sql:
        rebuild_on(op.get_bind())


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS costledger_events_truncate ON costledger_events")
        op.execute("DROP FUNCTION IF EXISTS costledger_rollups_truncate()")
    for cube in reversed(CUBES):
        op.drop_table(cube.table)
