"""Usage scanners: read the usage of a response as its bytes pass through, without buffering.

A JSON body is kept (it is needed whole to be parsed, and the consumer reads it
whole anyway). A server-sent-event stream is split into lines incrementally and
only the few events that can carry usage, the model or an error are parsed;
text deltas are recognised by a substring test and skipped. State is the
current partial line and the last usage-bearing event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .._streams import RESPONSES_FINAL, StreamUsage
from ._decode import ContentDecoder
from ._request import Kind

__all__ = ["JsonScanner", "ScanResult", "Scanner", "make_scanner", "read_json_usage"]

# Bodies larger than this (embeddings of long batches) are not parsed whole: usage is
# found by scanning from the end, where every provider puts it.
FULL_PARSE_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a scanner learned: ``payload`` is a provider-shaped object for ``read_response``."""

    payload: dict[str, Any] | None
    model: str | None
    complete: bool
    error: str | None = None
    note: str | None = None
    # A JSON body's ``id`` and ``status`` (a Responses API background response's state).
    response_id: str | None = None
    status: str | None = None


class Scanner:
    """Base of the scanners: feed bytes as they pass, then ask for the result once."""

    streamed = False

    def __init__(self, decoder: ContentDecoder | None) -> None:
        self._decoder = decoder

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def result(self) -> ScanResult:
        raise NotImplementedError


class JsonScanner(Scanner):
    def __init__(self, decoder: ContentDecoder | None) -> None:
        super().__init__(decoder)
        self._chunks: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)

    def result(self) -> ScanResult:
        raw = b"".join(self._chunks)
        self._chunks = []
        if self._decoder is not None:
            raw = self._decoder.decode(raw) + self._decoder.flush()
        obj = read_json_usage(raw)
        if obj is None:
            return ScanResult(None, None, complete=False, note="response body is not a JSON object")
        model = obj.get("model")
        model = model if isinstance(model, str) else None
        rid, status = obj.get("id"), obj.get("status")
        rid = rid if isinstance(rid, str) else None
        status = status if isinstance(status, str) else None
        if not isinstance(obj.get("usage"), dict):
            return ScanResult(None, model, True, None, "no usage in the response", rid, status)
        return ScanResult(obj, model, True, None, None, rid, status)


def read_json_usage(raw: bytes) -> dict[str, Any] | None:
    """The response object (or, for a huge body, its top-level ``TOP_KEYS`` only)."""
    if len(raw) <= FULL_PARSE_LIMIT:
        try:
            obj = json.loads(raw)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None
    return _top_level(raw)


# What is read about a response besides its bulk (``choices``, ``output``, ``data``): by
# ``JsonScanner`` (``model``, ``id``, ``status``) and by ``read_response`` (``usage``, ``id``,
# ``model``, ``service_tier`` for the price, ``object`` and ``type`` for the usage's shape).
TOP_KEYS = frozenset(("usage", "model", "id", "status", "service_tier", "object", "type"))
# A value of one of those is small: one longer than this is left out.
_VALUE_LIMIT = 65536
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
# At the top level: the next string (a key, or a value) or bracket.
_TOKEN = re.compile(_STRING + rb"|[\[\]{}]", re.DOTALL)
# Nested: everything up to the next bracket, strings (which may hold brackets) skipped whole.
_NESTED = re.compile(rb'[^"\[\]{}]*(?:' + _STRING + rb'[^"\[\]{}]*)*', re.DOTALL)
_SPACE = b" \t\r\n"


def _top_level(raw: bytes) -> dict[str, Any] | None:
    """The ``TOP_KEYS`` of a huge JSON object, read without parsing the rest.

    The object's structure is walked with C-level regular expressions: at its top level
    string by string (to find its keys), inside a nested value bracket by bracket (its
    numbers and strings skipped in one match), so a key of the same name deeper in (an
    output item's ``status`` or ``id``) is never taken for the response's own. ``None``
    if the body is not one JSON object."""
    start, end = 0, len(raw)  # found without copying the body, as strip() would
    while start < end and raw[start] in _SPACE:
        start += 1
    while end > start and raw[end - 1] in _SPACE:
        end -= 1
    if end - start < 2 or raw[start] != 0x7B or raw[end - 1] != 0x7D:  # "{" ... "}"
        return None
    out: dict[str, Any] = {}
    depth = 1
    pos = start + 1
    token, nested = _TOKEN.search, _NESTED.match
    while True:
        if depth == 1:
            m = token(raw, pos)
            if m is None:
                return None
            pos = m.end()
            first = raw[m.start()]
            if first == 0x22:  # '"': a key if a colon follows
                colon = pos
                while colon < end and raw[colon] in _SPACE:
                    colon += 1
                if colon < end and raw[colon] == 0x3A:
                    key = _key(m.group())
                    if key in TOP_KEYS:
                        value = _value_at(raw, colon + 1)
                        if value is not _NOTHING:
                            out[key] = value
                continue
        else:
            m = nested(raw, pos)  # always matches (maybe nothing)
            if m is not None:
                pos = m.end()
            if pos >= end:
                return None  # an unterminated string or container
            first = raw[pos]
            pos += 1
            if first == 0x22:  # a string that never ends
                return None
        if first in b"[{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                break
    if pos != end:  # something after the object
        return None
    if not isinstance(out.get("usage"), dict):
        out.pop("usage", None)
    return out


_NOTHING: Any = object()


def _key(token: bytes) -> str | None:
    if b"\\" not in token:
        return token[1:-1].decode("utf-8", "replace")
    try:
        key = json.loads(token)
    except ValueError:
        return None
    return key if isinstance(key, str) else None


def _value_at(raw: bytes, pos: int) -> Any:
    """The (small) JSON value at ``raw[pos:]``, or ``_NOTHING``."""
    text = raw[pos : pos + _VALUE_LIMIT].decode("utf-8", "replace")
    try:
        value, _ = _decoder.raw_decode(text, len(text) - len(text.lstrip()))
    except ValueError:
        return _NOTHING
    return value


_decoder = json.JSONDecoder()


def _has_usage(data: bytes) -> bool:
    """Cheap pre-test: does this event carry a non-null ``"usage"``? (False positives are fine.)"""
    i = data.find(b'"usage"')
    if i >= 0 and data.startswith(b":null", i + 7):  # OpenAI's every chunk but the last
        i = data.find(b'"usage"', i + 12)
    while i >= 0:
        j = i + 7
        rest = data[j : j + 8].lstrip(b" \t:")
        if not rest.startswith(b"null"):
            return True
        i = data.find(b'"usage"', j)
    return False


# An error type as providers write one: "overloaded_error", "rate_limit_exceeded",
# "response.failed". Free text (a message, which may echo the request's key) never is one.
_TYPE_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")


def _type_token(value: Any) -> str | None:
    """``value`` if it looks like an error type name, else ``None``.

    A random key can look like an identifier (``a3f9...`` of 32 hex digits), so a
    token with more than four digits is not taken as a type either."""
    if (
        isinstance(value, str)
        and _TYPE_TOKEN.fullmatch(value) is not None
        and sum(c.isdigit() for c in value) <= 4
    ):
        return value
    return None


def _error_type(error: Any, default: str = "stream_error") -> str:
    """A short type token for a stream's error event, never its free text."""
    if isinstance(error, dict):
        for key in ("type", "code"):
            token = _type_token(error.get(key))
            if token is not None:
                return token
    return default


class _SSEScanner(Scanner):
    """Splits a server-sent-event stream into events incrementally; subclasses read them.

    The usual event, one ``data:`` line (maybe after an ``event:`` line) ended by a
    blank line, is cut out with C-level ``split`` and ``startswith``. A stream with a
    CR in it goes line by line from then on: SSE ends a line with CRLF, LF or a bare
    CR, which ``bytes.splitlines`` splits on, and a CR that ends one chunk is a whole
    line end even if the next chunk starts with the LF of a CRLF (that LF is skipped).
    Comments and multi-line data (LF streams) go line by line too.
    """

    streamed = True

    def __init__(self, decoder: ContentDecoder | None) -> None:
        super().__init__(decoder)
        self._pending: list[bytes] = []
        self._by_line = False
        self._after_cr = False  # by line: the last chunk ended in a CR (its LF may come next)
        self._event: bytes | None = None
        self._data: list[bytes] = []
        self.model: str | None = None
        self.complete = False
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            data = self._decoder.decode(data)
        if not data:
            return
        if self._pending:
            # An event spread over several chunks: joined once, when a line end arrives.
            self._pending.append(data)
            if b"\n" not in data and b"\r" not in data:
                return
            data = b"".join(self._pending)
            self._pending = []
        if self._by_line or b"\r" in data:
            self._by_line = True
            self._feed_lines(data)
            return
        blocks = data.split(b"\n\n")
        tail = blocks.pop()
        for block in blocks:
            self._block(block)
        if tail:
            self._pending.append(tail)

    def _block(self, block: bytes) -> None:
        event = None
        if block.startswith(b"event:"):
            nl = block.find(b"\n")
            if nl > 0:
                event = block[6:nl].strip()
                block = block[nl + 1 :]
        if block.startswith(b"data: ") and b"\n" not in block:
            self.on_event(event, block[6:])
            return
        if event is not None:
            self._event = event
        for line in block.split(b"\n"):
            self._line(line)
        self._line(b"")

    def _feed_lines(self, data: bytes) -> None:
        if self._after_cr:
            self._after_cr = False
            if data.startswith(b"\n"):  # the LF of a CRLF cut after its CR
                data = data[1:]
                if not data:
                    return
        lines = data.splitlines()  # at CRLF, LF and CR (no other byte splits bytes)
        last = data[-1]
        if last == 13:  # CR: the last line is whole, and an LF may follow in the next chunk
            self._after_cr = True
        elif last != 10:  # no line end: the last line goes on in the next chunk
            self._pending.append(lines.pop())
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                self._data = []
                self.on_event(self._event, data)
            self._event = None
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip()

    def _end(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            self._decoder = None
            if tail:
                self.feed(tail)
        if self._pending:
            rest = b"".join(self._pending)
            self._pending = []
            if self._by_line:
                self._line(rest)
            else:
                self._block(rest.rstrip(b"\n"))
        self._line(b"")

    def on_event(self, event: bytes | None, data: bytes) -> None:
        raise NotImplementedError

    def final_payload(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def result(self) -> ScanResult:
        self._end()
        payload = self.final_payload()
        note = None if payload is not None else "no usage in the stream"
        return ScanResult(payload, self.model, self.complete, self.error, note)

    def _parse(self, data: bytes) -> dict[str, Any] | None:
        try:
            obj = json.loads(data)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None


class _ChatScanner(_SSEScanner):
    """OpenAI chat (and legacy completions): usage rides on the last chunk when
    ``stream_options.include_usage`` is set; ``data: [DONE]`` ends the stream."""

    def __init__(self, decoder: ContentDecoder | None) -> None:
        super().__init__(decoder)
        self._usage = StreamUsage()

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if data == b"[DONE]":
            self.complete = True
            return
        if self.model is not None and not _has_usage(data) and b'"error"' not in data:
            return
        obj = self._parse(data)
        if obj is None:
            return
        model = obj.get("model")
        if isinstance(model, str) and model:
            self.model = model
        self._usage.see(obj)  # the last chunk with usage (Groq's under x_groq)
        if obj.get("error"):
            self.error = _error_type(obj["error"])

    def final_payload(self) -> dict[str, Any] | None:
        payload: dict[str, Any] | None = self._usage.payload()
        return payload


_RESPONSES_EVENTS = frozenset(
    {
        b"response.created",
        b"response.completed",
        b"response.incomplete",
        b"response.failed",
        b"error",
    }
)


class _ResponsesScanner(_SSEScanner):
    """OpenAI Responses API: the ``response.completed`` event carries the whole response."""

    def __init__(self, decoder: ContentDecoder | None) -> None:
        super().__init__(decoder)
        self._usage = StreamUsage()

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if event is not None and event:
            if event not in _RESPONSES_EVENTS:
                return
        elif self.model is not None and not _has_usage(data) and b'"error"' not in data:
            return
        obj = self._parse(data)
        if obj is None:
            return
        etype = obj.get("type")
        response = obj.get("response")
        if isinstance(response, dict):
            model = response.get("model")
            if isinstance(model, str) and model:
                self.model = model
        self._usage.see(obj)  # a final event's response, with its usage
        if etype in RESPONSES_FINAL and isinstance(response, dict):
            self.complete = True
            if etype == "response.failed":
                self.error = _error_type(response.get("error"), "response.failed")
        elif etype == "error":
            self.error = _error_type(obj.get("error") or obj, "error")
            if self.error == "error":
                self.error = _type_token(obj.get("code")) or "error"

    def final_payload(self) -> dict[str, Any] | None:
        payload: dict[str, Any] | None = self._usage.payload()
        return payload


_MESSAGES_EVENTS = frozenset({b"message_start", b"message_delta", b"message_stop", b"error"})


class _MessagesScanner(_SSEScanner):
    """Anthropic Messages: ``message_start`` has the input usage, each ``message_delta``
    the CUMULATIVE output so far; ``StreamUsage`` merges them into one message."""

    def __init__(self, decoder: ContentDecoder | None) -> None:
        super().__init__(decoder)
        self._usage = StreamUsage()

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if event is not None and event:
            if event not in _MESSAGES_EVENTS:
                return
        elif b'"message_' not in data and b'"error"' not in data:
            return
        obj = self._parse(data)
        if obj is None:
            return
        self._usage.see(obj)
        etype = obj.get("type")
        if etype == "message_start":
            message = obj.get("message")
            if isinstance(message, dict) and isinstance(message.get("model"), str):
                self.model = message["model"]
        elif etype == "message_stop":
            self.complete = True
        elif etype == "error":
            self.error = _error_type(obj.get("error"), "error")

    def final_payload(self) -> dict[str, Any] | None:
        payload: dict[str, Any] | None = self._usage.payload()
        return payload


_SSE_SCANNERS: dict[Kind, type[_SSEScanner]] = {
    "chat": _ChatScanner,
    "completions": _ChatScanner,
    "responses": _ResponsesScanner,
    "messages": _MessagesScanner,
    "embeddings": _ChatScanner,
}


def make_scanner(
    kind: Kind, content_type: str, decoder: ContentDecoder | None, *, stream: bool = False
) -> Scanner:
    """The scanner for a response: by its content type (a stream or not) and endpoint.

    A response not labelled ``text/event-stream`` may be a stream all the same (a
    FastAPI/Starlette ``StreamingResponse`` sends no content type by default; some
    proxies say ``text/plain`` or ``application/json``): its first bytes tell (``stream``:
    the request asked for one, for a body that ends before saying)."""
    if content_type.startswith("text/event-stream"):
        return _SSE_SCANNERS[kind](decoder)
    return _Sniffer(kind, decoder, stream)


# How an event stream starts (after any blank lines): a field of an event, or a comment.
_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")


class _Sniffer(Scanner):
    """A JSON body or an event stream, as its first bytes say: ``{`` starts a JSON object,
    an SSE field name (``data:``, ``event:``...) or comment a stream. Until the first
    bytes that tell arrive, they are held (a few bytes: a field name's length)."""

    def __init__(self, kind: Kind, decoder: ContentDecoder | None, stream: bool) -> None:
        super().__init__(decoder)
        self._kind = kind
        self._head = b""
        self._inner: Scanner | None = None
        self.streamed = stream  # what the request asked for, until the body says

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            data = self._decoder.decode(data)
        inner = self._inner
        if inner is not None:
            inner.feed(data)
            return
        head = self._head + data
        start = head.lstrip()
        if not start or any(len(start) < len(s) and s.startswith(start) for s in _SSE_STARTS):
            self._head = head  # nothing that tells yet
            return
        self._head = b""
        self._choose(start.startswith(_SSE_STARTS)).feed(head)

    def _choose(self, stream: bool) -> Scanner:
        inner = _SSE_SCANNERS[self._kind](None) if stream else JsonScanner(None)
        self._inner = inner
        self.streamed = inner.streamed
        return inner

    def result(self) -> ScanResult:
        if self._decoder is not None:
            tail = self._decoder.flush()
            self._decoder = None
            if tail:
                self.feed(tail)
        inner = self._inner
        if inner is None:  # the body ended before it said: as the request asked
            head, self._head = self._head, b""
            inner = self._choose(self.streamed)
            if head:
                inner.feed(head)
        return inner.result()
