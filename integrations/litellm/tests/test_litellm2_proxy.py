"""The logger's guards run by the LiteLLM Proxy's own dispatch, not by calling the hook.

``litellm.proxy.utils.ProxyLogging.pre_call_hook`` is what the proxy awaits for every
request before routing it: it walks ``litellm.callbacks`` and awaits each one's
``async_pre_call_hook``. A refusal is turned into the HTTP answer by the proxy's
``ProxyBaseLLMRequestProcessing.handle_llm_api_exception`` (what its routes call), also
run here. A request let through is then made as the proxy makes it (its
``litellm_call_id``, its metadata), and its success event settles the reservation.
"""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from typing import Any

import litellm
import pytest
from litellm_support import (
    GPT_4O_MINI_10_IN_20_OUT,
    IN_CI,
    MESSAGES,
    litellm_isolated,
    offline,
)

import costledger_litellm
from costledger import Budget, BudgetExceeded, RateLimit, RateLimited, Tracker
from costledger.testing import CapturedCosts, InMemoryLedger
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline"]

_missing = [m for m in ("backoff", "fastapi") if importlib.util.find_spec(m) is None]
if _missing:  # LiteLLM's proxy modules import them
    _reason = f"the LiteLLM Proxy's modules need {_missing} (pip install costledger-litellm[test])"
    if IN_CI:
        raise RuntimeError(_reason)
    pytest.skip(_reason, allow_module_level=True)

from litellm.caching.dual_cache import DualCache  # noqa: E402
from litellm.proxy._types import ProxyException, UserAPIKeyAuth  # noqa: E402
from litellm.proxy.common_request_processing import ProxyBaseLLMRequestProcessing  # noqa: E402
from litellm.proxy.utils import ProxyLogging  # noqa: E402

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

KEY = UserAPIKeyAuth(api_key="sk-proxy-virtual-key", user_id="u1", team_id="t1")


def _request(call_id: str, **extra: Any) -> dict[str, Any]:
    """A chat request as the proxy hands it to its pre-call hooks."""
    return {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "user": "u1",
        "max_tokens": 100,
        "litellm_call_id": call_id,
        "metadata": _proxy_metadata(),
        **extra,
    }


def _proxy_metadata() -> dict[str, Any]:
    """What the proxy puts in a request's metadata (litellm_pre_call_utils): the key's
    owner and team, the caller's own metadata as ``requester_metadata``, its headers."""
    return {
        "requester_metadata": {"feature": "chat"},
        "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "user_api_key_alias": None,
        "user_api_key_user_id": "u1",
        "user_api_key_team_id": "t1",
        "headers": {"content-type": "application/json"},
        "endpoint": "http://localhost:4000/chat/completions",
    }


def _proxy(guard: Any) -> tuple[Tracker, ProxyLogging]:
    tracker = Tracker(ledger=InMemoryLedger(), guards=[guard], log="off")
    litellm.callbacks = [CostLedgerLogger(tracker=tracker)]
    return tracker, ProxyLogging(user_api_key_cache=DualCache())


async def _answer(exc: Exception, data: dict[str, Any], proxy: ProxyLogging) -> ProxyException:
    """The proxy's HTTP answer to a request whose pre-call hook raised ``exc``."""
    with pytest.raises(ProxyException) as answered:
        await ProxyBaseLLMRequestProcessing(data=data).handle_llm_api_exception(exc, KEY, proxy)
    return answered.value


async def test_a_refusing_budget_makes_the_proxy_answer_429(costs: CapturedCosts) -> None:
    budget = Budget("0.000001", "day", per="user", name="tiny")
    tracker, proxy = _proxy(budget)
    data = _request("proxy-refused-1")

    with pytest.raises(BudgetExceeded) as refused:
        await proxy.pre_call_hook(user_api_key_dict=KEY, data=data, call_type="completion")

    assert refused.value.status_code == 429  # type: ignore[attr-defined]
    answer = await _answer(refused.value, data, proxy)
    assert answer.code == "429"
    assert answer.type == "rate_limit_error"
    assert "budget 'tiny' for user 'u1' would be exceeded" in answer.message
    [status] = budget.status(tracker)
    assert (status.key, status.spent, status.reserved) == ("u1", Decimal(0), Decimal(0))
    assert costs.events == []


async def test_a_rate_limit_refusal_carries_retry_after(costs: CapturedCosts) -> None:
    limit = RateLimit("1/minute", per="user")
    _, proxy = _proxy(limit)

    first = _request("proxy-limited-1")
    await proxy.pre_call_hook(user_api_key_dict=KEY, data=first, call_type="completion")
    second = _request("proxy-limited-2")
    with pytest.raises(RateLimited) as refused:
        await proxy.pre_call_hook(user_api_key_dict=KEY, data=second, call_type="completion")

    assert refused.value.status_code == 429  # type: ignore[attr-defined]
    retry_after = refused.value.headers["retry-after"]  # type: ignore[attr-defined]
    assert 1 <= int(retry_after) <= 60
    answer = await _answer(refused.value, second, proxy)
    assert answer.code == "429"
    assert answer.headers["retry-after"] == retry_after
    assert costs.events == []


async def test_an_allowed_request_is_settled_by_its_success_event(costs: CapturedCosts) -> None:
    budget = Budget("1 USD", "day", per="user", name="proxy-daily")
    tracker, proxy = _proxy(budget)
    data = _request("proxy-allowed-1")

    returned = await proxy.pre_call_hook(user_api_key_dict=KEY, data=data, call_type="completion")

    assert returned is data
    [held] = budget.status(tracker)
    assert held.key == "u1"
    assert held.spent == Decimal(0)
    assert held.reserved >= Decimal("0.00006")  # at least max_tokens=100 at $0.60 per million

    # the proxy then makes the call under the request's id and metadata
    response = await litellm.acompletion(
        model=data["model"],
        messages=data["messages"],
        user=data["user"],
        max_tokens=data["max_tokens"],
        litellm_call_id=data["litellm_call_id"],
        metadata=data["metadata"],
        mock_response="4",
    )
    assert await costledger_litellm.flush_callbacks(timeout=30) is True

    assert response.usage.prompt_tokens == 10
    [settled] = budget.status(tracker)
    assert (settled.spent, settled.reserved) == (GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    [event] = costs.events
    assert event.id == "proxy-allowed-1"
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT
    assert (event.user, event.team, event.feature) == ("u1", "t1", "chat")
    [stored] = tracker.ledger.events()
    assert stored.id == "proxy-allowed-1"
