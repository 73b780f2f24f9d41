"""``Pricer``: model name + ``Usage`` -> exact ``Cost``.

Sources, first match wins: a custom price book (``overrides``), genai-prices,
LiteLLM's bundled price map; then, for a dated snapshot nobody lists, the same
again without the date. A call at a provider genai-prices does not know (SambaNova,
Snowflake, DashScope...) takes LiteLLM's entry at that provider before genai-prices,
whose matching would otherwise find the bare model name at any provider. A model
no source knows is ``unknown_model``: no amount at all (never $0, never another
model's price), one warning per model, and the event can be re-priced once a price
exists. So is a model a source lists
without a price costledger can use (no token price, a tier table it cannot read):
it is not priced as its undated base model either.

Resolving a name is slow (genai-prices' matching walks its model list); it is
done once per ``(model, provider)`` and the compiled ``RateCard`` kept, so a
call costs a dict look-up and a few ``Decimal`` multiplications.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, overload

from .._cost import Cost
from .._errors import short_repr
from .._events import UsageEvent
from .._redact import redact_text
from .._usage import Usage
from ._book import BookEntry, load_price_book_entries
from ._card import RateCard, RateTier, context_label, with_variant
from ._genai import EarlyVariant, GenaiPrices, Match, TimedCards, early_note
from ._litellm import LiteLLMPrices, variant_entry
from ._names import (
    GENAI_PROVIDER,
    ModelName,
    canonical_provider,
    litellm_provider,
    split_name,
    strip_date_suffix,
)

__all__ = ["PriceBook", "Pricer"]

logger = logging.getLogger("costledger")

PriceBook = Mapping[str, Mapping[str, Any]] | str | os.PathLike[str]
"""A price book: ``{model: {"input": ..., "output": ...}}`` or a .toml / .json path."""

_UTC = timezone.utc
_MAX_HINTS = 20  # "did you mean" hints per pricer, for its first unknown names
_MAX_NAMES = 8192  # distinct (model, provider) pairs kept compiled; more means a leak upstream
_MAX_LOGGED_NAME = 200  # characters of a model or provider name a warning shows


@dataclass(slots=True, eq=False)
class _Resolved:
    """What a ``(model, provider)`` pair resolved to."""

    name: ModelName
    card: RateCard | None = None
    timed: TimedCards | None = None
    canonical: str | None = None
    context_window: int | None = None
    unknown: Cost | None = None
    limits: tuple[int | None, int | None] | None = None
    full_cards: dict[RateCard, RateCard] = field(default_factory=dict)
    match: Match | None = None  # the genai-prices entry, for its price variants
    litellm_entry: tuple[str, Mapping[str, Any]] | None = None  # or LiteLLM's, for its own
    book: BookEntry | None = None  # or the price book's entry, for its variants
    in_book: bool = False  # priced from the price book (with or without variants)
    finish: Callable[[RateCard], RateCard] | None = None  # a snapshot's note on its cards
    variants: dict[tuple[tuple[str, str], ...], TimedCards | RateCard | None] = field(
        default_factory=dict
    )
    gaps: _Gaps | None = None  # what the price data lacks, looked up when a call may reach it


@dataclass(frozen=True, slots=True)
class _Gaps:
    """Parts of a genai-prices card's price the data lacks, with LiteLLM's rates for them
    where its entry for the same model (at the same base price) has them."""

    audio: tuple[Decimal | None, Decimal | None] | None = None  # LiteLLM's audio in / out
    window: int | None = None  # the context window genai-prices lists
    tier: RateTier | None = None  # LiteLLM's lowest long-context tier
    litellm: str = ""  # LiteLLM's source, for the warning


class Pricer:
    """Prices calls from genai-prices, LiteLLM's price map and an optional price book.

    ``overrides`` (a mapping or a .toml / .json file, see ``docs/pricing.md``) takes
    precedence over both default sources. ``genai_prices`` / ``litellm`` switch a
    default source off (a price book alone then decides). Thread-safe.
    """

    _default: ClassVar[Pricer | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        overrides: PriceBook | None = None,
        *,
        genai_prices: bool = True,
        litellm: bool = True,
    ) -> None:
        self._overrides = load_price_book_entries(overrides) if overrides is not None else {}
        # (provider id, model) -> the book's key, for its keys written with a provider
        # prefix (``anthropic/claude-sonnet-4-5``): the call may name the provider apart
        self._book_prefixed = _prefixed_keys(self._overrides)
        self._genai = GenaiPrices() if genai_prices else None
        self._litellm = LiteLLMPrices() if litellm else None
        self._resolved: dict[tuple[str, str | None], _Resolved] = {}
        # (response model, provider, requested model) -> the one of the two that prices it
        self._pairs: dict[tuple[str, str | None, str], _Resolved] = {}
        self._warned: set[tuple[str, str | None]] = set()
        self._hints_left = _MAX_HINTS
        self._known_names: dict[str, str] | None = None  # for the unknown-model hint
        self._lock = threading.RLock()
        _pricers.add(self)  # its lock is made anew in a forked child

    @classmethod
    def default(cls) -> Pricer:
        """The process-wide pricer with the default sources, created on first use."""
        pricer = cls._default
        if pricer is None:
            with cls._default_lock:
                pricer = cls._default
                if pricer is None:
                    pricer = cls._default = cls()
        return pricer

    # -- pricing -----------------------------------------------------------------------

    def price(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        price_context: Mapping[str, str] | None = None,
        requested_model: str | None = None,
    ) -> Cost:
        """The exact cost of one call of ``model`` with ``usage``.

        ``provider`` narrows the match (``"azure"``, ``"bedrock"``, ...); a provider
        prefix in ``model`` (``"openai/gpt-4.1"``) does the same. ``at``, the call's
        time (timezone-aware; default now), picks date- and time-of-day prices.
        ``price_context`` says how the call was served where that changes its price, in
        genai-prices' terms: ``{"service_tier": "priority"}`` (or ``"flex"``),
        ``{"speed": "fast"}``, ``{"processing": "batch"}``; a value the model has no
        price variant for leaves the standard price.

        ``requested_model``: the name the call asked for, when ``model`` is the one the
        response named (OpenAI's dated snapshot, an Azure deployment's base model). The
        response's model prices the call, unless the book has an entry for the requested
        name and that name is the same model or one only the book knows; another model
        that answered (a fallback) is never priced at the requested model's price.

        An argument of the wrong type (a usage dict, a ``date`` or a string for ``at``) is a
        ``TypeError`` naming it.
        """
        # one class check each on the hot path; a subclass (or a wrong type) is looked at
        # by _check_args, which raises for a wrong type only
        if (
            model.__class__ is not str
            or usage.__class__ is not Usage
            or (provider is not None and provider.__class__ is not str)
            or (at is not None and at.__class__ is not datetime)
            or (requested_model is not None and requested_model.__class__ is not str)
        ):
            _check_args(model, usage, provider, at, requested_model)
        if requested_model and requested_model != model:
            resolved = self._pairs.get((model, provider, requested_model))
            if resolved is None:
                resolved = self._resolve_pair(model, provider, requested_model)
        else:
            resolved = self._resolved.get((model, provider))
            if resolved is None:
                resolved = self._resolve(model, provider)
        if price_context:
            card = self._variant_card(resolved, price_context, at)
            if card is not None:
                return card.cost(usage)
        card = resolved.card
        if card is None:
            if resolved.timed is not None:
                card = resolved.timed.card_at(_when(at))
            if card is None:
                self._warn_unknown(resolved)
                return resolved.unknown or Cost.unknown(resolved.name.full, resolved.name.provider)
        elif at is not None and at.tzinfo is None:
            _when(at)  # raises: a naive time is refused whichever model is priced
        cost = card.cost(usage)
        if resolved.match is not None and (
            (
                (usage.input_audio_tokens or usage.output_audio_tokens)
                and (card.input_audio is None or card.output_audio is None)
            )
            or (usage.input_tokens > _LONG_PROMPT and not card.tiers)
        ):
            self._check_gaps(resolved, card, usage)
        return cost

    def reprice(self, event: UsageEvent) -> UsageEvent:
        """``event`` priced again now that prices may be known (its own time is used).

        Events with nothing to price (``not_priced``) and cache hits are returned as is.
        """
        if event.cost.status == "not_priced" or event.cache_hit:
            return event
        model = event.response_model or event.model
        if not model:
            return event
        cost = self.price(
            model,
            event.usage,
            provider=event.provider,
            at=event.timestamp,
            price_context=event.price_context,
            requested_model=event.model,
        )
        return event.with_cost(cost)

    def _check_gaps(self, resolved: _Resolved, card: RateCard, usage: Usage) -> None:
        """A call of a genai-prices model that may reach a part of its price the data
        lacks (audio tokens without an audio rate, a long prompt without a long-context
        tier): warn once per model and gap when it does (see docs/pricing.md, Known data
        gaps). The first look-up (LiteLLM's map, read once) runs on costledger's
        background worker, never on the caller's thread; the amount is never changed."""
        gaps = resolved.gaps
        if gaps is None:
            from .._tracker import defer

            defer(self._find_gaps_then_warn, resolved, card, usage)
            return
        _warn_gaps(resolved, gaps, card, usage)

    def _find_gaps_then_warn(self, resolved: _Resolved, card: RateCard, usage: Usage) -> None:
        gaps = resolved.gaps
        if gaps is None:
            gaps = resolved.gaps = self._find_gaps(resolved, card)
        _warn_gaps(resolved, gaps, card, usage)

    def _find_gaps(self, resolved: _Resolved, card: RateCard) -> _Gaps:
        """LiteLLM's entry for the same model, when it has the same base rates (the same
        price list): its audio rates where the card has none, its long-context tiers
        (input and output both dearer) where the card has none."""
        window = resolved.context_window
        if self._litellm is None:
            return _Gaps(window=window)
        name = resolved.name
        with self._lock:
            found = self._litellm.find(name)
            if found is None and resolved.canonical:
                found = self._litellm.find(
                    ModelName(resolved.canonical, resolved.canonical, name.provider, False)
                )
            other = self._litellm.compile(*found) if found is not None else None
        if other is None or (other.input, other.output) != (card.input, card.output):
            return _Gaps(window=window)
        audio: tuple[Decimal | None, Decimal | None] | None = None
        audio_in = other.input_audio if card.input_audio is None else None
        audio_out = other.output_audio if card.output_audio is None else None
        if (audio_in is not None and audio_in != card.input) or (
            audio_out is not None and audio_out != card.output
        ):
            audio = (audio_in, audio_out)
        tiers = [t for t in other.tiers if t.input > other.input and t.output > other.output]
        tier = tiers[0] if tiers and not card.tiers else None
        return _Gaps(audio=audio, window=window, tier=tier, litellm=other.source)

    def _variant_card(
        self, resolved: _Resolved, context: Mapping[str, str], at: datetime | None
    ) -> RateCard | None:
        """The card of the price variant ``context`` selects: genai-prices' price variants,
        or LiteLLM's ``_priority`` / ``_flex`` / ``_balanced`` / ``_batches``... rates for a
        model priced from its map, or a price book entry's own variants; ``None`` for the
        standard price (no variant matches)."""
        # Most contexts have one entry ({"service_tier": "default"} on every OpenAI call):
        # their items are the key as they are, and a key seen before was checked then.
        items = tuple(context.items()) if isinstance(context, Mapping) else ()
        key = items if len(items) == 1 else check_price_context(context)
        try:
            variant = resolved.variants[key]
        except (KeyError, TypeError):  # new, or an unhashable value: checked (and refused)
            key = check_price_context(context)
            match, entry = resolved.match, resolved.litellm_entry
            finish = resolved.finish or _same
            with self._lock:
                variant = None
                if resolved.book is not None:
                    variant = resolved.book.variant(dict(key))
                    if variant is not None:
                        variant = finish(variant)
                elif match is not None and match.model.price_variants and self._genai is not None:
                    variant = self._genai.variant(
                        match, dict(key), finish, partial(_warn_early_variant, resolved.name)
                    )
                elif match is None and entry is not None and self._litellm is not None:
                    variant = self._litellm_variant(entry, dict(key), finish)
                if len(resolved.variants) >= 64:
                    resolved.variants.clear()
                resolved.variants[key] = variant
            if variant is None:
                _warn_no_variant(resolved, key)
        if variant is None or isinstance(variant, RateCard):
            return variant
        return variant.card_at(_when(at))

    def _litellm_variant(
        self,
        found: tuple[str, Mapping[str, Any]],
        context: Mapping[str, str],
        finish: Callable[[RateCard], RateCard],
    ) -> RateCard | None:
        assert self._litellm is not None
        entry, used = variant_entry(found[1], context)
        card = self._litellm.compile(found[0], entry) if entry is not None else None
        if card is None:
            return None
        return with_variant(finish(card), used)

    def rate_card(
        self,
        model: str,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        price_context: Mapping[str, str] | None = None,
    ) -> RateCard | None:
        """The rates that ``price`` would use, with the model's token limits where known
        (``price_context``: the variant's rates, as ``price`` takes them).

        ``None`` when no source prices the model.
        """
        resolved = self._resolved.get((model, provider))
        if resolved is None:
            resolved = self._resolve(model, provider)
        card = resolved.card
        if price_context:
            card = self._variant_card(resolved, price_context, at) or card
        if card is None and resolved.timed is not None:
            card = resolved.timed.card_at(_when(at))
        if card is None:
            return None
        full = resolved.full_cards.get(card)
        if full is None:
            max_in, max_out = self._limits(resolved, card)
            full = dataclasses.replace(card, max_input_tokens=max_in, max_output_tokens=max_out)
            if len(resolved.full_cards) > 64:
                resolved.full_cards.clear()
            resolved.full_cards[card] = full
        return full

    def currency_of(
        self, model: str | None, *, provider: str | None = None, at: datetime | None = None
    ) -> str:
        """The currency ``model`` is priced in, for a cost with no amount to say it (a
        failed call without usage, a cache hit): a ledger priced in EUR then holds no USD
        row that a report in EUR would ask a USD rate for. USD, as ``Cost`` defaults, when
        no source prices the model."""
        if not model:
            return "USD"
        card = self.rate_card(model, provider=provider, at=at)
        return card.currency if card is not None and card.currency else "USD"

    def max_output_tokens(self, model: str, *, provider: str | None = None) -> int | None:
        """The most output tokens ``model`` can produce in one call, where a source says so."""
        card = self.rate_card(model, provider=provider)
        return card.max_output_tokens if card is not None else None

    def preload(self, *, litellm: bool = False) -> None:
        """Load the price data now rather than on the first call (about 0.2 s for
        genai-prices, 50 ms more for LiteLLM's map), e.g. at application start-up. A fork
        waits for it (``_tracker._ForkGate``)."""
        from .._tracker import fork_gate

        with fork_gate.busy(), self._lock:
            if self._genai is not None:
                self._genai.snapshot()
            if litellm and self._litellm is not None:
                self._litellm.find(ModelName("", "", None, False))

    def clear_cache(self) -> None:
        """Forget compiled cards and warnings (after genai-prices' data was updated)."""
        with self._lock:
            self._resolved.clear()
            self._pairs.clear()
            self._warned.clear()
            if self._genai is not None:
                self._genai = GenaiPrices()

    # -- resolution --------------------------------------------------------------------

    def _resolve(self, model: str, provider: str | None) -> _Resolved:
        key = (model, provider)
        with self._lock:
            resolved = self._resolved.get(key)
            if resolved is not None:
                return resolved
            if not isinstance(model, str):
                raise TypeError(f"model must be a string, got {type(model).__name__} {model!r}")
            name = split_name(model, provider)
            base_name = _base_name(name)
            resolved = None
            # the book asked first (for both names) is not asked again by ``_lookup``
            book_asked = bool(name.full and base_name is not None and self._overrides)
            if book_asked and base_name is not None:
                # A book entry for a model covers its dated snapshots, even those the
                # default sources list: a negotiated ``claude-sonnet-4`` rate prices
                # ``claude-sonnet-4-20250514`` (an entry for the snapshot itself wins).
                resolved = self._book_lookup(name)
                if resolved is None:
                    resolved = self._book_lookup(base_name, snapshot=name.full)
                    if resolved is not None:
                        resolved.name = name
            if resolved is None and name.full:
                resolved = self._lookup(name, book=not book_asked)
            if resolved is None and base_name is not None:
                # no source lists the name (listed unpriced is not None)
                resolved = self._lookup(base_name, snapshot=name.full, book=not book_asked)
                if resolved is not None:
                    resolved.name = name
                    if resolved.unknown is not None:
                        resolved.unknown = Cost.unknown(name.full, name.provider)
            if resolved is None:
                resolved = _Resolved(name, unknown=Cost.unknown(name.full, name.provider))
            if len(self._resolved) >= _MAX_NAMES:
                self._resolved.clear()
            self._resolved[key] = resolved
            return resolved

    def _resolve_pair(self, model: str, provider: str | None, requested: str) -> _Resolved:
        """Which of the response's ``model`` and the ``requested`` name prices a call.

        The response's model is what ran, so it prices the call, unless the price book has
        an entry for the requested name and that name is the same model (a negotiated
        ``gpt-4o`` rate answered by the dated ``gpt-4o-2024-08-06``) or one only the book
        knows (an Azure deployment answered by its base model). A response from another
        model (a router's or proxy's fallback) is never priced at the requested model's
        price, and a response's unknown model stays unknown."""
        key = (model, provider, requested)
        asked = self._resolve(requested, provider)
        answered = self._resolve(model, provider)
        book_wins = asked.in_book and (
            _same_model(asked, answered) or not self._known_without_book(asked.name)
        )
        chosen = asked if book_wins else answered
        with self._lock:
            if len(self._pairs) >= _MAX_NAMES:
                self._pairs.clear()
            self._pairs[key] = chosen
        return chosen

    def _known_without_book(self, name: ModelName) -> bool:
        """Whether a default source lists ``name`` (or its undated base), the book aside."""
        with self._lock:
            if self._lookup(name, book=False) is not None:
                return True
            base = _base_name(name)
            return base is not None and self._lookup(base, book=False) is not None

    def _book_lookup(self, name: ModelName, snapshot: str | None = None) -> _Resolved | None:
        """The price book's entry for ``name``, if the book has one at the call's provider:
        a key with the call's provider as its prefix (``openai/gpt-4o`` for ``gpt-4o`` at
        ``openai``, provider aliases included), then the name as given, then bare."""
        if not self._overrides:
            return None
        noted = _snapshot_note(snapshot, book=True)
        names = (name.full.lower(), name.ref.lower())
        keys: list[str | None] = []
        if name.provider and self._book_prefixed:
            # the provider as the call spells it, then any alias of it (``gemini/`` and
            # ``vertex_ai/`` are both Google's: the spelling the call uses wins)
            provider = name.provider.strip().lower()
            pid = _provider_id(provider)
            keys += [f"{provider}/{model}" for model in names]
            keys += [self._book_prefixed.get((pid, model)) for model in names]
        keys += names
        for key in dict.fromkeys(keys):
            entry = self._overrides.get(key) if key is not None else None
            if entry is None:
                continue
            book_card = entry.card
            if (
                book_card.provider is not None
                and name.provider is not None
                and not _same_provider(book_card.provider, name.provider)
            ):
                continue  # the book prices this name at another provider

            def finish(card: RateCard) -> RateCard:
                if card.provider is None:
                    card = dataclasses.replace(card, provider=name.provider)
                return noted(card)

            return _Resolved(
                name,
                card=finish(book_card),
                canonical=book_card.model,
                book=entry if entry.variants else None,
                in_book=True,
                finish=finish,
            )
        return None

    def _lookup(
        self, name: ModelName, snapshot: str | None = None, *, book: bool = True
    ) -> _Resolved | None:
        """What ``name`` resolves to: a card, timed cards, or (``unknown`` set) a name
        that a source lists without a usable token price; ``None`` when no source lists it.
        ``book=False``: the default sources only.
        """
        listed = False
        in_book = self._book_lookup(name, snapshot) if book else None
        if in_book is not None:
            return in_book
        noted = _snapshot_note(snapshot)

        # A provider genai-prices does not know (sambanova, snowflake, dashscope,
        # vercel_ai_gateway...) does not narrow its matching, which would take the bare
        # name at any provider (DeepSeek-R1 on SambaNova at DeepSeek's own price): the
        # entry LiteLLM lists at that provider comes first. A provider genai-prices knows
        # binds its matching, so genai-prices stays first there. A prefix the tables do
        # not know names its provider too: ``sambanova/DeepSeek-R1`` is LiteLLM's key.
        at_provider: tuple[str, Mapping[str, Any]] | None = None
        asked = False  # whether at_provider was looked up (LiteLLM's map is read lazily)
        provider = name.provider or _unknown_prefix(name)
        if (
            provider
            and self._litellm is not None
            and (self._genai is None or self._genai.provider_id(provider) is None)
        ):
            if name.provider:
                at_provider = self._litellm.find_at_provider(name)
            else:
                at_provider = self._litellm.find_prefixed(name, provider)
            asked = True
            if at_provider is not None:
                listed = True
                resolved = self._litellm_resolved(name, at_provider, noted)
                if resolved is not None:
                    return resolved
                # Listed there without a token price: the other sources are asked as
                # before (a model priced before this rule is never made unknown by it).

        if self._genai is not None:
            match = self._genai.find(name)
            if match is not None:
                listed = True
                if isinstance(match.model.prices, list):
                    timed = self._genai.timed(match, noted)
                    return _Resolved(
                        name,
                        timed=timed,
                        canonical=match.model.id,
                        context_window=self._genai.context_window(match),
                        match=match,
                        finish=noted,
                    )
                card = self._genai.compile_static(match)
                if card is not None:
                    return _Resolved(
                        name,
                        card=noted(card),
                        canonical=match.model.id,
                        context_window=self._genai.context_window(match),
                        match=match,
                        finish=noted,
                    )

        if self._litellm is not None:
            # The entry at the provider itself first, then the name at any provider
            # (``find``; for a provider the tables know the two are the same entry).
            if not asked and name.provider:
                at_provider = self._litellm.find_at_provider(name)
            found = self._litellm.find(name)
            for candidate in (at_provider, found) if found is not at_provider else (found,):
                if candidate is not None:
                    listed = True
                    resolved = self._litellm_resolved(name, candidate, noted)
                    if resolved is not None:
                        return resolved
        if listed:
            # Listed, but with no price that a token count can be priced at (per second
            # only, no price and no sign it is free, a tier table that cannot be read):
            # unknown, and never priced as the undated base model.
            return _Resolved(name, unknown=Cost.unknown(name.full, name.provider))
        return None

    def _litellm_resolved(
        self,
        name: ModelName,
        found: tuple[str, Mapping[str, Any]],
        noted: Callable[[RateCard], RateCard],
    ) -> _Resolved | None:
        """LiteLLM's entry ``found`` compiled; ``None`` when it has no token price."""
        assert self._litellm is not None
        card = self._litellm.compile(*found)
        if card is None:
            return None
        return _Resolved(
            name,
            card=noted(card),
            canonical=card.model,
            litellm_entry=found,
            finish=noted,
        )

    def _limits(self, resolved: _Resolved, card: RateCard) -> tuple[int | None, int | None]:
        if resolved.limits is None:
            max_in, max_out = card.max_input_tokens, card.max_output_tokens
            if (max_in is None or max_out is None) and self._litellm is not None:
                with self._lock:
                    lit_in, lit_out = self._litellm.limits(resolved.name, resolved.canonical)
                max_in = max_in if max_in is not None else lit_in
                max_out = max_out if max_out is not None else lit_out
            if max_in is None:
                max_in = resolved.context_window
            resolved.limits = (max_in, max_out)
        return resolved.limits

    def _warn_unknown(self, resolved: _Resolved) -> None:
        key = (resolved.name.full, resolved.name.provider)
        if key in self._warned:
            return
        with self._lock:
            if key in self._warned:
                return
            if len(self._warned) >= _MAX_NAMES:
                self._warned.clear()
            self._warned.add(key)
        provider = resolved.name.provider
        logger.warning(
            "costledger: no price for model %r%s; the call is recorded as unknown_model "
            "with no amount (not $0). Add the model to a price book and re-price the events.",
            _logged(resolved.name.full),
            _provider_note(provider),
            extra={
                "costledger_event": "unknown_model",
                "costledger_model": _logged(resolved.name.full),
                "costledger_provider": _logged(provider),
            },
        )
        if self._hints_left > 0 and logger.isEnabledFor(logging.WARNING):
            # The hint searches some 40,000 names (and loads LiteLLM's map the first time):
            # milliseconds, never on the caller's thread. It follows on costledger's
            # background worker, as a line of its own, for the first few unknown names
            # (a log of a thousand unpriced deployments would otherwise keep it busy).
            from .._tracker import defer

            self._hints_left -= 1
            defer(self._hint_close_name, resolved.name)

    def _hint_close_name(self, name: ModelName) -> None:
        close = self._close_name(name)
        if close is None:
            return
        logger.warning(
            "costledger: did you mean %r? It has a price; %r%s has none.",
            close,
            _logged(name.full),
            _provider_note(name.provider),
            extra={
                "costledger_event": "unknown_model_hint",
                "costledger_model": _logged(name.full),
                "costledger_provider": _logged(name.provider),
                "costledger_suggestion": close,
            },
        )

    def _close_name(self, name: ModelName) -> str | None:
        """The priced model name closest to ``name`` (a typo's fix: ``gpt-4o-mini`` for
        ``gpt4o-mini``), ``None`` when none is close. The names are gathered on the first
        unknown model, then kept; a few close ones are tried, the first that has a price
        wins (a dated snapshot's typo keeps its date: ``claude-sonet-4-20250514``)."""
        import difflib

        names = self._known_names
        if names is None:
            names = self._known_names = self._gather_names()
        tried = {name.ref.lower(), name.full.lower()}
        candidates: list[str] = []
        base = strip_date_suffix(name.ref)
        if base is not None:
            date = name.ref[len(base) :]
            found = difflib.get_close_matches(base.lower(), names, n=3, cutoff=0.8)
            candidates += [names[close] + date for close in found]
        found = difflib.get_close_matches(name.ref.lower(), names, n=3, cutoff=0.8)
        candidates += [names[close] for close in found]
        for candidate in candidates:
            if candidate.lower() in tried:
                continue
            tried.add(candidate.lower())
            resolved = self._resolve(candidate, name.provider)
            if resolved.card is not None or resolved.timed is not None:
                return candidate
        return None

    def _gather_names(self) -> dict[str, str]:
        """Every model name a source lists, lowercased -> as listed: the price book's,
        genai-prices' model ids and the names its matching takes, LiteLLM's map keys."""
        names: dict[str, str] = {}

        def add(value: object) -> None:
            if isinstance(value, str) and value:
                names.setdefault(value.lower(), value)

        for model in self._overrides:
            add(model)
        if self._genai is not None:
            try:
                for provider in self._genai.snapshot().providers:
                    for info in provider.models:
                        add(info.id)
                        _equals(info.match, add)
            except Exception:  # pragma: no cover - a hint is never worth a failure
                pass
        if self._litellm is not None:
            try:
                for listed, _entry in self._litellm._load().values():
                    add(listed)
            except Exception:  # pragma: no cover - as above
                pass
        return names


# The pricers of this process, whose locks a forked child makes anew: a thread of the
# parent's (the background worker loading LiteLLM's map for a first call) may have held one
# at the fork, and it stays held in the child, by no thread: its first price would hang.
_pricers: weakref.WeakSet[Pricer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    Pricer._default_lock = threading.Lock()
    for pricer in list(_pricers):
        pricer._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _equals(clause: Any, add: Callable[[object], None]) -> None:
    """The names (``equals``, ``starts_with``) in a genai-prices match clause, and in its
    ``or`` / ``and`` parts."""
    add(getattr(clause, "equals", None))
    add(getattr(clause, "starts_with", None))
    for part in getattr(clause, "or_", None) or getattr(clause, "and_", None) or ():
        _equals(part, add)


_LONG_PROMPT = 32_000
"""A prompt past this on a card without long-context tiers is checked for a gap (the
lowest long-context threshold in the price data is 32k: Qwen's)."""


def _warn_gaps(resolved: _Resolved, gaps: _Gaps, card: RateCard, usage: Usage) -> None:
    prompt = usage.input_tokens
    audio = gaps.audio is not None and bool(usage.input_audio_tokens or usage.output_audio_tokens)
    long = not card.tiers and (
        (gaps.tier is not None and prompt > gaps.tier.above)
        or (gaps.window is not None and prompt > gaps.window)
    )
    if not (audio or long):
        return  # most calls that come here: nothing the data lacks
    from .._logging import warn_once

    name = resolved.name
    model = f"{_logged(name.full)!r}{_provider_note(name.provider)}"
    if card.model.lower() != name.full.lower():
        model += f" (priced as {card.model!r})"
    if audio and gaps.audio is not None:
        audio_in, audio_out = gaps.audio
        listed = " / ".join(
            f"${_rate(rate)} per MTok of {what} audio"
            for rate, what in ((audio_in, "input"), (audio_out, "output"))
            if rate is not None
        )
        warn_once(
            f"pricer.gap:audio:{_warning_key(name)}",
            f"{card.source} has no audio rate for model {model}: its audio tokens are billed "
            f"at the text rates (${_rate(card.input)} / ${_rate(card.output)} per MTok), where "
            f"{gaps.litellm} lists {listed}. Give the model a price book entry with "
            "input_audio / output_audio to price them (docs/pricing.md, Known data gaps)",
            model=_logged(name.full),
            provider=_logged(name.provider),
        )
    if not long:
        return
    if gaps.tier is not None and prompt > gaps.tier.above:
        tier = gaps.tier
        warn_once(
            f"pricer.gap:long:{_warning_key(name)}",
            f"{card.source} has no long-context price for model {model}: a prompt of "
            f"{prompt} tokens is priced at the standard rates (${_rate(card.input)} / "
            f"${_rate(card.output)} per MTok), where {gaps.litellm} lists "
            f"${_rate(tier.input)} / ${_rate(tier.output)} above {tier.above} tokens. Give "
            "the model a price book entry with those tiers to price such calls "
            "(docs/pricing.md, Known data gaps)",
            model=_logged(name.full),
            provider=_logged(name.provider),
        )
    elif gaps.window is not None and prompt > gaps.window:
        warn_once(
            f"pricer.gap:long:{_warning_key(name)}",
            f"a prompt of {prompt} tokens is past the {gaps.window}-token context window "
            f"{card.source} lists for model {model}, and it has no long-context price: the "
            "call is priced at the standard rates, though the provider may charge more for "
            "an extended context. Give the model a price book entry with tiers to price "
            "such calls (docs/pricing.md, Known data gaps)",
            model=_logged(name.full),
            provider=_logged(name.provider),
        )


def _rate(value: Decimal) -> str:
    """A rate as text for a warning: ``2.5``, not ``2.50000``."""
    return format(value.normalize(), "f")


_STANDARD_CONTEXT = frozenset(
    {
        ("service_tier", "default"),  # OpenAI's standard tier
        ("service_tier", "auto"),
        ("service_tier", "standard"),  # Anthropic's
        ("service_tier", "on_demand"),  # Groq's
        ("speed", "standard"),
    }
)
"""Context entries that name the standard price: no variant is expected for them."""


def _warn_no_variant(resolved: _Resolved, key: tuple[tuple[str, str], ...]) -> None:
    """Once per model, provider and context: a price context that asks for a price no
    variant of the model's card gives (a tier or speed the price data does not list, such
    as ``speed=fast`` in genai-prices 0.1.13, the last release for Python 3.10), so the
    call is priced at the standard price. Nothing for a context naming the standard price,
    an unknown model (warned already) or a price book entry without variants (one price
    whatever the context, as documented)."""
    if resolved.card is None and resolved.timed is None:
        return
    if resolved.in_book and resolved.book is None:
        return
    asked = [(k, v) for k, v in key if (k, v) not in _STANDARD_CONTEXT]
    if not asked:
        return
    from .._logging import warn_once

    name = resolved.name
    context = ", ".join(f"{k}={v}" for k, v in asked)
    warn_once(
        f"pricer.no_variant:{_warning_key(name)}:{context}",
        f"no price variant of model {_logged(name.full)!r}{_provider_note(name.provider)} matches "
        f"the price context {context}; the call is priced at the standard price (the price "
        "data does not list that variant: add it to a price book entry's variants if the "
        "provider charges it differently)",
        model=_logged(name.full),
        provider=_logged(name.provider),
    )


def _warn_early_variant(name: ModelName, early: EarlyVariant) -> None:
    """Once per model, provider, context entries and outcome: a call dated before the
    first date the price data gives its variant, and what priced it instead (see
    ``_genai._before_first``)."""
    from .._logging import warn_once

    model = f"{_logged(name.full)!r}{_provider_note(name.provider)}"
    day = early.at.date().isoformat()
    card, standard = early.card, early.standard
    listed = " and ".join(
        f"its {context_label(items)} price from {first.isoformat()}"
        for items, first in early.listed
    )
    context = context_label(item for items, _ in early.listed for item in items)
    rates = f"${_rate(card.input)} / ${_rate(card.output)} per MTok in / out"
    label = "; ".join(
        f"{context_label(items)} {early_note(first, early.carried)}"
        for items, first in early.listed
    )
    tail = (
        f"cost.source says so ('{label}'). "
        "Give the model a price book entry with variants to price such calls otherwise "
        "(docs/pricing.md, Service tiers, speed and batch)"
    )
    if early.carried:
        message = (
            f"{early.source} lists {listed} only, for model {model} (it does not model "
            f"that tier's earlier prices): a call of {day} is priced at that first listed "
            f"price ({rates}, where the standard price is ${_rate(standard.input)} / "
            f"${_rate(standard.output)}), as is every such call before that date while "
            f"the model's standard price is the one listed then; {tail}"
        )
    else:
        message = (
            f"{early.source} lists {listed} only, for model {model}, and the model's "
            f"standard price on {day} is not the one in force then: a call of {day} is "
            f"priced at the standard price ({rates}), which a {context} call was probably "
            f"not charged; {tail}"
        )
    outcome = "first_price" if early.carried else "standard"
    warn_once(
        f"pricer.early_variant:{outcome}:{_warning_key(name)}:{context}",
        message,
        model=_logged(name.full),
        provider=_logged(name.provider),
    )


def _unknown_prefix(name: ModelName) -> str | None:
    """The first path segment of a name given without a provider and not split by
    ``split_name`` (``sambanova`` of ``sambanova/DeepSeek-R1``), else ``None``."""
    if name.provider or name.prefixed:
        return None
    head, sep, rest = name.full.partition("/")
    return head.lower() if sep and head and rest else None


def _provider_note(provider: str | None) -> str:
    """`` (provider 'openai')`` after a model name in a warning, or nothing."""
    return f" (provider {_logged(provider)!r})" if provider else ""


@overload
def _logged(name: str) -> str: ...
@overload
def _logged(name: str | None) -> str | None: ...
def _logged(name: str | None) -> str | None:
    """A model or provider name as a warning shows it: scrubbed of secrets (the name of a
    model a server answered may echo the key it was sent) and then cut (a key cut first
    would match no rule), as the host may pass any text, of any length, as a model."""
    if name is None:
        return None
    text = redact_text(name)
    return text if len(text) <= _MAX_LOGGED_NAME else text[: _MAX_LOGGED_NAME - 3] + "..."


def _warning_key(name: ModelName) -> str:
    """A once-only warning's key for the model ``name``: logged with the warning, so made
    of what the warning shows."""
    return f"{_logged(name.provider)}:{_logged(name.full).lower()}"


def _same(card: RateCard) -> RateCard:
    return card


def check_price_context(context: Any) -> tuple[tuple[str, str], ...]:
    """``context`` as sorted ``(key, value)`` pairs; ``TypeError`` naming the entry that is
    not text (a price variant is selected by exact text: ``"priority"``, never ``1``)."""
    if not isinstance(context, Mapping):
        raise TypeError(
            f"price_context must be a mapping of text to text, got {type(context).__name__} "
            f"{context!r}"
        )
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"price_context[{key!r}] must be text (a key and value such as "
                f"'service_tier': 'priority'), got {type(value).__name__} {value!r}"
            )
    return tuple(sorted(context.items()))


def _check_args(
    model: object, usage: object, provider: object, at: object, requested: object
) -> None:
    """``TypeError`` naming the first argument of ``Pricer.price`` of a wrong type."""
    for what, value, wanted, expected in (
        ("model", model, str, "a model name (str)"),
        ("usage", usage, Usage, "a costledger.Usage (extract_usage(response) reads one)"),
        ("provider", provider, (str, type(None)), "a provider name (str) or None"),
        ("at", at, (datetime, type(None)), "a timezone-aware datetime or None"),
        ("requested_model", requested, (str, type(None)), "a model name (str) or None"),
    ):
        if not isinstance(value, wanted):
            raise TypeError(
                f"Pricer.price: {what} must be {expected}, got {type(value).__name__} "
                f"{short_repr(value, 200)}"
            )


def _when(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(_UTC)
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(
            f"at must be a timezone-aware datetime (the call's time), got naive {at!r}"
        )
    return at


def _provider_id(provider: str) -> str:
    """One spelling per provider, for matching a book key's provider prefix with the call's
    provider: genai-prices' id where costledger's table knows the name (``vertex_ai``,
    ``gemini`` -> ``google``), else LiteLLM's (``ollama_chat`` -> ``ollama``). Exact names
    only: ``openai-community/gpt2`` is a Hugging Face org, not OpenAI."""
    name = provider.strip().lower()
    found = GENAI_PROVIDER.get(name)
    if found is not None:
        return found
    return litellm_provider(name)


def _prefixed_keys(book: Mapping[str, BookEntry]) -> dict[tuple[str, str], str]:
    """``(provider id, rest)`` -> key, for each key of ``book`` of the form
    ``provider/model``."""
    out: dict[tuple[str, str], str] = {}
    for key in book:
        head, sep, rest = key.partition("/")
        if sep and head and rest:
            out.setdefault((_provider_id(head), rest), key)
    return out


def _same_provider(a: str, b: str) -> bool:
    return (canonical_provider(a) or a.lower()) == (canonical_provider(b) or b.lower())


def _base_name(name: ModelName) -> ModelName | None:
    """``name`` without its date suffix (``gpt-4o-2024-08-06`` -> ``gpt-4o``), ``None`` if
    it has none."""
    base = strip_date_suffix(name.ref)
    if base is None:
        return None
    prefix = name.full[: len(name.full) - len(name.ref)]
    return ModelName(prefix + base, base, name.provider, name.prefixed)


def _snapshot_note(snapshot: str | None, *, book: bool = False) -> Callable[[RateCard], RateCard]:
    """What marks a card that prices the dated ``snapshot`` as its base model (its source
    says so); the identity for a name priced as itself. A book entry for the base model
    prices the snapshot whether or not the default data lists it, so its note does not
    call the snapshot unknown."""
    if snapshot is None:
        return _same
    if book:
        note = f" (dated snapshot {snapshot!r} priced as {{model!r}})"
    else:
        note = f" (dated snapshot {snapshot!r} unknown; priced as {{model!r}})"

    def noted(card: RateCard) -> RateCard:
        return dataclasses.replace(card, source=card.source + note.format(model=card.model))

    return noted


def _same_model(a: _Resolved, b: _Resolved) -> bool:
    """Whether two names are one model: equal but for case, a provider prefix, Google's
    ``models/`` and a date suffix, or resolved to one priced model of a default source."""

    def bare(name: ModelName) -> str:
        ref = name.ref.lower()
        return strip_date_suffix(ref) or ref

    if bare(a.name) == bare(b.name):
        return True
    return (
        not a.in_book and not b.in_book and a.canonical is not None and a.canonical == b.canonical
    )
