"""Custom price books: a mapping, or a TOML / JSON file of the same shape.

::

    {"my-model": {"input": "0.15", "output": "0.60", "cache_read": "0.075"}}

Prices are per million tokens. Values stay exact: files are parsed with
``parse_float=Decimal``; in a Python mapping, ``Decimal``, ``int`` and ``str`` are
taken as written and a ``float`` through its shortest ``repr`` (``0.15`` -> ``"0.15"``),
which is the number the user typed.

One model's card as ``costledger prices show MODEL -f json`` prints it (a flat object
with a string ``"model"``) is also read, as a book of that one model: ``source`` is
dropped, and ``reasoning``, ``per_request`` and ``tiers`` are accepted only with the
values that mean "none" (``null``, ``"0"``, ``[]``), since a book has no such prices; any
other value is refused rather than silently priced without it.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .._errors import PriceBookError
from ._card import EXACT, RateCard

__all__ = ["PRICE_FIELDS", "load_price_book"]

PRICE_FIELDS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "input_audio",
    "output_audio",
)
_SYNONYMS = {"cache_input": "cache_read"}
_OTHER_FIELDS = ("currency", "provider", "max_input_tokens", "max_output_tokens")
_KNOWN = frozenset(PRICE_FIELDS) | frozenset(_SYNONYMS) | frozenset(_OTHER_FIELDS)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Bounds that keep every call's arithmetic exact in the card's 60-digit context (a price
# of 30 digits between 10^-20 and 10^12, times up to 10^16 tokens, summed over the
# components, spans under 50 digits), so Pricer.price can never raise decimal.Inexact.
_MAX_DIGITS = 30
_MIN_EXPONENT = -20  # no digit below 10^-20 per million tokens
_MAX_ADJUSTED = 11  # below 10^12 per million tokens


def load_price_book(
    book: Mapping[str, Any] | str | os.PathLike[str],
) -> dict[str, RateCard]:
    """Read and check a price book; return its cards by lower-cased model name."""
    if isinstance(book, Mapping):
        return _parse(book, "override: mapping")
    path = Path(book)
    label = f"override: {path}"
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
    if not isinstance(raw, Mapping):
        raise PriceBookError(
            f"price book {str(path)!r} must map model names to prices, got {type(raw).__name__}"
        )
    return _parse(raw, label)


class _BadJson(Exception):
    """Raised from inside ``json.load``; re-raised as ``PriceBookError`` naming the file."""


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
    """A flat card from ``prices show -f json`` as a one-model book."""
    model = card["model"]
    entry = {k: v for k, v in card.items() if k not in ("model", "source")}
    for name, why in (
        ("reasoning", "a separate reasoning price"),
        ("per_request", "a per-request fee"),
        ("tiers", "long-context tiers"),
    ):
        value = entry.pop(name, None)
        empty = value is None or value == [] or (name == "per_request" and _is_zero(value))
        if not empty:
            raise PriceBookError(
                f"{source}: model {model!r} field {name!r} (value {value!r}): a price book "
                f"cannot express {why}; delete the field to price without it"
            )
    return {model: entry}


def _is_zero(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and Decimal(str(value).strip()).is_zero()
    except (InvalidOperation, ValueError):
        return False


def _parse(book: Mapping[str, Any], source: str) -> dict[str, RateCard]:
    if isinstance(book.get("model"), str):  # a book's entries are mappings, never strings
        book = _from_show(book, source)
    cards: dict[str, RateCard] = {}
    for model, entry in book.items():
        if not isinstance(model, str) or not model.strip():
            raise PriceBookError(f"{source}: model names must be non-empty strings, got {model!r}")
        key = model.strip().lower()
        if key in cards:
            raise PriceBookError(f"{source}: model {model!r} is listed twice (names ignore case)")
        if not isinstance(entry, Mapping):
            raise PriceBookError(
                f"{source}: model {model!r} must map fields to prices, got {entry!r}"
            )
        cards[key] = _card(model.strip(), entry, source)
    return cards


def _card(model: str, entry: Mapping[str, Any], source: str) -> RateCard:
    unknown = sorted(str(k) for k in entry if k not in _KNOWN)
    if unknown:
        raise PriceBookError(
            f"{source}: model {model!r} has unknown field {unknown[0]!r} "
            f"(value {entry[unknown[0]]!r}); known fields: {', '.join(sorted(_KNOWN))}"
        )
    prices: dict[str, Decimal] = {}
    for name, value in entry.items():
        if name in _OTHER_FIELDS:
            continue
        field = _SYNONYMS.get(name, name)
        if field in prices:
            raise PriceBookError(
                f"{source}: model {model!r} gives both 'cache_read' and its synonym "
                f"'cache_input' (value {value!r})"
            )
        prices[field] = _price(model, name, value, source)
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
            f"got {currency!r}"
        )
    provider = entry.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise PriceBookError(
            f"{source}: model {model!r} field 'provider' must be a non-empty string, "
            f"got {provider!r}"
        )
    # Missing cache prices fall back to the input rate: caching then costs what
    # it would have cost uncached, never nothing.
    cache_write = prices.get("cache_write", prices["input"])
    return RateCard(
        model=model,
        provider=provider.strip().lower() if provider else None,
        source=source,
        currency=currency.strip().upper(),
        input=prices["input"],
        output=prices["output"],
        cache_read=prices.get("cache_read", prices["input"]),
        cache_write=cache_write,
        cache_write_1h=prices.get("cache_write_1h"),
        input_audio=prices.get("input_audio"),
        output_audio=prices.get("output_audio"),
        max_input_tokens=_limit(model, "max_input_tokens", entry.get("max_input_tokens"), source),
        max_output_tokens=_limit(
            model, "max_output_tokens", entry.get("max_output_tokens"), source
        ),
    )


def _price(model: str, field: str, value: Any, source: str) -> Decimal:
    def bad(why: str) -> PriceBookError:
        return PriceBookError(
            f"{source}: model {model!r} field {field!r} {why}, got {value!r} "
            '(USD per million tokens, e.g. "0.15")'
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
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PriceBookError(
            f"{source}: model {model!r} field {field!r} must be a positive whole number "
            f"of tokens, got {value!r}"
        )
    return value
