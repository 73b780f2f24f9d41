"""A response's ``id`` stored as the request id is cleaned of the request's own credentials.

A server (a proxy, a mock, a misconfigured gateway) may echo what it was sent; the model,
the error type and ``x-request-id`` were cleaned of the request's key, but the response's
``id`` was stored as it came: a bearer key or a 32-hex Azure ``api-key`` echoed in it
went into the ledger's row.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import openai
import pytest

import costledger
from costledger import Tracker
from costledger.http import Httpx2TrackingTransport, TrackingTransport
from costledger.testing import InMemoryLedger

from ._fake_provider import FakeProvider, Reply, chat_completion, chat_stream, responses_object

MESSAGES = [{"role": "user", "content": "Say hello"}]
BEARER = "sk-proj-ECHOEDk3y-5b1e9c0d2f7a4e6b8c1d3f5a7xQz"
AZURE = "0123456789abcdef0123456789abcdef"

pytestmark = pytest.mark.usefixtures("fresh_provider")


def _client(provider: FakeProvider, tracker: Tracker, *, azure: bool) -> openai.OpenAI:
    if azure:  # the key in the api-key header, as Azure OpenAI takes it
        return openai.OpenAI(
            base_url=provider.openai_url,
            api_key="placeholder",
            default_headers={"api-key": AZURE},
            max_retries=0,
            http_client=httpx2.Client(transport=Httpx2TrackingTransport(tracker=tracker)),
        )
    return openai.OpenAI(
        base_url=provider.openai_url,
        api_key=BEARER,
        max_retries=0,
        http_client=httpx.Client(transport=TrackingTransport(tracker=tracker)),
    )


def _echoing(key: str) -> list[tuple[str | None, str]]:
    events = []
    for name, data in chat_stream("gpt-4o-mini-2024-07-18"):
        if data != "[DONE]":
            data = json.dumps({**json.loads(data), "id": f"chatcmpl-{key}"})
        events.append((name, data))
    return events


def _rows(tracker: Tracker) -> list[tuple[Any, ...]]:
    assert costledger.drain_deferred(10)
    return [(e.status, e.request_id, e.response_model) for e in tracker.ledger.events()]


@pytest.mark.parametrize("azure", [False, True])
def test_an_echoed_key_is_not_stored_as_the_request_id(provider: FakeProvider, azure: bool) -> None:
    key = AZURE if azure else BEARER
    provider.enqueue(
        "/chat/completions",
        Reply(json={**chat_completion("gpt-4o-mini-2024-07-18"), "id": f"chatcmpl-{key}"}),
        Reply(sse=_echoing(key)),
    )
    provider.enqueue("/responses", Reply(json={**responses_object(), "id": key}))
    tracker = Tracker(InMemoryLedger(), log="off")
    client = _client(provider, tracker, azure=azure)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).id.endswith(key)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    client.responses.create(model="gpt-4o-mini", input="Say hello")
    assert _rows(tracker) == [
        ("ok", "chatcmpl-[redacted]", "gpt-4o-mini-2024-07-18"),
        ("ok", "chatcmpl-[redacted]", "gpt-4o-mini-2024-07-18"),
        ("ok", "[redacted]", "gpt-4o-mini-2024-07-18"),
    ]
    events = tracker.ledger.events()
    assert key not in repr(events)
    assert key[:12] not in repr(events)
    assert key[-12:] not in repr(events)


def test_a_background_response_retrieved_keeps_no_echoed_key(provider: FakeProvider) -> None:
    rid = f"resp_{BEARER}"
    queued = {**responses_object(status="in_progress"), "id": rid, "status": "queued"}
    provider.enqueue("/responses", Reply(json=queued))
    provider.enqueue(f"/responses/{rid}", Reply(json={**responses_object(), "id": rid}))
    tracker = Tracker(InMemoryLedger(), log="off")
    client = _client(provider, tracker, azure=False)
    client.responses.create(model="gpt-4o-mini", input="Say hello", background=True)
    assert client.responses.retrieve(rid).status == "completed"
    assert _rows(tracker) == [("ok", "resp_[redacted]", "gpt-4o-mini-2024-07-18")]
