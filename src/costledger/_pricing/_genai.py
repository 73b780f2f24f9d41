"""Prices from genai-prices (the default source), compiled into ``RateCard``s.

genai-prices models a price as a set of units (input tokens, cache reads, 1-hour
cache writes, audio tokens, ...) where a more specific unit is carved out of its
parent. Of those units, ``Usage`` can only report the ones mapped below; every
other unit (images, video, searches, seconds, characters) counts zero for a
``Usage``, so its price never applies and the card leaves it out.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._card import EXACT, RateCard, RateTier, clean_rate, with_variant
from ._names import GENAI_PROVIDER, ModelName

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, Provider

__all__ = ["EarlyVariant", "GenaiPrices", "TimedCards", "early_note"]

_UTC = timezone.utc
_MAX_BUCKETS = 512


@dataclass(frozen=True, slots=True)
class Match:
    provider: Provider
    model: ModelInfo


class GenaiPrices:
    """genai-prices' bundled data (or the snapshot its ``UpdatePrices`` installed)."""

    def __init__(self) -> None:
        self._snapshot: DataSnapshot | None = None
        self.source = ""

    def snapshot(self) -> DataSnapshot:
        if self._snapshot is None:
            import importlib.metadata

            from genai_prices import data_snapshot

            snap = data_snapshot.get_snapshot()
            version = importlib.metadata.version("genai-prices")
            self.source = f"genai-prices {version}" + (
                " (auto-updated data)" if snap.from_auto_update else ""
            )
            self._snapshot = snap
        return self._snapshot

    def find(self, name: ModelName) -> Match | None:
        """genai-prices' own matching, which knows aliases and many dated snapshots.

        A provider genai-prices knows is binding: a model it does not list there
        is not priced at some other provider's rate.
        """
        snap = self.snapshot()
        provider_id = self.provider_id(name.provider) if name.provider else None
        # The name as given first: genai-prices lists ids such as ``perplexity/sonar``
        # that differ from the bare ``sonar``.
        refs = [name.full] if name.ref == name.full else [name.full, name.ref]
        for ref in refs:
            try:
                provider, model = snap.find_provider_model(ref, None, provider_id, None)
            except LookupError:
                continue
            return Match(provider, model)
        return None

    def provider_id(self, provider: str) -> str | None:
        """genai-prices' id for a provider name, ``None`` for a provider it does not know
        (``sambanova``, ``snowflake``, ``dashscope``...: its matching would then take the
        model at any provider)."""
        from genai_prices.data_snapshot import find_provider_by_id

        provider_id = GENAI_PROVIDER.get(provider)
        if provider_id is None:
            found = find_provider_by_id(self.snapshot().providers, provider)
            provider_id = found.id if found is not None else None
        return provider_id

    def context_window(self, match: Match) -> int | None:
        window = match.model.context_window
        return window if isinstance(window, int) and window > 0 else None

    def compile_static(self, match: Match) -> RateCard | None:
        from genai_prices.types import ModelPrice

        prices = match.model.prices
        if isinstance(prices, ModelPrice):
            return compile_price(prices, match, self.source)
        return None

    def timed(self, match: Match, finish: Callable[[RateCard], RateCard]) -> TimedCards:
        """Cards that follow the model's conditional prices; ``finish`` decorates each."""
        source = self.source

        def build(at: datetime) -> RateCard | None:
            card = compile_price(match.model.get_prices(at), match, source)
            return finish(card) if card is not None else None

        return TimedCards(match.model, build)

    def variant(
        self,
        match: Match,
        context: Mapping[str, str],
        finish: Callable[[RateCard], RateCard],
        on_early: Callable[[EarlyVariant], None] | None = None,
    ) -> TimedCards | None:
        """Cards of the model's price variants that ``context`` selects (its service tier,
        speed, batch processing), following their start dates; ``None`` when no variant
        of the model matches ``context`` (the standard price applies).

        As genai-prices' own ``calc_price``: a model found under another provider than
        the one asked for (an Azure deployment priced as OpenAI's model, Vertex as
        Anthropic's) takes the standard price, since the variants are that other
        provider's. ``cost.source`` names the variants that changed a price, never the
        rest of the context (a caller's value there is not repeated into every row).

        A call dated before a selected variant's first date (genai-prices dates its
        tiers from the day it verified them, not from when the provider began to charge
        them) is priced as ``_before_first`` says, and ``on_early`` is told, once per
        UTC day the cards are built for."""
        if not any(model is match.model for model in match.provider.models):
            return None
        chosen = [
            variant
            for variant in match.model.price_variants or ()
            if all(context.get(key) == value for key, value in variant.when.items())
            and any(price is not None for price in vars(variant.prices).values())
        ]
        if not chosen:
            return None
        from genai_prices.types import StartDateConstraint

        dated = [v for v in chosen if isinstance(v.constraint, StartDateConstraint)]
        source = self.source

        def build(at: datetime) -> RateCard | None:
            card = compile_price(match.model.get_prices(at, dict(context)), match, source)
            if card is None:
                return None
            active = _active_items(chosen, at)
            firsts = _not_yet_listed(dated, active, at) if dated else None
            if not firsts:
                return with_variant(finish(card), active)
            return _before_first(match, chosen, finish, card, at, firsts, on_early, source)

        return TimedCards(match.model, build, (variant.constraint for variant in chosen))


Listed = tuple[tuple[tuple[str, str], ...], date]
"""Price context entries, and the date the price data lists their variant from."""


@dataclass(frozen=True, slots=True)
class EarlyVariant:
    """A call priced before the first date the price data gives a variant it selects."""

    listed: tuple[Listed, ...]  # the entries not listed yet at the call's time, by date
    at: datetime  # the call's time (UTC)
    carried: bool  # priced at the variants' first listed prices (else at the standard price)
    card: RateCard  # what prices the call
    standard: RateCard  # the standard card at the call's time
    source: str  # the price data (``genai-prices 0.2.5``)


def _active_items(chosen: Iterable[Any], at: datetime) -> set[tuple[str, str]]:
    return {
        item
        for variant in chosen
        if variant.constraint is None or variant.constraint.active(at)
        for item in variant.when.items()
    }


def _not_yet_listed(
    dated: list[Any], active: set[tuple[str, str]], at: datetime
) -> dict[tuple[str, str], date]:
    """Each context entry that only variants dated after ``at`` select (none active at
    ``at`` does), with the earliest start date of those variants."""
    firsts: dict[tuple[str, str], date] = {}
    for variant in dated:
        start: date = variant.constraint.start_date
        if variant.constraint.active(at):
            continue
        for item in variant.when.items():
            if item not in active and (item not in firsts or start < firsts[item]):
                firsts[item] = start
    return firsts


def _before_first(
    match: Match,
    chosen: list[Any],
    finish: Callable[[RateCard], RateCard],
    card: RateCard,
    at: datetime,
    firsts: dict[tuple[str, str], date],
    on_early: Callable[[EarlyVariant], None] | None,
    source: str,
) -> RateCard | None:
    """The card of a call dated before the first date the price data gives a variant it
    selects (``firsts``), where genai-prices gives the standard price silently ("tier
    history before this verification is not modeled": OpenAI's batch rates are dated
    2026-10-14, though OpenAI has halved batch prices since 2024).

    A call that says it ran in a batch, or at a tier, did: the variant's first listed
    price is the best the data knows, and prices the call when the model's standard price
    at the call's time is the one in force on that first date (the variant belongs to the
    same price list). When the standard price changed in between (o3's cut of
    2025-06-10, the end of claude-sonnet-4-6's long-context tier on 2026-03-13), the
    variant's later rates would mix two price lists, so the call keeps the standard price.
    Either way ``cost.source`` says which, and ``on_early`` is told."""
    model = match.model
    by_date: dict[date, list[tuple[str, str]]] = {}
    for item, first in sorted(firsts.items()):
        by_date.setdefault(first, []).append(item)
    listed = tuple((tuple(items), first) for first, items in sorted(by_date.items()))
    standard = compile_price(model.get_prices(at), match, source)
    carried = standard is not None and all(
        compile_price(model.get_prices(_same_time(first, at)), match, source) == standard
        for first in by_date
    )
    notes = [(items, early_note(first, carried)) for items, first in listed]
    if carried:
        card = compile_price(_first_prices(model, chosen, at, firsts), match, source) or card
    priced = with_variant(finish(card), _active_items(chosen, at), notes)
    if on_early is not None:
        on_early(EarlyVariant(listed, at, carried, priced, finish(standard or card), source))
    return priced


def early_note(first: date, carried: bool) -> str:
    """What ``cost.source`` says after the entries of a variant dated from ``first``, for
    a call before it: priced at that first listed price, or at the standard price."""
    if carried:
        return f"at its price listed from {first.isoformat()}"
    return f"not listed before {first.isoformat()}: standard price"


def _same_time(day: date, at: datetime) -> datetime:
    """``at``'s UTC time of day on ``day`` (a time-of-day price stays the one of ``at``)."""
    return datetime.combine(day, at.astimezone(_UTC).time(), tzinfo=_UTC)


def _first_prices(
    model: ModelInfo, chosen: list[Any], at: datetime, firsts: Mapping[tuple[str, str], date]
) -> ModelPrice:
    """The model's price at ``at`` with the variants active then and, for each entry of
    ``firsts``, the variants that start on its first date: resolved as genai-prices'
    ``get_prices`` resolves them (first to last, each price from the first variant that
    sets it)."""
    from copy import copy

    overrides: dict[str, Any] = {}
    for variant in chosen:
        constraint = variant.constraint
        if not (
            constraint is None
            or constraint.active(at)
            or any(
                firsts.get(item) == getattr(constraint, "start_date", None)
                for item in variant.when.items()
            )
        ):
            continue
        for key, price in vars(variant.prices).items():
            if price is not None:
                overrides.setdefault(key, price)
    prices = copy(model.get_prices(at))
    vars(prices).update(overrides)
    return prices


class TimedCards:
    """Cards of a model whose price depends on the date or the time of day.

    Within one UTC day, and between two consecutive time-of-day boundaries, every
    genai-prices constraint has the same truth value, so one compiled card serves
    the whole bucket.
    """

    def __init__(
        self,
        model: ModelInfo,
        build: Callable[[datetime], RateCard | None],
        more_constraints: Iterable[object] = (),
    ) -> None:
        from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

        bounds: set[time] = set()
        uses_date = False
        conditionals = model.prices if isinstance(model.prices, list) else ()
        constraints: list[object] = [c.constraint for c in conditionals]
        constraints.extend(more_constraints)  # a price variant's own start date
        for constraint in constraints:
            if isinstance(constraint, StartDateConstraint):
                uses_date = True
            elif isinstance(constraint, TimeOfDateConstraint):
                bounds.add(_utc_time(constraint.start_time))
                bounds.add(_utc_time(constraint.end_time))
        self._bounds = tuple(sorted(bounds))
        self._uses_date = uses_date
        self._build = build
        self._cards: dict[tuple[date | None, int], RateCard | None] = {}

    def card_at(self, at: datetime) -> RateCard | None:
        utc = at.astimezone(_UTC)
        key = (
            utc.date() if self._uses_date else None,
            bisect_right(self._bounds, utc.time()) if self._bounds else 0,
        )
        try:
            return self._cards[key]
        except KeyError:
            pass
        card = self._build(utc)
        if len(self._cards) >= _MAX_BUCKETS:
            self._cards.clear()
        self._cards[key] = card
        return card


def _utc_time(value: time) -> time:
    """A constraint's time of day as naive UTC (genai-prices reads naive times as UTC)."""
    if value.tzinfo is None:
        return value
    as_utc = datetime.combine(date(1970, 1, 1), value).astimezone(_UTC)
    return as_utc.time()


_FREE_PROVIDERS = frozenset({"github-copilot"})
"""Providers whose models are paid for by a subscription, not per token: an entry there
with no price at all is "included", so free per call."""
_SAYS_FREE = re.compile(r"\(free\)|\bfree of charge\b|\bincluded in the subscription\b", re.I)


def free_by_evidence(match: Match) -> bool:
    """Whether a genai-prices entry with no price at all is known to be free.

    genai-prices also leaves the price out of models it keeps only for old usage
    (delisted, price unknown: Cerebras' ``qwen-3-coder-480b``), so an empty price is
    free only with evidence: a ``:free`` model id (OpenRouter, Azure, Mistral), a
    subscription provider (GitHub Copilot), or the entry's own name, description or
    price comment saying so ("Gemma 3 (free)", "All OpenAI moderation models and
    endpoints are free of charge"). Anything else is no price, never a silent $0.
    """
    model = match.model
    if model.id.lower().endswith(":free") or match.provider.id in _FREE_PROVIDERS:
        return True
    words = (model.name, model.description, model.price_comments)
    return any(isinstance(text, str) and _SAYS_FREE.search(text) for text in words)


def compile_price(price: ModelPrice, match: Match, source: str) -> RateCard | None:
    """One genai-prices ``ModelPrice`` as a card; ``None`` when it has no token price."""
    from genai_prices.types import TieredPrices

    values: dict[str, Any] = {
        k: v for k, v in vars(price).items() if v is not None and not k.startswith("_")
    }
    if not values:
        # No price at all: free with evidence (free_by_evidence); otherwise unknown (the
        # next source is asked, then the model is unknown_model). A price written as 0 is
        # a price and does not come here.
        if not free_by_evidence(match):
            return None
    elif "input_mtok" not in values and "output_mtok" not in values:
        # Priced per second, character or page only: a token count cannot be priced.
        return None
    thresholds = sorted(
        {tier.start for v in values.values() if isinstance(v, TieredPrices) for tier in v.tiers}
    )

    def rate(key: str, threshold: int) -> Decimal | None:
        # Cleaned of float noise as LiteLLM's rates are (``clean_rate``): the data has
        # ``1.0399999999999998`` for 1.04 and ``0.08333333333333334`` for a twelfth.
        value = values.get(key)
        if not isinstance(value, TieredPrices):
            return clean_rate(value) if isinstance(value, Decimal) else None
        chosen: Decimal = value.base
        for tier in sorted(value.tiers, key=lambda t: t.start):
            if tier.start <= threshold:  # genai-prices: the tier applies when prompt > start
                chosen = tier.price
        return clean_rate(chosen)

    def band(threshold: int) -> RateTier:
        zero = Decimal(0)
        input_rate = rate("input_mtok", threshold)
        input_rate = zero if input_rate is None else input_rate
        output_rate = rate("output_mtok", threshold)
        cache_read = rate("cache_read_mtok", threshold)
        cache_write = rate("cache_write_mtok", threshold)
        return RateTier(
            above=threshold,
            input=input_rate,
            output=zero if output_rate is None else output_rate,
            cache_read=input_rate if cache_read is None else cache_read,
            cache_write=input_rate if cache_write is None else cache_write,
            cache_write_1h=rate("cache_write_1h_mtok", threshold),
            input_audio=rate("input_audio_mtok", threshold),
            cache_audio_read=rate("cache_audio_read_mtok", threshold),
            output_audio=rate("output_audio_mtok", threshold),
            reasoning=rate("output_reasoning_mtok", threshold),
        )

    request = values.get("requests_kcount")
    if isinstance(request, TieredPrices):  # not in the data; refuse rather than guess
        return None
    base = band(-1)
    return RateCard(
        model=match.model.id,
        provider=match.provider.id,
        source=source,
        input=base.input,
        output=base.output,
        cache_read=base.cache_read,
        cache_write=base.cache_write,
        cache_write_1h=base.cache_write_1h,
        input_audio=base.input_audio,
        cache_audio_read=base.cache_audio_read,
        output_audio=base.output_audio,
        reasoning=base.reasoning,
        request=(
            EXACT.scaleb(clean_rate(request, 15), -3)
            if isinstance(request, Decimal)
            else Decimal(0)
        ),
        tiers=tuple(band(t) for t in thresholds),
    )
