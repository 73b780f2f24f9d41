"""Create and migrate the ledger schema with Alembic, safely from several processes at once."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.engine import URL

from .._errors import CostLedgerError
from ._engine import BEGIN_OPTION, display_url, make_engine, resolve_url
from ._tables import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "SchemaError", "alembic_config", "current_revision", "ensure_schema", "upgrade"]

HEAD = "0004"
"""The newest revision this costledger ships (a test checks it against Alembic's head)."""

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATION_LOCK_KEY = 0x2C0F_7A13_5B6E_4D91
"""``pg_advisory_xact_lock`` key of the migrations (any fixed 63-bit number)."""


_alembic_lock = threading.Lock()
"""Alembic runs a migration through module-level proxies (``alembic.context``, ``op``)
that one ``EnvironmentContext`` installs and removes: two migrations at once in one
process, even of two different databases (a ledger and a guard store's), remove each
other's proxies (``KeyError: 'config'``). One at a time per process, then; processes are
kept apart by the database's own lock (below)."""


def _new_lock_in_child() -> None:
    global _alembic_lock
    _alembic_lock = threading.Lock()  # a fork may have copied it held by another thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


class SchemaError(CostLedgerError):
    """The database schema cannot be brought to this costledger's revision."""


def alembic_config(url: URL | None = None) -> Config:
    """An Alembic ``Config`` for the ledger's migrations, shipped inside the package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if url is not None:
        # ConfigParser interpolation: a literal % must be doubled
        cfg.set_main_option(
            "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The ledger schema's revision, ``None`` for a database without the ledger."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        value = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        return None if value is None else str(value)


def _migrate(engine: Engine) -> None:
    from alembic import command

    with engine.connect() as conn:
        conn = conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            # One migrator at a time: on PostgreSQL an advisory lock held until commit;
            # on SQLite, BEGIN IMMEDIATE already holds the write lock (DDL is transactional
            # because costledger emits BEGIN itself). A process that waited finds the schema
            # at head and Alembic does nothing.
            if conn.dialect.name == "postgresql":
                conn.execute(select(text(f"pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")))
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            with _alembic_lock:
                command.upgrade(cfg, "head")


def ensure_schema(engine: Engine) -> None:
    """Bring the schema to ``HEAD``.

    Idempotent and cheap when the schema is current (two small queries, no Alembic import).
    """
    revision = current_revision(engine)
    if revision != HEAD:
        if revision is not None and not (MIGRATIONS_DIR / "versions").is_dir():
            raise SchemaError(f"migrations directory {MIGRATIONS_DIR} is missing")
        try:
            _migrate(engine)
        except Exception as exc:
            from alembic.util import CommandError

            if isinstance(exc, CommandError):
                raise SchemaError(
                    f"cannot migrate the ledger at {display_url(engine.url)} from revision "
                    f"{revision!r} to {HEAD!r} (a newer costledger may have created it): {exc}"
                ) from exc
            raise


def upgrade(url: str | URL | None = None, *, sql: bool = False) -> None:
    """Create or migrate the ledger schema at ``url`` (default: as ``Ledger`` resolves it).

    Safe to run repeatedly and from several processes at once. ``sql=True`` prints the
    DDL instead of running it (Alembic offline mode), for a DBA to review.
    """
    resolved = resolve_url(url)
    if sql:
        from alembic import command

        with _alembic_lock:
            command.upgrade(alembic_config(resolved), "head", sql=True)
        return
    engine = make_engine(resolved)
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()
