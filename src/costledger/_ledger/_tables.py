"""The ledger's tables as SQLModel classes (the Alembic migrations create the schema).

One row per ``UsageEvent``. Prompts and completions are never stored. Every table
and index name starts with ``costledger_`` so the ledger can share a database with
the host application (and its own Alembic history: ours is kept in
``costledger_alembic_version``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Index, MetaData, String, Table, false, text
from sqlmodel import Field, SQLModel

from ._money import JSONDocument, Money, UTCDateTime
from ._rows import MONEY_COLUMNS, TOKEN_COLUMNS

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "EVENTS_TABLE",
    "MONEY_COLUMNS",
    "PARTIAL_INDEXED",
    "TOKEN_COLUMNS",
    "VERSION_TABLE",
    "EventRecord",
    "events_table",
    "metadata",
    "partial_index_args",
]

EVENTS_TABLE = "costledger_events"
VERSION_TABLE = "costledger_alembic_version"

ATTRIBUTION_COLUMNS: tuple[str, ...] = ("user", "team", "project", "feature")


PARTIAL_INDEXED: tuple[str, ...] = ("user", "team", "project", "feature", "trace_id")
"""Columns indexed (with ``timestamp``, except ``trace_id``) only where they are set: an
event without a team costs no index entry, and ``team = 'x'`` implies ``team IS NOT NULL``
so both SQLite and PostgreSQL use the partial index."""


def partial_index_args(column: str) -> dict[str, Any]:
    where = text(f'"{column}" IS NOT NULL')
    return {"sqlite_where": where, "postgresql_where": where}


def _partial_index(column: str, *more: str) -> Index:
    columns = (column,) if column == "trace_id" else (column, *more)
    return Index(f"costledger_events_{column}", *columns, **partial_index_args(column))


def _text(*, nullable: bool = True, primary_key: bool = False) -> Any:
    return Field(sa_type=String(), nullable=nullable, primary_key=primary_key)


def _tokens() -> Any:
    return Field(
        default=0,
        sa_type=BigInteger(),
        nullable=False,
        sa_column_kwargs={"server_default": text("0")},
    )


def _flag() -> Any:
    return Field(
        default=False,
        sa_type=Boolean(),
        nullable=False,
        sa_column_kwargs={"server_default": false()},
    )


def _money() -> Any:
    return Field(default=None, sa_type=Money(), nullable=True)


class EventRecord(SQLModel, table=True):
    """A stored usage event. Column docs are in docs/ledger.md (schema table)."""

    __tablename__ = EVENTS_TABLE
    __table_args__ = (
        Index("costledger_events_timestamp", "timestamp"),
        *(_partial_index(column, "timestamp") for column in PARTIAL_INDEXED),
        Index(
            "costledger_events_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    # identity and time
    id: str = Field(sa_type=String(), primary_key=True)
    timestamp: datetime = Field(sa_type=UTCDateTime(), nullable=False)
    source: str = Field(default="api", sa_type=String(), nullable=False)
    # what was called
    provider: str | None = _text()
    model: str | None = _text()
    response_model: str | None = _text()
    status: str = Field(default="ok", sa_type=String(), nullable=False)
    error_type: str | None = _text()
    # latency is a duration, never money: the only floating-point column
    latency_ms: float | None = Field(default=None, sa_type=Float(precision=53), nullable=True)
    request_id: str | None = _text()
    trace_id: str | None = _text()
    run_id: str | None = _text()
    parent_run_id: str | None = _text()
    # attribution
    user: str | None = _text()
    team: str | None = _text()
    project: str | None = _text()
    feature: str | None = _text()
    tags: list[str] = Field(
        default_factory=list,
        sa_type=JSONDocument,
        nullable=False,
        sa_column_kwargs={"server_default": text("'[]'")},
    )
    metadata_: dict[str, Any] = Field(
        default_factory=dict,
        sa_type=JSONDocument,
        nullable=False,
        sa_column_kwargs={"name": "metadata", "server_default": text("'{}'")},
    )
    streamed: bool = _flag()
    cache_hit: bool = _flag()
    # usage, canonical convention (input includes cache reads/writes; output includes reasoning)
    input_tokens: int = _tokens()
    output_tokens: int = _tokens()
    cache_read_tokens: int = _tokens()
    cache_write_tokens: int = _tokens()
    cache_write_1h_tokens: int = _tokens()
    reasoning_tokens: int = _tokens()
    input_audio_tokens: int = _tokens()
    output_audio_tokens: int = _tokens()
    # cost, exact
    pricing_status: str = Field(default="priced", sa_type=String(), nullable=False)
    currency: str = Field(default="USD", sa_type=String(), nullable=False)
    total_cost: Decimal | None = _money()
    input_cost: Decimal | None = _money()
    cache_read_cost: Decimal | None = _money()
    cache_write_cost: Decimal | None = _money()
    output_cost: Decimal | None = _money()
    audio_cost: Decimal | None = _money()
    pricing_source: str | None = _text()
    priced_model: str | None = _text()
    priced_provider: str | None = _text()
    reported_cost: Decimal | None = _money()
    # how the call was served where that changed its price ({"service_tier": "flex"})
    price_context: dict[str, str] = Field(
        default_factory=dict,
        sa_type=JSONDocument,
        nullable=False,
        sa_column_kwargs={"server_default": text("'{}'")},
    )


metadata: MetaData = SQLModel.metadata
events_table: Table = EventRecord.__table__  # type: ignore[attr-defined]  # set by SQLAlchemy
