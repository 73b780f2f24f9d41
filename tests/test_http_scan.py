"""The pieces under the HTTP transport: SSE scanning in any chunking, content decoding,
endpoint and provider detection, Retry-After, error messages."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costledger._http._decode import UnsupportedEncoding, make_decoder
from costledger._http._errors import error_for_status, parse_retry_after, scrub
from costledger._http._request import (
    endpoint_kind,
    provider_for,
    read_request,
    with_stream_usage,
)
from costledger._http._scan import FULL_PARSE_LIMIT, make_scanner, read_json_usage

from ._fake_provider import (
    ANTHROPIC_START_USAGE,
    CHAT_USAGE,
    RESPONSES_USAGE,
    anthropic_stream,
    chat_stream,
    embeddings,
    responses_stream,
)


def sse_bytes(events: list[tuple[str | None, str]]) -> bytes:
    return b"".join(((f"event: {e}\n" if e else "") + f"data: {d}\n\n").encode() for e, d in events)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


def scan(kind: str, data_pieces: list[bytes], content_encoding: str | None = None):  # type: ignore[no-untyped-def]
    scanner = make_scanner(kind, "text/event-stream", make_decoder(content_encoding))  # type: ignore[arg-type]
    for piece in data_pieces:
        scanner.feed(piece)
    return scanner.result()


CHAT = sse_bytes(chat_stream("gpt-4o-mini-2024-07-18"))
RESPONSES = sse_bytes(responses_stream("gpt-4o-mini-2024-07-18"))
ANTHROPIC = sse_bytes(
    anthropic_stream(
        "claude-sonnet-4-20250514",
        delta_usages=[{"output_tokens": 10}, {"output_tokens": 30, "input_tokens": 1000}],
    )
)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_chat_stream_usage_in_any_chunking(cuts: list[int]) -> None:
    result = scan("chat", split_at(CHAT, cuts))
    assert result.complete
    assert result.error is None
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.payload is not None
    assert result.payload["usage"] == CHAT_USAGE
    assert result.payload["choices"] == []


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40))
def test_responses_stream_usage_in_any_chunking(cuts: list[int]) -> None:
    result = scan("responses", split_at(RESPONSES, cuts))
    assert result.complete
    assert result.payload is not None
    assert result.payload["usage"] == RESPONSES_USAGE
    assert result.payload["object"] == "response"


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=5_000), max_size=40))
def test_anthropic_stream_cumulative_deltas_replace_not_add(cuts: list[int]) -> None:
    result = scan("messages", split_at(ANTHROPIC, cuts))
    assert result.complete
    assert result.payload is not None
    usage = result.payload["usage"]
    # the last delta's cumulative output (30), not 1 + 10 + 30; its input replaces the start's
    assert usage["output_tokens"] == 30
    assert usage["input_tokens"] == 1000
    assert usage["cache_read_input_tokens"] == ANTHROPIC_START_USAGE["cache_read_input_tokens"]
    assert result.model == "claude-sonnet-4-20250514"


def test_crlf_line_endings_and_no_event_names() -> None:
    data = sse_bytes(anthropic_stream()).replace(b"\n", b"\r\n")
    data = b"".join(
        line for line in data.splitlines(keepends=True) if not line.startswith(b"event:")
    )
    result = scan("messages", [data])
    assert result.complete
    assert result.payload is not None
    assert result.payload["usage"]["output_tokens"] == 300


def multiline_sse(events: list[tuple[str | None, str]]) -> bytes:
    """An LF stream in SSE's less common forms: a comment first, and each event whose data
    carries usage sent as two ``data:`` lines (joined by the reader with an LF, the
    JSON stays valid; a line end read twice would cut it in two)."""
    out = [": keep-alive\n\n"]
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        i = data.find('"usage"')
        body = f"data: {data}\n" if i < 0 else f"data: {data[:i]}\ndata: {data[i:]}\n"
        out.append(head + body + "\n")
    return "".join(out).encode()


_LINE_END_STREAMS = {
    "chat": multiline_sse(chat_stream("gpt-4o-mini-2024-07-18")),
    "responses": multiline_sse(responses_stream("gpt-4o-mini-2024-07-18")),
    "messages": multiline_sse(
        anthropic_stream(
            "claude-sonnet-4-20250514",
            delta_usages=[{"output_tokens": 10}, {"output_tokens": 30, "input_tokens": 1000}],
        )
    ),
}
_LINE_END_USAGE = {
    "chat": CHAT_USAGE,
    "responses": RESPONSES_USAGE,
    "messages": {**ANTHROPIC_START_USAGE, "output_tokens": 30},
}


@pytest.mark.parametrize("kind", sorted(_LINE_END_STREAMS))
@pytest.mark.parametrize("line_end", [b"\r", b"\r\n"], ids=["cr", "crlf"])
def test_cr_and_crlf_streams_split_at_every_byte(kind: str, line_end: bytes) -> None:
    """SSE ends a line with CRLF, LF or a bare CR: the same usage however the stream is cut,
    a CR at the end of one chunk and an LF at the start of the next being one line end."""
    lf = _LINE_END_STREAMS[kind]
    data = lf.replace(b"\n", line_end)
    expected = _LINE_END_USAGE[kind]
    model = "claude-sonnet-4-20250514" if kind == "messages" else "gpt-4o-mini-2024-07-18"
    reference = scan(kind, [lf])
    assert reference.payload is not None
    assert reference.payload["usage"] == expected
    splits = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    splits.append([data[i : i + 1] for i in range(len(data))])  # a byte at a time
    splits.append([data[i : i + 3] for i in range(0, len(data), 3)])
    for pieces in splits:
        result = scan(kind, pieces)
        where = [len(p) for p in pieces[:3]]
        assert result.payload is not None, where
        assert result.payload["usage"] == expected, where
        assert result.model == model, where
        assert (result.complete, result.error) == (True, None), where


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    line_end=st.sampled_from([b"\r", b"\r\n"]),
)
def test_cr_stream_usage_in_any_chunking(cuts: list[int], line_end: bytes) -> None:
    data = _LINE_END_STREAMS["chat"].replace(b"\n", line_end)
    result = scan("chat", split_at(data, cuts))
    assert result.complete
    assert result.payload is not None
    assert result.payload["usage"] == CHAT_USAGE


def test_lf_stream_whose_first_line_spans_chunks_then_turns_to_cr() -> None:
    """A CR arriving while an LF-read event waits for its end still ends lines."""
    data = _LINE_END_STREAMS["chat"]
    first = data.index(b"\n\n") + 2  # the comment, in LF
    rest = data[first:].replace(b"\n", b"\r")
    pieces = [data[:first], rest[:10], rest[10:20], rest[20:]]
    result = scan("chat", pieces)
    assert result.complete
    assert result.payload is not None
    assert result.payload["usage"] == CHAT_USAGE


def test_chat_stream_without_usage_reports_it_missing() -> None:
    result = scan("chat", [sse_bytes(chat_stream(include_usage=False))])
    assert result.complete
    assert result.payload is None
    assert result.note == "no usage in the stream"


def test_chat_stream_cut_before_usage_is_incomplete() -> None:
    cut = CHAT[: CHAT.index(b'"choices":[]')]
    result = scan("chat", [cut])
    assert not result.complete
    assert result.payload is None


def test_gzip_stream_decoded_incrementally() -> None:
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    pieces = []
    for line in CHAT.split(b"\n\n"):
        pieces.append(compressor.compress(line + b"\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH))
    pieces.append(compressor.flush())
    result = scan("chat", pieces, "gzip")
    assert result.complete
    assert result.payload is not None
    assert result.payload["usage"] == CHAT_USAGE


def test_stream_error_event() -> None:
    events = [
        *anthropic_stream()[:3],
        (
            "error",
            json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}),
        ),
    ]
    result = scan("messages", [sse_bytes(events)])
    assert result.error == "overloaded_error"
    assert not result.complete
    assert result.payload is not None  # message_start's usage is still known


def test_responses_failed_event_is_an_error_with_usage() -> None:
    result = scan("responses", [sse_bytes(responses_stream(final="response.failed"))])
    assert result.complete
    assert result.error == "response.failed"
    assert result.payload is not None


def test_text_that_mentions_usage_is_not_mistaken_for_it() -> None:
    events = chat_stream(pieces=['"usage": {"prompt_tokens": 99}', "[DONE]", "message_stop"])
    result = scan("chat", [sse_bytes(events)])
    assert result.payload is not None
    assert result.payload["usage"] == CHAT_USAGE


def test_json_body_gzip_and_plain() -> None:
    body = json.dumps(embeddings(count=3)).encode()
    for encoding, data in ((None, body), ("gzip", gzip.compress(body))):
        scanner = make_scanner("embeddings", "application/json", make_decoder(encoding))
        for i in range(0, len(data), 7):
            scanner.feed(data[i : i + 7])
        result = scanner.result()
        assert result.complete
        assert result.payload is not None
        assert result.payload["usage"]["prompt_tokens"] == 12


def test_huge_embeddings_body_scanned_from_the_end() -> None:
    big = embeddings(model="text-embedding-3-large", count=400, dims=600)
    raw = json.dumps(big).encode()
    assert len(raw) > FULL_PARSE_LIMIT
    found = read_json_usage(raw)
    # every top-level key the readers use (its "object" too), not only model and usage
    assert found == {"object": "list", "usage": big["usage"], "model": "text-embedding-3-large"}


def test_decoders() -> None:
    assert make_decoder(None) is None
    assert make_decoder("identity") is None
    data = b"hello world" * 100
    deflate = make_decoder("deflate")
    assert deflate is not None
    assert deflate.decode(zlib.compress(data)) + deflate.flush() == data
    raw_deflate = make_decoder("deflate")
    assert raw_deflate is not None
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert raw_deflate.decode(c.compress(data) + c.flush()) + raw_deflate.flush() == data
    chained = make_decoder("deflate, gzip")
    assert chained is not None
    assert chained.decode(gzip.compress(zlib.compress(data))) + chained.flush() == data
    with pytest.raises(UnsupportedEncoding):
        make_decoder("compress")


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/chat/completions", "chat"),
        ("POST", "/openai/deployments/x/chat/completions", "chat"),
        ("POST", "/v1/completions", "completions"),
        ("POST", "/v1/responses", "responses"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/v1/messages", "messages"),
        ("POST", "/v1/messages/", "messages"),
        ("POST", "/v1/messages/count_tokens", None),
        ("POST", "/v1/threads/t1/messages", None),
        ("GET", "/v1/responses", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/files", None),
    ],
)
def test_endpoint_kind(method: str, path: str, kind: str | None) -> None:
    assert endpoint_kind(method, path) == kind


@pytest.mark.parametrize(
    ("scheme", "host", "path", "kind", "default", "expected"),
    [
        ("https", "api.openai.com", "/v1/chat/completions", "chat", None, "openai"),
        ("https", "api.anthropic.com", "/v1/messages", "messages", None, "anthropic"),
        ("http", "127.0.0.1", "/v1/messages", "messages", None, "anthropic"),
        ("http", "127.0.0.1", "/v1/chat/completions", "chat", None, "openai"),
        ("https", "api.groq.com", "/openai/v1/chat/completions", "chat", None, "groq"),
        ("https", "api.deepseek.com", "/chat/completions", "chat", None, "deepseek"),
        (
            "https",
            "myco.openai.azure.com",
            "/openai/deployments/d/chat/completions",
            "chat",
            None,
            "azure",
        ),
        ("https", "gateway.example", "/v1/chat/completions", "chat", None, "openai"),
        ("https", "api.openai.com", "/v1/chat/completions", "chat", "azure", "azure"),
    ],
)
def test_provider_for(
    scheme: str, host: str, path: str, kind: str, default: str | None, expected: str
) -> None:
    assert provider_for(scheme, host, path, kind, default) == expected  # type: ignore[arg-type]


def test_read_request_and_stream_usage_injection() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
        ],
        "stream": True,
        "max_completion_tokens": 64,
    }
    tracked = read_request("chat", json.dumps(body).encode(), provider="openai")
    assert (tracked.model, tracked.stream, tracked.max_output_tokens) == ("gpt-4o-mini", True, 64)
    assert tracked.prompt_text() == "Be brief.\nHi"
    new = with_stream_usage(tracked)
    assert new is not None
    assert json.loads(new)["stream_options"] == {"include_usage": True}
    assert json.loads(new)["messages"] == body["messages"]
    # explicit false is respected; non-streams and other endpoints are left alone
    off = read_request(
        "chat",
        json.dumps({**body, "stream_options": {"include_usage": False}}).encode(),
        provider="x",
    )
    assert with_stream_usage(off) is None
    assert with_stream_usage(read_request("chat", b'{"model":"m"}', provider="x")) is None
    assert (
        with_stream_usage(read_request("messages", json.dumps(body).encode(), provider="x")) is None
    )
    # not JSON: tracked with no model
    assert read_request("chat", b"\x00garbage", provider="openai").model is None


def test_prompt_text_shapes() -> None:
    anthropic = read_request(
        "messages",
        json.dumps(
            {
                "model": "claude",
                "max_tokens": 100,
                "system": [{"type": "text", "text": "S"}],
                "messages": [{"role": "user", "content": "U"}],
            }
        ).encode(),
        provider="anthropic",
    )
    assert anthropic.prompt_text() == "S\nU"
    assert anthropic.max_output_tokens == 100
    responses = read_request(
        "responses",
        json.dumps(
            {
                "model": "m",
                "instructions": "I",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "T"}]}],
                "max_output_tokens": 9,
            }
        ).encode(),
        provider="openai",
    )
    assert responses.prompt_text() == "I\nT"
    assert responses.max_output_tokens == 9
    emb = read_request("embeddings", b'{"model":"e","input":["a","b"]}', provider="openai")
    assert emb.prompt_text() == "a\nb"


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after": "0.05"}) == 0.05
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    http_date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": http_date}, now=now.timestamp()) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now.timestamp()) == 0.0


def test_scrub_and_error_messages_never_show_the_key() -> None:
    key = "sk-proj-PLANTEDsecret0123456789"
    body = json.dumps(
        {
            "error": {
                "message": f"Incorrect API key provided: {key}. Also sk-pro*****6789.",
                "code": "invalid_api_key",
            }
        }
    ).encode()
    err = error_for_status(401, "Unauthorized", {}, body, where="api.openai.com", secret=key)
    for text in (str(err), repr(err), err.provider_message or ""):
        assert key not in text
        assert "PLANTED" not in text
        assert "6789" not in text
    assert "rejected the API key" in str(err)
    assert "Incorrect API key provided" in str(err)
    assert scrub("key sk-ant-api03-abcdef and x", None) == "key [redacted] and x"
