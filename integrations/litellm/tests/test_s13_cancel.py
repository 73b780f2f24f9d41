"""The wrappers' calls that end by a cancellation, a timeout, Ctrl-C, a close or the GC.

LiteLLM fires no event for a call interrupted by a ``BaseException`` that is not an
``Exception`` (``CancelledError``, ``KeyboardInterrupt``), nor for a stream the consumer
abandons: the wrappers record those as ``cancelled``, at once, without taking a lock from
a finalizer and without settling the guards on the event loop. Scenarios that need a real
Ctrl-C, a garbage collection at a chosen moment, or the process's exit run in a child
Python process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import litellm
import pytest
from litellm_support import (
    IN_CI,
    MESSAGES,
    RecordingGuard,
    Sentinel,
    gpt_4o_mini_cost,
    litellm_isolated,
    offline,
)

import costledger
import costledger_litellm
from costledger import Budget, UsageEvent
from costledger.testing import CapturedCosts, capture_costs
from costledger_litellm import CostLedgerLogger
from costledger_litellm._logger import _registry

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")

# LiteLLM's count of MESSAGES ("What is 2 + 2?") for gpt-4o-mini, and of the local server's
# three chunks ("Hello", " there", " friend") that arrive before it stalls.
PROMPT_TOKENS = 15
SERVER_CHUNK_TOKENS = 3
RECEIVED_COST = Decimal("0.00000405")  # 15 * 0.15 / 1e6 + 3 * 0.60 / 1e6
# One chunk of LiteLLM's mock stream ("one"): 15 in, 1 out.
ONE_MOCK_CHUNK_COST = Decimal("0.00000285")  # 15 * 0.15 / 1e6 + 1 * 0.60 / 1e6


# --- a local OpenAI-compatible server that stalls or breaks mid-stream --------------------------


class _Handler(BaseHTTPRequestHandler):
    """``/stall/v1``: three chunks, then nothing until ``release`` is set (at most 10 s),
    then the end. ``/pause/v1``: the same, for 3 s. ``/midfail/v1``: two chunks, then
    the connection is cut."""

    protocol_version = "HTTP/1.1"
    release: ClassVar[threading.Event] = threading.Event()

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        mode = self.path.split("/")[1]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        base = {"id": "chatcmpl-s13", "object": "chat.completion.chunk", "created": 1}
        for word in ("Hello", " there", " friend"):
            if mode == "midfail" and word == " friend":
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            delta = {"role": "assistant", "content": word}
            chunk = {
                **base,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": delta}],
            }
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        if mode == "pause":
            time.sleep(3)
        else:
            self.release.wait(10)
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()


class ThreadGuard(RecordingGuard):
    """A RecordingGuard that also notes the thread each settle and release ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.settle_threads: list[int] = []
        self.release_threads: list[int] = []

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.settle_threads.append(threading.get_ident())
        super().settle(token, event)

    def release(self, token: Any) -> None:
        self.release_threads.append(threading.get_ident())
        super().release(token)


@pytest.fixture
def guard() -> ThreadGuard:
    return ThreadGuard()


@pytest.fixture
def budget() -> Budget:
    return Budget("1 USD", "day", name=f"s13-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def costs(guard: ThreadGuard, budget: Budget) -> Iterator[CapturedCosts]:
    with capture_costs(guards=[guard, budget]) as captured:
        yield captured


@pytest.fixture
def sentinel() -> Sentinel:
    sentinel = Sentinel()
    litellm.callbacks = [CostLedgerLogger(), sentinel]
    return sentinel


def _spent_and_reserved(budget: Budget) -> tuple[Decimal, Decimal]:
    costledger.drain_deferred(10.0)
    [status] = budget.status(costledger.get_tracker())
    return status.spent, status.reserved


# --- a non-stream call interrupted while LiteLLM runs it ---------------------------------------


async def test_acompletion_cancelled_by_a_timeout_is_recorded_as_cancelled(
    costs: CapturedCosts, guard: ThreadGuard, budget: Budget, sentinel: Sentinel
) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            costledger_litellm.acompletion(
                model="gpt-4o-mini",
                messages=MESSAGES,
                mock_response="4",
                mock_delay=2,
                max_tokens=20,
            ),
            0.2,
        )

    [event] = costs.events
    assert (event.status, event.error_type) == ("cancelled", "CancelledError")
    assert event.source == "litellm"
    assert (event.model, event.provider) == ("gpt-4o-mini", "openai")
    # LiteLLM returned nothing: no usage is known, and none is guessed
    assert (event.usage.input_tokens, event.usage.output_tokens) == (0, 0)
    assert event.cost.total is None
    assert not _registry.in_flight(event.id)
    # the reservation is given back (no usage to settle), not held until its TTL
    assert guard.settled == []
    assert guard.released == [event.id]
    assert _spent_and_reserved(budget) == (Decimal(0), Decimal(0))
    await costledger_litellm.flush_callbacks(timeout=5)
    assert sentinel.seen == []  # LiteLLM itself reports nothing for it
    assert len(costs.events) == 1


def test_an_ordinary_failure_still_only_releases(costs: CapturedCosts, guard: ThreadGuard) -> None:
    """An ``Exception`` is LiteLLM's to record (its failure event): the wrapper adds no row."""
    with pytest.raises(litellm.exceptions.APIError):
        costledger_litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response=litellm.exceptions.APIError(
                status_code=500, message="boom", llm_provider="openai", model="gpt-4o-mini"
            ),
            num_retries=0,
        )
    assert [e.status for e in costs.events] == ["error"]  # LiteLLM's failure event
    assert len(guard.released) == 1


# --- a stream interrupted while it is read ----------------------------------------------------


async def test_stream_cancelled_while_reading_is_recorded_at_once(
    costs: CapturedCosts, guard: ThreadGuard, budget: Budget, server: str
) -> None:
    stream = await costledger_litellm.acompletion(
        model="openai/gpt-4o-mini",
        messages=MESSAGES,
        api_base=f"{server}/stall/v1",
        api_key="sk-test",
        stream=True,
        max_tokens=100,
    )
    received: list[str] = []

    async def read() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(read(), 1.0)  # lands in __anext__: the server stalls

    assert received == ["Hello", " there", " friend"]
    # Still referenced, not collected: recorded by the cancellation itself.
    [event] = costs.events
    assert event.id == stream.litellm_call_id
    assert event.status == "cancelled"
    assert event.streamed is True
    assert event.metadata["costledger.stream"] == "abandoned"
    assert (event.usage.input_tokens, event.usage.output_tokens) == (
        PROMPT_TOKENS,
        SERVER_CHUNK_TOKENS,
    )
    assert event.cost.total == RECEIVED_COST == gpt_4o_mini_cost(15, 3)
    assert guard.settled == [event]
    assert _spent_and_reserved(budget) == (RECEIVED_COST, Decimal(0))
    await stream.aclose()  # closing it afterwards adds nothing
    assert len(costs.events) == 1


# --- the guards' settle of an abandoned stream is not run on the event loop --------------------


async def test_aclose_and_collection_settle_on_the_worker_not_the_event_loop(
    costs: CapturedCosts, guard: ThreadGuard, budget: Budget
) -> None:
    loop_thread = threading.get_ident()
    closed = await costledger_litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="one two three four", stream=True
    )
    await closed.__anext__()
    await closed.aclose()
    dropped = await costledger_litellm.acompletion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="one two three four", stream=True
    )
    await dropped.__anext__()
    dropped_id = dropped.litellm_call_id
    del dropped
    gc.collect()  # its finalizer runs here, on the event loop's thread

    events = {e.id: e for e in costs.events}
    assert set(events) == {closed.litellm_call_id, dropped_id}
    for event in events.values():
        assert event.status == "cancelled"
        assert (event.usage.input_tokens, event.usage.output_tokens) == (PROMPT_TOKENS, 1)
        assert event.cost.total == ONE_MOCK_CHUNK_COST
    assert len(guard.settle_threads) == 2
    assert loop_thread not in guard.settle_threads
    assert _spent_and_reserved(budget) == (2 * ONE_MOCK_CHUNK_COST, Decimal(0))


@pytest.fixture
def redis_url() -> Iterator[str]:
    base = os.environ.get("COSTLEDGER_TEST_REDIS_URL")
    if not base:
        if IN_CI:
            pytest.fail("COSTLEDGER_TEST_REDIS_URL is not set, and CI=true requires it")
        pytest.skip("COSTLEDGER_TEST_REDIS_URL is not set; export it to run this test")
    import redis

    from costledger._guards import open_store

    prefix = f"cls13:{uuid.uuid4().hex[:12]}"
    url = f"{base}?prefix={prefix}" if "?" not in base else f"{base}&prefix={prefix}"
    yield url
    open_store(url).close()
    client = redis.Redis.from_url(base)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def test_on_redis_a_closed_stream_settles_and_a_broken_one_releases_off_the_loop(
    guard: ThreadGuard, budget: Budget, redis_url: str, server: str
) -> None:
    loop_thread = threading.get_ident()
    with capture_costs(guards=[guard, budget], guard_store=redis_url) as costs:
        closed = await costledger_litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="one two three four", stream=True
        )
        await closed.__anext__()
        await closed.aclose()
        broken = await costledger_litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_base=f"{server}/midfail/v1",
            api_key="sk-test",
            stream=True,
            max_tokens=100,
        )
        with pytest.raises(Exception, match=r"(?i)stream|connection|incomplete|closed"):
            async for _ in broken:
                pass
        await costledger_litellm.flush_callbacks(timeout=10)
        deadline = time.monotonic() + 10
        while not guard.release_threads and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        [event] = [e for e in costs.events if e.id == closed.litellm_call_id]
        spent, reserved = _spent_and_reserved(budget)

    assert event.status == "cancelled"
    assert event.cost.total == ONE_MOCK_CHUNK_COST
    assert guard.settled[0] is event
    assert guard.released == [broken.litellm_call_id]
    assert loop_thread not in guard.settle_threads + guard.release_threads
    assert reserved == Decimal(0)
    # the broken stream's failed attempt (LiteLLM's failure event) is spent as well
    assert spent == sum(
        (e.cost.total for e in costs.events if e.cost.total is not None), Decimal(0)
    )


# --- in a child process: a finalizer under the registry's lock, Ctrl-C mid-stream, the exit ---


_PRELUDE = """
import os, sys, json, gc, asyncio, threading, time, faulthandler
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
faulthandler.dump_traceback_later(60, exit=True)  # a deadlock fails, it does not hang
import litellm
litellm.telemetry = False
import costledger, costledger_litellm
from costledger import Budget, Ledger, Tracker
from costledger_litellm._logger import _registry
DB = sys.argv[1]
budget = Budget("1 USD", "day")
tracker = Tracker(Ledger(f"sqlite:///{DB}"), guards=[budget], log="off")
costledger.configure(tracker)
MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]

def report(label):
    costledger.drain_deferred(10)
    [status] = budget.status(tracker)
    rows = [[e.status, e.input_tokens, e.output_tokens, str(e.total_cost)]
            for e in tracker.ledger.events()]
    print(label, json.dumps({"rows": rows, "spent": str(status.spent),
                             "reserved": str(status.reserved)}), flush=True)
"""


def _run(tmp_path: Path, body: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    script = tmp_path / "child.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    db = tmp_path / "costs.db"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, str(script), str(db), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    return done, db


def _reported(stdout: str, label: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(label + " "):
            return json.loads(line[len(label) + 1 :])  # type: ignore[no-any-return]
    raise AssertionError(f"{label!r} not reported: {stdout!r}")


def _stored(db: Path) -> list[tuple[str, int, int, str]]:
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select status, input_tokens, output_tokens, total_cost from costledger_events"
            " order by status"
        ).fetchall()
    return [(s, i, o, "None" if c is None else str(Decimal(str(c)))) for s, i, o, c in rows]


def test_stream_collected_while_this_thread_holds_the_registry_lock(tmp_path: Path) -> None:
    """The cyclic GC may run a finalizer at any allocation, here while the thread holds the
    registry's lock: the abandoned stream's finalizer must not wait for that lock."""
    done, _ = _run(
        tmp_path,
        """
        class Conversation:  # holds the stream and a bound method of itself: a cycle
            def __init__(self):
                self.on_chunk = self.handle
                self.stream = costledger_litellm.completion(
                    model="gpt-4o-mini", messages=MESSAGES,
                    mock_response="one two three four", stream=True, max_tokens=50)
            def handle(self, chunk):
                pass

        gc.disable()
        conversation = Conversation()
        conversation.on_chunk(next(conversation.stream))
        del conversation
        with _registry._lock:
            gc.collect()
        print("collected", flush=True)
        report("after")
        """,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _reported(done.stdout, "after") == {
        "rows": [["cancelled", 15, 1, "0.00000285"]],
        "spent": "0.00000285",
        "reserved": "0",
    }


def test_completion_interrupted_by_ctrl_c_is_recorded_as_cancelled(tmp_path: Path) -> None:
    done, db = _run(
        tmp_path,
        """
        import _thread
        costledger_litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")
        report("warm")
        # Ctrl-C while LiteLLM's mock waits (its 2 s delay): raised inside LiteLLM
        threading.Timer(0.3, _thread.interrupt_main).start()
        try:
            costledger_litellm.completion(
                model="gpt-4o-mini", messages=MESSAGES, mock_response="4", mock_delay=2,
                max_tokens=20)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        report("before-exit")
        """,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "interrupted" in done.stdout
    warm = _reported(done.stdout, "warm")["rows"]
    assert warm == [["ok", 10, 20, "0.00001350"]]  # LiteLLM's mock answer's usage
    # no usage is known (LiteLLM returned nothing): unpriced, and its reservation given back
    assert _reported(done.stdout, "before-exit") == {
        "rows": [*warm, ["cancelled", 0, 0, "None"]],
        "spent": "0.0000135",
        "reserved": "0",
    }
    assert _stored(db) == [("cancelled", 0, 0, "None"), ("ok", 10, 20, "0.00001350")]


def test_stream_interrupted_by_ctrl_c_while_reading_is_recorded_at_once(
    tmp_path: Path, server: str
) -> None:
    done, db = _run(
        tmp_path,
        """
        import _thread
        stream = costledger_litellm.completion(
            model="openai/gpt-4o-mini", messages=MESSAGES, api_base=sys.argv[2] + "/pause/v1",
            api_key="sk-test", stream=True, max_tokens=100)
        received = []
        # Ctrl-C while __next__ waits on the paused server: raised when the read returns
        threading.Timer(0.5, _thread.interrupt_main).start()
        try:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content)
        except KeyboardInterrupt:
            print("interrupted", json.dumps(received), flush=True)
        report("before-exit")  # the stream is still referenced (a module global)
        """,
        server,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'interrupted ["Hello", " there", " friend"]' in done.stdout
    assert _reported(done.stdout, "before-exit") == {
        "rows": [["cancelled", 15, 3, "0.00000405"]],
        "spent": "0.00000405",
        "reserved": "0",
    }
    assert _stored(db) == [("cancelled", 15, 3, "0.00000405")]


@pytest.mark.parametrize("shape", ["module-global", "uncaught-timeout"])
def test_stream_still_open_at_exit_is_stored_before_the_ledger_closes(
    tmp_path: Path, shape: str
) -> None:
    done, db = _run(
        tmp_path,
        """
        if sys.argv[2] == "module-global":
            stream = costledger_litellm.completion(
                model="gpt-4o-mini", messages=MESSAGES, mock_response="one two three four",
                stream=True, max_tokens=50)
            next(stream)  # the script ends with the stream open
        else:
            async def main():
                stream = await costledger_litellm.acompletion(
                    model="gpt-4o-mini", messages=MESSAGES, mock_response="one two three four",
                    stream=True, max_tokens=50)
                await stream.__anext__()
                # cancelled here, not while reading the stream
                await asyncio.wait_for(asyncio.sleep(10), 0.2)
            asyncio.run(main())  # the TimeoutError ends the script
        """,
        shape,
    )
    if shape == "uncaught-timeout":
        assert done.returncode == 1
        assert "TimeoutError" in done.stderr
    else:
        assert done.returncode == 0, done.stderr[-3000:]
    assert "tracking failed" not in done.stderr
    assert _stored(db) == [("cancelled", 15, 1, "0.00000285")]
