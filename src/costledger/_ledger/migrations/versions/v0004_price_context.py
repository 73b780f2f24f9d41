"""The events' ``price_context``: how a call was served where that changed its price.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

``{"service_tier": "flex"}``, ``{"speed": "fast"}``, ``{"processing": "batch"}``: what
selected the price variant the call was priced at, kept so that ``reprice`` and
``whatif`` price it the same way. Existing rows get ``{}`` (the standard price, as they
were priced); adding a column with a constant default rewrites no row on SQLite or
PostgreSQL 11+.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from costledger._ledger._money import JSONDocument

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "costledger_events",
        sa.Column("price_context", JSONDocument, nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    op.drop_column("costledger_events", "price_context")
