"""Alembic environment of the ledger.

Run through ``costledger._ledger.upgrade(url)``, which hands over a connection that
already holds the migration lock (``config.attributes["connection"]``). Offline
(``--sql``) mode renders the DDL for a URL set as ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context

from costledger._ledger._tables import VERSION_TABLE, metadata

config = context.config


def _run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            literal_binds=True,
        )
    else:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",
        )
    with context.begin_transaction():
        context.run_migrations()


_run()
