"""Reports over the ledger: spend per group, top calls, what-if re-pricing, re-pricing,
export, price lists. The ``costledger`` command line is a thin layer over these.

Importing this package is light; each function loads SQLAlchemy (and pyarrow, the
pricer...) when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._export import EXPORT_COLUMNS, EXPORT_FORMATS, ExportFormat, ExportResult, export
from ._prices import COMPONENTS, PriceDiff, diff_prices, effective_rates, list_prices, show_price
from ._report import GROUP_KEYS, Report, ReportRow, exchange_rates, parse_by, report, top
from ._whatif import RepriceResult, UnpricedCall, WhatIf, WhatIfRow, reprice, whatif
from ._when import PERIODS, EmptyRange, parse_when, resolve_bounds

if TYPE_CHECKING:
    from .._ledger import Ledger
    from .._tracker import LedgerLike

__all__ = [
    "COMPONENTS",
    "EXPORT_COLUMNS",
    "EXPORT_FORMATS",
    "GROUP_KEYS",
    "PERIODS",
    "EmptyRange",
    "ExportFormat",
    "ExportResult",
    "PriceDiff",
    "Report",
    "ReportRow",
    "RepriceResult",
    "UnpricedCall",
    "WhatIf",
    "WhatIfRow",
    "diff_prices",
    "effective_rates",
    "exchange_rates",
    "export",
    "list_prices",
    "parse_by",
    "parse_when",
    "rebuild_rollups",
    "report",
    "reprice",
    "resolve_bounds",
    "show_price",
    "top",
    "whatif",
]


def rebuild_rollups(ledger: Ledger | LedgerLike | str | None) -> int:
    """Recompute the daily rollups of ``ledger`` (a ``Ledger`` or a database URL, as for
    ``report``; ``None``: the default) from its events, in one transaction (see
    ``_ledger._rollups``); the number of events read."""
    from .._ledger._rollups import rebuild_rollups as rebuild
    from ._common import open_ledger

    with open_ledger(ledger) as opened:
        return rebuild(opened)
