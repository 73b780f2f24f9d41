"""The HTTP transport keeps a key sent in the URL's query (Gemini's ``?key=``) or in an
``Ocp-Apim-Subscription-Key`` header (Azure API Management) out of what it stores, as it
does the ``Authorization`` / ``api-key`` headers: a server echoing it in the response id
or model stored the key in the row."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

import costledger
from costledger import Tracker
from costledger._redact import redact_url
from costledger.http import Httpx2TrackingTransport
from costledger.testing import InMemoryLedger

from ._fake_provider import FakeProvider, Reply, chat_completion

MESSAGES = [{"role": "user", "content": "Say hello"}]
KEY = "AIzaSyECHOEDg00gleKey0123456789abcdefghi"

pytestmark = pytest.mark.usefixtures("fresh_provider")


@pytest.mark.parametrize(
    "how",
    [
        {"default_query": {"key": KEY}},
        {"default_query": {"api-key": KEY}},
        {"default_headers": {"Ocp-Apim-Subscription-Key": KEY}},
    ],
)
def test_a_key_in_the_query_or_an_apim_header_is_not_stored(
    provider: FakeProvider, how: dict[str, Any]
) -> None:
    body = {**chat_completion("gpt-4o-mini-2024-07-18"), "id": f"chatcmpl-{KEY}"}
    body["model"] = f"gpt-4o-mini-{KEY}"
    provider.enqueue("/chat/completions", Reply(json=body))
    tracker = Tracker(InMemoryLedger(), log="off")
    client = openai.OpenAI(
        base_url=provider.openai_url,
        api_key="placeholder",
        max_retries=0,
        http_client=httpx2.Client(transport=Httpx2TrackingTransport(tracker=tracker)),
        **how,
    )
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).id.endswith(KEY)
    assert costledger.drain_deferred(10)
    [event] = tracker.ledger.events()
    assert (event.request_id, event.response_model) == (
        "chatcmpl-[redacted]",
        "gpt-4o-mini-[redacted]",
    )


def test_a_url_shown_masks_key_parameters() -> None:
    assert redact_url(f"https://h/v1?key={KEY}&x=1&api-key=abc&APIKEY=d") == (
        "https://h/v1?key=***&x=1&api-key=***&APIKEY=***"
    )
