"""A fork while a thread imports the pricing (or loads its data) leaves the child priced;
two spellings of one SQLite ledger are one ingestion (one lock, one checkpoint).

The fork tests run a script in a fresh interpreter (the pricing not yet imported): its
import is held open by a loader that waits (in the parent only) until the fork has come
or one second has passed, so that the fork lands in the import, every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from costledger._ingest import IngestProgress, ingest
from costledger._ingest._state import checkpoint_path

from .ingest_support import count_rows

COSTLEDGER = Path(sys.executable).with_name("costledger")

_FORK_SCRIPT = r'''
import importlib, importlib.abc, importlib.machinery, json, multiprocessing, os, sys, threading
from decimal import Decimal

HELD, WHO, URL = sys.argv[1], sys.argv[2], sys.argv[3]
PARENT = os.getpid()
entered, released = threading.Event(), threading.Event()


class Held(importlib.abc.Loader):
    """Runs the module's code once the fork has come (at most a second later)."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        entered.set()
        released.wait(1.0)
        self.inner.exec_module(module)


class Hold(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != HELD or os.getpid() != PARENT:
            return None  # the child imports as usual
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = Held(spec.loader)
        return spec


sys.meta_path.insert(0, Hold())

import costledger
from costledger import Ledger, Tracker, configure, track_cost

configure(Tracker(Ledger(URL), log="off"))


@track_cost(model="gpt-4o-mini")
def call(k):
    return {"id": f"r{k}", "usage": {"prompt_tokens": 1000 + k, "completion_tokens": 100 + k}}


def work():
    if WHO == "lock":  # priced on this thread: not one that could have the holder's id
        costledger.get_tracker().pricer.rate_card("gpt-4o-mini")
    with costledger.attribute(user="child"):
        for k in range(1, 6):
            call(k)
    costledger.drain_deferred()
    # Held: the parent's import, whole at the fork; else the child's own
    module = sys.modules.get(HELD)
    loader = type(module.__loader__).__name__ if module is not None else "-"
    with open(URL.removeprefix("sqlite:///") + ".loader", "w") as f:
        f.write(loader)


def hold_the_pricers_lock():
    with costledger.get_tracker().pricer._lock:
        entered.set()
        released.wait(1.0)


if WHO == "worker":
    call(0)  # its finish, on the background worker, imports the pricing
elif WHO == "thread":  # a thread of the host's imports it, out of costledger's sight
    threading.Thread(target=importlib.import_module, args=(HELD,), daemon=True).start()
else:  # a thread in the pricer's lock (loading LiteLLM's map, resolving a new model)
    costledger.get_tracker().pricer
    threading.Thread(target=hold_the_pricers_lock, daemon=True).start()
assert entered.wait(60)
child = multiprocessing.get_context("fork").Process(target=work)
child.start()  # the fork: while the import is under way, unless the gate holds it back
released.set()
child.join(30)
hung = child.is_alive()
if hung:
    child.kill()
    child.join()
costledger.drain_deferred()
led = costledger.get_tracker().ledger
led.flush()
rows = [r for r in led.events() if r.user == "child"]
print(json.dumps({
    "hung": hung,
    "exitcode": child.exitcode,
    "rows": len(rows),
    "statuses": sorted({r.pricing_status for r in rows}),
    "errors": sorted({str(dict(r.metadata).get("costledger.tracking_error")) for r in rows}),
    "total": str(sum((r.total_cost for r in rows if r.total_cost is not None), Decimal(0))),
    "child_imported": open(URL.removeprefix("sqlite:///") + ".loader").read() if not hung else None,
}))
'''


def _fork_during_import(tmp_path: Path, held: str, who: str) -> dict[str, object]:
    script = tmp_path / "fork_during_import.py"
    script.write_text(_FORK_SCRIPT)
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    done = subprocess.run(
        [sys.executable, str(script), held, who, url],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


# five gpt-4o-mini calls of 1001..1005 input and 101..105 output tokens at $0.15 / $0.60
# per million: 5015 * 0.15e-6 + 515 * 0.6e-6
_CHILD_TOTAL = Decimal("0.00106125")


@pytest.mark.parametrize(
    "held",
    [
        "costledger._pricing._pricer",  # the pricing modules
        "genai_prices.data",  # the price data, loaded under the pricer's lock
    ],
)
def test_a_fork_while_the_worker_imports_the_pricing_leaves_the_child_priced(
    tmp_path: Path, held: str
) -> None:
    """The host's first call is priced on the background worker, which imports the pricing
    and genai-prices and loads its data: a ``multiprocessing`` fork meanwhile (a ``Pool``
    made after the first calls) waits for it, and every call of the child is priced."""
    result = _fork_during_import(tmp_path, held, "worker")

    assert result == {
        "hung": False,
        "exitcode": 0,
        "rows": 5,
        "statuses": ["priced"],
        "errors": ["None"],
        "total": str(_CHILD_TOTAL),
        "child_imported": "Held",  # the fork waited: the child has the parent's, whole
    }


@pytest.mark.parametrize("held", ["costledger._pricing._pricer", "genai_prices.data"])
def test_a_child_forked_amid_another_threads_import_imports_the_pricing_again(
    tmp_path: Path, held: str
) -> None:
    """A fork no gate held back (a host's thread importing the pricing itself) leaves the
    child that import half done, its lock held by a thread the child has not: the child
    forgets it and imports it anew, rather than hang or record every call unpriced."""
    result = _fork_during_import(tmp_path, held, "thread")

    assert result == {
        "hung": False,
        "exitcode": 0,
        "rows": 5,
        "statuses": ["priced"],
        "errors": ["None"],
        "total": str(_CHILD_TOTAL),
        "child_imported": "SourceFileLoader",  # imported anew
    }


# -- ingestion: one ledger however its URL is spelled ------------------------------------------


def _chat(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"chatcmpl-s16-{i}",
            "object": "chat.completion",
            "created": 1748779200,
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        }
    )


def _log(path: Path, first: int, last: int) -> bytes:
    """Lines ``first``..``last``: a chat response, every tenth a line that is not JSON."""
    return b"".join(
        (b"{not json %d" % i if i % 10 == 0 else _chat(i)) + b"\n" for i in range(first, last + 1)
    )


def _reject_lines(log: Path) -> list[int]:
    text = Path(f"{log}.rejects.jsonl").read_text()
    return [int(json.loads(line)["line"]) for line in text.splitlines()]


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COSTLEDGER), "ingest", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.parametrize("spelling", ["relative", "symlink"])
def test_two_spellings_of_one_sqlite_ledger_take_one_lock(tmp_path: Path, spelling: str) -> None:
    """``sqlite:///l.db`` run from the ledger's directory, or the path through a symlink,
    is the ledger ``sqlite:////abs/l.db`` names: a run under the other spelling while one
    runs is refused, so the rejects are written once."""
    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "app.log"
    log.write_bytes(_log(log, 1, 2000))
    db = f"sqlite:///{data / 'l.db'}"
    if spelling == "relative":
        cwd, other = data, "sqlite:///l.db"
    else:
        (tmp_path / "link").symlink_to(data)
        cwd, other = tmp_path, f"sqlite:///{tmp_path / 'link' / 'l.db'}"
    ck = tmp_path / "ck"
    seen: list[subprocess.CompletedProcess[str]] = []

    def second_run(p: IngestProgress) -> None:
        if p.committed and not seen:  # the first batch and its rejects are written
            seen.append(
                _cli(cwd, str(log), "--db", other, "--checkpoint-dir", str(ck), "-f", "json")
            )

    result = ingest(log, ledger=db, checkpoint_dir=ck, batch_lines=500, progress=second_run)

    (run,) = seen
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1] == (
        f"error: {log}: already being ingested (pid {os.getpid()}); "
        "run it again once that run has ended"
    )
    assert (result.accepted, result.rejected) == (1800, 200)
    assert _reject_lines(log) == list(range(10, 2001, 10))
    assert count_rows(db) == 1800


def test_a_checkpoint_saved_under_the_url_as_spelled_is_resumed_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint an earlier version saved under ``sqlite:///l.db`` (the key was the URL
    as spelled) is resumed from after the upgrade: the lines read since are not read
    again, their rejects not written twice."""
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "app.log"
    log.write_bytes(_log(log, 1, 1000))
    ck = tmp_path / "ck"
    first = ingest(log, ledger="sqlite:///l.db", checkpoint_dir=ck)
    assert (first.accepted, first.rejected) == (900, 100)
    # where an earlier version kept it: keyed on the URL as spelled
    (saved,) = ck.glob("*.json")
    saved.rename(checkpoint_path(ck, str(log), "sqlite:///l.db"))
    with log.open("ab") as f:
        f.write(_log(log, 1001, 1500))

    second = ingest(log, ledger="sqlite:///l.db", checkpoint_dir=ck)

    only = second.inputs[0]
    assert (only.resumed_at_line, only.lines, only.accepted, only.rejected) == (1001, 500, 450, 50)
    assert _reject_lines(log) == list(range(10, 1501, 10))
    assert count_rows("sqlite:///l.db") == 1350


def test_a_child_forked_while_a_thread_held_the_pricers_lock_prices(tmp_path: Path) -> None:
    """A fork while another thread is in the pricer's lock (the background worker loading
    LiteLLM's map for a first call's check, resolving a model not seen before) leaves
    the child's pricer its own lock: its first look-up does not wait forever."""
    result = _fork_during_import(tmp_path, "-", "lock")

    assert result == {
        "hung": False,
        "exitcode": 0,
        "rows": 5,
        "statuses": ["priced"],
        "errors": ["None"],
        "total": str(_CHILD_TOTAL),
        "child_imported": "-",
    }
