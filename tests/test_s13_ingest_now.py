"""``costledger ingest --now``: the time of the responses that carry none (Anthropic messages
and batch results), which also prices them. The real CLI, a real SQLite ledger."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import sqlalchemy as sa

from costledger._ledger._engine import resolve_url

COSTLEDGER = Path(sys.executable).with_name("costledger")

_MESSAGE = {
    "id": "msg_s13now",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [],
    "usage": {"input_tokens": 1000, "output_tokens": 100},
}
_BATCH = {
    "custom_id": "req-1",
    "result": {"type": "succeeded", "message": {**_MESSAGE, "id": "msg_s13b"}},
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COSTLEDGER), "ingest", *args], capture_output=True, text=True, timeout=300
    )


def _rows(url: str) -> list[tuple[str, str, Decimal]]:
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT request_id, timestamp, total_cost FROM costledger_events ORDER BY 1"
            ).all()
            return [(r[0], r[1], Decimal(r[2])) for r in rows]
    finally:
        engine.dispose()


def test_now_gives_anthropic_results_their_time(tmp_path: Path) -> None:
    """The CLI had no way to pass ``now=``: such results took the day of the run."""
    log = tmp_path / "anthropic.jsonl"
    log.write_bytes(orjson.dumps(_MESSAGE) + b"\n" + orjson.dumps(_BATCH) + b"\n")
    db = f"sqlite:///{tmp_path / 'l.db'}"

    done = _cli(
        str(log), "--db", db, "--checkpoint-dir", str(tmp_path), "--now", "2025-05-01T10:00Z"
    )

    assert done.returncode == 0, done.stderr
    # claude-3-5-haiku: 1000 * $0.80/M + 100 * $4/M (the price data lists no batch variant
    # of it: the batch result too, at the standard price)
    assert _rows(db) == [
        ("msg_s13b", "2025-05-01T10:00:00.000000+00:00", Decimal("0.0012000")),
        ("msg_s13now", "2025-05-01T10:00:00.000000+00:00", Decimal("0.0012000")),
    ]


def test_a_now_that_is_not_a_time_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    log = tmp_path / "anthropic.jsonl"
    log.write_bytes(orjson.dumps(_MESSAGE) + b"\n")
    done = _cli(str(log), "--db", f"sqlite:///{tmp_path / 'l.db'}", "--now", "soon")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: Invalid value for '--now': cannot read 'soon' as a time; use an ISO date or time"
    )
    assert not (tmp_path / "l.db").exists()
