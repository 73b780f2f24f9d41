"""A SQL guard store used in a forked child (gunicorn --preload, a multiprocessing fork):
the child must not talk over the parent's pooled connections. Two processes on one
PostgreSQL connection corrupted its protocol for both ("got no result from the query",
"prepared statement already exists"), so budgets failed closed in both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
from costledger._guards._sql import SqlStore

store = SqlStore(sys.argv[1])
keep = int(time.time() * 1000) + 3_600_000
counter = "fork-test-%d" % os.getpid()
store.seed(counter, buckets={}, marks=(), floor=0, keep_until=keep)
def spend():
    store.settle(
        counter, res_id=None, reserved=0, bucket=0, amount=1, floor=0, keep_until=keep, marks=()
    )


spend()  # a pooled connection now
pid = os.fork()
errors = []
for _ in range(150):
    try:
        spend()
    except Exception as exc:
        errors.append(repr(exc))
if pid == 0:
    print("child errors", len(errors), errors[:1], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
state = store.read(counter, floor=0, now_ms=int(time.time() * 1000))
print("parent errors", len(errors), errors[:1])
print("spent", state.spent)
"""


def _run(url: str, tmp_path: Path) -> list[str]:
    script = tmp_path / "fork_store.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return sorted(done.stdout.splitlines())


@pytest.mark.postgres
def test_a_forked_child_and_its_parent_share_a_postgresql_store(
    pg_url: str, tmp_path: Path
) -> None:
    assert _run(pg_url, tmp_path) == ["child errors 0 []", "parent errors 0 []", "spent 301"]


def test_a_forked_child_and_its_parent_share_a_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'guards.db'}"
    assert _run(url, tmp_path) == ["child errors 0 []", "parent errors 0 []", "spent 301"]
