"""An answer the provider billed and LiteLLM rejected afterwards is recorded at its price.

LiteLLM checks an answer after it came (``litellm.post_call_rules``, JSON schema
validation) and raises when it fails: its failure event then has no usage of its own, but
``kwargs["original_response"]`` is the provider's body, with the usage it billed. The error
row carries that usage and price (it was $0), and a wrapper's call is settled with it
instead of released; other failures (HTTP errors, a broken stream) are left as they were.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import litellm
import openai
import pytest
from litellm_support import RecordingGuard, Sentinel, litellm_isolated, offline, wait_until
from s15_server import LocalServer, event_stream, json_answer, server, sse

import costledger_litellm
from costledger import Pricer, Usage, UsageEvent
from costledger._sources.litellm_payload import failed_attempt_id
from costledger.testing import CapturedCosts, capture_costs
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline", "server"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

MESSAGES = [{"role": "user", "content": "Give me a number."}]
OPENAI_BODY = {
    "id": "chatcmpl-s15",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
}
# gpt-4o-mini: $0.15 in, $0.60 out per million
BILLED = Decimal("0.00045")  # 1000 * 0.15 / 1e6 + 500 * 0.60 / 1e6
ANTHROPIC_BODY = {
    "id": "msg_s15",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "x"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1000, "output_tokens": 500, "cache_read_input_tokens": 200},
}
# claude-3-5-haiku: $0.80 in, $0.08 cache read, $4.00 out per million
ANTHROPIC_BILLED = Decimal("0.002816")  # 1000 * 0.8 / 1e6 + 200 * 0.08 / 1e6 + 500 * 4 / 1e6
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "number",
        "schema": {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    },
}


@pytest.fixture
def guard() -> RecordingGuard:
    return RecordingGuard()


@pytest.fixture
def costs(guard: RecordingGuard) -> Iterator[CapturedCosts]:
    with capture_costs(guards=[guard]) as captured:
        yield captured


@pytest.fixture
def reject_all() -> Iterator[None]:
    litellm.post_call_rules = [lambda output: False]
    try:
        yield
    finally:
        litellm.post_call_rules = []


def _openai(server: LocalServer) -> dict[str, Any]:
    server.respond = lambda path, body: json_answer(OPENAI_BODY)
    return {
        "model": "openai/gpt-4o-mini",
        "messages": MESSAGES,
        "api_base": server.base + "/v1",
        "api_key": "sk-test",
    }


def _check_billed(event: UsageEvent, call_id: str, error: type[Exception]) -> None:
    assert event.status == "error"
    assert event.error_type == error.__name__
    assert event.id.startswith(failed_attempt_id(call_id, None) + ":")
    assert event.metadata["litellm_call_id"] == call_id
    assert (event.model, event.provider) == ("gpt-4o-mini", "openai")
    assert event.response_model == "gpt-4o-mini-2024-07-18"
    assert event.request_id == "chatcmpl-s15"
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 500)
    assert event.cost.total == BILLED
    assert event.reported_cost is None  # LiteLLM's 0.0 on a failure is no price
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert Pricer.default().price("gpt-4o-mini-2024-07-18", usage, provider="openai").total == (
        BILLED
    )


@pytest.mark.usefixtures("reject_all")
def test_wrapper_settles_a_call_whose_answer_a_post_call_rule_rejected(
    server: LocalServer, costs: CapturedCosts, guard: RecordingGuard
) -> None:
    with pytest.raises(litellm.APIResponseValidationError):
        costledger_litellm.completion(**_openai(server), litellm_call_id="s15-rule")
    [event] = costs.events
    _check_billed(event, "s15-rule", litellm.APIResponseValidationError)
    # the reservation settled with what was billed, not released
    assert [e.id for e in guard.settled] == [event.id]
    assert guard.released == []


def test_async_wrapper_settles_a_call_whose_answer_failed_its_json_schema(
    server: LocalServer, costs: CapturedCosts, guard: RecordingGuard
) -> None:
    async def main() -> None:
        await costledger_litellm.acompletion(
            **_openai(server),
            litellm_call_id="s15-schema",
            response_format=SCHEMA,
            enable_json_schema_validation=True,
        )

    with pytest.raises(litellm.JSONSchemaValidationError):
        asyncio.run(main())
    [event] = costs.events
    _check_billed(event, "s15-schema", litellm.JSONSchemaValidationError)
    assert [e.id for e in guard.settled] == [event.id]
    assert guard.released == []


def test_a_rejected_attempt_and_the_retry_that_answered_are_both_recorded_once(
    server: LocalServer, costs: CapturedCosts, guard: RecordingGuard
) -> None:
    verdicts = iter([False, True])
    litellm.post_call_rules = [lambda output: next(verdicts)]
    try:

        async def main() -> Any:
            return await costledger_litellm.acompletion(
                **_openai(server), litellm_call_id="s15-retry", num_retries=1
            )

        asyncio.run(main())
    finally:
        litellm.post_call_rules = []
    assert len(server.requests) == 2  # two answers billed
    events = sorted(costs.events, key=lambda e: e.status)
    assert [e.status for e in events] == ["error", "ok"]
    failed, answered = events
    _check_billed(failed, "s15-retry", litellm.APIResponseValidationError)
    assert answered.id == "s15-retry"
    assert answered.cost.total == BILLED
    assert sum(e.cost.total for e in costs.events) == 2 * BILLED
    # the answer settles the call's reservation; the rejected attempt is a row of its own
    assert [e.id for e in guard.settled] == ["s15-retry"]
    assert guard.released == []


@pytest.mark.usefixtures("reject_all")
def test_logger_alone_prices_a_rejected_answer_from_the_provider_body(
    server: LocalServer, costs: CapturedCosts
) -> None:
    server.respond = lambda path, body: json_answer(ANTHROPIC_BODY)
    sentinel = Sentinel()
    # registered twice (LiteLLM may report a failure twice): recorded once
    litellm.callbacks = [CostLedgerLogger(), CostLedgerLogger(), sentinel]
    with pytest.raises(litellm.APIResponseValidationError):
        litellm.completion(
            model="anthropic/claude-3-5-haiku-20241022",
            messages=MESSAGES,
            api_base=server.base,
            api_key="sk-test",
        )
    sentinel.wait()
    [event] = costs.events
    assert (event.status, event.model, event.provider) == (
        "error",
        "claude-3-5-haiku-20241022",
        "anthropic",
    )
    usage = event.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (1200, 200, 500)
    assert event.cost.total == ANTHROPIC_BILLED
    priced = Pricer.default().price("claude-3-5-haiku-20241022", usage, provider="anthropic")
    assert priced.total == ANTHROPIC_BILLED


@pytest.mark.parametrize("status", [400, 429, 500])
def test_an_http_error_is_still_recorded_without_usage_and_released(
    server: LocalServer, costs: CapturedCosts, guard: RecordingGuard, status: int
) -> None:
    kwargs = _openai(server)
    error = {"error": {"message": "no", "type": "invalid_request_error", "code": None}}
    server.respond = lambda path, body: json_answer(error, status)
    with pytest.raises(openai.APIError):
        costledger_litellm.completion(**kwargs, max_retries=0)
    [event] = costs.events
    assert event.status == "error"
    assert event.usage == Usage()
    assert event.cost.status == "not_priced"
    assert event.cost.total is None
    assert guard.settled == []
    assert len(guard.released) == 1


def test_a_stream_broken_midway_is_still_recorded_without_usage_and_released(
    server: LocalServer, costs: CapturedCosts, guard: RecordingGuard
) -> None:
    chunk = {
        "id": "chatcmpl-s15",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "hi"}}],
    }
    kwargs = _openai(server)
    server.respond = lambda path, body: event_stream([sse(chunk), sse(chunk), "data: {oops\n\n"])
    with pytest.raises(Exception):  # noqa: B017,PT011  # whichever LiteLLM maps it to
        for _ in costledger_litellm.completion(**kwargs, stream=True, max_retries=0):
            pass
    wait_until(lambda: len(costs.events) == 1)
    [event] = costs.events
    assert event.status == "error"
    assert event.cost.total is None
    assert guard.settled == []
    assert len(guard.released) == 1


def test_original_response_without_usage_is_ignored() -> None:
    from costledger_litellm._logger import _billed_answer

    for original in (
        None,
        "",
        "Error code: 400 - {'error': 'bad'}",
        json.dumps({"error": {"message": "bad"}}),
        "data: {}\n\n",
        b"not json",
        "null",
        "[1, 2]",
        {"error": "bad"},
        object(),
        12,
    ):
        assert _billed_answer({"original_response": original}, "openai") is None
    answer = _billed_answer({"original_response": dict(OPENAI_BODY)}, "openai")
    assert answer is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (1000, 500)


def _proxy_key() -> object:
    try:
        from litellm.proxy._types import UserAPIKeyAuth
    except ImportError as exc:  # the proxy's types need fastapi
        pytest.skip(f"LiteLLM Proxy types unavailable: {exc}")
    return UserAPIKeyAuth(team_id="search")


@pytest.mark.usefixtures("reject_all")
def test_proxy_request_whose_answer_a_post_call_rule_rejected_settles_with_its_price(
    server: LocalServer, costs: CapturedCosts, guard: RecordingGuard
) -> None:
    """The LiteLLM Proxy's path: ``async_pre_call_hook`` reserves, the answer is billed
    and rejected, the proxy calls ``async_post_call_failure_hook``: the reservation is
    settled with the billed attempt (its row, at its price), not released."""
    key = _proxy_key()
    logger = CostLedgerLogger()
    sentinel = Sentinel()
    litellm.callbacks = [logger, sentinel]
    data = {**_openai(server), "litellm_call_id": "s15-proxy"}

    async def main() -> None:
        await logger.async_pre_call_hook(key, None, data, "acompletion")
        assert len(guard.reserved) == 1
        with pytest.raises(litellm.APIResponseValidationError) as failure:
            await litellm.acompletion(**data)
        sentinel.wait()
        await logger.async_post_call_failure_hook(
            request_data=data, original_exception=failure.value, user_api_key_dict=key
        )

    asyncio.run(main())
    wait_until(lambda: len(guard.settled) + len(guard.released) == 1)
    [event] = costs.events
    _check_billed(event, "s15-proxy", litellm.APIResponseValidationError)
    assert event.team == "search"
    assert [e.id for e in guard.settled] == [event.id]
    assert guard.released == []
