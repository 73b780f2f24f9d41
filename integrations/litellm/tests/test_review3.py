"""Review fixes: retries and fallbacks under one ``litellm_call_id``, reused call ids, odd
tags, ``n`` choices, the proxy hook's metadata, provider-prefixed model names.

Real ``litellm.completion`` / ``acompletion`` (``mock_response``, or a local
OpenAI-compatible server on 127.0.0.1), a real ``Router``, costledger's real ``Budget``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import litellm
import pytest
from litellm_support import (
    GPT_4O_10_IN_20_OUT,
    GPT_4O_MINI_10_IN_20_OUT,
    IN_CI,
    MESSAGES,
    RecordingGuard,
    Sentinel,
    gpt_4o_mini_cost,
    litellm_isolated,
    offline,
)

import costledger_litellm
from costledger import Budget, BudgetExceeded, Tracker, get_tracker
from costledger._ledger import Ledger
from costledger.testing import CapturedCosts, capture_costs
from costledger_litellm import CostLedgerLogger
from costledger_litellm._logger import _registry

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

SERVER_USAGE_COST = gpt_4o_mini_cost(1000, 2000)  # what the local server's answers cost


# --- a local OpenAI-compatible server ---------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """``/fail-*/v1``: always 500. ``/flaky-*/v1``: 500 on the 1st, 3rd... request of that
    path, 200 otherwise. ``/ok/v1``: 200. ``/midfail/v1``: a stream cut after two chunks."""

    protocol_version = "HTTP/1.1"
    counts: ClassVar[dict[str, int]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        mode = self.path.split("/")[1]
        with self.lock:
            count = self.counts[mode] = self.counts.get(mode, 0) + 1
        if mode.startswith("fail") or (mode.startswith("flaky") and count % 2 == 1):
            self._send(500, {"error": {"message": "server exploded", "type": "server_error"}})
            return
        model = "gpt-4o-mini-2024-07-18"
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            base = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1}
            for word in ("Hello", " there", " friend"):
                if mode == "midfail" and word == " friend":
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                delta = {"role": "assistant", "content": word}
                chunk = {**base, "model": model, "choices": [{"index": 0, "delta": delta}]}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            return
        self._send(
            200,
            {
                "id": f"chatcmpl-{mode}-{count}",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "4"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000},
            },
        )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def sentinel() -> Sentinel:
    return Sentinel()


@pytest.fixture
def guard() -> RecordingGuard:
    return RecordingGuard()


@pytest.fixture
def costs() -> Iterator[CapturedCosts]:
    with capture_costs() as captured:
        yield captured


def _key(**fields: object) -> object:
    try:
        from litellm.proxy._types import UserAPIKeyAuth
    except ImportError as exc:  # the proxy's types need fastapi
        if IN_CI:
            pytest.fail(f"LiteLLM Proxy types unavailable: {exc}")
        pytest.skip(f"LiteLLM Proxy types unavailable: {exc}")
    return UserAPIKeyAuth(**fields)


def _fallback_router(**options: Any) -> litellm.Router:
    """``main`` always fails (tried twice: one retry), ``backup`` answers."""
    return litellm.Router(
        model_list=[
            {
                "model_name": "main",
                "litellm_params": {
                    "model": "gpt-4o-mini",
                    "api_key": "sk-test",
                    "mock_response": Exception("main is down"),
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
        **options,
    )


def _attempt_ids(sentinel: Sentinel, call_id: str) -> list[str]:
    """The ids the failed attempts LiteLLM reported must be recorded under."""
    return [
        f"{call_id}:failed:{round(kwargs['standard_logging_object']['startTime'] * 1_000_000)}"
        for kind, kwargs, *_ in sentinel.seen
        if kind == "failure"
    ]


def _budget(limit: str, **options: Any) -> Budget:
    """A real Budget with counters of its own (budgets of one definition share them)."""
    return Budget(limit, "day", name=f"review3-{uuid.uuid4()}", **options)


def _budget_status(budget: Budget, key: str | None = None) -> Any:
    return budget.status(get_tracker(), keys=None if key is None else [key])[0]


# --- 1. retries and fallbacks under one litellm_call_id ----------------------------------------


def test_router_fallback_under_one_call_id_records_the_billed_success(
    costs: CapturedCosts, sentinel: Sentinel
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    response = _fallback_router().completion(
        model="main", messages=MESSAGES, litellm_call_id="rt-sync-1"
    )

    assert response.choices[0].message.content == "4"
    sentinel.wait(3)
    first, second, success = costs.events
    assert [first.id, second.id] == _attempt_ids(sentinel, "rt-sync-1")
    assert first.id != second.id
    for failed in (first, second):
        assert failed.status == "error"
        assert failed.cost.total is None
        assert failed.metadata["litellm_call_id"] == "rt-sync-1"
        assert failed.model == "gpt-4o-mini"
    assert success.id == "rt-sync-1"
    assert (success.status, success.model) == ("ok", "gpt-4o")
    assert success.cost.total == GPT_4O_10_IN_20_OUT
    assert costs.total == GPT_4O_10_IN_20_OUT


async def test_router_retry_against_a_server_records_the_retry_that_answered(
    costs: CapturedCosts, sentinel: Sentinel, server: str
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    router = litellm.Router(
        model_list=[
            {
                "model_name": "chat",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"{server}/flaky-retry/v1",
                    "api_key": "sk-test",
                },
            }
        ],
        num_retries=2,
        retry_after=0,
    )

    response = await router.acompletion(
        model="chat", messages=MESSAGES, litellm_call_id="rt-retry-1"
    )

    assert response.usage.completion_tokens == 2000
    await sentinel.await_(2)
    failed, success = costs.events
    assert failed.id == _attempt_ids(sentinel, "rt-retry-1")[0]
    assert failed.status == "error"
    assert success.id == "rt-retry-1"
    assert success.cost.total == SERVER_USAGE_COST == Decimal("0.00135")
    assert success.usage.input_tokens == 1000


async def test_proxy_hook_reservation_is_settled_by_the_fallback_that_answered(
    sentinel: Sentinel,
) -> None:
    logger = CostLedgerLogger()
    litellm.callbacks = [logger, sentinel]
    budget = _budget("10 USD", per="team")
    with capture_costs(guards=[budget]) as costs:
        # what the proxy does: the pre-call hook, then the Router with the same data
        data = {"model": "main", "messages": MESSAGES, "max_tokens": 100}
        data["litellm_call_id"] = "proxy-fb-1"
        await logger.async_pre_call_hook(_key(team_id="search"), None, data, "acompletion")
        assert _budget_status(budget, "search").reserved > 0
        await _fallback_router().acompletion(**data)
        await sentinel.await_(3)
        status = _budget_status(budget, "search")

    assert (status.spent, status.reserved) == (GPT_4O_10_IN_20_OUT, Decimal(0))
    assert [(e.status, e.team) for e in costs.events] == [
        ("error", "search"),
        ("error", "search"),
        ("ok", "search"),
    ]
    assert [e.id for e in costs.events] == [*_attempt_ids(sentinel, "proxy-fb-1"), "proxy-fb-1"]
    assert costs.events[2].model == "gpt-4o"  # the deployment that answered, not the group
    assert not _registry.in_flight("proxy-fb-1")


async def test_async_wrapper_with_sdk_fallbacks_settles_on_the_success(
    guard: RecordingGuard, sentinel: Sentinel
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    with capture_costs(guards=[guard]) as costs:
        response = await costledger_litellm.acompletion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=50,
            mock_response=Exception("primary down"),
            fallbacks=[{"model": "gpt-4o", "mock_response": "4"}],
        )
        await sentinel.await_(2)

    call_id = response._hidden_params["litellm_call_id"]
    [reserved] = guard.reserved
    assert reserved["id"] == call_id
    failed, success = costs.events
    assert (failed.status, failed.metadata["litellm_call_id"]) == ("error", call_id)
    # (LiteLLM reuses one logging record for the fallback: its failure's kwargs now show
    # the success's start, so the id is checked by its form)
    assert failed.id.startswith(f"{call_id}:failed:")
    assert (success.id, success.status) == (call_id, "ok")
    assert success.cost.total == GPT_4O_10_IN_20_OUT
    assert guard.settled == [success]
    assert guard.released == []


async def test_proxy_request_whose_attempts_all_fail_is_released_by_the_failure_hook(
    sentinel: Sentinel,
) -> None:
    logger = CostLedgerLogger()
    litellm.callbacks = [logger, sentinel]
    budget = _budget("10 USD", per="team")
    key = _key(team_id="search")
    router = litellm.Router(
        model_list=[
            {
                "model_name": "main",
                "litellm_params": {
                    "model": "gpt-4o-mini",
                    "api_key": "sk-test",
                    "mock_response": Exception("down"),
                },
            }
        ],
        num_retries=0,
    )
    with capture_costs(guards=[budget]) as costs:
        data = {"model": "main", "messages": MESSAGES, "max_tokens": 100}
        data["litellm_call_id"] = "proxy-fail-1"
        await logger.async_pre_call_hook(key, None, data, "acompletion")
        with pytest.raises(litellm.InternalServerError) as failure:
            await router.acompletion(**data)
        await sentinel.await_(1)
        # a failed attempt leaves the request open: a retry or fallback may still answer
        assert _registry.in_flight("proxy-fail-1")
        assert _budget_status(budget, "search").reserved > 0

        # what the proxy calls with the request's failure
        result = await logger.async_post_call_failure_hook(
            request_data=data,
            original_exception=failure.value,
            user_api_key_dict=key,
            traceback_str="Traceback ...",
        )
        status = _budget_status(budget, "search")

    assert result is None
    assert (status.spent, status.reserved) == (Decimal(0), Decimal(0))
    assert not _registry.in_flight("proxy-fail-1")
    [event] = costs.events
    assert event.id == _attempt_ids(sentinel, "proxy-fail-1")[0]
    assert (event.status, event.team, event.cost.total) == ("error", "search", None)


async def test_proxy_request_rejected_before_any_model_call_is_released(
    costs: CapturedCosts,
) -> None:
    logger = CostLedgerLogger()
    litellm.callbacks = [logger]
    budget = _budget("10 USD", per="team")
    key = _key(team_id="search")
    with capture_costs(guards=[budget]) as costs:
        data = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 100}
        data["litellm_call_id"] = "proxy-rejected-1"
        await logger.async_pre_call_hook(key, None, data, "acompletion")
        assert _budget_status(budget, "search").reserved > 0
        # another hook (a guardrail, a content filter) rejects the request: no LLM call
        await logger.async_post_call_failure_hook(
            request_data=data, original_exception=ValueError("blocked"), user_api_key_dict=key
        )
        status = _budget_status(budget, "search")

    assert (status.spent, status.reserved) == (Decimal(0), Decimal(0))
    assert not _registry.in_flight("proxy-rejected-1")
    assert costs.events == []


def test_stream_failing_midway_releases_its_reservation(sentinel: Sentinel, server: str) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    budget = _budget("10 USD")
    with capture_costs(guards=[budget]) as costs:
        stream = costledger_litellm.completion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_base=f"{server}/midfail/v1",
            api_key="sk-test",
            stream=True,
            max_tokens=100,
        )
        with pytest.raises(Exception, match=r"(?i)stream"):
            for _ in stream:
                pass
        sentinel.wait(1)
        status = _budget_status(budget)
        [event] = costs.events

    assert not _registry.in_flight(stream.litellm_call_id)
    assert event.status == "error"
    assert event.metadata["litellm_call_id"] == stream.litellm_call_id
    # what was received before the cut is LiteLLM's usage of the failure, counted once
    assert status.reserved == Decimal(0)
    assert status.spent == event.cost.total


def test_bare_logger_failure_then_success_and_idempotent_replay(
    tmp_path: Path, sentinel: Sentinel
) -> None:
    """Both rows are kept (a failed attempt, no cost; the success); recording the same
    LiteLLM reports again, in this process or another, or ingesting them, adds nothing."""
    from costledger._ingest import ingest

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    payloads = tmp_path / "litellm.jsonl"
    with Ledger(url, sync=True) as ledger:
        logger = CostLedgerLogger(Tracker(ledger, log="off"))
        litellm.callbacks = [logger, sentinel]
        _fallback_router().completion(model="main", messages=MESSAGES, litellm_call_id="bare-1")
        sentinel.wait(3)
        assert len(list(ledger.events())) == 3

        for kind, kwargs, response, start, end in list(sentinel.seen):
            on_event = logger.log_failure_event if kind == "failure" else logger.log_success_event
            on_event(kwargs, response, start, end)  # a duplicate callback: dropped
            _registry.clear()  # another process, which has not seen the ids
            on_event(kwargs, response, start, end)
        rows = {e.id: e for e in ledger.events()}
        payloads.write_text(
            "".join(
                json.dumps(kwargs["standard_logging_object"], default=str) + "\n"
                for _, kwargs, *_ in sentinel.seen
            )
        )

    assert set(rows) == {*_attempt_ids(sentinel, "bare-1"), "bare-1"}
    assert sorted((e.status, e.total_cost) for e in rows.values()) == [
        ("error", None),
        ("error", None),
        ("ok", GPT_4O_10_IN_20_OUT),
    ]
    result = ingest(payloads, ledger=url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.duplicates, result.rejected) == (0, 3, 0)
    with Ledger(url, sync=True) as ledger:
        assert {e.id for e in ledger.events()} == set(rows)


# --- 2. a wrapper call reusing a recorded litellm_call_id --------------------------------------


def test_wrapper_reusing_a_recorded_call_id_is_recorded_and_settled(sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    budget = _budget("1 USD")
    with capture_costs(guards=[budget]) as costs:
        for count in (1, 2):
            costledger_litellm.completion(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=500,
                mock_response="4",
                litellm_call_id="req-42",
            )
            sentinel.wait(count)
        status = _budget_status(budget)

    first, second = costs.events
    assert first.id == "req-42"
    assert second.id not in ("req-42", "")  # a fresh id: a duplicate's would be dropped
    assert [e.cost.total for e in costs.events] == [GPT_4O_MINI_10_IN_20_OUT] * 2
    assert (status.spent, status.reserved) == (2 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    assert not _registry.in_flight("req-42")
    assert not _registry.in_flight(second.id)


def test_wrapper_retrying_a_failed_call_under_its_own_id(sentinel: Sentinel) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    budget = _budget("1 USD")
    with capture_costs(guards=[budget]) as costs:
        with pytest.raises(litellm.InternalServerError):
            costledger_litellm.completion(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=500,
                mock_response=Exception("provider hiccup"),
                litellm_call_id="req-43",
            )
        costledger_litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=500,
            mock_response="4",
            litellm_call_id="req-43",
        )
        sentinel.wait(2)
        status = _budget_status(budget)

    failed, success = costs.events
    assert failed.id == _attempt_ids(sentinel, "req-43")[0]
    assert (failed.status, success.id, success.status) == ("error", "req-43", "ok")
    assert (status.spent, status.reserved) == (GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    assert not _registry.in_flight("req-43")


# --- 3. odd tags, and costledger's own failures at the start of a call -------------------------


@pytest.mark.parametrize(
    ("metadata", "tags"),
    [
        ({"costledger": {"tags": 5}}, ()),
        ({"costledger": {"tags": True}}, ()),
        ({"tags": 7.5}, ()),
        ({"costledger": {"tags": ["a", 1, None, {"x": 1}]}}, ("a", "1")),
        ({"costledger": {"tags": "solo"}}, ("solo",)),
    ],
)
def test_odd_tags_do_not_lose_the_call(
    costs: CapturedCosts, sentinel: Sentinel, metadata: dict[str, Any], tags: tuple[str, ...]
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4", metadata=metadata)

    sentinel.wait()
    [event] = costs.events
    assert event.tags == tags
    assert event.cost.total == GPT_4O_MINI_10_IN_20_OUT


async def test_odd_tags_never_raise_into_the_wrapper_or_the_proxy(sentinel: Sentinel) -> None:
    logger = CostLedgerLogger()
    litellm.callbacks = [logger, sentinel]
    metadata = {"costledger": {"tags": 5}}
    with capture_costs(guards=[_budget("1 USD")]) as costs:
        response = costledger_litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="4", metadata=metadata
        )
        data = {"model": "gpt-4o-mini", "messages": MESSAGES, "metadata": metadata}
        data["litellm_call_id"] = "odd-tags-proxy"
        assert await logger.async_pre_call_hook(_key(), None, data, "acompletion") is None
        assert _registry.in_flight("odd-tags-proxy")
        await litellm.acompletion(**data, mock_response="4")
        await sentinel.await_(2)

    assert response.choices[0].message.content == "4"
    assert [(e.tags, e.cost.total) for e in costs.events] == [((), GPT_4O_MINI_10_IN_20_OUT)] * 2


async def test_a_failing_tracker_start_lets_the_call_go_ahead(
    sentinel: Sentinel, monkeypatch: pytest.MonkeyPatch
) -> None:
    litellm.callbacks = [CostLedgerLogger(), sentinel]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("costledger's own bug")

    async def abroken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("costledger's own bug")

    with capture_costs(guards=[_budget("1 USD")]) as costs:
        tracker = get_tracker()
        monkeypatch.setattr(tracker, "start", broken)
        monkeypatch.setattr(tracker, "astart", abroken)
        sync = costledger_litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="4"
        )
        asynchronous = await costledger_litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="4"
        )
        data = {"model": "gpt-4o-mini", "messages": MESSAGES, "litellm_call_id": "broken-hook"}
        assert (
            await CostLedgerLogger().async_pre_call_hook(_key(), None, data, "acompletion") is None
        )
        await sentinel.await_(2)

    assert sync.choices[0].message.content == asynchronous.choices[0].message.content == "4"
    assert [e.cost.total for e in costs.events] == [GPT_4O_MINI_10_IN_20_OUT] * 2
    assert not _registry.in_flight("broken-hook")


# --- 4. n choices ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "per_choice", "choices"),
    [
        ({"max_tokens": 1000, "n": 8}, 1000, 8),
        ({"max_completion_tokens": 100, "n": 2, "best_of": 5}, 100, 5),
        ({"max_tokens": 300, "n": 1}, 300, 1),
        # no limit: the guard's estimate takes the model's (or its own default) per choice
        ({"n": 3}, None, 3),
        ({}, None, 1),
    ],
)
def test_the_reservation_counts_every_choice(
    guard: RecordingGuard, options: dict[str, Any], per_choice: int | None, choices: int
) -> None:
    with capture_costs(guards=[guard]):
        costledger_litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="4", **options
        )

    [reserved] = guard.reserved
    assert (reserved["max_output_tokens"], reserved["choices"]) == (per_choice, choices)


def test_hard_budget_refuses_a_call_whose_choices_would_exceed_it() -> None:
    # one choice of 1000 tokens is about $0.0006, eight are about $0.0048
    budget = _budget("0.002 USD")
    with capture_costs(guards=[budget]) as costs:
        with pytest.raises(BudgetExceeded):
            costledger_litellm.completion(
                model="gpt-4o-mini", messages=MESSAGES, mock_response="4", max_tokens=1000, n=8
            )
        status = _budget_status(budget)
    assert costs.events == []
    assert (status.spent, status.reserved) == (Decimal(0), Decimal(0))


# --- 5. the proxy hook's attribution -----------------------------------------------------------


def _proxy_metadata() -> dict[str, Any]:
    # shaped like what LiteLLM Proxy's add_litellm_data_to_request puts in data["metadata"]
    return {
        "feature": "chat",
        "requester_metadata": {"feature": "chat", "ticket": "T-1"},
        "user_api_key_hash": "hash123",
        "user_api_key_user_id": "owner-1",
        "user_api_key_team_id": "team-a",
        "user_api_end_user_max_budget": 25.0,
        "disable_global_guardrails": False,
        "agent_id": "agent-7",
        "guardrail_config": "x",
        "caller_tags": "t",
    }


@pytest.mark.parametrize("guarded", [False, True])
async def test_proxy_hook_keeps_the_proxy_internals_out_of_the_event(
    sentinel: Sentinel, guarded: bool
) -> None:
    logger = CostLedgerLogger()
    litellm.callbacks = [logger, sentinel]
    guards = [_budget("10 USD")] if guarded else []
    with capture_costs(guards=guards) as costs:
        data = {"model": "gpt-4o-mini", "messages": MESSAGES, "metadata": _proxy_metadata()}
        data["litellm_call_id"] = f"proxy-md-{guarded}"
        key = _key(user_id="owner-1", team_id="team-a")
        await logger.async_pre_call_hook(key, None, data, "acompletion")
        await litellm.acompletion(**data, mock_response="4")
        await sentinel.await_()

    [event] = costs.events
    assert (event.user, event.team, event.feature) == ("owner-1", "team-a", "chat")
    assert dict(event.metadata) == {"ticket": "T-1"}


# --- 6. one model, one name --------------------------------------------------------------------


def test_provider_prefixed_models_are_recorded_under_their_bare_name(
    costs: CapturedCosts, sentinel: Sentinel, tmp_path: Path
) -> None:
    for module in ("fastapi", "soundfile"):  # LiteLLM's cache-hit path imports them
        pytest.importorskip(module)
    from litellm.caching.caching import Cache

    from costledger._ingest import ingest

    litellm.cache = Cache(type="local")
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    router = litellm.Router(
        model_list=[
            {
                "model_name": "chat",
                "litellm_params": {"model": "openai/gpt-4o-mini", "mock_response": "4"},
            }
        ]
    )
    question = [{"role": "user", "content": "a question asked twice"}]
    litellm.completion(model="gpt-4o-mini", messages=question, mock_response="4", caching=True)
    sentinel.wait(1)
    litellm.completion(model="gpt-4o-mini", messages=question, mock_response="4", caching=True)
    sentinel.wait(2)
    router.completion(model="chat", messages=MESSAGES)
    sentinel.wait(3)
    litellm.completion(
        model="bedrock/anthropic.claude-3-haiku-20240307-v1:0", messages=MESSAGES, mock_response="4"
    )
    sentinel.wait(4)

    assert [(e.model, e.provider, e.cache_hit) for e in costs.events] == [
        ("gpt-4o-mini", "openai", False),
        ("gpt-4o-mini", "openai", True),
        ("gpt-4o-mini", "openai", False),
        ("anthropic.claude-3-haiku-20240307-v1:0", "bedrock", False),
    ]
    # the same payloads, ingested, give the same names
    payloads = tmp_path / "litellm.jsonl"
    payloads.write_text(
        "".join(
            json.dumps(kwargs["standard_logging_object"], default=str) + "\n"
            for _, kwargs, *_ in sentinel.seen
        )
    )
    url = f"sqlite:///{tmp_path / 'ingested.db'}"
    assert ingest(payloads, ledger=url, checkpoint_dir=tmp_path).accepted == 4
    with Ledger(url, sync=True) as ledger:
        ingested = {e.id: e.model for e in ledger.events()}
    assert ingested == {e.id: e.model for e in costs.events}
