"""``COSTLEDGER_LOG`` and ``UsageLogger`` refuse text that is no keyword and no path, as
``Tracker(log=...)`` does: taken as a path, ``stdot`` wrote usage lines to a file of that
name in the working directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from costledger import Tracker, Usage, UsageLogger
from costledger.testing import InMemoryLedger


def test_usage_logger_refuses_a_typo_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError, match=r"UsageLogger output must be .* got 'stdot'; .* './stdot'"
    ):
        UsageLogger("stdot")
    assert os.listdir(tmp_path) == []


def test_a_typo_in_costledger_log_is_reported_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSTLEDGER_LOG", "stdot")
    ledger = InMemoryLedger()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        event = Tracker(ledger).record("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=10))
    assert event is not None
    assert str(event.cost.total) == "0.00015600"  # the call is still recorded and priced
    assert [e.id for e in ledger.events()] == [event.id]
    assert os.listdir(tmp_path) == []
    assert any(
        "COSTLEDGER_LOG must be" in r.getMessage() and "'stdot'" in r.getMessage()
        for r in caplog.records
    )


def test_a_path_in_costledger_log_still_writes_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSTLEDGER_LOG", "./usage")
    logger = UsageLogger()
    logger.close()
    assert os.listdir(tmp_path) == ["usage"]
