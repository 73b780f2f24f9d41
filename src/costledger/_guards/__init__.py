"""Guards: budgets and rate limits that stop overspend before it happens.

Every entry point runs them through the Tracker (``Tracker(guards=[...])``): reserve a
worst-case estimate before the call, settle to the actual cost after it, release on
failure. State lives in the guard store chosen by ``Tracker(guard_store=URL)``.
"""

from __future__ import annotations

from ._alerts import AlertCallback, BudgetAlert, WebhookError, flush_alerts, webhook_alert
from ._budget import Budget, BudgetStatus
from ._config import GuardConfig, guards_from_config
from ._estimate import Estimate, Estimator, count_tokens, heuristic_tokens
from ._ratelimit import RateLimit, TokenRateLimit
from ._status import budget_status
from ._store import GuardStore, StoreRefusal, StoreUnavailable, open_store, store_for

__all__ = [
    "AlertCallback",
    "Budget",
    "BudgetAlert",
    "BudgetStatus",
    "Estimate",
    "Estimator",
    "GuardConfig",
    "GuardStore",
    "RateLimit",
    "StoreRefusal",
    "StoreUnavailable",
    "TokenRateLimit",
    "WebhookError",
    "budget_status",
    "count_tokens",
    "flush_alerts",
    "guards_from_config",
    "heuristic_tokens",
    "open_store",
    "store_for",
    "webhook_alert",
]
