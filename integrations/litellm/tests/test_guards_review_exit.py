"""An ``asyncio.run`` script that exits right after its LiteLLM calls: every call is stored.

LiteLLM delivers an async call's callbacks from its logging worker's queue; the last ones
are delivered by its own exit hook, registered before costledger's (``import litellm``
first), so it used to run after costledger had closed the ledger and those events only
reached the spool. costledger_litellm's exit hook flushes LiteLLM's worker first.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

from litellm_support import GPT_4O_MINI_10_IN_20_OUT

CHILD = textwrap.dedent(
    """
    import asyncio, atexit, os, sys
    # Registered first, so run last: after LiteLLM's and costledger's exit hooks, by when
    # every event that reached costledger has been stored.
    seen = []
    atexit.register(lambda: print("seen", len(seen), flush=True))
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm
    from costledger import Ledger, Tracker
    from costledger_litellm import CostLedgerLogger

    litellm.telemetry = False
    logger = CostLedgerLogger(tracker=Tracker(Ledger("sqlite:///" + sys.argv[1]), log="off"))
    litellm.callbacks = [logger]
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    record = logger._on_event
    logger._on_event = lambda *args, **kw: seen.append(1) or record(*args, **kw)

    async def main():
        await asyncio.gather(*(
            litellm.acompletion(model="gpt-4o-mini", messages=messages, mock_response="4")
            for _ in range(int(sys.argv[2]))
        ))
        # LiteLLM hands each success to its worker's queue from a task of its own, which
        # asyncio.run would cancel (lost for every CustomLogger: flush_callbacks() is the
        # remedy, tested elsewhere): those tasks are let finish queueing their events, and
        # what is queued is what this test leaves to the exit hook.
        from costledger_litellm._exit import _logging_tasks
        tasks = _logging_tasks()
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    asyncio.run(main())
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    print("pending", GLOBAL_LOGGING_WORKER.pending_count, flush=True)
    """
)


def _spooled(path: Path) -> int:
    spool = Path(str(path) + ".spool")
    if not spool.is_dir():
        return 0
    return sum(len(f.read_text().splitlines()) for f in spool.iterdir() if f.is_file())


def test_async_calls_made_just_before_exit_are_all_stored(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    calls = 200
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(calls)],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # LiteLLM's worker runs one callback at a time and its shutdown clear (when
            # asyncio.run cancels it) stops after 20: most events are still queued at exit
            # on every run, however fast the machine (LiteLLM's own exit flush has the same
            # 20-item limit, costledger_litellm's has none).
            "LOGGING_WORKER_CONCURRENCY": "1",
            "MAX_ITERATIONS_TO_CLEAR_QUEUE": "20",
        },
    )
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    # the race this is about: LiteLLM still held events when the script ended
    pending = int(words[words.index("pending") + 1])
    assert pending > 100, done.stdout
    seen = int(words[words.index("seen") + 1])
    con = sqlite3.connect(path)
    rows = con.execute("select total_cost from costledger_events").fetchall()
    con.close()
    assert _spooled(path) == 0
    # Every event that reached costledger is stored, the queued ones by its exit hook.
    # LiteLLM itself may lose the one its worker had taken from the queue when asyncio.run
    # cancelled the task about to deliver it (LOGGING_WORKER_CONCURRENCY=1: at most one;
    # seen once in a loaded CI run): that one never reaches any CustomLogger, and
    # ``await costledger_litellm.flush_callbacks()`` before the end is the remedy (tested
    # below).
    assert len(rows) == seen
    assert calls - 1 <= seen <= calls
    # LiteLLM's mock answer: 10 prompt tokens, 20 completion tokens
    assert sum(Decimal(r[0]) for r in rows) == seen * GPT_4O_MINI_10_IN_20_OUT
    assert "event loop changed" not in done.stderr


CHILD_FLUSHING = textwrap.dedent(
    """
    import asyncio, os, sys
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm
    import costledger_litellm
    from costledger import Ledger, Tracker
    from costledger_litellm import CostLedgerLogger

    litellm.telemetry = False
    logger = CostLedgerLogger(tracker=Tracker(Ledger("sqlite:///" + sys.argv[1]), log="off"))
    litellm.callbacks = [logger]
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    seen = []
    record = logger._on_event
    logger._on_event = lambda *args, **kw: seen.append(1) or record(*args, **kw)

    async def main():
        await asyncio.gather(*(
            litellm.acompletion(model="gpt-4o-mini", messages=messages, mock_response="4")
            for _ in range(int(sys.argv[2]))
        ))
        done = await costledger_litellm.flush_callbacks(60)
        print("flushed", done, "seen", len(seen), flush=True)

    asyncio.run(main())
    """
)


def test_flush_callbacks_delivers_every_event_before_asyncio_run_ends(tmp_path: Path) -> None:
    # Without it, asyncio.run cancels LiteLLM's callback tasks still pending when main
    # returns, and LiteLLM loses those that had not started (no exit hook can bring back).
    path = tmp_path / "flushed.db"
    calls = 300
    done = subprocess.run(
        [sys.executable, "-c", CHILD_FLUSHING, str(path), str(calls)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["flushed", "True", "seen", str(calls)]
    con = sqlite3.connect(path)
    rows = con.execute("select total_cost from costledger_events").fetchall()
    con.close()
    assert _spooled(path) == 0
    assert len(rows) == calls
    assert sum(Decimal(r[0]) for r in rows) == calls * GPT_4O_MINI_10_IN_20_OUT
