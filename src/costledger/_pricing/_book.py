"""Custom price books: a mapping, or a TOML / JSON file of the same shape.

::

    {"my-model": {"input": "0.15", "output": "0.60", "cache_read": "0.075"}}

Prices are per million tokens. Values stay exact: files are parsed with
``parse_float=Decimal``; in a Python mapping, ``Decimal``, ``int`` and ``str`` are
taken as written and a ``float`` through its shortest ``repr`` (``0.15`` -> ``"0.15"``),
which is the number the user typed.

An entry may also hold long-context ``tiers`` and price ``variants`` (a service tier,
speed or batch: partial prices selected by the call's price context, resolved as
genai-prices resolves its own). One model's card as ``costledger prices show MODEL -f
json`` prints it (a flat object with a string ``"model"``) is also read, as a book of
that one model (``source`` is dropped).
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .._errors import PriceBookError
from .._usage import MAX_TOKENS
from ._card import EXACT, PARENT_RATE, RateCard, RateTier, with_variant

__all__ = [
    "BOOK_SOURCE",
    "PRICE_FIELDS",
    "BookEntry",
    "load_price_book",
    "load_price_book_entries",
]

BOOK_SOURCE = "override:"
"""How the ``source`` of a price from a price book starts (``override: <path>``)."""

PRICE_FIELDS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "input_audio",
    "cache_audio_read",
    "output_audio",
    "reasoning",
)
"""Per-million-token prices an entry, a tier and a variant can set."""
_SYNONYMS = {"cache_input": "cache_read"}
_RATE_FIELDS = frozenset(PRICE_FIELDS) | frozenset(_SYNONYMS)
_OTHER_FIELDS = ("currency", "provider", "max_input_tokens", "max_output_tokens")
# What a variant may change: its prices, never what the model is (currency, provider,
# limits), so a context can not turn euros into dollars half-way through a report.
_VARIANT_FIELDS = _RATE_FIELDS | {"per_request", "tiers"}
_KNOWN = _VARIANT_FIELDS | frozenset(_OTHER_FIELDS) | {"variants"}
_TIER_FIELDS = _RATE_FIELDS | {"above"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Bounds that keep every call's arithmetic exact in the card's 60-digit context (a price
# of 30 digits between 10^-20 and 10^12, times up to 10^16 tokens, summed over the
# components, spans under 50 digits), so Pricer.price can never raise decimal.Inexact.
_MAX_DIGITS = 30
_MIN_EXPONENT = -20  # no digit below 10^-20 per million tokens
_MAX_ADJUSTED = 11  # below 10^12 per million tokens


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One model of a price book: its standard card, and the variants a price context
    selects (each ``(when, prices)``: the context entries it needs, the prices it changes)."""

    card: RateCard
    variants: tuple[tuple[tuple[tuple[str, str], ...], Mapping[str, Any]], ...] = ()
    prices: Mapping[str, Any] | None = None  # the entry's own, read: what variants change

    def variant(self, context: Mapping[str, str]) -> RateCard | None:
        """The card for a call served with ``context``, or ``None`` when no variant
        matches it. As in genai-prices, each price is taken from the first matching
        variant that sets it, else from the entry."""
        changed: dict[str, Any] = {}
        used: dict[tuple[str, str], None] = {}
        for when, prices in self.variants:
            if all(context.get(key) == value for key, value in when):
                used.update(dict.fromkeys(when))
                for name, value in prices.items():
                    changed.setdefault(name, value)
        if not used:
            return None
        assert self.prices is not None
        return with_variant(_build(self.card, {**self.prices, **changed}), used)


def load_price_book(
    book: Mapping[str, Any] | str | os.PathLike[str],
) -> dict[str, RateCard]:
    """Read and check a price book; return its standard cards by lower-cased model name."""
    return {key: entry.card for key, entry in load_price_book_entries(book).items()}


def load_price_book_entries(
    book: Mapping[str, Any] | str | os.PathLike[str],
) -> dict[str, BookEntry]:
    """Read and check a price book; return its entries by lower-cased model name."""
    if isinstance(book, Mapping):
        return _parse(book, f"{BOOK_SOURCE} mapping")
    path = Path(book)
    label = f"{BOOK_SOURCE} {path}"
    suffix = path.suffix.lower()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found]  # not installed on 3.11+
    try:
        if suffix == ".toml":
            with path.open("rb") as f:
                raw: Any = tomllib.load(f, parse_float=Decimal)
        elif suffix == ".json":
            with path.open("rb") as f:
                raw = json.load(
                    f,
                    parse_float=Decimal,
                    parse_int=_read_int,
                    parse_constant=_refuse_constant,
                    object_pairs_hook=_unique_keys,
                )
        else:
            raise PriceBookError(
                f"price book {str(path)!r}: unknown format {suffix or '(no suffix)'!r}; "
                "use a .toml or .json file"
            )
    except OSError as exc:
        raise PriceBookError(f"price book {str(path)!r} cannot be read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PriceBookError(
            f"price book {str(path)!r} cannot be decoded as text ({exc}); save it as UTF-8"
        ) from exc
    except _BadJson as exc:
        raise PriceBookError(f"price book {str(path)!r} is not valid json: {exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise PriceBookError(f"price book {str(path)!r} is not valid {suffix[1:]}: {exc}") from exc
    except RecursionError:
        # Python's parsers recurse once per level of nesting; no price book nests deep.
        raise PriceBookError(
            f"price book {str(path)!r} is not valid {suffix[1:]}: its values are nested "
            "too deeply to read (a book nests a few levels: model, tiers or variants, prices)"
        ) from None
    except ValueError as exc:  # TOML's int() of a number too long (JSON's are _read_int's)
        why = (
            f"a whole number in it has more than {_MAX_INT_DIGITS:,} digits, more than Python "
            "reads (no price or token limit is that long)"
            if "digits" in str(exc)
            else str(exc)
        )
        raise PriceBookError(f"price book {str(path)!r} is not valid {suffix[1:]}: {why}") from None
    if not isinstance(raw, Mapping):
        raise PriceBookError(
            f"price book {str(path)!r} must map model names to prices, got {type(raw).__name__}"
        )
    return _parse(raw, label)


class _BadJson(Exception):
    """Raised from inside ``json.load``; re-raised as ``PriceBookError`` naming the file."""


_MAX_INT_DIGITS = 4300  # Python's default limit on int(str); no price or limit comes near it


class _LongInt(int):
    """A JSON integer of more digits than Python reads: it stands in at ``10^4300`` (so
    every check refuses it as too large, naming the model and the field) and shows as how
    long it was. Reading the digits themselves would take minutes for a megabyte of them."""

    digits: int

    def __new__(cls, text: str) -> _LongInt:
        negative = text.startswith("-")
        value = 10**_MAX_INT_DIGITS
        self = super().__new__(cls, -value if negative else value)
        self.digits = len(text) - negative
        return self

    def __repr__(self) -> str:
        return f"<{'negative ' if self < 0 else ''}int of {self.digits} digits>"

    __str__ = __repr__


def _read_int(text: str) -> int:
    """A JSON integer; one too long for ``int(text)`` (which raises a ``ValueError`` that
    names no file) as a ``_LongInt``."""
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else _LongInt(text)


def _refuse_constant(name: str) -> Any:
    raise _BadJson(f"values must be finite numbers, got {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key given twice (json keeps the last silently;
    TOML refuses, and so does a book in either format)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _BadJson(f"key {key!r} is listed twice in one object")
        out[key] = value
    return out


def _from_show(card: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A flat card from ``prices show -f json`` as a one-model book: ``source`` dropped,
    the fields it prints as "none" (``"reasoning": null``, ``"tiers": []``) left out, and
    so is an optional rate it prints at its parent's value (``input_audio`` = ``input``:
    billed as its parent, which is what the card meant), so the book prices each part
    of a call as the card did."""
    model = card["model"]
    entry = {
        k: v
        for k, v in card.items()
        if k not in ("model", "source") and not (k in ("reasoning", "tiers") and v in (None, []))
    }
    for name, parent in PARENT_RATE.items():
        if name in entry and _same_number(entry[name], entry.get(parent)):
            del entry[name]
    return {model: entry}


def _same_number(a: Any, b: Any) -> bool:
    try:
        return (
            a is not None
            and b is not None
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and Decimal(str(a).strip()) == Decimal(str(b).strip())
        )
    except (InvalidOperation, ValueError):
        return False  # not a number: the book's own check names it


def _parse(book: Mapping[str, Any], source: str) -> dict[str, BookEntry]:
    if isinstance(book.get("model"), str):  # a book's entries are mappings, never strings
        book = _from_show(book, source)
    cards: dict[str, BookEntry] = {}
    for model, entry in book.items():
        if not isinstance(model, str) or not model.strip():
            raise PriceBookError(
                f"{source}: model names must be non-empty strings, got {_shown(model)}"
            )
        key = model.strip().lower()
        if key in cards:
            raise PriceBookError(f"{source}: model {model!r} is listed twice (names ignore case)")
        if not isinstance(entry, Mapping):
            raise PriceBookError(
                f"{source}: model {model!r} must map fields to prices, got {_shown(entry)}"
            )
        cards[key] = _card(model.strip(), entry, source)
    return cards


def _card(model: str, entry: Mapping[str, Any], source: str) -> BookEntry:
    _no_unknown(model, entry, _KNOWN, "", source)
    prices = _rates(model, entry, "", source)
    for required in ("input", "output"):
        if required not in prices:
            raise PriceBookError(
                f"{source}: model {model!r} has no {required!r} price "
                "(write 0 for a free direction)"
            )
    currency = entry.get("currency", "USD")
    if not isinstance(currency, str) or not _CURRENCY.match(currency.strip().upper()):
        raise PriceBookError(
            f"{source}: model {model!r} field 'currency' must be a three-letter code, "
            f"got {_shown(currency)}"
        )
    provider = entry.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise PriceBookError(
            f"{source}: model {model!r} field 'provider' must be a non-empty string, "
            f"got {_shown(provider)}"
        )
    shell = RateCard(
        model=model,
        provider=provider.strip().lower() if provider else None,
        source=source,
        currency=currency.strip().upper(),
        input=prices["input"],
        output=prices["output"],
        cache_read=prices["input"],
        cache_write=prices["input"],
        max_input_tokens=_limit(model, "max_input_tokens", entry.get("max_input_tokens"), source),
        max_output_tokens=_limit(
            model, "max_output_tokens", entry.get("max_output_tokens"), source
        ),
    )
    variants = _variants(model, entry.get("variants"), bool(prices.get("tiers")), source)
    return BookEntry(_build(shell, prices), variants, prices if variants else None)


def _build(shell: RateCard, prices: Mapping[str, Any]) -> RateCard:
    """``shell`` (the model, provider, currency, limits) with ``prices``, read.

    Missing cache prices fall back to the input rate: caching then costs what it would
    have cost uncached, never nothing. The other optional rates bill as their parent
    (``RateCard``)."""
    return replace(
        shell,
        **_rates_of(prices),
        request=prices.get("per_request", Decimal(0)),
        tiers=prices.get("tiers", ()),
    )


def _rates_of(prices: Mapping[str, Any]) -> dict[str, Any]:
    """The per-million rates of an entry or a tier, as ``RateCard`` / ``RateTier`` take
    them: a missing cache price is the input rate, other missing rates ``None``."""
    rates: dict[str, Decimal | None] = {name: prices.get(name) for name in PRICE_FIELDS}
    for cache in ("cache_read", "cache_write"):
        if rates[cache] is None:
            rates[cache] = prices["input"]
    return rates


def _no_unknown(
    model: str, entry: Mapping[str, Any], known: frozenset[str], where: str, source: str
) -> None:
    unknown = sorted(str(k) for k in entry if k not in known)
    if unknown:
        raise PriceBookError(
            f"{source}: model {model!r} has unknown field {where}{unknown[0]!r} "
            f"(value {_shown(entry[unknown[0]])}); known fields: {', '.join(sorted(known))}"
        )


def _rates(model: str, entry: Mapping[str, Any], where: str, source: str) -> dict[str, Any]:
    """The prices ``entry`` sets, read and checked (``where`` names a tier or variant in
    errors): per-million rates, ``per_request`` and ``tiers``; synonyms resolved."""
    prices: dict[str, Any] = {}
    for name, value in entry.items():
        if name not in _VARIANT_FIELDS:
            continue
        if name == "tiers":
            prices["tiers"] = _tiers(model, value, f"{where}tiers", source)
            continue
        field = _SYNONYMS.get(name, name)
        if field in prices:
            raise PriceBookError(
                f"{source}: model {model!r} {where}gives both 'cache_read' and its synonym "
                f"'cache_input' (value {_shown(value)})"
            )
        prices[field] = _price(model, where + name, value, source)
    return prices


def _tiers(model: str, value: Any, where: str, source: str) -> tuple[RateTier, ...]:
    """Long-context tiers: each replaces the rates for the whole call once the prompt (all
    input tokens) passes its ``above``; thresholds rise from one tier to the next."""
    if not isinstance(value, (list, tuple)):
        raise PriceBookError(
            f"{source}: model {model!r} field {where!r} must be a list of tiers "
            f'({{"above": 200000, "input": ..., "output": ...}}), got {_shown(value)}'
        )
    tiers: list[RateTier] = []
    for i, tier in enumerate(value):
        here = f"{where}[{i}]."
        if not isinstance(tier, Mapping):
            raise PriceBookError(
                f"{source}: model {model!r} field {here[:-1]!r} must map fields to prices, "
                f"got {_shown(tier)}"
            )
        _no_unknown(model, tier, _TIER_FIELDS, here, source)
        above = tier.get("above")
        if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
            raise PriceBookError(
                f"{source}: model {model!r} field {here + 'above'!r} must be a positive whole "
                f"number of prompt tokens, got {_shown(above)}"
            )
        if above >= MAX_TOKENS:
            raise PriceBookError(
                f"{source}: model {model!r} field {here + 'above'!r} must be below "
                f"{MAX_TOKENS:,} prompt tokens (no call's prompt is larger, so the tier could "
                f"never apply), got {_shown(above)}"
            )
        if tiers and above <= tiers[-1].above:
            raise PriceBookError(
                f"{source}: model {model!r} field {here + 'above'!r} must be above the "
                f"previous tier's {tiers[-1].above}, got {_shown(above)} (list tiers lowest first)"
            )
        rates = _rates(model, tier, here, source)
        for required in ("input", "output"):
            if required not in rates:
                raise PriceBookError(
                    f"{source}: model {model!r} tier {here[:-1]!r} has no {required!r} price "
                    "(a tier replaces every rate of the call)"
                )
        tiers.append(RateTier(above=above, **_rates_of(rates)))
    return tuple(tiers)


def _variants(
    model: str, value: Any, tiered: bool, source: str
) -> tuple[tuple[tuple[tuple[str, str], ...], Mapping[str, Any]], ...]:
    """Price variants: ``[{"when": {"service_tier": "flex"}, "input": ..., ...}]``.

    A variant that changes the rates of an entry with tiers (``tiered``) must say which
    tiers go with them: the entry's would otherwise charge a long batch prompt the full
    long-context price, and none would charge it the variant's short-prompt price."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise PriceBookError(
            f"{source}: model {model!r} field 'variants' must be a list of variants "
            f'({{"when": {{"service_tier": "flex"}}, "input": ..., ...}}), got {_shown(value)}'
        )
    variants = []
    for i, variant in enumerate(value):
        here = f"variants[{i}]."
        if not isinstance(variant, Mapping):
            raise PriceBookError(
                f"{source}: model {model!r} field {here[:-1]!r} must map fields to prices, "
                f"got {_shown(variant)}"
            )
        _no_unknown(model, variant, _VARIANT_FIELDS | {"when"}, here, source)
        when = variant.get("when")
        if (
            not isinstance(when, Mapping)
            or not when
            or not all(
                isinstance(k, str) and k and isinstance(v, str) and v for k, v in when.items()
            )
        ):
            raise PriceBookError(
                f"{source}: model {model!r} field {here + 'when'!r} must map price context "
                f'keys to text values, such as {{"service_tier": "flex"}}, got {_shown(when)}'
            )
        prices = _rates(model, variant, here, source)
        if not prices:
            raise PriceBookError(
                f"{source}: model {model!r} variant {here[:-1]!r} (when {dict(when)!r}) "
                "sets no price"
            )
        if tiered and "tiers" not in prices and prices.keys() - {"per_request"}:
            raise PriceBookError(
                f"{source}: model {model!r} variant {here[:-1]!r} (when {dict(when)!r}) "
                "changes the rates of a model with long-context tiers: give its own "
                "'tiers' too ([] for none)"
            )
        variants.append((tuple(sorted(when.items())), prices))
    return tuple(variants)


def _price(model: str, field: str, value: Any, source: str) -> Decimal:
    # per_request is a fee charged once per call (a search, a rerank), not a token rate
    unit = (
        '(USD per call, e.g. "0.002")'
        if field.endswith("per_request")
        else '(USD per million tokens, e.g. "0.15")'
    )

    def bad(why: str) -> PriceBookError:
        return PriceBookError(
            f"{source}: model {model!r} field {field!r} {why}, got {_shown(value)} {unit}"
        )

    if isinstance(value, bool):
        raise bad("must be a number")
    if isinstance(value, Decimal):
        price = value
    elif isinstance(value, int):
        price = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise bad("must be a finite number")
        price = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            price = Decimal(value.strip())
        except InvalidOperation:
            raise bad("is not a number") from None
    else:
        raise bad("must be a number or a numeric string")
    if not price.is_finite():
        raise bad("must be a finite number")
    if price < 0:
        raise bad("must not be negative")
    if price.is_zero():  # -0 reads as 0; 0E-500 as 0
        exponent = price.as_tuple().exponent
        keep = isinstance(exponent, int) and _MIN_EXPONENT <= exponent <= 0
        return abs(price) if keep else Decimal(0)
    _, digits, exponent = price.as_tuple()
    assert isinstance(exponent, int)  # finite
    zeros = 0  # trailing zeros of the coefficient ("0.150" has one): not significant
    while digits[-1 - zeros] == 0:
        zeros += 1
    significant = len(digits) - zeros
    if significant > _MAX_DIGITS:
        raise bad(
            f"has {significant} significant digits, more than the {_MAX_DIGITS} kept exact "
            "(a binary float through Decimal(float)? write the number as a string)"
        )
    if exponent + zeros < _MIN_EXPONENT:
        raise bad("has a digit below 10^-20, too small to be a price")
    if price.adjusted() > _MAX_ADJUSTED:
        raise bad("is 10^12 or more, too large to be a price")
    if len(digits) > _MAX_DIGITS:  # "0.15" and 40 zeros: the same price, written short
        price = price.quantize(Decimal(1).scaleb(min(exponent + zeros, 0)), context=EXACT)
    return price


def _limit(model: str, field: str, value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > MAX_TOKENS:
        raise PriceBookError(
            f"{source}: model {model!r} field {field!r} must be a positive whole number "
            f"of tokens up to {MAX_TOKENS:,}, got {_shown(value)}"
        )
    return value


class _SafeRepr(reprlib.Repr):
    """``repr`` of a value holding an int too long for ``str`` (Python refuses more than
    4,300 digits): the int as ``<int of N digits>``, the rest as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = 80

    def repr_int(self, x: int, level: int) -> str:
        try:
            return repr(x)
        except ValueError:
            sign, digits, _ = Decimal(x).as_tuple()
            return f"<{'negative ' if sign else ''}int of {len(digits)} digits>"


def _shown(value: Any) -> str:
    """``value`` as an error message shows it: its ``repr``, or, when that fails (an int
    past Python's 4,300-digit limit, inside a list or not; nesting deeper than Python
    recurses), a short one that does not."""
    try:
        return repr(value)
    except (ValueError, RecursionError):
        return _SafeRepr().repr(value)
