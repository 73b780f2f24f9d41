"""Overhead of the HTTP tracking transport, against the same httpx client without it.

Run: python benchmarks/bench_http.py

The inner transport answers from memory (no network), so the figures are the
transport's own cost: matching the path, reading the request body, scanning the
response, pricing and recording (SQLite ledger with its background writer,
logging off, no guards).
The last figure is end to end, OpenAI SDK against the local fake server.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from costledger import Ledger, Tracker
from costledger.http import TrackingTransport

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _fake_provider import FakeProvider, chat_completion, chat_stream

CHAT_BODY = json.dumps(chat_completion()).encode()
SSE_EVENTS = chat_stream(pieces=[f" word{i}" for i in range(500)])
SSE_CHUNKS = [f"data: {data}\n\n".encode() for _, data in SSE_EVENTS]
REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Summarise this text. " * 50}],
}


class Chunks(httpx.SyncByteStream):
    """A response body that arrives in chunks, like one from the network."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks


def handler(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"object": "list", "data": []})
    if request.url.path.endswith("/files"):
        return httpx.Response(200, json={"id": "file-1"})
    if json.loads(request.content).get("stream"):
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Chunks(SSE_CHUNKS)
        )
    return httpx.Response(
        200, headers={"content-type": "application/json"}, stream=Chunks([CHAT_BODY])
    )


def per_call_us(fn: Callable[[], Any], n: int, rounds: int = 7) -> float:
    for _ in range(min(n, 200)):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def compare(
    name: str, tracker: Tracker, make_call: Callable[[httpx.Client], Callable[[], Any]], n: int
) -> None:
    bare = httpx.Client(transport=httpx.MockTransport(handler))
    tracked = httpx.Client(
        transport=TrackingTransport(httpx.MockTransport(handler), tracker=tracker)
    )
    base = per_call_us(make_call(bare), n)
    with_tracking = per_call_us(make_call(tracked), n)
    print(
        f"{name:<34} bare {base:8.1f} us   tracked {with_tracking:8.1f} us   "
        f"added {with_tracking - base:8.1f} us   ratio {with_tracking / base:5.2f}"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/bench.db")
        run(Tracker(ledger, log="off"))
        ledger.close()


def transport_only(tracker: Tracker) -> None:
    """The pass-through check alone, without httpx's client machinery around it."""

    class Answer(httpx.BaseTransport):
        """Answers at once with a ready response, so the check's own cost shows."""

        response = httpx.Response(200, json={"object": "list", "data": []})

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return self.response

    inner = Answer()
    tracking = TrackingTransport(inner, tracker=tracker)
    get = httpx.Request("GET", "https://api.openai.com/v1/models")
    post = httpx.Request("POST", "https://api.openai.com/v1/files", content=b"x" * 1000)
    for name, request in (("GET /models", get), ("POST /files", post)):
        base = per_call_us(lambda r=request: inner.handle_request(r), 50_000)  # type: ignore[misc]
        ours = per_call_us(lambda r=request: tracking.handle_request(r), 50_000)  # type: ignore[misc]
        print(
            f"{'transport only, ' + name:<34} bare {base:8.2f} us   tracked {ours:8.2f} us   "
            f"added {ours - base:8.2f} us   ratio {ours / base:5.2f}"
        )


def run(tracker: Tracker) -> None:
    transport_only(tracker)
    url = "https://api.openai.com/v1"
    compare("pass-through GET /models", tracker, lambda c: lambda: c.get(f"{url}/models"), 3000)
    compare(
        "chat completion (JSON)",
        tracker,
        lambda c: lambda: c.post(f"{url}/chat/completions", json=REQUEST),
        2000,
    )

    def stream(c: httpx.Client) -> Callable[[], Any]:
        def run() -> None:
            with c.stream(
                "POST", f"{url}/chat/completions", json={**REQUEST, "stream": True}
            ) as response:
                for _ in response.iter_raw():
                    pass

        return run

    compare(f"chat stream ({len(SSE_CHUNKS)} chunks)", tracker, stream, 200)

    import openai

    with FakeProvider() as fake:
        plain = openai.OpenAI(base_url=fake.openai_url, api_key="sk-bench", max_retries=0)
        tracked = openai.OpenAI(
            base_url=fake.openai_url,
            api_key="sk-bench",
            max_retries=0,
            http_client=httpx.Client(transport=TrackingTransport(tracker=tracker)),
        )

        def sdk(client: Any) -> Callable[[], Any]:
            return lambda: client.chat.completions.create(**REQUEST)

        base = per_call_us(sdk(plain), 300, rounds=5)
        with_tracking = per_call_us(sdk(tracked), 300, rounds=5)
        print(
            f"{'OpenAI SDK chat, local server':<34} bare {base:8.1f} us   tracked "
            f"{with_tracking:8.1f} us   added {with_tracking - base:8.1f} us   "
            f"ratio {with_tracking / base:5.2f}"
        )


if __name__ == "__main__":
    main()
