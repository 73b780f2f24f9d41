"""costledger for LangChain: the exact cost of every model call, recorded once.

>>> from costledger_langchain import CostLedgerCallbackHandler, tracking
>>> model.invoke("Hi", config={"callbacks": [CostLedgerCallbackHandler()]})
>>> with tracking() as totals:
...     chain.invoke({"question": "..."})
>>> totals.total_cost
"""

from __future__ import annotations

from ._handler import MAX_IN_FLIGHT, CostLedgerCallbackHandler, CostTotals, tracking

__version__ = "0.1.0"

__all__ = [
    "MAX_IN_FLIGHT",
    "CostLedgerCallbackHandler",
    "CostTotals",
    "__version__",
    "tracking",
]
