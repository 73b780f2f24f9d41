"""Review fixes: a LiteLLM Proxy client sending its ``x-litellm-call-id`` again, concurrent
wrapper calls passing one ``litellm_call_id``, ``True``/``False``/NaN items of a tags list.

Real ``litellm.acompletion`` / ``Router`` (``mock_response``), costledger's real ``Budget``
and ``RateLimit``, a real SQLite ledger read back row by row.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm_support import (
    GPT_4O_10_IN_20_OUT,
    GPT_4O_MINI_10_IN_20_OUT,
    IN_CI,
    MESSAGES,
    Sentinel,
    litellm_isolated,
    offline,
)

from costledger import Budget, BudgetExceeded, RateLimit, Tracker
from costledger._ledger import Ledger
from costledger._sources.litellm_payload import attribution_values
from costledger_litellm import CostLedgerLogger
from costledger_litellm._logger import _registry

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

# What a hook reserves for a gpt-4o-mini request of MESSAGES with max_tokens=100: the
# prompt estimated at 24 tokens * $0.15/M + 100 output tokens * $0.60/M.
RESERVED_100 = Decimal("0.0000636")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def sentinel() -> Sentinel:
    return Sentinel()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", sync=True) as opened:
        yield opened


def _key(**fields: object) -> object:
    try:
        from litellm.proxy._types import UserAPIKeyAuth
    except ImportError as exc:  # the proxy's types need fastapi
        if IN_CI:
            pytest.fail(f"LiteLLM Proxy types unavailable: {exc}")
        pytest.skip(f"LiteLLM Proxy types unavailable: {exc}")
    return UserAPIKeyAuth(**fields)


def _budget(limit: str, **options: Any) -> Budget:
    """A real Budget with counters of its own (budgets of one definition share them)."""
    return Budget(limit, "day", name=f"review4-{uuid.uuid4()}", **options)


def _team_budget(budget: Budget, tracker: Tracker) -> tuple[Decimal, Decimal]:
    status = budget.status(tracker, keys=["search"])[0]
    return status.spent, status.reserved


def _router() -> litellm.Router:
    return litellm.Router(
        model_list=[
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {"model": "gpt-4o-mini", "api_key": "sk-t", "mock_response": "4"},
            }
        ]
    )


def _request(call_id: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A proxy request's data, as the hook and then the Router get it."""
    return {"model": model, "messages": MESSAGES, "max_tokens": 100, "litellm_call_id": call_id}


def _rows(ledger: Ledger) -> list[tuple[str, str, Decimal | None, str | None]]:
    return sorted((e.id, e.status, e.total_cost, e.team) for e in ledger.events())


# --- 1. a proxy client sending its x-litellm-call-id again ------------------------------------


async def test_proxy_request_resent_under_its_call_id_is_recorded_and_settled(
    ledger: Ledger, sentinel: Sentinel
) -> None:
    """A client retries after a timeout with the same x-litellm-call-id, once the first
    request has answered: both are billed, recorded and settled."""
    budget = _budget("10 USD", per="team")
    tracker = Tracker(ledger, guards=[budget], log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    router, key = _router(), _key(team_id="search")

    first = _request("client-req-7")
    await logger.async_pre_call_hook(key, None, first, "acompletion")
    await router.acompletion(**first)
    await sentinel.await_(1)
    assert _team_budget(budget, tracker) == (GPT_4O_MINI_10_IN_20_OUT, Decimal(0))

    second = _request("client-req-7")
    await logger.async_pre_call_hook(key, None, second, "acompletion")
    assert _registry.in_flight("client-req-7")
    assert _team_budget(budget, tracker) == (GPT_4O_MINI_10_IN_20_OUT, RESERVED_100)
    await router.acompletion(**second)
    await sentinel.await_(2)

    assert [kwargs["litellm_call_id"] for _, kwargs, *_ in sentinel.seen] == ["client-req-7"] * 2
    assert _rows(ledger) == [
        ("client-req-7", "ok", GPT_4O_MINI_10_IN_20_OUT, "search"),
        ("client-req-7:2", "ok", GPT_4O_MINI_10_IN_20_OUT, "search"),
    ]
    assert _team_budget(budget, tracker) == (2 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    assert not _registry.in_flight("client-req-7")

    # LiteLLM's duplicate reports of either success add nothing, and settle nothing twice
    for _, kwargs, response, start, end in list(sentinel.seen):
        await logger.async_log_success_event(kwargs, response, start, end)
    assert len(_rows(ledger)) == 2
    assert _team_budget(budget, tracker) == (2 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))


async def test_proxy_requests_under_one_call_id_at_once_are_each_recorded(
    ledger: Ledger, sentinel: Sentinel
) -> None:
    """The resent request arrives while the first still runs: both are open at once."""
    budget = _budget("10 USD", per="team")
    tracker = Tracker(ledger, guards=[budget], log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    router, key = _router(), _key(team_id="search")

    requests = [_request("client-req-8"), _request("client-req-8"), _request("client-req-8")]
    for data in requests:
        await logger.async_pre_call_hook(key, None, data, "acompletion")
    assert _team_budget(budget, tracker) == (Decimal(0), 3 * RESERVED_100)
    await asyncio.gather(*(router.acompletion(**data) for data in requests))
    await sentinel.await_(3)

    assert _rows(ledger) == [
        ("client-req-8", "ok", GPT_4O_MINI_10_IN_20_OUT, "search"),
        ("client-req-8:2", "ok", GPT_4O_MINI_10_IN_20_OUT, "search"),
        ("client-req-8:3", "ok", GPT_4O_MINI_10_IN_20_OUT, "search"),
    ]
    assert _team_budget(budget, tracker) == (3 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    assert not _registry.in_flight("client-req-8")


async def test_a_late_duplicate_of_the_first_success_does_not_close_the_resent_request(
    ledger: Ledger, sentinel: Sentinel
) -> None:
    budget = _budget("10 USD", per="team")
    tracker = Tracker(ledger, guards=[budget], log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    router, key = _router(), _key(team_id="search")

    first = _request("client-req-9")
    await logger.async_pre_call_hook(key, None, first, "acompletion")
    await router.acompletion(**first)
    await sentinel.await_(1)
    second = _request("client-req-9")
    await logger.async_pre_call_hook(key, None, second, "acompletion")

    # LiteLLM reports the first success again (LiteLLM #5118): a duplicate, not the answer
    # to the second request
    _, kwargs, response, start, end = sentinel.seen[0]
    await logger.async_log_success_event(kwargs, response, start, end)
    assert _rows(ledger) == [("client-req-9", "ok", GPT_4O_MINI_10_IN_20_OUT, "search")]
    assert _registry.in_flight("client-req-9")
    assert _team_budget(budget, tracker) == (GPT_4O_MINI_10_IN_20_OUT, RESERVED_100)

    await router.acompletion(**second)
    await sentinel.await_(2)
    assert [row[0] for row in _rows(ledger)] == ["client-req-9", "client-req-9:2"]
    assert _team_budget(budget, tracker) == (2 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))


async def test_the_resent_requests_failed_attempts_are_recorded(
    ledger: Ledger, sentinel: Sentinel
) -> None:
    """The second request under the id retries and falls back: its failed attempts are rows
    of their own, as the first request's would be."""
    budget = _budget("10 USD", per="team")
    tracker = Tracker(ledger, guards=[budget], log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    key = _key(team_id="search")
    router = litellm.Router(
        model_list=[
            {
                "model_name": "main",
                "litellm_params": {
                    "model": "gpt-4o-mini",
                    "api_key": "sk-t",
                    "mock_response": Exception("main is down"),
                },
            },
            {
                "model_name": "backup",
                "litellm_params": {"model": "gpt-4o", "api_key": "sk-t", "mock_response": "4"},
            },
        ],
        fallbacks=[{"main": ["backup"]}],
        num_retries=0,
    )

    first = _request("client-req-10", model="backup")
    await logger.async_pre_call_hook(key, None, first, "acompletion")
    await router.acompletion(**first)
    await sentinel.await_(1)
    second = _request("client-req-10", model="main")
    await logger.async_pre_call_hook(key, None, second, "acompletion")
    await router.acompletion(**second)
    await sentinel.await_(3)

    [failure] = [kwargs for kind, kwargs, *_ in sentinel.seen if kind == "failure"]
    started_us = round(failure["standard_logging_object"]["startTime"] * 1_000_000)
    attempt_id = f"client-req-10:failed:{started_us}"
    assert _rows(ledger) == [
        ("client-req-10", "ok", GPT_4O_10_IN_20_OUT, "search"),
        ("client-req-10:2", "ok", GPT_4O_10_IN_20_OUT, "search"),
        (attempt_id, "error", None, "search"),
    ]
    assert ledger.get(attempt_id).metadata["litellm_call_id"] == "client-req-10"
    assert _team_budget(budget, tracker) == (2 * GPT_4O_10_IN_20_OUT, Decimal(0))
    assert not _registry.in_flight("client-req-10")


async def test_a_request_refused_under_the_id_of_a_running_one_leaves_that_one_open(
    ledger: Ledger, sentinel: Sentinel
) -> None:
    # room for one request's worst case, not two
    budget = _budget("0.0001 USD", per="team")
    tracker = Tracker(ledger, guards=[budget], log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    router, key = _router(), _key(team_id="search")

    running = _request("client-req-11")
    await logger.async_pre_call_hook(key, None, running, "acompletion")
    resent = _request("client-req-11")
    with pytest.raises(BudgetExceeded) as refused:
        await logger.async_pre_call_hook(key, None, resent, "acompletion")
    # what the proxy then does with the refused request: its failure hook, and its log of
    # the failure (a proxy-only error, reported with the refusal as its exception)
    assert (
        await logger.async_post_call_failure_hook(
            request_data=resent, original_exception=refused.value, user_api_key_dict=key
        )
        is None
    )
    slo = {"litellm_call_id": "client-req-11", "startTime": time.time()}
    proxy_log = {"litellm_call_id": "client-req-11", "standard_logging_object": slo}
    await logger.async_log_failure_event(
        {**proxy_log, "exception": refused.value},
        None,
        None,
        None,
    )
    assert _rows(ledger) == []
    assert _registry.in_flight("client-req-11")
    assert _team_budget(budget, tracker) == (Decimal(0), RESERVED_100)

    await router.acompletion(**running)
    await sentinel.await_(1)
    assert _rows(ledger) == [("client-req-11", "ok", GPT_4O_MINI_10_IN_20_OUT, "search")]
    assert _team_budget(budget, tracker) == (GPT_4O_MINI_10_IN_20_OUT, Decimal(0))

    # the client tries again once there is room: recorded under an id of its own
    again = _request("client-req-11")
    await logger.async_pre_call_hook(key, None, again, "acompletion")
    await router.acompletion(**again)
    await sentinel.await_(2)
    assert [row[0] for row in _rows(ledger)] == ["client-req-11", "client-req-11:2"]
    assert _team_budget(budget, tracker) == (2 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    assert not _registry.in_flight("client-req-11")


# --- 2. concurrent wrapper calls passing the same litellm_call_id -------------------------------


async def test_concurrent_async_wrapper_calls_sharing_a_call_id_are_each_recorded(
    ledger: Ledger, sentinel: Sentinel
) -> None:
    """The calls wait on a rate limit between the id check and the registration: each
    must still get an id of its own."""
    budget = _budget("1 USD")
    limit = RateLimit("2/second", wait=10, name=f"review4-rl-{uuid.uuid4()}")
    tracker = Tracker(ledger, guards=[limit, budget], log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50, "mock_response": "4"}

    await logger.acompletion(**request)
    await logger.acompletion(**request)  # the rate limit is used up: the next ones wait
    responses = await asyncio.gather(
        *(logger.acompletion(**request, litellm_call_id="req-99") for _ in range(3))
    )
    await sentinel.await_(5)

    ids = [response._hidden_params["litellm_call_id"] for response in responses]
    assert ids.count("req-99") == 1
    assert len(set(ids)) == 3
    rows = _rows(ledger)
    assert len(rows) == 5
    assert {row[0] for row in rows} >= set(ids)
    assert [(status, cost) for _, status, cost, _ in rows] == [("ok", GPT_4O_MINI_10_IN_20_OUT)] * 5
    status = budget.status(tracker)[0]
    assert (status.spent, status.reserved) == (5 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    assert not any(_registry.in_flight(call_id) for call_id in ids)

    # a call cancelled while it waits gives its id back
    slow = RateLimit("1/minute", wait=120, name=f"review4-rl-{uuid.uuid4()}")
    waiter = CostLedgerLogger(Tracker(ledger, guards=[slow], log="off"))
    await waiter.acompletion(**request)
    waiting = asyncio.ensure_future(waiter.acompletion(**request, litellm_call_id="req-100"))
    await asyncio.sleep(0.2)
    assert _registry.known("req-100")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not _registry.known("req-100")


def test_concurrent_sync_wrapper_calls_sharing_a_call_id_are_each_recorded(
    ledger: Ledger, sentinel: Sentinel
) -> None:
    budget = _budget("1 USD")
    limit = RateLimit("2/second", wait=10, name=f"review4-rl-{uuid.uuid4()}")
    tracker = Tracker(ledger, guards=[limit, budget], log="off")
    logger = CostLedgerLogger(tracker)
    litellm.callbacks = [logger, sentinel]
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50, "mock_response": "4"}

    logger.completion(**request)
    logger.completion(**request)
    ids: list[str] = []

    def call() -> None:
        response = logger.completion(**request, litellm_call_id="req-199")
        ids.append(response._hidden_params["litellm_call_id"])

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    sentinel.wait(5)

    assert ids.count("req-199") == 1
    assert len(set(ids)) == 3
    rows = _rows(ledger)
    assert len(rows) == 5
    assert {row[0] for row in rows} >= set(ids)
    assert [(status, cost) for _, status, cost, _ in rows] == [("ok", GPT_4O_MINI_10_IN_20_OUT)] * 5
    status = budget.status(tracker)[0]
    assert (status.spent, status.reserved) == (5 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))

    # a refused call gives its id back: a later call may use it
    refusing = CostLedgerLogger(Tracker(ledger, guards=[_budget("0.00001 USD")], log="off"))
    with pytest.raises(BudgetExceeded):
        refusing.completion(**request, litellm_call_id="req-200")
    assert not _registry.known("req-200")
    response = logger.completion(**request, litellm_call_id="req-200")
    assert response._hidden_params["litellm_call_id"] == "req-200"


# --- 3. True, False and NaN items of a tags list ------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "kept"),
    [
        (["beta", True, 3, False], ["beta", "3"]),
        (
            ("x", math.nan, 2.5, math.inf, Decimal("NaN"), Decimal("1.10"), Decimal("-Infinity")),
            ["x", "2.5", "1.10"],
        ),
        ({"solo", False}, ["solo"]),
    ],
)
def test_a_bool_or_nan_item_of_a_tags_list_is_left_out(tags: Any, kept: list[str]) -> None:
    assert attribution_values({"tags": tags}, None)["tags"] == kept
    assert attribution_values({"costledger": {"tags": tags}}, None)["tags"] == kept
    if isinstance(tags, (list, tuple)):  # LiteLLM's logged request_tags: a list
        assert attribution_values(None, None, {"request_tags": tags})["tags"] == kept


def test_a_bool_or_nan_tag_is_left_out_live_and_ingested(
    tmp_path: Path, ledger: Ledger, sentinel: Sentinel
) -> None:
    from costledger._ingest import ingest

    litellm.callbacks = [CostLedgerLogger(Tracker(ledger, log="off")), sentinel]
    litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="4",
        litellm_call_id="tags-1",
        metadata={"tags": ["beta", True, 3, math.nan, False]},
    )
    sentinel.wait()
    event = ledger.get("tags-1")
    assert event is not None
    assert (list(event.tags), event.total_cost) == (["beta", "3"], GPT_4O_MINI_10_IN_20_OUT)

    _, kwargs, *_ = sentinel.seen[0]
    payloads = tmp_path / "litellm.jsonl"
    payloads.write_text(json.dumps(kwargs["standard_logging_object"], default=str) + "\n")
    url = f"sqlite:///{tmp_path / 'ingested.db'}"
    result = ingest(payloads, ledger=url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (1, 0)
    with Ledger(url, sync=True) as ingested:
        [row] = list(ingested.events())
    assert (row.id, list(row.tags), row.total_cost) == (
        "tags-1",
        ["beta", "3"],
        GPT_4O_MINI_10_IN_20_OUT,
    )
