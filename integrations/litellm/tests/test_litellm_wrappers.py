"""The guarded ``completion`` / ``acompletion`` wrappers and the LiteLLM Proxy pre-call hook."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import litellm
import pytest
from litellm_support import (
    GPT_4O_MINI_10_IN_20_OUT,
    IN_CI,
    MESSAGES,
    RecordingGuard,
    Sentinel,
    gpt_4o_mini_cost,
    litellm_isolated,
    offline,
    utc,
    wait_until,
)

import costledger_litellm
from costledger import BudgetExceeded, RateLimited, Tracker
from costledger.testing import CapturedCosts, InMemoryLedger, capture_costs
from costledger_litellm import CostLedgerLogger, TrackedStream
from costledger_litellm._logger import _registry

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")


def _budget_exceeded() -> BudgetExceeded:
    return BudgetExceeded(
        "team 'search' would exceed its daily budget of 1 USD",
        scope="team",
        key="search",
        limit=Decimal(1),
        spent=Decimal("0.999"),
        reserved=Decimal(0),
        resets_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )


@pytest.fixture
def guard() -> RecordingGuard:
    return RecordingGuard()


@pytest.fixture
def costs(guard: RecordingGuard) -> Iterator[CapturedCosts]:
    """The default Tracker swapped for an in-memory one guarded by ``guard``."""
    with capture_costs(guards=[guard]) as captured:
        yield captured


@pytest.fixture
def sentinel() -> Sentinel:
    return Sentinel()


@pytest.fixture
def registered(sentinel: Sentinel) -> Sentinel:
    """Our logger registered globally, then the sentinel: waiting on it waits for ours."""
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    return sentinel


# --- guards before the call -------------------------------------------------------------------


def test_refusing_guard_stops_the_call(
    costs: CapturedCosts, guard: RecordingGuard, sentinel: Sentinel
) -> None:
    guard.refuse = _budget_exceeded()
    litellm.callbacks = [sentinel]

    with pytest.raises(BudgetExceeded, match="daily budget"):
        costledger_litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="4", max_tokens=64
        )

    assert len(guard.reserved) == 1
    assert sentinel.seen == []  # LiteLLM was never called
    assert costs.events == []
    assert guard.settled == []


async def test_refusing_guard_stops_the_async_call(
    costs: CapturedCosts, guard: RecordingGuard, sentinel: Sentinel
) -> None:
    guard.refuse = RateLimited(
        "10 requests per minute", limit="10/minute", key="u", retry_after=2.5
    )
    litellm.callbacks = [sentinel]

    with pytest.raises(RateLimited):
        await costledger_litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="4"
        )

    assert sentinel.seen == []
    assert costs.events == []


def test_guard_sees_the_request_and_settles_on_the_logged_event(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    before = datetime.now(timezone.utc)
    response = costledger_litellm.completion(
        model="openai/gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
        ],
        mock_response="4",
        max_tokens=64,
        metadata={"team": "search"},
        user="end-user-7",
    )
    after = datetime.now(timezone.utc)

    registered.wait()
    [reserved] = guard.reserved
    assert reserved["model"] == "gpt-4o-mini"
    assert reserved["provider"] == "openai"
    assert reserved["prompt_text"] == "Be brief.\nWhat is 2 + 2?"
    assert reserved["max_output_tokens"] == 64
    assert (reserved["user"], reserved["team"]) == ("end-user-7", "search")
    # LiteLLM ran the call under the id the guard reserved for, and the event settled it.
    assert response._hidden_params["litellm_call_id"] == reserved["id"]
    [event] = costs.events
    assert guard.settled == [event]
    assert guard.released == []
    assert event.id == reserved["id"]
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert event.team == "search"
    assert not _registry.in_flight(event.id)
    # recorded from the answer by the wrapper, timed from when it called LiteLLM (after the
    # guards), or by LiteLLM's success event if its logging thread came first: LiteLLM's time
    _, _, _, start, _ = registered.last
    assert before <= event.timestamp <= utc(start)
    assert event.latency_ms is not None
    assert 0 < event.latency_ms <= (after - before).total_seconds() * 1000


async def test_async_wrapper_settles_on_the_logged_event(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    response = await costledger_litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="4", max_completion_tokens=32
    )

    await registered.await_()
    [reserved] = guard.reserved
    assert reserved["max_output_tokens"] == 32
    # LiteLLM may deliver another test's sync success late, on its next async logging run
    # (docs/integrations/litellm.md, Limitations): this call's event is the one by its id
    [event] = [e for e in costs.events if e.id == reserved["id"]]
    assert event.id == response._hidden_params["litellm_call_id"]
    assert guard.settled == [event]


def test_wrapper_attaches_a_logger_when_none_is_registered(
    costs: CapturedCosts, guard: RecordingGuard
) -> None:
    costledger_litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")

    wait_until(lambda: len(costs.events) == 1)
    assert guard.settled == costs.events
    assert any(isinstance(cb, CostLedgerLogger) for cb in litellm.success_callback)


def test_wrapper_without_guards_builds_no_prompt_text(sentinel: Sentinel) -> None:
    tracker = Tracker(InMemoryLedger(), log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    with capture_costs(isolate=False) as costs:
        logger.completion("gpt-4o-mini", MESSAGES, mock_response="4")
        sentinel.wait()
    [event] = costs.events
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT


# --- failures release -------------------------------------------------------------------------


def test_failed_call_releases_and_records_the_error(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    with pytest.raises(litellm.InternalServerError):
        costledger_litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=Exception("boom")
        )

    [reserved] = guard.reserved
    assert guard.released == [reserved["id"]]
    assert guard.settled == []
    [event] = costs.events
    # the failed attempt's own row; the call's id is left for a success (none came)
    assert event.id.startswith(reserved["id"] + ":failed:")
    assert event.metadata["litellm_call_id"] == reserved["id"]
    assert event.status == "error"
    assert not _registry.in_flight(reserved["id"])


async def test_async_failed_call_releases(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    with pytest.raises(litellm.InternalServerError):
        await costledger_litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=Exception("boom")
        )

    assert guard.released == [guard.reserved[0]["id"]]
    assert [e.status for e in costs.events] == ["error"]


def test_call_that_fails_before_litellm_logs_is_released_unrecorded(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    # LiteLLM's call set-up fails on a metadata that is not a mapping, before it has a
    # logging object: no failure event will ever come for this call.
    with pytest.raises(AttributeError):
        costledger_litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="4", metadata="not a mapping"
        )

    [reserved] = guard.reserved
    assert guard.released == [reserved["id"]]
    assert guard.settled == []
    assert not _registry.in_flight(reserved["id"])


# --- streams through the wrapper --------------------------------------------------------------


def test_consumed_stream_is_recorded_once_by_litellm(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    stream = costledger_litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="two plus two is four", stream=True
    )
    assert isinstance(stream, TrackedStream)
    with stream:
        chunks = list(stream)

    registered.wait()
    assert len(chunks) > 2
    logged = registered.last[1]["standard_logging_object"]
    [event] = costs.events
    assert event.status == "ok"
    assert event.streamed is True
    assert event.cost.total == gpt_4o_mini_cost(
        logged["prompt_tokens"], logged["completion_tokens"]
    )
    assert guard.settled == [event]


def test_abandoned_stream_is_recorded_as_cancelled(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    stream = costledger_litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="a long answer that the reader stops reading early",
        stream=True,
    )
    first = next(stream)
    assert first.choices[0].delta.content
    call_id = stream.litellm_call_id
    del stream
    gc.collect()

    [event] = costs.events
    assert event.id == call_id
    assert event.status == "cancelled"
    assert event.streamed is True
    assert event.metadata["costledger.stream"] == "abandoned"
    # What was received: the prompt and the one chunk read, as LiteLLM counts them.
    assert event.usage.input_tokens > 0
    assert 0 < event.usage.output_tokens < 10
    assert event.cost.total == gpt_4o_mini_cost(event.usage.input_tokens, event.usage.output_tokens)
    assert guard.settled == [event]
    assert registered.seen == []  # LiteLLM itself reports nothing for it (LiteLLM #14457)


async def test_async_stream_closed_early_is_recorded_as_cancelled(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    stream = await costledger_litellm.acompletion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="a long answer that the reader stops reading early",
        stream=True,
    )
    async with stream:
        async for _chunk in stream:
            break

    [event] = costs.events
    assert event.status == "cancelled"
    assert event.usage.output_tokens > 0
    assert guard.settled == [event]
    # Closing again, or the stream being collected, records nothing more.
    await stream.aclose()
    del stream
    gc.collect()
    assert len(costs.events) == 1


async def test_async_stream_consumed_is_recorded_once(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    stream = await costledger_litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="two plus two is four", stream=True
    )
    chunks = [chunk async for chunk in stream]
    await registered.await_()
    await stream.aclose()

    assert len(chunks) > 2
    [event] = costs.events
    assert event.status == "ok"
    assert guard.settled == [event]


# --- the LiteLLM Proxy pre-call hook ----------------------------------------------------------


def _key(**fields: object) -> object:
    try:
        from litellm.proxy._types import UserAPIKeyAuth
    except ImportError as exc:  # the proxy's types need fastapi
        if IN_CI:
            pytest.fail(f"LiteLLM Proxy types unavailable: {exc}")
        pytest.skip(f"LiteLLM Proxy types unavailable: {exc}")
    return UserAPIKeyAuth(**fields)


async def test_proxy_hook_refusal_becomes_http_429(
    costs: CapturedCosts, guard: RecordingGuard
) -> None:
    guard.refuse = _budget_exceeded()
    logger = CostLedgerLogger()
    data = {"model": "gpt-4o-mini", "messages": MESSAGES, "litellm_call_id": "proxy-refused-1"}

    with pytest.raises(BudgetExceeded) as refused:
        await logger.async_pre_call_hook(
            user_api_key_dict=_key(user_id="key-owner", team_id="team-a"),
            cache=None,
            data=data,
            call_type="acompletion",
        )

    assert refused.value.status_code == 429  # type: ignore[attr-defined]
    assert guard.reserved[0]["team"] == "team-a"
    # The proxy's own mapping of a hook's exception to its HTTP answer.
    from litellm.proxy.common_utils.openai_error_payload import proxy_exception_for

    answer = proxy_exception_for(refused.value, 500)
    assert str(answer.code) == "429"
    assert "daily budget" in answer.message
    # The proxy logs the refused request as a failure: it costs nothing and is not recorded.
    await logger.async_log_failure_event(
        {
            "litellm_call_id": "proxy-refused-1",
            "standard_logging_object": {"litellm_call_id": "proxy-refused-1"},
        },
        None,
        datetime.now(),
        datetime.now(),
    )
    assert costs.events == []


async def test_proxy_hook_rate_limit_carries_retry_after(
    costs: CapturedCosts, guard: RecordingGuard
) -> None:
    guard.refuse = RateLimited(
        "10 requests per minute", limit="10/minute", key="u", retry_after=2.2
    )

    with pytest.raises(RateLimited) as refused:
        await CostLedgerLogger().async_pre_call_hook(
            user_api_key_dict=_key(user_id="u"),
            cache=None,
            data={"model": "gpt-4o-mini", "messages": MESSAGES, "litellm_call_id": "proxy-rl-1"},
            call_type="acompletion",
        )

    assert refused.value.status_code == 429  # type: ignore[attr-defined]
    assert refused.value.headers == {"retry-after": "3"}  # type: ignore[attr-defined]


async def test_proxy_hook_reservation_is_settled_by_the_request_event(
    costs: CapturedCosts, guard: RecordingGuard, registered: Sentinel
) -> None:
    logger = registered and litellm.callbacks[0]
    assert isinstance(logger, CostLedgerLogger)
    data = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_tokens": 100,
        "litellm_call_id": "proxy-ok-1",
    }

    result = await logger.async_pre_call_hook(
        user_api_key_dict=_key(user_id="key-owner", team_id="team-a"),
        cache=None,
        data=data,
        call_type="acompletion",
    )
    assert result is None
    assert _registry.in_flight("proxy-ok-1")
    # What the proxy then does with the request: LiteLLM runs it under the same call id.
    await litellm.acompletion(**data, mock_response="4")
    await registered.await_()

    [reserved] = guard.reserved
    assert (reserved["user"], reserved["team"], reserved["max_output_tokens"]) == (
        "key-owner",
        "team-a",
        100,
    )
    [event] = costs.events
    assert event.id == "proxy-ok-1"
    assert (event.user, event.team) == ("key-owner", "team-a")
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert guard.settled == [event]


async def test_proxy_hook_without_guards_does_nothing(costs: CapturedCosts) -> None:
    logger = CostLedgerLogger(Tracker(InMemoryLedger(), log="off"))
    data = {"model": "gpt-4o-mini", "messages": MESSAGES, "litellm_call_id": "proxy-free-1"}

    assert await logger.async_pre_call_hook(_key(), None, data, "acompletion") is None
    assert not _registry.in_flight("proxy-free-1")


# --- with costledger's real budget --------------------------------------------------------------


def test_real_budget_is_spent_by_the_logged_cost_and_then_refuses(sentinel: Sentinel) -> None:
    from costledger._guards import Budget

    # Each call costs 0.0000135; a worst case (prompt + 20 output tokens) is about 0.000013.
    budget = Budget("0.00002 USD", "day", per="team")
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    with capture_costs(guards=[budget]) as costs:
        costledger_litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="4",
            max_tokens=20,
            metadata={"team": "search"},
        )
        sentinel.wait()
        with pytest.raises(BudgetExceeded) as refused:
            costledger_litellm.completion(
                model="gpt-4o-mini",
                messages=MESSAGES,
                mock_response="4",
                max_tokens=20,
                metadata={"team": "search"},
            )
        # Another team has its own allowance.
        costledger_litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="4",
            max_tokens=20,
            metadata={"team": "ads"},
        )
        sentinel.wait(2)

    assert refused.value.key == "search"
    assert refused.value.spent == GPT_4O_MINI_10_IN_20_OUT
    assert [(e.team, e.cost.total) for e in costs.events] == [
        ("search", GPT_4O_MINI_10_IN_20_OUT),
        ("ads", GPT_4O_MINI_10_IN_20_OUT),
    ]
