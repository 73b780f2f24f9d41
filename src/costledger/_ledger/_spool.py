"""The local append-only spool: where events wait when the database cannot take them.

A spool directory holds segment files ``<time_ns>-<pid>-<random>.jsonl``, one event
per line (``encode_spool_line``). A segment being written is held with an exclusive
``flock`` by its owner; any ledger on the same URL replays every segment it can lock
(its owner is done with it or dead: the OS drops the lock of a killed process),
inserts the events idempotently and deletes the file. Lines that cannot be read are
counted; a torn last line (a crash mid-append) is skipped, other unreadable lines
are copied to ``rejected-*.jsonl`` for a human, never replayed.

A segment is created as ``<name>.jsonl.new``, which replayers ignore, and renamed to
its replayable name only once its writer holds the lock: found unlocked under that
name for an instant, it would pass for a finished one, be replayed empty and deleted,
and every line appended after would go to a file with no name. A writer that still
finds its segment without a name after an append (removed from outside) copies it to
a new one and writes on there.

Events spooled without a buffer behind them (a failed batch, a sync ledger's failed
write, an event recorded after ``close``) are appended, a batch at a time, to this
process's *tail* file, which is locked only while one append lasts (so it is
replayable between appends) and replaced by a new one past ``TAIL_MAX_BYTES``: an
outage fills a few files, not one per event. An append that fails part-way (disk
full, file size limit) is cut back to its last whole line, and only the lines that
did not make it are reported lost: what the counters call spooled is exactly what a
replay finds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._rows import decode_spool_line

try:  # POSIX
    import fcntl

    _LOCKING = True

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

except ImportError:  # pragma: no cover - Windows: no advisory locks; deleting an open file fails
    _LOCKING = False

    def _try_lock(fd: int) -> bool:
        return True


__all__ = ["ReplayOutcome", "Segment", "Spool"]

_log = logging.getLogger("costledger.ledger")

_PATTERN = "[0-9]*.jsonl"
_NEW = ".new"  # a segment until its writer holds its lock: never replayed
_NEW_STALE = 600.0  # seconds: a ``.new`` file this old was left by a writer killed
# between its creation and its rename (it holds no line); its removal is safe even
# if the writer is only stopped, whose rename then fails and who starts another
_SEGMENT_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND  # read: to copy it
TAIL_MAX_BYTES = 4 << 20
"""A tail file past this size is left to replay and a new one started."""


def _unlinked(fd: int) -> bool:
    return os.fstat(fd).st_nlink == 0


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)  # appends go to the end whatever the offset
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class PartialWrite(OSError):
    """An append that failed after ``written`` bytes reached the file."""

    def __init__(self, cause: OSError, written: int) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.cause = cause
        self.written = written


def _write_counted(fd: int, data: bytes) -> None:
    """``_write_all``, raising ``PartialWrite`` with the bytes written on failure."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        try:
            written = os.write(fd, view[done:])
        except OSError as exc:
            raise PartialWrite(exc, done) from exc
        done += written


@dataclass(eq=False)
class Segment:
    """One spool file this process is writing. ``queued`` of its lines are also in the
    in-memory buffer; the file can be deleted once all of them are committed
    (``handled == queued``) and nothing else (``spilled``, ``failed``) needs it."""

    path: Path
    fd: int
    size: int = 0  # bytes of whole lines written (only this process appends to it)
    queued: int = 0
    spilled: int = 0
    handled: int = 0
    failed: bool = False
    closed: bool = False

    @property
    def settled(self) -> bool:
        return self.closed and self.handled >= self.queued and not self.spilled

    @property
    def done_with(self) -> bool:
        """Every queued line has been either committed or given up on."""
        return self.closed and self.handled >= self.queued


@dataclass
class ReplayOutcome:
    files: int = 0
    events: int = 0
    inserted: int = 0
    torn_lines: int = 0
    bad_lines: int = 0
    complete: bool = True
    error: BaseException | None = None
    leftover: list[Path] = field(default_factory=list)


class Spool:
    """A spool directory (created on first use) and this process's open segments."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self.lock = threading.Lock()
        self.current: Segment | None = None
        self._open: dict[Path, int] = {}  # segments this process writes, and their fds
        self._open_lock = threading.Lock()
        self._release_lock = threading.Lock()
        self._seq = 0
        self._tail_lock = threading.Lock()
        self._tail: Path | None = None
        self.handed_over = 0  # segments closed with lines left for a replay

    # -- writing ---------------------------------------------------------------------------
    def _new_path(self, prefix: str = "") -> Path:
        self._seq += 1
        name = f"{prefix}{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}-{os.urandom(3).hex()}"
        return self.directory / f"{name}.jsonl"

    def _open_segment(self) -> Segment:
        path, fd = self._create_locked()
        return Segment(path=path, fd=fd)

    def _create_locked(self) -> tuple[Path, int]:
        """A new segment file under its replayable name, locked by this process."""
        for _ in range(8):
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self._new_path()
            if not _LOCKING:  # an open file cannot be deleted: no replayer can take it
                fd = os.open(path, _SEGMENT_FLAGS, 0o600)
                self._register(path, fd)
                return path, fd
            new = path.with_name(path.name + _NEW)
            fd = os.open(new, _SEGMENT_FLAGS, 0o600)
            try:
                if _try_lock(fd):  # else a sweep of stale ``.new`` files is looking at it
                    self._register(path, fd)
                    os.rename(new, path)  # the lock is the file's: it keeps it
                    return path, fd
            except FileNotFoundError:  # swept meanwhile (its writer was stopped for long)
                pass
            except BaseException:
                self._drop(path, fd)
                with contextlib.suppress(OSError):
                    new.unlink()
                raise
            self._drop(path, fd)
            with contextlib.suppress(OSError):
                new.unlink()
        raise OSError(f"cannot create a spool segment in {self.directory}")

    def _register(self, path: Path, fd: int) -> None:
        with self._open_lock:
            self._open[path] = fd

    def _drop(self, path: Path, fd: int) -> None:
        with self._open_lock:
            self._open.pop(path, None)
        with contextlib.suppress(OSError):
            os.close(fd)

    def _rehome(self, seg: Segment) -> None:
        """Copy a segment whose file lost its name (removed from outside the spool) to
        a new file, which it then uses: lines in a file with no name die with the
        process, and a replay never sees them."""
        data = _read_all(seg.fd)
        path, fd = self._create_locked()
        try:
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            self._drop(path, fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        old_path, old_fd = seg.path, seg.fd
        seg.path, seg.fd, seg.size = path, fd, len(data)
        self._drop(old_path, old_fd)

    def append(self, line: bytes, *, queued: bool) -> Segment:
        """Append one line to the current segment; call with ``self.lock`` held.

        ``os.write`` hands the line to the OS before returning, so it survives the
        process being killed; with ``fsync=True`` it also survives a power cut. A write
        that fails part-way is cut back to the segment's last whole line (a torn line in
        the middle of a file would take the next line with it); when the segment already
        holds lines it is closed and the line tried once more in a fresh one (a per-file
        size limit), else the ``OSError`` is raised: the line is not in the spool.
        """
        seg = self.current
        if seg is None:
            seg = self.current = self._open_segment()
        try:
            self._append_to(seg, line)
        except OSError:
            if not seg.size:
                raise
            self._retire_current()
            seg = self.current = self._open_segment()
            self._append_to(seg, line)
        if _unlinked(seg.fd):
            self._rehome(seg)
        if queued:
            seg.queued += 1
        else:
            seg.spilled += 1
        return seg

    def _append_to(self, seg: Segment, line: bytes) -> None:
        try:
            _write_counted(seg.fd, line)
            if self.fsync:
                os.fsync(seg.fd)
        except PartialWrite as exc:
            if exc.written:
                try:
                    os.ftruncate(seg.fd, seg.size)
                except OSError:
                    seg.size += exc.written  # a torn tail: no line may follow it
                    self._retire_current()
            raise exc.cause from None
        seg.size += len(line)

    def _retire_current(self) -> None:
        """Stop appending to the current segment (with ``self.lock`` held)."""
        seg, self.current = self.current, None
        if seg is not None:
            seg.closed = True
            self.release_if_done(seg)

    def rotate(self) -> Segment | None:
        """Stop appending to the current segment (writer thread, before taking a batch)."""
        with self.lock:
            seg, self.current = self.current, None
        if seg is not None:
            seg.closed = True
            self.release_if_done(seg)
        return seg

    def release_if_done(self, seg: Segment) -> None:
        """Delete a finished segment, or hand an unfinished one over to replay."""
        with self._release_lock:  # the writer's settle and a caller's retire may race
            if not seg.done_with or seg.fd < 0:
                return
            if seg.settled and not seg.failed:
                with contextlib.suppress(OSError):
                    seg.path.unlink()
            else:
                self._keep(seg)
                self.handed_over += 1
            self._close(seg)

    def _keep(self, seg: Segment) -> None:
        """Make sure a segment left for replay has a name (and, with fsync, is on disk)."""
        try:
            if _unlinked(seg.fd):
                self._rehome(seg)
            elif self.fsync:
                os.fsync(seg.fd)
        except OSError as exc:
            _log.error("costledger: cannot keep spool segment %s for replay: %r", seg.path, exc)

    def _close(self, seg: Segment) -> None:
        fd, seg.fd = seg.fd, -1
        with self._open_lock:
            self._open.pop(seg.path, None)
        with contextlib.suppress(OSError):
            os.close(fd)  # releases the flock: the file is now anyone's to replay

    def write_segment(self, lines: Sequence[bytes], *, prefix: str = "") -> Path:
        """A new closed segment holding ``lines`` (events of a failed batch, or rejects)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._new_path(prefix)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _write_all(fd, b"".join(lines))
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def append_lines(self, lines: Sequence[bytes]) -> tuple[int, OSError | None]:
        """Append whole lines to this process's tail file: how many were written, and
        why the others were not.

        Lines that could not be written (the disk is full) are not in the file: a failed
        write is cut back to its last whole line. A file that fails part-way (a size
        limit) is left to replay and the rest tried in a new one; a new, empty file that
        cannot take a single line means the disk is full, and the rest are not written.
        """
        done = 0
        error: OSError | None = None
        with self._tail_lock:
            busy = 0
            while done < len(lines) and busy < 8:
                path = self._tail
                if path is None:
                    path = self._tail = self._new_path()
                try:
                    try:
                        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    except FileNotFoundError:  # the directory was removed: make it again
                        self.directory.mkdir(parents=True, exist_ok=True)
                        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                except OSError as exc:
                    self._tail = None
                    error = exc
                    break
                try:
                    if not _try_lock(fd) or os.fstat(fd).st_nlink == 0:
                        self._tail = None  # being replayed, or replayed and removed
                        busy += 1
                        continue
                    start = os.fstat(fd).st_size
                    data = b"".join(lines[done:])
                    try:
                        _write_counted(fd, data)
                        if self.fsync:
                            os.fsync(fd)
                    except PartialWrite as exc:
                        error = exc.cause
                        whole = data.rfind(b"\n", 0, exc.written) + 1  # 0: not one line
                        done += data.count(b"\n", 0, whole)
                        with contextlib.suppress(OSError):  # else the torn line stays
                            os.ftruncate(fd, start + whole)  # last: no one appends to it
                        self._tail = None
                        if start + whole == 0:  # a new file took nothing: the disk is full
                            with contextlib.suppress(OSError):
                                path.unlink()
                            break
                        continue
                    except OSError as exc:  # fsync: the lines are in the file all the same
                        error = exc
                        self._tail = None
                    done = len(lines)
                    if start + len(data) >= TAIL_MAX_BYTES:
                        self._tail = None
                finally:
                    os.close(fd)  # releases the lock: replayable from here on
        return done, error

    def after_fork(self) -> None:
        """In a forked child: the parent keeps its segments (and their locks); start afresh.

        The child's copies of the parent's segment fds are closed: a ``flock`` lasts until
        every fd of the open file is closed, so a copy kept here would keep a segment the
        parent has finished with locked, unreplayable, for as long as the child lives."""
        for fd in list(self._open.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open = {}
        self.current = None
        self.lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._release_lock = threading.Lock()
        self._tail_lock = threading.Lock()
        self._tail = None  # the parent's, by name

    def remove_if_empty(self) -> None:
        with contextlib.suppress(OSError):
            self.directory.rmdir()

    # -- reading ---------------------------------------------------------------------------
    def pending(self) -> list[Path]:
        """Segments on disk that nobody in this process is writing (maybe locked elsewhere)."""
        try:
            paths = sorted(self.directory.glob(_PATTERN))
        except OSError:
            return []
        with self._open_lock:
            return [p for p in paths if p not in self._open]

    def _sweep_new(self) -> None:
        """Remove ``.new`` files their writer, killed before its rename, left behind."""
        try:
            paths = list(self.directory.glob(_PATTERN + _NEW))
        except OSError:
            return
        cutoff = time.time() - _NEW_STALE
        for path in paths:
            with contextlib.suppress(OSError):
                if path.stat().st_mtime >= cutoff:
                    continue  # its writer is renaming it
            with self._claim(path) as fd:
                if fd is not None:  # else it is being renamed at this very moment
                    with contextlib.suppress(OSError):
                        path.unlink()

    @contextlib.contextmanager
    def _claim(self, path: Path) -> Iterator[int | None]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield None
            return
        try:
            if not _try_lock(fd) or os.fstat(fd).st_nlink == 0:
                yield None  # its writer is alive, or another replayer already finished it
            else:
                yield fd
        finally:
            os.close(fd)

    def replay(
        self,
        insert: Callable[[list[dict[str, Any]]], int],
        *,
        batch_size: int,
        on_bad_lines: Callable[[Path, list[bytes]], None],
    ) -> ReplayOutcome:
        """Insert every claimable segment, oldest first; stop at the first failed insert."""
        out = ReplayOutcome()
        self._sweep_new()
        for path in self.pending():
            with self._claim(path) as fd:
                if fd is None:
                    out.leftover.append(path)
                    continue
                with os.fdopen(os.dup(fd), "rb") as fh:
                    data = fh.read()
                rows, torn, bad = _parse(data)
                out.torn_lines += torn
                try:
                    for start in range(0, len(rows), batch_size):
                        out.inserted += insert(rows[start : start + batch_size])
                except Exception as exc:
                    out.complete = False
                    out.error = exc
                    out.leftover.append(path)
                    return out
                if bad:
                    out.bad_lines += len(bad)
                    on_bad_lines(path, bad)
                out.files += 1
                out.events += len(rows)
                with contextlib.suppress(OSError):
                    path.unlink()
        return out


def _parse(data: bytes) -> tuple[list[dict[str, Any]], int, list[bytes]]:
    """Rows of a segment, the number of torn last lines (0 or 1), and unreadable lines."""
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline; else an append cut short
    rows: list[dict[str, Any]] = []
    bad: list[bytes] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rows.append(decode_spool_line(line))
        except (ValueError, TypeError, KeyError):
            bad.append(line)
    torn = 0
    if tail.strip():
        try:  # the whole line made it and only the newline did not: still a good event
            rows.append(decode_spool_line(tail))
        except (ValueError, TypeError, KeyError):
            torn = 1
    return rows, torn, bad
