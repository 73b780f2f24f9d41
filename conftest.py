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

import asyncio
import contextlib
import os
import sys
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


_LITELLM_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "input_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "_async_input_callback",
)


def _clear_litellm_callbacks() -> None:
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return
    for name in _LITELLM_CALLBACK_LISTS:
        if isinstance(getattr(litellm, name, None), list):
            setattr(litellm, name, [])


@pytest.fixture(autouse=True)
def _litellm_isolated_globally() -> Iterator[None]:
    """Each test starts and ends with no LiteLLM callback registered, and with LiteLLM's
    async logging worker drained.

    LiteLLM keeps callbacks in module globals: a ``CostLedgerLogger`` that one test leaves
    registered (the guarded wrappers attach one when none is) would record every LiteLLM
    call of the tests after it a second time, beside the entry point they test. And its
    async logging worker can hold a test's success callback until the next event loop runs
    it, which would then land in the next test's ``capture_costs``."""
    _clear_litellm_callbacks()
    yield
    if "litellm" in sys.modules:
        _drain_litellm_logging()
    _clear_litellm_callbacks()


def _drain_litellm_logging() -> None:
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # another LiteLLM version: nothing to drain this way
        return
    if not GLOBAL_LOGGING_WORKER.pending_count:
        return

    async def drain() -> None:
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), 10)
        await GLOBAL_LOGGING_WORKER.stop()

    with contextlib.suppress(Exception):
        asyncio.run(drain())


@pytest.fixture(autouse=True)
def _deferred_drained_after_each_test() -> Iterator[None]:
    """Each test ends with costledger's background queue worked off: a test that floods it
    (or holds the worker) must not leave the next test's calls behind a full queue, where
    they are finished on the caller's thread instead."""
    yield
    from costledger import _tracker, drain_deferred

    drain_deferred(60)
    # A test that runs the exit path in-process (``_flush_at_exit``) leaves the worker in
    # its exit mode, finishing every later call on its caller's thread: back to normal.
    _tracker._deferred._exiting = False
