"""Shared set-up of the LiteLLM tests: offline LiteLLM, clean callback lists, deterministic waits.

Imported by every ``test_litellm_*`` module before LiteLLM itself, so LiteLLM reads its
bundled price map instead of fetching one, and sends no telemetry. The ``offline`` fixture
makes any connection to a non-loopback address fail the test.
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before LiteLLM is imported

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from costledger import GuardRefusal, Tracker, UsageEvent
from costledger._tracker import Call
from costledger_litellm._logger import _registry

litellm.telemetry = False

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
GPT_4O_MINI_10_IN_20_OUT = Decimal("0.0000135")  # 10 * 0.15 / 1e6 + 20 * 0.60 / 1e6
GPT_4O_10_IN_20_OUT = Decimal("0.000225")  # 10 * $2.50 + 20 * $10.00, per million
IN_CI = os.environ.get("CI", "").lower() == "true"

# LiteLLM's global callback lists. A per-call ``callbacks=[...]`` is appended to these
# for good (LiteLLM's behaviour), so every test restores them.
_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "input_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "_async_input_callback",
)


def gpt_4o_mini_cost(prompt: int, completion: int) -> Decimal:
    return Decimal(prompt) * Decimal("0.15") / 10**6 + Decimal(completion) * Decimal("0.6") / 10**6


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``condition`` until true (sync success callbacks run on LiteLLM's logging thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.002)


class Sentinel(CustomLogger):
    """A plain LiteLLM logger registered after ours: once it has seen an event, every
    callback before it in LiteLLM's list has run for that event. Keeps what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, Any], Any, Any, Any]] = []
        self._lock = threading.Lock()

    def _note(self, kind: str, kwargs: Any, response_obj: Any, start: Any, end: Any) -> None:
        with self._lock:
            self.seen.append((kind, kwargs, response_obj, start, end))

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._note("success", kwargs, response_obj, start_time, end_time)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._note("failure", kwargs, response_obj, start_time, end_time)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._note("success", kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._note("failure", kwargs, response_obj, start_time, end_time)

    def wait(self, count: int = 1, timeout: float = 15.0) -> None:
        wait_until(lambda: len(self.seen) >= count, timeout)

    @property
    def last(self) -> tuple[str, dict[str, Any], Any, Any, Any]:
        return self.seen[-1]

    async def await_(self, count: int = 1, timeout: float = 15.0) -> None:
        import asyncio

        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} LiteLLM events not seen within {timeout} s")
            await asyncio.sleep(0.002)


class RecordingGuard:
    """A guard following costledger's Guard protocol that records what it is told."""

    def __init__(self, *, refuse: GuardRefusal | None = None) -> None:
        self.refuse = refuse
        self.reserved: list[dict[str, Any]] = []
        self.settled: list[UsageEvent] = []
        self.released: list[Any] = []

    def reserve(self, call: Call, tracker: Tracker) -> Any:
        self.reserved.append(
            {
                "id": call.id,
                "model": call.model,
                "provider": call.provider,
                "prompt_text": call.prompt_text,
                "max_output_tokens": call.max_output_tokens,
                "choices": call.choices,
                "user": call.attribution.user,
                "team": call.attribution.team,
            }
        )
        if self.refuse is not None:
            raise self.refuse
        return call.id

    def settle(self, token: Any, event: UsageEvent) -> None:
        self.settled.append(event)

    def release(self, token: Any) -> None:
        self.released.append(token)


def utc(moment: datetime) -> datetime:
    from datetime import timezone

    return moment.astimezone(timezone.utc)


@pytest.fixture
def litellm_isolated() -> Iterator[None]:
    """LiteLLM's global callbacks and cache, and costledger's LiteLLM registries, restored."""
    saved = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    saved_cache = litellm.cache
    for name in _CALLBACK_LISTS:
        setattr(litellm, name, [])
    _registry.clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(litellm, name, value)
        litellm.cache = saved_cache
        _registry.clear()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to reach a host other than this one."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"test tried to resolve a network host: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
