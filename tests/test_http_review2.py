"""Fixes from the second review of ``costledger.http``: a key with a newline, a body with a
lone surrogate, a 401 echoing a key past the cut, stream errors, passwords in ``base_url``,
``Retry-After`` on any status, nothing reachable through ``__cause__``, bad ``messages``
and ``input``, and a scrubber that keeps ordinary words. Real httpx/httpx2 clients against
the local fake provider on 127.0.0.1."""

from __future__ import annotations

import threading
import time
import traceback
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import pytest
from tenacity import RetryCallState, wait_none
from tenacity.wait import wait_base

from costledger import Budget, BudgetExceeded, Tracker
from costledger.http import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    RateLimitedByProvider,
    ServerError,
    is_transient,
    wait_retry_after,
)
from costledger.testing import CapturedCosts, InMemoryLedger

from ._fake_provider import FakeProvider, Reply, chat_stream, openai_error
from .test_http_transport import FLAVOURS, only, sync_http

# one fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")

KEY = "sk-proj-REVIEW2k3y-7c1e9a0d2f7a4e6b8c1d3f5a7wQx"
MESSAGES = [{"role": "user", "content": "Say hello"}]
CHAT_COST = Decimal("0.000525")  # the fake's default chat usage on gpt-4o-mini


class RecordingWait(wait_base):
    """Waits nothing, and records each wait the client asked for (one per retry)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, retry_state: RetryCallState) -> float:
        self.calls.append(retry_state.attempt_number)
        return 0.0


def make(fake: FakeProvider, **kw: Any) -> Client:
    kw.setdefault("wait", wait_retry_after(wait_none()))
    return Client(fake.openai_url, KEY, **kw)


def chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


# -- 1. a key with a newline: refused at construction; an unsendable request is not retried,
# -- not recorded, and its error never quotes the key ---------------------------------------------
def test_key_with_a_newline_is_refused_without_showing_it(provider: FakeProvider) -> None:
    hex_key = "0123456789abcdef0123456789abcdef"
    for bad in (hex_key + "\n", f" {hex_key}", "ab cd", "kéy0123"):
        with pytest.raises(ValueError) as info:
            Client(provider.openai_url, bad)
        assert str(info.value) == (
            "api_key contains whitespace, control or non-ASCII characters (a trailing "
            "newline from a file?): pass the key alone"
        )
        assert hex_key not in str(info.value)
    assert provider.requests == []


def test_request_that_breaks_http_is_not_retried_nor_recorded(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    wait = RecordingWait()
    with (
        make(provider, headers={"X-Note": "line\nbreak"}, wait=wait, max_retries=3) as client,
        pytest.raises(APIError) as info,
    ):
        client.chat("gpt-4o-mini", MESSAGES)
    err = info.value
    assert type(err) is APIError  # not an APIConnectionError: no retry can cure it
    assert str(err).startswith("the request to 127.0.0.1 is not valid HTTP (LocalProtocolError: ")
    assert not is_transient(err)
    assert wait.calls == []  # not retried
    assert provider.requests == []
    assert list(costs) == []  # nothing left this process: nothing recorded


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_transport_records_nothing_for_a_request_refused_locally(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    error = httpx.LocalProtocolError if flavour == "httpx" else httpx2.LocalProtocolError
    with sync_http(flavour) as http, pytest.raises(error):
        http.post(
            f"{provider.openai_url}/chat/completions",
            headers={"Authorization": "Bearer k3y\n"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
        )
    assert provider.requests == []
    assert list(costs) == []


def test_scrub_removes_the_key_as_an_escaped_header_quotes_it() -> None:
    from costledger._http._errors import scrub

    key = "0123456789abcdef0123456789abcdef\n"  # an Azure-style hex key, read from a file
    h11 = "LocalProtocolError: Illegal header value b'Bearer 0123456789abcdef0123456789abcdef\\n'"
    assert scrub(h11, key) == "LocalProtocolError: Illegal header value b'Bearer [redacted]'"
    # the key's start or end, cut by the provider or by a length limit, goes too
    assert scrub("Invalid API key: 0123456789abcd", key) == "Invalid API key: [redacted]"
    assert scrub("key ending ...456789abcdef.", key) == "key ending ...[redacted]."


# -- 2. a lone surrogate escape in a chat stream body: guards and ledger still run --------------
SURROGATE_BODY = (
    b'{"model":"gpt-4o-mini","stream":true,"max_tokens":1000,'
    b'"messages":[{"role":"user","content":"hello \\ud83d"}]}'
)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lone_surrogate_body_still_meets_the_hard_budget(
    provider: FakeProvider, flavour: str
) -> None:
    tracker = Tracker(
        ledger=InMemoryLedger(), log="off", guards=[Budget(Decimal("0.000000001"), "day")]
    )
    with sync_http(flavour, tracker=tracker) as http, pytest.raises(BudgetExceeded):
        http.post(f"{provider.openai_url}/chat/completions", content=SURROGATE_BODY)
    assert provider.requests == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lone_surrogate_body_is_tracked_and_gets_usage(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    with sync_http(flavour) as http:
        response = http.post(f"{provider.openai_url}/chat/completions", content=SURROGATE_BODY)
        response.read()
    (sent,) = provider.requests
    assert sent.body == (
        b'{"model":"gpt-4o-mini","stream":true,"max_tokens":1000,'
        b'"messages":[{"role":"user","content":"hello \\ud83d"}],'
        b'"stream_options":{"include_usage":true}}'
    )
    event = only(costs)
    assert (event.status, event.model, event.streamed) == ("ok", "gpt-4o-mini", True)
    assert event.cost.total == CHAT_COST


# -- 3. a non-JSON 401 echoing the key across the 500-character cut -----------------------------
def test_key_echoed_at_the_cut_of_an_html_401_is_not_shown(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    key = "gsk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"  # Groq-style: no sk- prefix
    html = "<html><body>" + "x" * 450 + " Invalid API key: " + key + "</body></html>"
    provider.enqueue(
        "/chat/completions",
        Reply(status=401, raw=html.encode(), headers={"Content-Type": "text/html"}),
    )
    with (
        Client(provider.openai_url, key, max_retries=0) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.chat("gpt-4o-mini", MESSAGES)
    err = info.value
    for text in (str(err), repr(err), err.provider_message or ""):
        assert "4f9a8b" not in text
        assert key[-6:] not in text
    assert err.provider_message == html.replace(key, "[redacted]")[:500]
    assert err.provider_message.endswith("Invalid API key: [redacted]</body></h")
    assert str(err) == (
        f"127.0.0.1 rejected the API key (HTTP 401 Unauthorized): {err.provider_message}. "
        "Check the api_key argument or the OPENAI_API_KEY environment variable."
    )


# -- 4 and 7. errors once a stream flows are APIErrors, and nothing chains to the request --------
def assert_no_chain(err: BaseException, key: str = KEY) -> None:
    assert err.__cause__ is None
    assert err.__context__ is None
    assert key not in "".join(traceback.format_exception(err))
    assert key not in repr(vars(err))


def test_stream_cut_mid_way_is_an_api_connection_error(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), drop_after=2))
    with make(provider) as client:
        stream = client.stream_chat("gpt-4o-mini", MESSAGES)
        with pytest.raises(APIConnectionError) as info:
            list(stream)
    assert type(info.value) is APIConnectionError
    assert str(info.value).startswith("could not reach 127.0.0.1 (RemoteProtocolError: ")
    assert_no_chain(info.value)
    event = only(costs)
    assert (event.status, event.error_type, event.streamed) == (
        "error",
        "RemoteProtocolError",
        True,
    )


def test_stream_read_timeout_is_an_api_timeout_error(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    gate = threading.Event()
    provider.enqueue(
        "/chat/completions",
        Reply(sse=chat_stream(), pause_after=2, gate=gate, gate_timeout=3.0),
    )
    try:
        with make(provider, timeout=0.3) as client:
            stream = client.stream_chat("gpt-4o-mini", MESSAGES)
            with pytest.raises(APITimeoutError) as info:
                list(stream)
    finally:
        gate.set()
    assert str(info.value) == "127.0.0.1 did not answer in time (ReadTimeout: timed out)"
    assert_no_chain(info.value)
    event = only(costs)
    assert (event.status, event.error_type) == ("error", "ReadTimeout")


async def test_async_stream_cut_mid_way_is_an_api_connection_error(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), drop_after=2))
    async with AsyncClient(provider.openai_url, KEY) as client:
        stream = await client.stream_chat("gpt-4o-mini", MESSAGES)
        with pytest.raises(APIConnectionError) as info:
            _ = [chunk async for chunk in stream]
    assert str(info.value).startswith("could not reach 127.0.0.1 (RemoteProtocolError: ")
    assert_no_chain(info.value)
    assert only(costs).error_type == "RemoteProtocolError"


def test_connection_error_keeps_no_request(costs: CapturedCosts) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with (
        Client(f"http://127.0.0.1:{port}/v1", KEY, max_retries=0) as client,
        pytest.raises(APIConnectionError) as info,
    ):
        client.chat("gpt-4o-mini", MESSAGES)
    assert_no_chain(info.value)
    assert [type(e) for e in chain(info.value)] == [APIConnectionError]


async def test_async_timeout_keeps_no_request(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue("/chat/completions", Reply(json={}, delay=0.5))
    async with AsyncClient(provider.openai_url, KEY, timeout=0.1, max_retries=0) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.chat("gpt-4o-mini", MESSAGES)
    assert_no_chain(info.value)
    assert [type(e) for e in chain(info.value)] == [APITimeoutError]


# -- 5. a password in base_url ------------------------------------------------------------------
def test_password_in_base_url_is_masked() -> None:
    client = Client("https://alice:s3cretpw@proxy.example.com/v1", KEY)
    assert repr(client) == "Client(base_url='https://alice:***@proxy.example.com/v1')"
    client.close()
    with pytest.raises(ValueError) as info:
        Client("htps://alice:s3cretpw@proxy.example.com/v1", KEY)
    assert str(info.value) == (
        "base_url must be an http(s) URL, got 'htps://alice:***@proxy.example.com/v1'"
    )


# -- 6. Retry-After on 5xx ------------------------------------------------------------------------
def test_retry_after_is_honoured_on_a_503(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue("/chat/completions", openai_error(503, retry_after="0.4"))
    with make(provider) as client:  # the fallback waits nothing: only Retry-After can wait
        started = time.monotonic()
        reply = client.chat("gpt-4o-mini", MESSAGES)
        waited = time.monotonic() - started
    assert reply["usage"]["total_tokens"] == 2500
    assert 0.4 <= waited < 3.0
    assert [(e.error_type, e.cost.total) for e in costs] == [("http_503", None), (None, CHAT_COST)]


def test_503_asking_for_too_long_a_wait_is_not_retried(provider: FakeProvider) -> None:
    provider.enqueue("/chat/completions", openai_error(503, "Overloaded", retry_after="3600"))
    with make(provider) as client, pytest.raises(ServerError) as info:
        client.chat("gpt-4o-mini", MESSAGES)
    assert info.value.retry_after == 3600.0
    assert str(info.value) == (
        "127.0.0.1 answered HTTP 503 Service Unavailable (retry after 3600 s): Overloaded"
    )
    assert len(provider.requests_to("/chat/completions")) == 1
    # the same rule as a 429
    provider.enqueue("/chat/completions", openai_error(429, retry_after="3600"))
    with make(provider) as client, pytest.raises(RateLimitedByProvider) as limited:
        client.chat("gpt-4o-mini", MESSAGES)
    assert limited.value.retry_after == 3600.0
    assert len(provider.requests_to("/chat/completions")) == 2


# -- 8. messages and input of the wrong shape -----------------------------------------------------
def test_wrong_messages_and_input_are_refused_locally(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    example = "[{'role': 'user', 'content': 'Hi'}]"
    with make(provider) as client:
        for messages, expected in [
            ("Hello", f"messages must be a list of message dicts such as {example}, got 'Hello'"),
            (None, f"messages must be a list of message dicts such as {example}, got None"),
            (
                {"role": "user", "content": "Hi"},
                f"messages must be a list of message dicts such as {example}, "
                "got {'role': 'user', 'content': 'Hi'}",
            ),
            (
                ["Hi"],
                "messages[0] must be a message dict such as "
                "{'role': 'user', 'content': 'Hi'}, got 'Hi'",
            ),
        ]:
            with pytest.raises(ValueError) as info:
                client.chat("gpt-4o-mini", messages)  # type: ignore[arg-type]
            assert str(info.value) == expected
            with pytest.raises(ValueError) as info:
                client.stream_chat("gpt-4o-mini", messages)  # type: ignore[arg-type]
            assert str(info.value) == expected
        with pytest.raises(ValueError) as info:
            client.embeddings("text-embedding-3-small", 123)  # type: ignore[arg-type]
        assert str(info.value) == (
            "input must be a string or a list of strings (or of token ids), got 123"
        )
        with pytest.raises(ValueError) as info:
            client.embeddings("text-embedding-3-small", ["a", None])  # type: ignore[list-item]
        assert str(info.value) == (
            "input[1] must be a string, a token id or a list of token ids, got None"
        )
        assert provider.requests == []
        # the right shapes still go through: a tuple of messages, token ids
        client.chat("gpt-4o-mini", tuple(MESSAGES))
        client.embeddings("text-embedding-3-small", [[1, 2, 3], [4]])
    assert provider.requests[0].json["messages"] == MESSAGES
    assert provider.requests[1].json["input"] == [[1, 2, 3], [4]]
    assert len(list(costs)) == 2


async def test_async_wrong_messages_are_refused_locally(provider: FakeProvider) -> None:
    async with AsyncClient(provider.openai_url, KEY) as client:
        with pytest.raises(ValueError, match=r"got 'Hello'$"):
            await client.chat("gpt-4o-mini", "Hello")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"got None$"):
            await client.stream_chat("gpt-4o-mini", None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"got 123$"):
            await client.embeddings("text-embedding-3-small", 123)  # type: ignore[arg-type]
    assert provider.requests == []


# -- 9. the scrubber keeps ordinary words ----------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        "Invalid key-value pair in 'metadata': keys must be strings",
        "Unknown parameter: 'response_format.json_schema.schema.properties.key_name'",
        "Invalid 'tools[0].function.name': pk_lookup_table",
        "Invalid value for 'token': expected an integer",
        "Key_Value and api_key_name are fields",
    ],
)
def test_scrub_keeps_ordinary_words(message: str) -> None:
    from costledger._http._errors import scrub

    assert scrub(message, KEY) == message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("You passed sk-proj-********wQx.", "You passed [redacted]."),
        ("masked sk-abc***xyz here", "masked [redacted] here"),
        ("key sk-ant-api03-abcdef and x", "key [redacted] and x"),
        ("mailgun key-3ax6xnjp29jd6fds4gc373sgvjxteol0 left", "mailgun [redacted] left"),
        ("stripe sk_live_51H8abcDEFghiJKLmnoPQRs", "stripe [redacted]"),
        ("groq gsk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a.", "groq [redacted]."),
        ("header Authorization: Bearer abc.def.ghi", "header Authorization: [redacted]"),
    ],
)
def test_scrub_still_removes_keys(message: str, expected: str) -> None:
    from costledger._http._errors import scrub

    assert scrub(message, None) == expected


def test_bad_request_names_the_field(provider: FakeProvider) -> None:
    said = "Invalid 'tools[0].function.name': pk_lookup_table"
    provider.enqueue("/chat/completions", openai_error(400, said))
    with make(provider) as client, pytest.raises(BadRequestError) as info:
        client.chat("gpt-4o-mini", MESSAGES)
    assert info.value.provider_message == said
    assert str(info.value) == f"127.0.0.1 answered HTTP 400 Bad Request: {said}"


@pytest.mark.parametrize("value", ["1_0", "inf", "nan", "1e3", "-5", " 3 x"])
def test_a_retry_after_that_is_not_plain_digits_or_a_date_is_ignored(value: str) -> None:
    from costledger._http._errors import parse_retry_after

    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


def test_retry_after_digits_and_milliseconds_are_read() -> None:
    from costledger._http._errors import parse_retry_after

    assert parse_retry_after({"retry-after": " 3 "}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25


@pytest.mark.parametrize("value", [None, 42, {"role": "user"}])
def test_responses_input_of_the_wrong_shape_is_refused_naming_it(value: Any) -> None:
    from costledger.http import Client

    with (
        Client(base_url="http://127.0.0.1:9", api_key="sk-test-0000") as client,
        pytest.raises(ValueError, match="input must be a string or a list of input items"),
    ):
        client.responses("gpt-5", value)
