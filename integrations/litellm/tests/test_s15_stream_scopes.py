"""``costledger.attribute`` scopes reach a sync stream recorded by the logger alone.

LiteLLM runs a sync stream's success handler on its executor without the caller's context,
and its mid-stream failure handler on a thread of its own: the scopes around the call were
lost (``project=None``). The logger notes them on the caller's thread (LiteLLM's
``log_pre_api_call``), by call id, and the event takes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm_support import MESSAGES, litellm_isolated, offline, wait_until
from s15_server import LocalServer, event_stream, server, sse

import costledger
from costledger import Attribution
from costledger.testing import CapturedCosts, capture_costs
from costledger_litellm import CostLedgerLogger
from costledger_litellm._logger import _Scopes, _scopes

__all__ = ["litellm_isolated", "offline", "server"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline", "logger_alone")


@pytest.fixture
def logger_alone() -> Iterator[None]:
    _scopes.clear()
    litellm.callbacks = [CostLedgerLogger()]
    yield
    _scopes.clear()


@pytest.fixture
def costs() -> Iterator[CapturedCosts]:
    with capture_costs() as captured:
        yield captured


def _mock_stream(**kwargs: Any) -> None:
    for _ in litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="a b c", stream=True, **kwargs
    ):
        pass


def test_a_sync_stream_keeps_the_scopes_around_it(costs: CapturedCosts) -> None:
    with costledger.attribute(project="atlas", user="scope-user", tags=["scoped"]):
        _mock_stream(metadata={"user": "meta-user", "tags": ["request"]})
    wait_until(lambda: len(costs.events) == 1)
    [event] = costs.events
    assert event.status == "ok"
    assert event.project == "atlas"
    assert event.user == "meta-user"  # the request's own value wins over the scope's
    assert set(event.tags) == {"scoped", "request"}
    assert len(_scopes) == 0  # taken by the event


def test_a_sync_stream_broken_midway_keeps_the_scopes_around_it(
    server: LocalServer, costs: CapturedCosts
) -> None:
    chunk = {
        "id": "chatcmpl-s15",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "hi"}}],
    }
    server.respond = lambda path, body: event_stream([sse(chunk), "data: {oops\n\n"])
    with costledger.attribute(project="atlas"), pytest.raises(Exception):  # noqa: B017,PT011
        for _ in litellm.completion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_base=server.base + "/v1",
            api_key="sk-test",
            stream=True,
            max_retries=0,
        ):
            pass
    wait_until(lambda: len(costs.events) == 1)
    [event] = costs.events
    assert event.status == "error"
    assert event.project == "atlas"
    wait_until(lambda: len(_scopes) == 0)


def test_concurrent_sync_streams_each_keep_their_own_scopes(costs: CapturedCosts) -> None:
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            with costledger.attribute(project=f"p{n}"):
                for _ in range(3):
                    _mock_stream(metadata={"n": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    wait_until(lambda: len(costs.events) == 24)
    assert sorted((e.project, e.metadata["n"]) for e in costs.events) == sorted(
        (f"p{n}", n) for n in range(8) for _ in range(3)
    )
    assert len(_scopes) == 0


def test_no_scope_notes_nothing(costs: CapturedCosts) -> None:
    _mock_stream()
    wait_until(lambda: len(costs.events) == 1)
    assert costs.events[0].project is None
    assert len(_scopes) == 0


def test_the_noted_scopes_are_bounded() -> None:
    scopes = _Scopes(maximum=3)
    for n in range(5):
        scopes.note(f"call-{n}", Attribution(project=f"p{n}"))
    assert len(scopes) == 3
    assert scopes.take("call-0") is None  # the oldest, dropped
    assert scopes.take("call-1") is None
    taken = scopes.take("call-4")
    assert taken is not None
    assert taken.project == "p4"
    assert scopes.take("call-4") is None
    assert len(scopes) == 2
