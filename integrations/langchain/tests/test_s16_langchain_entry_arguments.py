"""``CostLedgerCallbackHandler`` and ``tracking()`` check their arguments where they are
built: a ledger URL as ``tracker=`` was accepted, and every call through the handler then
went unrecorded (and unguarded) with only a rate-limited warning; ``max_events`` went
straight to a deque, whose errors named nothing (``maxlen must be non-negative``) and which
took ``True`` as a count of one."""

from __future__ import annotations

import re
import sys
from decimal import Decimal
from typing import Any

import pytest
from langchain_fakes import UsageChatModel, expected_cost

from costledger import Tracker
from costledger.testing import CapturedCosts, InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler, tracking

ONE_CALL = expected_cost(1000, 200)
assert Decimal("0.00027") == ONE_CALL
URL_HINT = " (for a ledger URL: tracker=Tracker(Ledger(url)))"


def test_the_handler_refuses_a_ledger_url_as_tracker() -> None:
    with pytest.raises(TypeError) as info:
        CostLedgerCallbackHandler(tracker="sqlite:///costs.db")  # type: ignore[arg-type]
    assert str(info.value) == (
        "CostLedgerCallbackHandler() tracker must be a costledger Tracker or None, got str "
        "'sqlite:///costs.db'" + URL_HINT
    )
    with pytest.raises(TypeError) as info:
        CostLedgerCallbackHandler("postgresql://app:hunter2@db/costs")  # type: ignore[arg-type]
    assert str(info.value) == (
        "CostLedgerCallbackHandler() tracker must be a costledger Tracker or None, got str "
        "'postgresql://app:***@db/costs'" + URL_HINT
    )


def test_the_handler_refuses_a_ledger_as_tracker() -> None:
    with pytest.raises(TypeError) as info:
        CostLedgerCallbackHandler(tracker=InMemoryLedger())  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(
        "CostLedgerCallbackHandler() tracker must be a costledger Tracker or None, got "
        "InMemoryLedger "
    )
    assert message.endswith(" (for a ledger: tracker=Tracker(ledger))")


def test_tracking_refuses_a_ledger_url_naming_itself() -> None:
    with (
        pytest.raises(TypeError) as info,
        tracking(tracker="sqlite:///costs.db"),  # type: ignore[arg-type]
    ):
        pass
    assert str(info.value) == (
        "tracking() tracker must be a costledger Tracker or None, got str "
        "'sqlite:///costs.db'" + URL_HINT
    )


def test_a_handler_with_its_tracker_records_the_exact_cost(costs: CapturedCosts) -> None:
    ledger = InMemoryLedger()
    handler = CostLedgerCallbackHandler(Tracker(ledger, log="off", team="search"))
    UsageChatModel().invoke("Hi", config={"callbacks": [handler]})
    [stored] = list(ledger.events())
    assert (stored.team, stored.total_cost) == ("search", ONE_CALL)
    assert (handler.totals.requests, handler.totals.total_cost) == (1, ONE_CALL)


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (-1, ValueError, "-1"),
        ("5", TypeError, "str '5'"),
        (2.5, TypeError, "float 2.5"),
        (True, TypeError, "bool True"),
        (Decimal(3), TypeError, "Decimal Decimal('3')"),
    ],
)
def test_max_events_is_checked_naming_it(value: Any, error: type[Exception], shown: str) -> None:
    with pytest.raises(error) as info:
        CostLedgerCallbackHandler(max_events=value)
    assert str(info.value) == (
        f"CostLedgerCallbackHandler() max_events must be an int >= 0 or None, got {shown}"
    )


def test_max_events_past_what_a_deque_holds_is_refused_naming_it() -> None:
    message = (
        "CostLedgerCallbackHandler() max_events must be at most sys.maxsize "
        f"({sys.maxsize}), got {2**70}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        CostLedgerCallbackHandler(max_events=2**70)


@pytest.mark.parametrize(("value", "kept"), [(None, 3), (0, 0), (2, 2)])
def test_max_events_keeps_that_many_events(
    costs: CapturedCosts, value: int | None, kept: int
) -> None:
    handler = CostLedgerCallbackHandler(max_events=value)
    model = UsageChatModel()
    for question in ("a", "b", "c"):
        model.invoke(question, config={"callbacks": [handler]})
    assert len(handler.totals.events) == kept
    assert (handler.totals.requests, handler.totals.total_cost) == (3, 3 * ONE_CALL)
