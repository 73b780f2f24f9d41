"""An abandoned wrapper stream takes its call's API key out of the logger's table of open
calls' keys, as a finished call does (it was left there until evicted), and keeps it out of
the row."""

from __future__ import annotations

import pytest
from litellm_support import litellm_isolated, offline
from s15_server import LocalServer, event_stream, server, sse

import costledger_litellm
from costledger.testing import capture_costs
from costledger_litellm._logger import _attempt_keys

__all__ = ["litellm_isolated", "offline", "server"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

KEY = "0123456789abcdef0123456789abcdef"  # an Azure-style key: no pattern catches it


def _chunk(content: str | None = None, finish: str | None = None) -> str:
    chunk: dict[str, object] = {
        "id": "chatcmpl-s16",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": f"gpt-4o-mini-{KEY}",
        "choices": [],
    }
    if content is not None or finish is not None:
        delta = {"content": content} if content is not None else {}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return sse(chunk)


def test_an_abandoned_stream_keeps_the_calls_key_out_of_its_row(server: LocalServer) -> None:
    pieces = [
        _chunk("Hello " * 50),
        _chunk("world " * 50),
        _chunk(finish="stop"),
        "data: [DONE]\n\n",
    ]
    server.respond = lambda path, body: event_stream(pieces)
    with (
        capture_costs() as costs,
        costledger_litellm.completion(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "Tell me a story."}],
            api_base=server.base + "/v1",
            api_key=KEY,
            stream=True,
        ) as stream,
    ):
        next(iter(stream))  # one chunk read, then the block is left
    [event] = costs.events
    assert event.status == "cancelled"
    assert KEY not in repr(event)
    # the call's key is no longer held for it
    assert _attempt_keys.take(event.id) == ()
