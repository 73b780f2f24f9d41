"""Review fixes of the HTTP entry point (the tracking transports), under the real OpenAI
and Anthropic SDKs against the local fake provider.

- An error event's free text (which may echo the request's key) is never stored as the
  ``error_type``; anything the transport stores from a response is scrubbed of the
  request's own credential header values.
- A Responses API background response is recorded once, priced, when a retrieval through
  a tracking transport shows its terminal status.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

import costledger
from costledger import Ledger, Tracker
from costledger._http import _core
from costledger._http._core import MAX_BACKGROUND, UNRETRIEVED
from costledger.http import AsyncHttpx2TrackingTransport, Httpx2TrackingTransport, TrackingTransport
from costledger.testing import CapturedCosts

from ._fake_provider import (
    FakeProvider,
    Reply,
    anthropic_stream,
    chat_completion,
    chat_stream,
    responses_object,
)

MESSAGES = [{"role": "user", "content": "Say hello"}]
# An Azure-style key (32 hex digits): no "sk-" shape for the generic redaction to catch.
HEX_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
# A key made of letters only: it looks like an identifier, so only the request's own
# credential scrub can keep it out.
WORD_KEY = "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTy"


# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


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


# -- 6. Responses API background mode ----------------------------------------------------------
RESPONSES_USAGE = costledger.Usage(
    input_tokens=3000, output_tokens=400, cache_read_tokens=2000, reasoning_tokens=100
)
RESPONSES_COST = Decimal("0.00054")  # gpt-4o-mini: 1000*0.15 + 2000*0.075 + 400*0.60 per million


def _background(status: str, rid: str = "resp_fake0001") -> dict[str, Any]:
    """A background response: queued / in_progress without usage, or terminal with it."""
    body = responses_object(status="in_progress" if status in ("queued", "in_progress") else status)
    body.update(id=rid, status=status, background=True)
    return body


def _openai(provider: FakeProvider, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=provider.openai_url,
        api_key="sk-test-0000",
        http_client=httpx2.Client(transport=Httpx2TrackingTransport(**kw)),
        max_retries=0,
    )


def test_background_response_priced_once_at_its_terminal_retrieval(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue("/responses", Reply(json=_background("queued")))
    provider.enqueue(
        "/responses/resp_fake0001",
        Reply(json=_background("in_progress")),
        Reply(json=_background("completed")),
        Reply(json=_background("completed")),
    )
    client = _openai(provider)
    created = client.responses.create(model="gpt-4o-mini", input="long task", background=True)
    assert created.status == "queued"
    assert client.responses.retrieve(created.id).status == "in_progress"
    assert costs.events == []  # no usage yet: nothing recorded, nothing counted twice
    assert client.responses.retrieve(created.id).status == "completed"
    assert client.responses.retrieve(created.id).status == "completed"  # adds nothing
    event = _only(costs)
    assert (event.status, event.source, event.model) == ("ok", "http", "gpt-4o-mini")
    assert event.usage == RESPONSES_USAGE
    assert event.cost.total == RESPONSES_COST
    assert event.request_id == "resp_fake0001"


def test_background_response_cancelled_or_failed(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    async def main() -> None:
        client = openai.AsyncOpenAI(
            base_url=provider.openai_url,
            api_key="sk-test-0000",
            http_client=httpx2.AsyncClient(transport=AsyncHttpx2TrackingTransport()),
            max_retries=0,
        )
        first = await client.responses.create(model="gpt-4o-mini", input="a", background=True)
        second = await client.responses.create(model="gpt-4o-mini", input="b", background=True)
        assert (await client.responses.cancel(first.id)).status == "cancelled"
        assert (await client.responses.retrieve(second.id)).status == "failed"

    provider.enqueue(
        "/responses",
        Reply(json=_background("queued", "resp_a")),
        Reply(json=_background("queued", "resp_b")),
    )
    provider.enqueue("/responses/resp_a/cancel", Reply(json=_background("cancelled", "resp_a")))
    provider.enqueue("/responses/resp_b", Reply(json=_background("failed", "resp_b")))
    asyncio.run(main())
    cancelled, failed = costs.events
    assert (cancelled.status, cancelled.request_id) == ("cancelled", "resp_a")
    assert cancelled.cost.total == RESPONSES_COST  # the tokens it used before the cancel
    assert (failed.status, failed.error_type, failed.request_id) == (
        "error",
        "response.failed",
        "resp_b",
    )
    assert failed.cost.total == RESPONSES_COST


def test_background_response_waiting_map_is_bounded(costs: CapturedCosts) -> None:
    # The inner transport answers from memory (httpx's own MockTransport): 1025 creates.
    def answer(request: httpx.Request) -> httpx.Response:
        rid = f"resp_{len(seen)}"
        seen.append(rid)
        return httpx.Response(200, json=_background("queued", rid))

    seen: list[str] = []
    transport = TrackingTransport(httpx.MockTransport(answer))
    body = {"model": "gpt-4o-mini", "input": "x", "background": True}
    with httpx.Client(transport=transport) as client:
        for _ in range(MAX_BACKGROUND + 1):
            client.post("https://api.openai.com/v1/responses", json=body)
    evicted = _only(costs)  # the oldest, to make room
    assert evicted.status == "ok"
    assert evicted.cost.total is None
    assert dict(evicted.metadata) == {"costledger.usage_missing": UNRETRIEVED}
    _core._background.flush()  # the others (this process's exit would record them so)
    assert len(costs.events) == MAX_BACKGROUND + 1


def test_background_response_never_retrieved_is_recorded_at_exit(
    provider: FakeProvider, tmp_path: Path
) -> None:
    provider.enqueue("/responses", Reply(json=_background("queued")))
    db = tmp_path / "ledger.db"
    script = f"""
import httpx2, openai
from costledger import Ledger, Tracker
from costledger.http import Httpx2TrackingTransport
tracker = Tracker(Ledger("sqlite:///{db}"), log="off")
client = openai.OpenAI(base_url="{provider.openai_url}", api_key="sk-test-0000", max_retries=0,
    http_client=httpx2.Client(transport=Httpx2TrackingTransport(tracker=tracker)))
assert client.responses.create(model="gpt-4o-mini", input="x", background=True).status == "queued"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    ledger = Ledger(f"sqlite:///{db}")
    (event,) = list(ledger.events())
    ledger.close()
    assert (event.status, event.model, event.total_cost) == ("ok", "gpt-4o-mini", None)
    assert event.pricing_status == "not_priced"
    assert dict(event.metadata) == {"costledger.usage_missing": UNRETRIEVED}
