"""A fake OpenAI / Anthropic API on 127.0.0.1, for tests and offline examples.

A real HTTP server (stdlib ``ThreadingHTTPServer``, HTTP/1.1, chunked streams) in a
background thread, at a random port, answering in the providers' real shapes:

- ``POST .../chat/completions``: a chat completion, or with ``"stream": true`` a chunk
  stream that ends with a usage chunk when ``stream_options.include_usage`` is set;
- ``POST .../responses``: a Responses API object, or its event stream;
- ``POST .../embeddings``: an embeddings list;
- ``POST .../v1/messages``: an Anthropic message, or its event stream
  (``message_start`` ... ``message_delta`` ... ``message_stop``);
- ``GET .../models``: a model list (an endpoint that is not a model call).

Usage numbers default to the module constants below, so a test can compute the
exact expected cost. Script anything else per path with ``provider.enqueue(path,
Reply(...))``: errors (``openai_error(429, retry_after="0.05")``), gzip, a stream that
pauses until the test sets a gate, a broken stream. Every request is recorded
(``provider.requests``).

>>> with FakeProvider() as provider:
...     client = openai.OpenAI(base_url=provider.openai_url, api_key="sk-test")
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "ANTHROPIC_DELTA_USAGE",
    "ANTHROPIC_START_USAGE",
    "ANTHROPIC_USAGE",
    "CHAT_USAGE",
    "EMBEDDINGS_USAGE",
    "RESPONSES_USAGE",
    "FakeProvider",
    "RecordedRequest",
    "Reply",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "chat_completion",
    "chat_stream",
    "embeddings",
    "openai_error",
    "responses_object",
    "responses_stream",
]

# -- default usage, in each provider's own convention -------------------------------------------
CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 2000,
    "completion_tokens": 500,
    "total_tokens": 2500,
    "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 200,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
RESPONSES_USAGE: dict[str, Any] = {
    "input_tokens": 3000,
    "input_tokens_details": {"cached_tokens": 2000},
    "output_tokens": 400,
    "output_tokens_details": {"reasoning_tokens": 100},
    "total_tokens": 3400,
}
EMBEDDINGS_USAGE: dict[str, Any] = {"prompt_tokens": 12, "total_tokens": 12}
ANTHROPIC_USAGE: dict[str, Any] = {
    "input_tokens": 1000,
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 4000,
    "output_tokens": 300,
    "service_tier": "standard",
}
# A stream reports input at message_start, then the CUMULATIVE output at message_delta.
ANTHROPIC_START_USAGE: dict[str, Any] = {
    "input_tokens": 1000,
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 4000,
    "output_tokens": 1,
    "service_tier": "standard",
}
ANTHROPIC_DELTA_USAGE: dict[str, Any] = {"output_tokens": 300}

_CREATED = 1_730_000_000


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# -- response bodies in the providers' shapes -----------------------------------------------------
def chat_completion(
    model: str = "gpt-4o-mini-2024-07-18",
    text: str = "Hello there!",
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": copy.deepcopy(dict(usage if usage is not None else CHAT_USAGE)),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def chat_stream(
    model: str = "gpt-4o-mini-2024-07-18",
    pieces: Iterable[str] = ("Hello", " there", "!"),
    *,
    include_usage: bool = True,
    usage: Mapping[str, Any] | None = None,
) -> list[tuple[str | None, str]]:
    """SSE events ``(event name, data)`` of a chat completion stream, ``[DONE]`` included."""

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake0002",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **({"usage": None} if include_usage else {}),
        }

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": piece}, None) for piece in pieces]
    events.append(chunk({}, "stop"))
    if include_usage:
        last = chunk({}, None)
        last["choices"] = []
        last["usage"] = copy.deepcopy(dict(usage if usage is not None else CHAT_USAGE))
        events.append(last)
    out: list[tuple[str | None, str]] = [(None, _dumps(e)) for e in events]
    return [*out, (None, "[DONE]")]


def responses_object(
    model: str = "gpt-4o-mini-2024-07-18",
    text: str = "Hello there!",
    usage: Mapping[str, Any] | None = None,
    *,
    status: str = "completed",
) -> dict[str, Any]:
    done = status != "in_progress"
    return {
        "id": "resp_fake0001",
        "object": "response",
        "created_at": _CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": (
            [
                {
                    "type": "message",
                    "id": "msg_fake0001",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ]
            if done
            else []
        ),
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": copy.deepcopy(dict(usage if usage is not None else RESPONSES_USAGE))
        if done
        else None,
        "user": None,
        "metadata": {},
    }


def responses_stream(
    model: str = "gpt-4o-mini-2024-07-18",
    pieces: Iterable[str] = ("Hello", " there", "!"),
    usage: Mapping[str, Any] | None = None,
    *,
    final: str = "response.completed",
) -> list[tuple[str | None, str]]:
    pieces = list(pieces)
    text = "".join(pieces)
    seq = iter(range(1000))
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": responses_object(model, status="in_progress")},
        {"type": "response.in_progress", "response": responses_object(model, status="in_progress")},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {
                "type": "message",
                "id": "msg_fake0001",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_fake0001",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ]
    for piece in pieces:
        events.append(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_fake0001",
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
            }
        )
    events.append(
        {
            "type": "response.output_text.done",
            "item_id": "msg_fake0001",
            "output_index": 0,
            "content_index": 0,
            "text": text,
        }
    )
    final_status = {"response.completed": "completed", "response.incomplete": "incomplete"}.get(
        final, "failed"
    )
    events.append(
        {"type": final, "response": responses_object(model, text, usage, status=final_status)}
    )
    out = []
    for event in events:
        event["sequence_number"] = next(seq)
        out.append((event["type"], _dumps(event)))
    return out


def embeddings(
    model: str = "text-embedding-3-small",
    count: int = 1,
    dims: int = 8,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.125 * (j % 8) for j in range(dims)]}
            for i in range(count)
        ],
        "model": model,
        "usage": copy.deepcopy(dict(usage if usage is not None else EMBEDDINGS_USAGE)),
    }


def anthropic_message(
    model: str = "claude-3-5-haiku-20241022",
    text: str = "Hello there!",
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "msg_fake0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": copy.deepcopy(dict(usage if usage is not None else ANTHROPIC_USAGE)),
    }


def anthropic_stream(
    model: str = "claude-3-5-haiku-20241022",
    pieces: Iterable[str] = ("Hello", " there", "!"),
    *,
    start_usage: Mapping[str, Any] | None = None,
    delta_usages: Iterable[Mapping[str, Any]] | None = None,
) -> list[tuple[str | None, str]]:
    """A Messages stream. ``delta_usages`` are the usages of successive ``message_delta``
    events (cumulative, as Anthropic sends them); default one delta, ``ANTHROPIC_DELTA_USAGE``."""
    message = anthropic_message(model, "", start_usage or ANTHROPIC_START_USAGE)
    message["content"] = []
    message["stop_reason"] = None
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    for piece in pieces:
        events.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
        )
    events.append({"type": "content_block_stop", "index": 0})
    for usage in delta_usages if delta_usages is not None else [ANTHROPIC_DELTA_USAGE]:
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": dict(usage),
            }
        )
    events.append({"type": "message_stop"})
    return [(e["type"], _dumps(e)) for e in events]


# -- replies -------------------------------------------------------------------------------------
@dataclass
class Reply:
    """One scripted answer: ``json``, ``sse`` (a list of ``(event name | None, data)``) or ``raw``.

    ``pause_after``/``gate``: an SSE reply sends that many events, then waits for
    ``gate`` (a ``threading.Event`` the test sets) before sending the rest;
    ``gate_timed_out`` tells whether it had to give up waiting. ``drop_after``:
    send that many events, then cut the connection (a broken stream).
    """

    status: int = 200
    json: Any = None
    sse: list[tuple[str | None, str]] | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    gzip: bool = False
    delay: float = 0.0
    pause_after: int | None = None
    gate: threading.Event | None = None
    gate_timeout: float = 5.0
    drop_after: int | None = None
    gate_timed_out: bool = False
    sent_all: threading.Event = field(default_factory=threading.Event)


def openai_error(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    etype: str | None = None,
    retry_after: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    defaults = {
        400: ("invalid_request_error", None, "Invalid value for 'temperature'."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    }
    dtype, dcode, dmessage = defaults.get(
        status, ("server_error", None, "The server had an error while processing your request.")
    )
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = retry_after
    body = {
        "error": {
            "message": message or dmessage,
            "type": etype or dtype,
            "param": None,
            "code": code if code is not None else dcode,
        }
    }
    return Reply(status=status, json=body, headers=hdrs)


def anthropic_error(
    status: int, message: str | None = None, *, retry_after: str | None = None
) -> Reply:
    etype = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    hdrs = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"type": "error", "error": {"type": etype, "message": message or etype}}
    return Reply(status=status, json=body, headers=hdrs)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def default_reply(method: str, path: str, body: Any) -> Reply:
    """The provider's normal answer to a request, echoing the requested model."""
    body = body if isinstance(body, dict) else {}
    model = body.get("model")
    stream = body.get("stream") is True
    if method == "GET" and path.endswith("/models"):
        return Reply(json={"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
    if method != "POST":
        return openai_error(404, f"no route for {method} {path}")
    if path.endswith("/chat/completions"):
        model = model or "gpt-4o-mini-2024-07-18"
        if stream:
            options = body.get("stream_options") or {}
            return Reply(sse=chat_stream(model, include_usage=bool(options.get("include_usage"))))
        return Reply(json=chat_completion(model))
    if path.endswith("/responses"):
        model = model or "gpt-4o-mini-2024-07-18"
        return Reply(sse=responses_stream(model)) if stream else Reply(json=responses_object(model))
    if path.endswith("/embeddings"):
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        return Reply(json=embeddings(model or "text-embedding-3-small", count))
    if path.endswith("/v1/messages"):
        model = model or "claude-3-5-haiku-20241022"
        return (
            Reply(sse=anthropic_stream(model)) if stream else Reply(json=anthropic_message(model))
        )
    return openai_error(404, f"no route for {method} {path}")


class FakeProvider:
    """The server. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --
    def start(self) -> FakeProvider:
        provider = self

        class Handler(_Handler):
            fake = provider

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FakeProvider is not started"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def openai_url(self) -> str:
        """The ``base_url`` for an OpenAI client (``.../v1``)."""
        return f"{self.base_url}/v1"

    # -- scripting --
    def enqueue(self, path_suffix: str, *replies: Reply) -> None:
        """Answer the next requests whose path ends with ``path_suffix`` with ``replies``."""
        with self._lock:
            self._scripts.setdefault(path_suffix, deque()).extend(replies)

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._scripts.clear()

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            for suffix, queue in self._scripts.items():
                if request.path.endswith(suffix) and queue:
                    return queue.popleft()
        try:
            body = request.json
        except ValueError:
            body = None
        return default_reply(request.method, request.path, body)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length) if length else b"")

    def _serve(self, body: bytes) -> None:
        path = self.path.split("?", 1)[0]
        request = RecordedRequest(self.command, path, dict(self.headers.items()), body)
        reply = self.fake._reply_for(request)
        if reply.delay:
            time.sleep(reply.delay)
        anthropic = path.endswith("/v1/messages")
        headers = {
            (
                "request-id" if anthropic else "x-request-id"
            ): f"req_fake{len(self.fake.requests):04d}",
            **reply.headers,
        }
        if reply.sse is not None:
            self._send_stream(reply, headers)
        else:
            if reply.raw is not None:
                payload = reply.raw
                headers.setdefault("Content-Type", "application/octet-stream")
            else:
                payload = _dumps(reply.json).encode()
                headers.setdefault("Content-Type", "application/json")
            if reply.gzip:
                compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
                payload = compressor.compress(payload) + compressor.flush()
                headers["Content-Encoding"] = "gzip"
            self.send_response(reply.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            reply.sent_all.set()

    def _send_stream(self, reply: Reply, headers: dict[str, str]) -> None:
        self.send_response(reply.status)
        headers.setdefault("Content-Type", "text/event-stream; charset=utf-8")
        compressor = None
        if reply.gzip:
            compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
            headers["Content-Encoding"] = "gzip"
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def chunk(data: bytes) -> None:
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            if data:
                self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        assert reply.sse is not None
        try:
            for i, (event, data) in enumerate(reply.sse):
                if reply.drop_after is not None and i == reply.drop_after:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)  # cut mid-stream: no terminating chunk
                    return
                paused = reply.pause_after is not None and i == reply.pause_after
                if paused and reply.gate and not reply.gate.wait(reply.gate_timeout):
                    reply.gate_timed_out = True
                text = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
                chunk(text.encode())
            if compressor is not None:
                tail = compressor.flush()
                if tail:
                    self.wfile.write(f"{len(tail):X}\r\n".encode() + tail + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            reply.sent_all.set()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a cancelled stream)
