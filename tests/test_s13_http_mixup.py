"""A tracking transport under the other library's client (httpx's under httpx2, or the
reverse) is refused with a TypeError naming the right one, before anything is sent: the
client would fail on the response anyway, with a bare AssertionError, after the call was
sent and recorded."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import pytest

from costledger.http import (
    AsyncHttpx2TrackingTransport,
    AsyncTrackingTransport,
    Httpx2TrackingTransport,
    TrackingTransport,
)
from costledger.testing import CapturedCosts

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
BODY = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 20}}


def _mixups(sent: list[str]) -> list[tuple[Any, str]]:
    def answer(request: Any) -> Any:
        sent.append(str(request.url))
        return httpx.Response(200, json=BODY)

    def answer2(request: Any) -> Any:
        sent.append(str(request.url))
        return httpx2.Response(200, json=BODY)

    return [
        (
            httpx2.Client(transport=TrackingTransport(httpx.MockTransport(answer))),
            "TrackingTransport is for httpx clients; it was handed a request of type "
            "httpx2.Request: under httpx2 use Httpx2TrackingTransport",
        ),
        (
            httpx.Client(transport=Httpx2TrackingTransport(httpx2.MockTransport(answer2))),
            "Httpx2TrackingTransport is for httpx2 clients; it was handed a request of type "
            "httpx.Request: under httpx use TrackingTransport",
        ),
        (
            httpx2.AsyncClient(transport=AsyncTrackingTransport(httpx.MockTransport(answer))),
            "AsyncTrackingTransport is for httpx clients; it was handed a request of type "
            "httpx2.Request: under httpx2 use AsyncHttpx2TrackingTransport",
        ),
        (
            httpx.AsyncClient(
                transport=AsyncHttpx2TrackingTransport(httpx2.MockTransport(answer2))
            ),
            "AsyncHttpx2TrackingTransport is for httpx2 clients; it was handed a request of "
            "type httpx.Request: under httpx use AsyncTrackingTransport",
        ),
    ]


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_transport_under_the_other_librarys_client_is_refused_before_sending(
    costs: CapturedCosts, case: int, method: str
) -> None:
    sent: list[str] = []
    client, message = _mixups(sent)[case]
    url = "https://api.openai.com/v1/chat/completions"
    kwargs = {"json": CHAT} if method == "POST" else {}
    if isinstance(client, (httpx.AsyncClient, httpx2.AsyncClient)):
        with pytest.raises(TypeError) as info:
            asyncio.run(client.request(method, url, **kwargs))
    else:
        with pytest.raises(TypeError) as info:
            client.request(method, url, **kwargs)
    assert str(info.value) == message
    assert sent == []
    assert costs.events == []


class _MyRequest(httpx.Request):
    pass


def test_a_subclass_of_the_librarys_request_is_tracked(costs: CapturedCosts) -> None:
    transport = TrackingTransport(httpx.MockTransport(lambda r: httpx.Response(200, json=BODY)))
    with httpx.Client(transport=transport) as client:
        request = _MyRequest("POST", "https://api.openai.com/v1/chat/completions", json=CHAT)
        assert client.send(request).status_code == 200
    (event,) = costs.events
    # gpt-4o-mini: 10 in at $0.15/MTok, 20 out at $0.60
    assert (event.status, event.cost.total) == ("ok", Decimal("0.0000135"))
