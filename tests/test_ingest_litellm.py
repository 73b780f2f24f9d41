"""The same LiteLLM calls, two ways into a ledger: live through ``CostLedgerLogger``, and
through the ``StandardLoggingPayload`` lines LiteLLM handed its loggers, ingested afterwards.
Real ``litellm.completion(mock_response=...)`` and ``litellm.embedding``; the rows must match."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before LiteLLM is imported

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

litellm = pytest.importorskip("litellm")
costledger_litellm = pytest.importorskip("costledger_litellm")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

from costledger import Tracker  # noqa: E402
from costledger._ingest import ingest  # noqa: E402
from costledger._ledger import Ledger  # noqa: E402
from costledger._ledger._engine import resolve_url  # noqa: E402

_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


class PayloadFile(CustomLogger):
    """Writes every ``standard_logging_object`` as one JSON line, as a log shipper would."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.count = 0
        self._lock = threading.Lock()

    def _write(self, kwargs: Any) -> None:
        line = orjson.dumps(kwargs["standard_logging_object"], default=str)
        with self._lock, self.path.open("ab") as f:
            f.write(line + b"\n")
            self.count += 1

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._write(kwargs)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._write(kwargs)


def _wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "LiteLLM's callbacks did not all run"
        time.sleep(0.01)


@pytest.fixture
def isolated_litellm() -> Iterator[None]:
    saved = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    for name in _CALLBACK_LISTS:
        setattr(litellm, name, [])
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(litellm, name, value)


def _rows(url: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            result = conn.exec_driver_sql("SELECT * FROM costledger_events")
            return {r._mapping["id"]: dict(r._mapping) for r in result}
    finally:
        engine.dispose()


@pytest.mark.usefixtures("isolated_litellm")
def test_ingested_payloads_equal_the_live_integrations_rows(tmp_path: Path) -> None:
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    ingested_url = f"sqlite:///{tmp_path / 'ingested.db'}"
    payloads = PayloadFile(tmp_path / "litellm.jsonl")
    with Ledger(live_url, sync=True) as live:
        logger = costledger_litellm.CostLedgerLogger(Tracker(live, log="off"))
        litellm.callbacks = [logger, payloads]
        messages = [{"role": "user", "content": "What is 2 + 2?"}]
        litellm.completion(
            model="gpt-4o-mini", messages=messages, mock_response="4", user="end-user-7"
        )
        with pytest.raises(Exception, match="boom"):
            litellm.completion(
                model="gpt-4o-mini", messages=messages, mock_response=Exception("boom")
            )
        litellm.embedding(model="text-embedding-3-small", input=["hi"], mock_response=[0.1])
        _wait(lambda: payloads.count == 3)
        _wait(lambda: len(list(live.events())) == 3)

    result = ingest(payloads.path, ledger=ingested_url, checkpoint_dir=tmp_path)
    assert (result.accepted, result.rejected) == (3, 0)

    live_rows, ingested_rows = _rows(live_url), _rows(ingested_url)
    assert set(live_rows) == set(ingested_rows)
    for call_id, row in live_rows.items():
        other = ingested_rows[call_id]
        # LiteLLM's own datetimes vs the epoch floats it logged: the same instant
        assert abs(row.pop("latency_ms") - other.pop("latency_ms")) < 0.002
        assert row == other, call_id
    statuses = sorted(r["status"] for r in live_rows.values())
    assert statuses == ["error", "ok", "ok"]
    users = {r["user"] for r in live_rows.values()}
    assert "end-user-7" in users
