"""Where an ingestion stands: the resume checkpoint of an input, and its rejects file.

The checkpoint of ``(input file, ledger)`` is a small JSON file written (atomically:
temporary file, fsync, rename) after every committed batch. It holds the byte offset
after the batch's last line, the next line number, the size the rejects file had
then, and what identifies the input: device and inode, and a SHA-256 of its first
bytes, and (a file not compressed) of the bytes just before the offset. A run resumes
from it only when the file is still the same one, no shorter, and the ledger still holds
an event the checkpointed batch wrote (a ledger emptied
or replaced since is read into from the start).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from .._redact import redact_text

__all__ = [
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "IngestionLock",
    "RejectsFile",
    "checkpoint_path",
    "head_digest",
]

CHECKPOINT_VERSION = 1
HEAD_BYTES = 4096
_EXCERPT_CHARS = 160
_SCRUB_BYTES = 4096  # far past the excerpt and any key that could reach into it


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The state of one input after its last committed batch."""

    input: str
    ledger: str
    device: int
    inode: int
    size: int  # on-disk size when written: a shorter file now is another file
    head_bytes: int
    head_sha256: str
    offset: int  # of the decompressed stream, after the last committed line
    next_line: int
    rejects: str | None
    rejects_size: int
    complete: bool  # the input was read to its end (at that time)
    probe_id: str | None  # an id the ledger held after this batch
    version: int = CHECKPOINT_VERSION
    # ``offset`` is after a last line that had no newline yet: one written since ends it
    open_line: bool = False
    # SHA-256 of the ``tail_bytes`` bytes on disk just before ``offset`` (a file not
    # compressed): a file rewritten in place with the same first bytes is another file
    tail_bytes: int = 0
    tail_sha256: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Checkpoint | None:
        if data.get("version") != CHECKPOINT_VERSION:
            return None
        # a field with a default may be missing: a checkpoint an earlier version wrote
        optional = {"version", "open_line", "tail_bytes", "tail_sha256"}
        try:
            return cls(
                **{k: data[k] for k in cls.__dataclass_fields__ if k in data or k not in optional}
            )
        except (KeyError, TypeError):
            return None


def checkpoint_path(directory: Path, input_path: str, ledger: str) -> Path:
    """The checkpoint file of ``input_path`` ingested into ``ledger``: the ledger's key (a
    SQLite file's resolved path, another database's URL as shown), or for a checkpoint an
    earlier version saved, its URL as shown."""
    # surrogateescape: a file name that is not UTF-8 (bytes the file system keeps as they
    # are) has a checkpoint too, the same for the same bytes
    name = f"{os.path.realpath(input_path)}\0{ledger}".encode("utf-8", "surrogateescape")
    key = hashlib.sha256(name).hexdigest()
    return directory / f"{key[:32]}.json"


class IngestionLock:
    """One run at a time for an (input, ledger): an advisory lock on ``<checkpoint>.lock``.

    Two overlapping runs of the same ingestion (a cron job whose previous run is still
    going) would both append every reject, and each could remove or truncate the rejects
    file the other is writing. The lock is ``flock`` (POSIX; ``msvcrt.locking`` on
    Windows), taken without waiting and held for the whole run of the input; the
    system drops it when the process ends, however it ends. The file holds the pid of
    the run holding it (for the message of the run that finds it taken); it is never
    removed, which would let a third run lock a new file while the first holds the old.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> int | None:
        """Take the lock: ``None`` when taken, else the pid holding it (0: not known)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                return _holder(fd)
            os.ftruncate(fd, 0)
            os.lseek(fd, _PID_AT, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no pid left for a run that finds it free
            os.close(fd)  # releases the lock


def _holder(fd: int) -> int:
    try:
        os.lseek(fd, _PID_AT, os.SEEK_SET)
        text = os.read(fd, 32)
    except OSError:
        return 0
    finally:
        os.close(fd)
    try:
        return int(text.strip() or 0)
    except ValueError:
        return 0


try:  # POSIX
    import fcntl

    _PID_AT = 0

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EWOULDBLOCK: another run holds it
            return False
        return True

except ImportError:  # pragma: no cover - Windows
    _PID_AT = 1  # msvcrt's lock is mandatory: the pid is written past the locked byte

    def _try_lock(fd: int) -> bool:
        try:
            import msvcrt
        except ImportError:  # neither: no lock (overlapping runs are not detected)
            return True
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True


def head_digest(path: str, nbytes: int) -> str:
    """SHA-256 of the first ``nbytes`` bytes of the file on disk."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(nbytes)).hexdigest()


TAIL_BYTES = 4096


def tail_digest(fd: int, offset: int, nbytes: int) -> str:
    """SHA-256 of the ``nbytes`` bytes of the file ``fd`` just before ``offset``."""
    return hashlib.sha256(os.pread(fd, nbytes, offset - nbytes)).hexdigest()


def load_checkpoint(path: Path) -> Checkpoint | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Checkpoint.from_mapping(data) if isinstance(data, dict) else None


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically: a crash leaves the old one or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(checkpoint.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _input_of(record: bytes) -> object:
    try:
        return json.loads(record).get("input")
    except (ValueError, AttributeError):
        return None  # not a record of ours, or cut short: kept


def excerpt(line: bytes) -> str:
    """The start of a line for a reject record: decoded leniently, secrets scrubbed."""
    # Scrubbed before it is cut: a key across the cut would lose the end its pattern needs.
    text = line[:_SCRUB_BYTES].decode("utf-8", "backslashreplace")
    return redact_text(text)[:_EXCERPT_CHARS]


class RejectsFile:
    """JSON lines, one per rejected input line, appended; opened on the first reject.

    A record: ``{"input", "line", "offset", "bytes", "reason", "field", "excerpt"}``.
    Records are buffered (``add``), taken with their batch (``take``) and written once
    that batch has committed (``write``), so the file and the checkpoint always agree.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[bytes] | None = None
        self._pending: list[bytes] = []
        self.written = 0

    def size(self) -> int:
        if self._file is not None:
            return self._file.tell()
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def drop_after(self, size: int, input_name: str) -> None:
        """Drop ``input_name``'s records past ``size`` (those of a batch whose checkpoint was
        never saved), keeping what other inputs sharing the file wrote since."""
        with contextlib.suppress(FileNotFoundError), open(self.path, "r+b") as f:
            f.seek(size)
            kept = [line for line in f.read().splitlines(True) if _input_of(line) != input_name]
            f.seek(size)
            f.truncate()
            f.writelines(kept)

    def add(
        self,
        *,
        input_name: str,
        line_no: int,
        offset: int,
        nbytes: int,
        reason: str,
        field: str | None,
        text: str | None,
    ) -> None:
        record = {
            "input": input_name,
            "line": line_no,
            "offset": offset,
            "bytes": nbytes,
            "reason": redact_text(reason),
            "field": field,
            "excerpt": text,
        }
        self._pending.append(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self) -> list[bytes]:
        """The records added since the last ``take``, to be written once their batch commits."""
        taken, self._pending = self._pending, []
        return taken

    def write(self, records: list[bytes]) -> None:
        """Append records (of a committed batch) and make them durable."""
        if not records:
            return
        if self._file is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115  # closed by close()
        self._file.write(b"".join(records))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.written += len(records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
