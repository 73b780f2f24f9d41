"""A ``multiprocessing`` child's tracked streams still open when it ends are recorded.

A child process ends with ``os._exit``: no atexit hook runs there, so the decorator's own
exit hook, which finishes the streams still open (``cancelled`` with the usage they
showed), did not run, and such a stream was lost with the child. The tracker's child exit
(``multiprocessing``'s finalizers) now runs it before it finishes the queued calls. Real
child processes (fork and spawn), a real SQLite ledger.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

M = Decimal(1_000_000)
# claude-3-5-haiku: 0.80 USD per million input tokens, 4.00 output.
HALF_READ = (1000 * Decimal("0.80") + 1 * 4) / M
assert Decimal("0.000804") == HALF_READ

PROGRAM = """
import multiprocessing as mp
import sys
from costledger import Ledger, Tracker, track_cost

tracker = Tracker(Ledger(sys.argv[1]), log="off")
HELD = []

def events():
    yield {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1000,
           "output_tokens": 1}}}
    yield {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}
    yield {"type": "message_delta", "usage": {"output_tokens": 200}}

def child(feature):
    @track_cost(model="claude-3-5-haiku", provider="anthropic", tracker=tracker, feature=feature)
    def half():
        yield from events()

    stream = half()
    next(stream)
    next(stream)
    HELD.append(stream)  # still open when the child ends

if __name__ == "__main__":
    for method in ("fork", "spawn"):
        process = mp.get_context(method).Process(target=child, args=(method,))
        process.start()
        process.join(60)
        assert process.exitcode == 0, process.exitcode
    print("end")
"""


def test_a_child_process_records_its_streams_left_open(tmp_path: Path) -> None:
    db = tmp_path / "mp.db"
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(PROGRAM))
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(script), f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "end\n", "")
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT feature, status, error_type, input_tokens, output_tokens, total_cost "
            "FROM costledger_events ORDER BY feature"
        ).fetchall()
    assert [(*row[:5], Decimal(row[5])) for row in rows] == [
        ("fork", "cancelled", "GeneratorExit", 1000, 1, HALF_READ),
        ("spawn", "cancelled", "GeneratorExit", 1000, 1, HALF_READ),
    ]
