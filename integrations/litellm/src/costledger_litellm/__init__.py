"""costledger for LiteLLM: the exact cost of every LiteLLM call, recorded once.

>>> import litellm
>>> from costledger_litellm import CostLedgerLogger
>>> litellm.callbacks = [CostLedgerLogger()]
>>> litellm.completion(model="gpt-4o-mini", messages=[...])

Budgets and rate limits need to run before the call, which a LiteLLM callback
cannot do: call ``costledger_litellm.completion`` / ``acompletion`` (same
arguments as LiteLLM's) instead, or, on a LiteLLM Proxy, register the logger as
a callback and its ``async_pre_call_hook`` enforces them.
"""

from __future__ import annotations

from ._exit import EXIT_FLUSH_TIMEOUT, flush_callbacks, register_exit_flush
from ._logger import (
    DISAGREEMENT_THRESHOLD,
    MAX_IN_FLIGHT,
    MAX_RECENT_IDS,
    REFUSAL_STATUS_CODE,
    CostLedgerLogger,
)
from ._wrappers import TrackedStream, acompletion, completion

__version__ = "0.1.0"

# After LiteLLM's and costledger's own exit hooks (both imported above), so it runs first.
register_exit_flush()

__all__ = [
    "DISAGREEMENT_THRESHOLD",
    "EXIT_FLUSH_TIMEOUT",
    "MAX_IN_FLIGHT",
    "MAX_RECENT_IDS",
    "REFUSAL_STATUS_CODE",
    "CostLedgerLogger",
    "TrackedStream",
    "__version__",
    "acompletion",
    "completion",
    "flush_callbacks",
]
