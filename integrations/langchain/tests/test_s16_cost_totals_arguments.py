"""``CostTotals(max_events=)`` is checked as the handler's is: ``-1`` gave the deque's
"maxlen must be non-negative", naming nothing."""

from __future__ import annotations

from typing import Any

import pytest

from costledger_langchain import CostTotals


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (-1, ValueError, "got -1"),
        ("5", TypeError, "got str '5'"),
        (True, TypeError, "got bool True"),
    ],
)
def test_cost_totals_checks_max_events(value: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        CostTotals(max_events=value)
    assert str(info.value) == f"CostTotals() max_events must be an int >= 0 or None, {words}"
    assert CostTotals(max_events=None) is not None
