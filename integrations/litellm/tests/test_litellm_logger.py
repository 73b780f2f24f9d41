"""CostLedgerLogger on real LiteLLM calls (``mock_response``: no network, real callbacks)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import litellm
import pytest
from litellm_support import (
    GPT_4O_MINI_10_IN_20_OUT,
    IN_CI,
    MESSAGES,
    Sentinel,
    gpt_4o_mini_cost,
    litellm_isolated,
    offline,
    utc,
)

from costledger import Tracker, Usage, attribute
from costledger.testing import CapturedCosts, InMemoryLedger
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")


@pytest.fixture
def sentinel() -> Sentinel:
    return Sentinel()


@pytest.fixture
def no_warnings_memory() -> Iterator[None]:
    """costledger's once-per-key warnings forgotten, so each test can see its own."""
    from costledger._logging import _reporter

    _reporter.reset()
    yield
    _reporter.reset()


def _needs_cache_dependencies() -> None:
    """LiteLLM 1.110's cache-hit path imports proxy modules needing fastapi and soundfile."""
    missing = []
    for module in ("fastapi", "soundfile"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        reason = f"LiteLLM cache hits need {missing} (pip install costledger-litellm[test])"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


# --- registration and the exact cost ---------------------------------------------------------


def test_global_registration_records_one_exact_event(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    response = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")

    sentinel.wait()
    _, kwargs, _, start, end = sentinel.last
    [event] = costs.events
    assert event.id == response._hidden_params["litellm_call_id"] == kwargs["litellm_call_id"]
    assert event.source == "litellm"
    assert event.model == "gpt-4o-mini"
    assert event.provider == "openai"
    assert event.status == "ok"
    assert event.usage == Usage(input_tokens=10, output_tokens=20)
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert event.cost.input == Decimal("0.0000015")
    assert event.cost.output == Decimal("0.000012")
    assert event.reported_cost == Decimal("0.0000135")
    assert event.request_id == response.id
    assert event.streamed is False
    assert event.cache_hit is False
    # LiteLLM's clock, not ours: its naive local start time, as the epoch time it logged
    logged_start = kwargs["standard_logging_object"]["startTime"]
    assert event.timestamp == datetime.fromtimestamp(logged_start, timezone.utc) == utc(start)
    assert event.latency_ms == round((end - start).total_seconds() * 1000, 3)


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process in UTC+5:30, where a naive local time read as UTC is 5.5 hours off."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_timestamp_is_utc_whatever_the_local_zone(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    before = datetime.now(timezone.utc)

    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")

    sentinel.wait()
    after = datetime.now(timezone.utc)
    [event] = costs.events
    assert event.timestamp.tzinfo is not None
    assert before <= event.timestamp <= after


def test_per_call_registration_records_that_call(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="4",
        callbacks=[CostLedgerLogger(), sentinel],
    )

    sentinel.wait()
    [event] = costs.events
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT


async def test_async_success_records_one_exact_event(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    response = await litellm.acompletion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="4",
        callbacks=[CostLedgerLogger(), sentinel],
    )

    await sentinel.await_()
    call_id = response._hidden_params["litellm_call_id"]
    # this call's event (LiteLLM can carry an earlier test's pending callback onto this
    # test's event loop; the root conftest drains them, this keeps the test exact anyway)
    [event] = [e for e in costs.events if e.id == call_id]
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert event.reported_cost == Decimal("0.0000135")
    _, _, _, start, end = sentinel.last
    assert event.latency_ms == round((end - start).total_seconds() * 1000, 3)


def test_logger_with_its_own_tracker(costs: CapturedCosts, sentinel: Sentinel) -> None:
    ledger = InMemoryLedger()
    litellm.callbacks = [CostLedgerLogger(Tracker(ledger, log="off", team="platform")), sentinel]

    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")

    sentinel.wait()
    [event] = costs.events
    assert event.team == "platform"
    assert [stored.id for stored in ledger.events()] == [event.id]


def test_registered_globally_and_per_call_counts_once(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    litellm.callbacks = [CostLedgerLogger()]

    litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="4",
        callbacks=[CostLedgerLogger(), sentinel],
    )

    sentinel.wait()
    assert len(costs.events) == 1
    assert costs.total == GPT_4O_MINI_10_IN_20_OUT


# --- streams ----------------------------------------------------------------------------------


def test_sync_stream_is_counted_once_at_its_end(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    stream = litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="two plus two is four", stream=True
    )
    chunks = list(stream)

    sentinel.wait()
    assert len(chunks) > 2
    _, kwargs, _, _, _ = sentinel.last
    logged = kwargs["standard_logging_object"]
    [event] = costs.events
    assert event.streamed is True
    assert event.status == "ok"
    # A mock stream's usage is LiteLLM's token count of the prompt and the chunks.
    assert logged["prompt_tokens"] > 0
    assert logged["completion_tokens"] > 0
    assert event.usage == Usage(
        input_tokens=logged["prompt_tokens"], output_tokens=logged["completion_tokens"]
    )
    assert event.cost.total == gpt_4o_mini_cost(
        logged["prompt_tokens"], logged["completion_tokens"]
    )


async def test_async_stream_is_counted_once_at_its_end(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    stream = await litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="two plus two is four", stream=True
    )
    assert costs.events == []  # nothing before the stream ends
    chunks = [chunk async for chunk in stream]

    await sentinel.await_()
    assert len(chunks) > 2
    logged = sentinel.last[1]["standard_logging_object"]
    [event] = costs.events
    assert event.streamed is True
    assert event.usage.output_tokens == logged["completion_tokens"] > 0
    assert event.cost.total == gpt_4o_mini_cost(
        logged["prompt_tokens"], logged["completion_tokens"]
    )


def test_embedding_is_recorded_with_its_call_type(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    litellm.embedding(
        model="text-embedding-3-small", input=["hello world"], mock_response=[0.1, 0.2]
    )

    sentinel.wait()
    [event] = costs.events
    assert event.usage == Usage(input_tokens=10)
    assert event.cost.total == Decimal("0.0000002")  # 10 * 0.02 / 1e6
    assert event.metadata["litellm_call_type"] == "embedding"


# --- failures ---------------------------------------------------------------------------------


def test_sync_failure_is_recorded_as_error(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    with pytest.raises(litellm.InternalServerError):
        litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=Exception("upstream exploded")
        )

    sentinel.wait()  # a sync failure is logged on the caller's thread, before the raise
    [event] = costs.events
    assert event.status == "error"
    assert event.error_type == "InternalServerError"
    assert "upstream exploded" in event.metadata["error_message"]
    assert event.usage == Usage()
    assert event.cost.status == "not_priced"
    assert event.cost.total is None
    assert event.reported_cost is None  # LiteLLM's 0.0 on a failure is not a price
    assert event.provider == "openai"
    assert event.model == "gpt-4o-mini"


async def test_async_failure_is_recorded_as_error(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    with pytest.raises(litellm.RateLimitError):
        await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError"
        )

    await sentinel.await_()
    [event] = costs.events
    assert event.status == "error"
    assert event.error_type == "RateLimitError"
    assert event.cost.total is None


# --- idempotency ------------------------------------------------------------------------------


def test_the_same_litellm_call_id_is_recorded_once(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    ledger = InMemoryLedger()
    logger = CostLedgerLogger(Tracker(ledger, log="off"))
    litellm.callbacks = [sentinel]
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    sentinel.wait()
    _, kwargs, response, start, end = sentinel.last

    # LiteLLM fires some callbacks twice (#5118, #14340): the same record, once per path.
    logger.log_success_event(kwargs, response, start, end)
    logger.log_success_event(kwargs, response, start, end)
    CostLedgerLogger(Tracker(ledger, log="off")).log_success_event(kwargs, response, start, end)

    assert len(costs.events) == 1
    assert len(list(ledger.events())) == 1
    assert costs.events[0].id == kwargs["litellm_call_id"]


def test_the_ledger_keeps_one_row_when_another_process_records_it_again(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    from costledger_litellm._logger import _registry

    ledger = InMemoryLedger()
    logger = CostLedgerLogger(Tracker(ledger, log="off"))
    litellm.callbacks = [logger, sentinel]
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    sentinel.wait()
    _, kwargs, response, start, end = sentinel.last

    _registry.clear()  # a second process (another worker) has not seen the id
    logger.log_success_event(kwargs, response, start, end)

    assert len(costs.events) == 2
    [row] = ledger.events()
    assert row.id == kwargs["litellm_call_id"]
    assert row.total_cost == GPT_4O_MINI_10_IN_20_OUT


async def test_async_duplicate_is_recorded_once(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [sentinel]
    await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    await sentinel.await_()
    _, kwargs, response, start, end = sentinel.last
    logger = CostLedgerLogger()

    await logger.async_log_success_event(kwargs, response, start, end)
    await logger.async_log_success_event(kwargs, response, start, end)
    logger.log_success_event(kwargs, response, start, end)

    assert len(costs.events) == 1


# --- cache hits -------------------------------------------------------------------------------


def test_cache_hit_costs_nothing(costs: CapturedCosts, sentinel: Sentinel) -> None:
    _needs_cache_dependencies()
    from litellm.caching.caching import Cache

    litellm.cache = Cache(type="local")
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    question = [{"role": "user", "content": "a question asked twice"}]

    litellm.completion(model="gpt-4o-mini", messages=question, mock_response="4", caching=True)
    sentinel.wait(1)
    litellm.completion(model="gpt-4o-mini", messages=question, mock_response="4", caching=True)
    sentinel.wait(2)

    first, second = costs.events
    assert first.cache_hit is False
    assert first.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert second.cache_hit is True
    assert second.cost.status == "priced"
    assert second.cost.total == Decimal(0)
    assert second.usage == Usage(input_tokens=10, output_tokens=20)  # what the answer held
    assert second.reported_cost == Decimal(0)
    assert second.id != first.id
    assert costs.total == GPT_4O_MINI_10_IN_20_OUT


async def test_async_cache_hit_costs_nothing(costs: CapturedCosts, sentinel: Sentinel) -> None:
    _needs_cache_dependencies()
    from litellm.caching.caching import Cache

    litellm.cache = Cache(type="local")
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    question = [{"role": "user", "content": "an async question asked twice"}]

    for count in (1, 2):
        await litellm.acompletion(model="gpt-4o-mini", messages=question, mock_response="4")
        await sentinel.await_(count)

    assert [e.cache_hit for e in costs.events] == [False, True]
    assert [e.cost.total for e in costs.events] == [GPT_4O_MINI_10_IN_20_OUT, Decimal(0)]


# --- LiteLLM's own price ----------------------------------------------------------------------


def test_agreeing_prices_log_nothing(
    costs: CapturedCosts,
    sentinel: Sentinel,
    caplog: pytest.LogCaptureFixture,
    no_warnings_memory: None,
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    with caplog.at_level(logging.WARNING, logger="costledger"):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
        sentinel.wait()

    assert costs.events[0].reported_cost == costs.events[0].cost.total
    assert not [r for r in caplog.records if hasattr(r, "costledger_warning")]


def test_disagreeing_price_is_kept_and_logged(
    costs: CapturedCosts,
    sentinel: Sentinel,
    caplog: pytest.LogCaptureFixture,
    no_warnings_memory: None,
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    with caplog.at_level(logging.WARNING, logger="costledger"):
        # LiteLLM's custom pricing for this one call: 10 * 1e-6 + 20 * 2e-6 = 0.00005
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="4",
            input_cost_per_token=1e-6,
            output_cost_per_token=2e-6,
        )
        sentinel.wait()

    [event] = costs.events
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT  # costledger's price is the record
    # LiteLLM adds floats: its figure is kept exactly as it reported it.
    logged = sentinel.last[1]["standard_logging_object"]["response_cost"]
    assert event.reported_cost == Decimal(str(logged))
    assert abs(event.reported_cost - Decimal("0.00005")) < Decimal("1e-15")
    [warning] = [r for r in caplog.records if hasattr(r, "costledger_warning")]
    assert warning.costledger_warning == "litellm.cost_disagreement:openai:gpt-4o-mini"
    message = warning.getMessage()
    assert "0.0000135" in message
    assert str(event.reported_cost) in message


# --- attribution ------------------------------------------------------------------------------


def test_attribution_from_metadata_and_user(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="4",
        user="end-user-7",
        metadata={
            "user": "u-42",
            "team": "search",
            "project": "atlas",
            "feature": "answers",
            "tags": ["beta", "eu"],
            "ticket": "T-9",
            "costledger": {"tenant": "acme"},
            "api_key": "sk-abcdefghijklmnopqrstuvwxyz123456",
        },
    )

    sentinel.wait()
    [event] = costs.events
    assert (event.user, event.team, event.project, event.feature) == (
        "u-42",
        "search",
        "atlas",
        "answers",
    )
    assert event.tags == ("beta", "eu")
    assert event.metadata["ticket"] == "T-9"
    assert event.metadata["tenant"] == "acme"
    assert "hidden_params" not in event.metadata
    assert event.metadata["api_key"] == "[REDACTED]"


def test_router_bookkeeping_is_not_event_metadata(
    costs: CapturedCosts, sentinel: Sentinel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Router call with a retry and a fallback: LiteLLM writes the chosen deployment, the
    retry and fallback counts (and, when asked to, the raw request with the prompt) into
    the request's metadata; only what the caller set is the event's."""
    from litellm import Router

    monkeypatch.setattr(litellm, "log_raw_request_response", True)
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    router = Router(
        model_list=[
            {
                "model_name": "main",
                "litellm_params": {
                    "model": "gpt-4o-mini",
                    "api_key": "sk-test",
                    "mock_response": Exception("down"),
                },
            },
            {
                "model_name": "backup",
                "litellm_params": {"model": "gpt-4o", "api_key": "sk-test", "mock_response": "4"},
            },
        ],
        fallbacks=[{"main": ["backup"]}],
        num_retries=1,
        retry_after=0,
    )

    response = router.completion(
        model="main", messages=MESSAGES, metadata={"feature": "chat", "ticket": "T-9"}
    )

    assert response.choices[0].message.content == "4"
    sentinel.wait(3)
    [success] = [kwargs for kind, kwargs, *_ in sentinel.seen if kind == "success"]
    litellm_metadata = success["litellm_params"]["metadata"]
    # what LiteLLM did put there (so the test shows each is filtered, not absent)
    assert {
        "attempted_fallbacks",
        "attempted_retries",
        "max_retries",
        "original_model_group",
        "deployment_model_name",
        "request_retry_count",
        "model_group",
        "deployment",
        "model_info",
        "previous_models",
        "raw_request",
    } <= set(litellm_metadata)
    assert litellm_metadata["attempted_fallbacks"] == 1
    first, second, fallback = costs.events
    assert [e.status for e in costs.events] == ["error", "error", "ok"]
    assert [e.model for e in costs.events] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    for failed in (first, second):
        assert failed.cost.total is None
        assert set(failed.metadata) == {
            "ticket",
            "litellm_model_group",
            "error_message",
            "litellm_call_id",  # a failed attempt's row names the LiteLLM call it was part of
        }
        assert failed.metadata["litellm_model_group"] == "main"
        assert failed.id.startswith(failed.metadata["litellm_call_id"] + ":failed:")
    assert dict(fallback.metadata) == {"ticket": "T-9", "litellm_model_group": "backup"}
    assert {e.feature for e in costs.events} == {"chat"}
    assert fallback.usage == Usage(input_tokens=10, output_tokens=20)
    assert fallback.cost.total == Decimal("0.000225")  # 10 * $2.50 + 20 * $10.00, per million


def test_openai_user_parameter_is_the_user(costs: CapturedCosts, sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4", user="end-user-7")

    sentinel.wait()
    assert costs.events[0].user == "end-user-7"


def test_attribute_scope_reaches_the_logging_thread(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    with attribute(team="billing", tags=["scoped"]):
        litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
    sentinel.wait()

    [event] = costs.events
    assert event.team == "billing"
    assert event.tags == ("scoped",)


# --- never breaking the host ------------------------------------------------------------------


def test_malformed_records_are_swallowed(costs: CapturedCosts) -> None:
    logger = CostLedgerLogger()
    garbage: list[Any] = [None, "text", {"standard_logging_object": "not a mapping"}]
    for kwargs in garbage:
        logger.log_success_event(kwargs, None, None, None)
        logger.log_failure_event(kwargs, object(), 3, "x")

    # A record with a usage that cannot be true is still stored, marked, never raised.
    logger.log_success_event(
        {
            "litellm_call_id": "bad-usage",
            "model": "gpt-4o-mini",
            "standard_logging_object": {"litellm_call_id": "bad-usage", "model": "gpt-4o-mini"},
        },
        {"usage": {"prompt_tokens": -5, "completion_tokens": 1}},
        None,
        None,
    )
    bad = [e for e in costs.events if e.id == "bad-usage"]
    assert len(bad) == 1
    assert bad[0].metadata["costledger.tracking_error"] == "UsageError"


def test_the_tests_cannot_reach_the_network() -> None:
    import socket

    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("api.openai.com", 443), timeout=1)
