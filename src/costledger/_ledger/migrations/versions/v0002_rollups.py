"""Rollups of the events table: per day and per month, with and without tags and users.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

The cube tables are described in ``costledger/_ledger/_rollups.py``; they are created
as this revision shipped them (``bounds=False``: ``max_cost`` came with 0003). Existing
events are summed into them in the same transaction. On PostgreSQL a statement trigger
empties them whenever ``costledger_events`` is truncated, so they never describe rows
that are gone.
"""

from __future__ import annotations

from alembic import op

from costledger._ledger._rollups import CUBES, cube_schema, rebuild_on, truncate_trigger_sql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    for cube in CUBES:
        # SQLite: one B-tree keyed by (day, gkey) rather than a rowid table and an index
        op.create_table(
            cube.table, *cube_schema(cube, dialect, bounds=False), sqlite_with_rowid=False
        )
    if dialect == "postgresql":
        for sql in truncate_trigger_sql():
            op.execute(sql)
    if not op.get_context().as_sql:
        rebuild_on(op.get_bind(), bounds=False)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS costledger_events_truncate ON costledger_events")
        op.execute("DROP FUNCTION IF EXISTS costledger_rollups_truncate()")
    for cube in reversed(CUBES):
        op.drop_table(cube.table)
