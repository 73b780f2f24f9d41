"""Daily rollups of the events table (``costledger_rollup_daily``, ``costledger_rollup_tags``).

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Existing events are summed into the new tables in the same transaction. On PostgreSQL a
statement trigger empties the rollups whenever ``costledger_events`` is truncated, so
they can never describe rows that are gone.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from costledger._ledger._rollups import COUNTERS, DIMENSIONS, RollupDay, rebuild_on

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_REQUIRED = frozenset(("source", "status", "currency", "pricing_status"))


def _create(table: str, *, with_tag: bool, sqlite: bool) -> None:
    columns: list[Any] = [
        sa.Column("day", RollupDay(), nullable=False),
        sa.Column("gkey", sa.String(), nullable=False),
    ]
    if with_tag:
        columns.append(sa.Column("tag", sa.String(), nullable=True))
    columns.extend(
        sa.Column(name, sa.String(), nullable=name not in _REQUIRED) for name in DIMENSIONS
    )
    columns.extend(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTERS)
    columns.append(sa.Column("cost_places", sa.Integer(), nullable=False))
    columns.append(sa.PrimaryKeyConstraint("day", "gkey", name=f"{table}_pkey"))
    if sqlite:
        # SQLite turns an integer sum that overflows 64 bits into a float: refuse instead
        for name in ("cost_units", "cost_nano", "cost_atto"):
            columns.append(
                sa.CheckConstraint(f"typeof({name}) = 'integer'", name=f"{table}_{name}_exact")
            )
    op.create_table(table, *columns)


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    sqlite = dialect == "sqlite"
    _create("costledger_rollup_daily", with_tag=False, sqlite=sqlite)
    _create("costledger_rollup_tags", with_tag=True, sqlite=sqlite)
    if dialect == "postgresql":
        op.execute(
            """
            CREATE FUNCTION costledger_rollups_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                TRUNCATE costledger_rollup_daily, costledger_rollup_tags;
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
    op.drop_table("costledger_rollup_tags")
    op.drop_table("costledger_rollup_daily")
