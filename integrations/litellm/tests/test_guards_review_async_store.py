"""LiteLLM async calls with budgets on a slow Redis guard store (the real Redis behind a small
TCP proxy started here): the reservations (``acompletion`` wrapper) and the settles (the
async success callbacks) wait on the store in worker threads, never on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import litellm
import pytest
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
from litellm_support import GPT_4O_MINI_10_IN_20_OUT, IN_CI, MESSAGES, litellm_isolated, offline

from costledger import Tracker
from costledger._guards import Budget, budget_status, open_store
from costledger.testing import InMemoryLedger
from costledger_litellm import CostLedgerLogger

__all__ = ["litellm_isolated", "offline"]

pytestmark = pytest.mark.usefixtures("litellm_isolated", "offline")


class SlowProxy:
    """A TCP proxy to Redis whose forwarded chunks each wait ``delay`` seconds (each way)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.delay = 0.0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.delay:
                        time.sleep(self.delay)
                    (server if sock is client else client).sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def slow_redis() -> Iterator[tuple[SlowProxy, str]]:
    base = os.environ.get("COSTLEDGER_TEST_REDIS_URL")
    if not base:
        if IN_CI:
            pytest.fail("COSTLEDGER_TEST_REDIS_URL is not set, and CI=true requires it")
        pytest.skip("COSTLEDGER_TEST_REDIS_URL is not set; export it to run this test")
    import redis

    parts = urlsplit(base)
    proxy = SlowProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    prefix = f"cltest:{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}?prefix={prefix}&timeout=5"
    yield proxy, url
    proxy.delay = 0.0
    open_store(url).close()
    proxy.close()
    client = redis.Redis.from_url(base)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def test_guarded_async_calls_on_a_slow_redis_never_stall_the_event_loop(
    slow_redis: tuple[SlowProxy, str],
) -> None:
    proxy, url = slow_redis
    budget = Budget("1 USD", "day", hard=False, name=f"litellm-slow-{uuid.uuid4().hex[:8]}")
    tracker = Tracker(InMemoryLedger(), guards=[budget], guard_store=url, log="off")
    logger = CostLedgerLogger(tracker=tracker)
    litellm.callbacks = [logger]

    async def call() -> None:
        await logger.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="4")

    await call()  # connects, loads the scripts, seeds the counter
    await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), 30)
    proxy.delay = 0.25  # every round trip to Redis takes at least 0.5 s
    longest = 0.0
    last = time.monotonic()

    async def heartbeat() -> None:
        nonlocal longest, last
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest, last = max(longest, now - last - 0.01), now

    beating = asyncio.create_task(heartbeat())
    started = time.monotonic()
    await asyncio.gather(*(call() for _ in range(10)))
    await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), 30)  # every settle done
    took = time.monotonic() - started
    beating.cancel()
    longest = max(longest, time.monotonic() - last - 0.01)
    proxy.delay = 0.0
    assert took >= 1.0  # a reservation and a settle each, waited on concurrently
    # a round trip on the loop would stall it >= 0.5 s; less is the machine's scheduling
    # (0.29 s seen once on a loaded CI run)
    assert longest < 0.45, longest
    [status] = budget_status(tracker)
    assert (status.spent, status.reserved) == (11 * GPT_4O_MINI_10_IN_20_OUT, Decimal(0))
    assert len(list(tracker.ledger.events())) == 11
