"""``RateCard``: the compiled, frozen prices of one model, and the exact arithmetic of a call.

Rates are USD (or the card's ``currency``) per million tokens, as every price
list writes them. The card keeps a per-token copy of each rate so that pricing a
call is a handful of ``Decimal`` multiplications by an ``int``, in a local
context wide enough that nothing is ever rounded: ``Inexact`` is trapped, so a
rounding would raise rather than pass silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Any

from .._cost import Cost
from .._usage import Usage

__all__ = [
    "EXACT",
    "MTOK",
    "PARENT_RATE",
    "RATE_PLACES",
    "RateCard",
    "RateTier",
    "billed_rate",
    "clean_rate",
    "context_label",
]

MTOK = 1_000_000

EXACT = Context(
    prec=60,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
"""Wide enough for any token count times any price: a result that would need
rounding raises ``decimal.Inexact`` instead of being quantized silently."""

PARENT_RATE: dict[str, str] = {
    "cache_write_1h": "cache_write",
    "input_audio": "input",
    "cache_audio_read": "cache_read",
    "output_audio": "output",
    "reasoning": "output",
}
"""The optional rates, and the rate their tokens are billed at when a card lacks them."""

_ZERO = Decimal(0)
_MUL = EXACT.multiply
_ADD = EXACT.add

RATE_DIGITS = 15
RATE_PLACES = 12
"""Decimal places a default source's rate per million tokens keeps: 18 per token, the
ledger's scale, so a call's cost (a token count times the rates) has at most 18 places
and is stored as the pricer computed it."""
_ROUND_DIGITS = Context(prec=RATE_DIGITS, rounding=ROUND_HALF_EVEN)
_ONE = Decimal(1)


def clean_rate(value: Decimal, places: int = RATE_PLACES) -> Decimal:
    """A rate of a default source (genai-prices, LiteLLM), cleaned of float noise.

    Both are generated from floats: ``1.0399999999999998`` stands for 1.04 per million
    tokens, ``0.08333333333333334`` for a twelfth. The rate is rounded half-even to 15
    significant digits (a double holds any 15-digit decimal exactly, so a rate written
    with up to 15 digits comes back as written), then to at most ``places`` decimal
    places (a rate that would round to 0 keeps its 15 digits: a price is never made
    free). A rate with neither too many digits nor too many places is returned as it is.
    """
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or (len(digits) <= RATE_DIGITS and exponent >= -places):
        return value
    rounded = _ROUND_DIGITS.plus(value)
    exponent = rounded.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -places:
        quantum = _ONE.scaleb(-places)
        fewer = rounded.quantize(quantum, rounding=ROUND_HALF_EVEN, context=_WIDE)
        if fewer or not rounded:
            rounded = fewer
    rounded = rounded.normalize(EXACT)
    exponent = rounded.as_tuple().exponent
    # no positive exponent (1E+2): a rate prints and multiplies as a plain number
    if isinstance(exponent, int) and exponent > 0:
        return rounded.quantize(_ONE, context=EXACT)
    return rounded


_WIDE = Context(prec=60, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _cost_builder() -> Callable[..., Cost]:
    """A constructor of priced ``Cost`` objects for the hot path.

    A frozen dataclass's ``__init__`` sets each of its eleven fields through
    ``object.__setattr__``, which is half the time of pricing a call. Writing the
    slots directly is about three times faster. That is only done while ``Cost``
    is exactly the shape this code knows (same fields, no ``__post_init__``);
    otherwise the ordinary constructor is used, so a new field can never be left unset.
    """
    names = (
        "status",
        "total",
        "input",
        "cache_read",
        "cache_write",
        "output",
        "audio",
        "currency",
        "provider",
        "model",
        "source",
    )
    known = tuple(f.name for f in fields(Cost)) == names and not hasattr(Cost, "__post_init__")
    slots: list[Any] = [getattr(Cost, name, None) for name in names]
    if not known or not all(hasattr(slot, "__set__") for slot in slots):

        def build(*values: Any) -> Cost:
            return Cost(**dict(zip(names, values, strict=True)))

        return build
    s_status, s_total, s_in, s_cr, s_cw, s_out, s_audio, s_cur, s_prov, s_model, s_src = (
        slot.__set__ for slot in slots
    )
    new = object.__new__

    def build_fast(*values: Any) -> Cost:
        status, total, inp, cr, cw, out, audio, currency, provider, model, source = values
        cost: Cost = new(Cost)
        s_status(cost, status)
        s_total(cost, total)
        s_in(cost, inp)
        s_cr(cost, cr)
        s_cw(cost, cw)
        s_out(cost, out)
        s_audio(cost, audio)
        s_cur(cost, currency)
        s_prov(cost, provider)
        s_model(cost, model)
        s_src(cost, source)
        return cost

    return build_fast


_new_cost = _cost_builder()


@dataclass(frozen=True, slots=True, kw_only=True)
class RateTier:
    """Rates that replace the base rates for the WHOLE call once the prompt passes ``above``.

    The prompt counted against ``above`` is every input token: uncached, cache
    reads and cache writes (``Usage.input_tokens``). ``None`` means "billed as the
    parent rate of this tier" (see ``RateCard``).
    """

    above: int
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal | None = None
    input_audio: Decimal | None = None
    cache_audio_read: Decimal | None = None
    output_audio: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateCard:
    """The prices of one model at one moment, per million tokens, in ``currency``.

    ``input`` prices uncached input; ``cache_read`` and ``cache_write`` price
    cached input (a source without a separate cache price gives the input rate
    here). The optional rates are ``None`` when the source has no separate price,
    and those tokens are then billed as their parent: ``cache_write_1h`` as
    ``cache_write``, ``input_audio`` as ``input``, ``cache_audio_read`` as
    ``cache_read``, ``output_audio`` and ``reasoning`` as ``output``.
    ``request`` is a flat fee per call (a few search models have one).
    ``tiers`` are long-context prices, lowest threshold first.
    """

    model: str
    provider: str | None
    source: str
    currency: str = "USD"
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal | None = None
    input_audio: Decimal | None = None
    cache_audio_read: Decimal | None = None
    output_audio: Decimal | None = None
    reasoning: Decimal | None = None
    request: Decimal = _ZERO
    tiers: tuple[RateTier, ...] = ()
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    # Per-token rates, highest tier first, then the base band (threshold -1).
    _bands: tuple[tuple[int, tuple[Decimal, ...]], ...] = field(
        init=False, repr=False, compare=False
    )
    _split: tuple[bool, bool, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bands = [(-1, _per_token(self))]
        for tier in sorted(self.tiers, key=lambda t: t.above):
            bands.append((tier.above, _per_token(tier)))
        bands.reverse()
        object.__setattr__(self, "_bands", tuple(bands))
        everything: tuple[RateCard | RateTier, ...] = (self, *self.tiers)
        object.__setattr__(
            self,
            "_split",
            (
                any(r.input_audio is not None for r in everything),
                any(r.output_audio is not None for r in everything),
                any(r.reasoning is not None for r in everything),
            ),
        )

    def rates_for(self, prompt_tokens: int) -> RateTier:
        """The rates in force for a call whose whole prompt is ``prompt_tokens``."""
        chosen: RateCard | RateTier = self
        for tier in self.tiers:
            if prompt_tokens > tier.above:
                chosen = tier
        return RateTier(
            above=chosen.above if isinstance(chosen, RateTier) else -1,
            input=chosen.input,
            output=chosen.output,
            cache_read=chosen.cache_read,
            cache_write=chosen.cache_write,
            cache_write_1h=chosen.cache_write_1h,
            input_audio=chosen.input_audio,
            cache_audio_read=chosen.cache_audio_read,
            output_audio=chosen.output_audio,
            reasoning=chosen.reasoning,
        )

    def estimate(self, input_tokens: int, output_tokens: int) -> Decimal:
        """The most a call of ``input_tokens`` input and ``output_tokens`` output can cost.

        For guards that reserve before the call: each input token at the dearest input
        rate of the card (uncached text, a cache write, a one-hour cache write, audio:
        Anthropic bills cache writes at 1.25x and 2x its input rate, and a prompt may be
        written to the cache whole), each output token at the dearest output rate (text,
        audio, reasoning); the tier follows ``input_tokens``, the per-call fee included.
        """
        rates = self._bands[-1][1]
        for above, band in self._bands:
            if input_tokens > above:
                rates = band
                break
        r_in, _, r_cw, r_cw1h, r_ia, r_out, r_oa, r_rs, _ = rates
        total = _ADD(
            _MUL(max(r_in, r_cw, r_cw1h, r_ia), input_tokens),
            _MUL(max(r_out, r_oa, r_rs), output_tokens),
        )
        return _ADD(total, self.request) if self.request else total

    def cost(self, usage: Usage) -> Cost:
        """The exact price of one call with this card."""
        bands = self._bands
        if len(bands) == 1:
            rates = bands[0][1]
        else:
            prompt = usage.input_tokens
            rates = bands[-1][1]
            for above, band in bands:
                if prompt > above:
                    rates = band
                    break
        r_in, r_cr, r_cw, r_cw1h, r_ia, r_out, r_oa, r_rs, r_car = rates
        split_ia, split_oa, split_rs = self._split
        mul = _MUL
        add = _ADD

        cr = usage.cache_read_tokens
        cw = usage.cache_write_tokens
        ia = usage.input_audio_tokens if split_ia else 0
        uncached = usage.input_tokens - cr - cw - ia
        audio = _ZERO
        if ia:
            if uncached < 0:
                # More audio than uncached room: the overlap can only be audio that was
                # read from the cache (the Usage has no field for it), so it is billed
                # as cached audio rather than as a negative amount of text.
                cached_audio = min(-uncached, cr)
                cr -= cached_audio
                ia += uncached  # what cr could not absorb overlapped cache writes
                uncached = 0
                audio = mul(r_car, cached_audio)
            audio = add(audio, mul(r_ia, ia))
        cost_input = mul(r_in, uncached)
        cost_cache_read = mul(r_cr, cr) if cr else _ZERO
        if cw:
            cw1h = usage.cache_write_1h_tokens
            cost_cache_write = mul(r_cw, cw - cw1h)
            if cw1h:
                cost_cache_write = add(cost_cache_write, mul(r_cw1h, cw1h))
        else:
            cost_cache_write = _ZERO

        oa = usage.output_audio_tokens if split_oa else 0
        rs = usage.reasoning_tokens if split_rs else 0
        text_out = usage.output_tokens - oa - rs
        if text_out < 0:  # only when both audio and reasoning are split: reasoning yields
            rs += text_out
            text_out = 0
        cost_output = mul(r_out, text_out)
        if rs:
            cost_output = add(cost_output, mul(r_rs, rs))
        if oa:
            audio = add(audio, mul(r_oa, oa))

        total = add(
            add(add(cost_input, cost_cache_read), add(cost_cache_write, cost_output)), audio
        )
        if self.request:
            total = add(total, self.request)
        return _new_cost(
            "priced",
            total,
            cost_input,
            cost_cache_read,
            cost_cache_write,
            cost_output,
            audio,
            self.currency,
            self.provider,
            self.model,
            self.source,
        )


def billed_rate(r: RateCard | RateTier, name: str) -> Decimal:
    """The rate ``name``'s tokens are billed at: an optional rate ``r`` lacks is its parent's."""
    rate: Decimal | None = getattr(r, name)
    return getattr(r, PARENT_RATE[name]) if rate is None else rate


def _per_token(r: RateCard | RateTier) -> tuple[Decimal, ...]:
    """Effective per-token rates in the order ``RateCard.cost`` unpacks them."""
    return tuple(
        EXACT.scaleb(billed_rate(r, name), -6)
        for name in (
            "input",
            "cache_read",
            "cache_write",
            "cache_write_1h",
            "input_audio",
            "output",
            "output_audio",
            "reasoning",
            "cache_audio_read",
        )
    )


def with_variant(
    card: RateCard,
    items: Iterable[tuple[str, str]],
    early: Iterable[tuple[Iterable[tuple[str, str]], str]] = (),
) -> RateCard:
    """``card`` with the price context entries that selected it named in its source
    (``genai-prices 0.2.5 [service_tier=flex]``); as it is when there are none.

    ``early``: entries whose variant the price data dates after the call, each group with
    what priced it instead (``[processing=batch at its price listed from 2026-10-14]``),
    after the rest, a semicolon between groups."""
    labels = [context_label(items)]
    labels += [f"{context_label(entries)} {note}" for entries, note in early]
    label = "; ".join(text for text in labels if text)
    if not label:
        return card
    return replace(card, source=f"{card.source} [{label}]")


def context_label(items: Iterable[tuple[str, str]]) -> str:
    """Price context entries as a source and a warning name them: ``processing=batch``."""
    return ", ".join(f"{key}={value}" for key, value in sorted(items))
