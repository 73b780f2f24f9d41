"""Tracked streams still open when the program ends are recorded, not lost.

A generator half read and held by a global is closed by the interpreter's shutdown, after
costledger's exit drain and the ledgers' close: nothing could store it then. The
decorator's exit hook, which runs before that drain, finishes each one still open:
``cancelled`` with the usage it showed, ``ok`` if its last event was seen; a returned
stream never iterated as when it is collected. A forked child that exits normally records
none of its parent's. Real programs, a real SQLite ledger.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

M = Decimal(1_000_000)
# claude-3-5-haiku: 0.80 USD per million input tokens, 4.00 output.
HALF_READ = (1000 * Decimal("0.80") + 1 * 4) / M
TO_THE_STOP = (1000 * Decimal("0.80") + 200 * 4) / M
assert (Decimal("0.000804"), Decimal("0.0016")) == (HALF_READ, TO_THE_STOP)

PROGRAM = """
import asyncio, os, sys
from costledger import Ledger, Tracker, track_cost

tracker = Tracker(Ledger(sys.argv[1]), log="off")

def events(stop):
    yield {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1000,
           "output_tokens": 1}}}
    yield {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}
    yield {"type": "message_delta", "usage": {"output_tokens": 200}}
    if stop:
        yield {"type": "message_stop"}

@track_cost(model="claude-3-5-haiku", provider="anthropic", tracker=tracker, feature="half")
def half(stop=False):
    yield from events(stop)

@track_cost(model="claude-3-5-haiku", provider="anthropic", tracker=tracker, feature="stop")
def to_the_stop():
    yield from events(True)

@track_cost(model="claude-3-5-haiku", provider="anthropic", tracker=tracker, feature="agen")
async def agen():
    for event in events(False):
        yield event

@track_cost(model="claude-3-5-haiku", provider="anthropic", tracker=tracker, feature="unread")
def unread():
    return events(False)  # a plain function returning a generator, never iterated

H = half(); next(H); next(H)
S = to_the_stop()
for _ in range(4):
    next(S)
A = agen()
asyncio.new_event_loop().run_until_complete(A.__anext__())
U = unread()
if os.fork() == 0:
    sys.exit(0)  # the child's exit runs atexit too: it has copies of the parent's streams
os.wait()
print("end")
"""


def test_streams_left_open_at_exit_are_recorded(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(PROGRAM))
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(script), f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "end\n", "")
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT feature, status, error_type, streamed, input_tokens, output_tokens, "
            "total_cost, metadata FROM costledger_events ORDER BY feature"
        ).fetchall()
    assert [
        (*row[:6], None if row[6] is None else Decimal(row[6]), json.loads(row[7])) for row in rows
    ] == [
        ("agen", "cancelled", "GeneratorExit", 1, 1000, 1, HALF_READ, {}),
        ("half", "cancelled", "GeneratorExit", 1, 1000, 1, HALF_READ, {}),
        ("stop", "ok", None, 1, 1000, 200, TO_THE_STOP, {}),
        # no usage: no amount (the ledger's NULL), as when such a stream is collected
        (
            "unread",
            "cancelled",
            None,
            1,
            0,
            0,
            None,
            {"costledger.usage_error": "no usage: never iterated"},
        ),
    ]
