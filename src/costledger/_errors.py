"""Exception types shared by every part of costledger."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error message or a log line
    (a value the host got wrong may be a megabyte of text); never raises."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__: the type is all we can say
        if isinstance(value, int):  # past 4,300 digits, Python refuses to write an int
            digits = int(value.bit_length() * math.log10(2)) + 1
            return f"<{type(value).__name__} of about {digits} digits>"
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CostLedgerError(Exception):
    """Base class of every error costledger raises on purpose."""


class UsageError(CostLedgerError, ValueError):
    """A usage payload could not be read; the message names the field and the value."""

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class PriceBookError(CostLedgerError, ValueError):
    """A custom price book is malformed; the message names the model, the field and the value."""


class GuardRefusal(CostLedgerError):
    """A guard deliberately refused a call. The only kind of error that reaches the host call."""


class BudgetExceeded(GuardRefusal):
    """A hard budget would be exceeded by this call."""

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        key: str | None,
        limit: Decimal,
        spent: Decimal,
        reserved: Decimal,
        resets_at: datetime | None,
        unit: str = "USD",
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.key = key
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.resets_at = resets_at
        self.unit = unit


class RateLimited(GuardRefusal):
    """A rate limit refused the call; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, limit: str, key: str | None, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.key = key
        self.retry_after = retry_after


class GuardStoreUnavailable(CostLedgerError):
    """The shared guard store (Redis, SQL) could not be reached and the guard fails closed."""


def missing_extra(exc: ModuleNotFoundError, what: str, extra: str) -> ImportError:
    """``exc`` (an optional package that is not installed) as an error saying what needs
    it and what to install, as ``ImportError`` (``name`` kept) so callers catch it alike."""
    error = ImportError(
        f"{what} needs the {exc.name or 'missing'!r} package, which is not installed: "
        f"pip install 'costledger[{extra}]'",
        name=exc.name,
    )
    error.__cause__ = None
    return error
