"""A stream abandoned through the wrappers is priced at the tier it was served at.

The chunks say ``service_tier`` (OpenAI's flex, priority): the abandoned call's usage is
read from the chunks received, and so is its price context (was: the standard rate).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from litellm_support import litellm_isolated, offline
from s15_server import LocalServer, event_stream, server, sse

import costledger_litellm
from costledger import Pricer
from costledger.testing import capture_costs

__all__ = ["litellm_isolated", "offline", "server"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

MESSAGES = [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}]
# LiteLLM's count of MESSAGES for gpt-5, and of the one chunk read ("Hello " * 50)
PROMPT_TOKENS = 16
RECEIVED_TOKENS = 51
# gpt-5 at flex: $0.625 in, $5.00 out per million (standard: $1.25, $10.00)
FLEX_COST = Decimal("0.000265")  # 16 * 0.625 / 1e6 + 51 * 5 / 1e6
STANDARD_COST = Decimal("0.00053")  # 16 * 1.25 / 1e6 + 51 * 10 / 1e6


def _chunk(content: str | None = None, finish: str | None = None) -> str:
    chunk: dict[str, object] = {
        "id": "chatcmpl-s15",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-5-2025-08-07",
        "service_tier": "flex",
        "choices": [],
    }
    if content is not None or finish is not None:
        delta = {"content": content} if content is not None else {}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return sse(chunk)


def _flex_stream(server: LocalServer) -> None:
    pieces = [
        _chunk("Hello " * 50),
        _chunk("world " * 50),
        _chunk(finish="stop"),
        "data: [DONE]\n\n",
    ]
    server.respond = lambda path, body: event_stream(pieces)


def _check(event: object) -> None:
    from costledger import UsageEvent

    assert isinstance(event, UsageEvent)
    assert event.status == "cancelled"
    assert (event.usage.input_tokens, event.usage.output_tokens) == (PROMPT_TOKENS, RECEIVED_TOKENS)
    assert dict(event.price_context) == {"service_tier": "flex"}
    assert event.response_model == "gpt-5"  # as LiteLLM records the finished stream
    assert event.cost.total == FLEX_COST
    flex = Pricer.default().price(
        "gpt-5", event.usage, provider="openai", price_context={"service_tier": "flex"}
    )
    assert flex.total == FLEX_COST
    assert Pricer.default().price("gpt-5", event.usage, provider="openai").total == STANDARD_COST


def test_abandoned_sync_stream_is_priced_at_its_service_tier(server: LocalServer) -> None:
    _flex_stream(server)
    with (
        capture_costs() as costs,
        costledger_litellm.completion(
            model="openai/gpt-5",
            messages=MESSAGES,
            api_base=server.base + "/v1",
            api_key="sk-test",
            stream=True,
            service_tier="flex",
        ) as stream,
    ):
        next(iter(stream))  # one chunk read, then the block is left
    [event] = costs.events
    _check(event)


def test_abandoned_async_stream_is_priced_at_its_service_tier(server: LocalServer) -> None:
    _flex_stream(server)

    async def main() -> None:
        stream = await costledger_litellm.acompletion(
            model="openai/gpt-5",
            messages=MESSAGES,
            api_base=server.base + "/v1",
            api_key="sk-test",
            stream=True,
            service_tier="flex",
        )
        async with stream:
            await stream.__anext__()

    with capture_costs() as costs:
        asyncio.run(main())
    [event] = costs.events
    _check(event)
