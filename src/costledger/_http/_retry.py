"""Retry policy of ``costledger.http.Client``, as tenacity strategies.

They compose like any tenacity strategy: ``retry_if_transient() | retry_if_exception_type(X)``,
``wait_retry_after(wait_fixed(1) + wait_random(0, 1))``.
"""

from __future__ import annotations

from tenacity import RetryCallState
from tenacity.retry import retry_base
from tenacity.wait import wait_base, wait_exponential, wait_random

from ._errors import APIConnectionError, APIStatusError, RateLimitedByProvider

__all__ = ["default_wait", "is_transient", "retry_if_transient", "wait_retry_after"]

# 408 (request timeout) and 409 (lock conflict) are retried by the OpenAI SDK too.
_RETRY_STATUSES = frozenset({408, 409, 429})
# A 429 that no wait will cure: the account is out of credit.
_NOT_TRANSIENT_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


def is_transient(exc: BaseException | None, *, max_retry_after: float = 60.0) -> bool:
    """Whether a later attempt may succeed: 408/409/429, 5xx, timeouts, connection errors.

    An error status is not transient when the provider asks to wait longer than
    ``max_retry_after`` seconds (``Retry-After``, on a 429, a 503 or any other), nor a
    429 that says the quota is exhausted.
    """
    if isinstance(exc, APIConnectionError):
        return True
    if not isinstance(exc, APIStatusError):
        return False
    if not (exc.status_code in _RETRY_STATUSES or exc.status_code >= 500):
        return False
    if isinstance(exc, RateLimitedByProvider) and (
        exc.error_code in _NOT_TRANSIENT_CODES or exc.error_type in _NOT_TRANSIENT_CODES
    ):
        return False
    return exc.retry_after is None or exc.retry_after <= max_retry_after


class retry_if_transient(retry_base):
    """Retry errors that may pass on a later attempt (see ``is_transient``)."""

    def __init__(self, *, max_retry_after: float = 60.0) -> None:
        self.max_retry_after = max_retry_after

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        return is_transient(outcome.exception(), max_retry_after=self.max_retry_after)


class wait_retry_after(wait_base):
    """Wait as long as the provider's ``Retry-After`` says (capped at ``max_wait``),
    else as ``fallback`` says (default: exponential backoff with jitter, 0.5 s to 8 s)."""

    def __init__(self, fallback: wait_base | None = None, *, max_wait: float = 60.0) -> None:
        self.fallback = fallback if fallback is not None else default_wait()
        self.max_wait = max_wait

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after >= 0:
            return float(min(retry_after, self.max_wait))
        return float(self.fallback(retry_state))


def default_wait() -> wait_base:
    """Exponential backoff with jitter: 0.5, 1, 2, 4, then 8 s, each plus up to 1 s.

    Composed rather than ``wait_exponential_jitter``, whose ``initial`` is deprecated in
    tenacity 9 while its replacement, ``multiplier``, is missing from the 8.x we accept."""
    return wait_exponential(multiplier=0.5, max=8.0) + wait_random(0, 1.0)
