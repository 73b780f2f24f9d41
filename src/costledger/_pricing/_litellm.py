"""Prices from LiteLLM's bundled price map, for models genai-prices does not list (and
first for providers it does not know: ``find_at_provider``).

The JSON file ships inside the ``litellm`` package; it is found with
``importlib.util.find_spec`` and read as data, so ``litellm`` itself is never
imported (that takes seconds and hundreds of megabytes). Numbers are parsed with
``parse_float=Decimal``: ``3e-07`` per token becomes exactly ``0.3`` per million.

The map is written from floats computed by scripts, so a few rates carry binary noise
(``1.0000000000000001e-07``, ``4.0000000000000003e-07``). Every rate is rounded to 15
significant digits as it is compiled: a double holds 15 decimal digits exactly, so a
rate someone wrote with up to 15 digits is recovered (``0.1`` per million, not
``0.10000000000000001``) and the noise never reaches money.

``tiered_pricing`` (Alibaba's Qwen on dashscope / qwencloud, Volcengine's Doubao, some
opencode_go entries) is compiled into the card's tiers: each ``range`` start becomes a
tier threshold and the whole request is billed at the tier its prompt reaches, as
LiteLLM's ``select_tier_for_input`` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

from ._card import EXACT, RateCard, RateTier, clean_rate
from ._names import (
    GENAI_PROVIDER,
    LITELLM_PREFIX,
    ModelName,
    canonical_provider,
    litellm_provider,
)

__all__ = ["LiteLLMPrices"]

_FILE = "model_prices_and_context_window_backup.json"
# Per-token keys -> RateCard fields. The variants of a key (``_priority``, ``_flex``,
# ``_balanced``, ``_batches``... appended) replace it when a call's price context selects
# them (``variant_entry``).
_RATES = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "input_cost_per_audio_token": "input_audio",
    "cache_read_input_audio_token_cost": "cache_audio_read",
    "output_cost_per_audio_token": "output_audio",
    "output_cost_per_reasoning_token": "reasoning",
}
_BATCH = (("processing", "batch"), "_batches")
"""genai-prices' batch context -> the suffix of LiteLLM's batch rates. Every other variant
is a service tier: ``service_tier=X`` selects the ``_X`` rates (``_priority``, ``_flex``,
``_balanced``, ``_ultrafast``...), the tier's name as the provider reports it."""
_TIER_NAME = re.compile(r"^[a-z0-9]+$")
"""A service tier that can name a suffix: one lowercase word (``on_demand`` and
``above_1hr`` cannot select a part of another rate's key)."""
_TIER_KEY = re.compile(r"^(?P<base>[a-z0-9_]+?)_above_(?P<n>\d+)(?P<unit>[km])_tokens$")
_OTHER_UNIT = re.compile(
    r"_per_(?:query|image|pixel|second|minute|hour|character|page|video|search)"
)
"""A price in another unit than tokens (``input_cost_per_query``, ``output_cost_per_image``)."""
_NO_OUTPUT_MODES = frozenset({"embedding", "rerank", "moderation", "moderations"})
_DIGITS = 15
_ROUND = Context(prec=_DIGITS, rounding=ROUND_HALF_EVEN)
_ONE = Decimal(1)


class LiteLLMPrices:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, Mapping[str, Any]]] | None = None
        self.source = ""

    def _load(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, tuple[str, Mapping[str, Any]]] = {}
        path = _price_file()
        if path is not None:
            import importlib.metadata

            with path.open("rb") as f:
                raw = json.load(f, parse_float=Decimal)
            try:
                self.source = f"litellm {importlib.metadata.version('litellm')}"
            except importlib.metadata.PackageNotFoundError:
                self.source = "litellm"
            for key, entry in raw.items():
                if key == "sample_spec" or not isinstance(entry, Mapping):
                    continue
                entries.setdefault(key.lower(), (key, entry))
        self._entries = entries
        return entries

    def find(self, name: ModelName) -> tuple[str, Mapping[str, Any]] | None:
        """The entry for ``name``: the name as given, then provider-qualified, then bare.

        A provider the caller named is binding: Bedrock's ``gpt-4o`` is not OpenAI's.
        """
        entries = self._load()
        wanted = canonical_provider(name.provider) if name.provider else None
        for key in _candidates(name):
            found = entries.get(key)
            if found is None:
                continue
            if wanted is not None:
                listed = found[1].get("litellm_provider")
                if not isinstance(listed, str) or canonical_provider(listed) != wanted:
                    continue
            return found
        return None

    def find_at_provider(self, name: ModelName) -> tuple[str, Mapping[str, Any]] | None:
        """The entry LiteLLM lists for ``name`` at ``name.provider`` itself, ``None``
        when there is none (or no provider is named).

        For a provider costledger's table knows (``together_ai``, ``bedrock``,
        ``vertex_ai``, ...) that is ``find``: the provider binds there already. For any
        other (``sambanova``, ``snowflake``, ``dashscope``, ``vercel_ai_gateway``...),
        ``find`` would take a bare name listed at any provider; here only an entry whose
        ``litellm_provider`` is that provider counts (``sambanova/DeepSeek-R1``, or a
        bare key listed there), with LiteLLM's own aliases (``ollama_chat``: ``ollama``).
        An entry without a ``litellm_provider`` counts when its key is prefixed with it.
        """
        if not name.provider:
            return None
        if canonical_provider(name.provider) is not None:
            return self.find(name)
        entries = self._load()
        wanted = litellm_provider(name.provider)
        for key in _candidates(name):
            found = entries.get(key)
            if found is None:
                continue
            listed = found[1].get("litellm_provider")
            if isinstance(listed, str):
                if listed.strip().lower() == wanted:
                    return found
            elif key.startswith(wanted + "/"):
                return found
        return None

    def find_prefixed(self, name: ModelName, provider: str) -> tuple[str, Mapping[str, Any]] | None:
        """LiteLLM's entry keyed by ``name`` as given when it is listed at ``provider``, the
        name's first segment (``sambanova/DeepSeek-R1`` at ``sambanova``); else ``None``."""
        found = self._load().get(name.full.lower())
        if found is None:
            return None
        listed = found[1].get("litellm_provider")
        if isinstance(listed, str) and listed.strip().lower() == provider.lower():
            return found
        return None

    def limits(self, name: ModelName, canonical: str | None) -> tuple[int | None, int | None]:
        """``(max_input_tokens, max_output_tokens)`` from the map, where it has them."""
        entries = self._load()
        keys = _candidates(name)
        if canonical:
            keys += _candidates(ModelName(canonical, canonical, name.provider, False))
        for key in keys:
            found = entries.get(key)
            if found is None:
                continue
            entry = found[1]
            max_in = _positive_int(entry.get("max_input_tokens"))
            max_out = _positive_int(entry.get("max_output_tokens"))
            if max_in is not None or max_out is not None:
                return max_in, max_out
        return None, None

    def compile(self, key: str, entry: Mapping[str, Any]) -> RateCard | None:
        """The entry as a card; ``None`` when it is not priced per token, or its
        ``tiered_pricing`` cannot be read exactly."""
        base: dict[str, Decimal] = {}
        tiers: dict[int, dict[str, Decimal]] = {}
        table = entry.get("tiered_pricing")
        for field_key, value in entry.items():
            rate = _per_million(value)
            if rate is None:
                continue
            if field_key in _RATES:
                base[_RATES[field_key]] = rate
                continue
            m = _TIER_KEY.match(field_key)
            if m and m.group("base") in _RATES:
                above = int(m.group("n")) * (1000 if m.group("unit") == "k" else 1_000_000)
                tiers.setdefault(above, {})[_RATES[m.group("base")]] = rate
        request = _decimal(entry.get("input_cost_per_request"))
        if request is not None:
            request = clean_rate(request, 18)
        if (
            not any(base.values())
            and not tiers
            and table is None
            and not request
            and any(_OTHER_UNIT.search(k) and _decimal(v) for k, v in entry.items())
        ):
            # Priced per query, image, second, page...: zero token rates are not a price
            # of $0 (a rerank call costs its query), so this is no token price at all.
            return None
        provider = entry.get("litellm_provider")
        no_output = entry.get("mode") in _NO_OUTPUT_MODES
        if table is not None:
            if tiers:
                return None  # both kinds of tier: which wins is not defined; refuse
            bands = _tier_table(table, base.get("output"), no_output)
            if bands is None:
                return None
            first = bands[0][1]
            tier_list = tuple(RateTier(above=above, **rates) for above, rates in bands[1:])
        else:
            if "input" not in base:
                return None
            if "output" not in base:
                if not no_output:
                    return None
                base["output"] = Decimal(0)
            first = _fill(base, base)
            tier_list = tuple(
                RateTier(above=above, **_fill(tiers[above], base)) for above in sorted(tiers)
            )
        return RateCard(
            model=key,
            provider=provider if isinstance(provider, str) else None,
            source=self.source,
            request=request if request is not None and request >= 0 else Decimal(0),
            tiers=tier_list,
            max_input_tokens=_positive_int(entry.get("max_input_tokens")),
            max_output_tokens=_positive_int(entry.get("max_output_tokens")),
            **first,
        )


def variant_entry(
    entry: Mapping[str, Any], context: Mapping[str, str]
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """``entry`` with the rates of the variant ``context`` selects in place of the standard
    ones (``input_cost_per_token_priority`` as ``input_cost_per_token``, tier keys alike),
    and the context entries that selected them; ``(None, [])`` when the entry has no such
    variant (the standard price applies).

    ``service_tier=X`` selects the ``_X`` rates whatever ``X`` is (``priority``, ``flex``,
    ``balanced``, ``ultrafast``...), ``processing=batch`` the ``_batches`` ones (genai-prices'
    term for a batch; ``service_tier=batches`` is not a second name for it). Only a key
    whose stem is a rate counts: ``input_cost_per_token_cache_hit`` is no ``hit`` tier."""
    wanted: list[tuple[tuple[str, str], str]] = []
    tier = context.get("service_tier")
    if isinstance(tier, str) and tier != "batches" and _TIER_NAME.match(tier):
        wanted.append((("service_tier", tier), "_" + tier))
    if context.get(_BATCH[0][0]) == _BATCH[0][1]:
        wanted.append(_BATCH)
    out: dict[str, Any] | None = None
    used: list[tuple[str, str]] = []
    for item, suffix in wanted:
        for key, value in entry.items():
            if key.endswith(suffix) and _is_rate_key(key[: -len(suffix)]):
                if out is None:
                    out = dict(entry)
                out[key[: -len(suffix)]] = value
                if not used or used[-1] != item:
                    used.append(item)
    return out, used


def _is_rate_key(key: str) -> bool:
    """Whether ``key`` is a per-token rate of the map, or a long-context tier of one."""
    if key in _RATES:
        return True
    m = _TIER_KEY.match(key)
    return m is not None and m.group("base") in _RATES


def _tier_table(
    table: Any, output: Decimal | None, no_output: bool
) -> list[tuple[int, dict[str, Any]]] | None:
    """LiteLLM's ``tiered_pricing`` as ``(threshold, rates)`` bands, lowest first; ``None``
    when it cannot be compiled exactly (then the model is unknown, never mispriced).

    LiteLLM picks the tier whose ``range`` holds the request's whole prompt
    (``start < prompt <= end``; past the last range, the last tier) and bills every
    token of the request at it. As a card: the first tier is the base rates, and each
    later ``range`` start is a threshold above which that tier's rates apply. So the
    ranges must start at 0 and follow each other without a gap or an overlap.

    In a tier, a missing cache rate is the tier's input rate, a missing output rate the
    entry's own output rate (LiteLLM's rules); reasoning and audio rates are the tier's
    where it gives them, else billed as its output / input.
    """
    if not isinstance(table, list) or not table:
        return None
    bands: list[tuple[int, int, dict[str, Any]]] = []
    for tier in table:
        if not isinstance(tier, Mapping):
            return None
        bounds = tier.get("range")
        if not isinstance(bounds, list) or len(bounds) != 2:
            return None
        start, end = (_whole(b) for b in bounds)
        if start is None or end is None or end <= start:
            return None
        rates: dict[str, Decimal] = {}
        for field_key, value in tier.items():
            if field_key in _RATES:
                rate = _per_million(value)
                if rate is None:
                    return None  # a rate that is not a number >= 0: refuse, do not guess
                rates[_RATES[field_key]] = rate
        if "input" not in rates:
            return None  # a per-query or per-image table: not priced per token
        if "output" not in rates:
            if output is None and not no_output:
                return None
            rates["output"] = output if output is not None else Decimal(0)
        bands.append((start, end, _fill(rates, rates)))
    bands.sort(key=lambda band: band[0])
    if bands[0][0] != 0:
        return None
    for (_, end, _), (start, _, _) in pairwise(bands):
        if start != end:
            return None  # a gap or an overlap between ranges
    return [(start, rates) for start, _, rates in bands]


def _fill(rates: Mapping[str, Decimal], base: Mapping[str, Decimal | None]) -> dict[str, Any]:
    """Complete one band: a rate the band lacks is the base rate of that component
    (LiteLLM's rule), and cache rates missing everywhere are the input rate."""
    out: dict[str, Decimal | None] = {}
    for name in _RATES.values():
        out[name] = rates.get(name, base.get(name))
    if out["cache_read"] is None:
        out["cache_read"] = out["input"]
    if out["cache_write"] is None:
        out["cache_write"] = out["input"]
    return out


def _candidates(name: ModelName) -> list[str]:
    keys = [name.full.lower()]
    if name.provider:
        genai_id = GENAI_PROVIDER.get(name.provider, name.provider)
        prefixes = (
            name.provider,
            litellm_provider(name.provider),
            LITELLM_PREFIX.get(genai_id, genai_id),
        )
        for prefix in prefixes:
            keys.append(f"{prefix}/{name.ref}".lower())
    keys.append(name.ref.lower())
    return list(dict.fromkeys(keys))


def _price_file() -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / _FILE
    return path if path.is_file() else None


def _decimal(value: Any) -> Decimal | None:
    """A number of the map as an exact ``Decimal``, rounded to 15 significant digits
    (the float noise the map carries, see the module docstring); ``None`` if not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if len(value.as_tuple().digits) <= _DIGITS:
            return value
        rounded = _ROUND.plus(value).normalize(EXACT)
        exponent = rounded.as_tuple().exponent
        # no positive exponent (1E+2): a rate prints and multiplies as a plain number
        positive = isinstance(exponent, int) and exponent > 0
        return rounded.quantize(_ONE, context=EXACT) if positive else rounded
    if isinstance(value, int):
        return Decimal(value)
    return None


def _whole(value: Any) -> int | None:
    """A tier bound (``256000.0`` in the map) as an int, ``None`` if not a whole number >= 0."""
    number = _decimal(value)
    if number is None or number < 0 or number != number.to_integral_value():
        return None
    return int(number)


def _per_million(value: Any) -> Decimal | None:
    """A per-token price of the map as a rate per million tokens, at most 12 places
    (``clean_rate``: 18 per token, so a call's cost fits the ledger's scale)."""
    d = _decimal(value)
    if d is None or d < 0:
        return None
    return clean_rate(EXACT.scaleb(d, 6))


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value
