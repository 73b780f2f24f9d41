"""costledger: exact cost tracking, budgets and rate limits for LLM calls.

The light parts (value types, the Tracker, attribution, the decorator) import
eagerly; the heavy ones (the ledger on SQLAlchemy, the pricer on genai-prices,
guards, structlog output) load on first use, so ``import costledger`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._attribution import Attribution, attribute
from ._cost import Cost
from ._decorator import track_cost
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
from ._tracker import Tracker, configure, drain_deferred, get_tracker
from ._usage import Usage

if TYPE_CHECKING:
    from ._dashboard import (
        Dashboard,
        DashboardServer,
        build_dashboard,
        render_dashboard,
        serve_dashboard,
        write_dashboard,
    )
    from ._extract import ResponseInfo, extract_usage, read_response
    from ._guards import (
        Budget,
        BudgetAlert,
        BudgetStatus,
        Estimator,
        GuardConfig,
        RateLimit,
        TokenRateLimit,
        budget_status,
        flush_alerts,
        guards_from_config,
        webhook_alert,
    )
    from ._guards._budget import BudgetCheckFailed
    from ._ingest import IngestError, IngestProgress, IngestResult, InputResult, ingest
    from ._ledger import Ledger, LedgerStats, StoredEvent, SummaryRow
    from ._logging import UsageLogger
    from ._pricing import PriceBook, Pricer, RateCard, RateTier
    from ._redact import redact, redact_processor
    from ._reports import (
        EmptyRange,
        ExportResult,
        PriceDiff,
        Report,
        ReportRow,
        RepriceResult,
        UnpricedCall,
        WhatIf,
        WhatIfRow,
        diff_prices,
        export,
        list_prices,
        parse_when,
        rebuild_rollups,
        report,
        reprice,
        show_price,
        top,
        whatif,
    )
    from ._schema import event_from_line, event_from_record, event_to_record

__version__ = "0.1.0"

# name -> private module that defines it, imported on first attribute access.
_LAZY: dict[str, str] = {
    "Budget": "._guards",
    "BudgetAlert": "._guards",
    "BudgetCheckFailed": "._guards._budget",
    "BudgetStatus": "._guards",
    "Dashboard": "._dashboard",
    "DashboardServer": "._dashboard",
    "EmptyRange": "._reports",
    "Estimator": "._guards",
    "ExportResult": "._reports",
    "GuardConfig": "._guards",
    "IngestError": "._ingest",
    "IngestProgress": "._ingest",
    "IngestResult": "._ingest",
    "InputResult": "._ingest",
    "Ledger": "._ledger",
    "LedgerStats": "._ledger",
    "PriceBook": "._pricing",
    "PriceDiff": "._reports",
    "Pricer": "._pricing",
    "RateCard": "._pricing",
    "RateLimit": "._guards",
    "RateTier": "._pricing",
    "Report": "._reports",
    "ReportRow": "._reports",
    "RepriceResult": "._reports",
    "ResponseInfo": "._extract",
    "StoredEvent": "._ledger",
    "SummaryRow": "._ledger",
    "TokenRateLimit": "._guards",
    "UnpricedCall": "._reports",
    "UsageLogger": "._logging",
    "WhatIf": "._reports",
    "WhatIfRow": "._reports",
    "budget_status": "._guards",
    "build_dashboard": "._dashboard",
    "diff_prices": "._reports",
    "event_from_line": "._schema",
    "event_from_record": "._schema",
    "event_to_record": "._schema",
    "export": "._reports",
    "extract_usage": "._extract",
    "flush_alerts": "._guards",
    "guards_from_config": "._guards",
    "ingest": "._ingest",
    "list_prices": "._reports",
    "parse_when": "._reports",
    "read_response": "._extract",
    "rebuild_rollups": "._reports",
    "redact": "._redact",
    "redact_processor": "._redact",
    "render_dashboard": "._dashboard",
    "report": "._reports",
    "reprice": "._reports",
    "serve_dashboard": "._dashboard",
    "show_price": "._reports",
    "top": "._reports",
    "webhook_alert": "._guards",
    "whatif": "._reports",
    "write_dashboard": "._dashboard",
}


if not TYPE_CHECKING:  # a misspelt name must fail type checks, not resolve to Any

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'costledger' has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Attribution",
    "Budget",
    "BudgetAlert",
    "BudgetCheckFailed",
    "BudgetExceeded",
    "BudgetStatus",
    "Cost",
    "CostLedgerError",
    "Dashboard",
    "DashboardServer",
    "EmptyRange",
    "Estimator",
    "ExportResult",
    "GuardConfig",
    "GuardRefusal",
    "GuardStoreUnavailable",
    "IngestError",
    "IngestProgress",
    "IngestResult",
    "InputResult",
    "Ledger",
    "LedgerStats",
    "PriceBook",
    "PriceBookError",
    "PriceDiff",
    "Pricer",
    "RateCard",
    "RateLimit",
    "RateLimited",
    "RateTier",
    "Report",
    "ReportRow",
    "RepriceResult",
    "ResponseInfo",
    "StoredEvent",
    "SummaryRow",
    "TokenRateLimit",
    "Tracker",
    "UnpricedCall",
    "Usage",
    "UsageError",
    "UsageEvent",
    "UsageLogger",
    "WhatIf",
    "WhatIfRow",
    "__version__",
    "attribute",
    "budget_status",
    "build_dashboard",
    "configure",
    "diff_prices",
    "drain_deferred",
    "event_from_line",
    "event_from_record",
    "event_to_record",
    "export",
    "extract_usage",
    "flush_alerts",
    "get_tracker",
    "guards_from_config",
    "ingest",
    "list_prices",
    "parse_when",
    "read_response",
    "rebuild_rollups",
    "redact",
    "redact_processor",
    "render_dashboard",
    "report",
    "reprice",
    "serve_dashboard",
    "show_price",
    "top",
    "track_cost",
    "webhook_alert",
    "whatif",
    "write_dashboard",
]
