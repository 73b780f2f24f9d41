"""``CostLedgerLogger`` checks its arguments where it is built: a ledger URL as
``tracker=`` was accepted, and every call then went unrecorded with only a rate-limited
warning; a keyword slip (``traker=t``) vanished into LiteLLM's ``CustomLogger(**kwargs)``,
leaving the logger on the default tracker without a word."""

from __future__ import annotations

import litellm
import pytest
from litellm_support import (
    GPT_4O_MINI_10_IN_20_OUT,
    MESSAGES,
    Sentinel,
    litellm_isolated,
    offline,
)

from costledger import Tracker
from costledger.testing import InMemoryLedger
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

TAKES = "it takes tracker, turn_off_message_logging, message_logging"


def test_a_ledger_url_as_tracker_is_refused() -> None:
    with pytest.raises(TypeError) as info:
        CostLedgerLogger(tracker="sqlite:///costs.db")  # type: ignore[arg-type]
    assert str(info.value) == (
        "CostLedgerLogger() tracker must be a costledger Tracker or None, got str "
        "'sqlite:///costs.db' (for a ledger URL: tracker=Tracker(Ledger(url)))"
    )
    with pytest.raises(TypeError) as info:
        CostLedgerLogger("postgresql://app:hunter2@db/costs")  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value)
    assert "got str 'postgresql://app:***@db/costs' (for a ledger URL" in str(info.value)


def test_a_misspelt_keyword_is_refused_naming_it() -> None:
    mine = Tracker(InMemoryLedger(), log="off")
    with pytest.raises(TypeError) as info:
        CostLedgerLogger(traker=mine)
    assert str(info.value) == (
        f"CostLedgerLogger() got unexpected keyword argument 'traker' (did you mean "
        f"'tracker'?); {TAKES}"
    )
    with pytest.raises(TypeError) as info:
        CostLedgerLogger(mine, turn_off_message_loging=True, colour="blue")
    assert str(info.value) == (
        "CostLedgerLogger() got unexpected keyword arguments 'turn_off_message_loging' "
        f"(did you mean 'turn_off_message_logging'?), 'colour'; {TAKES}"
    )


def test_customloggers_own_keywords_are_passed_on() -> None:
    logger = CostLedgerLogger(turn_off_message_logging=True, message_logging=False)
    assert (logger.turn_off_message_logging, logger.message_logging) == (True, False)
    assert (CostLedgerLogger().turn_off_message_logging, CostLedgerLogger().message_logging) == (
        False,
        True,
    )


def test_a_logger_with_its_tracker_records_the_exact_cost() -> None:
    ledger = InMemoryLedger()
    sentinel = Sentinel()
    logger = CostLedgerLogger(Tracker(ledger, log="off", team="search"))
    litellm.callbacks = [logger, sentinel]

    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")

    sentinel.wait()
    [stored] = list(ledger.events())
    assert (stored.team, stored.total_cost) == ("search", GPT_4O_MINI_10_IN_20_OUT)
