"""The tracking transports under the real OpenAI and Anthropic SDKs, plain httpx and httpx2,
sync and async, against a real local HTTP server in the providers' shapes."""

from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from costledger import BudgetExceeded, Tracker, Usage, UsageEvent, attribute
from costledger._tracker import Call
from costledger.http import (
    AsyncHttpx2TrackingTransport,
    AsyncTrackingTransport,
    Httpx2TrackingTransport,
    TrackingTransport,
    araise_guard_refusals,
    raise_guard_refusals,
)
from costledger.testing import CapturedCosts, InMemoryLedger

from ._fake_provider import (
    FakeProvider,
    Reply,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    chat_completion,
    chat_stream,
    openai_error,
    responses_stream,
)

KEY = "sk-test-transport-0000"
MESSAGES = [{"role": "user", "content": "Say hello"}]

# Prices: gpt-4o-mini $0.15/MTok in, $0.075 cached, $0.60 out; text-embedding-3-small $0.02;
# claude-3-5-haiku $0.80 in, $0.08 cache read, $1.00 cache write (5 min), $4 out;
# claude-sonnet-4 $3 in, $0.30 cache read, $3.75 cache write, $15 out.
CHAT_USAGE = Usage(
    input_tokens=2000, output_tokens=500, cache_read_tokens=1000, reasoning_tokens=200
)
CHAT_COST = Decimal("0.000525")  # 1000*0.15 + 1000*0.075 + 500*0.60, per million
RESPONSES_USAGE = Usage(
    input_tokens=3000, output_tokens=400, cache_read_tokens=2000, reasoning_tokens=100
)
RESPONSES_COST = Decimal("0.00054")  # 1000*0.15 + 2000*0.075 + 400*0.60
EMBEDDINGS_USAGE = Usage(input_tokens=12)
EMBEDDINGS_COST = Decimal("0.00000024")  # 12*0.02
ANTHROPIC_USAGE = Usage(
    input_tokens=7000, output_tokens=300, cache_read_tokens=4000, cache_write_tokens=2000
)
HAIKU_COST = Decimal("0.00432")  # 1000*0.80 + 4000*0.08 + 2000*1.00 + 300*4
SONNET4_COST = Decimal("0.0162")  # 1000*3 + 4000*0.30 + 2000*3.75 + 300*15

FLAVOURS = ["httpx", "httpx2"]


# a fake provider per module, reset before each test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_provider")


def only(costs: CapturedCosts) -> UsageEvent:
    events = list(costs)
    assert len(events) == 1, events
    return events[0]


def sync_http(flavour: str, **kw: Any) -> Any:
    if flavour == "httpx":
        return httpx.Client(transport=TrackingTransport(**kw))
    return httpx2.Client(transport=Httpx2TrackingTransport(**kw))


def async_http(flavour: str, **kw: Any) -> Any:
    if flavour == "httpx":
        return httpx.AsyncClient(transport=AsyncTrackingTransport(**kw))
    return httpx2.AsyncClient(transport=AsyncHttpx2TrackingTransport(**kw))


def openai_client(fake: FakeProvider, flavour: str, max_retries: int = 0, **kw: Any) -> Any:
    return openai.OpenAI(
        base_url=fake.openai_url,
        api_key=KEY,
        http_client=sync_http(flavour, **kw),
        max_retries=max_retries,
    )


def anthropic_client(fake: FakeProvider, max_retries: int = 0, **kw: Any) -> Any:
    middleware = kw.pop("middleware", ())
    return anthropic.Anthropic(
        base_url=fake.base_url,
        api_key=KEY,
        http_client=httpx2.Client(transport=Httpx2TrackingTransport(**kw)),
        max_retries=max_retries,
        middleware=middleware,
    )


def assert_priced(event: UsageEvent, usage: Usage, cost: Decimal) -> None:
    assert event.usage == usage
    assert event.cost.status == "priced"
    assert event.cost.total == cost
    assert event.status == "ok"
    assert event.source == "http"


# -- OpenAI SDK ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_chat(provider: FakeProvider, costs: CapturedCosts, flavour: str) -> None:
    provider.enqueue("/chat/completions", Reply(json=chat_completion("gpt-4o-mini-2024-07-18")))
    client = openai_client(provider, flavour)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello there!"
    event = only(costs)
    assert_priced(event, CHAT_USAGE, CHAT_COST)
    assert (event.model, event.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert event.provider == "openai"
    assert event.request_id == "chatcmpl-fake0001"
    assert event.streamed is False
    # a request that is not a stream is sent unchanged
    assert "stream_options" not in provider.requests_to("/chat/completions")[0].json


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_chat_stream_gets_usage_added(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    client = openai_client(provider, flavour)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there!"
    # the one extra final chunk the consumer sees: no choices, the usage
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2000
    sent = provider.requests_to("/chat/completions")[0].json
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == MESSAGES
    event = only(costs)
    assert_priced(event, CHAT_USAGE, CHAT_COST)
    assert event.streamed is True


@pytest.mark.parametrize("line_end", [b"\r", b"\r\n"], ids=["cr", "crlf"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_chat_stream_with_cr_line_ends(
    provider: FakeProvider, costs: CapturedCosts, flavour: str, line_end: bytes
) -> None:
    """SSE lines may end in a bare CR or CRLF: the SDK reads such a stream, so does the scanner."""
    body = b"".join(
        f"data: {data}\n\n".encode() for _, data in chat_stream("gpt-4o-mini-2024-07-18")
    ).replace(b"\n", line_end)
    provider.enqueue(
        "/chat/completions", Reply(raw=body, headers={"Content-Type": "text/event-stream"})
    )
    client = openai_client(provider, flavour)
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there!"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2000
    event = only(costs)
    assert_priced(event, CHAT_USAGE, CHAT_COST)
    assert event.response_model == "gpt-4o-mini-2024-07-18"
    assert event.streamed is True


def test_explicit_include_usage_false_is_respected(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai_client(provider, "httpx")
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": False},
    )
    assert all(c.choices for c in stream)
    assert provider.requests_to("/chat/completions")[0].json["stream_options"] == {
        "include_usage": False
    }
    event = only(costs)
    assert event.status == "ok"
    assert event.cost.status == "not_priced"
    assert event.cost.total is None  # never a silent $0
    assert event.metadata["costledger.usage_missing"] == "no usage in the stream"


def test_include_usage_off_leaves_the_body_alone(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    client = openai_client(provider, "httpx2", include_usage=False)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "stream_options" not in provider.requests_to("/chat/completions")[0].json
    assert only(costs).cost.status == "not_priced"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_responses_json_and_stream(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    client = openai_client(provider, flavour)
    reply = client.responses.create(model="gpt-4o-mini", input="Say hello")
    assert reply.output_text == "Hello there!"
    events = list(client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True))
    assert events[-1].type == "response.completed"
    json_event, stream_event = list(costs)
    assert_priced(json_event, RESPONSES_USAGE, RESPONSES_COST)
    assert_priced(stream_event, RESPONSES_USAGE, RESPONSES_COST)
    assert (json_event.streamed, stream_event.streamed) == (False, True)
    assert stream_event.request_id == "resp_fake0001"
    # the Responses API needs no stream_options: the body goes out unchanged
    assert "stream_options" not in provider.requests_to("/responses")[1].json


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_embeddings(provider: FakeProvider, costs: CapturedCosts, flavour: str) -> None:
    client = openai_client(provider, flavour)
    reply = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(reply.data) == 2
    event = only(costs)
    assert_priced(event, EMBEDDINGS_USAGE, EMBEDDINGS_COST)
    assert event.model == "text-embedding-3-small"


def test_gzip_bodies_and_streams(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue(
        "/chat/completions",
        Reply(json=chat_completion(), gzip=True),
        Reply(sse=chat_stream(), gzip=True),
    )
    client = openai_client(provider, "httpx")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    first, second = list(costs)
    assert_priced(first, CHAT_USAGE, CHAT_COST)
    assert_priced(second, CHAT_USAGE, CHAT_COST)


# -- Anthropic SDK ---------------------------------------------------------------------------------
def test_anthropic_messages(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = anthropic_client(provider)
    message = client.messages.create(
        model="claude-3-5-haiku-20241022", max_tokens=100, messages=MESSAGES
    )
    assert message.content[0].text == "Hello there!"
    event = only(costs)
    assert_priced(event, ANTHROPIC_USAGE, HAIKU_COST)
    assert event.provider == "anthropic"
    assert event.request_id == "msg_fake0001"


def test_anthropic_stream_counts_cumulative_output_once(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    # two message_delta events: 120 then 300 output tokens, cumulative -> 300, not 421
    provider.enqueue(
        "/v1/messages",
        Reply(
            sse=anthropic_stream(
                "claude-sonnet-4-20250514",
                delta_usages=[{"output_tokens": 120}, {"output_tokens": 300}],
            )
        ),
    )
    client = anthropic_client(provider)
    with client.messages.stream(
        model="claude-sonnet-4-20250514", max_tokens=300, messages=MESSAGES
    ) as stream:
        assert "".join(stream.text_stream) == "Hello there!"
        final = stream.get_final_message()
    assert final.usage.output_tokens == 300  # the SDK agrees
    event = only(costs)
    assert_priced(event, ANTHROPIC_USAGE, SONNET4_COST)
    assert event.streamed is True
    assert event.response_model == "claude-sonnet-4-20250514"


# -- async ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_async_openai(provider: FakeProvider, costs: CapturedCosts, flavour: str) -> None:
    client = openai.AsyncOpenAI(
        base_url=provider.openai_url,
        api_key=KEY,
        http_client=async_http(flavour),
        max_retries=0,
    )
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None
    stream2 = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
    assert [e async for e in stream2][-1].type == "response.completed"
    chat, chat_streamed, responses = list(costs)
    assert_priced(chat, CHAT_USAGE, CHAT_COST)
    assert_priced(chat_streamed, CHAT_USAGE, CHAT_COST)
    assert chat_streamed.streamed
    assert_priced(responses, RESPONSES_USAGE, RESPONSES_COST)
    await client.close()


async def test_async_anthropic_stream(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=provider.base_url,
        api_key=KEY,
        http_client=httpx2.AsyncClient(transport=AsyncHttpx2TrackingTransport()),
        max_retries=0,
    )
    async with client.messages.stream(
        model="claude-3-5-haiku-20241022", max_tokens=50, messages=MESSAGES
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "Hello there!"
    assert_priced(only(costs), ANTHROPIC_USAGE, HAIKU_COST)
    await client.close()


# -- streams are passed through, not buffered ------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stream_is_not_buffered(provider: FakeProvider, costs: CapturedCosts, flavour: str) -> None:
    gate = threading.Event()
    reply = Reply(sse=chat_stream(), pause_after=2, gate=gate)
    provider.enqueue("/chat/completions", reply)
    client = openai_client(provider, flavour)
    seen = 0
    for _chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ):
        if seen == 0:
            # the consumer holds the first chunk while the server still waits to send the rest
            assert not reply.sent_all.is_set()
            assert list(costs) == []
            gate.set()
        seen += 1
    assert not reply.gate_timed_out
    assert seen == 6
    assert_priced(only(costs), CHAT_USAGE, CHAT_COST)


async def test_async_stream_is_not_buffered(provider: FakeProvider, costs: CapturedCosts) -> None:
    gate = threading.Event()
    reply = Reply(sse=anthropic_stream(), pause_after=3, gate=gate)
    provider.enqueue("/v1/messages", reply)
    async with (
        httpx.AsyncClient(transport=AsyncTrackingTransport()) as client,
        client.stream(
            "POST",
            f"{provider.base_url}/v1/messages",
            json={"model": "claude-3-5-haiku-20241022", "max_tokens": 9, "stream": True},
        ) as response,
    ):
        first = True
        async for _line in response.aiter_lines():
            if first:
                assert not reply.sent_all.is_set()
                gate.set()
                first = False
    assert not reply.gate_timed_out
    assert_priced(only(costs), ANTHROPIC_USAGE, HAIKU_COST)


# -- streams that end early ------------------------------------------------------------------------
def test_openai_stream_closed_early_is_cancelled(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    gate = threading.Event()
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), pause_after=2, gate=gate))
    client = openai_client(provider, "httpx2")
    try:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        next(iter(stream))
        stream.close()
    finally:
        gate.set()
    event = only(costs)
    assert event.status == "cancelled"
    assert event.streamed is True
    assert event.cost.status == "not_priced"  # OpenAI reports usage only at the very end


def test_anthropic_stream_closed_early_keeps_the_usage_known(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    gate = threading.Event()
    provider.enqueue("/v1/messages", Reply(sse=anthropic_stream(), pause_after=4, gate=gate))
    client = anthropic_client(provider)
    try:
        with client.messages.stream(
            model="claude-3-5-haiku-20241022", max_tokens=50, messages=MESSAGES
        ) as stream:
            for _text in stream.text_stream:
                break
    finally:
        gate.set()
    event = only(costs)
    assert event.status == "cancelled"
    # message_start's input and cache counts, and the one output token reported so far
    assert event.usage == Usage(
        input_tokens=7000, output_tokens=1, cache_read_tokens=4000, cache_write_tokens=2000
    )
    assert event.cost.total == Decimal("0.003124")  # 1000*0.80 + 4000*0.08 + 2000*1.00 + 1*4


def test_plain_httpx_stream_abandoned_mid_way(provider: FakeProvider, costs: CapturedCosts) -> None:
    gate = threading.Event()
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), pause_after=1, gate=gate))
    with httpx.Client(transport=TrackingTransport()) as client:
        try:
            with client.stream(
                "POST",
                f"{provider.openai_url}/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
            ) as response:
                for _line in response.iter_lines():
                    break
        finally:
            gate.set()
    assert only(costs).status == "cancelled"


def test_broken_stream_is_an_error(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue("/chat/completions", Reply(sse=chat_stream(), drop_after=2))
    with (
        httpx.Client(transport=TrackingTransport()) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream(
            "POST",
            f"{provider.openai_url}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        ) as response,
    ):
        response.read()
    event = only(costs)
    assert event.status == "error"
    assert event.error_type == "RemoteProtocolError"


def test_stream_error_event_is_an_error(provider: FakeProvider, costs: CapturedCosts) -> None:
    overloaded = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    provider.enqueue("/v1/messages", Reply(sse=[*anthropic_stream()[:4], ("error", overloaded)]))
    client = anthropic_client(provider)
    with pytest.raises(anthropic.APIStatusError):
        list(
            client.messages.create(
                model="claude-3-5-haiku-20241022", max_tokens=5, messages=MESSAGES, stream=True
            )
        )
    event = only(costs)
    assert event.status == "error"
    assert event.error_type == "overloaded_error"


# -- HTTP errors and retries -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "sdk_error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (401, openai.AuthenticationError),
    ],
)
def test_error_status_recorded(
    provider: FakeProvider, costs: CapturedCosts, status: int, sdk_error: type[Exception]
) -> None:
    provider.enqueue("/chat/completions", openai_error(status))
    client = openai_client(provider, "httpx2")
    with pytest.raises(sdk_error):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    event = only(costs)
    assert event.status == "error"
    assert event.error_type == f"http_{status}"
    assert event.cost.status == "not_priced"
    assert event.request_id == "req_fake0001"


def test_each_sdk_attempt_tracked_once(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue(
        "/v1/messages",
        anthropic_error(429, retry_after="0.05"),
        anthropic_error(529, retry_after="0.01"),
        Reply(json=anthropic_message()),
    )
    client = anthropic_client(provider, max_retries=2)
    client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, messages=MESSAGES)
    assert len(provider.requests_to("/v1/messages")) == 3
    rate_limited, overloaded, ok = list(costs)
    assert (rate_limited.error_type, overloaded.error_type) == ("http_429", "http_529")
    assert_priced(ok, ANTHROPIC_USAGE, HAIKU_COST)
    assert len({rate_limited.id, overloaded.id, ok.id}) == 3


# -- guards ---------------------------------------------------------------------------------------
class RecordingGuard:
    """A guard implementing the protocol: refuses when told to, records what it saw."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str | None, str | None, int | None]] = []
        self.settled: list[UsageEvent] = []
        self.released: list[Any] = []

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        self.seen.append((call.model, call.prompt_text, call.max_output_tokens))
        if self.refuse:
            raise BudgetExceeded(
                "test budget exhausted",
                scope="test",
                key=None,
                limit=Decimal("1"),
                spent=Decimal("1"),
                reserved=Decimal("0"),
                resets_at=None,
            )
        return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.settled.append(event)

    def release(self, token: Any) -> None:
        self.released.append(token)


class AsyncRecordingGuard(RecordingGuard):
    async def areserve(self, call: Call, tracker: Tracker) -> Any:
        return self.reserve(call, tracker)


def guarded(guard: RecordingGuard) -> Tracker:
    return Tracker(ledger=InMemoryLedger(), guards=[guard], log="off")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_guard_refusal_raised_before_any_request(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    guard = RecordingGuard(refuse=True)
    client = openai_client(provider, flavour, max_retries=2, tracker=guarded(guard))
    with pytest.raises(BudgetExceeded):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_completion_tokens=64
        )
    assert provider.requests == []
    assert list(costs) == []
    assert guard.seen == [("gpt-4o-mini", "Say hello", 64)]


def test_guard_refusal_through_the_anthropic_sdk(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    guard = RecordingGuard(refuse=True)
    tracker = guarded(guard)
    # with the middleware, the refusal reaches the caller as it is, and is not retried
    client = anthropic_client(
        provider, max_retries=2, tracker=tracker, middleware=[raise_guard_refusals]
    )
    with pytest.raises(BudgetExceeded):
        client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, messages=MESSAGES)
    assert len(guard.seen) == 1
    # without it the SDK wraps it in its connection error (still no request is sent)
    bare = anthropic_client(provider, max_retries=0, tracker=tracker)
    with pytest.raises(anthropic.APIConnectionError) as info:
        bare.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, messages=MESSAGES)
    assert isinstance(info.value.__cause__, BudgetExceeded)
    assert provider.requests == []
    assert list(costs) == []


async def test_async_guard_refusal(provider: FakeProvider, costs: CapturedCosts) -> None:
    guard = AsyncRecordingGuard(refuse=True)
    client = anthropic.AsyncAnthropic(
        base_url=provider.base_url,
        api_key=KEY,
        http_client=httpx2.AsyncClient(
            transport=AsyncHttpx2TrackingTransport(tracker=guarded(guard))
        ),
        max_retries=1,
        middleware=[araise_guard_refusals],
    )
    with pytest.raises(BudgetExceeded):
        await client.messages.create(
            model="claude-3-5-haiku-20241022",
            max_tokens=7,
            system="Be brief.",
            messages=MESSAGES,
        )
    assert guard.seen == [("claude-3-5-haiku-20241022", "Be brief.\nSay hello", 7)]
    assert provider.requests == []
    assert list(costs) == []


def test_guard_settled_with_the_event(provider: FakeProvider, costs: CapturedCosts) -> None:
    guard = RecordingGuard()
    client = openai_client(provider, "httpx", tracker=guarded(guard))
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    event = only(costs)
    assert guard.settled == [event]
    assert event.cost.total == CHAT_COST


def test_connect_error_releases_and_records_nothing(costs: CapturedCosts) -> None:
    guard = RecordingGuard()
    with (
        socket_closed_port() as url,
        httpx.Client(transport=TrackingTransport(tracker=guarded(guard))) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.post(f"{url}/v1/chat/completions", json={"model": "gpt-4o-mini"})
    assert list(costs) == []
    assert len(guard.released) == 1
    assert guard.settled == []


class socket_closed_port:
    """A URL on 127.0.0.1 where nothing listens."""

    def __enter__(self) -> str:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        pass


# -- everything else passes through ---------------------------------------------------------------
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_other_requests_pass_through(
    provider: FakeProvider, costs: CapturedCosts, flavour: str
) -> None:
    client = openai_client(provider, flavour)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    with sync_http(flavour) as http:
        response = http.post(f"{provider.openai_url}/files", content=b"raw bytes")
        assert response.status_code == 404
        assert http.get(f"{provider.openai_url}/responses").status_code == 404
    assert provider.requests[1].body == b"raw bytes"
    assert list(costs) == []


def test_attribution_and_provider_override(provider: FakeProvider, costs: CapturedCosts) -> None:
    client = openai_client(provider, "httpx", provider="azure")
    with attribute(user="u-42", feature="search", tags=["beta"]):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    event = only(costs)
    assert (event.user, event.feature, event.tags) == ("u-42", "search", ("beta",))
    assert event.provider == "azure"


def test_in_memory_bodies_from_a_mock_transport(costs: CapturedCosts) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_completion("gpt-4o-mini-2024-07-18"))

    with httpx.Client(transport=TrackingTransport(httpx.MockTransport(handler))) as client:
        reply = client.post(
            "https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"}
        )
    assert reply.json()["usage"]["prompt_tokens"] == 2000
    assert_priced(only(costs), CHAT_USAGE, CHAT_COST)


# -- host safety -----------------------------------------------------------------------------------
class BrokenLedger:
    """A ledger whose storage is down."""

    def record(self, event: UsageEvent) -> None:
        raise OSError("disk full")


class BuggyGuard(RecordingGuard):
    def reserve(self, call: Call, tracker: Tracker) -> Any:
        raise RuntimeError("guard bug")


def test_tracking_failures_never_break_the_call(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    tracker = Tracker(ledger=BrokenLedger(), guards=[BuggyGuard()], log="off")
    client = openai_client(provider, "httpx2", tracker=tracker)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.usage is not None
    assert reply.usage.total_tokens == 2500
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert len(chunks) == 6
    assert [e.cost.total for e in costs] == [CHAT_COST, CHAT_COST]


def test_unreadable_bodies_pass_through_unpriced(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    provider.enqueue(
        "/chat/completions",
        Reply(raw=b"<html>oops</html>", headers={"Content-Type": "application/json"}),
        Reply(sse=[(None, "{not json"), (None, "[DONE]")]),
        Reply(json=chat_completion(), headers={"Content-Encoding": "compress"}),
    )
    with httpx.Client(transport=TrackingTransport()) as client:
        url = f"{provider.openai_url}/chat/completions"
        assert client.post(url, json={"model": "m"}).content == b"<html>oops</html>"
        assert "not json" in client.post(url, json={"model": "m", "stream": True}).text
        with client.stream("POST", url, json={"model": "m"}) as response:
            raw = b"".join(response.iter_raw())
        assert b"prompt_tokens" in raw
    notes = [e.metadata.get("costledger.usage_missing") for e in costs]
    assert notes == [
        "response body is not a JSON object",
        "no usage in the stream",
        "unsupported content encoding compress",
    ]
    assert all(e.status == "ok" and e.cost.total is None for e in costs)


def test_httpx2_is_optional() -> None:
    code = (
        "import sys; sys.modules['httpx2'] = None\n"
        "import costledger.http as h\n"
        "assert h.TrackingTransport\n"
        "try:\n"
        "    h.Httpx2TrackingTransport\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install httpx2" in out


def test_responses_stream_incomplete_is_ok(provider: FakeProvider, costs: CapturedCosts) -> None:
    provider.enqueue("/responses", Reply(sse=responses_stream(final="response.incomplete")))
    client = openai_client(provider, "httpx")
    list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    assert_priced(only(costs), RESPONSES_USAGE, RESPONSES_COST)


def test_example_runs_offline() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "http_example.py"
    out = subprocess.run(
        [sys.executable, "-W", "ignore", str(example)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "openai chat" in out
    assert "$0.000525000" in out
    assert "$0.00432000" in out
    assert "(http_429)" in out
    assert "(0 requests sent)" in out
    assert "ledger: 6 calls recorded, $0.005895240 in all" in out


def test_response_dropped_unread_is_recorded_cancelled(
    provider: FakeProvider, costs: CapturedCosts
) -> None:
    import gc

    client = httpx.Client(transport=TrackingTransport())
    request = client.build_request(
        "POST",
        f"{provider.openai_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
    )
    response = client.send(request, stream=True)
    assert list(costs) == []
    del response, request
    gc.collect()
    event = only(costs)
    assert (event.status, event.streamed) == ("cancelled", True)
    client.close()
