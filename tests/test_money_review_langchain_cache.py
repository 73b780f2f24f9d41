"""LangChain ``usage_metadata`` as recent langchain-anthropic gives it for a prompt-cache write.

Since langchain PR #35845, langchain-anthropic sets ``input_token_details.cache_creation`` to 0
whenever it copies Anthropic's 5m/1h split, so that summing the keys does not count the writes
twice. The split is then the cache writes; a non-streamed ``ChatAnthropic`` call that writes
the cache was recorded with no usage and no cost. These tests build the dict exactly as
``langchain_anthropic.chat_models._create_usage_metadata`` does (without needing the package).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from costledger import Tracker, Usage, extract_usage
from costledger._errors import UsageError
from costledger.testing import InMemoryLedger
from costledger_langchain import CostLedgerCallbackHandler

MODEL = "claude-sonnet-4-5-20250929"


def _anthropic_usage_metadata(
    uncached: int, read: int, write_5m: int, write_1h: int, output: int
) -> dict[str, Any]:
    """What ``_create_usage_metadata`` returns for Anthropic's ``usage`` with a TTL split."""
    split = write_5m + write_1h
    details: dict[str, Any] = {"cache_read": read, "cache_creation": split}
    details["ephemeral_5m_input_tokens"] = write_5m
    details["ephemeral_1h_input_tokens"] = write_1h
    if split > 0:
        details["cache_creation"] = 0  # "Remove generic key to avoid double counting"
    input_tokens = uncached + read + split
    return {
        "input_tokens": input_tokens,
        "output_tokens": output,
        "total_tokens": input_tokens + output,
        "input_token_details": details,
    }


def _message(meta: dict[str, Any]) -> AIMessage:
    return AIMessage(
        content="4",
        usage_metadata=meta,  # type: ignore[arg-type]
        response_metadata={"model_name": MODEL, "id": "msg_01", "model_provider": "anthropic"},
    )


@pytest.mark.parametrize(
    ("write_5m", "write_1h", "total"),
    [
        # 5000 x $3 + 20000 x $0.30 + 2000 x $3.75 + 1000 x $6 + 1000 x $15, per MTok
        (2000, 1000, Decimal("0.0495")),
        # 5000 x $3 + 20000 x $0.30 + 3000 x $3.75 + 1000 x $15, per MTok
        (3000, 0, Decimal("0.04725")),
    ],
)
def test_cache_creation_zero_beside_the_split_is_priced_through_the_handler(
    write_5m: int, write_1h: int, total: Decimal
) -> None:
    meta = _anthropic_usage_metadata(5000, 20000, write_5m, write_1h, 1000)
    assert meta["input_token_details"]["cache_creation"] == 0
    tracker = Tracker(InMemoryLedger(), log="off")
    model = GenericFakeChatModel(messages=iter([_message(meta)]))
    model.invoke("hi", config={"callbacks": [CostLedgerCallbackHandler(tracker=tracker)]})
    (stored,) = tracker.ledger.events()  # type: ignore[attr-defined]
    event = stored.to_event()
    assert event.metadata == {}
    assert event.usage == Usage(
        input_tokens=25000 + write_5m + write_1h,
        output_tokens=1000,
        cache_read_tokens=20000,
        cache_write_tokens=write_5m + write_1h,
        cache_write_1h_tokens=write_1h,
    )
    assert event.cost.status == "priced"
    assert event.cost.total == total
    assert event.cost.cache_write == (write_5m * Decimal("3.75") + write_1h * 6) / 10**6


def test_record_with_the_message_as_payload_prices_the_split() -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    message = _message(_anthropic_usage_metadata(5000, 20000, 2000, 1000, 1000))
    event = tracker.record(MODEL, payload=message)
    assert event is not None
    assert event.cost.total == Decimal("0.0495")
    assert event.usage.cache_write_tokens == 3000
    assert event.usage.cache_write_1h_tokens == 1000


def test_older_langchain_anthropic_total_and_split_still_read() -> None:
    meta = _anthropic_usage_metadata(5000, 20000, 2000, 1000, 1000)
    meta["input_token_details"]["cache_creation"] = 3000  # before PR #35845
    usage = extract_usage(_message(meta))
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (3000, 1000)
    # A total larger than its split: the rest are 5-minute writes, as before.
    meta["input_token_details"]["cache_creation"] = 3500
    meta["input_tokens"] += 500
    usage = extract_usage(meta)
    assert (usage.input_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (
        28500,
        3500,
        1000,
    )


def test_split_beyond_the_input_is_still_refused() -> None:
    meta = _anthropic_usage_metadata(0, 20000, 2000, 1000, 1000)
    meta["input_tokens"] = 22000  # 20000 read + 3000 written cannot be part of 22000
    with pytest.raises(UsageError) as caught:
        extract_usage(meta)
    assert "22000 input tokens in all" in str(caught.value)
    assert caught.value.field == "input_token_details.cache_read"
