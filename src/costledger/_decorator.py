"""``@track_cost``: track any function that returns (or streams) a provider response."""

from __future__ import annotations

import functools
import inspect
from asyncio import CancelledError
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, TypeVar, overload

from ._attribution import Attribution
from ._events import CallStatus
from ._tracker import Call, Tracker, get_tracker
from ._usage import Usage

__all__ = ["track_cost"]

F = TypeVar("F", bound=Callable[..., Any])

_USAGE_KEYS = ("usage", "usage_metadata", "usageMetadata")


def _carries_usage(chunk: Any) -> bool:
    """Cheap test for "this stream item has a usage part" (the final chunk, usually)."""
    if isinstance(chunk, Mapping):
        return any(chunk.get(k) is not None for k in _USAGE_KEYS)
    return any(getattr(chunk, k, None) is not None for k in _USAGE_KEYS)


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
        attribution = self.attribution
        if self.attribution_fn is not None:
            attribution = attribution.merge(
                Attribution.from_mapping(self.attribution_fn(*args, **kwargs) or {})
            )
        estimate = self.estimate
        if callable(estimate):
            estimate = estimate(*args, **kwargs)
        return {
            "source": "decorator",
            "model": self.model,
            "provider": self.provider,
            "attribution": attribution,
            "estimate": estimate,
        }

    def finish(self, tracker: Tracker, call: Call, result: Any, *, streamed: bool = False) -> None:
        if self.usage_fn is not None:
            try:
                read = self.usage_fn(result)
            except Exception as exc:
                tracker.finish(
                    call, status="ok", streamed=streamed, metadata=_failed(exc), defer=True
                )
                return
            if isinstance(read, Usage):
                tracker.finish(
                    call, usage=read, provider=self.provider, streamed=streamed, defer=True
                )
                return
            result = read
        # Deferred: the usage is read here, pricing and storage leave the host's path.
        tracker.finish(call, payload=result, provider=self.provider, streamed=streamed, defer=True)


def _failed(exc: BaseException) -> dict[str, Any]:
    return {"costledger.usage_error": f"{type(exc).__name__}: {exc}"}


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
    is recorded once, when it ends, from the last item that carries usage), and
    methods. Usage is read from the return value by ``extract_usage`` unless
    ``usage=`` (a callable of the result returning a ``Usage`` or a payload) is
    given. ``model=`` names the requested model; otherwise the response's model is
    used. Attribution comes from keyword arguments (``user=``, ``feature=``,
    ``tags=`` ...) and/or ``attribution=``, a callable of the call's arguments.
    ``estimate=`` (money, or a callable of the call's arguments) is what budgets
    reserve before the call, since the decorator cannot see the request.

    Guards run before the call and may raise ``BudgetExceeded`` / ``RateLimited``;
    the function's own exceptions are re-raised unchanged and recorded as errors.
    """
    spec = _Spec(model, provider, tracker, usage, estimate, attribution, static_attribution)

    def decorate(fn: F) -> F:
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


def _wrap_gen(fn: Callable[..., Iterator[Any]], spec: _Spec) -> Callable[..., Iterator[Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        tracker = spec.tracker or get_tracker()
        call = tracker.start(**spec.start_kwargs(args, kwargs))
        last_with_usage: Any = None
        try:
            for chunk in fn(*args, **kwargs):
                if _carries_usage(chunk):
                    last_with_usage = chunk
                yield chunk
        except BaseException as exc:
            _finish_stream(spec, tracker, call, last_with_usage, exc)
            raise
        _finish_stream(spec, tracker, call, last_with_usage, None)

    return wrapper


def _wrap_async_gen(
    fn: Callable[..., AsyncIterator[Any]], spec: _Spec
) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        tracker = spec.tracker or get_tracker()
        call = await tracker.astart(**spec.start_kwargs(args, kwargs))
        last_with_usage: Any = None
        try:
            async for chunk in fn(*args, **kwargs):
                if _carries_usage(chunk):
                    last_with_usage = chunk
                yield chunk
        except BaseException as exc:
            _finish_stream(spec, tracker, call, last_with_usage, exc)
            raise
        _finish_stream(spec, tracker, call, last_with_usage, None)

    return wrapper


def _finish_stream(
    spec: _Spec, tracker: Tracker, call: Call, last: Any, exc: BaseException | None
) -> None:
    if exc is None:
        if last is None:
            tracker.finish(
                call, streamed=True, metadata={"costledger.usage_error": "no usage"}, defer=True
            )
        else:
            spec.finish(tracker, call, last, streamed=True)
        return
    # Usage seen before the stop still cost money: the Tracker reads it from the last
    # chunk that carried it (and records the call without usage if that chunk is bad).
    tracker.finish(
        call,
        payload=last,
        provider=spec.provider,
        status=_status_of(exc),
        error=exc,
        streamed=True,
        defer=True,
    )
