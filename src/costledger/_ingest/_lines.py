"""Reading an input as blocks of lines, in bounded memory, with the byte offset of each block.

A block is what one ``read`` of the input yields, split on ``\\n`` in C
(``bytes.split``). A line longer than ``max_line_bytes`` is never held whole: once
the partial line passes the cap, the rest of it is read and dropped up to its newline,
and the line is reported by its length only.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

__all__ = ["Block", "InputSource", "open_input", "read_blocks"]

READ_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(slots=True)
class Block:
    """Consecutive lines of one input.

    ``lines[i]`` is line ``first_line + i``; an over-long line is ``b""`` there with
    its length in ``oversized[i]``. ``start`` / ``end`` are the byte offsets (of the
    decompressed stream) of the block's first byte and of the byte after its last
    newline. ``unterminated`` marks a last line that had no newline at end of input.
    """

    lines: list[bytes]
    first_line: int
    start: int
    end: int
    oversized: dict[int, int] = field(default_factory=dict)
    unterminated: bool = False


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

    def position(self) -> int:
        """Bytes of the input (on disk) consumed so far, for a progress bar."""
        target = self.raw if self.raw is not None else self.stream
        try:
            return target.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
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
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
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


def _wrap(stream: Any, name: str, *, owned: bool) -> InputSource:
    if isinstance(stream, io.TextIOBase):
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            return InputSource(
                str(name), cast(IO[bytes], _EncodedText(stream)), None, False, None, None, owned
            )
        stream = buffer
    if not hasattr(stream, "read"):
        raise TypeError(f"an input must be a path or a binary file object, got {stream!r}")
    if not callable(getattr(stream, "peek", None)) and callable(getattr(stream, "readinto", None)):
        stream = io.BufferedReader(stream)  # to look at the first bytes without losing them
    peek = getattr(stream, "peek", None)
    head = peek(2)[:2] if callable(peek) else b""
    if head == GZIP_MAGIC:
        unzipped = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
        return InputSource(str(name), unzipped, None, True, stream, None, owned)
    return InputSource(str(name), stream, None, False, None, None, owned)


def skip_to(stream: IO[bytes], offset: int) -> None:
    """Position ``stream`` at ``offset`` (seek where possible, else read and drop)."""
    if offset <= 0:
        return
    try:
        if stream.seekable() and not isinstance(stream, gzip.GzipFile):
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
    """The lines of ``stream`` (already positioned at ``start``), block by block."""
    carry = b""
    pos = start  # offset of the first byte of ``carry``
    line_no = first_line
    skipping = 0  # > 0: inside an over-long line, this many bytes of it seen so far
    read = stream.read
    while True:
        data = read(read_size)
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
    if skipping:
        yield Block([b""], line_no, pos, pos + skipping, {0: skipping}, unterminated=True)
    elif carry:
        yield Block([carry], line_no, pos, pos + len(carry), unterminated=True)
