"""The ledger across fork: a child forked at any moment of the parent's writer writes its
own events, a ``multiprocessing`` child's exit flushes the ledgers it wrote to (and only
those), and the parent's close replays whatever a child spooled.

Each case runs a script in a subprocess (``multiprocessing`` with the fork context, real
SQLite files or PostgreSQL) and counts the stored rows afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

_PRELUDE = """
import multiprocessing as mp, os, sys, threading, time
from decimal import Decimal
import costledger
from costledger import Cost, Ledger, Usage, UsageEvent

def ev(i):
    return UsageEvent(id=i, model="gpt-4o-mini", usage=Usage(100, 20),
                      cost=Cost(status="priced", total=Decimal("0.000027")))
"""


def _run(
    tmp_path: Path, body: str, *, spools: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # a child that could not write in time spools at its exit, saying so
    assert "did not answer" not in done.stderr, done.stderr[-3000:]
    assert spools or "spooling" not in done.stderr, done.stderr[-3000:]
    return done


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM costledger_events")]
    tags = [i.split("-")[0] for i in ids]
    return {tag: tags.count(tag) for tag in set(tags)}


def _spooled(db: Path) -> list[str]:
    spool = Path(f"{db}.spool")
    return [p.name for p in spool.glob("*.jsonl")] if spool.exists() else []


def test_a_fork_while_the_writer_imports_for_the_first_write(tmp_path: Path) -> None:
    """The parent's writer is creating the schema (importing Alembic: made slow here by an
    import hook of the script's, not of costledger's) when the host forks a Process, then
    a Pool: every child's events are stored, none waits out the exit timeout, nothing
    is left in the spool."""
    db = tmp_path / "l.db"
    _run(
        tmp_path,
        f"""
        class SlowImport:
            "The first import of alembic.command takes 0.5 s: the forks land inside it."
            started = threading.Event()
            def find_spec(self, name, path=None, target=None):
                if name == "alembic.command" and not self.started.is_set():
                    self.started.set()
                    time.sleep(0.5)
                return None

        sys.meta_path.insert(0, SlowImport())
        costledger.configure(ledger=Ledger("sqlite:///{db}"), log="off")

        def rec(tag, n, defer):
            tracker = costledger.get_tracker()
            for i in range(n):
                call = tracker.start(source="api", model="gpt-4o-mini", call_id=f"{{tag}}-{{i}}")
                tracker.finish(call, usage=Usage(100, 10), defer=defer)

        def task(k):
            rec(f"pool{{k}}", 50, False)
            return k

        if __name__ == "__main__":
            rec("parent", 200, True)
            costledger.drain_deferred()
            assert SlowImport.started.wait(10)  # the writer's first write is importing
            ctx = mp.get_context("fork")
            t0 = time.monotonic()
            p = ctx.Process(target=rec, args=("proc", 300, True))
            p.start()
            p.join()
            assert p.exitcode == 0
            with ctx.Pool(2) as pool:
                assert pool.map(task, range(4)) == [0, 1, 2, 3]
                pool.close()
                pool.join()
            assert time.monotonic() - t0 < 8, time.monotonic() - t0
            costledger.get_tracker().ledger.close()
        """,
    )
    expected = {"parent": 200, "proc": 300} | {f"pool{k}": 50 for k in range(4)}
    assert _counts(db) == expected
    assert _spooled(db) == []


def test_a_fork_inside_a_sqlite_write_transaction(tmp_path: Path) -> None:
    """The parent's writer is inside a write transaction (an insert hook holds it open)
    when the host forks: SQLite's lock table, inherited, would show the child's own
    connection a write lock nobody in the child releases. The fork waits for the commit;
    the child writes at once."""
    db = tmp_path / "l.db"
    _run(
        tmp_path,
        f"""
        ledger = Ledger("sqlite:///{db}", exit_timeout=3)
        ledger.record(ev("warm-0"))
        assert ledger.flush()  # schema made: only the transaction is under test
        in_tx = threading.Event()
        def hold(conn, events):
            if any(e.id == "slow-0" for e in events):
                in_tx.set()
                time.sleep(0.5)
        ledger._add_insert_hook(hold)

        def child():
            for i in range(100):
                ledger.record(ev(f"child-{{i}}"))
            t0 = time.monotonic()
            ledger.close()
            sys.exit(0 if time.monotonic() - t0 < 2 else 3)

        if __name__ == "__main__":
            ledger.record(ev("slow-0"))
            threading.Thread(target=ledger.flush).start()
            assert in_tx.wait(10)
            p = mp.get_context("fork").Process(target=child)
            p.start()
            p.join()
            assert p.exitcode == 0, p.exitcode
            ledger.close()
        """,
    )
    assert _counts(db) == {"warm": 1, "slow": 1, "child": 100}
    assert _spooled(db) == []


def test_a_ledger_used_directly_in_multiprocessing_children_is_flushed_at_their_exit(
    tmp_path: Path,
) -> None:
    """``Ledger.record`` in fork children (a Process and Pool workers) that never close it,
    on the inherited ledger and on one a worker made itself: their exit (``os._exit``)
    flushes both. The writer would not write them on its own (flush interval 60 s)."""
    db, own = tmp_path / "l.db", tmp_path / "own.db"
    _run(
        tmp_path,
        f"""
        ledger = Ledger("sqlite:///{db}", flush_interval=60)
        mine = None

        def rec(tag, n):
            for i in range(n):
                ledger.record(ev(f"{{tag}}-{{i}}"))

        def task(k):
            global mine
            rec(f"pool{{k}}", 100)
            if mine is None:
                mine = Ledger("sqlite:///{own}", flush_interval=60)
            mine.record(ev(f"own{{k}}-0"))
            return k

        if __name__ == "__main__":
            rec("parent", 50)
            assert ledger.flush()
            ctx = mp.get_context("fork")
            p = ctx.Process(target=rec, args=("proc", 200))
            p.start()
            p.join()
            assert p.exitcode == 0
            with ctx.Pool(2) as pool:
                assert pool.map(task, range(4)) == [0, 1, 2, 3]
                pool.close()
                pool.join()
            ledger.close()
        """,
    )
    expected = {"parent": 50, "proc": 200} | {f"pool{k}": 100 for k in range(4)}
    assert _counts(db) == expected
    assert _counts(own) == {f"own{k}": 1 for k in range(4)}
    assert _spooled(db) == []
    assert _spooled(own) == []


def test_a_child_leaves_an_inherited_ledger_it_never_wrote_to_alone(tmp_path: Path) -> None:
    """Children forked while the parent's buffer holds events (a Process ending with
    ``os._exit`` by way of multiprocessing, and an ``os.fork`` child ending with
    ``sys.exit``, which runs atexit) do not write that buffer: it is the parent's, written
    once, by the parent."""
    db = tmp_path / "l.db"
    done = _run(
        tmp_path,
        f"""
        import sqlite3
        ledger = Ledger("sqlite:///{db}", flush_interval=60)
        other = Ledger("sqlite:///{tmp_path / "other.db"}")

        def count():
            with sqlite3.connect("{db}") as conn:
                return conn.execute("SELECT count(*) FROM costledger_events").fetchone()[0]

        def child():
            other.record(ev("o-1"))  # the child writes to another ledger, not this one

        if __name__ == "__main__":
            ledger.record(ev("first-0"))
            assert ledger.flush()
            for i in range(20):
                ledger.record(ev(f"buffered-{{i}}"))  # in the buffer at the forks
            p = mp.get_context("fork").Process(target=child)
            p.start()
            p.join()
            pid = os.fork()
            if pid == 0:
                child()
                sys.exit(0)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
            print(count())
            ledger.close()
            other.close()
        """,
    )
    assert done.stdout.split() == ["1"]  # the children wrote none of the parent's buffer
    assert _counts(db) == {"first": 1, "buffered": 20}
    assert _spooled(db) == []


def test_the_parents_close_replays_what_a_child_spooled(tmp_path: Path) -> None:
    """A child's events in the spool (here: recorded after it closed the ledger; in the
    field: a write that did not answer in time at its exit): the parent's close, though
    its writer looked at the spool before the child ran, looks again and stores them."""
    db = tmp_path / "l.db"
    _run(
        tmp_path,
        f"""
        ledger = Ledger("sqlite:///{db}")

        def child():
            ledger.record(ev("child-0"))
            ledger.close()
            for i in range(1, 30):
                ledger.record(ev(f"child-{{i}}"))  # after close: to the spool

        if __name__ == "__main__":
            ledger.record(ev("parent-0"))
            assert ledger.flush()  # the parent's writer has looked at the spool
            p = mp.get_context("fork").Process(target=child)
            p.start()
            p.join()
            assert p.exitcode == 0
            assert {{p.name for p in ledger.spool_dir.glob("*.jsonl")}}  # the child's
            ledger.close()
        """,
        spools=True,
    )
    assert _counts(db) == {"parent": 1, "child": 30}
    assert _spooled(db) == []


def test_the_first_write_imports_only_while_a_fork_would_wait(tmp_path: Path) -> None:
    """Every module the first write imports (Alembic and some 120 with it, when it creates
    the schema) is imported while the fork gate is held, so no fork can land in an import
    (checked by an import hook that looks at the gate: it changes nothing)."""
    db = tmp_path / "l.db"
    done = _run(
        tmp_path,
        f"""
        from costledger._ledger import _store

        class Watch:
            def __init__(self):
                self.seen, self.outside = 0, []
            def find_spec(self, name, path=None, target=None):
                self.seen += 1
                if not _store._fork_gate._busy:
                    self.outside.append(name)
                return None

        ledger = Ledger("sqlite:///{db}")
        ledger.record(ev("x-0"))
        watch = Watch()
        sys.meta_path.insert(0, watch)
        assert ledger.flush()
        sys.meta_path.remove(watch)
        print(watch.seen > 50, watch.outside)
        ledger.close()
        """,
    )
    assert done.stdout.strip() == "True []"
    assert _counts(db) == {"x": 1}


@pytest.mark.postgres
def test_postgresql_fork_during_the_first_write_and_children_writing_directly(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    """PostgreSQL, a database without the ledger: Pool workers are forked while the
    parent's writer imports Alembic to create the schema (made slow by the script's import
    hook); they record with the inherited ledger and exit without closing it. Every event
    is stored once, no child waits out its exit timeout, and the parent's pooled
    connections, which the children never closed, go on working."""
    done = _run(
        tmp_path,
        f"""
        import sqlalchemy as sa
        url = {fresh_pg_url!r}

        class SlowImport:
            started = threading.Event()
            def find_spec(self, name, path=None, target=None):
                if name == "alembic.command" and not self.started.is_set():
                    self.started.set()
                    time.sleep(0.5)
                return None

        sys.meta_path.insert(0, SlowImport())
        ledger = Ledger(url, flush_interval=60, spool_dir={str(tmp_path / "spool")!r})

        def task(k):
            for i in range(100):
                ledger.record(ev(f"pool{{k}}-{{i}}"))
            return k

        if __name__ == "__main__":
            for i in range(50):
                ledger.record(ev(f"parent-{{i}}"))
            threading.Thread(target=ledger.flush).start()
            assert SlowImport.started.wait(10)  # the first write is importing Alembic
            with mp.get_context("fork").Pool(2) as pool:
                assert pool.map(task, range(4)) == [0, 1, 2, 3]
                pool.close()
                pool.join()
            for i in range(50, 80):
                ledger.record(ev(f"parent-{{i}}"))
            assert ledger.flush()
            ledger.close()
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT id FROM costledger_events").all()
            engine.dispose()
            tags = [r[0].split("-")[0] for r in rows]
            print(sorted((t, tags.count(t)) for t in set(tags)), len(rows))
        """,
    )
    expected = sorted([("parent", 80)] + [(f"pool{k}", 100) for k in range(4)])
    assert done.stdout.strip() == f"{expected} 480"
    assert list((tmp_path / "spool").glob("*.jsonl")) == []
