"""Test-session set-up shared by every test directory (tests/ and both integrations).

A test that reaches the process default Tracker without a ledger of its own (an entry
point used without ``tracker=`` and outside ``capture_costs``) would write
``./costledger.db`` into the checkout, or into the ledger a developer's
``COSTLEDGER_DATABASE_URL`` names. Each test process gets a default ledger file of its
own instead; tests about that variable set it themselves (``monkeypatch``).

``costs``: every usage event recorded during the test, the process default Tracker
swapped for one with an in-memory ledger (``capture_costs()``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from costledger.testing import CapturedCosts, capture_costs

_DEFAULT_LEDGER_DIR = tempfile.mkdtemp(prefix="costledger-tests-")
os.environ["COSTLEDGER_DATABASE_URL"] = f"sqlite:///{_DEFAULT_LEDGER_DIR}/default-ledger.db"


@pytest.fixture
def costs() -> Iterator[CapturedCosts]:
    with capture_costs() as captured:
        yield captured


@pytest.fixture(autouse=True)
def _litellm_logging_drained() -> Iterator[None]:
    """LiteLLM's async logging worker can hold a test's success callback until the next
    event loop runs it (a sync call's async logging, a sync fallback); that event would
    then be recorded inside the next test's ``capture_costs``. Drain the worker after
    each test that left callbacks pending, so each test's events land in that test."""
    yield
    import sys

    if "litellm" not in sys.modules:
        return
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # another LiteLLM version: nothing to drain this way
        return
    if not GLOBAL_LOGGING_WORKER.pending_count:
        return
    import asyncio
    import contextlib

    async def drain() -> None:
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), 10)
        await GLOBAL_LOGGING_WORKER.stop()

    with contextlib.suppress(Exception):
        asyncio.run(drain())
