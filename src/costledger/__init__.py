"""costledger: exact cost tracking, budgets and rate limits for LLM calls."""

from __future__ import annotations

from ._cost import Cost
from ._errors import (
    BudgetExceeded,
    CostLedgerError,
    GuardRefusal,
    GuardStoreUnavailable,
    PriceBookError,
    RateLimited,
    UsageError,
)
from ._events import UsageEvent
from ._usage import Usage

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "Cost",
    "CostLedgerError",
    "GuardRefusal",
    "GuardStoreUnavailable",
    "PriceBookError",
    "RateLimited",
    "Usage",
    "UsageError",
    "UsageEvent",
    "__version__",
]
