"""The events table.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from costledger._ledger._money import JSONDocument, Money, UTCDateTime

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _text(name: str, *, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _tokens(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0"))


def _flag(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def _money(name: str) -> sa.Column[object]:
    return sa.Column(name, Money(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "costledger_events",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        _text("source", nullable=False),
        _text("provider"),
        _text("model"),
        _text("response_model"),
        _text("status", nullable=False),
        _text("error_type"),
        sa.Column("latency_ms", sa.Float(precision=53), nullable=True),
        _text("request_id"),
        _text("trace_id"),
        _text("run_id"),
        _text("parent_run_id"),
        _text("user"),
        _text("team"),
        _text("project"),
        _text("feature"),
        sa.Column("tags", JSONDocument, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("metadata", JSONDocument, nullable=False, server_default=sa.text("'{}'")),
        _flag("streamed"),
        _flag("cache_hit"),
        _tokens("input_tokens"),
        _tokens("output_tokens"),
        _tokens("cache_read_tokens"),
        _tokens("cache_write_tokens"),
        _tokens("cache_write_1h_tokens"),
        _tokens("reasoning_tokens"),
        _tokens("input_audio_tokens"),
        _tokens("output_audio_tokens"),
        _text("pricing_status", nullable=False),
        _text("currency", nullable=False),
        _money("total_cost"),
        _money("input_cost"),
        _money("cache_read_cost"),
        _money("cache_write_cost"),
        _money("output_cost"),
        _money("audio_cost"),
        _text("pricing_source"),
        _text("priced_model"),
        _text("priced_provider"),
        _money("reported_cost"),
        sa.PrimaryKeyConstraint("id", name="costledger_events_pkey"),
    )
    op.create_index("costledger_events_timestamp", "costledger_events", ["timestamp"])
    for column in ("user", "team", "project", "feature", "trace_id"):
        where = sa.text(f'"{column}" IS NOT NULL')
        op.create_index(
            f"costledger_events_{column}",
            "costledger_events",
            [column] if column == "trace_id" else [column, "timestamp"],
            sqlite_where=where,
            postgresql_where=where,
        )
    if op.get_context().dialect.name == "postgresql":
        op.create_index(
            "costledger_events_tags",
            "costledger_events",
            ["tags"],
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        )


def downgrade() -> None:
    op.drop_table("costledger_events")
