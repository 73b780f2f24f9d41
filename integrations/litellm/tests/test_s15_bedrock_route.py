"""A Bedrock model is recorded under its id whatever route LiteLLM calls it through.

``bedrock/converse/<id>`` and ``bedrock/invoke/<id>`` pin LiteLLM's API route; they name
the same model as ``bedrock/<id>`` and were recorded as other models (``converse/<id>``),
by the logger, the wrappers and ``costledger ingest`` alike.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import litellm
import pytest
from litellm_support import MESSAGES, Sentinel, litellm_isolated, offline
from s15_server import LocalServer, json_answer, server

import costledger_litellm
from costledger import Pricer, Usage
from costledger._sources.litellm_payload import bare_model, read_standard_logging_payload
from costledger.testing import capture_costs
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline", "server"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
ROUTES = ("", "converse/", "invoke/")
# Claude 3.5 Haiku on Bedrock: $0.80 in, $4.00 out per million; 10 in, 5 out
COST = Decimal("0.000028")  # 10 * 0.80 / 1e6 + 5 * 4 / 1e6

CONVERSE_ANSWER = {
    "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
}
INVOKE_ANSWER = {
    "id": "msg_s15",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 10, "output_tokens": 5},
}


def _bedrock(server: LocalServer) -> dict[str, Any]:
    def respond(path: str, body: Any) -> Any:
        return json_answer(INVOKE_ANSWER if path.endswith("/invoke") else CONVERSE_ANSWER)

    server.respond = respond
    return {
        "aws_bedrock_runtime_endpoint": server.base,
        "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key": "x" * 40,
        "aws_region_name": "us-east-1",
    }


def _check(events: list[Any]) -> None:
    assert len(events) == len(ROUTES)
    for event in events:
        assert (event.status, event.model, event.provider) == ("ok", MODEL_ID, "bedrock")
        assert (event.usage.input_tokens, event.usage.output_tokens) == (10, 5)
        assert event.cost.total == COST
    usage = Usage(input_tokens=10, output_tokens=5)
    assert Pricer.default().price(MODEL_ID, usage, provider="bedrock").total == COST


def test_wrappers_record_every_route_under_the_model_id(server: LocalServer) -> None:
    aws = _bedrock(server)
    with capture_costs() as costs:
        for route in ROUTES:
            costledger_litellm.completion(
                model=f"bedrock/{route}{MODEL_ID}", messages=MESSAGES, **aws
            )
    paths = [path.rsplit("/", 1)[1] for path, _ in server.requests]
    assert paths == ["converse", "converse", "invoke"]  # the routes LiteLLM took
    _check(costs.events)


def test_logger_and_ingest_record_every_route_under_the_model_id(server: LocalServer) -> None:
    aws = _bedrock(server)
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    with capture_costs() as costs:
        for route in ROUTES:
            litellm.completion(model=f"bedrock/{route}{MODEL_ID}", messages=MESSAGES, **aws)
        sentinel.wait(len(ROUTES))
    _check(costs.events)
    # costledger ingest reads the same payloads (as LiteLLM's loggers write them)
    for _kind, kwargs, *_ in sentinel.seen:
        payload = json.loads(json.dumps(kwargs["standard_logging_object"], default=str))
        assert payload["model"].endswith(MODEL_ID)
        assert read_standard_logging_payload(payload).model == MODEL_ID


@pytest.mark.parametrize(
    ("model", "provider", "bare"),
    [
        (f"bedrock/converse/{MODEL_ID}", "bedrock", MODEL_ID),
        (f"converse/{MODEL_ID}", "bedrock", MODEL_ID),
        (f"bedrock/invoke/{MODEL_ID}", "bedrock", MODEL_ID),
        (f"converse_like/{MODEL_ID}", "bedrock", MODEL_ID),
        (f"async_invoke/{MODEL_ID}", "bedrock", MODEL_ID),
        ("chat_completions/openai.gpt-oss-20b-1:0", "bedrock", "openai.gpt-oss-20b-1:0"),
        ("bedrock/openai/arn:aws:bedrock:x", "bedrock", "arn:aws:bedrock:x"),
        (f"bedrock/{MODEL_ID}", "bedrock", MODEL_ID),
        # an agent route names an agent, not a model; only Bedrock has routes
        ("agent/AGENT1/ALIAS1", "bedrock", "agent/AGENT1/ALIAS1"),
        ("converse/x", "openrouter", "converse/x"),
        ("invoke/", "bedrock", "invoke/"),
    ],
)
def test_bare_model_drops_a_bedrock_route(model: str, provider: str, bare: str) -> None:
    assert bare_model(model, provider) == bare
