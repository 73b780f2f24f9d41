"""Price lists for ``costledger prices``: the default rate cards, one model's card, and a
price book compared with the defaults component by component."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._common import EXACT, canonical, money_text, share_of

if TYPE_CHECKING:
    from .._pricing import PriceBook, RateCard

__all__ = ["COMPONENTS", "PriceDiff", "diff_prices", "effective_rates", "list_prices", "show_price"]

COMPONENTS: tuple[str, ...] = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "input_audio",
    "cache_audio_read",
    "output_audio",
)
"""Per-million-token prices of a card, as billed (``reasoning`` is shown on its own)."""
_DIFFED = (*COMPONENTS, "reasoning")


def effective_rates(card: RateCard, names: tuple[str, ...] = COMPONENTS) -> dict[str, Decimal]:
    """Each component's rate as billed: an optional rate the card lacks bills as its parent."""
    from .._pricing._card import PARENT_RATE, billed_rate

    return {
        name: billed_rate(card, name) if name in PARENT_RATE else getattr(card, name)
        for name in names
    }


def _provider_matches(wanted: str | None, *names: str | None) -> bool:
    if wanted is None:
        return True
    from .._pricing._names import GENAI_PROVIDER

    w = wanted.strip().lower()
    targets = {w, GENAI_PROVIDER.get(w, w)}
    return any(n is not None and (n.lower() in targets) for n in names)


def list_prices(
    *,
    provider: str | None = None,
    price_book: PriceBook | None = None,
    at: datetime | None = None,
) -> list[RateCard]:
    """The rate cards of every model genai-prices lists (its prices at ``at``, default now),
    then those of ``price_book``; ``provider`` keeps one provider's (``"openai"``,
    ``"bedrock"``...). LiteLLM's price map, the pricer's fallback for models
    genai-prices lacks, is not listed (``show_price`` finds them)."""
    from .._pricing._book import load_price_book
    from .._pricing._genai import GenaiPrices, Match, compile_price

    moment = at or datetime.now(timezone.utc)
    genai = GenaiPrices()
    snapshot = genai.snapshot()
    cards: list[RateCard] = []
    for p in snapshot.providers:
        if not _provider_matches(provider, p.id, p.name):
            continue
        for m in p.models:
            match = Match(p, m)
            if isinstance(m.prices, list):
                card = compile_price(m.get_prices(moment), match, genai.source)
            else:
                card = genai.compile_static(match)
            if card is not None:
                cards.append(card)
    if price_book is not None:
        for card in load_price_book(price_book).values():
            if provider is None or _provider_matches(provider, card.provider):
                cards.append(card)
    cards.sort(key=lambda c: ((c.provider or "").lower(), c.model.lower()))
    return cards


def show_price(
    model: str,
    *,
    provider: str | None = None,
    price_book: PriceBook | None = None,
    at: datetime | None = None,
    price_context: Mapping[str, str] | None = None,
) -> RateCard | None:
    """The card ``Pricer(overrides=price_book)`` prices ``model`` with (for a call served
    with ``price_context``: a service tier, speed, batch), or ``None``."""
    from .._pricing import Pricer

    return Pricer(overrides=price_book).rate_card(
        model, provider=provider, at=at, price_context=price_context
    )


@dataclass(frozen=True, slots=True)
class PriceDiff:
    """One component of one model: the default price, the book's, and the change.

    ``status``: ``"same"``, ``"changed"``, ``"new"`` when no default source prices
    the model, or ``"other currency"`` when the default prices it in another currency
    (``default_currency``) than the book (``currency``): then there is no ``change``
    nor ``change_share``, amounts in two currencies do not subtract. ``change_share``
    is the change over the default, six places.
    """

    model: str
    provider: str | None
    component: str
    default: Decimal | None
    book: Decimal
    change: Decimal | None
    change_share: Decimal | None
    status: str
    default_source: str | None
    currency: str
    default_currency: str | None = None
    variant: str | None = None
    """The book's price variant compared (``"service_tier=flex"``), against the default
    prices for a call served so; ``None`` for the standard prices."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "variant": self.variant,
            "component": self.component,
            "currency": self.currency,
            "default_currency": self.default_currency,
            "default": money_text(self.default),
            "book": money_text(self.book),
            "change": money_text(self.change),
            "change_share": money_text(self.change_share),
            "status": self.status,
            "default_source": self.default_source,
        }


def diff_prices(price_book: PriceBook, *, at: datetime | None = None) -> list[PriceDiff]:
    """Every model of ``price_book`` against the default prices, component by component
    (prices per million tokens; the rates as billed, see ``effective_rates``), then each
    of its price variants against the default prices for a call served so. Long-context
    tiers are not compared."""
    from .._pricing import Pricer
    from .._pricing._book import load_price_book_entries

    defaults = Pricer()
    out: list[PriceDiff] = []
    for entry in load_price_book_entries(price_book).values():
        standard = entry.card
        pairs: list[tuple[str | None, RateCard, RateCard | None]] = [
            (None, standard, defaults.rate_card(standard.model, provider=standard.provider, at=at))
        ]
        for when, _ in entry.variants:
            context = dict(when)
            card = entry.variant(context)
            assert card is not None  # its own context always selects it
            default = defaults.rate_card(
                standard.model, provider=standard.provider, at=at, price_context=context
            )
            pairs.append((", ".join(f"{k}={v}" for k, v in when), card, default))
        for variant, card, default in pairs:
            out.extend(_diff_card(card, default, variant))
    return out


def _diff_card(card: RateCard, default: RateCard | None, variant: str | None) -> list[PriceDiff]:
    out: list[PriceDiff] = []
    from .._pricing._card import PARENT_RATE

    mine = {**effective_rates(card, _DIFFED), "per_request": card.request}
    theirs = None
    if default is not None:
        theirs = {**effective_rates(default, _DIFFED), "per_request": default.request}
    for name in mine:
        if (
            name in PARENT_RATE
            and getattr(card, name) is None
            and (default is None or getattr(default, name) is None)
        ):
            continue  # neither side prices it apart from its parent: nothing to say
        if name == "per_request" and not card.request and not (theirs and theirs[name]):
            continue  # no fee on either side
        value = mine[name]
        if theirs is None:
            out.append(
                PriceDiff(
                    card.model,
                    card.provider,
                    name,
                    None,
                    canonical(value),
                    None,
                    None,
                    "new",
                    None,
                    card.currency,
                )
            )
            continue
        assert default is not None
        base = theirs[name]
        change: Decimal | None = None
        share: Decimal | None = None
        if default.currency != card.currency:  # not comparable: no difference given
            status = "other currency"
        else:
            exact = EXACT.subtract(value, base)
            change, share = canonical(exact), share_of(exact, base)
            status = "same" if exact.is_zero() else "changed"
        out.append(
            PriceDiff(
                card.model,
                card.provider,
                name,
                canonical(base),
                canonical(value),
                change,
                share,
                status,
                default.source,
                card.currency,
                default.currency,
                variant,
            )
        )
    return out
