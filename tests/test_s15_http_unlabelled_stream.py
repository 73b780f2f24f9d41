"""A stream served without ``Content-Type: text/event-stream`` is read as a stream.

FastAPI/Starlette's ``StreamingResponse`` sends no content type unless told; some proxies
say ``text/plain`` or ``application/json``. The SDKs read such a stream all the same (they
parse what the request asked for), but the transport chose its scanner by the content type
alone: the stream was taken for a JSON body, found not to be one, and the call recorded
``cancelled``, not priced. The body's first bytes now tell: ``{`` a JSON object, an SSE
field (``data:``, ``event:``) or comment a stream.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

import costledger
from costledger import Tracker
from costledger._http._decode import make_decoder
from costledger._http._scan import make_scanner
from costledger.http import AsyncTrackingTransport, Httpx2TrackingTransport, TrackingTransport
from costledger.testing import InMemoryLedger

from ._fake_provider import CHAT_USAGE, anthropic_stream, chat_completion, chat_stream

MESSAGES = [{"role": "user", "content": "Say hello"}]
KEY = "sk-test-unlabelled-0000"
# gpt-4o-mini: 1000 uncached in at $0.15/MTok, 1000 cached at $0.075, 500 out at $0.60
CHAT_COST = Decimal("0.000525")
# claude-3-5-haiku: 1000 in at $0.80, 4000 cache read at $0.08, 2000 written at $1.00,
# 300 out at $4
HAIKU_COST = Decimal("0.00432")


def sse(events: list[tuple[str | None, str]]) -> bytes:
    return b"".join(
        ((f"event: {name}\n" if name else "") + f"data: {data}\n\n").encode()
        for name, data in events
    )


class Server:
    """A local server answering every POST with ``body`` and exactly ``headers`` (no
    ``Content-Type`` unless given), the body written in ``pieces``."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""
        self.pieces = 1
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = server.body
                self.send_response(200)
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = -(-len(body) // server.pieces)
                for i in range(0, len(body), step):
                    self.wfile.write(body[i : i + step])
                    self.wfile.flush()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.stop()


def _events(tracker: Tracker) -> list[tuple[Any, ...]]:
    assert costledger.drain_deferred(10)
    return [(e.status, e.streamed, e.total_cost, e.response_model) for e in tracker.ledger.events()]


def _openai(server: Server, tracker: Tracker) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=KEY,
        max_retries=0,
        http_client=httpx.Client(transport=TrackingTransport(tracker=tracker)),
    )


@pytest.mark.parametrize(
    "content_type", [None, "text/plain; charset=utf-8", "application/json", "application/x-ndjson"]
)
def test_an_openai_chat_stream_not_labelled_a_stream(
    server: Server, content_type: str | None
) -> None:
    server.body = sse(chat_stream("gpt-4o-mini-2024-07-18"))
    server.pieces = 7
    if content_type is not None:
        server.headers = {"Content-Type": content_type}
    tracker = Tracker(InMemoryLedger(), log="off")
    chunks = list(
        _openai(server, tracker).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2000
    assert _events(tracker) == [("ok", True, CHAT_COST, "gpt-4o-mini-2024-07-18")]


def test_a_gzipped_stream_with_no_content_type(server: Server) -> None:
    server.body = gzip.compress(sse(chat_stream("gpt-4o-mini-2024-07-18")))
    server.headers = {"Content-Encoding": "gzip"}
    tracker = Tracker(InMemoryLedger(), log="off")
    stream = _openai(server, tracker).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "Hello there!"
    )
    assert _events(tracker) == [("ok", True, CHAT_COST, "gpt-4o-mini-2024-07-18")]


def test_an_async_chat_stream_with_no_content_type(server: Server) -> None:
    server.body = sse(chat_stream("gpt-4o-mini-2024-07-18"))
    tracker = Tracker(InMemoryLedger(), log="off")

    async def main() -> None:
        client = openai.AsyncOpenAI(
            base_url=f"{server.url}/v1",
            api_key=KEY,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=AsyncTrackingTransport(tracker=tracker)),
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        assert len([chunk async for chunk in stream]) == 6
        await client.close()

    asyncio.run(main())
    assert _events(tracker) == [("ok", True, CHAT_COST, "gpt-4o-mini-2024-07-18")]


def test_an_anthropic_stream_with_no_content_type(server: Server) -> None:
    server.body = sse(anthropic_stream("claude-3-5-haiku-20241022"))
    server.pieces = 5
    tracker = Tracker(InMemoryLedger(), log="off")
    client = anthropic.Anthropic(
        base_url=server.url,
        api_key=KEY,
        max_retries=0,
        http_client=httpx2.Client(transport=Httpx2TrackingTransport(tracker=tracker)),
    )
    with client.messages.stream(
        model="claude-3-5-haiku-20241022", max_tokens=10, messages=MESSAGES
    ) as stream:
        assert stream.get_final_message().usage.output_tokens == 300
    assert _events(tracker) == [("ok", True, HAIKU_COST, "claude-3-5-haiku-20241022")]


def test_a_json_answer_to_a_stream_request_is_read_as_json(server: Server) -> None:
    """A server that ignores ``stream``: the answer is the whole completion, billed."""
    server.body = json.dumps(chat_completion("gpt-4o-mini-2024-07-18")).encode()
    tracker = Tracker(InMemoryLedger(), log="off")
    stream = _openai(server, tracker).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert list(stream) == []  # no event in it, for the SDK
    assert _events(tracker) == [("ok", False, CHAT_COST, "gpt-4o-mini-2024-07-18")]


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_the_first_bytes_tell_fed_one_byte_at_a_time(encoding: str | None) -> None:
    stream = b"\n" + sse(chat_stream("gpt-4o-mini-2024-07-18"))
    body = b"  \n" + json.dumps(chat_completion("gpt-4o-mini-2024-07-18")).encode()
    for data, asked, streamed in ((stream, False, True), (body, True, False)):
        raw = gzip.compress(data) if encoding else data
        scanner = make_scanner("chat", "", make_decoder(encoding), stream=asked)
        for i in range(len(raw)):
            scanner.feed(raw[i : i + 1])
        result = scanner.result()
        assert scanner.streamed is streamed
        assert result.complete
        assert result.payload is not None
        assert result.payload["usage"] == CHAT_USAGE
    # nothing came: as the request asked
    for asked in (True, False):
        scanner = make_scanner("chat", "", None, stream=asked)
        scanner.feed(b"da")
        result = scanner.result()
        assert (scanner.streamed, result.complete, result.payload) == (asked, False, None)
