"""``multiprocessing`` children of a process that had not imported costledger store their
calls: a ``forkserver`` Pool (the Linux default from Python 3.14) whose worker module calls
``configure()`` at import, ``spawn`` workers, and ``fork``/``forkserver`` Processes that
import costledger only in their target. Such a child saw no fork hook of costledger's, and
it ends with ``os._exit`` (skipping atexit): the import itself sets up its exit flush.

Each case runs a real script in a subprocess (the worker module next to it, importable by
the children), real SQLite files; the rows, their tags and their exact total are read back.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="needs fork and forkserver",
)

_IN = Decimal("0.15") / 10**6  # gpt-4o-mini, USD per token
_OUT = Decimal("0.6") / 10**6

# the worker module: ``configure()`` at import, as docs/tracker.md advises
_WORKER = """
import os
from costledger import Ledger, Tracker, configure, track_cost

configure(Tracker(Ledger("sqlite:///" + os.environ["MPW_DB"]), log="off"))


@track_cost(model="gpt-4o-mini", provider="openai", attribution=lambda i, tag: {"feature": tag})
def ask(i, tag):
    return {"model": "gpt-4o-mini-2024-07-18",
            "usage": {"prompt_tokens": 1000 + i % 7, "completion_tokens": 33 + i % 5}}


def work(args):
    tag, start, n = args
    for i in range(start, start + n):
        ask(i, tag)
    return n
"""


def _expected(indices: range) -> Decimal:
    costs = (Decimal(1000 + i % 7) * _IN + Decimal(33 + i % 5) * _OUT for i in indices)
    return sum(costs, Decimal(0))


def _run(tmp_path: Path, body: str, db: Path) -> None:
    (tmp_path / "mpw.py").write_text(_WORKER)
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "MPW_DB": str(db)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok"], done.stdout + done.stderr[-3000:]
    assert "costledger" not in done.stderr, done.stderr[-3000:]


def _rows(db: Path) -> dict[str, tuple[int, Decimal]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT feature, total_cost FROM costledger_events").fetchall()
    out: dict[str, tuple[int, Decimal]] = {}
    for feature, cost in rows:
        n, total = out.get(feature, (0, Decimal(0)))
        out[feature] = (n + 1, total + Decimal(cost))
    return out


def _spooled(db: Path) -> list[str]:
    spool = Path(f"{db}.spool")
    return [p.name for p in spool.glob("*.jsonl")] if spool.exists() else []


def test_forkserver_and_spawn_pools_with_configure_at_import_store_every_call(
    tmp_path: Path,
) -> None:
    """The main module imports the worker module (so every child imports costledger while
    it unpickles its task, before its bootstrap clears the finalizers): a forkserver Pool
    and a spawn Pool, ended with ``close(); join()``, store all their calls exactly once.
    The parent records nothing itself."""
    db = tmp_path / "a.db"
    _run(
        tmp_path,
        """
        import multiprocessing as mp
        import mpw

        if __name__ == "__main__":
            for method, tasks in (
                ("forkserver", [("fs", 0, 40), ("fs", 40, 60)]),
                ("spawn", [("sp", 0, 30), ("sp", 30, 25)]),
            ):
                with mp.get_context(method).Pool(2) as pool:
                    assert sum(pool.map(mpw.work, tasks)) == sum(t[2] for t in tasks)
                    pool.close()
                    pool.join()
            print("ok")
        """,
        db,
    )
    assert _rows(db) == {"fs": (100, _expected(range(100))), "sp": (55, _expected(range(55)))}
    assert _rows(db)["fs"][1] == Decimal("0.01714425")
    assert _spooled(db) == []


def test_processes_importing_costledger_in_their_target_store_every_call(tmp_path: Path) -> None:
    """The parent never imports costledger: fork and forkserver Processes, and a fork Pool,
    whose target imports the worker module lazily (after their bootstrap) store their calls."""
    db = tmp_path / "b.db"
    _run(
        tmp_path,
        """
        import multiprocessing as mp, sys

        def target(tag, n):
            import mpw
            mpw.work((tag, 0, n))

        def pooled(args):
            import mpw
            return mpw.work(args)

        if __name__ == "__main__":
            for method, n in (("fork", 50), ("forkserver", 30)):
                p = mp.get_context(method).Process(target=target, args=(method, n))
                p.start()
                p.join(60)
                assert p.exitcode == 0, p.exitcode
            with mp.get_context("fork").Pool(2) as pool:
                assert pool.map(pooled, [("pool", 0, 20), ("pool", 20, 20)]) == [20, 20]
                pool.close()
                pool.join()
            assert "costledger" not in sys.modules
            print("ok")
        """,
        db,
    )
    assert _rows(db) == {
        "fork": (50, _expected(range(50))),
        "forkserver": (30, _expected(range(30))),
        "pool": (40, _expected(range(40))),
    }
    assert _rows(db)["fork"][1] == Decimal("0.00857205")
    assert _spooled(db) == []


def test_a_childs_own_ledger_like_object_gets_its_queued_calls_and_its_close(
    tmp_path: Path,
) -> None:
    """The parent never imports costledger; each child (fork, forkserver, spawn) configures
    a tracker on a ledger of the application's own (``record`` and ``close``, no
    ``Ledger``) in its target and makes deferred calls: its exit finishes the queued calls
    and closes that ledger, as a fork child of a process that had imported costledger
    does."""
    out = tmp_path / "lines.txt"
    (tmp_path / "main.py").write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, sys

            class LinesLedger:
                "Keeps its lines in memory, writes them at close."
                def __init__(self, path):
                    self.path, self.lines = path, []
                def record(self, event):
                    self.lines.append(f"{{event.source}} {{event.cost.total}}\\n")
                def close(self):
                    with open(self.path, "a") as f:
                        f.write("".join(self.lines))
                    self.lines = []

            def target(n):
                from costledger import Tracker, configure, track_cost
                configure(Tracker(LinesLedger({str(out)!r}), log="off"))

                @track_cost(model="gpt-4o-mini", provider="openai")
                def ask(i):
                    return {{"model": "gpt-4o-mini-2024-07-18",
                             "usage": {{"prompt_tokens": 1000 + i % 7,
                                        "completion_tokens": 33 + i % 5}}}}

                for i in range(n):
                    ask(i)

            if __name__ == "__main__":
                for method, n in (("fork", 30), ("forkserver", 20), ("spawn", 10)):
                    p = mp.get_context(method).Process(target=target, args=(n,))
                    p.start()
                    p.join(60)
                    assert p.exitcode == 0, p.exitcode
                assert "costledger" not in sys.modules
                print("ok")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "main.py"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok"], done.stdout + done.stderr[-3000:]
    lines = out.read_text().splitlines() if out.exists() else []
    assert len(lines) == 60
    assert {line.split()[0] for line in lines} == {"decorator"}
    total = sum((Decimal(line.split()[1]) for line in lines), Decimal(0))
    assert total == _expected(range(30)) + _expected(range(20)) + _expected(range(10))
    assert total == Decimal("0.0102849")
