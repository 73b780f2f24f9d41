"""``Ledger``: record usage events into SQL without ever blocking or breaking the host.

``record`` appends to a bounded in-memory buffer; a background writer thread inserts
batches (every ``batch_size`` events or ``flush_interval`` seconds). A batch the
database refuses goes to the spool (``_spool.py``) and is replayed, idempotently,
once the database answers again or at the next start. This module imports no
SQLAlchemy at import time: ``import costledger`` stays light.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._cost import Cost
from .._events import UsageEvent
from .._mp import when_mp_child
from ._rows import (
    Row,
    StoredEvent,
    encode_spool_line,
    event_to_row,
    row_fields,
    row_to_event,
    spool_line,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from ._query import SummaryRow
    from ._spool import Segment, Spool
    from ._store import CostHook, InsertHook, Store

__all__ = ["InMemoryLedger", "Ledger", "LedgerStats"]

_log = logging.getLogger("costledger.ledger")

DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_INTERVAL = 0.2
DEFAULT_MAX_BUFFER = 100_000
DEFAULT_EXIT_TIMEOUT = 10.0
_MAX_TRANSACTION = 5_000  # events per transaction when the buffer has a backlog
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_RESCAN_EVERY = 60.0  # look for segments other (crashed) processes left behind


class _RateLimitedLog:
    """At most one message per key per ``every`` seconds; says how many were held back."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            msg += f" ({held} similar messages suppressed)"
        _log.log(level, msg, *args)

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork


_report = _RateLimitedLog()

_Item = tuple[Row, "Segment | None"]
"""A buffered event in the ledger's SQLite form (``sqlite_params``), and its durable
segment. Rows, not ``UsageEvent`` objects: a row of strings and numbers is one object the
cyclic GC stops tracking once it has seen it, where an event is four objects it keeps
scanning for as long as they wait to be written (in the host's thread, the host pays)."""


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counters since the ledger was created (``Ledger.stats()``)."""

    recorded: int
    inserted: int
    duplicates: int
    spooled: int
    replayed: int
    rejected: int
    dropped: int
    torn_lines: int
    buffered: int
    healthy: bool
    last_error: str | None


class _Core:
    """Everything a ledger owns, kept apart from ``Ledger`` so that the writer thread and
    the exit hook do not keep the ``Ledger`` object alive (``weakref.finalize`` closes it)."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        *,
        sync: bool,
        durable: bool,
        batch_size: int,
        flush_interval: float,
        max_buffer: int,
        exit_timeout: float,
        temp_spool: bool,
    ) -> None:
        from ._store import sqlite_params

        self.store = store
        self.to_row = sqlite_params
        self.spool = spool
        self.sync = sync
        self.durable = durable and not sync
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.exit_timeout = exit_timeout
        self.temp_spool = temp_spool
        # the process whose buffer, writer, locks and connections these are (a forked
        # child makes its own: ``_after_fork``) ...
        self.pid = os.getpid()
        # ... and the one whose exit closes this ledger: a forked child only once it
        # writes to it (one it never wrote to holds nothing of the child's)
        self.owner = self.pid
        self.buffer: deque[_Item] = deque()
        self.wake = threading.Event()
        self.cond = threading.Condition()
        self.write_lock = threading.RLock()  # one batch at a time (sync mode: callers' threads)
        self.thread: threading.Thread | None = None
        self.thread_lock = threading.Lock()
        self.flush_requested = 0
        self.flush_completed = 0
        self.flush_ok = True
        self.closing = False
        self.closed = False
        self.in_flight = False
        # the batch being written (writer thread, or a sync caller): ``close`` spools it
        # when the writer is stuck in the database; whoever takes it settles it
        self.flight_lock = threading.Lock()
        self.flight: list[_Item] | None = None
        # health of the database, as seen by the last write
        self.healthy = True
        self.backoff = 0.0
        self.next_retry = 0.0
        self.last_error: str | None = None
        self.pending_hint = True  # segments from an earlier run may be waiting: look at start
        self.next_rescan = 0.0
        self.handed_over_seen = 0  # the spool's ``handed_over`` at the last replay
        # counters (written by the writer, or under write_lock)
        self.n_recorded = 0
        self.n_inserted = 0
        self.n_duplicates = 0
        self.n_spooled = 0
        self.n_replayed = 0
        self.n_rejected = 0
        self.n_dropped = 0
        self.n_torn = 0
        _cores.add(self)
        if _mp_child_pid == self.pid:  # made in a multiprocessing child
            self._register_child_exit()

    # -- the caller's side -----------------------------------------------------------------
    def record(self, event: UsageEvent) -> None:
        if not isinstance(event, UsageEvent):
            raise TypeError(f"Ledger.record expects a UsageEvent, got {type(event).__name__}")
        if self.owner != os.getpid():
            self.adopt()
        self.n_recorded += 1
        if self.closed:
            self._spill(event, "the ledger is closed")
        elif self.sync:
            row = self._row(event)
            if row is not None:
                with self.write_lock:
                    self._maybe_replay(force=False)
                    self._write([(row, None)], force_try=False)
        elif self.durable:
            self._record_durable(event)
        elif len(self.buffer) >= self.max_buffer:
            self._spill(event, "the buffer is full")
        else:
            # converting here (CPU only, a few microseconds) lets the writer spend its
            # time in the database driver, which releases the GIL: the two overlap
            row = self._row(event)
            if row is None:
                return
            self.buffer.append((row, None))
            # Event.set takes a lock even when already set: only the first call may wake
            if len(self.buffer) >= self.batch_size and not self.wake.is_set():
                self.wake.set()
            if self.thread is None:
                self._start()

    def _row(self, event: UsageEvent) -> Row | None:
        """The event's row; ``None`` when it cannot be stored (it is rejected, kept)."""
        try:
            return self.to_row(event)
        except Exception as exc:
            self._reject_events([event], exc)
            return None

    def _record_durable(self, event: UsageEvent) -> None:
        row = self._row(event)
        if row is None:
            return
        line = spool_line(row)
        full = len(self.buffer) >= self.max_buffer
        try:
            with self.spool.lock:
                seg = self.spool.append(line, queued=not full)
                if not full:
                    self.buffer.append((row, seg))
        except OSError as exc:
            _report(logging.ERROR, "spool", "costledger: cannot append to the spool: %r", exc)
            if full:
                self.n_dropped += 1
                return
            self.buffer.append((row, None))
        if full:
            self.n_spooled += 1
            self.pending_hint = True
            _report(logging.WARNING, "full", "costledger: ledger buffer full; spooling events")
        elif len(self.buffer) >= self.batch_size and not self.wake.is_set():
            self.wake.set()
        if self.thread is None:
            self._start()

    def _spill(self, event: UsageEvent, why: str) -> None:
        """Put one event straight into the spool (never blocks on the database)."""
        row = self._row(event)
        if row is None:
            return
        try:
            line = spool_line(row)
            if self.closed:  # no writer will rotate a segment: the tail, replayable at once
                written, error = self.spool.append_lines([line])
                if not written:
                    raise error or OSError("the spool took nothing")
            else:
                with self.spool.lock:
                    self.spool.append(line, queued=False)
        except Exception as exc:
            self.n_dropped += 1
            _report(logging.ERROR, "drop", "costledger: event %s lost: %r", event.id, exc)
            return
        self.n_spooled += 1
        self.pending_hint = True
        _report(logging.WARNING, why, "costledger: %s; spooling events", why)

    def _start(self) -> None:
        with self.thread_lock:
            if self.thread is None and not self.closing:
                t = threading.Thread(target=self._run, name="costledger-writer", daemon=True)
                self.thread = t
                t.start()

    def _after_fork(self) -> None:
        """In a forked child (run at the fork by ``_after_fork_in_child``): the parent's
        buffer and batch in flight are the parent's to write, its writer thread is not
        here, and every lock one of its threads held at the fork would stay held forever:
        all made anew, as are the spool's and the store's (locks, connection pool)."""
        self.pid = os.getpid()
        self.buffer = deque()
        self.thread = None
        self.thread_lock = threading.Lock()
        self.write_lock = threading.RLock()
        self.cond = threading.Condition()
        self.wake = threading.Event()
        self.flight_lock = threading.Lock()
        self.flight = None
        self.in_flight = False
        self.pending_hint = True
        self.spool.after_fork()
        self.store.after_fork()

    def _check_fork(self) -> None:
        """A fork the at-fork hook did not see (a C-level ``fork()``): reset here."""
        if self.pid != os.getpid():
            self._after_fork()

    def adopt(self) -> None:
        """A forked child's first write to this ledger: its own from now on, closed (and
        flushed) at the child's exit."""
        self._check_fork()
        pid = os.getpid()
        if self.owner == pid:
            return
        self.owner = pid
        if _mp_child_pid == pid:
            self._register_child_exit()

    def _register_child_exit(self) -> None:
        """A ``multiprocessing`` child ends with ``os._exit``, skipping atexit and the
        ledger's ``weakref.finalize``: its exit function runs this instead (closing twice
        is harmless). A weak reference: the ledger's own finalizer may close it first."""
        import multiprocessing.util

        multiprocessing.util.Finalize(
            None, _close_core_ref, args=(weakref.ref(self),), exitpriority=0
        )

    # -- flushing ----------------------------------------------------------------------------
    def flush(self, timeout: float | None) -> bool:
        self._check_fork()
        if self.sync or self.thread is None or not self.thread.is_alive():
            with self.write_lock:
                if self.buffer:  # a writer that never started (or died): write here
                    self._drain(force=True)
                return self._maybe_replay(force=True) and not self.buffer
        with self.cond:
            self.flush_requested += 1
            ticket = self.flush_requested
        self.wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.flush_completed < ticket:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return self.flush_ok

    def pending_writes(self) -> bool:
        return bool(self.buffer) or self.in_flight

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            timeout = self.flush_interval
            if not self.healthy:
                timeout = max(0.01, min(timeout, self.next_retry - time.monotonic()))
            self.wake.wait(timeout)
            self.wake.clear()
            with self.cond:
                ticket = self.flush_requested
                closing = self.closing
            force = ticket > self.flush_completed or closing
            try:
                with self.write_lock:
                    ok = self._cycle(force=force)
            except Exception as exc:  # never let the writer die
                ok = False
                _report(logging.ERROR, "writer", "costledger: ledger writer error: %r", exc)
            if ticket > self.flush_completed:
                with self.cond:
                    self.flush_completed = ticket
                    self.flush_ok = ok
                    self.cond.notify_all()
            if closing and not self.buffer:
                return

    def _cycle(self, *, force: bool) -> bool:
        ok = self._drain(force=force)
        return self._maybe_replay(force=force) and ok

    def _drain(self, *, force: bool) -> bool:
        self.spool.rotate()
        ok = True
        buffer = self.buffer
        while buffer:
            self.in_flight = True
            n = min(len(buffer), _MAX_TRANSACTION)
            with self.flight_lock:  # taken and marked at once: ``close`` sees it either way
                batch = [buffer.popleft() for _ in range(min(n, len(buffer)))]
                self.flight = batch
            try:
                ok = self._write(batch, force_try=force, flying=True) and ok
            finally:
                self.in_flight = False
        return ok

    def _maybe_replay(self, *, force: bool) -> bool:
        """Replay the spool when it may hold events and the database may take them.

        Segments other live processes hold locked are theirs to settle: they are not a
        reason to scan again at the next cycle (with several durable processes on one
        spool, every write cycle would). What a dead process left waits for the
        periodic rescan, or for a flush or close."""
        now = time.monotonic()
        if force or now >= self.next_rescan:
            # a flush or close looks again: a forked child (or another process) may
            # have spooled since the last look
            self.next_rescan = now + _RESCAN_EVERY
            self.pending_hint = True
        handed_over = self.spool.handed_over
        if handed_over != self.handed_over_seen:  # a segment of ours kept lines for replay
            self.pending_hint = True
        if not self.pending_hint:
            return True
        if not force and not self.healthy and now < self.next_retry:
            return False
        from ._spool import ReplayOutcome

        # cleared before the scan: whatever is spooled while it runs sets it again
        self.pending_hint = False
        self.handed_over_seen = handed_over
        try:
            out = self.spool.replay(
                self._replay_rows, batch_size=_MAX_TRANSACTION, on_bad_lines=self._bad_lines
            )
        except Exception as exc:
            out = ReplayOutcome(complete=False, error=exc)
        self.n_replayed += out.events
        self.n_torn += out.torn_lines
        if out.torn_lines:
            _report(
                logging.WARNING,
                "torn",
                "costledger: skipped %d torn spool line(s) (an append cut short by a crash)",
                out.torn_lines,
            )
        if not out.complete:
            self.pending_hint = True
            self._failed(out.error)
            return False
        if out.events:
            self._succeeded()
        return True

    def _replay_rows(self, fields: list[dict[str, Any]]) -> int:
        rows: list[Row] = []
        for one in fields:
            try:
                # through an event: a spool line is checked as a recorded event is
                rows.append(self.to_row(row_to_event(one)))
            except Exception as exc:
                self._reject_rows([one], exc)
        return self._insert_isolating(rows)

    def _bad_lines(self, path: Path, lines: list[bytes]) -> None:
        kept = self._keep_rejected([line + b"\n" for line in lines])
        if kept is not None:
            self.n_rejected += len(lines)
            _report(
                logging.ERROR,
                "badlines",
                "costledger: %d unreadable line(s) in spool %s moved to %s",
                len(lines),
                path.name,
                kept,
            )

    def _keep_rejected(self, lines: list[bytes]) -> Path | None:
        """Write ``lines`` to a new ``rejected-*.jsonl``: its path, or ``None`` (logged, and
        the lines counted as dropped) when it could not be written."""
        try:
            return self.spool.write_segment(lines, prefix="rejected-")
        except OSError as exc:
            self.n_dropped += len(lines)
            _report(
                logging.ERROR,
                "rejectlost",
                "costledger: %d rejected event(s) or spool line(s) lost: cannot write "
                "rejected-*.jsonl in %s: %r",
                len(lines),
                self.spool.directory,
                exc,
            )
            return None

    # -- one batch ------------------------------------------------------------------------------
    def _write(self, batch: list[_Item], *, force_try: bool, flying: bool = False) -> bool:
        """Insert ``batch``, else spool it. ``flying``: the caller already made it
        ``self.flight`` (the writer, as it took it from the buffer)."""
        if not flying:
            with self.flight_lock:
                self.flight = batch
        if not self.healthy and not force_try and time.monotonic() < self.next_retry:
            self._land(batch, failed=True)
            return False
        try:
            self._insert_isolating([item[0] for item in batch])
        except Exception as exc:
            self._failed(exc)
            self._land(batch, failed=True)
            return False
        self._succeeded()
        self._land(batch, failed=False)
        return True

    def _land(self, batch: list[_Item], *, failed: bool) -> None:
        """The write of ``batch`` is over: spool it (``failed``) or settle it, unless
        ``close`` gave up waiting and spooled it meanwhile (a committed copy then replays
        as a duplicate). Under ``flight_lock``, so that ``close`` never returns, and the
        process never exits, while the writer is still putting a batch in the spool."""
        with self.flight_lock:
            if self.flight is not batch:
                return
            self.flight = None
            if failed:
                self._spool_batch(batch)
            else:
                self._settle(batch, failed=False)

    def _insert_isolating(self, rows: Sequence[Row]) -> int:
        """Insert; when some rows are bad, split the batch until they are isolated and
        rejected, so one bad event never holds back the others. Connection-level errors
        propagate (the caller spools)."""
        from ._store import is_data_error

        if not rows:
            return 0
        try:
            new = self.store.insert_rows(rows)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(rows) == 1:
                self._reject_rows([row_fields(rows[0])], exc)
                return 0
            mid = len(rows) // 2
            return self._insert_isolating(rows[:mid]) + self._insert_isolating(rows[mid:])
        self.n_inserted += len(new)
        self.n_duplicates += len(rows) - len(new)
        return len(new)

    def _succeeded(self) -> None:
        if not self.healthy:
            _log.info("costledger: database %s is back; replaying the spool", self.url_text)
            self.pending_hint = True
        self.healthy = True
        self.backoff = 0.0

    def _failed(self, exc: BaseException | None) -> None:
        self.healthy = False
        self.store.schema_suspect()
        self.backoff = min(_BACKOFF_MAX, max(_BACKOFF_FIRST, self.backoff * 2))
        self.next_retry = time.monotonic() + self.backoff * random.uniform(0.8, 1.2)
        self.last_error = repr(exc)
        _report(
            logging.WARNING,
            "dbdown",
            "costledger: cannot write to %s (%r); events are spooled in %s and will be replayed",
            self.url_text,
            exc,
            self.spool.directory,
        )

    def _spool_batch(self, batch: list[_Item]) -> None:
        lines: list[bytes] = []
        kept = 0
        for row, seg in batch:
            if seg is not None:
                kept += 1  # already in a durable segment, which is now kept for replay
                continue
            try:
                lines.append(spool_line(row))
            except Exception as exc:  # not seen: rows from sqlite_params encode; the
                # rest of the batch must be spooled all the same
                self.n_dropped += 1
                _report(logging.ERROR, "drop", "costledger: event %s lost: %r", row[0], exc)
        if lines:
            # appended to the tail file, cut back to whole lines when the disk fills: the
            # lines counted as spooled are exactly those a replay will find
            try:
                written, error = self.spool.append_lines(lines)
            except Exception as exc:  # not seen: append_lines reports OSErrors
                written, error = 0, exc  # type: ignore[assignment]
            self.n_spooled += written
            if written < len(lines):
                self.n_dropped += len(lines) - written
                _report(
                    logging.ERROR,
                    "drop",
                    "costledger: %d event(s) lost: the spool cannot take them: %r",
                    len(lines) - written,
                    error,
                )
        # a durable event's line waits in its segment (kept by ``_settle``) for the replay
        self.n_spooled += kept
        self.pending_hint = True
        self._settle(batch, failed=True)

    def _settle(self, batch: list[_Item], *, failed: bool) -> None:
        touched: dict[int, Segment] = {}
        for _, seg in batch:
            if seg is not None:
                seg.handled += 1
                if failed:
                    seg.failed = True
                touched[id(seg)] = seg
        for seg in touched.values():
            self.spool.release_if_done(seg)

    def _reject_events(self, events: Sequence[UsageEvent], exc: BaseException) -> None:
        rows: list[dict[str, Any]] = []
        for event in events:
            try:
                rows.append(event_to_row(event, check=False))
            except Exception:
                self.n_dropped += 1
                _report(
                    logging.ERROR,
                    "reject",
                    "costledger: unstorable event lost (%r): %s",
                    exc,
                    _safe_repr(event),
                )
        self._reject_rows(rows, exc)

    def _reject_rows(self, rows: Sequence[dict[str, Any]], exc: BaseException) -> None:
        if not rows:
            return
        # never fails: what JSON cannot hold is written as its repr
        kept = self._keep_rejected([encode_spool_line(row) for row in rows])
        if kept is None:
            return
        self.n_rejected += len(rows)
        _report(
            logging.ERROR,
            "reject",
            "costledger: %d event(s) rejected by the database (%r); kept in %s",
            len(rows),
            exc,
            kept,
        )

    @property
    def url_text(self) -> str:
        from ._engine import display_url

        return display_url(self.store.url)

    # -- shutdown ---------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the writer, in ``timeout`` (default ``exit_timeout``) in all.

        When the writer is still stuck in the database at the deadline (a lock, a hung
        server), the events it has not committed, the batch it holds included, go to
        the spool: nothing is lost, and a batch that commits after all replays later as
        a duplicate, which the idempotent insert ignores."""
        self._check_fork()
        if self.closed:
            return
        timeout = self.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, timeout)
        thread = self.thread
        if thread is not None and thread.is_alive() and self.pid == os.getpid():
            self.flush(timeout)
            with self.cond:
                self.closing = True
            self.wake.set()
            thread.join(max(0.0, deadline - time.monotonic()))
        self.closing = True
        self.closed = True
        if thread is not None and thread.is_alive():
            self._abandon()  # the writer is stuck in the database
            return
        if not self.write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._abandon()  # a sync caller is stuck in the database
            return
        try:
            if self.buffer:
                self._drain(force=True)
            if self.sync or thread is None:
                self._maybe_replay(force=True)
            self.spool.rotate()
        finally:
            self.write_lock.release()
        self.store.dispose()
        if self.temp_spool:
            self.spool.remove_if_empty()

    def _abandon(self) -> None:
        """Spool what the stuck writer holds and what waits behind it, and leave it."""
        with self.flight_lock:  # the writer cannot take a batch from the buffer meanwhile
            rest, self.flight = self.flight or [], None
            buffer = self.buffer
            rest = [*rest, *(buffer.popleft() for _ in range(len(buffer)))]
        if rest:
            self._spool_batch(rest)
            _report(
                logging.WARNING,
                "abandon",
                "costledger: %s did not answer in time; %d event(s) spooled in %s",
                self.url_text,
                len(rest),
                self.spool.directory,
            )
        self.spool.rotate()

    def stats(self) -> LedgerStats:
        return LedgerStats(
            recorded=self.n_recorded,
            inserted=self.n_inserted,
            duplicates=self.n_duplicates,
            spooled=self.n_spooled,
            replayed=self.n_replayed,
            rejected=self.n_rejected,
            dropped=self.n_dropped,
            torn_lines=self.n_torn,
            buffered=len(self.buffer),
            healthy=self.healthy,
            last_error=self.last_error,
        )


def _drain_deferred(timeout: float | None) -> None:
    """Calls finished with ``defer=True`` are still on their way here: let them land."""
    from .._tracker import drain_deferred

    drain_deferred(timeout)


def _close_core(core: _Core) -> None:
    if core.owner != os.getpid():
        return  # a forked child's exit: a ledger it never wrote to is the parent's to close
    try:
        deadline = time.monotonic() + core.exit_timeout  # one timeout for both steps
        _drain_deferred(core.exit_timeout)
        core.close(max(0.0, deadline - time.monotonic()))
    except Exception as exc:  # at exit or in GC: report, never raise
        _report(logging.ERROR, "close", "costledger: closing the ledger failed: %r", exc)


def _close_collected(core: _Core) -> None:
    """A ``Ledger``'s finalizer. Collected (no longer used), the GC may run this on a
    thread that holds a lock the calls still queued for the ledger need (a guard store's):
    closing there, which first waits for that queue, could stall it for the exit timeout.
    So only the close is queued, behind those calls (``defer_nowait``: never run here),
    when the worker runs. At exit (the worker finishing its queue), or with no worker
    running (no queue to wait for), it closes now, as it always did."""
    from .._tracker import _deferred, defer_nowait

    pid = os.getpid()
    if _deferred._owner != pid or sys.is_finalizing() or core.owner != pid:
        _close_core(core)
    else:
        defer_nowait(_close_core, core)


def _close_core_ref(ref: weakref.ref[_Core]) -> None:
    core = ref()
    if core is not None:
        _close_core(core)


# Every ledger of this process, made anew in a forked child at the fork itself (not at its
# first use: a read, a flush or the exit would take the parent's locks and buffer first).
_cores: weakref.WeakSet[_Core] = weakref.WeakSet()
# the pid of this process when it is a ``multiprocessing`` child started by fork, else 0
_mp_child_pid = 0


class _ForkMarker:
    """What ``register_after_fork`` holds (weakly) for ``_mark_mp_child``."""


_fork_marker = _ForkMarker()


def _after_fork_in_child() -> None:
    try:
        _report.after_fork()
        for core in list(_cores):
            try:
                core._after_fork()
            except Exception as exc:  # the others are reset all the same
                _report(logging.ERROR, "fork", "costledger: resetting a ledger after fork: %r", exc)
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # run by a multiprocessing child only, once it has cleared the finalizers
            # it inherited: the ledgers it writes to then register their exit there
            mp_util.register_after_fork(_fork_marker, _mark_mp_child)
    except Exception as exc:  # never break the host's fork
        _report(logging.ERROR, "fork", "costledger: resetting the ledgers after fork: %r", exc)


def _mark_mp_child(_: object = None) -> None:
    """This process is a ``multiprocessing`` child (its bootstrap has cleared the finalizers
    it inherited): the ledgers it owns, and those it makes or writes to from now on, are
    closed by its exit function. Once per process."""
    global _mp_child_pid
    pid = os.getpid()
    if _mp_child_pid == pid:
        return
    _mp_child_pid = pid
    for core in list(_cores):
        if core.owner == pid:  # made here (at the import of a spawned child's main module)
            core._register_child_exit()


def _watch_mp_child() -> None:
    """At import: costledger first imported in a ``multiprocessing`` child saw no fork
    hook of its own, and its exit (``os._exit``, skipping atexit) would close nothing:
    mark it (``when_mp_child``). A spawned child, which also runs atexit, closes twice:
    the second close is a no-op."""
    try:
        when_mp_child(_mark_mp_child, _fork_marker)
    except Exception as exc:  # never break the host's import
        _report(logging.ERROR, "fork", "costledger: multiprocessing child exit hook: %r", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_watch_mp_child()

Order = Literal["asc", "desc"]


class Ledger:
    """The SQL ledger of usage events (SQLite or PostgreSQL).

    >>> ledger = Ledger("sqlite:///costs.db")       # or $COSTLEDGER_DATABASE_URL
    >>> ledger.record(event)                        # returns at once; a thread writes
    >>> ledger.flush()
    >>> ledger.summary(by=["day", "model"], since=date(2025, 1, 1))

    ``url``: the argument, else ``$COSTLEDGER_DATABASE_URL``, else
    ``sqlite:///costledger.db``. The schema is created/migrated (Alembic) on first use.

    ``sync=True`` writes in the caller's thread before ``record`` returns.
    ``durable=True`` appends each event to the spool before ``record`` returns, so a
    killed process loses nothing (``fsync=True``: not even on power loss).
    ``spool_dir``: where events wait when the database cannot take them (default: next
    to a SQLite file, else ``~/.costledger/spool/<hash of url>``).
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        sync: bool = False,
        durable: bool = False,
        fsync: bool = False,
        spool_dir: str | os.PathLike[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        exit_timeout: float = DEFAULT_EXIT_TIMEOUT,
    ) -> None:
        from ._engine import default_spool_dir, is_memory_sqlite, resolve_url
        from ._spool import Spool
        from ._store import Store

        for name, value in (("batch_size", batch_size), ("max_buffer", max_buffer)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Ledger {name} must be a positive int, got {value!r}")
        for name, fvalue in (("flush_interval", flush_interval), ("exit_timeout", exit_timeout)):
            if isinstance(fvalue, bool) or not isinstance(fvalue, (int, float)) or fvalue <= 0:
                raise ValueError(f"Ledger {name} must be a positive number, got {fvalue!r}")
        resolved = resolve_url(url)
        temp_spool = False
        if spool_dir is not None:
            directory = Path(spool_dir).expanduser()
        elif is_memory_sqlite(resolved):
            # an in-memory database dies with the process: its spool must not outlive it
            import tempfile

            directory = Path(tempfile.gettempdir()) / f"costledger-spool-{os.getpid()}-{id(self)}"
            temp_spool = True
        else:
            directory = default_spool_dir(resolved)
        self.url = resolved
        self._core = _Core(
            Store(resolved),
            Spool(directory, fsync=fsync),
            sync=sync,
            durable=durable or fsync,
            batch_size=batch_size,
            flush_interval=float(flush_interval),
            max_buffer=max_buffer,
            exit_timeout=float(exit_timeout),
            temp_spool=temp_spool,
        )
        self._finalizer = weakref.finalize(self, _close_collected, self._core)

    def __repr__(self) -> str:
        mode = "sync" if self._core.sync else "durable" if self._core.durable else "buffered"
        return f"Ledger({self._core.url_text!r}, {mode})"

    # -- writing -------------------------------------------------------------------------------
    def record(self, event: UsageEvent) -> None:
        """Record one event; returns without waiting for the database (unless ``sync``).

        Recording an id twice stores one row. When the buffer is full the event goes
        to the spool instead (the host is never blocked). ``TypeError`` for a non-event.
        """
        self._core.record(event)

    def record_many(self, events: Iterable[UsageEvent]) -> None:
        """Record several events (sync mode: one transaction)."""
        core = self._core
        if core.owner != os.getpid():
            core.adopt()
        if core.sync and not core.closed:
            batch = list(events)
            for event in batch:
                if not isinstance(event, UsageEvent):
                    raise TypeError(f"record_many expects UsageEvents, got {event!r}")
            with core.write_lock:
                core.n_recorded += len(batch)
                core._maybe_replay(force=False)
                rows: list[_Item] = [
                    (row, None) for e in batch if (row := core._row(e)) is not None
                ]
                core._write(rows, force_try=False)
            return
        for event in events:
            core.record(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything recorded so far; ``True`` when it is all in the database.

        Also replays the spool. ``False`` on timeout, or when the database is down (the
        events are then safe in the spool and are written when it is back).
        """
        _drain_deferred(timeout)
        return self._core.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``, default ``exit_timeout``), stop the writer, release the
        database. Events recorded afterwards go to the spool. Runs at interpreter exit."""
        self._finalizer.detach()
        timeout = self._core.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout  # one timeout for both steps
        _drain_deferred(timeout)
        self._core.close(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> LedgerStats:
        return self._core.stats()

    @property
    def spool_dir(self) -> Path:
        return self._core.spool.directory

    @property
    def durable(self) -> bool:
        """Whether ``record`` appends each event to the spool before it returns
        (``durable=True`` or ``fsync=True``, and not ``sync``): the entry points then
        finish their calls on the caller's thread, so a call that has returned to the host
        survives a SIGKILL."""
        return self._core.durable

    def update_cost(self, event_id: str, cost: Cost) -> bool:
        """Re-price one stored event (``reprice``); ``False`` when the id is not stored."""
        return self.update_costs([(event_id, cost)]) == 1

    def update_costs(self, changes: Mapping[str, Cost] | Iterable[tuple[str, Cost]]) -> int:
        """Re-price stored events in one transaction; the number updated.

        Flushes pending writes first. Cost-change hooks (rollups) see every row's
        before and after inside the same transaction.
        """
        items = list(changes.items()) if isinstance(changes, Mapping) else list(changes)
        self._fresh()
        return self._core.store.update_costs(items)

    # hooks for tables maintained on write (rollups): see Store._on_inserted / _on_cost_changed
    def _add_insert_hook(self, hook: InsertHook) -> None:
        self._core.store.insert_hooks.append(hook)

    def _add_cost_hook(self, hook: CostHook) -> None:
        self._core.store.cost_hooks.append(hook)

    # -- reading -------------------------------------------------------------------------------
    def _fresh(self) -> None:
        """Reads see what this ledger recorded: write pending events first."""
        _drain_deferred(self._core.exit_timeout)
        if self._core.pending_writes():
            self.flush(timeout=self._core.exit_timeout)

    def events(
        self,
        *,
        since: str | datetime | date | None = None,
        until: str | datetime | date | None = None,
        model: str | Sequence[str] | None = None,
        provider: str | Sequence[str] | None = None,
        user: str | Sequence[str] | None = None,
        team: str | Sequence[str] | None = None,
        project: str | Sequence[str] | None = None,
        feature: str | Sequence[str] | None = None,
        tag: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        source: str | Sequence[str] | None = None,
        order: Order = "asc",
        limit: int | None = None,
        batch_size: int = 1000,
    ) -> Iterator[StoredEvent]:
        """Stored events in time order, streamed ``batch_size`` rows at a time.

        ``since`` is inclusive, ``until`` exclusive (naive datetimes are UTC; a date means
        its midnight UTC). A string is read as ``report`` reads it (``parse_when``:
        ``"7d"``, ``"last-month"``, and a date written as text, as ``until``, includes
        that whole day). A filter takes one value or a list of values (any of them).
        ``model`` matches the requested or the response model; ``tag`` matches events
        carrying that tag. ``ValueError`` naming the argument for a bound or a filter that
        cannot be read.
        """
        from ._query import iter_events

        lo, hi, checked = _selection(
            since,
            until,
            {
                "model": model,
                "provider": provider,
                "user": user,
                "team": team,
                "project": project,
                "feature": feature,
                "tag": tag,
                "status": status,
                "source": source,
            },
        )
        self._fresh()
        return iter_events(
            self._core.store,
            since=lo,
            until=hi,
            filters=checked,
            order=order,
            limit=limit,
            batch_size=batch_size,
        )

    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this id, or ``None``."""
        from ._query import get_event
        from ._text import key_text

        self._fresh()
        # as the row stores it (an id past KEY_TEXT_LIMIT characters is cut)
        key = key_text(event_id) if isinstance(event_id, str) else event_id
        return get_event(self._core.store, key)

    def summary(
        self,
        by: str | Sequence[str] = (),
        *,
        since: str | datetime | date | None = None,
        until: str | datetime | date | None = None,
        **filters: str | Sequence[str] | None,
    ) -> list[SummaryRow]:
        """Requests, errors, tokens and exact cost per group, computed in SQL.

        ``by``: any of day, week, month, model, provider, user, team, project, feature,
        tag, source, status (``model`` is the response model when known, else the
        requested one; ``tag`` gives one row per tag, and untagged events a row with
        tag ``None``). Rows are also split by currency. Unpriced events are counted in
        ``unpriced`` and add nothing to ``cost``. ``since``, ``until`` and filters as in
        ``events``.
        """
        from ._query import summarize

        lo, hi, checked = _selection(since, until, filters)
        self._fresh()
        return summarize(self._core.store, by=by, since=lo, until=hi, filters=checked)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a field whose repr raises: the type is all there is to say
        return f"<{type(value).__name__}>"


def _selection(
    since: str | datetime | date | None,
    until: str | datetime | date | None,
    filters: Mapping[str, str | Sequence[str] | None],
) -> tuple[datetime | None, datetime | None, dict[str, list[str] | None]]:
    """The bounds and filters of a read, checked and read as the report functions read
    them, so that ``until="2025-06-30"`` or ``model=5`` means the same (or fails the same
    way, naming the argument) in ``Ledger.events`` as in ``report``. Unlike ``report``, a
    ``since`` not before ``until`` is no error: the range selects nothing (the dashboard
    reads "this month so far", empty at the stroke of midnight on the first)."""
    from .._reports._common import check_filters
    from .._reports._when import parse_when

    lo = None if since is None else parse_when(since, "since")
    hi = None if until is None else parse_when(until, "until")
    return lo, hi, check_filters(filters)


class InMemoryLedger(Ledger):
    """A ledger in a private in-memory SQLite database, written synchronously: for tests.

    The very same code as ``Ledger`` (``sqlite://`` on one shared connection).
    """

    def __init__(self, *, sync: bool = True, **kwargs: Any) -> None:
        super().__init__("sqlite://", sync=sync, **kwargs)
