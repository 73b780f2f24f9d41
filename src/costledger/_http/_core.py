"""The tracking logic shared by every transport flavour (httpx and httpx2).

A flavour module (``_httpx``, ``_httpx2``) only binds this logic to its HTTP
library's classes: the transport base classes, ``Request`` and the byte-stream
base classes that its client checks responses against. Everything else —
which requests are tracked, guards, reading usage from JSON or a live stream,
recording exactly once — is written here, once.

Host safety: nothing here may break the request. Every tracking step is guarded;
a failure is reported (rate-limited) and the request carries on untracked. Only
a guard's ``GuardRefusal`` reaches the caller, before any network I/O.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any, ClassVar, Literal

from .._decorator import _in_gc
from .._errors import GuardRefusal
from .._events import CallStatus
from .._tracker import (
    Call,
    Tracker,
    _read_response,
    _report,
    check_tracker,
    defer_nowait,
    get_tracker,
)
from ._decode import ContentDecodingError, UnsupportedEncoding, make_decoder
from ._errors import without_secrets
from ._request import (
    Kind,
    TrackedRequest,
    endpoint_kind,
    provider_for,
    read_request,
    request_secrets,
    with_stream_usage,
)
from ._scan import Scanner, ScanResult, make_scanner

__all__ = [
    "AsyncTrackingBase",
    "Exchange",
    "Flavour",
    "SyncTrackingBase",
    "TrackedAsyncStream",
    "TrackedSyncStream",
]

Outcome = Literal["exhausted", "closed", "failed"]


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, (GeneratorExit, KeyboardInterrupt)) or type(exc).__name__ in (
        "CancelledError",
        "Cancelled",
    )


# A Responses API background response (``background: true``) is answered ``queued``;
# its usage comes with a terminal status, from a later GET /responses/{id} (or cancel).
_WAITING = frozenset({"queued", "in_progress"})
_TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
MAX_BACKGROUND = 1024
UNRETRIEVED = "background response not retrieved through a tracking transport"
UNDECODABLE = "response body does not decode by its Content-Encoding"


class _Background:
    """Background calls awaiting their terminal status, by response id: in this process,
    bounded (the oldest is recorded without usage to make room), recorded without usage at
    exit if never retrieved. Any tracking transport of the process may retrieve one."""

    def __init__(self) -> None:
        self._calls: OrderedDict[str, tuple[Tracker, Call, TrackedRequest]] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, rid: str, tracker: Tracker, call: Call, request: TrackedRequest) -> None:
        with self._lock:
            self._calls[rid] = (tracker, call, request)
            evicted = self._calls.popitem(last=False) if len(self._calls) > MAX_BACKGROUND else None
        if evicted is not None:
            _unretrieved(*evicted[1])

    def waits_for(self, rid: str) -> bool:
        return rid in self._calls

    def take(self, rid: str) -> tuple[Tracker, Call, TrackedRequest] | None:
        with self._lock:
            return self._calls.pop(rid, None)

    def flush(self) -> None:
        with self._lock:
            entries = list(self._calls.values())
            self._calls.clear()
        for entry in entries:
            _unretrieved(*entry)

    def forget(self) -> None:
        """In a forked child: the parent's calls are the parent's to record."""
        self._calls.clear()  # the same dict: ``_waiting`` is it
        self._lock = threading.Lock()


def _unretrieved(tracker: Tracker, call: Call, request: TrackedRequest) -> None:
    try:
        tracker.finish(
            call,
            provider=request.provider,
            metadata={"costledger.usage_missing": UNRETRIEVED},
            defer=True,
        )
    except Exception as exc:
        _report("http.background", exc, model=request.model)


_background = _Background()
_waiting = _background._calls  # tested on every untracked request: a dict's truth is cheapest
# Registered after the Tracker's own exit hook (imported above), so it runs first (atexit is
# last-in, first-out) and what it records is stored by that hook.
atexit.register(_background.flush)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_background.forget)


def _follows(method: str, path: str) -> str | None:
    """The response id a ``GET .../responses/{id}`` or ``POST .../responses/{id}/cancel``
    is about, if a background call waits for it."""
    parts = path.rstrip("/").rsplit("/", 3)
    if method == "POST":
        if len(parts) < 4 or parts[-1] != "cancel":
            return None
        parts = parts[:-1]
    elif method != "GET" or len(parts) < 2:
        return None
    if parts[-2] != "responses" or not _background.waits_for(parts[-1]):
        return None
    return parts[-1]


class Exchange:
    """One tracked request and its response: finishes the call exactly once."""

    __slots__ = (
        "call",
        "ended",
        "note",
        "request",
        "scanner",
        "streamed",
        "tracker",
        "undecodable",
    )

    def __init__(
        self,
        tracker: Tracker,
        call: Call,
        request: TrackedRequest,
        scanner: Scanner | None,
        *,
        streamed: bool,
        note: str | None = None,
    ) -> None:
        self.tracker = tracker
        self.call = call
        self.request = request
        self.scanner = scanner
        self.streamed = streamed
        self.note = note
        self.ended = False
        self.undecodable = False

    def feed(self, data: bytes) -> None:
        scanner = self.scanner
        if scanner is not None:
            try:
                scanner.feed(data)
            except Exception as exc:  # stop scanning, keep passing bytes through
                self.scanner = None
                self.streamed = scanner.streamed
                self._scan_lost(exc)

    def _scan_lost(self, exc: Exception) -> None:
        if isinstance(exc, ContentDecodingError):
            # The server's fault, not ours: whoever reads the body fails the same way.
            self.undecodable = True
            self.note = UNDECODABLE
        else:
            self.note = f"usage scan failed: {type(exc).__name__}"
            self._scan_failed(exc)

    def _scan_failed(self, exc: Exception) -> None:
        _report("http.scan", exc, model=self.request.model)

    def end(self, outcome: Outcome, exc: BaseException | None = None) -> None:
        """Record the call: the body was read to its end, closed early, or failed.

        Ended by the cyclic GC (a dropped stream's generator closed, ``__del__``), it only
        queues its ending (see ``end_later``)."""
        if self.ended:
            return
        if _in_gc():
            self.end_later(outcome, exc)
            return
        self.ended = True
        self._record(outcome, exc, None, True)

    def end_later(self, outcome: Outcome, exc: BaseException | None = None) -> None:
        """``end`` from a finalizer: the GC runs it on whatever thread it interrupted,
        maybe inside one of costledger's non-reentrant locks (a durable ledger's spool, a
        guard store's), which recording the call there would take again and wait on
        forever. So the whole ending goes to the background worker (``defer_nowait``, no
        lock taken here), with the latency the call has now. Never raises."""
        if self.ended:
            return
        self.ended = True
        try:
            latency = self._handing_off()
            defer_nowait(_recorded_later, self, outcome, exc, latency)
        except Exception as report_exc:
            _report("http.response", report_exc)

    def _handing_off(self) -> float | None:
        """The call's latency now; its guards' next calls wait for its settle."""
        self.tracker.handing_off(self.call)
        return self.call.elapsed_ms()

    def _record(
        self, outcome: Outcome, exc: BaseException | None, latency: float | None, defer: bool
    ) -> None:
        scanner = self.scanner
        result: ScanResult | None = None
        if scanner is not None:
            self.scanner = None
            self.streamed = scanner.streamed
            try:
                result = scanner.result()
            except Exception as scan_exc:
                self._scan_lost(scan_exc)
        if (
            result is not None
            and result.status in _WAITING
            and result.response_id is not None
            and self.request.kind == "responses"
            and self.request.body is not None
            and self.request.body.get("background") is True
        ):
            # Queued: its usage comes with its terminal status, from a later retrieval. The
            # request's body (the prompt) is not kept while it waits.
            request = dataclasses.replace(self.request, body=None)
            _background.keep(result.response_id, self.tracker, self.call, request)
            return
        complete = result is not None and result.complete
        status: CallStatus
        error: BaseException | str | None = None
        if outcome == "exhausted" or complete:
            status = "ok"
        elif outcome == "closed" or (exc is not None and _is_cancellation(exc)):
            status = "cancelled"
        else:
            status, error = "error", exc
        if self.undecodable:  # httpx raised its DecodingError to the reader, above us
            status, error = "error", "DecodingError"
        secrets = self.request.secrets
        if result is not None and result.error is not None:
            status, error = "error", without_secrets(result.error, secrets)
        note = without_secrets(self.note or (result.note if result is not None else None), secrets)
        _finish(
            self.tracker,
            self.call,
            self.request,
            result,
            status=status,
            error=error,
            streamed=self.streamed,
            note=note,
            latency=latency,
            defer=defer,
        )


def _recorded_later(
    exchange: Exchange, outcome: Outcome, exc: BaseException | None, latency: float | None
) -> None:
    """An ``Exchange.end_later``'s ending, on the background worker."""
    exchange._record(outcome, exc, latency, False)


def _finish(
    tracker: Tracker,
    call: Call,
    request: TrackedRequest,
    result: ScanResult | None,
    *,
    status: CallStatus,
    error: BaseException | str | None,
    streamed: bool,
    note: str | None,
    latency: float | None,
    defer: bool,
) -> None:
    """Finish ``call`` with what its response said, the response's model and id cleaned
    of the request's own credentials (a server may echo the key it was sent)."""
    payload = result.payload if result is not None else None
    usage = None
    model = result.model if result is not None else None
    response_id = None
    price_context = None
    if payload is not None:
        try:
            info = _read_response(payload, request.provider)
        except Exception:  # read again, and reported, by ``finish``
            pass
        else:
            payload = None
            usage = info.usage
            model = model or info.model
            response_id = info.response_id
            price_context = info.price_context
    secrets = request.secrets
    tracker.finish(
        call,
        usage=usage,
        payload=payload,
        response_model=without_secrets(model, secrets),
        provider=request.provider,
        status=status,
        error=error,
        request_id=without_secrets(response_id, secrets),
        streamed=streamed,
        metadata={"costledger.usage_missing": note} if note else None,
        latency_ms=latency,
        price_context=price_context,
        defer=defer,
    )


class Retrieval(Exchange):
    """A GET (or cancel) of a waiting background response: the first one that shows a
    terminal status finishes the background call, with that response's usage."""

    __slots__ = ("response_id",)

    def __init__(self, response_id: str, scanner: Scanner | None, *, streamed: bool) -> None:
        self.scanner = scanner
        self.streamed = streamed
        self.response_id = response_id
        self.note = None
        self.ended = False
        self.undecodable = False

    def _scan_failed(self, exc: Exception) -> None:
        _report("http.background", exc)

    def _handing_off(self) -> float | None:
        entry = _waiting.get(self.response_id)  # no lock: a finalizer may run inside it
        if entry is None:
            return None
        tracker, call, _request = entry
        tracker.handing_off(call)
        return call.elapsed_ms()

    def _record(
        self, outcome: Outcome, exc: BaseException | None, latency: float | None, defer: bool
    ) -> None:
        scanner, self.scanner = self.scanner, None
        try:
            result = scanner.result() if scanner is not None else None
            if result is None:
                return
            status = result.status
            if status is None and result.complete:  # a stream's final event
                payload = result.payload
                status = payload.get("status") if isinstance(payload, dict) else "completed"
            if status not in _TERMINAL:
                return
            entry = _background.take(self.response_id)
            if entry is None:  # finished by another retrieval meanwhile
                return
            tracker, call, request = entry
            failed = status == "failed"
            _finish(
                tracker,
                call,
                request,
                result,
                status="error" if failed else "cancelled" if status == "cancelled" else "ok",
                error="response.failed" if failed else None,
                streamed=False,
                note=result.note,
                latency=latency,
                defer=defer,
            )
        except Exception as report_exc:
            _report("http.background", report_exc)


class TrackedSyncStream:
    """Passes the response bytes through unchanged, feeding them to the usage scanner."""

    def __init__(self, inner: Any, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        try:
            for chunk in self._inner:
                exchange.feed(chunk)
                yield chunk
        except BaseException as exc:
            exchange.end("failed", exc)
            raise
        exchange.end("exhausted")

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._exchange.end("closed")

    def __del__(self) -> None:
        # A response dropped without being read or closed: the provider may still bill.
        # A finalizer: the call is recorded on the background worker (``end_later``).
        exchange = getattr(self, "_exchange", None)
        if exchange is not None and not exchange.ended:
            exchange.end_later("closed")


class TrackedAsyncStream:
    """The async twin of ``TrackedSyncStream``."""

    def __init__(self, inner: Any, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        try:
            async for chunk in self._inner:
                exchange.feed(chunk)
                yield chunk
        except BaseException as exc:
            exchange.end("failed", exc)
            raise
        exchange.end("exhausted")

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._exchange.end("closed")

    def __del__(self) -> None:
        exchange = getattr(self, "_exchange", None)
        if exchange is not None and not exchange.ended:
            exchange.end_later("closed")


class Flavour:
    """An httpx-like module (``httpx`` or ``httpx2``) and the stream classes built on it."""

    def __init__(
        self,
        module: ModuleType,
        sync_stream: type[TrackedSyncStream],
        async_stream: type[TrackedAsyncStream],
    ) -> None:
        self.module = module
        self.sync_stream = sync_stream
        self.async_stream = async_stream
        self.name: str = module.__name__
        self.request_type: type[Any] = module.Request
        self.byte_stream: type[Any] = module.ByteStream
        # The library's own transports, whose connection pool reports through the request's
        # ``trace`` extension when it starts writing the request (see ``_SendWatch``).
        self.pool_handle: Any = module.HTTPTransport.handle_request
        self.pool_ahandle: Any = module.AsyncHTTPTransport.handle_async_request
        self.request_not_read: type[BaseException] = module.RequestNotRead
        # Errors raised before the request left this process: nothing reached the provider.
        # LocalProtocolError: the request itself broke HTTP (an illegal header value, such as
        # a key with a newline) and was refused before the provider could act on it.
        self.not_sent: tuple[type[BaseException], ...] = (
            module.ConnectError,
            module.ConnectTimeout,
            module.PoolTimeout,
            module.UnsupportedProtocol,
            module.LocalProtocolError,
        )

    def with_body(self, request: Any, body: bytes) -> Any:
        headers = request.headers.copy()
        headers["Content-Length"] = str(len(body))
        return self.module.Request(
            request.method,
            request.url,
            headers=headers,
            content=body,
            extensions=request.extensions,
        )


_SENDING = "send_request_headers.started"  # httpcore's "http11." / "http2." event


def _sending(name: Any, info: Any) -> bool:
    """Whether a trace event is the start of writing the request itself; a proxy's tunnel
    ``CONNECT`` (which carries the request's extensions) is not the request. Never raises:
    it runs inside the connection pool; an event it cannot read counts as sending."""
    try:
        if not name.endswith(_SENDING):
            return False
        return bool(getattr(info.get("request"), "method", None) != b"CONNECT")
    except Exception:
        return True


class _SendWatch:
    """A ``trace`` extension that notes whether httpcore started writing the request, and
    passes every event on to the one the caller had set, if any.

    A request cancelled before that (waiting for a pooled connection, connecting, in a TLS
    handshake) never reached the provider: it is not a call.
    """

    __slots__ = ("chained", "sent")

    def __init__(self, chained: Any) -> None:
        self.chained = chained
        self.sent = False

    def __call__(self, name: str, info: Any) -> Any:
        if not self.sent:
            self.sent = _sending(name, info)
        # The caller's callback's result, a coroutine included: httpcore checks it, as before.
        return self.chained(name, info) if self.chained is not None else None


class _AsyncSendWatch:
    """``_SendWatch`` for an async transport, whose pool awaits its ``trace`` callback."""

    __slots__ = ("chained", "sent")

    def __init__(self, chained: Any) -> None:
        self.chained = chained
        self.sent = False

    async def __call__(self, name: str, info: Any) -> None:
        if not self.sent:
            self.sent = _sending(name, info)
        if self.chained is not None:
            await self.chained(name, info)


Watch = _SendWatch | _AsyncSendWatch


class _TrackingBase:
    """What both transport kinds share: deciding what to track, and reading the response."""

    _flavour: ClassVar[Flavour]
    # The transport for the other library's clients, named when handed its requests.
    _counterpart: ClassVar[str]

    def __init__(
        self,
        transport: Any,
        *,
        tracker: Tracker | None,
        include_usage: bool,
        provider: str | None,
    ) -> None:
        self.transport = transport
        self.tracker = check_tracker(f"{type(self).__name__}()", tracker)
        self.include_usage = include_usage
        self.provider = provider

    def _open(self, request: Any) -> tuple[Any, TrackedRequest] | None:
        """Whether to track ``request`` (and the request to send). Never raises.

        Once the path is a model endpoint the call is tracked whatever fails next: an
        unreadable body only loses the model (``None``), a failed ``include_usage``
        injection only sends the request as it was. The guards and the ledger are never
        skipped for a model call.
        """
        try:
            url = request.url
            path = url.path
            kind = endpoint_kind(request.method, path)
            if kind is None:
                return None
        except Exception as exc:
            _report("http.request", exc)
            return None
        try:
            provider = provider_for(url.scheme, url.host, path, kind, self.provider)
        except Exception as exc:
            _report("http.request", exc)
            provider = self.provider or "openai"
        try:
            secrets = request_secrets(request.headers, url.params.multi_items())
        except Exception as exc:
            _report("http.request", exc)
            secrets = ()
        try:
            try:
                content: bytes | None = request.content
            except self._flavour.request_not_read:  # a streamed upload: no body to read
                content = None
            tracked = read_request(kind, content, provider=provider, secrets=secrets)
        except Exception as exc:
            _report("http.request", exc)
            tracked = TrackedRequest(kind, provider, None, False, None, None, secrets)
        if self.include_usage:
            try:
                body = with_stream_usage(tracked)
                if body is not None:
                    request = self._flavour.with_body(request, body)
            except Exception as exc:
                _report("http.request", exc, model=tracked.model)
        return request, tracked

    def _start_kwargs(self, tracked: TrackedRequest) -> tuple[Tracker, dict[str, Any]] | None:
        try:
            tracker = self.tracker or get_tracker()
            guarded = tracker.has_guards
            return tracker, {
                "source": "http",
                "model": tracked.model,
                "provider": tracked.provider,
                "prompt_text": tracked.prompt_text() if guarded else None,
                "max_output_tokens": tracked.max_output_tokens,
                "choices": tracked.choices() if guarded else 1,
            }
        except Exception as exc:
            _report("http.start", exc)
            return None

    def _wrong_client(self, request: Any) -> TypeError:
        """The error for a request of another library: its client would fail on our
        response anyway (a bare ``AssertionError``), after the call was sent and recorded."""
        mine = type(self).__name__
        library = self._flavour.name
        kind = type(request)
        theirs = kind.__module__.partition(".")[0]
        message = (
            f"{mine} is for {library} clients; it was handed a request of type "
            f"{theirs}.{kind.__qualname__}"
        )
        if theirs in ("httpx", "httpx2"):
            message += f": under {theirs} use {self._counterpart}"
        return TypeError(message)

    def _watch(self, request: Any, watch: Watch) -> dict[str, Any] | None:
        """Put ``watch`` in ``request``'s ``trace`` extension (chaining the caller's); the
        extensions to put back once sent, ``None`` if it could not be set. Never raises."""
        try:
            extensions: dict[str, Any] = request.extensions
            watch.chained = extensions.get("trace")
            # A new dict, put back after: the caller's request (``response.request``) and
            # its extensions are left as they were.
            request.extensions = {**extensions, "trace": watch}
            return extensions
        except Exception as exc:
            _report("http.request", exc)
            return None

    def _failed(
        self,
        tracker: Tracker,
        call: Call,
        tracked: TrackedRequest,
        exc: BaseException,
        watch: Watch | None,
        *,
        sync: bool,
    ) -> None:
        """The transport raised: record the attempt, unless it never left this process.

        ``watch`` (for the library's own transport) says whether the request was being
        written; without it, only the errors that come before sending tell. An async
        client's reservations are given back off its event loop (``background``).
        """
        try:
            if (watch is not None and not watch.sent) or isinstance(exc, self._flavour.not_sent):
                tracker.cancel(call, background=not sync)
            else:
                tracker.finish(
                    call,
                    provider=tracked.provider,
                    status="cancelled" if _is_cancellation(exc) else "error",
                    error=exc,
                    defer=True,
                )
        except Exception as report_exc:
            _report("http.failed", report_exc)

    def _track(
        self, tracker: Tracker, call: Call, tracked: TrackedRequest, response: Any, *, sync: bool
    ) -> Any:
        """Attach usage tracking to a response (or record it now). Never raises."""
        try:
            status_code = response.status_code
            headers = response.headers
            if status_code >= 300:
                if status_code < 400:  # a redirect: the model was not called
                    tracker.cancel(call, background=not sync)
                else:
                    tracker.finish(
                        call,
                        provider=tracked.provider,
                        status="error",
                        error=f"http_{status_code}",
                        request_id=without_secrets(
                            headers.get("x-request-id") or headers.get("request-id"),
                            tracked.secrets,
                        ),
                        defer=True,
                    )
                return response
            scanner, streamed, note = _scanner_for(tracked.kind, headers, tracked.stream)
            exchange = Exchange(tracker, call, tracked, scanner, streamed=streamed, note=note)
            self._attach(exchange, response, sync=sync)
        except Exception as exc:
            _report("http.response", exc, model=tracked.model)
            tracker.finish(
                call,
                provider=tracked.provider,
                metadata={"costledger.usage_missing": f"tracking failed: {type(exc).__name__}"},
                defer=True,
            )
        return response

    def _attach(self, exchange: Exchange, response: Any, *, sync: bool) -> None:
        """Feed the response's body to ``exchange`` as it passes, ending it at the end."""
        stream = response.stream
        if isinstance(stream, self._flavour.byte_stream):
            # The body is already in memory (a mock transport): read it now.
            for chunk in stream:
                exchange.feed(chunk)
            exchange.end("exhausted")
        elif sync:
            response.stream = self._flavour.sync_stream(stream, exchange)
        else:
            response.stream = self._flavour.async_stream(stream, exchange)

    def _follow(self, response_id: str, response: Any, *, sync: bool) -> Any:
        """Watch a background response's retrieval for its terminal status. Never raises."""
        try:
            if response.status_code < 300:
                scanner, streamed, _note = _scanner_for("responses", response.headers)
                self._attach(
                    Retrieval(response_id, scanner, streamed=streamed), response, sync=sync
                )
        except Exception as exc:
            _report("http.background", exc)
        return response


def _scanner_for(
    kind: Kind, headers: Any, stream: bool = False
) -> tuple[Scanner | None, bool, str | None]:
    """The usage scanner for a response (``None`` and why, for an unknown encoding), and
    whether it is a stream (so far: a body not labelled one may still be one, see
    ``make_scanner``; ``stream``: the request asked for one)."""
    content_type = headers.get("content-type", "").lower()
    streamed = stream or content_type.startswith("text/event-stream")
    try:
        decoder = make_decoder(headers.get("content-encoding"))
    except UnsupportedEncoding as exc:
        return None, streamed, f"unsupported content encoding {exc}"
    return make_scanner(kind, content_type, decoder, stream=stream), streamed, None


class SyncTrackingBase(_TrackingBase):
    """``handle_request`` for a sync transport flavour."""

    def _handle(self, request: Any) -> Any:
        flavour = self._flavour
        if request.__class__ is not flavour.request_type and not isinstance(
            request, flavour.request_type
        ):
            raise self._wrong_client(request)
        opened = self._open(request) if request.method == "POST" else None
        if opened is None:
            if _waiting:  # a retrieval of a waiting background response?
                response_id = _follows(request.method, request.url.path)
                if response_id is not None:
                    response = self.transport.handle_request(request)
                    return self._follow(response_id, response, sync=True)
            return self.transport.handle_request(request)
        request, tracked = opened
        started = self._start_kwargs(tracked)
        if started is None:
            return self.transport.handle_request(request)
        tracker, kwargs = started
        try:
            call = tracker.start(**kwargs)
        except GuardRefusal:
            raise
        except Exception as exc:
            _report("http.start", exc)
            return self.transport.handle_request(request)
        transport = self.transport
        watch: _SendWatch | None = None
        extensions = None
        # Any transport-like object may stand here: looked up with a default.
        if getattr(type(transport), "handle_request", None) is flavour.pool_handle:
            watch = _SendWatch(None)
            extensions = self._watch(request, watch)
            if extensions is None:
                watch = None
        try:
            response = transport.handle_request(request)
        except BaseException as exc:
            self._failed(tracker, call, tracked, exc, watch, sync=True)
            raise
        finally:
            if extensions is not None:
                request.extensions = extensions
        return self._track(tracker, call, tracked, response, sync=True)


class AsyncTrackingBase(_TrackingBase):
    """``handle_async_request`` for an async transport flavour."""

    async def _handle(self, request: Any) -> Any:
        flavour = self._flavour
        if request.__class__ is not flavour.request_type and not isinstance(
            request, flavour.request_type
        ):
            raise self._wrong_client(request)
        opened = self._open(request) if request.method == "POST" else None
        if opened is None:
            if _waiting:  # a retrieval of a waiting background response?
                response_id = _follows(request.method, request.url.path)
                if response_id is not None:
                    response = await self.transport.handle_async_request(request)
                    return self._follow(response_id, response, sync=False)
            return await self.transport.handle_async_request(request)
        request, tracked = opened
        started = self._start_kwargs(tracked)
        if started is None:
            return await self.transport.handle_async_request(request)
        tracker, kwargs = started
        try:
            call = await tracker.astart(**kwargs)
        except GuardRefusal:
            raise
        except Exception as exc:
            _report("http.start", exc)
            return await self.transport.handle_async_request(request)
        transport = self.transport
        watch: _AsyncSendWatch | None = None
        extensions = None
        if getattr(type(transport), "handle_async_request", None) is flavour.pool_ahandle:
            watch = _AsyncSendWatch(None)
            extensions = self._watch(request, watch)
            if extensions is None:
                watch = None
        try:
            response = await transport.handle_async_request(request)
        except BaseException as exc:
            self._failed(tracker, call, tracked, exc, watch, sync=False)
            raise
        finally:
            if extensions is not None:
                request.extensions = extensions
        return self._track(tracker, call, tracked, response, sync=False)
