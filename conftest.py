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
