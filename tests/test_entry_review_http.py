"""Review fixes of the HTTP entry point (the tracking transports), under the real OpenAI
and Anthropic SDKs against the local fake provider.

- An error event's free text (which may echo the request's key) is never stored as the
  ``error_type``; anything the transport stores from a response is scrubbed of the
  request's own credential header values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

import costledger
from costledger import Ledger, Tracker
from costledger.http import Httpx2TrackingTransport, TrackingTransport
from costledger.testing import CapturedCosts

from ._fake_provider import FakeProvider, Reply, anthropic_stream, chat_completion, chat_stream

MESSAGES = [{"role": "user", "content": "Say hello"}]
# An Azure-style key (32 hex digits): no "sk-" shape for the generic redaction to catch.
HEX_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
# A key made of letters only: it looks like an identifier, so only the request's own
# credential scrub can keep it out.
WORD_KEY = "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTy"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_provider(provider: FakeProvider) -> None:
    provider.reset()


def _only(costs: CapturedCosts) -> costledger.UsageEvent:
    events = costs.events
    assert len(events) == 1, events
    return events[0]


# -- 1. no key in error_type ---------------------------------------------------------------------
def test_key_echoed_in_a_string_stream_error_is_not_stored(
    provider: FakeProvider, tmp_path: Path
) -> None:
    echo = json.dumps({"error": f"Incorrect API key provided: {HEX_KEY}"})
    provider.enqueue("/chat/completions", Reply(sse=[*chat_stream()[:3], (None, echo)]))
    db, log = tmp_path / "ledger.db", tmp_path / "usage.log"
    tracker = Tracker(Ledger(f"sqlite:///{db}"), log=str(log))
    client = openai.OpenAI(
        base_url=provider.openai_url,
        api_key=HEX_KEY,
        http_client=httpx2.Client(transport=Httpx2TrackingTransport(tracker=tracker)),
        max_retries=0,
    )
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    costledger.drain_deferred(10)
    rows = tracker.ledger.events()
    tracker.ledger.close()
    assert [(e.status, e.error_type) for e in rows] == [("error", "stream_error")]
    assert HEX_KEY not in db.read_bytes().decode("latin-1")
    assert HEX_KEY not in log.read_text()
    assert "stream_error" in log.read_text()


def test_error_type_is_a_type_token_not_free_text(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    # a "type" that is a sentence is not a type: the fixed default is recorded
    bad = json.dumps({"type": "error", "error": {"type": "Key abc is wrong", "message": "x"}})
    provider.enqueue("/v1/messages", Reply(sse=[*anthropic_stream()[:3], ("error", bad)]))
    client = anthropic.Anthropic(
        base_url=provider.base_url,
        api_key="sk-ant-test-0000",
        http_client=httpx2.Client(transport=Httpx2TrackingTransport()),
        max_retries=0,
    )
    with pytest.raises(anthropic.APIStatusError):
        list(
            client.messages.create(
                model="claude-3-5-haiku-20241022", max_tokens=5, messages=MESSAGES, stream=True
            )
        )
    assert _only(costs).error_type == "error"


def test_request_key_scrubbed_from_an_identifier_like_error_type(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    # Anthropic's key header is x-api-key; the server echoes the key as the error's type.
    echo = json.dumps({"type": "error", "error": {"type": WORD_KEY, "message": "x"}})
    provider.enqueue("/v1/messages", Reply(sse=[*anthropic_stream()[:3], ("error", echo)]))
    client = anthropic.Anthropic(
        base_url=provider.base_url,
        api_key=WORD_KEY,
        http_client=httpx2.Client(transport=Httpx2TrackingTransport()),
        max_retries=0,
    )
    with pytest.raises(anthropic.APIStatusError):
        list(
            client.messages.create(
                model="claude-3-5-haiku-20241022", max_tokens=5, messages=MESSAGES, stream=True
            )
        )
    event = _only(costs)
    assert event.status == "error"
    assert event.error_type == "[redacted]"


@pytest.mark.parametrize("header", ["api-key", "x-goog-api-key", "authorization"])
def test_request_key_scrubbed_from_response_model_and_request_id(
    provider: FakeProvider, costs: CapturedCosts, header: str
) -> None:
    value = f"Bearer {WORD_KEY}" if header == "authorization" else WORD_KEY
    provider.enqueue(
        "/chat/completions",
        Reply(json=chat_completion(model=f"echo-{WORD_KEY}")),
        Reply(
            status=500, json={"error": {"type": "server_error"}}, headers={"x-request-id": WORD_KEY}
        ),
    )
    with httpx.Client(transport=TrackingTransport()) as client:
        url = f"{provider.openai_url}/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": MESSAGES}
        assert client.post(url, json=body, headers={header: value}).status_code == 200
        assert client.post(url, json=body, headers={header: value}).status_code == 500
    ok, failed = costs.events
    assert ok.response_model == "echo-[redacted]"
    assert (failed.status, failed.error_type, failed.request_id) == (
        "error",
        "http_500",
        "[redacted]",
    )
