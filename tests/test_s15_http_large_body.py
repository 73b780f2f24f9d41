"""A JSON body over ``FULL_PARSE_LIMIT`` keeps what the response says at its top level.

Such a body is not parsed whole; it was read for its ``model`` and ``usage`` only, so a
1.6 MB gpt-5 answer (logprobs) served at the flex tier was priced at the standard rate
with no request id, and a Responses API background response retrieved ``completed`` with
a large output (an image) was never recorded: its ``status`` was not read. The top level
is now read for every key the readers use, and only the top level: a key of the same name
inside the bulk (an output item's ``status``, a tool call's ``id``) is not the response's.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

import costledger
from costledger import Tracker
from costledger._http._scan import FULL_PARSE_LIMIT, read_json_usage
from costledger.http import TrackingTransport
from costledger.testing import InMemoryLedger

from ._fake_provider import FakeProvider, Reply, responses_object

MESSAGES = [{"role": "user", "content": "Say hello"}]

pytestmark = pytest.mark.usefixtures("fresh_provider")


def _client(provider: FakeProvider, tracker: Tracker) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=provider.openai_url,
        api_key="sk-test-large-body-0000",
        max_retries=0,
        http_client=httpx.Client(transport=TrackingTransport(tracker=tracker)),
    )


def _events(tracker: Tracker) -> list[Any]:
    assert costledger.drain_deferred(10)
    return list(tracker.ledger.events())


def _logprobs(count: int) -> dict[str, Any]:
    top = [{"token": "a", "logprob": -1.0, "bytes": [97]}] * 20
    return {
        "content": [{"token": "t", "logprob": -0.1, "bytes": [116], "top_logprobs": top}] * count
    }


def test_a_large_flex_chat_completion_is_priced_at_the_flex_rate(provider: FakeProvider) -> None:
    body = {
        "id": "chatcmpl-large0001",
        "object": "chat.completion",
        "created": 1_730_000_000,
        "model": "gpt-5-2025-08-07",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "x",
                    "tool_calls": [
                        {
                            "id": "call_nested",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "stop",
                "logprobs": _logprobs(1500),
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 3000, "total_tokens": 4000},
        "service_tier": "flex",
        "system_fingerprint": "fp_large",
    }
    assert len(json.dumps(body)) > FULL_PARSE_LIMIT
    provider.enqueue("/chat/completions", Reply(json=body))
    tracker = Tracker(InMemoryLedger(), log="off")
    reply = _client(provider, tracker).chat.completions.create(
        model="gpt-5", messages=MESSAGES, service_tier="flex", logprobs=True, top_logprobs=20
    )
    assert reply.service_tier == "flex"
    (event,) = _events(tracker)
    # gpt-5 flex: $0.625/MTok in, $5 out (standard: $1.25, $10)
    assert (event.status, event.total_cost, event.request_id) == (
        "ok",
        Decimal("0.015625"),
        "chatcmpl-large0001",
    )
    assert dict(event.price_context) == {"service_tier": "flex"}
    assert event.response_model == "gpt-5-2025-08-07"


def test_a_large_background_response_retrieved_completed_is_recorded(
    provider: FakeProvider,
) -> None:
    usage = {"input_tokens": 3000, "output_tokens": 400, "total_tokens": 3400}
    queued = {**responses_object(status="in_progress"), "id": "resp_large01", "status": "queued"}
    done = {
        **responses_object(usage=usage),
        "id": "resp_large01",
        "background": True,
        # items of the output (before the top-level keys that follow it) carry a status and
        # an id of their own
        "output": [
            {
                "type": "message",
                "id": f"msg_{i}",
                "status": "in_progress",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "y" * 4000, "annotations": []}],
            }
            for i in range(400)
        ],
    }
    assert len(json.dumps(done)) > FULL_PARSE_LIMIT
    provider.enqueue("/responses", Reply(json=queued))
    provider.enqueue("/responses/resp_large01", Reply(json=done))
    tracker = Tracker(InMemoryLedger(), log="off")
    client = _client(provider, tracker)
    started = client.responses.create(model="gpt-4o-mini", input="Say hello", background=True)
    assert started.status == "queued"
    assert client.responses.retrieve("resp_large01").status == "completed"
    (event,) = _events(tracker)
    # gpt-4o-mini: 3000 in at $0.15/MTok, 400 out at $0.60
    assert (event.status, event.total_cost, event.request_id, event.response_model) == (
        "ok",
        Decimal("0.00069"),
        "resp_large01",
        "gpt-4o-mini-2024-07-18",
    )


def test_only_the_top_level_keys_are_read() -> None:
    nested = {
        "id": "nested",
        "status": "failed",
        "model": "nested-model",
        "service_tier": "priority",
        "usage": {"prompt_tokens": 1},
        "text": 'a "quoted" } ] { [ string',
    }
    body = {
        "object": "chat.completion",
        "id": "chatcmpl-top",
        "model": "gpt-5",
        'odd "key"': {"id": "nested"},
        "choices": [nested] * 6000 + [{'escaped "key': ["]", "}", "\\"]}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20},
        "service_tier": "flex",
        "status": "completed",
        "tail": [nested] * 10,  # after every top-level key: last in the body
        "type": "x",
    }
    raw = json.dumps(body, indent=1).encode()
    assert len(raw) > FULL_PARSE_LIMIT
    assert read_json_usage(raw) == {
        "object": "chat.completion",
        "id": "chatcmpl-top",
        "model": "gpt-5",
        "usage": {"prompt_tokens": 10, "completion_tokens": 20},
        "service_tier": "flex",
        "status": "completed",
        "type": "x",
    }
    # not one JSON object: nothing
    assert read_json_usage(raw[:-2]) is None
    assert read_json_usage(raw + b"{}") is None
    assert read_json_usage(b"[" + raw + b"]") is None
