"""Concurrent writers into one PostgreSQL ledger: a batch is inserted in id order (one lock
order for every writer, so two ingestions of logs holding the same calls no longer deadlock),
and a batch that deadlocks anyway, or fails to serialize, is written once more. Real
PostgreSQL, real transactions held open by a second connection, the real writer."""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from costledger._ingest import ingest, response_event_id
from costledger._ingest._convert import Converter
from costledger._ledger import Ledger
from costledger._ledger._engine import resolve_url
from costledger._ledger._rollups import rebuild_rollups
from costledger._ledger._rows import postgresql_row
from costledger._pricing import Pricer

from .ingest_support import pricer

__all__ = ["pricer"]  # fixtures

pytestmark = pytest.mark.postgres

# gpt-4o-mini, 1000 input and 100 output tokens: 1000 * $0.15/M + 100 * $0.60/M
_CALL_COST = Decimal("0.00021")


def _chat(name: str) -> bytes:
    return orjson.dumps(
        {
            "id": name,
            "object": "chat.completion",
            "created": 1748779200,
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100},
        }
    )


def _two_calls() -> tuple[bytes, bytes]:
    """Two responses, the first of the lower event id."""
    one, two = _chat("chatcmpl-s13dl-1"), _chat("chatcmpl-s13dl-2")
    if response_event_id("chatcmpl-s13dl-1", b"", 0) > response_event_id(
        "chatcmpl-s13dl-2", b"", 0
    ):
        one, two = two, one
    return one, two


class _Holder(threading.Thread):
    """Another writer: a transaction of its own through the ledger's store, inserting the
    rows of ``first``, then (once the ingestion waits for it) of ``second``, then commit."""

    def __init__(self, url: str, pricer: Pricer, first: bytes, second: bytes) -> None:
        super().__init__(daemon=True)
        self.ledger = Ledger(url, sync=True)
        converter = Converter(pricer)
        self.rows = [converter.convert(orjson.loads(line), line, 1) for line in (first, second)]
        self.url = url
        self.holding = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        store = self.ledger._core.store
        try:
            with store.write_transaction() as conn:
                # this session waits long before looking for deadlocks: the ingestion's
                # (1 s, the default) finds the cycle, so it is the one rolled back
                conn.exec_driver_sql("SET LOCAL deadlock_timeout = '30s'")
                store.insert_params(conn, [postgresql_row(self.rows[0])])
                self.holding.set()
                _wait_for_a_lock_wait(self.url)
                store.insert_params(conn, [postgresql_row(self.rows[1])])
                store.on_inserted(conn, self.rows)
        except BaseException as exc:
            self.error = exc
            self.holding.set()
        finally:
            self.ledger.close()


def _wait_for_a_lock_wait(url: str) -> None:
    engine = sa.create_engine(resolve_url(url))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                waiting = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).scalar_one()
            if waiting:
                return
            time.sleep(0.05)
        raise AssertionError("the ingestion never waited for the other transaction")
    finally:
        engine.dispose()


def _ledger_state(url: str) -> tuple[int, Decimal]:
    with Ledger(url, sync=True) as ledger:
        kept = ledger.summary(by=["day", "model"])
        rebuild_rollups(ledger)
        assert ledger.summary(by=["day", "model"]) == kept  # the rollups count each call once
        events = list(ledger.events())
    return len(events), sum((e.total_cost or Decimal(0) for e in events), Decimal(0))


def _ingest_while(
    holder: _Holder, path: Path, url: str, pricer: Pricer
) -> tuple[int, int, str | None]:
    holder.start()
    assert holder.holding.wait(60)
    result = ingest(path, ledger=url, pricer=pricer, checkpoint_dir=path.parent / "ck")
    holder.join(60)
    return result.accepted, result.duplicates, result.inputs[0].error


def test_a_batch_is_inserted_in_id_order(
    pg_url: str, tmp_path: Path, pricer: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    """The log holds the higher id first; the other writer holds the lower one and then takes
    the higher. In file order the ingestion took the higher and waited for the lower, while
    the other waited for the higher: a deadlock. In id order it waits first, for the lower,
    holding nothing the other wants."""
    low, high = _two_calls()
    path = tmp_path / "usage.jsonl"
    path.write_bytes(high + b"\n" + low + b"\n")
    holder = _Holder(pg_url, pricer, low, high)

    with caplog.at_level(logging.INFO, logger="costledger"):
        assert _ingest_while(holder, path, pg_url, pricer) == (0, 2, None)

    assert holder.error is None
    assert "writing the batch again" not in caplog.text
    assert _ledger_state(pg_url) == (2, 2 * _CALL_COST)


def test_a_batch_that_deadlocks_is_written_once_more(
    pg_url: str, tmp_path: Path, pricer: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    """The other writer holds the higher id and then takes the lower, which the ingestion
    (in id order) took first: PostgreSQL rolls the ingestion back (DeadlockDetected, which
    stopped the run); its batch runs again, after the other commits, as duplicates."""
    low, high = _two_calls()
    path = tmp_path / "usage.jsonl"
    path.write_bytes(low + b"\n" + high + b"\n" + _chat("chatcmpl-s13dl-3") + b"\n")
    holder = _Holder(pg_url, pricer, high, low)

    with caplog.at_level(logging.INFO, logger="costledger"):
        assert _ingest_while(holder, path, pg_url, pricer) == (1, 2, None)

    assert holder.error is None
    assert "deadlock detected" in caplog.text
    assert "writing the batch again" in caplog.text
    assert _ledger_state(pg_url) == (3, 3 * _CALL_COST)
