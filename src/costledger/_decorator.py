"""``@track_cost``: track any function that returns (or streams) a provider response."""

from __future__ import annotations

import functools
import inspect
import sys
from asyncio import CancelledError
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from decimal import Decimal
from typing import Any, TypeVar, overload

from ._attribution import EMPTY, Attribution, current_attribution
from ._events import CallStatus
from ._extract import read_response
from ._tracker import Call, Tracker, _report, get_tracker
from ._usage import Usage

__all__ = ["track_cost"]

F = TypeVar("F", bound=Callable[..., Any])

_USAGE_KEYS = ("usage", "usage_metadata", "usageMetadata")


def _carries_usage(chunk: Any) -> bool:
    """Cheap test for "this stream item has a usage part" (the final chunk, usually)."""
    if isinstance(chunk, Mapping):
        return any(chunk.get(k) is not None for k in _USAGE_KEYS)
    return any(getattr(chunk, k, None) is not None for k in _USAGE_KEYS)


def _usage_part(read: Any, provider: str | None) -> Any:
    """What a stream keeps of ``usage=``'s answer for one chunk: the answer if it gives usage
    (a ``Usage`` with tokens, a payload with a usage part, a bare usage part), else ``None``.

    Raises when the answer is neither empty nor readable (the caller notes why)."""
    if read is None:
        return None
    if isinstance(read, Usage):
        return read if read.total_tokens else None
    if _carries_usage(read):
        return read
    if isinstance(read, Mapping):
        if any(k in read for k in _USAGE_KEYS):
            return None  # a chunk whose usage part is empty: most chunks of a stream
    elif any(hasattr(read, k) for k in _USAGE_KEYS):
        return None
    read_response(read, provider)  # a bare usage part, or a UsageError saying why not
    return read


class _Spec:
    """The decorator's fixed arguments, resolved once at decoration time."""

    __slots__ = (
        "attribution",
        "attribution_fn",
        "estimate",
        "model",
        "provider",
        "static_kwargs",
        "tracker",
        "usage_fn",
    )

    def __init__(
        self,
        model: str | None,
        provider: str | None,
        tracker: Tracker | None,
        usage_fn: Callable[[Any], Usage | Any] | None,
        estimate: Decimal | Callable[..., Decimal] | None,
        attribution_fn: Callable[..., Mapping[str, Any]] | None,
        static_attribution: Mapping[str, Any],
    ) -> None:
        self.model = model
        self.provider = provider
        self.tracker = tracker
        self.usage_fn = usage_fn
        self.estimate = estimate
        self.attribution_fn = attribution_fn
        self.attribution = Attribution.from_mapping(static_attribution)
        # Nothing depends on the call's arguments: one dict serves every call
        # (``Tracker.start(**kwargs)`` unpacks it, never keeps or changes it).
        self.static_kwargs: dict[str, Any] | None = None
        if attribution_fn is None and not callable(estimate):
            self.static_kwargs = self.start_kwargs((), {})

    def start_kwargs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.static_kwargs is not None:
            return self.static_kwargs
        # The host's callables: one that fails is reported and the call still runs and is
        # recorded, with the static attribution / without an estimate.
        attribution = self.attribution
        if self.attribution_fn is not None:
            try:
                attribution = attribution.merge(
                    Attribution.from_mapping(self.attribution_fn(*args, **kwargs) or {})
                )
            except Exception as exc:
                _report("decorator.attribution", exc, model=self.model)
        estimate = self.estimate
        if callable(estimate):
            try:
                estimate = estimate(*args, **kwargs)
            except Exception as exc:
                _report("decorator.estimate", exc, model=self.model)
                estimate = None
        return {
            "source": "decorator",
            "model": self.model,
            "provider": self.provider,
            "attribution": attribution,
            "estimate": estimate,
        }

    def stream_start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """``start_kwargs`` for a generator, taken when it is called: the attribution scope
        in force then is kept for the call, which opens at the first iteration."""
        start = self.start_kwargs(args, kwargs)
        scope = current_attribution()
        if scope is EMPTY:
            return start
        return {**start, "attribution": scope.merge(start["attribution"])}

    def finish(self, tracker: Tracker, call: Call, result: Any) -> None:
        if self.usage_fn is not None:
            try:
                read = self.usage_fn(result)
            except Exception as exc:
                tracker.finish(call, status="ok", metadata=_failed(_why(exc)), defer=True)
                return
            if isinstance(read, Usage):
                tracker.finish(call, usage=read, provider=self.provider, defer=True)
                return
            result = read
        # Deferred: the usage is read here, pricing and storage leave the host's path.
        tracker.finish(call, payload=result, provider=self.provider, defer=True)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _failed(why: str) -> dict[str, Any]:
    return {"costledger.usage_error": why}


def _status_of(exc: BaseException) -> CallStatus:
    # A consumer that stops early (break, close, task cancellation) cancelled the call.
    if isinstance(exc, (GeneratorExit, KeyboardInterrupt, CancelledError)):
        return "cancelled"
    return "error"


@overload
def track_cost(func: F, /) -> F: ...


@overload
def track_cost(
    func: None = None,
    /,
    *,
    model: str | None = None,
    provider: str | None = None,
    tracker: Tracker | None = None,
    usage: Callable[[Any], Usage | Any] | None = None,
    estimate: Decimal | Callable[..., Decimal] | None = None,
    attribution: Callable[..., Mapping[str, Any]] | None = None,
    **static_attribution: Any,
) -> Callable[[F], F]: ...


def track_cost(
    func: F | None = None,
    /,
    *,
    model: str | None = None,
    provider: str | None = None,
    tracker: Tracker | None = None,
    usage: Callable[[Any], Usage | Any] | None = None,
    estimate: Decimal | Callable[..., Decimal] | None = None,
    attribution: Callable[..., Mapping[str, Any]] | None = None,
    **static_attribution: Any,
) -> F | Callable[[F], F]:
    """Track the cost of each call of a function that returns a provider response.

    Works on sync and async functions, generators and async generators (a stream
    is recorded once, when it ends, from the last item that carries usage), methods,
    classmethods and staticmethods (above or below ``@classmethod`` /
    ``@staticmethod``). Usage is read from the return value by ``extract_usage``
    unless ``usage=`` (a callable of the result returning a ``Usage`` or a payload)
    is given; for a stream it is applied to each item. ``model=`` names the
    requested model; otherwise the response's model is used. Attribution comes from
    keyword arguments (``user=``, ``feature=``, ``tags=`` ...) and/or
    ``attribution=``, a callable of the call's arguments. ``estimate=`` (money, or a
    callable of the call's arguments) is what budgets reserve before the call, since
    the decorator cannot see the request. An ``attribution=`` or ``estimate=``
    callable that raises is reported and ignored; the call still runs.

    A generator's attribution (the ``attribute`` scope, the callables) is taken when
    the function is called; its call opens at the first iteration (guards run then,
    latency counts from then). ``send``/``throw``/``close`` and the return value are
    forwarded as by ``yield from``. The decorated function returns the generator.

    Guards run before the call and may raise ``BudgetExceeded`` / ``RateLimited``;
    the function's own exceptions are re-raised unchanged and recorded as errors.
    """
    spec = _Spec(model, provider, tracker, usage, estimate, attribution, static_attribution)

    def decorate(fn: F) -> F:
        if isinstance(fn, (classmethod, staticmethod)):
            # above @classmethod / @staticmethod: wrap the function, keep the descriptor
            return type(fn)(decorate(fn.__func__))  # type: ignore[arg-type]
        if inspect.isasyncgenfunction(fn):
            return _wrap_async_gen(fn, spec)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(fn):
            return _wrap_gen(fn, spec)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):
            return _wrap_async(fn, spec)  # type: ignore[return-value]
        return _wrap_sync(fn, spec)  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _wrap_sync(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracker = spec.tracker or get_tracker()
        call = tracker.start(**spec.start_kwargs(args, kwargs))
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            tracker.finish(call, status=_status_of(exc), error=exc, defer=True)
            raise
        spec.finish(tracker, call, result)
        return result

    return wrapper


def _wrap_async(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracker = spec.tracker or get_tracker()
        call = await tracker.astart(**spec.start_kwargs(args, kwargs))
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            tracker.finish(call, status=_status_of(exc), error=exc, defer=True)
            raise
        spec.finish(tracker, call, result)
        return result

    return wrapper


# Generators. Calling the function fixes what the call is for (tracker, attribution scope,
# the spec's callables of the arguments); the call opens at the first iteration, when the
# work starts, so the latency runs from the first item asked for to the end of the stream,
# and a generator never iterated records nothing. The wrapper drives the generator by hand,
# forwarding send/throw/close as ``yield from`` does, to see each item on its way out.
# (The decorated function is a plain function that returns the generator.)


def _wrap_gen(
    fn: Callable[..., Generator[Any, Any, Any]], spec: _Spec
) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        tracker = spec.tracker or get_tracker()
        return _tracked_gen(fn(*args, **kwargs), spec, tracker, spec.stream_start(args, kwargs))

    return wrapper


def _tracked_gen(
    gen: Generator[Any, Any, Any], spec: _Spec, tracker: Tracker, start: dict[str, Any]
) -> Generator[Any, Any, Any]:
    call = tracker.start(**start)
    seen = _StreamUsage(spec)
    sent: Any = None
    thrown: BaseException | None = None
    send = gen.send
    try:
        while True:
            try:
                chunk = send(sent) if thrown is None else gen.throw(thrown)
            except StopIteration as stop:
                result = stop.value
                break
            thrown = None
            seen.see(chunk)
            try:
                sent = yield chunk
            except GeneratorExit:
                gen.close()
                raise
            except BaseException as exc:
                thrown = exc
    except BaseException as exc:
        seen.finish(tracker, call, exc)
        raise
    seen.finish(tracker, call, None)
    return result


def _wrap_async_gen(
    fn: Callable[..., AsyncGenerator[Any, Any]], spec: _Spec
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        tracker = spec.tracker or get_tracker()
        return _tracked_agen(fn(*args, **kwargs), spec, tracker, spec.stream_start(args, kwargs))

    return wrapper


async def _tracked_agen(
    agen: AsyncGenerator[Any, Any], spec: _Spec, tracker: Tracker, start: dict[str, Any]
) -> AsyncGenerator[Any, Any]:
    call = await tracker.astart(**start)
    seen = _StreamUsage(spec)
    sent: Any = None
    thrown: BaseException | None = None
    asend = agen.asend
    try:
        while True:
            try:
                chunk = await (asend(sent) if thrown is None else agen.athrow(thrown))
            except StopAsyncIteration:
                break
            thrown = None
            seen.see(chunk)
            try:
                sent = yield chunk
            except GeneratorExit:
                await agen.aclose()
                raise
            except BaseException as exc:
                thrown = exc
    except BaseException as exc:
        seen.finish(tracker, call, exc)
        raise
    seen.finish(tracker, call, None)


class _StreamUsage:
    """What a tracked stream has shown of its usage so far, and the call's end from it.

    ``last``: the last chunk (or ``usage=`` answer) that gave usage; ``missed``: why
    ``usage=`` gave none for a chunk, the last time it failed.
    """

    __slots__ = ("last", "missed", "spec")

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.last: Any = None
        self.missed: str | None = None

    def see(self, chunk: Any) -> None:
        usage_fn = self.spec.usage_fn
        if usage_fn is None:
            if _carries_usage(chunk):
                self.last = chunk
            return
        try:
            part = _usage_part(usage_fn(chunk), self.spec.provider)
        except Exception as exc:
            self.missed = _why(exc)
        else:
            if part is not None:
                self.last = part

    def finish(self, tracker: Tracker, call: Call, exc: BaseException | None) -> None:
        if sys.is_finalizing():
            # A generator left suspended is closed as the interpreter shuts down, after
            # the exit-time drain: nothing can store it now.
            return
        # Usage seen before a stop (error, close, cancel) still cost money: it is recorded
        # from the last chunk that carried it (and the call without usage if that chunk
        # is bad).
        status: CallStatus = "ok" if exc is None else _status_of(exc)
        last = self.last
        if last is None:
            metadata = None
            if self.missed is not None:
                metadata = _failed(self.missed)
            elif exc is None:
                metadata = _failed("no usage")
            tracker.finish(
                call, status=status, error=exc, streamed=True, metadata=metadata, defer=True
            )
            return
        usage, payload = (last, None) if isinstance(last, Usage) else (None, last)
        tracker.finish(
            call,
            usage=usage,
            payload=payload,
            provider=self.spec.provider,
            status=status,
            error=exc,
            streamed=True,
            defer=True,
        )
