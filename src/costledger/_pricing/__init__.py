"""Pricing: model + ``Usage`` -> exact ``Cost`` (see ``docs/pricing.md``)."""

from __future__ import annotations

from ._card import RateCard, RateTier
from ._pricer import PriceBook, Pricer

__all__ = ["PriceBook", "Pricer", "RateCard", "RateTier"]
