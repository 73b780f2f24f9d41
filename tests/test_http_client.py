"""``costledger.http.Client`` / ``AsyncClient`` against the local fake provider: results,
exact costs, retries (Retry-After honoured), clear errors that never show the API key."""

from __future__ import annotations

import logging
import time
import traceback
from decimal import Decimal
from typing import Any

import pytest
from tenacity import retry_if_exception_type, wait_none

from costledger import BudgetExceeded, Tracker, Usage, UsageEvent
from costledger._tracker import Call
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
    retry_if_transient,
    wait_retry_after,
)
from costledger.testing import CapturedCosts, InMemoryLedger

from ._fake_provider import FakeProvider, Reply, chat_completion, chat_stream, openai_error

KEY = "sk-proj-PLANTEDk3y-5b1e9c0d2f7a4e6b8c1d3f5a7xQz"
MESSAGES = [{"role": "user", "content": "Say hello"}]
CHAT_COST = Decimal("0.000525")
RESPONSES_COST = Decimal("0.00054")
EMBEDDINGS_COST = Decimal("0.00000024")


# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


def make(fake: FakeProvider, **kw: Any) -> Client:
    kw.setdefault("wait", wait_retry_after(wait_none()))
    return Client(fake.openai_url, KEY, **kw)


def test_chat_responses_embeddings(provider: FakeProvider, costs: CapturedCosts) -> None:
    with make(provider) as client:
        reply = client.chat("gpt-4o-mini", MESSAGES, temperature=0)
        assert reply["choices"][0]["message"]["content"] == "Hello there!"
        assert client.responses("gpt-4o-mini", "Say hello")["output"][0]["type"] == "message"
        assert len(client.embeddings("text-embedding-3-small", ["a", "b", "c"])["data"]) == 3
    sent = provider.requests_to("/chat/completions")[0]
    assert sent.json == {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0}
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert [e.cost.total for e in costs] == [CHAT_COST, RESPONSES_COST, EMBEDDINGS_COST]
    assert {(e.source, e.provider, e.status) for e in costs} == {("http", "openai", "ok")}


def test_stream_chat(provider: FakeProvider, costs: CapturedCosts) -> None:
    with make(provider) as client, client.stream_chat("gpt-4o-mini", MESSAGES) as stream:
        chunks = list(stream)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello there!"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 2000
    (event,) = list(costs)
    assert event.streamed
    assert event.cost.total == CHAT_COST
    assert event.usage == Usage(
        input_tokens=2000, output_tokens=500, cache_read_tokens=1000, reasoning_tokens=200
    )


def test_retry_after_is_honoured(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue(
        "/chat/completions",
        openai_error(429, retry_after="0.05"),
        openai_error(429, retry_after="0.05"),
    )
    started = time.perf_counter()
    with Client(provider.openai_url, KEY) as client:  # the default wait strategy
        client.chat("gpt-4o-mini", MESSAGES)
    assert time.perf_counter() - started >= 0.1
    assert len(provider.requests_to("/chat/completions")) == 3
    # each attempt that reached the provider is one event
    assert [(e.status, e.error_type) for e in costs] == [
        ("error", "http_429"),
        ("error", "http_429"),
        ("ok", None),
    ]
    assert costs.total == CHAT_COST


def test_rate_limited_after_the_retries(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue(
        "/chat/completions",
        *(
            openai_error(429, "Rate limit reached for gpt-4o-mini", retry_after="0.01")
            for _ in "abc"
        ),
    )
    with make(provider, max_retries=2) as client, pytest.raises(RateLimitedByProvider) as info:
        client.chat("gpt-4o-mini", MESSAGES)
    err = info.value
    assert err.status_code == 429
    assert err.retry_after == 0.01
    assert err.error_code == "rate_limit_exceeded"
    assert "Rate limit reached for gpt-4o-mini" in str(err)
    assert len(provider.requests_to("/chat/completions")) == 3
    assert len(costs) == 3


def test_exhausted_quota_is_not_retried(provider: FakeProvider) -> None:
    provider.enqueue(
        "/chat/completions", openai_error(429, "You exceeded your quota", code="insufficient_quota")
    )
    with make(provider) as client, pytest.raises(RateLimitedByProvider):
        client.chat("gpt-4o-mini", MESSAGES)
    assert len(provider.requests_to("/chat/completions")) == 1


def test_server_errors_are_retried(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue("/embeddings", openai_error(500), openai_error(503))
    with make(provider) as client:
        client.embeddings("text-embedding-3-small", "a")
    assert [e.error_type for e in costs] == ["http_500", "http_503", None]
    provider.enqueue("/embeddings", *(openai_error(502) for _ in range(2)))
    with make(provider, max_retries=1) as client, pytest.raises(ServerError) as info:
        client.embeddings("text-embedding-3-small", "a")
    assert info.value.status_code == 502


def test_retry_policies_compose(provider: FakeProvider) -> None:
    provider.enqueue("/chat/completions", openai_error(400))
    policy = retry_if_transient() | retry_if_exception_type(BadRequestError)
    with make(provider, retry=policy) as client:
        client.chat("gpt-4o-mini", MESSAGES)
    assert len(provider.requests_to("/chat/completions")) == 2


def test_bad_request_says_what_the_provider_said(provider: FakeProvider) -> None:
    provider.enqueue("/chat/completions", openai_error(400, "Invalid value for 'temperature'."))
    with make(provider) as client, pytest.raises(BadRequestError) as info:
        client.chat("gpt-4o-mini", MESSAGES, temperature=9)
    assert "Invalid value for 'temperature'." in str(info.value)
    assert "HTTP 400" in str(info.value)
    assert len(provider.requests_to("/chat/completions")) == 1  # not retried


def test_rejected_key_is_never_shown(
    provider: FakeProvider,
    costs: CapturedCosts,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the worst case: a provider that echoes the whole key back, and a partial echo
    message = f"Incorrect API key provided: {KEY}. You passed sk-proj-********xQz."
    provider.enqueue("/chat/completions", openai_error(401, message))
    caplog.set_level(logging.DEBUG)
    with make(provider) as client, pytest.raises(AuthenticationError) as info:
        client.chat("gpt-4o-mini", MESSAGES)
    err = info.value
    outputs = [
        str(err),
        repr(err),
        "".join(traceback.format_exception(err)),
        repr(client),
        caplog.text,
        *capsys.readouterr(),
        repr(list(costs)),
        repr(vars(err)),
    ]
    for text in outputs:
        assert KEY not in text
        assert "PLANTED" not in text
        # the key's last characters, which no event id or hex digest can hold by chance
        assert "xQz" not in text
    assert "rejected the API key" in str(err)
    assert "Incorrect API key provided" in str(err)
    assert len(provider.requests_to("/chat/completions")) == 1  # not retried
    assert [e.error_type for e in costs] == ["http_401"]


def test_unreachable_provider(costs: CapturedCosts) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    client = Client(f"http://127.0.0.1:{port}/v1", KEY, max_retries=1, wait=wait_none())
    with client, pytest.raises(APIConnectionError) as info:
        client.chat("gpt-4o-mini", MESSAGES)
    assert "could not reach 127.0.0.1" in str(info.value)
    assert KEY not in "".join(traceback.format_exception(info.value))
    assert list(costs) == []  # nothing reached a provider


def test_timeout(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue("/chat/completions", Reply(json=chat_completion(), delay=0.5))
    with make(provider, timeout=0.1, max_retries=0) as client, pytest.raises(APITimeoutError):
        client.chat("gpt-4o-mini", MESSAGES)
    (event,) = list(costs)  # it reached the provider, which may bill it
    assert (event.status, event.error_type) == ("error", "ReadTimeout")


def test_stream_chat_retries_before_the_first_chunk(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue("/chat/completions", openai_error(500))
    with make(provider) as client:
        stream = client.stream_chat("gpt-4o-mini", MESSAGES, stream=True)
        assert len(list(stream)) == 6
    assert [e.error_type for e in costs] == ["http_500", None]


def test_guard_refusal_is_not_retried(provider: FakeProvider, costs: CapturedCosts) -> None:
    class Refuse:
        def reserve(self, call: Call, tracker: Tracker) -> Any:
            raise BudgetExceeded(
                "no budget",
                scope="team",
                key="search",
                limit=Decimal(0),
                spent=Decimal(0),
                reserved=Decimal(0),
                resets_at=None,
            )

        def settle(self, token: Any, event: UsageEvent) -> None: ...

        def release(self, token: Any) -> None: ...

    tracker = Tracker(ledger=InMemoryLedger(), guards=[Refuse()], log="off")
    with make(provider, tracker=tracker) as client, pytest.raises(BudgetExceeded):
        client.chat("gpt-4o-mini", MESSAGES)
    assert provider.requests == []
    assert list(costs) == []


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch, provider: FakeProvider) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key is missing"):
        Client(provider.openai_url)
    with pytest.raises(ValueError, match=r"max_retries must be a whole number >= 0, got -1"):
        Client(provider.openai_url, KEY, max_retries=-1)
    with pytest.raises(ValueError, match=r"base_url must be an http\(s\) URL, got 'ftp://x'"):
        Client("ftp://x", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", provider.openai_url)
    with Client() as client:
        assert repr(client) == f"Client(base_url={provider.openai_url!r})"
        with pytest.raises(ValueError, match="use stream_chat"):
            client.chat("gpt-4o-mini", MESSAGES, stream=True)
        with pytest.raises(ValueError, match="model must be a non-empty string, got ''"):
            client.chat("", MESSAGES)


async def test_async_client(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue("/chat/completions", openai_error(429, retry_after="0.01"))
    async with AsyncClient(provider.openai_url, KEY, wait=wait_retry_after(wait_none())) as client:
        reply = await client.chat("gpt-4o-mini", MESSAGES)
        assert reply["usage"]["total_tokens"] == 2500
        await client.responses("gpt-4o-mini", "hi")
        await client.embeddings("text-embedding-3-small", ["x"])
        async with await client.stream_chat("gpt-4o-mini", MESSAGES) as stream:
            chunks = [c async for c in stream]
        assert chunks[-1]["usage"]["completion_tokens"] == 500
        provider.enqueue("/chat/completions", openai_error(401, f"bad key {KEY}"))
        with pytest.raises(AuthenticationError) as info:
            await client.chat("gpt-4o-mini", MESSAGES)
        assert KEY not in str(info.value)
    assert [(e.error_type, e.cost.total) for e in costs] == [
        ("http_429", None),
        (None, CHAT_COST),
        (None, RESPONSES_COST),
        (None, EMBEDDINGS_COST),
        (None, CHAT_COST),
        ("http_401", None),
    ]


def test_stream_chat_error_mid_stream(provider: FakeProvider, costs: CapturedCosts) -> None:
    failing = '{"error":{"message":"The server had an error","type":"server_error"}}'
    provider.enqueue("/chat/completions", Reply(sse=[chat_stream()[0], (None, failing)]))
    with make(provider) as client, pytest.raises(APIError, match="failed mid-stream"):
        list(client.stream_chat("gpt-4o-mini", MESSAGES))
    (event,) = list(costs)
    assert (event.status, event.error_type) == ("error", "server_error")


def test_default_wait_doubles_from_half_a_second_to_eight_plus_jitter() -> None:
    from tenacity import RetryCallState

    from costledger._http._retry import default_wait

    wait = default_wait()
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        waits = [wait(state) for _ in range(200)]
        assert base <= min(waits)
        assert max(waits) <= base + 1.0
        assert max(waits) - min(waits) > 0.5  # jittered
