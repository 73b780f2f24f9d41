"""Anthropic SDK middleware that lets a guard's refusal reach the caller unwrapped.

The Anthropic SDK wraps any exception its HTTP client raises in its own
``APIConnectionError`` and retries it, so a ``BudgetExceeded`` raised by the
tracking transport would surface (after the retries, each refused again with no
network I/O) as a connection error. Its middleware runs per attempt and its
exceptions propagate as they are: these unwrap the refusal there.

    anthropic.Anthropic(http_client=..., middleware=[raise_guard_refusals])
    anthropic.AsyncAnthropic(http_client=..., middleware=[araise_guard_refusals])

The OpenAI SDK (3.x) lets non-network errors through untouched and needs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import GuardRefusal

__all__ = ["araise_guard_refusals", "raise_guard_refusals"]


def _refusal_in(exc: BaseException) -> GuardRefusal | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, GuardRefusal):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def raise_guard_refusals(request: Any, call_next: Callable[[Any], Any]) -> Any:
    """Sync Anthropic middleware: re-raise a ``GuardRefusal`` the SDK wrapped."""
    try:
        return call_next(request)
    except Exception as exc:
        refusal = _refusal_in(exc)
        if refusal is None or refusal is exc:
            raise
        raise refusal from None


async def araise_guard_refusals(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Async Anthropic middleware: re-raise a ``GuardRefusal`` the SDK wrapped."""
    try:
        return await call_next(request)
    except Exception as exc:
        refusal = _refusal_in(exc)
        if refusal is None or refusal is exc:
            raise
        raise refusal from None
