"""The price of one call, in exact ``Decimal`` money."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Literal

__all__ = ["Cost", "PricingStatus", "money_text"]

PricingStatus = Literal["priced", "unknown_model", "not_priced"]

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # money is never rounded


def money_text(value: Decimal) -> str:
    """An amount as text, exactly and in plain positional notation (``0.0000002``, never
    ``2E-7``, which ``str()`` gives): the one form every log line, spool line, export, JSON
    and CSV document and SQLite row writes money in. ``Decimal(text)`` reads it back as
    the same amount."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class Cost:
    """Money for one call, per component, in ``currency`` (USD unless a price book says otherwise).

    ``status`` is ``"priced"`` when a price was found; ``"unknown_model"`` when no
    price book knows the model, in which case every amount is ``None`` (never a
    silent $0) and the event can be re-priced later; ``"not_priced"`` when there
    was nothing to price (a failed call with no usage).

    ``input`` is the uncached input only; ``cache_read`` and ``cache_write`` price
    the cached parts; ``audio`` prices input and output audio tokens; ``request`` is
    the rest of ``total`` (a per-call fee).
    """

    status: PricingStatus
    total: Decimal | None = None
    input: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    output: Decimal | None = None
    audio: Decimal | None = None
    currency: str = "USD"
    provider: str | None = None
    model: str | None = None
    source: str | None = None

    @property
    def priced(self) -> bool:
        return self.status == "priced"

    @property
    def request(self) -> Decimal | None:
        """The part of ``total`` that no token component names: a flat fee per call
        (Perplexity's Sonar models charge one per thousand requests). Derived, so that
        ``total`` always equals the components plus this; ``None`` when unpriced or
        when no component is known (a provider-reported total alone)."""
        total = self.total
        if total is None:
            return None
        parts = (self.input, self.cache_read, self.cache_write, self.output, self.audio)
        if all(part is None for part in parts):
            return None
        rest = total
        for part in parts:
            if part is not None:
                rest = _EXACT.subtract(rest, part)
        return rest

    @classmethod
    def unknown(cls, model: str | None, provider: str | None = None) -> Cost:
        return cls(status="unknown_model", model=model, provider=provider)

    @classmethod
    def zero(cls, *, model: str | None = None, provider: str | None = None, source: str) -> Cost:
        """A real price of nothing: a cache hit that the provider did not bill."""
        z = Decimal(0)
        return cls(
            status="priced",
            total=z,
            input=z,
            cache_read=z,
            cache_write=z,
            output=z,
            audio=z,
            model=model,
            provider=provider,
            source=source,
        )
