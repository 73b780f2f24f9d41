"""A local OpenAI/Bedrock-compatible HTTP server for the ``test_s15_*`` tests.

Each test sets ``server.respond`` (path, request body) -> (status, headers, body), where the
body is bytes or text (sent whole) or an iterable of texts (sent chunk by chunk, as a stream).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Responder = Callable[[str, Any], tuple[int, dict[str, str], Any]]


class LocalServer:
    def __init__(self, base: str) -> None:
        self.base = base
        self.requests: list[tuple[str, Any]] = []
        self.respond: Responder = lambda path, body: (404, {}, b"")


def sse(obj: Any) -> str:
    return "data: " + json.dumps(obj) + "\n\n"


def json_answer(body: Any, status: int = 200) -> tuple[int, dict[str, str], str]:
    return status, {"content-type": "application/json"}, json.dumps(body)


def event_stream(pieces: Iterable[str]) -> tuple[int, dict[str, str], Iterable[str]]:
    return 200, {"content-type": "text/event-stream"}, pieces


def _handler(state: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.loads(raw or b"{}")
            state.requests.append((self.path, body))
            status, headers, payload = state.respond(self.path, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if isinstance(payload, (bytes, str)):
                data = payload.encode() if isinstance(payload, str) else payload
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for piece in payload:
                data = piece.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    return Handler


@pytest.fixture
def server() -> Iterator[LocalServer]:
    state = LocalServer("")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
