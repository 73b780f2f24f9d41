"""Incremental content decoding of response bodies, as the transport sees them.

A transport sits below httpx's own decoding: it sees the bytes exactly as the
server sent them, gzip or zstd included. The usage scanners need plain bytes, so
this undoes ``Content-Encoding`` chunk by chunk (nothing is buffered) for the
encodings httpx itself can accept: gzip and deflate always, br and zstd when
their packages are installed (httpx only advertises them then).
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

__all__ = ["ContentDecoder", "ContentDecodingError", "UnsupportedEncoding", "make_decoder"]


class UnsupportedEncoding(Exception):
    """The response uses a content encoding we cannot undo; usage is then not read."""


class ContentDecodingError(Exception):
    """The body does not decode by its ``Content-Encoding`` (not gzip where it says gzip):
    the HTTP library reading it fails the same way (httpx's ``DecodingError``)."""


class ContentDecoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Zlib:
    """gzip and deflate. ``deflate`` is zlib-wrapped by the RFC but raw on some servers."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._first = True
        self._obj: Any = zlib.decompressobj(wbits)

    def decode(self, data: bytes) -> bytes:
        was_first, self._first = self._first, False
        try:
            return bytes(self._obj.decompress(data))
        except zlib.error:
            if was_first and self._wbits == zlib.MAX_WBITS:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                return bytes(self._obj.decompress(data))
            raise

    def flush(self) -> bytes:
        return bytes(self._obj.flush())


class _Brotli:
    def __init__(self) -> None:
        try:
            import brotli  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            try:
                import brotlicffi as brotli  # type: ignore[import-not-found, no-redef, unused-ignore]
            except ImportError:
                raise UnsupportedEncoding("br (install brotli)") from None
        self._obj: Any = brotli.Decompressor()
        # ``brotli`` names it ``process``, ``brotlicffi`` names it ``decompress``.
        self._decode = getattr(self._obj, "process", None) or self._obj.decompress

    def decode(self, data: bytes) -> bytes:
        return bytes(self._decode(data))

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self) -> None:
        try:
            import zstandard  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise UnsupportedEncoding("zstd (install zstandard)") from None
        self._new: Any = zstandard.ZstdDecompressor().decompressobj
        self._obj: Any = self._new()

    def decode(self, data: bytes) -> bytes:
        out = [self._obj.decompress(data)]
        # A body may hold several frames; a finished decompressobj hands back the rest.
        while self._obj.eof and self._obj.unused_data:
            rest = self._obj.unused_data
            self._obj = self._new()
            out.append(self._obj.decompress(rest))
        return b"".join(out)

    def flush(self) -> bytes:
        return b""


class _Chain:
    """Several encodings ("gzip, br"): the last one applied is undone first."""

    def __init__(self, decoders: list[ContentDecoder]) -> None:
        self._decoders = decoders

    def decode(self, data: bytes) -> bytes:
        for decoder in self._decoders:
            data = decoder.decode(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for decoder in self._decoders:
            data = (decoder.decode(data) if data else b"") + decoder.flush()
        return data


def _one(encoding: str) -> ContentDecoder:
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    if encoding == "br":
        return _Brotli()
    if encoding == "zstd":
        return _Zstd()
    raise UnsupportedEncoding(encoding)


def make_decoder(content_encoding: str | None) -> ContentDecoder | None:
    """A decoder for a ``Content-Encoding`` header value, or ``None`` for plain bytes.

    Raises ``UnsupportedEncoding`` for an encoding we cannot undo.
    """
    if not content_encoding:
        return None
    names = [e.strip().lower() for e in content_encoding.split(",")]
    names = [n for n in names if n and n != "identity"]
    if not names:
        return None
    decoders = [_one(n) for n in reversed(names)]
    return _Checked(decoders[0] if len(decoders) == 1 else _Chain(decoders))


class _Checked:
    """A decoder whose every failure is a ``ContentDecodingError``."""

    def __init__(self, inner: ContentDecoder) -> None:
        self._inner = inner

    def decode(self, data: bytes) -> bytes:
        try:
            return self._inner.decode(data)
        except Exception as exc:
            raise ContentDecodingError(type(exc).__name__) from exc

    def flush(self) -> bytes:
        try:
            return self._inner.flush()
        except Exception as exc:
            raise ContentDecodingError(type(exc).__name__) from exc
