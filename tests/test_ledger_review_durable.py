"""``durable=True`` under failure: what ``stats()`` says while the database is down, and
calls made through the entry points surviving a SIGKILL right after they returned."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger


def _event(i: int) -> UsageEvent:
    return UsageEvent(
        id=f"ev-{i}",
        model="gpt-4o",
        usage=Usage(input_tokens=10 + i, output_tokens=1),
        cost=Cost(status="priced", total=Decimal("0.000000037500") * (i + 1)),
    )


def _spooled_lines(directory: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in directory.glob("[0-9]*.jsonl"))


@pytest.mark.parametrize("durable", [False, True])
def test_spooled_counts_the_events_waiting_in_the_spool_when_durable_too(
    tmp_path: Path, durable: bool
) -> None:
    """The database cannot be opened: every event waits in the spool, and ``spooled`` says
    how many, durable or not (a durable event's line is already in its segment: it was
    counted nowhere). Once the database is back they are replayed, and counted there."""
    blocker = tmp_path / "data"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker / 'ledger.db'}"
    spool = tmp_path / "spool"
    ledger = Ledger(url, spool_dir=spool, durable=durable, batch_size=10, flush_interval=0.05)
    try:
        for i in range(25):
            ledger.record(_event(i))
        assert ledger.flush(timeout=30) is False
        for i in range(25, 40):  # while it backs off: straight to the spool
            ledger.record(_event(i))
        assert ledger.flush(timeout=30) is False
        stats = ledger.stats()
        assert (stats.recorded, stats.inserted, stats.spooled, stats.buffered) == (40, 0, 40, 0)
        assert (stats.dropped, stats.healthy) == (0, False)
        assert _spooled_lines(spool) == 40

        blocker.unlink()  # the operator fixes the path
        deadline = time.monotonic() + 60
        while ledger.stats().replayed < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ledger.flush(timeout=30)
        stats = ledger.stats()
        assert (stats.spooled, stats.replayed, stats.inserted, stats.duplicates) == (40, 40, 40, 0)
        stored = {e.id: e.total_cost for e in ledger.events()}
        assert stored == {f"ev-{i}": Decimal("0.000000037500") * (i + 1) for i in range(40)}
        assert sum(stored.values()) == Decimal("0.0000307500")
        assert list(spool.glob("[0-9]*.jsonl")) == []
    finally:
        ledger.close()


_LANGCHAIN_FAKES = Path(__file__).parents[1] / "integrations" / "langchain" / "tests"


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("n", [1, 40])
def test_durable_entry_point_calls_survive_a_sigkill_right_after_they_return(
    tmp_path: Path, n: int
) -> None:
    """A process with a durable ledger makes ``n`` ``@track_cost`` calls and ``n``
    LangChain invokes (the fake chat model, the real runtime and handler), says "done" and
    stops; the test SIGKILLs it on reading that. Each call was in the durable spool before
    it returned: the next ledger on the file replays exactly 2n rows, to the last decimal.
    (The writer would not have written them: flush interval 60 s; nor the background
    worker: another tracker's ledger holds it from the start.)"""
    pytest.importorskip("costledger_langchain")
    db = tmp_path / "k.db"
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys, threading
            sys.path.insert(0, {str(_LANGCHAIN_FAKES)!r})
            from costledger import Ledger, Tracker, Usage, configure, track_cost
            from costledger_langchain import CostLedgerCallbackHandler
            from langchain_fakes import UsageChatModel

            configure(Tracker(Ledger("sqlite:///{db}", durable=True, flush_interval=60),
                              log="off"))

            @track_cost(model="gpt-4o-mini", provider="openai")
            def ask(i):
                return {{"model": "gpt-4o-mini-2024-07-18",
                         "usage": {{"prompt_tokens": 100 + i, "completion_tokens": 10}}}}

            class Stuck:
                "Another tracker's ledger, stuck in record: the background worker with it."
                def record(self, event):
                    threading.Event().wait()

            Tracker(Stuck(), log="off").record("gpt-4o-mini", Usage(1, 1), defer=True)
            handler = CostLedgerCallbackHandler()
            model = UsageChatModel()
            for i in range({n}):
                ask(i)
                model.invoke("hi", config={{"callbacks": [handler]}})
            print("done", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)  # nothing runs on: the test kills it
            """
        )
    )
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        assert line == "done\n", child.stderr.read() if child.stderr else ""
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)

    with Ledger(f"sqlite:///{db}") as ledger:
        assert ledger.flush(timeout=30)
        stats = ledger.stats()
        assert (stats.replayed, stats.inserted, stats.torn_lines) == (2 * n, 2 * n, 0)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT source, total_cost FROM costledger_events").fetchall()
    by_source: dict[str, list[Decimal]] = {}
    for source, cost in rows:
        by_source.setdefault(source, []).append(Decimal(cost))
    in_price, out_price = Decimal("0.15") / 10**6, Decimal("0.6") / 10**6
    decorated = sum(((100 + i) * in_price + 10 * out_price for i in range(n)), Decimal(0))
    assert {k: (len(v), sum(v)) for k, v in by_source.items()} == {
        "decorator": (n, decorated),
        "langchain": (n, n * Decimal("0.00027")),
    }
    assert sum(Decimal(c) for _, c in rows) == {1: Decimal("0.000291"), 40: Decimal("0.011757")}[n]
