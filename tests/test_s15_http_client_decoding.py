"""A body that does not decode by its ``Content-Encoding`` is an ``APIError``, and a failed call.

httpx raises ``DecodingError`` (a ``RequestError``, not a ``TransportError``) while reading
such a body, above the transport. ``Client`` caught only transport and stream errors: the
raw ``httpx.DecodingError`` escaped, holding the request, its ``Authorization`` header (the
API key) included, in ``exc.request``. And the transport, which only saw its response
closed, recorded the call ``cancelled``; it is an ``error`` now, of type ``DecodingError``,
under the SDKs too.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import httpx
import openai
import pytest

import costledger
from costledger import Tracker
from costledger.http import APIError, AsyncClient, Client, TrackingTransport
from costledger.testing import InMemoryLedger

from ._fake_provider import FakeProvider, Reply

KEY = "sk-proj-DECODEk3y-5b1e9c0d2f7a4e6b8c1d3f5a7xQz"
MESSAGES = [{"role": "user", "content": "Say hello"}]
NOT_GZIP = {"Content-Encoding": "gzip"}
NOTE = {"costledger.usage_missing": "response body does not decode by its Content-Encoding"}

pytestmark = pytest.mark.usefixtures("fresh_provider")


def _body(provider: FakeProvider, *, stream: bool) -> None:
    content_type = "text/event-stream" if stream else "application/json"
    provider.enqueue(
        "/chat/completions",
        Reply(raw=b"data: not gzip\n\n", headers={**NOT_GZIP, "Content-Type": content_type}),
    )


def _rows(tracker: Tracker) -> list[tuple[Any, ...]]:
    assert costledger.drain_deferred(10)
    return [
        (e.status, e.error_type, e.streamed, e.total_cost, dict(e.metadata))
        for e in tracker.ledger.events()
    ]


def _assert_clean(err: BaseException) -> None:
    assert type(err) is APIError
    assert str(err).startswith("the response from 127.0.0.1 cannot be read (DecodingError: ")
    assert err.__cause__ is None
    assert err.__context__ is None
    for text in (str(err), repr(vars(err)), "".join(traceback.format_exception(err))):
        assert KEY not in text
        assert "DECODE" not in text


@pytest.mark.parametrize("stream", [False, True])
def test_client(provider: FakeProvider, stream: bool) -> None:
    _body(provider, stream=stream)
    tracker = Tracker(InMemoryLedger(), log="off")
    with Client(provider.openai_url, KEY, tracker=tracker, max_retries=2) as client:
        call = (
            (lambda: list(client.stream_chat("gpt-4o-mini", MESSAGES)))
            if stream
            else (lambda: client.chat("gpt-4o-mini", MESSAGES))
        )
        with pytest.raises(APIError) as info:
            call()
    _assert_clean(info.value)
    assert len(provider.requests_to("/chat/completions")) == 1  # not retried
    assert _rows(tracker) == [("error", "DecodingError", stream, None, NOTE)]


@pytest.mark.parametrize("stream", [False, True])
def test_async_client(provider: FakeProvider, stream: bool) -> None:
    _body(provider, stream=stream)
    tracker = Tracker(InMemoryLedger(), log="off")

    async def main() -> None:
        async with AsyncClient(provider.openai_url, KEY, tracker=tracker, max_retries=2) as client:
            if stream:
                [chunk async for chunk in await client.stream_chat("gpt-4o-mini", MESSAGES)]
            else:
                await client.chat("gpt-4o-mini", MESSAGES)

    with pytest.raises(APIError) as info:
        asyncio.run(main())
    _assert_clean(info.value)
    assert len(provider.requests_to("/chat/completions")) == 1
    assert _rows(tracker) == [("error", "DecodingError", stream, None, NOTE)]


def test_under_the_openai_sdk(provider: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    _body(provider, stream=False)
    tracker = Tracker(InMemoryLedger(), log="off")
    client = openai.OpenAI(
        base_url=provider.openai_url,
        api_key=KEY,
        max_retries=0,
        http_client=httpx.Client(transport=TrackingTransport(tracker=tracker)),
    )
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert _rows(tracker) == [("error", "DecodingError", False, None, NOTE)]
    assert "tracking failed" not in caplog.text  # the server's fault, not costledger's
