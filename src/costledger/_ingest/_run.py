"""``ingest``: log files into the ledger, in committed batches, resumable, never stopped by
a bad line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Context, Decimal, localcontext
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Union, cast

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from .._errors import CostLedgerError, UsageError
from .._redact import redact_text
from .._schema import _has_huge_float
from ._convert import (
    I_CURRENCY,
    I_ID,
    I_MODEL,
    I_PRICING_STATUS,
    I_REQUEST_ID,
    I_RESPONSE_MODEL,
    I_TIMESTAMP,
    I_TOTAL,
    Converter,
    Row,
)
from ._lines import HEAD_SIZE, Block, DamagedGzip, InputSource, open_input, read_blocks, skip_to
from ._sink import SinkError, SinkProcess
from ._state import (
    HEAD_BYTES,
    TAIL_BYTES,
    Checkpoint,
    IngestionLock,
    RejectsFile,
    checkpoint_path,
    excerpt,
    head_digest,
    load_checkpoint,
    save_checkpoint,
    tail_digest,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from .._ledger import Ledger
    from .._ledger._store import Store
    from .._pricing import Pricer

__all__ = [
    "DEFAULT_BATCH_LINES",
    "DEFAULT_MAX_LINE_BYTES",
    "REJECTS_SUFFIX",
    "IngestError",
    "IngestInterrupted",
    "IngestProgress",
    "IngestResult",
    "InputResult",
    "Reject",
    "default_checkpoint_dir",
    "ingest",
    "is_rejects_file",
    "rejects_clash",
]

DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_BATCH_LINES = 20_000
_SAMPLE_REJECTS = 10
_SQLITE_CACHE_PRAGMA = "PRAGMA cache_size = -65536"  # KiB: 64 MiB
_ZERO = Decimal(0)
_EXACT = Context(prec=100)
_row_id = operator.itemgetter(I_ID)
_row_total = operator.itemgetter(I_TOTAL)
_row_currency = operator.itemgetter(I_CURRENCY)
_row_pricing_status = operator.itemgetter(I_PRICING_STATUS)
_EXISTING_CHUNK = 500  # ids per query when looking for earlier versions' ids
_logger = logging.getLogger("costledger")

InputLike = Union[str, "os.PathLike[str]", IO[bytes], IO[str]]


class IngestError(CostLedgerError):
    """Ingestion stopped: the ledger refused a write (or the run was interrupted).

    Every batch before the failing one is committed and checkpointed: running the same
    ingestion again resumes after it. ``result`` holds what was done until then.
    """

    def __init__(self, message: str, result: IngestResult) -> None:
        super().__init__(message)
        self.result = result


class IngestInterrupted(KeyboardInterrupt):
    """Ingestion was interrupted (Ctrl-C): a ``KeyboardInterrupt`` still, carrying in
    ``result`` what was committed and checkpointed until then (the next run resumes
    after it)."""

    def __init__(self, result: IngestResult) -> None:
        super().__init__("interrupted")
        self.result = result


@dataclass(frozen=True, slots=True)
class Reject:
    """One rejected line (the first few of each input are kept in ``InputResult``)."""

    line: int
    offset: int
    reason: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class InputResult:
    """What one input gave in this run.

    ``lines``: non-blank lines read; each is ``accepted`` (a new event in the ledger),
    a ``duplicate`` (its event id was already in the ledger or earlier in the input),
    or ``rejected``. ``unpriced``: accepted events with no known price. ``costs``: the
    cost of the accepted events, per currency. ``resumed_at_line``: the line this run
    started at, when it resumed an earlier one. ``incomplete``: a last line with no
    newline that did not parse or is over the length limit, left for the next run (the
    writer may still be writing it), or the line a read error cut (the input is an
    error). ``error``: why the input stopped early, if it did. ``notes``: what
    was noticed without stopping (trailing garbage after a ``.gz``'s data; lines matched
    to events an earlier version stored), also logged as warnings on ``costledger``.
    ``skipped``: why the input was not read at all (it is a rejects file costledger
    wrote, ``<input>.rejects.jsonl``, picked up by a glob), else ``None``.
    """

    input: str
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    unpriced: int = 0
    blank: int = 0
    incomplete: int = 0
    costs: Mapping[str, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    unpriced_models: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    formats: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    resumed_at_line: int | None = None
    offset: int = 0
    rejects_path: str | None = None
    first_rejects: tuple[Reject, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = ()
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The outcome of ``ingest``: one ``InputResult`` per input, and their totals."""

    inputs: tuple[InputResult, ...]
    seconds: float

    def _sum(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.inputs)

    @property
    def lines(self) -> int:
        return self._sum("lines")

    @property
    def accepted(self) -> int:
        return self._sum("accepted")

    @property
    def duplicates(self) -> int:
        return self._sum("duplicates")

    @property
    def rejected(self) -> int:
        return self._sum("rejected")

    @property
    def unpriced(self) -> int:
        return self._sum("unpriced")

    @property
    def costs(self) -> dict[str, Decimal]:
        """Cost of the accepted events per currency (exact)."""
        out: dict[str, Decimal] = {}
        for r in self.inputs:
            for currency, amount in r.costs.items():
                out[currency] = out.get(currency, _ZERO) + amount
        return out

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> list[str]:
        return [f"{r.input}: {r.error}" for r in self.inputs if r.error]

    @property
    def ok(self) -> bool:
        """Done, and something was read: no input failed, and not every line was rejected.

        A run with nothing new to read (every input already ingested up to its end) is ok.
        """
        if self.errors:
            return False
        if self.lines and not self.accepted and not self.duplicates:
            return False
        # resumed past line 1: read before; a checkpoint at line 1 read nothing (an empty file)
        return self.lines > 0 or any((r.resumed_at_line or 0) > 1 for r in self.inputs)


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """Where the ingestion of one input stands (handed to ``progress`` after every block)."""

    input: str
    position: int  # bytes of the input consumed (on disk: compressed for .gz)
    size: int | None  # the input's size on disk, None for a stream
    lines: int
    accepted: int
    rejected: int
    committed: bool  # this call follows a commit


def default_checkpoint_dir() -> Path:
    """``~/.costledger/ingest``: where checkpoints live unless ``checkpoint_dir`` says otherwise."""
    return Path.home() / ".costledger" / "ingest"


# --------------------------------------------------------------------------- the writer


class _Writer:
    """Commits batches of rows through the ledger's ``Store``: one transaction per batch,
    the same idempotent ``INSERT ... ON CONFLICT DO NOTHING`` and insert
    hooks (rollups) as ``Ledger.record``. A batch the database refuses because of its
    data is split until the refused rows are isolated; one that deadlocks with another
    writer (or fails to serialize) runs once more; any other failure propagates (nothing
    of that batch is committed)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.postgresql = store.dialect == "postgresql"

    def write(self, rows: list[Row]) -> tuple[set[str], list[tuple[int, BaseException]]]:
        """Insert ``rows`` (ids unique); the ids that were new, and the refused rows' indexes."""
        from .._ledger._rows import postgresql_row

        params = [postgresql_row(r) for r in rows] if self.postgresql else rows
        return self._insert(rows, params, 0)

    def _insert(
        self, rows: list[Row], params: list[Row], base: int
    ) -> tuple[set[str], list[tuple[int, BaseException]]]:
        from .._ledger._store import is_data_error

        try:
            # Another writer's transaction (a second ingestion, the application's own
            # writes) may deadlock with this one, or PostgreSQL fail to serialize them:
            # this one is rolled back whole, and runs again after a short, growing,
            # jittered pause (the other's work, or its next batch, may cross this one's
            # again at once: one retry without a pause was not always enough).
            for attempt in _LOCK_RETRIES.copy():  # a copy: its state is per use
                with attempt:
                    return self._commit(rows, params), []
            raise AssertionError("unreachable: the last attempt raises")
        except Exception as exc:
            if not (is_data_error(exc) or _driver_data_error(exc)):
                raise
            if len(params) == 1:
                return set(), [(base, exc)]
            mid = len(params) // 2
            new_a, bad_a = self._insert(rows[:mid], params[:mid], base)
            new_b, bad_b = self._insert(rows[mid:], params[mid:], base + mid)
            return new_a | new_b, bad_a + bad_b

    def _commit(self, rows: list[Row], params: list[Row]) -> set[str]:
        """One transaction: the rows inserted, the rollups fed with the new ones."""
        store = self.store
        with store.write_transaction() as conn:
            if not self.postgresql:
                # a big file with ids in no order (LiteLLM's uuid4 call ids) walks the
                # primary key and six indexes at random: 2 MB of page cache is not enough
                conn.exec_driver_sql(_SQLITE_CACHE_PRAGMA)
            new = store.insert_params(conn, params, every_column=True)
            if new:
                store.on_inserted(
                    conn, rows if len(new) == len(rows) else [r for r in rows if r[I_ID] in new]
                )
        return new


_LOCK_CONFLICTS = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def _log_lock_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    _logger.info("costledger ingest: %s; writing the batch again", _one_line(exc) if exc else "?")


def _lock_conflict(exc: BaseException) -> bool:
    """A PostgreSQL deadlock or serialization failure, raised by the driver or wrapped by
    SQLAlchemy: the transaction was rolled back and may simply run again."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if getattr(seen, "sqlstate", None) in _LOCK_CONFLICTS:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


_LOCK_RETRIES = Retrying(
    retry=retry_if_exception(_lock_conflict),
    stop=stop_after_attempt(4),
    wait=wait_random_exponential(multiplier=0.05, max=1.0),
    before_sleep=_log_lock_retry,
    reraise=True,
)


def _driver_data_error(exc: BaseException) -> bool:
    """A DB-API ``DataError`` / ``IntegrityError`` raised by the driver itself (the insert runs
    on the driver's cursor, so it is not wrapped in SQLAlchemy's classes): the rows are bad,
    the connection is fine."""
    return any(cls.__name__ in ("DataError", "IntegrityError") for cls in type(exc).__mro__[:-1])


# ------------------------------------------------------------------------------ one input


def _orjson_loads() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency in practice
        import json

        return json.loads
    return orjson.loads


def _json_reason(line: bytes, exc: Exception) -> tuple[str, str | None]:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"line is not valid UTF-8 (byte {bad.start} of the line: {bad.reason})", None
    message = str(exc)
    if "recursion" in message.lower() or "depth limit" in message.lower():
        return "JSON nested too deeply (over 1024 levels)", None
    return f"not valid JSON: {message}", None


class _InputRun:
    def __init__(
        self,
        job: _Job,
        source: InputSource,
        rejects: RejectsFile | None,
        rejects_is_default: bool,
    ) -> None:
        self.job = job
        self.src = source
        self.rejects = rejects
        self.rejects_is_default = rejects_is_default
        self.resumable = source.path is not None and job.checkpoints is not None
        self.rows: list[Row] = []
        self.row_lines: list[int] = []
        self.lines = self.accepted = self.duplicates = self.rejected = 0
        self.unpriced = self.blank = self.incomplete = 0
        self.costs: dict[str, Decimal] = {}
        self.unpriced_models: dict[str, int] = {}
        self.first_rejects: list[Reject] = []
        self.resumed_at_line: int | None = None
        self.offset = 0
        self.next_line = 1
        self.pending_end = 0
        self.pending_next_line = 1
        self.pending_open = self.open_line = False
        self.resumed_offset = 0
        self.resumed_open = False  # resumed after a line still without its newline
        self.probe_id: str | None = None
        self.complete = False
        self.checkpoint_file: Path | None = None
        self.lock: IngestionLock | None = None
        self.identity: tuple[int, int, int, int, str] | None = None
        self.error: str | None = None
        self.block_offsets: list[int] | None = None
        self.block: Block | None = None  # the block being read
        self.head_key: str | None = None  # the input's identity past its first 4 KiB
        self.legacy_matched = 0
        self.separated = 0  # LiteLLM calls stored as <call id>:<n>
        self.notes: list[str] = []
        self.in_flight: _Batch | None = None
        self.formats_before = dict(job.converter.counts)

    # -- resume --------------------------------------------------------------------------
    def start(self) -> bool:
        """Take the input's lock and find where to start; ``False``: another run holds it."""
        src = self.src
        if not self.resumable or src.path is None or self.job.checkpoints is None:
            src.check()
            self._forget_old_rejects()  # stdin: every run reads from the start
            return True
        path = src.path
        self.checkpoint_file = checkpoint_path(self.job.checkpoints, path, self.job.ledger_key)
        lock = IngestionLock(self.checkpoint_file.with_suffix(".lock"))
        holder = lock.acquire()
        if holder is not None:
            by = f"pid {holder}" if holder else "another process"
            self.error = f"already being ingested ({by}); run it again once that run has ended"
            return False
        self.lock = lock
        src.check()
        st = os.stat(path)
        head = min(HEAD_BYTES, st.st_size)
        self.identity = (st.st_dev, st.st_ino, st.st_size, head, head_digest(path, head))
        ckpt = None if self.job.restart else self._load_checkpoint(path)
        if ckpt is not None and not self._still_valid(ckpt, st):
            ckpt = None
        if ckpt is None:
            self._forget_old_rejects()
            return True
        if (
            self.rejects is not None
            and not ckpt.complete
            and ckpt.rejects == self.rejects.path
            and self.rejects.size() > ckpt.rejects_size
        ):
            self.rejects.drop_after(ckpt.rejects_size, self.src.name)
        offset = ckpt.offset
        try:
            skip_to(src.stream, offset)
            if ckpt.open_line:
                # The last line read had no newline; if one came since (\n, or \r\n in a
                # CRLF log), it ends that line: not a blank line before the next one, which
                # would shift every line number. A lone \r at the end may be the start of
                # a \r\n: the line stays open.
                ending = src.stream.read(2)
                if ending[:1] == b"\n":
                    offset += 1
                elif ending == b"\r\n":
                    offset += 2
                else:
                    self.open_line = self.pending_open = self.resumed_open = True
                src.stream.seek(offset)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            # the part read before is now unreadable (a .gz damaged since): the checkpoint
            # stays as it is, for a run on the repaired file
            self.error = _read_error(exc)
            return False
        self.offset = self.pending_end = self.resumed_offset = offset
        self.next_line = self.pending_next_line = ckpt.next_line
        self.resumed_at_line = ckpt.next_line
        self.probe_id = ckpt.probe_id
        self.identity = (st.st_dev, st.st_ino, st.st_size, ckpt.head_bytes, ckpt.head_sha256)
        return True

    def _load_checkpoint(self, path: str) -> Checkpoint | None:
        """The input's checkpoint; without one, the one an earlier version saved under the
        ledger's URL as spelled (``ledger_name``), so that a run after an upgrade resumes
        where the last one stopped rather than reading (and rejecting) it all again."""
        job, current = self.job, self.checkpoint_file
        assert current is not None
        assert job.checkpoints is not None
        if job.ledger_key == job.ledger_name or current.exists():
            return load_checkpoint(current)
        return load_checkpoint(checkpoint_path(job.checkpoints, path, job.ledger_name))

    def close(self) -> None:
        """Let the next run of this ingestion in (after the last checkpoint is saved)."""
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.release()

    def _forget_old_rejects(self) -> None:
        """Reading an input from its start: its own rejects file describes an earlier run."""
        if self.rejects is not None and self.rejects_is_default:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.rejects.path)

    def _still_valid(self, ckpt: Checkpoint, st: os.stat_result) -> bool:
        if (ckpt.device, ckpt.inode) != (st.st_dev, st.st_ino) or st.st_size < ckpt.size:
            return False
        assert self.src.path is not None
        try:
            if head_digest(self.src.path, ckpt.head_bytes) != ckpt.head_sha256:
                return False
            if ckpt.tail_sha256 is not None and ckpt.tail_sha256 != tail_digest(
                self.src.stream.fileno(), ckpt.offset, ckpt.tail_bytes
            ):
                return False  # rewritten in place: the same start, other lines since
        except (OSError, ValueError):
            return False
        return ckpt.probe_id is None or self.job.ledger.get(ckpt.probe_id) is not None

    # -- reading -------------------------------------------------------------------------
    def run(self) -> None:
        job = self.job
        job.converter.input_key = self._input_key
        job.converter.legacy_ids.clear()
        try:
            self._run()
        finally:
            job.converter.input_key = None
        self.notes[:0] = self.src.notes
        if self.legacy_matched:
            self.notes.append(
                f"{self.legacy_matched:,} line(s) without a response id matched events an "
                "earlier version of costledger stored (by the line's bytes and number "
                "only) and were counted as duplicates; if this input was not ingested "
                "before, they are calls of another file's: see docs/ingestion.md"
            )
        if self.separated:
            self.notes.append(
                f"{self.separated:,} LiteLLM call(s) logged under a litellm_call_id another "
                "call (another response id) already has were stored as <call id>:<n>, as the "
                "live integration stores a proxy call id a client sent again"
            )
        for note in self.notes:
            _logger.warning("%s: %s", self.src.name, note)

    def _input_key(self, line: bytes, line_no: int) -> str:
        """The identity of the input up to ``line`` (for the id of a response without one):
        a SHA-256 of the input's first bytes up to the end of the line, at most 4 KiB.
        The same whatever the file is called or compressed with, and for every line once
        the input is 4 KiB long; a line in the first 4 KiB is identified by what precedes
        it, which lines written later do not change."""
        block = self.block
        assert block is not None
        end = self._offset_of(block, line_no - block.first_line) + len(line)
        if line[-1:] == b"\r":
            end -= 1
        if end >= HEAD_SIZE:
            if self.head_key is None:
                self.head_key = hashlib.sha256(self.src.head(HEAD_SIZE)).hexdigest()
            return self.head_key
        return hashlib.sha256(self.src.head(end)).hexdigest()

    def _run(self) -> None:
        job = self.job
        loads = _orjson_loads()
        convert = job.converter.convert
        batch_lines = job.batch_lines
        blocks = read_blocks(
            self.src.stream,
            start=self.offset,
            first_line=self.next_line,
            max_line_bytes=job.max_line_bytes,
        )
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                # a damaged .gz, an unreadable file: keep the lines read whole before it
                self.error = _read_error(exc)
                break
            self._block(block, loads, convert)
            if len(self.rows) + (self.rejects.pending if self.rejects else 0) >= batch_lines:
                self.commit()
            else:
                self._report(committed=False)
        self.commit(final=True)

    def _block(
        self,
        block: Block,
        loads: Callable[[bytes], Any],
        convert: Callable[[dict[str, Any], bytes, int], Row],
    ) -> None:
        if block.cut:
            # the input failed to read inside this line: what follows it is unknown. It is
            # neither counted nor rejected, and the checkpoint stays before it: the next
            # run reads it again, whole once the input is (a .gz whose copy completed)
            self.incomplete = 1
            self.pending_end = block.start
            self.pending_next_line = block.first_line
            self.pending_open = self.resumed_open and block.start == self.resumed_offset
            return
        rows_append = self.rows.append
        where_append = self.row_lines.append
        first = block.first_line
        self.block_offsets = None
        self.block = block
        counted = 0
        held_tail = False
        for i, line in enumerate(block.lines):
            if not line:
                if block.oversized and i in block.oversized:
                    if block.unterminated and self.resumable and not self.src.compressed:
                        # over the limit, and maybe still being written: rejected by the run
                        # that sees its end (the rest would otherwise count as a new line)
                        held_tail = True
                        continue
                    counted += 1
                    size = block.oversized[i]
                    self._reject(
                        block,
                        i,
                        f"line is {size} bytes, over the {self.job.max_line_bytes}-byte limit "
                        "(--max-line-bytes); not read",
                        None,
                        None,
                        size,
                    )
                else:
                    self.blank += 1
                continue
            counted += 1
            try:
                record = loads(line)
            except ValueError as exc:
                record = self._recover(line, exc)
                if record is None:
                    if block.unterminated and self.resumable and not self.src.compressed:
                        held_tail = True  # maybe still being written: left for the next run
                        counted -= 1
                        continue
                    reason, fld = _json_reason(line, exc)
                    if not line.strip():
                        counted -= 1
                        self.blank += 1
                        continue
                    self._reject(block, i, reason, fld, line, len(line))
                    continue
            if type(record) is not dict:
                self._reject(
                    block,
                    i,
                    f"a line must hold a JSON object, got {type(record).__name__}",
                    None,
                    line,
                    len(line),
                )
                continue
            try:
                row = convert(record, line, first + i)
            except Exception as exc:  # whatever a hostile line provokes, the run goes on
                converted = self._exactly(record, line, first + i, exc)
                if type(converted) is tuple:
                    row = converted
                else:
                    failure = cast(Exception, converted)
                    if isinstance(failure, UsageError):
                        self._reject(block, i, str(failure), failure.field, line, len(line))
                    else:
                        reason = f"{type(failure).__name__}: {failure}"
                        self._reject(block, i, reason, None, line, len(line))
                    continue
            rows_append(row)
            where_append(first + i)
        self.lines += counted
        if held_tail:
            self.incomplete = 1
            self.pending_end = block.start
            self.pending_next_line = first
            # held right where this run resumed after a line still open: it stays open
            self.pending_open = self.resumed_open and block.start == self.resumed_offset
        else:
            self.incomplete = 0
            self.pending_end = block.end
            self.pending_next_line = first + len(block.lines)
            # read to the end of a file that may grow: its newline may still come
            self.pending_open = block.unterminated and self.resumable and not self.src.compressed

    def _exactly(self, record: Any, line: bytes, line_no: int, exc: Exception) -> Row | Exception:
        """A line refused after orjson read an integer past 64 bits as a float: read it again
        exactly (the standard library) and convert it again, so the value stored, or named
        in the reason (``got 1180591620717411303424``, not ``got 1.18e+21``), is the line's."""
        if not _has_huge_float(record):
            return exc
        import json

        try:
            exact = json.loads(line[max(line.find(b"{"), 0) :])
        except (ValueError, RecursionError):
            return exc
        try:
            return self.job.converter.convert(exact, line, line_no)
        except Exception as again:
            return again

    def _recover(self, line: bytes, exc: Exception) -> Any:
        """A second chance for a line orjson refused: a prefix before the JSON object (a
        timestamp or level put there by a log shipper), or NaN / Infinity that the
        standard library reads."""
        start = line.find(b"{")
        if start > 0:
            with contextlib.suppress(ValueError):
                return _orjson_loads()(line[start:])
        # NaN / Infinity, or a lone surrogate's escape (\\ud83d: half an emoji), which
        # orjson refuses and the ledger stores as U+FFFD
        if b"NaN" in line or b"Infinity" in line or b"\\ud" in line or b"\\uD" in line:
            import json

            try:
                return json.loads(line[max(start, 0) :])
            except (ValueError, RecursionError):
                return None
        return None

    def _offset_of(self, block: Block, i: int) -> int:
        offsets = self.block_offsets
        if offsets is None:
            offsets = []
            pos = block.start
            oversized = block.oversized
            for k, line in enumerate(block.lines):
                offsets.append(pos)
                pos += (oversized[k] if k in oversized else len(line)) + 1
            self.block_offsets = offsets
        return offsets[i]

    def _reject(
        self,
        block: Block,
        i: int,
        reason: str,
        fld: str | None,
        line: bytes | None,
        nbytes: int,
    ) -> None:
        self.rejected += 1
        reason = redact_text(reason)  # a value quoted from the line may be a key
        if line is not None and line[-1:] == b"\r":  # a CRLF log: \r\n is the newline
            line = line[:-1]
            nbytes -= 1
        line_no = block.first_line + i
        offset = self._offset_of(block, i)
        if len(self.first_rejects) < _SAMPLE_REJECTS:
            self.first_rejects.append(Reject(line_no, offset, reason, fld))
        if self.rejects is not None:
            self.rejects.add(
                input_name=self.src.name,
                line_no=line_no,
                offset=offset,
                nbytes=nbytes,
                reason=reason,
                field=fld,
                text=None if line is None else excerpt(line),
            )

    # -- committing ----------------------------------------------------------------------
    def commit(self, *, final: bool = False) -> None:
        """Hand the pending rows to the writer (thread or process) as one batch (one transaction).

        The batch before it is settled first (its rejects written, then its checkpoint),
        so at most one batch is in flight, commits happen in input order, and the
        checkpoint never runs ahead of the database. ``final`` waits for this one too.
        """
        rows = self.rows
        converter = self.job.converter
        legacy = converter.legacy_ids
        if legacy:
            converter.legacy_ids = {}
            if rows:
                rows = self._earlier_ids(rows, legacy)
        calls, converter.call_rows = converter.call_rows, []
        batch = _Batch(
            rows=rows,
            row_lines=self.row_lines,
            rejects=self.rejects.take() if self.rejects is not None else [],
            end=self.pending_end,
            next_line=self.pending_next_line,
            complete=final and self.error is None,
            open_line=self.pending_open,
            calls=calls,
        )
        self.rows, self.row_lines = [], []
        if rows:
            if len(set(map(_row_id, rows))) == len(rows):
                batch.unique = rows  # the common case: no id twice in the batch
            else:
                firsts: dict[str, int] = {}
                for k, row in enumerate(rows):
                    firsts.setdefault(row[I_ID], k)
                batch.unique = [rows[k] for k in firsts.values()]
        self.settle()
        if batch.unique:
            batch.future = self.job.executor.submit(self.job.write, batch.unique)
        self.in_flight = batch
        if final or batch.future is None:
            self.settle()

    def _earlier_ids(self, rows: list[Row], legacy: dict[str, str]) -> list[Row]:
        """Rows of responses without an id whose line an earlier version stored (under the
        id of its bytes and number only) take that id, so they are duplicates of it: a
        file ingested before an upgrade and read again (``--restart``, a rotated copy)
        adds nothing twice."""
        from sqlalchemy import select

        from .._ledger._tables import events_table

        wanted = [legacy[rid] for rid in map(_row_id, rows) if rid in legacy]
        found: set[str] = set()
        column = events_table.c.id
        try:
            with self.job.ledger._core.store.read_connection() as conn:
                for k in range(0, len(wanted), _EXISTING_CHUNK):
                    chunk = wanted[k : k + _EXISTING_CHUNK]
                    found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
        except Exception as exc:  # the database went away: stop as a failed write does
            raise _WriteFailed(exc) from exc
        if not found:
            return rows
        out: list[Row] = []
        for row in rows:
            earlier = legacy.get(row[I_ID])
            if earlier in found:
                row = (*row[:I_ID], earlier, *row[I_ID + 1 :])
                self.legacy_matched += 1
            out.append(row)
        return out

    def settle(self) -> None:
        """Wait for the batch in flight; then count it, write its rejects and checkpoint."""
        batch = self.in_flight
        if batch is None:
            return
        new_ids: set[str] = set()
        refused: list[tuple[int, Any]] = []
        if batch.future is not None:
            try:
                # Ctrl-C while waiting leaves the batch in flight, for ``interrupted``
                new_ids, refused = batch.future.result()
            except Exception as exc:
                self.in_flight = None
                raise _WriteFailed(exc) from exc
        self.in_flight = None
        rows, unique = batch.rows, batch.unique
        refusals = [(unique[index], refusal) for index, refusal in refused]
        written = unique
        if refusals and len(unique) < len(rows):
            retried = self._retry_refused(rows, refusals, new_ids)
            written = unique + retried
        refused_ids = set()
        for row, refusal in refusals:
            refused_ids.add(row[I_ID])
            self._refused(batch, batch.row_lines[_index_of(rows, row)], refusal)
        if new_ids:
            refused_rows = {id(row) for row, _ in refusals}
            added = (
                unique
                if len(new_ids) == len(unique) and not refusals
                else [
                    row for row in written if row[I_ID] in new_ids and id(row) not in refused_rows
                ]
            )
            self._count_added(added)
        self.accepted += len(new_ids)
        self.duplicates += len(rows) - len(new_ids) - len(refusals)
        if batch.calls:
            self._separate_calls(batch, written, new_ids, refusals)
        for row in unique:
            if row[I_ID] not in refused_ids:
                self.probe_id = row[I_ID]
                break
        if self.rejects is not None:
            self.rejects.write(batch.rejects)
        self.offset = batch.end
        self.next_line = batch.next_line
        self.open_line = batch.open_line
        self.complete = batch.complete
        self._save_checkpoint()
        self._report(committed=True)

    def _refused(self, batch: _Batch, line_no: int, refusal: Any) -> None:
        """A row the database refused: a rejected line (its records go with ``batch``)."""
        self.rejected += 1
        if isinstance(refusal, str):  # described by the writer process
            reason = f"refused by the database: {refusal}"
        else:
            reason = f"refused by the database: {type(refusal).__name__}: {_one_line(refusal)}"
        reason = redact_text(reason)
        if len(self.first_rejects) < _SAMPLE_REJECTS:
            self.first_rejects.append(Reject(line_no, -1, reason))
        if self.rejects is not None:
            self.rejects.add(
                input_name=self.src.name,
                line_no=line_no,
                offset=-1,
                nbytes=0,
                reason=reason,
                field=None,
                text=None,
            )
            batch.rejects.extend(self.rejects.take())

    def _separate_calls(
        self,
        batch: _Batch,
        written: list[Row],
        new_ids: set[str],
        refusals: list[tuple[Row, Any]],
    ) -> None:
        """Store each LiteLLM success whose call id another call holds under ``<id>:<n>``.

        A client may send one ``x-litellm-call-id`` with several requests (a retry after a
        timeout): the proxy logs each success under that id, and the live integration
        records the first under the id and the next under ``<id>:2``, ``<id>:3``... A
        success line whose id was already stored (in this batch or before) is another
        call when the stored one has another response id (or, without response ids, another
        start time): it takes the first ``<id>:<n>`` that is free, or is a duplicate of the
        ``<id>:<n>`` holding the same call. The ids the ledger holds decide, not the order
        of arrival in this run alone, so a rerun, a resumed run or a rotated copy finds the
        same ids again and adds nothing (the same call logged twice stays one event).
        """
        if not refusals and len(new_ids) == len(batch.rows):
            return  # every row new: no call id was taken
        refused = {id(row) for row, _ in refusals}
        stored = {id(row) for row in written if row[I_ID] in new_ids and id(row) not in refused}
        waiting = [
            (row, 1) for row in batch.calls if id(row) not in stored and id(row) not in refused
        ]
        if not waiting:
            return
        taken = {row[I_ID] for row, _ in waiting}
        # the calls this batch stored under those ids; the ledger is asked for the others
        known: dict[str, tuple[str | None, datetime]] = {
            row[I_ID]: _call_key(row) for row in written if id(row) in stored and row[I_ID] in taken
        }
        looked_again: set[tuple[int, int]] = set()
        while waiting:
            wanted = {_nth(row[I_ID], n) for row, n in waiting} - known.keys()
            if wanted:
                known.update(self._stored_calls(wanted))
            later: list[tuple[Row, int]] = []
            new_rows: list[tuple[Row, Row, int]] = []
            for row, n in waiting:
                event_id = _nth(row[I_ID], n)
                held = known.get(event_id)
                if held is None:  # free: this call takes it
                    known[event_id] = _call_key(row)
                    new_rows.append((row, (*row[:I_ID], event_id, *row[I_ID + 1 :]), n))
                elif not _same_call(held, _call_key(row)):
                    later.append((row, n + 1))
                # else: that very call is stored under it: a duplicate
            if new_rows:
                attempt = [new for _, new, _ in new_rows]
                try:
                    added, refused_now = self.job.write(attempt)
                except Exception as exc:
                    raise _WriteFailed(exc) from exc
                failed = {index for index, _ in refused_now}
                for index, refusal in refused_now:
                    line_no = batch.row_lines[_index_of(batch.rows, new_rows[index][0])]
                    self._refused(batch, line_no, refusal)
                    self.duplicates -= 1
                for index, (row, new, n) in enumerate(new_rows):
                    if new[I_ID] in added:
                        continue
                    known.pop(new[I_ID], None)
                    if index not in failed and (id(row), n) not in looked_again:
                        # another run stored that id meanwhile: see which call it holds
                        looked_again.add((id(row), n))
                        later.append((row, n))
                stored_rows = [new for new in attempt if new[I_ID] in added]
                if stored_rows:
                    self._count_added(stored_rows)
                    self.accepted += len(stored_rows)
                    self.duplicates -= len(stored_rows)
                    self.separated += len(stored_rows)
            waiting = later

    def _stored_calls(self, ids: set[str]) -> dict[str, tuple[str | None, datetime]]:
        """The response id and start of the events the ledger holds under ``ids``."""
        from sqlalchemy import select

        from .._ledger._tables import events_table

        t = events_table
        wanted = sorted(ids)
        found: dict[str, tuple[str | None, datetime]] = {}
        try:
            with self.job.ledger._core.store.read_connection() as conn:
                for k in range(0, len(wanted), _EXISTING_CHUNK):
                    chunk = wanted[k : k + _EXISTING_CHUNK]
                    query = select(t.c.id, t.c.request_id, t.c.timestamp).where(t.c.id.in_(chunk))
                    for event_id, request_id, at in conn.execute(query):
                        found[event_id] = (request_id, _utc(at))
        except Exception as exc:  # the database went away: stop as a failed write does
            raise _WriteFailed(exc) from exc
        return found

    def _retry_refused(
        self, rows: list[Row], refusals: list[tuple[Row, Any]], new_ids: set[str]
    ) -> list[Row]:
        """Write the next line of each id the database refused, if the batch has one.

        Only the first line of an id goes into a batch's write; when the database refuses
        that row (PostgreSQL and a NUL character, a number past BIGINT), a later line
        with the same id is not a duplicate of anything stored, so it gets its turn. The
        refusals of these writes are added to ``refusals``; the new ids to ``new_ids``.
        """
        later: dict[str, list[Row]] = {}
        firsts: set[str] = set()
        for row in rows:
            rid = row[I_ID]
            if rid in firsts:
                later.setdefault(rid, []).append(row)
            else:
                firsts.add(rid)
        write = self.job.write
        retried: list[Row] = []
        waiting = [row[I_ID] for row, _ in refusals if later.get(row[I_ID])]
        while waiting:
            attempt = [later[rid].pop(0) for rid in waiting]
            try:
                added, refused = write(attempt)
            except Exception as exc:
                raise _WriteFailed(exc) from exc
            retried += attempt
            new_ids.update(added)
            again = [(attempt[index], refusal) for index, refusal in refused]
            refusals += again
            waiting = [row[I_ID] for row, _ in again if later.get(row[I_ID])]
        return retried

    def _count_added(self, added: list[Row]) -> None:
        """The costs (per currency, exact) and unpriced models of newly added rows."""
        currencies = set(map(_row_currency, added))
        with localcontext(_EXACT):  # a sum of 38-digit amounts, never rounded
            for currency in currencies:
                of_currency = (
                    added
                    if len(currencies) == 1
                    else [row for row in added if row[I_CURRENCY] == currency]
                )
                # map/filter/sum run in C: a loop over the rows cost a microsecond each
                total = sum(map(Decimal, filter(None, map(_row_total, of_currency))), _ZERO)
                if total or any(map(_row_total, of_currency)):
                    self.costs[currency] = self.costs.get(currency, _ZERO) + total
        if "unknown_model" in set(map(_row_pricing_status, added)):
            for row in added:
                if row[I_PRICING_STATUS] == "unknown_model":
                    self.unpriced += 1
                    name = row[I_RESPONSE_MODEL] or row[I_MODEL] or "?"
                    self.unpriced_models[name] = self.unpriced_models.get(name, 0) + 1

    def interrupted(self) -> None:
        """After Ctrl-C: the batch in flight, once written, is settled like any other (counted
        and checkpointed: the next run resumes after it); if its write failed, abandoned."""
        batch = self.in_flight
        if batch is None or batch.future is None:
            self.abandon()
            return
        try:
            batch.future.result()
        except Exception:
            self.abandon()
            return
        try:
            self.settle()
        except _WriteFailed:  # a row refused then retried, and that write failed
            self.abandon()

    def abandon(self) -> None:
        """After a failure: let the batch in flight finish (its commit is idempotent and
        harmless), without settling it, so no checkpoint runs ahead of the database."""
        batch, self.in_flight = self.in_flight, None
        if batch is not None and batch.future is not None:
            with contextlib.suppress(BaseException):
                batch.future.result()

    def _save_checkpoint(self) -> None:
        if self.checkpoint_file is None or self.identity is None:
            return
        device, inode, size, head_bytes, head_sha = self.identity
        tail_bytes, tail_sha = 0, None
        if not self.src.compressed and self.offset > 0:
            tail_bytes = min(self.offset, TAIL_BYTES)
            with contextlib.suppress(OSError, ValueError):
                tail_sha = tail_digest(self.src.stream.fileno(), self.offset, tail_bytes)
        save_checkpoint(
            self.checkpoint_file,
            Checkpoint(
                input=os.path.realpath(self.src.path or ""),
                ledger=self.job.ledger_name,
                device=device,
                inode=inode,
                size=size,
                head_bytes=head_bytes,
                head_sha256=head_sha,
                offset=self.offset,
                next_line=self.next_line,
                rejects=None if self.rejects is None else self.rejects.path,
                rejects_size=0 if self.rejects is None else self.rejects.size(),
                complete=self.complete,
                probe_id=self.probe_id,
                open_line=self.open_line,
                tail_bytes=tail_bytes if tail_sha is not None else 0,
                tail_sha256=tail_sha,
            ),
        )

    def _report(self, *, committed: bool) -> None:
        progress = self.job.progress
        if progress is not None:
            progress(
                IngestProgress(
                    input=self.src.name,
                    position=self.src.position(),
                    size=self.src.size,
                    lines=self.lines,
                    accepted=self.accepted,
                    rejected=self.rejected,
                    committed=committed,
                )
            )

    def result(self) -> InputResult:
        return InputResult(
            input=self.src.name,
            lines=self.lines,
            accepted=self.accepted,
            duplicates=self.duplicates,
            rejected=self.rejected,
            unpriced=self.unpriced,
            blank=self.blank,
            incomplete=self.incomplete,
            costs=MappingProxyType(dict(self.costs)),
            unpriced_models=MappingProxyType(dict(self.unpriced_models)),
            resumed_at_line=self.resumed_at_line,
            offset=self.offset,
            rejects_path=None
            if self.rejects is None or not os.path.exists(self.rejects.path)
            else self.rejects.path,
            first_rejects=tuple(self.first_rejects),
            formats=MappingProxyType(
                {
                    k: n - self.formats_before.get(k, 0)
                    for k, n in self.job.converter.counts.items()
                    if n - self.formats_before.get(k, 0)
                }
            ),
            error=self.error,
            notes=tuple(self.notes),
        )


def _read_error(exc: BaseException) -> str:
    """Why an input stopped early (``InputResult.error``)."""
    if isinstance(exc, DamagedGzip):
        return (
            f"could not read the input: {exc}; no line of the gzip member that holds it "
            f"(from byte {exc.at:,} of the decompressed data on) was read, as a member's "
            "lines are read only once its checksum is verified: run the same command again "
            "once the file is whole"
        )
    return f"could not read the input: {type(exc).__name__}: {exc}"


def _nth(call_id: str, n: int) -> str:
    """The event id of the ``n``-th call under a LiteLLM call id (the live integration's)."""
    return call_id if n == 1 else f"{call_id}:{n}"


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def _call_key(row: Row) -> tuple[str | None, datetime]:
    """What tells two LiteLLM successes apart: the response id, and the start."""
    return row[I_REQUEST_ID], _utc(datetime.fromisoformat(row[I_TIMESTAMP]))


def _same_call(a: tuple[str | None, datetime], b: tuple[str | None, datetime]) -> bool:
    """The same call logged twice: the same response id when both have one (the start
    the integration took from LiteLLM's datetime may differ from the payload's float in the
    last microsecond), else the same start."""
    if a[0] is not None and b[0] is not None:
        return a[0] == b[0]
    return a[1] == b[1]


def _index_of(rows: list[Row], row: Row) -> int:
    """The position of this very row (two lines may make equal rows)."""
    return next(k for k, candidate in enumerate(rows) if candidate is row)


_Written = tuple[set[str], list[tuple[int, Any]]]
"""What a write gives: the new ids, and the refused rows (an exception, or its text when
the writer process described it)."""


@dataclass(slots=True, eq=False)
class _Batch:
    rows: list[Row]
    row_lines: list[int]
    rejects: list[bytes]
    end: int
    next_line: int
    complete: bool
    open_line: bool = False
    calls: list[Row] = field(default_factory=list)  # LiteLLM successes (``Converter.call_rows``)
    unique: list[Row] = field(default_factory=list)
    future: Future[_Written] | None = None


class _WriteFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(slots=True)
class _Job:
    ledger: Ledger
    ledger_name: str  # shown in messages; earlier versions keyed checkpoints on it
    ledger_key: str  # names the checkpoints and locks (``_ledger_key``)
    writer: _Writer
    converter: Converter
    checkpoints: Path | None
    restart: bool
    max_line_bytes: int
    batch_lines: int
    progress: Callable[[IngestProgress], None] | None
    executor: ThreadPoolExecutor
    sink: SinkProcess | None = None  # the writer process of a big ingestion

    def write(self, rows: list[Row]) -> _Written:
        """Commit ``rows`` with the writer process if there is one, else the thread writer."""
        return self.writer.write(rows) if self.sink is None else self.sink.write(rows)


def _ledger_key(url: URL) -> str:
    """What names a ledger's checkpoints and locks: a SQLite file by its path, absolute with
    symlinks resolved (``sqlite:///usage.db`` run from /srv, ``sqlite:////srv/usage.db`` and
    a path through a link are one ledger, so one run at a time); another database by its
    URL as shown (the password masked)."""
    from .._ledger._engine import display_url, sqlite_path

    path = sqlite_path(url)
    return display_url(url) if path is None else f"sqlite:///{os.path.realpath(path)}"


# ------------------------------------------------------------------------------- the API


def _as_inputs(inputs: InputLike | Iterable[InputLike]) -> list[InputLike]:
    if isinstance(inputs, (str, os.PathLike)) or hasattr(inputs, "read"):
        return [cast(InputLike, inputs)]
    return list(inputs)


REJECTS_SUFFIX = ".rejects.jsonl"
"""How a default rejects file is named: ``<input>.rejects.jsonl``."""
_REJECTS_KEYS = frozenset({"input", "line", "reason"})
_REJECTS_FIRST_LINE_BYTES = 1 << 20
_SKIPPED_REJECTS = (
    "skipped: a rejects file costledger wrote (the rejected lines of a run), not a log"
)


def is_rejects_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a rejects file costledger wrote: its name ends with
    ``.rejects.jsonl`` and its first line is a reject record (``input``, ``line``,
    ``reason``, ...). Such a file, picked up by ``logs/*.jsonl``, is never read as a log:
    every record would be rejected again, into a deeper ``.rejects.jsonl.rejects.jsonl``."""
    name = os.fspath(path)
    if not name.endswith(REJECTS_SUFFIX):
        return False
    try:
        with open(name, "rb") as f:
            first = f.readline(_REJECTS_FIRST_LINE_BYTES)
        record = json.loads(first)
    except (OSError, ValueError):  # unreadable (the run reports it), or not JSON: a log
        return False
    return isinstance(record, dict) and record.keys() >= _REJECTS_KEYS


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where the names lead
        return os.path.realpath(a) == os.path.realpath(b)


def rejects_clash(
    inputs: InputLike | Iterable[InputLike], rejects: str | os.PathLike[str]
) -> str | None:
    """The input (as given) that is the same file as ``rejects``, if one is: appending reject
    records to it would write into the log being read."""
    target = os.fspath(rejects)
    for item in _as_inputs(inputs):
        if isinstance(item, (str, os.PathLike)):
            name = os.fspath(item)
            if name != "-" and _same_file(name, target):
                return name
    return None


def _rejects_owners(sources: list[InputLike]) -> dict[str, tuple[int, str]]:
    """The default rejects file of each path input (absolute): that input's index and name."""
    owners: dict[str, tuple[int, str]] = {}
    for index, item in enumerate(sources):
        if isinstance(item, (str, os.PathLike)) and (name := os.fspath(item)) != "-":
            owners.setdefault(os.path.abspath(name + REJECTS_SUFFIX), (index, name))
    return owners


def _owner_of_vanished(
    exc: OSError, name: str | None, index: int, owners: dict[str, tuple[int, str]]
) -> str | None:
    """The input read before this one whose default rejects file ``name`` is, when ``name``
    no longer exists (that input, read from its start, removed it): skipped, not an error."""
    if not isinstance(exc, FileNotFoundError) or name is None or name == "-":
        return None
    owner = owners.get(os.path.abspath(name))
    return owner[1] if owner is not None and owner[0] < index else None


def _skipped_vanished(owner: str) -> str:
    return (
        f"skipped: the rejects file of {owner}, another input of this run (removed when "
        "that input was read from its start), not a log"
    )


def _default_rejects(source: InputSource) -> str | None:
    if source.path is not None:
        return source.path + REJECTS_SUFFIX
    if source.name == "<stdin>":
        return "stdin.rejects.jsonl"
    return None


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ingest {name} must be a positive int, got {value!r}")
    return value


def ingest(
    inputs: InputLike | Iterable[InputLike],
    *,
    ledger: Ledger | str | None = None,
    pricer: Pricer | None = None,
    rejects: str | os.PathLike[str] | None = None,
    resume: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    batch_lines: int = DEFAULT_BATCH_LINES,
    progress: Callable[[IngestProgress], None] | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Read usage log lines into the ledger: idempotent, resumable, never stopped by a bad line.

    ``inputs``: one or more paths (``"-"`` is stdin; gzip is read transparently) or
    file objects (binary, or text read as UTF-8). Each line may be a costledger usage
    record, a LiteLLM ``StandardLoggingPayload`` or a provider response (see
    docs/ingestion.md).
    ``ledger``: a ``Ledger``, a database URL, or ``None`` for the default ledger.
    ``pricer``: prices LiteLLM payloads and responses (default ``Pricer.default()``).
    ``rejects``: one file for every input's rejected lines; by default each input
    path gets ``<input>.rejects.jsonl`` (stdin: ``./stdin.rejects.jsonl``). A
    ``rejects`` that is one of the inputs raises ``ValueError``. An input that is a
    rejects file costledger wrote (``is_rejects_file``) is skipped, not read
    (``InputResult.skipped``).
    ``resume``: continue each file from its checkpoint (in ``checkpoint_dir``, default
    ``~/.costledger/ingest``); ``False`` reads from the start (still adds nothing twice).
    ``now``: the time given to responses that carry none (default: the start of the run).

    Raises ``IngestError`` when the ledger refuses a write: everything committed until
    then stays, and the next run resumes after it. Ctrl-C (``KeyboardInterrupt``) while an
    input is read raises ``IngestInterrupted``, a ``KeyboardInterrupt`` whose ``result``
    holds what was committed until then.
    """
    from .._ledger import Ledger
    from .._ledger._engine import display_url, is_memory_sqlite
    from .._pricing import Pricer

    _positive("max_line_bytes", max_line_bytes)
    _positive("batch_lines", batch_lines)
    sources = _as_inputs(inputs)
    if rejects is not None:
        clash = rejects_clash(sources, rejects)
        if clash is not None:
            raise ValueError(
                f"ingest rejects {os.fspath(rejects)!r} is also an input ({clash!r}): its "
                "reject records would be appended to that log; write them elsewhere"
            )
    own_ledger = not isinstance(ledger, Ledger)
    the_ledger: Ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger, sync=True)
    started = time.perf_counter()
    results: list[InputResult] = []
    shared_rejects = RejectsFile(rejects) if rejects is not None else None
    # one writer thread: it commits a batch (itself, or through the writer process) while
    # the next batch is parsed
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="costledger-ingest")
    job: _Job | None = None
    try:
        store = the_ledger._core.store
        store.ensure_schema()
        memory = is_memory_sqlite(the_ledger.url)
        job = _Job(
            ledger=the_ledger,
            ledger_name=display_url(the_ledger.url),
            ledger_key=_ledger_key(the_ledger.url),
            writer=_Writer(store),
            converter=Converter(pricer or Pricer.default(), now=now),
            checkpoints=None
            if memory
            else Path(checkpoint_dir)
            if checkpoint_dir is not None
            else default_checkpoint_dir(),
            restart=not resume,
            max_line_bytes=max_line_bytes,
            batch_lines=batch_lines,
            progress=progress,
            executor=executor,
        )
        if own_ledger and not memory and sys.executable and _wants_writer_process(sources):
            # a fresh ledger of our own has only the ledger's own insert hooks: the
            # writer process, opening the same URL, does exactly what this one would
            with contextlib.suppress(OSError, SinkError):  # cannot start: the thread writes
                job.sink = SinkProcess(the_ledger.url.render_as_string(hide_password=False))
        # decided before any input is read: reading an input from its start removes its
        # old rejects file, which a glob (logs/*.jsonl) may have passed as an input too
        skip = [isinstance(item, (str, os.PathLike)) and is_rejects_file(item) for item in sources]
        owners = _rejects_owners(sources) if shared_rejects is None else {}
        for index, item in enumerate(sources):
            path_name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
            # (checked again: an input's rejects file this run created, named explicitly)
            if path_name is not None and (skip[index] or is_rejects_file(path_name)):
                _logger.info("%s: %s", path_name, _SKIPPED_REJECTS)
                results.append(InputResult(input=path_name, skipped=_SKIPPED_REJECTS))
                continue
            try:
                source = open_input(item)
            except OSError as exc:
                name = path_name if path_name is not None else repr(item)
                owner = _owner_of_vanished(exc, path_name, index, owners)
                if owner is not None:
                    why = _skipped_vanished(owner)
                    _logger.info("%s: %s", name, why)
                    results.append(InputResult(input=str(name), skipped=why))
                    continue
                reason = exc.strerror or str(exc)
                results.append(InputResult(input=str(name), error=f"cannot open: {reason}"))
                continue
            rejects_file: RejectsFile | None = shared_rejects
            is_default = False
            if shared_rejects is None:
                path = _default_rejects(source)
                rejects_file, is_default = (RejectsFile(path) if path else None), True
            run = _InputRun(job, source, rejects_file, is_default)
            try:
                if run.start():
                    run.run()
            except _WriteFailed as failed:
                run.abandon()
                results.append(run.result())
                done = IngestResult(tuple(results), time.perf_counter() - started)
                cause = failed.cause
                what = (
                    f"{cause.kind}: {cause.message}"
                    if isinstance(cause, SinkError)
                    else f"{type(cause).__name__}: {_one_line(cause)}"
                )
                raise IngestError(
                    f"could not write to the ledger {job.ledger_name}: "
                    f"{what}; {source.name}: "
                    f"{run.accepted + run.duplicates} lines committed up to line "
                    f"{run.next_line - 1}; run the same ingestion again to resume",
                    done,
                ) from cause
            except KeyboardInterrupt as interrupted:
                run.interrupted()
                results.append(run.result())
                done = IngestResult(tuple(results), time.perf_counter() - started)
                raise IngestInterrupted(done) from interrupted
            except BaseException:
                run.abandon()
                results.append(run.result())
                raise
            finally:
                try:
                    source.close()
                    if rejects_file is not None and rejects_file is not shared_rejects:
                        rejects_file.close()
                finally:
                    run.close()  # the lock, last: the next run finds every file settled
            results.append(run.result())
    finally:
        executor.shutdown(wait=True)
        if job is not None and job.sink is not None:
            job.sink.close()
        if shared_rejects is not None:
            shared_rejects.close()
        if own_ledger:
            the_ledger.close()
    return IngestResult(tuple(results), time.perf_counter() - started)


WRITER_PROCESS_ENV = "COSTLEDGER_INGEST_WRITER"
"""``process`` or ``thread``: where the ledger writes of an ingestion run (default: a
process of their own when the input files total ``WRITER_PROCESS_MIN_BYTES``)."""
WRITER_PROCESS_MIN_BYTES = 32 << 20  # below this, starting a process costs more than it saves


def _wants_writer_process(sources: list[InputLike]) -> bool:
    choice = os.environ.get(WRITER_PROCESS_ENV, "").strip().lower()
    if choice in ("process", "thread"):
        return choice == "process"
    if (os.cpu_count() or 1) < 2:
        return False
    total = 0
    for item in sources:
        if isinstance(item, (str, os.PathLike)) and os.fspath(item) != "-":
            with contextlib.suppress(OSError):
                total += os.path.getsize(item)
    return total >= WRITER_PROCESS_MIN_BYTES


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
