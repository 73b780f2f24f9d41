"""The deferred worker under load, at exit and across fork: bounded, nothing lost, no hang.

Exit and fork behaviour is checked in subprocesses, each against a real SQLite ledger file
whose rows are counted afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from costledger._tracker import MAX_DEFERRED

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _run(tmp_path: Path, body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM costledger_events")]


def _spooled(db: Path) -> list[str]:
    spool = Path(f"{db}.spool")
    return [p.name for p in spool.glob("*.jsonl")] if spool.exists() else []


def test_a_full_deferred_queue_finishes_calls_on_the_callers_thread(tmp_path: Path) -> None:
    """The worker is held inside the first call: the next MAX_DEFERRED calls wait in the
    queue, and the 300 after them are finished by their caller, not queued (the queue
    never grows past its cap); every call is stored once."""
    db = tmp_path / "l.db"
    done = _run(
        tmp_path,
        f"""
        import threading
        from costledger import Ledger, Tracker, Usage, _tracker

        class Gate:
            "A ledger whose first record waits until the test opens the gate."
            def __init__(self, inner):
                self.inner, self.entered, self.open = inner, threading.Event(), threading.Event()
                self.callers = 0
            def record(self, event):
                if not self.entered.is_set():
                    self.entered.set()
                    self.open.wait(30)
                if threading.current_thread() is threading.main_thread():
                    self.callers += 1
                self.inner.record(event)

        ledger = Ledger("sqlite:///{db}")
        gate = Gate(ledger)
        tracker = Tracker(gate, log="off")
        def finish(i):
            call = tracker.start(source="api", model="gpt-4o-mini", call_id=f"c-{{i}}")
            tracker.finish(call, usage=Usage(100, 10), defer=True)
        finish(0)
        assert gate.entered.wait(10)
        longest = 0
        for i in range(1, {MAX_DEFERRED} + 301):
            finish(i)
            longest = max(longest, len(_tracker._deferred._items))
        gate.open.set()
        assert _tracker.drain_deferred(20)
        ledger.close()
        print(longest, gate.callers, getattr(_tracker._deferred, "n_inline", None))
        """,
    )
    assert done.stdout.split() == [str(MAX_DEFERRED), "300", "300"]
    ids = _ids(db)
    assert (len(ids), len(set(ids))) == (MAX_DEFERRED + 301, MAX_DEFERRED + 301)


def test_every_queued_call_is_stored_at_exit_before_the_ledger_closes(tmp_path: Path) -> None:
    """8,000 calls still queued when the script ends (the worker needs about 3 s for them,
    the ledger's exit flush allows 0.5 s): each is finished and in the database, none in
    the spool and none after the ledger closed."""
    db = tmp_path / "l.db"
    done = _run(
        tmp_path,
        f"""
        import sys, time
        from costledger import Ledger, Tracker, Usage

        class Slow:
            "A ledger that takes 0.3 ms per event (a slow sink)."
            def __init__(self, inner):
                self.inner = inner
            def record(self, event):
                time.sleep(0.0003)
                self.inner.record(event)

        ledger = Ledger("sqlite:///{db}", exit_timeout=0.5)
        tracker = Tracker(Slow(ledger), log="off")
        for i in range(8000):
            call = tracker.start(source="api", model="gpt-4o-mini", call_id=f"c-{{i}}")
            tracker.finish(call, usage=Usage(100, 10), defer=True)
        print(ledger.stats().recorded < 8000, flush=True)
        sys.exit(0)
        """,
    )
    assert done.stdout.split() == ["True"]  # work was still queued at the exit
    ids = _ids(db)
    assert (len(ids), len(set(ids))) == (8000, 8000)
    assert _spooled(db) == []
    assert "lost" not in done.stderr


def test_multiprocessing_fork_children_store_their_events(tmp_path: Path) -> None:
    """``configure`` at import, then ``multiprocessing`` with fork: a Process child (deferred
    finishes) and Pool workers (direct finishes) end with ``os._exit``, which skips atexit;
    their events are stored all the same, exactly once."""
    db = tmp_path / "l.db"
    _run(
        tmp_path,
        f"""
        import multiprocessing as mp
        import costledger
        from costledger import Ledger, Usage

        costledger.configure(ledger=Ledger("sqlite:///{db}"), log="off")

        def rec(tag, n, defer):
            tracker = costledger.get_tracker()
            for i in range(n):
                call = tracker.start(source="api", model="gpt-4o-mini", call_id=f"{{tag}}-{{i}}")
                tracker.finish(call, usage=Usage(100, 10), defer=defer)

        def task(k):
            rec(f"pool{{k}}", 150, False)
            rec(f"poold{{k}}", 50, True)
            return k

        if __name__ == "__main__":
            rec("parent", 200, True)
            # worker and writer running before the forks (a fork in the middle of the
            # ledger's first write is another matter: see the ledger's own tests)
            costledger.get_tracker().ledger.flush()
            ctx = mp.get_context("fork")
            p = ctx.Process(target=rec, args=("proc", 300, True))
            p.start()
            p.join()
            with ctx.Pool(2) as pool:
                assert pool.map(task, range(4)) == [0, 1, 2, 3]
                pool.close()
                pool.join()
            costledger.get_tracker().ledger.close()
        """,
    )
    ids = _ids(db)
    tags = [i.split("-")[0] for i in ids]
    counts = {tag: tags.count(tag) for tag in set(tags)}
    expected = {"parent": 200, "proc": 300}
    expected |= {f"pool{k}": 150 for k in range(4)} | {f"poold{k}": 50 for k in range(4)}
    assert counts == expected
    assert len(ids) == len(set(ids)) == 1300
    assert _spooled(db) == []


def test_a_fork_while_other_threads_hold_the_trackers_locks_does_not_hang(
    tmp_path: Path,
) -> None:
    """The parent's threads hold the deferred worker's lock and the tracker's own (as its
    worker and a drainer do at any moment) while it forks: the child's deferred finish
    returns, and its event is stored (the parent's are not stored twice)."""
    db = tmp_path / "l.db"
    done = _run(
        tmp_path,
        f"""
        import os, signal, sys, threading
        from costledger import Tracker, Usage, _tracker

        os.environ["COSTLEDGER_DATABASE_URL"] = "sqlite:///{db}"
        tracker = Tracker(log="off")  # its ledger made on first use: under tracker._lock
        held, release = threading.Event(), threading.Event()
        def hold():
            with _tracker._deferred._idle, tracker._lock:
                held.set()
                release.wait(120)
        threading.Thread(target=hold, daemon=True).start()
        assert held.wait(10)
        children = []
        for k in range(3):
            pid = os.fork()
            if pid == 0:
                # a hang would end the child with SIGALRM; generous: the child imports
                # SQLAlchemy, makes the ledger and loads the prices, slow on a loaded machine
                signal.alarm(30)
                call = tracker.start(source="api", model="gpt-4o-mini", call_id=f"child-{{k}}")
                tracker.finish(call, usage=Usage(100, 10), defer=True)
                sys.exit(0)
            children.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        release.set()
        call = tracker.start(source="api", model="gpt-4o-mini", call_id="parent-0")
        tracker.finish(call, usage=Usage(100, 10), defer=True)
        tracker.ledger.close()
        print(codes)
        """,
        timeout=120,
    )
    assert done.stdout.strip() == "[0, 0, 0]"
    assert sorted(_ids(db)) == ["child-0", "child-1", "child-2", "parent-0"]
