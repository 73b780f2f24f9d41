"""Alembic revisions of the ledger schema (files named ``vNNNN_*.py``)."""
