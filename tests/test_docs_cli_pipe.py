"""docs/reports.md: a command whose reader goes away (``costledger report | head -1``) ends
with 141 and prints nothing on stderr, whatever the output format, buffered or not.

Under ``python -u`` / ``PYTHONUNBUFFERED=1`` stdout writes straight to the pipe, and a
write the pipe takes only part of used to be cut short without an error: the command ended
with 0 (and ``prices list`` printed its stderr note after the reader had left)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest

from costledger import Cost, Ledger, Usage, UsageEvent

# far more than a pipe holds (64 KiB): the reader leaves in the middle of a write
USERS = 1500

COMMANDS = {
    "report-json": ["report", "--by", "user", "-f", "json"],
    "report-table": ["report", "--by", "user"],
    "report-csv": ["report", "--by", "user", "-f", "csv"],
    "top": ["top", str(USERS)],
    "prices-list": ["prices", "list"],
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('pipe') / 'ledger.db'}"
    cost = Cost("priced", total=Decimal("0.000123"), currency="USD")
    events = [
        UsageEvent(
            model="gpt-4o-mini",
            usage=Usage(input_tokens=10, output_tokens=5),
            cost=cost,
            user=f"user-{i:05d}",
            id=f"e{i}",
        )
        for i in range(USERS)
    ]
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(events)
    return url


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_piped_into_head_ends_with_141_and_nothing_on_stderr(
    url: str, command: str, unbuffered: bool
) -> None:
    args = COMMANDS[command]
    if args[0] != "prices":
        args = [*args, "--db", url]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    cli = subprocess.Popen(
        [sys.executable, "-c", "from costledger.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert cli.stdout is not None
    assert cli.stderr is not None
    head = subprocess.Popen(["head", "-1"], stdin=cli.stdout, stdout=subprocess.PIPE)
    cli.stdout.close()  # head is the pipe's only reader
    first, _ = head.communicate(timeout=120)
    err = cli.stderr.read().decode()
    code = cli.wait(timeout=120)
    assert first.strip() != b""
    assert (code, err) == (141, "")
