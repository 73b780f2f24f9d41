"""The price of one call, in exact ``Decimal`` money."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any, Literal

from ._errors import short_repr as _shown

__all__ = [
    "MONEY_PRECISION",
    "MONEY_SCALE",
    "PRICING_STATUSES",
    "Cost",
    "PricingStatus",
    "money_in_range",
    "money_text",
]

PricingStatus = Literal["priced", "unknown_model", "not_priced"]
PRICING_STATUSES: tuple[str, ...] = ("priced", "unknown_model", "not_priced")
_STATUS_SET = frozenset(PRICING_STATUSES)
_AMOUNTS = ("total", "input", "cache_read", "cache_write", "output", "audio")

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # money is never rounded

# The ledger's NUMERIC(38, 18), declared here (``_ledger/_money.py`` imports it): that
# module loads SQLAlchemy, which ``import costledger`` does not.
MONEY_PRECISION = 38
"""Digits in all of a stored amount: 20 before the point, ``MONEY_SCALE`` after."""
MONEY_SCALE = 18
"""Digits after the point of a stored amount; the ledger rounds more half-even to these. A
per-token price such as $0.0375 per million tokens is 3.75e-8 per token and its cache-read
fraction 3.75e-9; 18 places keep every such product exact with ten digits to spare."""
_WHOLE = MONEY_PRECISION - MONEY_SCALE
_SURE = _WHOLE - 1  # the exponent of a 20-digit amount's first digit: below it, it fits
_LIMIT = _EXACT.subtract(Decimal(10) ** _WHOLE, Decimal(5).scaleb(-MONEY_SCALE - 1))
"""The least amount that the ledger's rounding to ``MONEY_SCALE`` places takes to 10^20."""


def money_in_range(amount: Decimal) -> bool:
    """Whether a finite ``amount`` fits the ledger: at most 20 whole digits once rounded to
    18 places (under 10^20 either way; a zero of any exponent, ``0E+30``, is zero). More
    than 18 places fit: the ledger rounds them half-even."""
    # copy_abs, not abs(): exact, where abs() rounds to the context's 28 digits
    return amount.adjusted() < _SURE or not amount or amount.copy_abs() < _LIMIT


def money_text(value: Decimal) -> str:
    """An amount as text, exactly and in plain positional notation (``0.0000002``, never
    ``2E-7``, which ``str()`` gives): the one form every log line, spool line, export, JSON
    and CSV document and SQLite row writes money in. ``Decimal(text)`` reads it back as
    the same amount."""
    if value.__class__ is Decimal:
        # str() is the "f" format whenever it writes no exponent, at a third of the cost
        # (it runs for each amount of every stored event and log line)
        text = str(value)
        if "E" not in text and "e" not in text:  # "e": a context with capitals=0
            return text
    return format(value, "f")


# ``init=False``: the checks live in ``__init__`` rather than a ``__post_init__``, because
# the pricer builds its costs by setting the slots directly (``_pricing/_card.py``), a fast
# path it only takes while ``Cost`` has no ``__post_init__``; its costs come from checked
# price cards and need no check.
@dataclass(frozen=True, slots=True, init=False)
class Cost:
    """Money for one call, per component, in ``currency`` (USD unless a price book says otherwise).

    ``status`` is ``"priced"`` when a price was found; ``"unknown_model"`` when no
    price book knows the model, in which case every amount is ``None`` (never a
    silent $0) and the event can be re-priced later; ``"not_priced"`` when there
    was nothing to price (a failed call with no usage).

    ``input`` is the uncached input only; ``cache_read`` and ``cache_write`` price
    the cached parts; ``audio`` prices input and output audio tokens; ``request`` is
    the rest of ``total`` (a per-call fee).

    Checked when built: ``status`` is one of the three above, each amount a finite
    ``Decimal`` or ``None`` (never a float) of at most 20 whole digits (the ledger's
    ``NUMERIC(38, 18)``: under 10^20 either way, once rounded to 18 places; see
    ``money_in_range``), ``currency`` text (``"USD"``), ``provider``, ``model`` and
    ``source`` text or ``None``; a ``TypeError`` or ``ValueError`` naming the field and
    the value otherwise, so a wrong cost fails where it is made, not in the ledger's
    writer. An amount with more than 18 decimal places is kept exactly as given; the
    ledger stores it rounded half-even to 18 places.
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

    def __init__(
        self,
        status: PricingStatus,
        total: Decimal | None = None,
        input: Decimal | None = None,
        cache_read: Decimal | None = None,
        cache_write: Decimal | None = None,
        output: Decimal | None = None,
        audio: Decimal | None = None,
        currency: str = "USD",
        provider: str | None = None,
        model: str | None = None,
        source: str | None = None,
    ) -> None:
        # identity and class tests first: a call's cost is built on its path
        if status.__class__ is not str or status not in _STATUS_SET:
            raise ValueError(
                "Cost status must be one of priced, unknown_model, not_priced, got "
                f"{_shown(status)}"
            )
        amounts = (total, input, cache_read, cache_write, output, audio)
        for amount in amounts:
            if amount is not None and (
                amount.__class__ is not Decimal
                or not amount.is_finite()
                or amount.adjusted() >= _SURE
            ):
                _check_amounts(amounts)
        if currency.__class__ is not str and not isinstance(currency, str):
            raise TypeError(
                f"Cost currency must be text (USD, EUR), got {type(currency).__name__} "
                f"{_shown(currency)}"
            )
        if not (
            (provider is None or provider.__class__ is str)
            and (model is None or model.__class__ is str)
            and (source is None or source.__class__ is str)
        ):
            _check_texts(provider, model, source)
        set_ = object.__setattr__
        set_(self, "status", status)
        set_(self, "total", total)
        set_(self, "input", input)
        set_(self, "cache_read", cache_read)
        set_(self, "cache_write", cache_write)
        set_(self, "output", output)
        set_(self, "audio", audio)
        set_(self, "currency", currency)
        set_(self, "provider", provider)
        set_(self, "model", model)
        set_(self, "source", source)

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
    def unknown(
        cls, model: str | None, provider: str | None = None, *, currency: str = "USD"
    ) -> Cost:
        return cls(status="unknown_model", model=model, provider=provider, currency=currency)

    @classmethod
    def zero(
        cls,
        *,
        model: str | None = None,
        provider: str | None = None,
        source: str,
        currency: str = "USD",
    ) -> Cost:
        """A real price of nothing: a cache hit that the provider did not bill."""
        z = Decimal(0)
        return cls(
            status="priced",
            currency=currency,
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


def _check_amounts(amounts: tuple[Any, ...]) -> None:
    """The error for the first amount that is not a finite ``Decimal`` or ``None``."""
    for name, amount in zip(_AMOUNTS, amounts, strict=True):
        if amount is None:
            continue
        if not isinstance(amount, Decimal):
            raise TypeError(
                f"Cost {name} must be a Decimal or None (money is never a float), got "
                f"{type(amount).__name__} {_shown(amount)}"
            )
        if not amount.is_finite():
            raise ValueError(f"Cost {name} must be a finite amount, got {_shown(amount)}")
        if not money_in_range(amount):
            raise ValueError(
                f"Cost {name} must be under 10^20 (the ledger's NUMERIC({MONEY_PRECISION}, "
                f"{MONEY_SCALE}) holds 20 whole digits), got {_shown(amount)}"
            )


def _check_texts(provider: Any, model: Any, source: Any) -> None:
    """The error for the first of ``provider``, ``model``, ``source`` that is not text or
    ``None``."""
    for name, value in (("provider", provider), ("model", model), ("source", source)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"Cost {name} must be text or None, got {type(value).__name__} {_shown(value)}"
            )
