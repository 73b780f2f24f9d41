"""Reading an input as blocks of lines, in bounded memory, with the byte offset of each block.

A block is what one ``read`` of the input yields, split on ``\\n`` in C
(``bytes.split``). A line longer than ``max_line_bytes`` is never held whole: once
the partial line passes the cap, the rest of it is read and dropped up to its newline,
and the line is reported by its length only.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

__all__ = ["Block", "DamagedGzip", "GzipReader", "InputSource", "open_input", "read_blocks"]

READ_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
HEAD_SIZE = 4096  # the first bytes of the (decompressed) input kept to identify it
_GZIP_CHUNK = 1 << 18  # compressed bytes read at a time
_GZIP_OUT = 1 << 18  # bytes decompressed at a time (larger outputs are slower: cache)
_TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"


@dataclass(slots=True)
class Block:
    """Consecutive lines of one input.

    ``lines[i]`` is line ``first_line + i``; an over-long line is ``b""`` there with
    its length in ``oversized[i]``. ``start`` / ``end`` are the byte offsets (of the
    decompressed stream) of the block's first byte and of the byte after its last
    newline. ``unterminated`` marks a last line that had no newline at end of input;
    ``cut``, one whose input then failed to read (the rest of the line is unknown).
    """

    lines: list[bytes]
    first_line: int
    start: int
    end: int
    oversized: dict[int, int] = field(default_factory=dict)
    unterminated: bool = False
    cut: bool = False


@dataclass(slots=True)
class InputSource:
    """An opened input: the binary stream of its lines and what identifies it."""

    name: str
    stream: IO[bytes]
    path: str | None  # None for stdin and file objects: not resumable
    compressed: bool
    raw: IO[bytes] | None  # the file under a gzip stream (its position drives progress)
    size: int | None  # on-disk size, for progress
    owned: bool
    spool: IO[bytes] | None = None  # a copy of a gzip stream that cannot seek (``check``)

    def check(self) -> None:
        """A gzip input: decompress it once whole, checking every member's CRC and length,
        before any of its lines is read.

        zlib finds a flipped byte only at the member's end (its CRC), after decompressing
        garbage lines that parse; a file cut short has no CRC to check at all. Either way
        no line of a member that does not check out may reach the ledger: the stream
        read afterwards stops where the first such member starts (``DamagedGzip``).
        A stream that cannot seek (stdin) is first copied, compressed, to a temporary
        file. Decompressing alone runs at some 400 MB/s, a few percent of parsing.
        """
        if not self.compressed or self.raw is None:
            return
        raw = self.raw
        try:
            start = raw.tell() if raw.seekable() else None
        except (OSError, ValueError):
            start = None
        copy_error: BaseException | None = None
        if start is None:
            spool = self.spool = tempfile.TemporaryFile(prefix="costledger-ingest-")  # noqa: SIM115
            try:
                shutil.copyfileobj(raw, spool, READ_SIZE)
            except OSError as exc:  # what was copied is checked; the error is the reason
                copy_error = exc
            spool.seek(0)
            raw, start = spool, 0
        at, error = check_gzip(raw)
        raw.seek(start)
        error = copy_error or error
        stop = None if error is None else DamagedGzip(at, error)
        self.stream = cast(IO[bytes], GzipReader(raw, stop=stop))

    def head(self, size: int) -> bytes:
        """The first ``size`` (at most ``HEAD_SIZE``) bytes of the input's lines (decompressed),
        as far as they exist: what identifies the input whatever its name or compression."""
        stream = self.stream
        if isinstance(stream, (GzipReader, _Recording)):
            return stream.head[:size]
        try:  # a plain file, perhaps read from a checkpoint's offset on: its first bytes
            return os.pread(stream.fileno(), size, 0)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return b""

    @property
    def notes(self) -> tuple[str, ...]:
        """What reading noticed without failing (trailing garbage after gzip data)."""
        stream = self.stream
        return tuple(stream.notes) if isinstance(stream, GzipReader) else ()

    def position(self) -> int:
        """Bytes of the input (on disk) consumed so far, for a progress bar."""
        target = self.raw if self.raw is not None else self.stream
        try:
            return target.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
        if self.owned:
            self.stream.close()
            if self.raw is not None:
                self.raw.close()


def open_input(source: str | os.PathLike[str] | IO[bytes] | IO[str]) -> InputSource:
    """Open a path (``-`` is stdin; gzip is detected by its magic bytes) or wrap a file object."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if name == "-":
            return _wrap(sys.stdin.buffer, "<stdin>", owned=False)
        raw = open(name, "rb")  # noqa: SIM115  # closed by InputSource.close
        try:
            size: int | None = os.fstat(raw.fileno()).st_size
            head = raw.read(2)
            raw.seek(0)
        except OSError:
            raw.close()
            raise
        if head == GZIP_MAGIC:
            stream = cast(IO[bytes], GzipReader(raw))
            return InputSource(name, stream, name, True, raw, size, True)
        return InputSource(name, raw, name, False, None, size, True)
    return _wrap(source, getattr(source, "name", None) or repr(source), owned=False)


class _EncodedText:
    """A text stream with no binary buffer under it (``io.StringIO``), read as UTF-8 bytes."""

    def __init__(self, text: io.TextIOBase) -> None:
        self._text = text

    def read(self, size: int = -1) -> bytes:
        return self._text.read(size).encode("utf-8", "surrogateescape")

    def seekable(self) -> bool:
        return False


class _Recording:
    """A stream read from its start, keeping its first ``HEAD_SIZE`` bytes (``head``)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.head = b""

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        if len(self.head) < HEAD_SIZE and data:
            self.head += data[: HEAD_SIZE - len(self.head)]
        return data

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._stream.close()


class GzipReader:
    """The decompressed bytes of a gzip stream, keeping every byte it could decompress.

    ``gzip.GzipFile.read`` throws away what it decompressed in a call that then fails:
    a file cut short lost up to a whole read (1 MiB) of good lines, and a member followed
    by anything else lost everything. Here each ``read`` returns what was decompressed;
    a failure (the stream cut short, corrupt data, a bad checksum) is raised by the
    ``read`` after, once every byte before it was returned. Several members (``cat
    a.gz b.gz``) are read in turn, zero padding between them skipped; bytes after the
    last member that are not another member are ignored with a note, as ``gzip -d``
    does ("trailing garbage ignored"). Memory stays bounded: at most ``size`` bytes
    are decompressed per call. ``stop`` (what ``check_gzip`` found): the stream ends at
    its offset, with it raised, before a byte of the damaged member is returned.
    """

    def __init__(self, raw: Any, *, stop: DamagedGzip | None = None) -> None:
        self._raw = raw
        self._zlib: Any = zlib.decompressobj(wbits=31)  # None between members
        self._input = b""  # compressed bytes read but not yet decompressed
        self._ready = b""  # decompressed, not yet returned (after a failure)
        self._error: BaseException | None = None
        self._done = False
        self._stop = stop
        self.position = 0  # decompressed bytes returned
        self._produced = 0  # decompressed bytes made (returned or in _ready)
        self.member_start = 0  # offset (decompressed) where the member being read starts
        self.head = b""
        self.notes: list[str] = []

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._raw.close()

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(READ_SIZE), b""))
        if size == 0:
            return b""
        stop = self._stop
        if stop is not None:
            left = stop.at - self.position
            if left <= 0:
                raise stop
            size = min(size, left)
        data = self._read(size)
        self.position += len(data)
        if len(self.head) < HEAD_SIZE and data:
            self.head += data[: HEAD_SIZE - len(self.head)]
        return data

    def _read(self, size: int) -> bytes:
        out: list[bytes] = []
        n = 0
        while n < size:
            if self._ready:
                data, self._ready = self._ready[: size - n], self._ready[size - n :]
            elif self._error is not None:
                if out:
                    break  # returned now; the failure is raised by the next read
                error, self._error = self._error, None
                raise error
            elif self._done:
                break
            else:
                data = self._step(min(size - n, _GZIP_OUT))
            if data:
                out.append(data)
                n += len(data)
        return out[0] if len(out) == 1 else b"".join(out)

    def _step(self, limit: int) -> bytes:
        """One step: read compressed bytes, start a member, or decompress (at most ``limit``
        bytes). A failure is kept in ``_error`` (what came before it in ``_ready``)."""
        decompressor = self._zlib
        if not self._input:
            if decompressor is not None:
                data: bytes = decompressor.decompress(b"", limit)  # output still pending
                if data:
                    return data
            self._input = self._raw.read(_GZIP_CHUNK)
            if not self._input:
                self._done = True
                if decompressor is not None:  # inside a member: the stream was cut short
                    self._error = EOFError(_TRUNCATED)
                return b""
        if decompressor is None:  # between members
            if not self._next_member():
                return b""
            decompressor = self._zlib
        saved = decompressor.copy()
        try:
            data = decompressor.decompress(self._input, limit)
        except zlib.error as exc:
            # what this call decompressed before the bad byte is lost with the exception:
            # decompress again from the saved state, in small pieces, up to that byte
            self._ready = _salvage(saved, self._input)
            self._produced += len(self._ready)
            self._error, self._input, self._done = exc, b"", True
            return b""
        self._produced += len(data)
        if decompressor.eof:
            self._input, self._zlib = decompressor.unused_data, None
            self.member_start = self._produced  # whatever follows is another member's
        else:
            self._input = decompressor.unconsumed_tail
        return data

    def _next_member(self) -> bool:
        """After a member: skip zero padding; start the next member, or note the garbage."""
        while True:
            self._input = self._input.lstrip(b"\0")
            if len(self._input) >= 2:
                break
            more = self._raw.read(_GZIP_CHUNK)
            if not more:
                break
            self._input += more
        if not self._input:
            self._done = True
            return False
        if self._input == GZIP_MAGIC[:1]:  # the first byte of a member, and the end
            self._done, self._error = True, EOFError(_TRUNCATED)
            return False
        if self._input[:2] != GZIP_MAGIC:
            what = "the bytes after the gzip data"
            with contextlib.suppress(AttributeError, OSError, ValueError):
                at = self._raw.tell() - len(self._input)
                what = f"{os.fstat(self._raw.fileno()).st_size - at:,} byte(s) after the gzip data"
                what += f" (from byte {at:,})"
            self.notes.append(f"trailing garbage ignored: {what} are not gzip (as gzip -d does)")
            self._input = b""
            self._done = True
            return False
        self._zlib = zlib.decompressobj(wbits=31)
        return True


class DamagedGzip(EOFError):
    """A gzip member that does not check out (cut short, corrupt, a bad CRC): the input's
    lines end where it starts, ``at`` (an offset of the decompressed stream)."""

    def __init__(self, at: int, cause: BaseException) -> None:
        kind = "zlib.error" if isinstance(cause, zlib.error) else type(cause).__name__
        super().__init__(f"{kind}: {cause}")
        self.at = at
        self.cause = cause


_CHECK_SIZE = 1 << 22


def check_gzip(raw: Any) -> tuple[int, BaseException | None]:
    """Decompress the gzip stream ``raw`` (from its position) to its end, keeping nothing:
    ``(end, None)`` when every member checks out, else ``(start, error)``, ``start`` the
    offset (decompressed) where the first member that does not check out begins."""
    reader = GzipReader(raw)
    read = reader.read
    try:
        while read(_CHECK_SIZE):
            pass
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        return reader.member_start, exc
    return reader.position, None


def _salvage(decompressor: Any, data: bytes) -> bytes:
    """What ``decompressor`` gives of ``data`` before the byte it fails at (1 KiB pieces,
    then the failing piece byte by byte: a failure path only)."""
    out: list[bytes] = []
    pos, step = 0, 1024
    while pos < len(data):
        piece = data[pos : pos + step]
        trial = decompressor.copy()
        try:
            out.append(trial.decompress(piece))
        except zlib.error:
            if step == 1:
                break
            step = 1
            continue
        decompressor = trial
        pos += len(piece)
        if decompressor.eof:
            break
    return b"".join(out)


def _wrap(stream: Any, name: str, *, owned: bool) -> InputSource:
    if isinstance(stream, io.TextIOBase):
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            encoded = cast(IO[bytes], _Recording(_EncodedText(stream)))
            return InputSource(str(name), encoded, None, False, None, None, owned)
        stream = buffer
    if not hasattr(stream, "read"):
        raise TypeError(f"an input must be a path or a binary file object, got {stream!r}")
    if not callable(getattr(stream, "peek", None)) and callable(getattr(stream, "readinto", None)):
        stream = io.BufferedReader(stream)  # to look at the first bytes without losing them
    peek = getattr(stream, "peek", None)
    head = peek(2)[:2] if callable(peek) else b""
    if head == GZIP_MAGIC:
        unzipped = cast(IO[bytes], GzipReader(stream))
        return InputSource(str(name), unzipped, None, True, stream, None, owned)
    recording = cast(IO[bytes], _Recording(stream))
    return InputSource(str(name), recording, None, False, stream, None, owned)


def skip_to(stream: IO[bytes], offset: int) -> None:
    """Position ``stream`` at ``offset`` (seek where possible, else read and drop)."""
    if offset <= 0:
        return
    try:
        if stream.seekable() and not isinstance(stream, (GzipReader, _Recording)):
            stream.seek(offset)
            return
    except (OSError, ValueError):
        pass
    remaining = offset
    while remaining > 0:
        chunk = stream.read(min(remaining, READ_SIZE))
        if not chunk:
            raise EOFError(
                f"the input ended before byte {offset} (it changed since the checkpoint)"
            )
        remaining -= len(chunk)


def read_blocks(
    stream: IO[bytes],
    *,
    start: int = 0,
    first_line: int = 1,
    max_line_bytes: int,
    read_size: int = READ_SIZE,
) -> Iterator[Block]:
    """The lines of ``stream`` (already positioned at ``start``), block by block.

    A read that fails (a ``.gz`` cut short or corrupt) ends the lines: the partial line
    before it is yielded as the unterminated last line, marked ``cut``, then the error is
    raised.
    """
    failure: BaseException | None = None
    carry = b""
    pos = start  # offset of the first byte of ``carry``
    line_no = first_line
    skipping = 0  # > 0: inside an over-long line, this many bytes of it seen so far
    read = stream.read
    while True:
        try:
            data = read(read_size)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            failure = exc
            break
        if not data:
            break
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                skipping += len(data)
                continue
            length = skipping + nl
            end = pos + length + 1
            yield Block([b""], line_no, pos, end, {0: length})
            line_no += 1
            pos = end
            skipping = 0
            data = data[nl + 1 :]
            if not data:
                continue
        # the carried partial line joins the first line only (not a copy of the whole read)
        lines = data.split(b"\n")
        read_bytes = len(carry) + len(data)
        if carry:
            lines[0] = carry + lines[0]
        carry = lines.pop()
        if len(carry) > max_line_bytes:
            skipping = len(carry)
            carry = b""
        if not lines:
            continue
        size = read_bytes - len(carry) - skipping
        oversized: dict[int, int] = {}
        if size > max_line_bytes + 1 and max(map(len, lines)) > max_line_bytes:
            for i, line in enumerate(lines):
                if len(line) > max_line_bytes:
                    oversized[i] = len(line)
                    lines[i] = b""
        yield Block(lines, line_no, pos, pos + size, oversized)
        line_no += len(lines)
        pos += size
    cut = failure is not None
    if skipping:
        yield Block([b""], line_no, pos, pos + skipping, {0: skipping}, unterminated=True, cut=cut)
    elif carry:
        yield Block([carry], line_no, pos, pos + len(carry), unterminated=True, cut=cut)
    if failure is not None:
        raise failure
