"""The ledger writes of a big ingestion, in a process of their own.

Parsing and converting lines is Python work, and so is most of a batch insert (binding
41 values a row, the rollup sums): in one process they take turns on the GIL, and a
two-core machine runs one of them at a time. A second process gets the writes, so the
two run side by side. It is an ordinary child (``python -m costledger._ingest``, no
``multiprocessing``: that would import the caller's ``__main__`` again), sent the
ledger's URL and then batches of rows over its stdin (never the command line: the URL
may hold a password), answering on its stdout, one batch at a time.

A frame is an 8-byte length and a ``marshal`` payload (rows are tuples of str, int,
float and None: marshal reads them several times faster than pickle):

* request: the batch's rows (SQLite form, unique ids);
* answer: ``("ok", new, refused)``, ``new`` ``None`` when every row was new (else the
  new ids), ``refused`` ``[(index, "Type: message")]``; or ``("error", type, message)``
  when the write failed (the batch's transaction rolled back).

The child commits each batch in one transaction through the same ``_Writer`` as the
in-process path (idempotent insert, rollups in the same transaction). Closing its stdin
ends it after the batch in hand; it ignores SIGINT, so an interrupted run stops at a
batch boundary that the parent decides.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import struct
import subprocess
import sys
from typing import IO, Any

from ._convert import Row

__all__ = ["SinkError", "SinkProcess"]

_HEADER = struct.Struct("<Q")


class SinkError(Exception):
    """The writer process failed a batch (``kind`` is the original exception's type name)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message


def _send(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


class SinkProcess:
    """The parent's side: starts the child, hands it batches, reads its answers.

    ``write`` blocks until the batch is committed (call it from a thread: it holds the
    GIL only to marshal the rows)."""

    def __init__(self, url: str) -> None:
        import costledger

        env = dict(os.environ)
        # the child imports this very costledger, whatever put it on the parent's path
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(costledger.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        self.process = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-m", "costledger._ingest"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdin is not None
        # the URL (it may hold a password) goes as the first frame, never on a command line
        try:
            _send(self.process.stdin, url.encode())
        except OSError as exc:
            raise self._gone() from exc

    def write(self, rows: list[Row]) -> tuple[set[str], list[tuple[int, str]]]:
        """Commit ``rows`` in the child: the ids that were new, and the refused rows."""
        process = self.process
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            _send(process.stdin, marshal.dumps(rows))
        except (BrokenPipeError, OSError) as exc:
            raise self._gone() from exc
        answer = _receive(process.stdout)
        if answer is None:
            raise self._gone()
        reply = marshal.loads(answer)
        if reply[0] != "ok":
            raise SinkError(reply[1], reply[2])
        new = reply[1]
        return ({row[0] for row in rows} if new is None else set(new)), list(reply[2])

    def _gone(self) -> SinkError:
        code = self.process.poll()
        if code is None:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        return SinkError(
            "WriterProcessExited",
            f"the ledger writer process ended (code {code}); "
            "COSTLEDGER_INGEST_WRITER=thread writes from this process instead",
        )

    def close(self) -> None:
        """End the child once it has finished the batch in hand (if any)."""
        process = self.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _describe(exc: BaseException) -> tuple[str, str]:
    from ._run import _one_line

    return type(exc).__name__, _one_line(exc)


def serve() -> int:
    """The child's side (``python -m costledger._ingest``): read the ledger URL, then write
    batches until its stdin closes."""
    from .._ledger import Ledger
    from ._run import _Writer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    requests = sys.stdin.buffer
    # answers go to the original stdout; anything else printing there goes to stderr
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    url = _receive(requests)
    if url is None:
        return 0
    ledger = Ledger(url.decode(), sync=True)
    try:
        store = ledger._core.store
        store.ensure_schema()
        writer = _Writer(store)
        while True:
            payload = _receive(requests)
            if payload is None:
                return 0
            rows: list[Row] = marshal.loads(payload)
            reply: tuple[Any, ...]
            try:
                new, refused = writer.write(rows)
            except Exception as exc:
                kind, message = _describe(exc)
                reply = ("error", kind, message)
            else:
                reply = (
                    "ok",
                    None if len(new) == len(rows) else sorted(new),
                    [(index, "{}: {}".format(*_describe(error))) for index, error in refused],
                )
            _send(answers, marshal.dumps(reply))
    finally:
        ledger.close()
