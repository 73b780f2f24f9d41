"""The daily rollups' ``max_cost``: an upper bound of the dearest call of each group.

Revision ID: 0003
Revises: 0002
Create Date: 2025-07-01

``costledger top`` reads only the days whose bound can reach its answer instead of
scanning every call (see ``costledger/_reports/_report.py``). The column is added to
the three daily cube tables and filled by recomputing the rollups from the events table
(``rebuild_on``, the same as ``costledger db rebuild-rollups``): one read of every event
in this transaction, which takes a while on a large ledger (minutes for tens of millions
of calls). The monthly cubes are unchanged.
"""

from __future__ import annotations

from alembic import op

from costledger._ledger._rollups import BOUND, CUBES, bound_column, rebuild_on

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    for cube in CUBES:
        if cube.bounded:
            op.add_column(cube.table, bound_column())
    if not op.get_context().as_sql:
        # the sums are recomputed too: a bound must cover the very rows they count
        rebuild_on(op.get_bind())


def downgrade() -> None:
    for cube in CUBES:
        if cube.bounded:
            op.drop_column(cube.table, BOUND)
