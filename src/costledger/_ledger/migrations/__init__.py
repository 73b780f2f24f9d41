"""Alembic migrations of the ledger schema; run them with ``costledger._ledger.upgrade(url)``."""
