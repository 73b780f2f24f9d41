"""The canonical token count of one model call.

One convention, the one OpenTelemetry GenAI and genai-prices use:
``input_tokens`` counts ALL input, cache reads and cache writes included;
``output_tokens`` counts ALL output, reasoning included. Every provider's
payload is converted to it at exactly one boundary (``extract_usage``), so a
cached or reasoning token is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral
from operator import index
from typing import Any

from ._errors import UsageError
from ._errors import short_repr as _shown

__all__ = ["MAX_TOKENS", "TOKEN_FIELDS", "Usage", "UsageError", "check_count"]

MAX_TOKENS = 10**16
"""The most tokens one count may hold: ten million billion, far beyond any call (the
largest context windows hold ~10^7). The ledger sums counts in 64-bit integers (up to
9.2e18); with this bound one group's sum (a day's calls, or a month's) overflows only
after 922 such calls, where a count near 2^63 would overflow the sum of two."""


def check_count(field: str, value: Any) -> int:
    """Return ``value`` as a token count, or raise ``UsageError`` naming ``field``.

    bools and floats are refused on purpose: ``True`` is not one token, and a
    float count means something upstream averaged or guessed. More than ``MAX_TOKENS``
    is refused too. Another integral number (``numpy.int64``, anything with
    ``__index__``) is read as the plain ``int`` it stands for.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if not isinstance(value, (bool, str, float)):
            number = _integral(value)
            if number is not None:
                return check_count(field, number)
        if isinstance(value, str):
            text = value.strip()
            # ASCII only: str.isdigit() is also true of "²" (which int() refuses) and of
            # other scripts' digits ("١٢"), which no provider writes in a count.
            if text.isascii() and text.isdigit():
                digits = text.lstrip("0") or "0"  # int() refuses 4,300 digits, zeros too
                if len(digits) > _MAX_DIGITS or int(digits) > MAX_TOKENS:
                    raise _too_many(field, value)  # the error holds the text it was given
                return int(digits)
        raise UsageError(
            f"usage field {field!r} must be a whole number of tokens, got {_shown(value)}",
            field=field,
            value=value,
        )
    if value < 0:
        raise UsageError(
            f"usage field {field!r} must not be negative, got {_shown(value)}",
            field=field,
            value=value,
        )
    if value > MAX_TOKENS:
        raise _too_many(field, value)
    return value


_MAX_DIGITS = len(str(MAX_TOKENS))


def _integral(value: Any) -> int | None:
    """The plain ``int`` of an integral number that is not one (numpy's ``int64``, which
    a pandas or numpy pipeline hands over): a ``numbers.Integral``, by ``__index__``. A
    float (numpy's too) is none, nor is numpy's bool, though numpy before 2.4 gives it an
    ``__index__`` (deprecated): ``True`` is not one token. ``None`` for anything else."""
    if not isinstance(value, Integral):
        return None
    try:
        number = index(value)
    except Exception:  # no __index__, or one that raises: not a count
        return None
    if isinstance(number, bool):  # an __index__ that says True: no more a count than True
        return None
    return int.__index__(number)  # plain int, of an int subclass too


def _too_many(field: str, value: Any) -> UsageError:
    return UsageError(
        f"usage field {field!r} must be at most 10^16 tokens, got {_shown(value)}",
        field=field,
        value=value,
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call in the canonical convention (see the module docstring).

    ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written with a
    one-hour lifetime (Anthropic); the rest were written with the default
    five-minute lifetime.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            checked = check_count(f.name, value)
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise UsageError(
                "cache_read_tokens + cache_write_tokens "
                f"({self.cache_read_tokens} + {self.cache_write_tokens}) exceed "
                f"input_tokens ({self.input_tokens}); input must include cached tokens",
                field="cache_read_tokens",
                value=self.cache_read_tokens,
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise UsageError(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed "
                f"cache_write_tokens ({self.cache_write_tokens})",
                field="cache_write_1h_tokens",
                value=self.cache_write_1h_tokens,
            )
        if self.reasoning_tokens > self.output_tokens:
            raise UsageError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens "
                f"({self.output_tokens}); output must include reasoning",
                field="reasoning_tokens",
                value=self.reasoning_tokens,
            )
        if self.input_audio_tokens > self.input_tokens:
            raise UsageError(
                f"input_audio_tokens ({self.input_audio_tokens}) exceed input_tokens "
                f"({self.input_tokens})",
                field="input_audio_tokens",
                value=self.input_audio_tokens,
            )
        if self.output_audio_tokens > self.output_tokens:
            raise UsageError(
                f"output_audio_tokens ({self.output_audio_tokens}) exceed output_tokens "
                f"({self.output_tokens})",
                field="output_audio_tokens",
                value=self.output_audio_tokens,
            )

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes with the default five-minute lifetime."""
        return self.cache_write_tokens - self.cache_write_1h_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens that were neither read from nor written to a cache."""
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


TOKEN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
"""``Usage``'s counts by name, in order: also the ledger's token columns and the keys of
costledger's own usage dicts."""
