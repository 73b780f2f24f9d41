"""Amounts past 28 significant digits: more than 18 places are rounded half-even to 18
(docs/ledger.md), whatever the whole part, never refused by Python's default context."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger

WIDE = Decimal("12345678901.1234567890123456789")  # 11 whole digits, 19 places: 30 digits
ROUNDED = Decimal("12345678901.123456789012345679")


def test_wide_amounts_are_stored_rounded_to_18_places(url: str) -> None:
    at = datetime(2025, 2, 1, 1, tzinfo=timezone.utc)
    with Ledger(url, sync=True) as ledger:
        ledger.record(
            UsageEvent(
                id="wide",
                model="m",
                usage=Usage(1, 1),
                cost=Cost(status="priced", total=WIDE),
                timestamp=at,
            )
        )
        assert ledger.stats().rejected == 0
        stored = ledger.get("wide")
        assert stored is not None
        assert stored.total_cost == ROUNDED
        assert ledger.update_cost("wide", Cost(status="priced", total=WIDE + 1)) is True
        again = ledger.get("wide")
        assert again is not None
        assert again.total_cost == ROUNDED + 1
        [total] = ledger.summary()
        assert total.cost == ROUNDED + 1
