"""The SQL ledger of usage events (SQLite / PostgreSQL), its spool and its migrations.

Importing this package is light: ``Ledger`` and friends load SQLAlchemy only when a
ledger is created or a query runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import InMemoryLedger, Ledger, LedgerStats
from ._rows import StoredEvent, event_to_row, row_to_event

if TYPE_CHECKING:
    from ._migrate import SchemaError, upgrade
    from ._query import SummaryRow
    from ._store import CostChange
    from ._tables import EventRecord

__all__ = [
    "CostChange",
    "EventRecord",
    "InMemoryLedger",
    "Ledger",
    "LedgerStats",
    "SchemaError",
    "StoredEvent",
    "SummaryRow",
    "event_to_row",
    "row_to_event",
    "upgrade",
]

_LAZY = {
    "SchemaError": "._migrate",
    "upgrade": "._migrate",
    "SummaryRow": "._query",
    "CostChange": "._store",
    "EventRecord": "._tables",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
