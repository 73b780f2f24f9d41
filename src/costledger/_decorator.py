"""``@track_cost``: track any function that returns (or streams) a provider response."""

from __future__ import annotations

import functools
import gc
import inspect
import json
import os
import sys
import weakref
from asyncio import CancelledError
from collections import OrderedDict
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
)
from decimal import Decimal
from types import AsyncGeneratorType, GeneratorType
from typing import Any, Final, TypeVar, overload

from ._attribution import EMPTY, Attribution, check_attribution_keywords, current_attribution
from ._events import CallStatus, event_text, short_repr
from ._extract import read_response
from ._streams import StreamUsage, ends_stream
from ._tracker import (
    Call,
    Tracker,
    _report,
    before_exit,
    check_tracker,
    defer_nowait,
    get_tracker,
)
from ._usage import Usage

__all__ = ["track_cost"]

F = TypeVar("F", bound=Callable[..., Any])

_USAGE_KEYS = ("usage", "usage_metadata", "usageMetadata")

# What a function returned, by its class: a response (read at once), or something the
# call goes on in: an awaitable (the call ends when it is awaited) or a stream (when it
# ends). Classified once per class, so the common case costs one dict look-up.
_RESPONSE: Final = 0
_AWAITABLE: Final = 1
_GENERATOR: Final = 2
_ASYNC_GENERATOR: Final = 3
_ITERATOR: Final = 4  # an SDK's Stream
_ASYNC_ITERATOR: Final = 5  # an SDK's AsyncStream
_FUTURE: Final = 6  # an asyncio Future or Task: handed back as it is, the call ends with it
_DUAL_ITERATOR: Final = 7  # a stream iterated either way (LiteLLM's CustomStreamWrapper)
_STREAM_MANAGER: Final = 8  # an SDK's ``with client.messages.stream(...) as stream``
_ASYNC_STREAM_MANAGER: Final = 9  # its ``async with`` twin
_RAW_RESPONSE: Final = 10  # an SDK's raw response (``with_raw_response``): read by ``parse()``
_RESULT_KINDS: Final[dict[type, int]] = {
    dict: _RESPONSE,
    type(None): _RESPONSE,
    list: _RESPONSE,
    str: _RESPONSE,
    Usage: _RESPONSE,
}
_result_kind = _RESULT_KINDS.get

# An iterator is a stream only if it looks like an LLM SDK's, by its class (the SDKs are
# never imported): the Stainless SDKs' (OpenAI, Anthropic, Groq, Together...) ``Stream`` /
# ``AsyncStream`` and their helpers' streams, Mistral's ``EventStream``, LiteLLM's
# ``CustomStreamWrapper``; or a class with a Stainless stream's own method. Any other
# iterator (a file, ``iter(list)``, a CSV reader) is a response like any other value.
_STREAM_CLASS_NAMES: Final = frozenset(
    {
        "Stream",
        "AsyncStream",
        "CustomStreamWrapper",
        "MessageStream",
        "AsyncMessageStream",
        "BetaMessageStream",
        "BetaAsyncMessageStream",
        "ChatCompletionStream",
        "AsyncChatCompletionStream",
        "ResponseStream",
        "AsyncResponseStream",
        "EventStream",
        "EventStreamAsync",
    }
)
_STREAM_METHODS: Final = ("__stream__",)

# What the SDKs' stream helpers return (``client.messages.stream(...)``,
# ``client.chat.completions.stream(...)``, ``client.responses.stream(...)``): a context
# manager whose ``__enter__`` sends the request and gives the helper's stream; and what
# ``with_streaming_response`` returns, whose ``__enter__`` gives a raw response whose body
# is not read yet.
_STREAM_MANAGER_NAMES: Final = frozenset(
    {
        "MessageStreamManager",
        "AsyncMessageStreamManager",
        "BetaMessageStreamManager",
        "BetaAsyncMessageStreamManager",
        "ChatCompletionStreamManager",
        "AsyncChatCompletionStreamManager",
        "ResponseStreamManager",
        "AsyncResponseStreamManager",
        # ``client.x.with_streaming_response.create(...)``: gives a raw response
        "ResponseContextManager",
        "AsyncResponseContextManager",
    }
)


def _stream_manager_kind(cls: type) -> int:
    """``_STREAM_MANAGER`` / ``_ASYNC_STREAM_MANAGER`` for an SDK's stream manager, else 0."""
    if not any(
        c.__name__ in _STREAM_MANAGER_NAMES
        and c.__module__.partition(".")[0] not in sys.stdlib_module_names
        for c in cls.__mro__
    ):
        return 0
    if hasattr(cls, "__aenter__") and hasattr(cls, "__aexit__"):
        return _ASYNC_STREAM_MANAGER
    if hasattr(cls, "__enter__") and hasattr(cls, "__exit__"):
        return _STREAM_MANAGER
    return 0


def _looks_like_sdk_stream(cls: type) -> bool:
    for c in cls.__mro__:
        if c.__name__ in _STREAM_CLASS_NAMES:
            root = c.__module__.partition(".")[0]
            if root not in sys.stdlib_module_names:
                return True
    return any(hasattr(cls, name) for name in _STREAM_METHODS)


def _is_raw_response(cls: type) -> bool:
    """An SDK's raw response (``client.x.with_raw_response.create(...)``: OpenAI's
    ``LegacyAPIResponse``, Anthropic's ``APIResponse``): a ``parse()`` method and an
    ``http_response`` declared by the class (the Stainless SDKs), no SDK imported."""
    if not callable(getattr(cls, "parse", None)):
        return False
    for c in cls.__mro__:
        if c.__module__.partition(".")[0] in sys.stdlib_module_names:
            continue
        if "http_response" in inspect.get_annotations(c):
            return True
    return False


def _classify(cls: type) -> int:
    if issubclass(cls, (Mapping, str, bytes, bytearray, int, float, list, tuple, Usage)) or (
        getattr(cls, "__pydantic_fields__", None) is not None
        or any(c.__module__ == "unittest.mock" for c in cls.__mro__)  # a test double
    ):
        return _RESPONSE
    if issubclass(cls, GeneratorType):
        return _GENERATOR
    if issubclass(cls, AsyncGeneratorType):
        return _ASYNC_GENERATOR
    if getattr(cls, "_asyncio_future_blocking", None) is not None and hasattr(
        cls, "add_done_callback"
    ):
        return _FUTURE
    if hasattr(cls, "__await__"):
        return _AWAITABLE
    if _is_raw_response(cls):
        return _RAW_RESPONSE
    is_async = hasattr(cls, "__anext__") and hasattr(cls, "__aiter__")
    is_sync = hasattr(cls, "__next__") and hasattr(cls, "__iter__")
    if not (is_async or is_sync):
        return _stream_manager_kind(cls)  # _RESPONSE (0) if it is none
    if not _looks_like_sdk_stream(cls):
        return _RESPONSE
    if is_async and is_sync:
        return _DUAL_ITERATOR
    return _ASYNC_ITERATOR if is_async else _ITERATOR


def _kind_of(result: Any) -> int:
    """``result``'s kind, cached per class. (The decorator's own call paths inline these
    two lines: a function call less on every decorated call.)"""
    kind = _result_kind(type(result))
    return _kind_of_result(type(result)) if kind is None else kind


def _kind_of_result(cls: type) -> int:
    """Whether a function's result is a response or something the call goes on in.

    A stream is a generator, an async generator, or an iterator that looks like an LLM
    SDK's stream (``_looks_like_sdk_stream``). Containers (a list, a dict, a pydantic
    model such as a LangChain message) and other iterators (a file) are responses.
    """
    try:
        kind = _classify(cls)
    except Exception as exc:  # a class that fails these checks: read as a response
        _report("decorator.result", exc)
        kind = _RESPONSE
    if len(_RESULT_KINDS) < 1024:  # bounded, in case classes are made on the fly
        _RESULT_KINDS[cls] = kind
    return kind


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
        estimate: Estimate,
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
        if result is None:  # as a stream that carried no usage
            tracker.finish(call, metadata=_failed("no usage"), defer=True)
            return
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


# Endings that run from a finalizer: a tracked generator the cyclic GC closes, the
# ``weakref.finalize`` of a stream, manager or awaitable never used. The GC runs on whatever
# thread allocates, wherever it is, possibly inside one of costledger's own non-reentrant
# locks (a guard store's while it reserves, a ledger's while it stores): an ending that took
# such a lock there would wait on its own thread forever. So these only queue their work
# (a deque append, no lock) for the background worker. ``_in_gc``: a GC pass is running, told
# by ``gc.callbacks`` (an explicit ``close()`` or a ``for`` loop's ``break`` is not one, and
# ends the call on the spot as before: a durable ledger stores it before ``close()``
# returns). The callback is ``OrderedDict.move_to_end``, called as ``(phase, info)``: it moves
# the phase's key last (``info``, a non-empty dict, is its ``last=True``). A C function on
# purpose: Python code there would run pending signal handlers, and what a GC callback
# raises (a Ctrl-C's KeyboardInterrupt) is printed and lost. It cannot tell the collecting
# thread: another thread a finalizer lets run meanwhile defers its endings too (harmless).
_gc_phases: OrderedDict[str, None] = OrderedDict(start=None, stop=None)
gc.callbacks.append(_gc_phases.move_to_end)  # type: ignore[arg-type]  # info is its last=


def _in_gc() -> bool:
    return next(reversed(_gc_phases)) == "start"


# The tracked streams, managers and awaitables whose call may still be open, by ``id`` of
# their ``_Seen``: (seen, tracker, call, kind). A generator is here from its first step to
# its end, a returned object from ``_goes_on`` to its collection (its finalizer forgets it):
# each entry lives no longer than what it tracks. At exit the ones still open are finished
# (``_finish_open_at_exit``) before costledger's exit drain stores the queued calls: left to
# the interpreter's shutdown, they would be closed after every ledger is, and lost.
_open: dict[int, tuple[_Seen, Tracker, Call, int]] = {}


def _finish_open_at_exit() -> None:
    """A stream left open when the program ends (a generator half read, held by a global)
    is recorded ``cancelled`` with the usage it showed (``ok`` if its last event was seen);
    one never used as ``_never_used`` records it. Never raises."""
    for seen, tracker, call, kind in list(_open.values()):
        if call.finished:
            continue
        try:
            if not seen.started:
                _never_used(seen, tracker, call, kind)
            elif kind == _AWAITABLE:  # awaited, not done (its event loop is gone)
                tracker.finish(call, status="cancelled", defer=True)
            else:
                seen.finish(tracker, call, GeneratorExit())
        except Exception as exc:
            _report("decorator.exit", exc, model=seen.spec.model)


# Run by the tracker's exit drain before it finishes the queued calls: at the process's
# exit (atexit) and at a ``multiprocessing`` child's, which skips atexit (``os._exit``).
before_exit(_finish_open_at_exit)
# A forked child holds copies of the parent's open streams: they are the parent's to record.
os.register_at_fork(after_in_child=_open.clear)


#: ``estimate=``: money (a ``Decimal``, an ``int`` or a decimal string, never a float), or a
#: callable of the call's arguments giving it.
Estimate = Decimal | int | str | Callable[..., Decimal | int | str] | None

# track_cost's own keywords: one close to these (``traker=``) is a slip, not metadata.
_PARAMETERS: Final = ("model", "provider", "tracker", "usage", "estimate", "attribution")


def _checked_arguments(
    func: Any,
    model: Any,
    provider: Any,
    tracker: Any,
    usage: Any,
    estimate: Any,
    attribution: Any,
    static_attribution: Mapping[str, Any],
) -> tuple[str | None, str | None, Any]:
    """``track_cost``'s arguments checked where it decorates, in the host's own code: one
    written wrong raises there, naming it, instead of failing (or being ignored) on every
    call. Returns the model and provider as text and the estimate as a ``Decimal`` (or the
    callable)."""
    if (
        func is not None
        and not callable(func)
        and not isinstance(func, (classmethod, staticmethod))
    ):
        raise TypeError(
            "track_cost() takes the function to decorate as its only positional argument, "
            f"got {type(func).__name__} {short_repr(func)} (use keywords: model=..., tracker=...)"
        )
    check_attribution_keywords("track_cost", static_attribution, _PARAMETERS)
    check_tracker("track_cost()", tracker)
    for name, value in (("usage", usage), ("attribution", attribution)):
        if value is not None and not callable(value):
            raise TypeError(
                f"track_cost() {name} must be a callable or None, got "
                f"{type(value).__name__} {short_repr(value)}"
                + (
                    " (static attribution goes in keywords: user=..., feature=...)"
                    if name == "attribution"
                    else ""
                )
            )
    if estimate is not None and not callable(estimate):
        if not isinstance(estimate, (Decimal, int, str, float)):
            raise TypeError(
                "track_cost() estimate must be a Decimal, an int, a decimal string or a "
                f"callable, got {type(estimate).__name__} {short_repr(estimate)}"
            )
        from ._guards._estimate import check_estimate

        estimate = check_estimate(estimate)  # a float: the ValueError start() raises
    texts = []
    for name, value in (("model", model), ("provider", provider)):
        try:
            texts.append(event_text(name, value))
        except TypeError as exc:
            raise TypeError(f"track_cost() {exc}") from None
    return texts[0], texts[1], estimate


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
    estimate: Estimate = None,
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
    estimate: Estimate = None,
    attribution: Callable[..., Mapping[str, Any]] | None = None,
    **static_attribution: Any,
) -> F | Callable[[F], F]:
    """Track the cost of each call of a function that returns a provider response.

    Works on sync and async functions, generators and async generators (a stream
    is recorded once, when it ends, from the usage its items carried, added up as
    their provider spreads it: see ``costledger._streams``; a stream of several billed
    responses counts each, added into the call's event where their price is linear, else
    one event each: see ``_Seen._finish_several``), methods, classmethods and
    staticmethods (above or below ``@classmethod`` / ``@staticmethod``). A function
    that returns a stream (a generator, an SDK's ``Stream`` / ``AsyncStream``, LiteLLM's
    ``CustomStreamWrapper``; any other iterator is a response), an SDK's stream manager
    (``client.messages.stream(...)``: the stream it gives on ``with`` is tracked) or an
    awaitable (an async client's coroutine) is recorded when that ends or is awaited.
    Usage is read from the return value by ``extract_usage``
    unless ``usage=`` (a callable of the result returning a ``Usage`` or a payload)
    is given; for a stream it is applied to each item. ``model=`` names the
    requested model; otherwise the response's model is used. Attribution comes from
    keyword arguments (``user=``, ``feature=``, ``tags=`` ...) and/or
    ``attribution=``, a callable of the call's arguments. ``estimate=`` (money, or a
    callable of the call's arguments) is what budgets reserve before the call, since
    the decorator cannot see the request: a ``Decimal``, an ``int`` or a decimal string
    (never a float). An ``attribution=`` or ``estimate=`` callable that raises is
    reported and ignored; the call still runs.

    The arguments are checked here, when it decorates: a ``tracker`` that is not a
    ``Tracker``, a ``usage`` or ``attribution`` that is not callable, a keyword close to
    one of these parameters (``traker=``, ``modle=``: the rest are attribution metadata)
    or a ``model`` / ``provider`` without a text is a ``TypeError``; an estimate that is not
    money (a float) a ``ValueError``.

    A generator's attribution (the ``attribute`` scope, the callables) is taken when
    the function is called; its call opens at the first iteration (guards run then,
    latency counts from then). ``send``/``throw``/``close`` and the return value are
    forwarded as by ``yield from``. The decorated function returns the generator.

    Guards run before the call and may raise ``BudgetExceeded`` / ``RateLimited``;
    the function's own exceptions are re-raised unchanged and recorded as errors.
    """
    model, provider, estimate = _checked_arguments(
        func, model, provider, tracker, usage, estimate, attribution, static_attribution
    )
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
        kind = _result_kind(type(result))
        if kind is None:
            kind = _kind_of_result(type(result))
        if kind:  # a stream or an awaitable: the call ends with it
            return _goes_on(kind, result, spec, tracker, call)
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
        kind = _result_kind(type(result))
        if kind is None:
            kind = _kind_of_result(type(result))
        if kind == _RAW_RESPONSE:
            await _araw_response(result, spec, tracker, call)
            return result
        if kind:  # e.g. ``return await client.chat.completions.create(stream=True)``
            return _goes_on(kind, result, spec, tracker, call)
        spec.finish(tracker, call, result)
        return result

    return wrapper


# A function that returns what its call goes on in (a plain ``def`` returning the SDK's
# ``Stream`` or, from an async client, its coroutine): the call, opened before the
# function ran (guards, latency), ends when that ends. The stream is tracked by the same
# generator as a decorated generator function's; an object that is not a generator is
# handed back behind a thin proxy (its attributes, ``close()`` and ``with`` still work),
# an awaitable behind a coroutine object that awaits it. One never iterated (or awaited)
# ends as cancelled when it is collected.


def _goes_on(kind: int, result: Any, spec: _Spec, tracker: Tracker, call: Call) -> Any:
    try:
        if kind == _FUTURE:
            result.add_done_callback(functools.partial(_future_done, spec, tracker, call))
            return result
        if kind == _RAW_RESPONSE:
            _raw_read(result, spec, tracker, call)
            return result
        seen = _Seen(spec)
        out: Any
        if kind == _AWAITABLE:
            out = _Awaiting(result, spec, seen, tracker, call)
        elif kind == _GENERATOR:
            out = _tracked_gen(result, spec, tracker, None, call, seen)
        elif kind == _ASYNC_GENERATOR:
            out = _tracked_agen(result, spec, tracker, None, call, seen)
        elif kind == _ITERATOR:
            out = _TrackedStream(result, seen, tracker, call)
        elif kind == _ASYNC_ITERATOR:
            out = _TrackedAsyncStream(result, seen, tracker, call)
        elif kind == _STREAM_MANAGER:
            out = _TrackedManager(result, seen, tracker, call)
        elif kind == _ASYNC_STREAM_MANAGER:
            out = _TrackedAsyncManager(result, seen, tracker, call)
        else:
            out = _TrackedDualStream(result, seen, tracker, call)
        unused = weakref.finalize(out, _dropped, seen, tracker, call, kind)
        unused.atexit = False  # the exit hook finishes it (_finish_open_at_exit)
        _open[id(seen)] = (seen, tracker, call, kind)
        if isinstance(out, (_Proxy, _Manager)):
            out._unused = unused
    except Exception as exc:  # a bug of ours: the host gets its result unchanged
        _report("decorator.result", exc, model=spec.model)
        spec.finish(tracker, call, result)
        return result
    return out


def _raw_body(raw: Any) -> Any:
    """What an SDK's raw response parses to (its body, or the stream for ``stream=True``).

    ``parse()`` caches what it returns (the caller's own ``parse()`` gets the same object,
    parsed once) and only reads a body already read, or reads it into the response, where
    the caller's ``read()`` / ``json()`` still find it. An async ``parse()`` (Anthropic's
    ``AsyncAPIResponse``) cannot be awaited here: the body, already read for a response
    that is not a stream, is read as JSON instead (``_araw_body`` awaits it).
    """
    parse = raw.parse
    if not inspect.iscoroutinefunction(parse):
        return parse()
    return json.loads(raw.http_response.content)


async def _araw_body(raw: Any) -> Any:
    parse = raw.parse
    if inspect.iscoroutinefunction(parse):
        return await parse()
    return parse()


def _raw_read(raw: Any, spec: _Spec, tracker: Tracker, call: Call) -> Any:
    """End the call of a raw response by its ``parse()`` (``_raw_response``). Never raises."""
    try:
        body = _raw_body(raw)
    except Exception as exc:
        _raw_unreadable(exc, raw, spec, tracker, call)
        return None
    return _raw_response(raw, body, spec, tracker, call)


async def _araw_response(raw: Any, spec: _Spec, tracker: Tracker, call: Call) -> Any:
    """``_raw_read``, an async ``parse()`` awaited. Never raises."""
    try:
        body = await _araw_body(raw)
    except Exception as exc:
        _raw_unreadable(exc, raw, spec, tracker, call)
        return None
    return _raw_response(raw, body, spec, tracker, call)


def _raw_is_stream(raw: Any) -> bool:
    """Whether a raw response is a stream (``stream=True``): its ``parse()`` then gives the
    stream without reading the body (the Stainless SDKs' ``_is_sse_stream``, or else an
    event-stream content type)."""
    flag = getattr(raw, "_is_sse_stream", None)
    if isinstance(flag, bool):
        return flag
    return "text/event-stream" in str(raw.http_response.headers.get("content-type", ""))


def _body_read(http_response: Any) -> bool:
    """Whether a response's body was read into it (``read()``, ``parse()``, ``json()``):
    httpx's ``content`` raises until it is."""
    try:
        http_response.content  # noqa: B018
    except Exception:
        return False
    return True


def _raw_unfinished(
    spec: _Spec, tracker: Tracker, call: Call, http_response: Any, streamed: bool
) -> None:
    """End the call of a raw response its ``parse()`` did not end: from the body if it was
    read; ``ok`` with usage unknown if it was read another way (``iter_bytes()``,
    ``iter_lines()``, ``parse(to=...)``); ``cancelled`` if it was never read. Never raises."""
    if call.finished or sys.is_finalizing():
        return
    try:
        if not streamed and _body_read(http_response):
            spec.finish(tracker, call, json.loads(http_response.content))
            return
        if getattr(http_response, "is_stream_consumed", False) is True:
            what = "stream" if streamed else "body"
            tracker.finish(
                call,
                streamed=streamed,
                metadata=_failed(f"{what} read outside parse(): usage unknown"),
                defer=True,
            )
            return
    except Exception as exc:
        _report("decorator.result", exc, model=spec.model)
    if not call.finished:
        tracker.finish(
            call,
            status="cancelled",
            streamed=streamed,
            metadata=_failed("no usage: never iterated" if streamed else "no usage: never read"),
            defer=True,
        )


def _raw_unreadable(exc: Exception, raw: Any, spec: _Spec, tracker: Tracker, call: Call) -> None:
    """``parse()`` raised (structured outputs cut at ``max_tokens``: the OpenAI SDK's
    ``LengthFinishReasonError``): the usage is read from the body the SDK read, as JSON.
    A body not read (a stream) is never read here: the call is then recorded without usage."""
    try:
        http_response = raw.http_response
        if _body_read(http_response):
            spec.finish(tracker, call, json.loads(http_response.content))
            return
    except Exception as bug:
        _report("decorator.result", bug, model=spec.model)
    _report("decorator.result", exc, model=spec.model)
    if not call.finished:
        tracker.finish(call, metadata=_failed(f"raw response not parsed: {_why(exc)}"), defer=True)


def _raw_response(raw: Any, body: Any, spec: _Spec, tracker: Tracker, call: Call) -> Any:
    """End the call of a raw response, from its parsed ``body``; a stream (``stream=True``)
    is tracked to its end instead (the tracking generator is returned). Never raises."""
    try:
        kind = _kind_of(body)
        if kind in (_ITERATOR, _ASYNC_ITERATOR, _DUAL_ITERATOR):
            # ``parse()`` cached this stream: the caller's ``parse()`` gets it, tracked.
            seen = _Seen(spec)
            items = _hook_iterator(body, seen, tracker, call, kind == _ASYNC_ITERATOR)
            if items is None:
                tracker.finish(
                    call, streamed=True, metadata=_failed("no usage: stream not tracked")
                )
                return None
            unused = weakref.finalize(
                body, _raw_stream_dropped, seen, tracker, call, raw.http_response
            )
            unused.atexit = False
            return items
        spec.finish(tracker, call, body)
    except Exception as exc:
        _report("decorator.result", exc, model=spec.model)
        if not call.finished:
            tracker.finish(call, metadata=_failed(f"tracking failed: {_why(exc)}"), defer=True)
    return None


def _raw_stream_dropped(seen: _Seen, tracker: Tracker, call: Call, http_response: Any) -> None:
    """A raw response's stream collected: if it was never read, its body may still have
    been, another way (``parse(to=Stream[...])``, ``http_response.iter_lines()``). A
    finalizer: the worker reads it and ends the call (see ``_in_gc``)."""
    if seen.started or call.finished or sys.is_finalizing():
        return
    tracker.handing_off(call)  # the next guarded call waits for this one's release
    defer_nowait(_raw_unfinished, seen.spec, tracker, call, http_response, True)


def _dropped(seen: _Seen, tracker: Tracker, call: Call, kind: int) -> None:
    """The finalizer of what ``_goes_on`` handed back: one never used ends on the worker
    (see ``_in_gc``), with the latency it had when it was dropped."""
    _open.pop(id(seen), None)
    if seen.started or call.finished or sys.is_finalizing():
        return  # started: the stream's own end (close, collection) finishes the call
    tracker.handing_off(call)  # the next guarded call waits for this one's release
    defer_nowait(_never_used, seen, tracker, call, kind, call.elapsed_ms(), False)


def _never_used(
    seen: _Seen,
    tracker: Tracker,
    call: Call,
    kind: int,
    latency_ms: float | None = None,
    deferred: bool = True,
) -> None:
    if seen.started or call.finished or sys.is_finalizing():
        return  # started: the stream's own end (close, collection) finishes the call
    if kind in (_STREAM_MANAGER, _ASYNC_STREAM_MANAGER):
        tracker.cancel(call)  # never entered: no request was sent
        return
    what = "never awaited" if kind == _AWAITABLE else "never iterated"
    tracker.finish(
        call,
        status="cancelled",
        streamed=kind != _AWAITABLE,
        metadata=_failed(f"no usage: {what}"),
        latency_ms=latency_ms,
        defer=deferred,
    )


def _unused_now(proxy: _Proxy) -> None:
    """A proxy closed by the host: its never-used ending, if due, runs now, on the host's
    thread (not a finalizer's), and the finalizer is dropped."""
    unused = proxy._unused
    if unused is None:
        return
    found = unused.detach()
    if found is not None:
        seen, tracker, call, kind = found[2]
        _open.pop(id(seen), None)
        _never_used(seen, tracker, call, kind)


def _future_done(spec: _Spec, tracker: Tracker, call: Call, future: Any) -> None:
    try:
        if future.cancelled():
            tracker.finish(call, status="cancelled", defer=True)
            return
        exc = future.exception()
        if exc is not None:
            tracker.finish(call, status=_status_of(exc), error=exc, defer=True)
            return
        spec.finish(tracker, call, future.result())
    except Exception as bug:
        _report("decorator.result", bug, model=spec.model)


async def _awaited(awaitable: Any, spec: _Spec, seen: _Seen, tracker: Tracker, call: Call) -> Any:
    seen.started = True
    try:
        result = await awaitable
    except BaseException as exc:
        tracker.finish(call, status=_status_of(exc), error=exc, defer=True)
        raise
    kind = _result_kind(type(result))
    if kind is None:
        kind = _kind_of_result(type(result))
    if kind == _RAW_RESPONSE:
        await _araw_response(result, spec, tracker, call)
        return result
    if kind and kind != _AWAITABLE:  # an async client's stream=True: an AsyncStream
        return _goes_on(kind, result, spec, tracker, call)
    spec.finish(tracker, call, result)
    return result


class _Awaiting(Coroutine[Any, Any, Any]):
    """The coroutine a plain function returns for the awaitable it returned: awaiting it
    (or running it as a task) awaits that and ends the call.

    The native coroutine that does the work (``_awaited``) is made only when this one is
    first awaited or sent to: one never awaited is simply collected, so the only "never
    awaited" warning is the host's own coroutine's, naming it, not a second one naming
    ours. ``asyncio.iscoroutine`` (``create_task``, ``gather``, ``run``) accepts it;
    ``inspect.iscoroutine`` does not (it is not a native coroutine).
    """

    __slots__ = ("__weakref__", "_args", "_coro")

    def __init__(
        self, awaitable: Any, spec: _Spec, seen: _Seen, tracker: Tracker, call: Call
    ) -> None:
        self._args: tuple[Any, ...] | None = (awaitable, spec, seen, tracker, call)
        self._coro: Coroutine[Any, Any, Any] | None = None

    def _started(self) -> Coroutine[Any, Any, Any]:
        coro = self._coro
        if coro is None:
            args = self._args
            if args is None:
                raise RuntimeError("cannot reuse already awaited coroutine")
            coro = self._coro = _awaited(*args)
            self._args = None
            args[2].started = True  # this object may be collected before ``coro`` runs
        return coro

    def __await__(self) -> Generator[Any, None, Any]:
        return self._started().__await__()

    def send(self, value: Any) -> Any:
        return self._started().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._started().throw(typ)
        return self._started().throw(typ, val, tb)  # the old signature

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()
        else:  # never started: as a native coroutine, closed without running
            self._args = None

    def __repr__(self) -> str:
        args = self._args
        inner = args[0] if args is not None else self._coro
        return f"<tracked {inner!r}>"


def _items_of(stream: Iterable[Any]) -> Generator[Any, Any, Any]:
    return (yield from stream)


async def _aitems_of(stream: AsyncIterable[Any]) -> AsyncGenerator[Any, Any]:
    async for item in stream:
        yield item


class _Proxy:
    """A stream object a function returned (an SDK's ``Stream``), seen through: its items
    come through the tracking generator, made at the first iteration by the protocol
    the host iterates with; any other attribute is the stream's own."""

    __slots__ = (
        "__weakref__",
        "_aitems",
        "_call",
        "_items",
        "_seen",
        "_stream",
        "_tracker",
        "_unused",
    )

    def __init__(self, stream: Any, seen: _Seen, tracker: Tracker, call: Call) -> None:
        self._stream = stream
        self._seen = seen
        self._tracker = tracker
        self._call = call
        self._items: Generator[Any, Any, Any] | None = None
        self._aitems: AsyncGenerator[Any, Any] | None = None
        self._unused: weakref.finalize[Any, Any] | None = None

    def _sync_items(self) -> Generator[Any, Any, Any]:
        items = self._items
        if items is None:
            seen = self._seen
            items = self._items = _tracked_gen(
                _items_of(self._stream), seen.spec, self._tracker, None, self._call, seen
            )
        return items

    def _async_items(self) -> AsyncGenerator[Any, Any]:
        aitems = self._aitems
        if aitems is None:
            seen = self._seen
            aitems = self._aitems = _tracked_agen(
                _aitems_of(self._stream), seen.spec, self._tracker, None, self._call, seen
            )
        return aitems

    def _close_sync(self) -> None:
        """Stop: the call ends (cancelled, with the usage seen), then the stream closes."""
        if self._items is not None:
            self._items.close()
        _unused_now(self)
        close = getattr(self._stream, "close", None)
        if close is not None:
            closed = close()
            if inspect.iscoroutine(closed):  # an async stream's close(): not awaited here
                closed.close()

    async def _close_async(self) -> None:
        if self._aitems is not None:
            await self._aitems.aclose()
        if self._items is not None:
            self._items.close()
        _unused_now(self)
        stream = self._stream
        close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
        if close is not None:
            closed = close()
            if inspect.isawaitable(closed):
                await closed

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_stream"), name)

    def __repr__(self) -> str:
        return f"<tracked {self._stream!r}>"


class _SyncProtocol(_Proxy):
    __slots__ = ()

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        items = self._items
        if items is None:
            items = self._sync_items()
        return items.__next__()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_sync()


class _AsyncProtocol(_Proxy):
    __slots__ = ()

    def __aiter__(self) -> Any:
        return self

    def __anext__(self) -> Any:
        aitems = self._aitems
        if aitems is None:
            aitems = self._async_items()
        return aitems.__anext__()

    async def aclose(self) -> None:
        """Stop: the call ends (cancelled, with the usage seen), then the stream closes."""
        await self._close_async()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close_async()


class _TrackedStream(_SyncProtocol):
    """A sync stream object (an SDK's ``Stream``)."""

    __slots__ = ()

    def close(self) -> None:
        """Stop: the call ends (cancelled, with the usage seen), then the stream closes."""
        self._close_sync()


class _TrackedAsyncStream(_AsyncProtocol):
    """An async stream object (an SDK's ``AsyncStream``): ``close()`` is awaited."""

    __slots__ = ()

    async def close(self) -> None:
        """Stop: the call ends (cancelled, with the usage seen), then the stream closes."""
        await self._close_async()


class _TrackedDualStream(_SyncProtocol, _AsyncProtocol):
    """A stream object iterated with ``for`` or ``async for`` (LiteLLM's
    ``CustomStreamWrapper`` for ``completion`` and ``acompletion``): the items come
    through a sync or an async tracking generator, whichever the host uses first.
    ``close()`` is sync, ``aclose()`` async, as on LiteLLM's object."""

    __slots__ = ()

    def close(self) -> None:
        """Stop: the call ends (cancelled, with the usage seen), then the stream closes."""
        self._close_sync()


class _Entered:
    """One ``with`` on a tracked manager not yet left: its call, what reads its stream;
    for ``with_streaming_response``, the raw response entering gave (``raw``) and whether
    it is a stream (``stream=True``)."""

    __slots__ = ("call", "items", "raw", "stream")

    def __init__(self, call: Call) -> None:
        self.call = call
        # What ends the call early: the tracking generator, or the proxy.
        self.items: Any = None
        self.raw: Any = None
        self.stream = False

    def body_to_parse(self) -> bool:
        """A raw response that is not a stream, its body read in the block, the call not
        ended yet: it ends from ``parse()`` as the block is left."""
        raw = self.raw
        return (
            raw is not None
            and not self.stream
            and not self.call.finished
            and _body_read(raw.http_response)
        )


class _Manager:
    """An SDK's stream manager a function returned, seen through: entering it sends the
    request (the call ends as an error if that fails) and gives the SDK's stream, tracked;
    leaving it ends the call (``cancelled`` if the stream was not read to its end, with the
    usage seen so far), then leaves the manager. Any other attribute is the manager's own.

    The SDKs' helper streams (``MessageStream``, ``ChatCompletionStream``,
    ``ResponseStream`` and their async twins) read every event through one generator,
    their ``_iterator``: iterating the stream, ``text_stream``, ``until_done()`` and
    ``get_final_message()`` / ``get_final_completion()`` / ``get_final_response()`` all
    go through it. That generator is swapped for the tracking one, so the stream handed
    back is the SDK's own object however it is read. A stream without one (another
    version) is handed back behind the tracking proxy, as a returned stream is.

    ``with_streaming_response`` managers give a raw response instead, its body not read:
    for ``stream=True`` the stream its ``parse()`` gives is tracked (``parse()`` reads
    nothing then); otherwise the call ends as the block is left, from ``parse()`` (cached:
    the caller's own was the same) if the body was read in the block.

    Each enter sends a request of its own (the SDK's ``__enter__`` calls the API each
    time): the first is the call opened when the function was called; every later one
    (a second ``with`` on the same manager, or ``with m as a, m as b``) opens a fresh
    call, with the first's model and attribution, its guards run before the request is
    sent. The enters not yet left are a stack, as ``with`` blocks nest: leaving ends the
    last one entered.
    """

    __slots__ = ("__weakref__", "_call", "_entered", "_manager", "_seen", "_tracker", "_unused")

    def __init__(self, manager: Any, seen: _Seen, tracker: Tracker, call: Call) -> None:
        self._manager = manager
        self._seen = seen
        self._tracker = tracker
        self._call = call
        self._entered: list[_Entered] = []
        self._unused: weakref.finalize[Any, Any] | None = None

    def _first(self) -> Call | None:
        """The call of the first enter: the one opened when the function was called;
        ``None`` for a later enter, which opens its own (``_again``)."""
        seen = self._seen
        if seen.started:
            return None
        seen.started = True  # the manager's "never entered" end is no longer due
        return self._call

    def _again(self) -> dict[str, Any]:
        """``Tracker.start``'s arguments for a later enter: the first call's."""
        call = self._call
        return {
            "source": call.source,
            "model": call.model,
            "provider": call.provider,
            "attribution": call.attribution,
            "estimate": call.estimate,
        }

    def _failed_enter(self, call: Call, exc: BaseException, again: bool) -> None:
        if again and _never_sent(exc):
            self._tracker.cancel(call)
            return
        self._tracker.finish(call, status=_status_of(exc), error=exc, defer=True)

    def _track(self, stream: Any, entered: _Entered, is_async: bool) -> Any:
        """The stream to hand back, tracked. Never raises (the stream comes back as is)."""
        self._entered.append(entered)
        call = entered.call
        tracker = self._tracker
        spec = self._seen.spec
        seen = self._seen if call is self._call else _Seen(spec)
        try:
            items = _hook_iterator(stream, seen, tracker, call, is_async)
            if items is not None:
                entered.items = items
                return stream
            kind = _kind_of(stream)
            if kind == _RAW_RESPONSE:  # with_streaming_response: the body is not read yet
                entered.raw = stream
                entered.stream = _raw_is_stream(stream)
                if entered.stream and not is_async:  # async: parse() is awaited by __aenter__
                    entered.items = _raw_read(stream, spec, tracker, call)
                return stream
            if kind in (_ITERATOR, _ASYNC_ITERATOR, _DUAL_ITERATOR):
                out = _goes_on(kind, stream, spec, tracker, call)
                entered.items = out
                return out
            spec.finish(tracker, call, stream)  # not a stream after all: read it now
        except Exception as exc:
            _report("decorator.stream", exc, model=spec.model)
            if not call.finished:
                tracker.finish(call, metadata=_failed(f"tracking failed: {_why(exc)}"), defer=True)
        return stream

    def _leaving(self) -> _Entered | None:
        """The enter this exit leaves: the last one entered (``with`` blocks nest)."""
        entered = self._entered
        return entered.pop() if entered else None

    def _left(self, entered: _Entered) -> None:
        """Left before the stream was read: the request was sent, its usage is unknown."""
        call = entered.call
        if entered.raw is not None:
            http_response = entered.raw.http_response
            _raw_unfinished(self._seen.spec, self._tracker, call, http_response, entered.stream)
        elif not call.finished and not sys.is_finalizing():
            self._tracker.finish(
                call,
                status="cancelled",
                streamed=True,
                metadata=_failed("no usage: never iterated"),
                defer=True,
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_manager"), name)

    def __repr__(self) -> str:
        return f"<tracked {self._manager!r}>"


def _never_sent(exc: BaseException) -> bool:
    """An async manager entered again: the SDK awaits the request coroutine it was made
    with, which can be awaited once; the second ``await`` fails before sending anything."""
    return isinstance(exc, RuntimeError) and "cannot reuse already awaited coroutine" in str(exc)


def _hook_iterator(stream: Any, seen: _Seen, tracker: Tracker, call: Call, is_async: bool) -> Any:
    """Track a Stainless SDK stream object in place: its ``_iterator``, the one generator
    every way of reading it goes through, swapped for the tracking generator (returned).
    ``None`` (nothing changed) for a stream without one."""
    inner = getattr(stream, "_iterator", None)
    items: Any = None
    if is_async and isinstance(inner, AsyncGeneratorType):
        items = _tracked_agen(inner, seen.spec, tracker, None, call, seen)
    elif not is_async and isinstance(inner, GeneratorType):
        items = _tracked_gen(inner, seen.spec, tracker, None, call, seen)
    if items is not None:
        stream._iterator = items
    return items


class _TrackedManager(_Manager):
    __slots__ = ()

    def __enter__(self) -> Any:
        call = self._first()
        again = call is None
        if call is None:
            call = self._tracker.start(**self._again())  # a refusal: no request is sent
        try:
            stream = self._manager.__enter__()
        except BaseException as exc:
            self._failed_enter(call, exc, again)
            raise
        return self._track(stream, _Entered(call), is_async=False)

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            entered = self._leaving()
            if entered is not None:
                items = entered.items
                if isinstance(items, GeneratorType):
                    items.close()  # the call ends, cancelled if the stream was not at its end
                elif isinstance(items, _Proxy):
                    items._close_sync()
                if entered.body_to_parse():
                    _raw_read(entered.raw, self._seen.spec, self._tracker, entered.call)
                self._left(entered)
        except Exception as exc:
            _report("decorator.stream", exc, model=self._seen.spec.model)
        return self._manager.__exit__(*exc_info)


class _TrackedAsyncManager(_Manager):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        call = self._first()
        again = call is None
        if call is None:
            call = await self._tracker.astart(**self._again())
        try:
            stream = await self._manager.__aenter__()
        except BaseException as exc:
            self._failed_enter(call, exc, again)
            raise
        entered = _Entered(call)
        out = self._track(stream, entered, is_async=True)
        if entered.stream and entered.items is None and not call.finished:
            entered.items = await _araw_response(stream, self._seen.spec, self._tracker, call)
        return out

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            entered = self._leaving()
            if entered is not None:
                items = entered.items
                if isinstance(items, AsyncGeneratorType):
                    await items.aclose()
                elif isinstance(items, _Proxy):
                    await items._close_async()
                if entered.body_to_parse():
                    await _araw_response(entered.raw, self._seen.spec, self._tracker, entered.call)
                self._left(entered)
        except Exception as exc:
            _report("decorator.stream", exc, model=self._seen.spec.model)
        return await self._manager.__aexit__(*exc_info)


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
    gen: Generator[Any, Any, Any],
    spec: _Spec,
    tracker: Tracker,
    start: dict[str, Any] | None,
    call: Call | None = None,
    seen: _Seen | None = None,
) -> Generator[Any, Any, Any]:
    if call is None:  # a generator function's: the call opens at the first iteration
        call = tracker.start(**(start or {}))
    if seen is None:
        seen = _Seen(spec)
    seen.started = True
    key = id(seen)
    _open[key] = (seen, tracker, call, _GENERATOR)
    sent: Any = None
    thrown: BaseException | None = None
    send = gen.send
    try:
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
    finally:
        _open.pop(key, None)


def _wrap_async_gen(
    fn: Callable[..., AsyncGenerator[Any, Any]], spec: _Spec
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        tracker = spec.tracker or get_tracker()
        return _tracked_agen(fn(*args, **kwargs), spec, tracker, spec.stream_start(args, kwargs))

    return wrapper


async def _tracked_agen(
    agen: AsyncGenerator[Any, Any],
    spec: _Spec,
    tracker: Tracker,
    start: dict[str, Any] | None,
    call: Call | None = None,
    seen: _Seen | None = None,
) -> AsyncGenerator[Any, Any]:
    if call is None:
        call = await tracker.astart(**(start or {}))
    if seen is None:
        seen = _Seen(spec)
    seen.started = True
    key = id(seen)
    _open[key] = (seen, tracker, call, _ASYNC_GENERATOR)
    sent: Any = None
    thrown: BaseException | None = None
    asend = agen.asend
    try:
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
    finally:
        _open.pop(key, None)


class _Seen:
    """What a tracked stream has shown of its usage so far, and the call's end from it.

    ``usage`` merges the items' usage as their provider spreads it (``StreamUsage``,
    shared with the HTTP transport); ``missed``: why ``usage=`` gave none for an item,
    the last time it failed; ``started``: the stream was iterated (or awaited).
    """

    __slots__ = ("missed", "spec", "started", "usage")

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.usage = StreamUsage()
        self.missed: str | None = None
        self.started = False

    def see(self, chunk: Any) -> None:
        try:
            usage_fn = self.spec.usage_fn
            if usage_fn is None:
                self.usage.see(chunk)
                return
            if ends_stream(chunk):
                self.usage.ended = True
            try:
                self._take(usage_fn(chunk))
            except Exception as exc:
                self.missed = _why(exc)
        except Exception as exc:  # a bug of ours: the stream goes on
            _report("decorator.stream", exc, model=self.spec.model)

    def _take(self, read: Any) -> None:
        """Keep ``usage=``'s answer for one item if it gives usage (a ``Usage`` with
        tokens, a payload with a usage part, a bare usage part); raise when it is neither
        empty nor readable (the caller notes why)."""
        if read is None:
            return
        if isinstance(read, Usage):
            if read.total_tokens:
                self.usage.take(read)
            return
        if self.usage.see(read):
            return
        if isinstance(read, Mapping):
            if any(k in read for k in _USAGE_KEYS):
                return  # an item whose usage part is empty: most items of a stream
        elif any(hasattr(read, k) for k in _USAGE_KEYS):
            return
        read_response(read, self.spec.provider)  # a bare usage part, or why not
        self.usage.take(read)

    def finish(
        self,
        tracker: Tracker,
        call: Call,
        exc: BaseException | None,
        latency_ms: float | None = None,
        deferred: bool = True,
        from_gc: bool = False,
    ) -> None:
        if sys.is_finalizing():
            # Closed as the interpreter shuts down, after the exit hook finished every
            # stream still open and the exit drain stored them: nothing can store it now.
            return
        if not from_gc and _in_gc():
            # Closed by the cyclic GC, maybe inside a costledger lock on this thread: the
            # worker ends it (see ``_in_gc``), with the latency it has now. ``from_gc``:
            # this is that ending (run by the worker, or here once the exit hook has run),
            # not to be queued again.
            if not call.finished:
                tracker.handing_off(call)
                defer_nowait(_Seen.finish, self, tracker, call, exc, call.elapsed_ms(), False, True)
            return
        # Usage seen before a stop (error, close, cancel) still cost money: it is recorded
        # (and the call without usage if what was seen is bad).
        status: CallStatus = "ok" if exc is None else _status_of(exc)
        if status == "cancelled" and self.usage.ended:
            # Stopped after the stream's last event (a ``break`` at ``message_stop``): the
            # call was complete, as the HTTP transport records it.
            status, exc = "ok", None
        try:
            parts = self.usage.payloads()
        except Exception as bug:
            _report("decorator.stream", bug, model=self.spec.model)
            parts = []
        if len(parts) > 1:
            try:
                self._finish_several(tracker, call, parts, status, exc, latency_ms, deferred)
                return
            except Exception as bug:  # a bug of ours: the last response, as before
                _report("decorator.stream", bug, model=self.spec.model)
                if call.finished:
                    return
                parts = parts[-1:]
        last = parts[0] if parts else None
        if last is None:
            metadata = None
            if self.missed is not None:
                metadata = _failed(self.missed)
            elif exc is None:
                metadata = _failed("no usage")
            _finish_without_usage(tracker, call, status, exc, metadata, latency_ms, deferred)
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
            latency_ms=latency_ms,
            defer=deferred,
        )

    def _finish_several(
        self,
        tracker: Tracker,
        call: Call,
        parts: list[Any],
        status: CallStatus,
        exc: BaseException | None,
        latency_ms: float | None,
        deferred: bool,
    ) -> None:
        """End a call whose stream carried several billed responses (a generator that
        yielded two whole responses, a tool loop's two streams): each cost money.

        The call is one event: the responses' usages are added into it when the same model
        answered them at the same price variant (service tier) and that price is linear
        (no long-context tier, no per-request fee: the sum costs what the parts cost); the
        request id is the first response's. Responses that cannot be priced in that sum
        (another model or variant, a tiered or per-request price, a model without a known
        price, which a price book may give either later) are recorded as events of their
        own (``ok``, with the call's source, attribution and start time); the call's own
        event is then the last response's, the one the stream's end (an error, a cancel)
        concerns.
        """
        provider = self.spec.provider
        groups: dict[tuple[Any, ...], list[Any]] = {}  # by model and price context
        missed: list[str] = []
        for n, part in enumerate(parts, 1):
            try:
                info = read_response(part, provider)
            except Exception as bad:
                missed.append(f"response {n} of {len(parts)}: {_why(bad)}")
                continue
            context = info.price_context
            key = (info.model, tuple(sorted(context.items())) if context else ())
            groups.setdefault(key, []).append(info)
        metadata = _failed("; ".join(missed)) if missed else None
        # One ending per event: (usage, response model, request id, price context).
        endings: list[tuple[Usage, str | None, str | None, Any]] = []
        for infos in groups.values():
            first = infos[0]
            if len(infos) > 1 and _priced_linearly(tracker, call, first, provider):
                usage = first.usage
                for info in infos[1:]:
                    usage = usage + info.usage
                ids = [info.response_id for info in infos if info.response_id]
                endings.append((usage, first.model, ids[0] if ids else None, first.price_context))
            else:
                endings.extend((i.usage, i.model, i.response_id, i.price_context) for i in infos)
        if not endings:
            _finish_without_usage(tracker, call, status, exc, metadata, latency_ms, deferred)
            return
        *others, (usage, model, request_id, context) = endings
        for other_usage, other_model, other_id, other_context in others:
            tracker.record(
                call.model,
                other_usage,
                source=call.source,
                provider=provider,
                response_model=other_model,
                streamed=True,
                attribution=call.attribution,
                started_at=call.started_at,
                request_id=other_id,
                price_context=other_context,
                defer=deferred,
            )
        tracker.finish(
            call,
            usage=usage,
            response_model=model,
            request_id=request_id,
            price_context=context,
            provider=provider,
            status=status,
            error=exc,
            streamed=True,
            metadata=metadata,
            latency_ms=latency_ms,
            defer=deferred,
        )


def _finish_without_usage(
    tracker: Tracker,
    call: Call,
    status: CallStatus,
    exc: BaseException | None,
    metadata: Mapping[str, Any] | None,
    latency_ms: float | None,
    deferred: bool,
) -> None:
    """End a stream's call that left no usage to read (``metadata`` says why)."""
    tracker.finish(
        call,
        status=status,
        error=exc,
        streamed=True,
        metadata=metadata,
        latency_ms=latency_ms,
        defer=deferred,
    )


def _priced_linearly(tracker: Tracker, call: Call, info: Any, provider: str | None) -> bool:
    """Whether the responses of ``info``'s model and price variant cost, added into one
    event, what they cost apart: a known price without long-context tiers (a rate for the
    whole call once its prompt passes a size) or a per-request fee. The rate card is the
    one the call will be priced with (cached by the pricer)."""
    model = info.model or call.model
    if not model:
        return False
    try:
        card = tracker.pricer.rate_card(
            model,
            provider=provider or call.provider,
            at=call.started_at,
            price_context=info.price_context,
        )
    except Exception as exc:
        _report("decorator.stream", exc, model=model)
        return False
    return card is not None and not card.tiers and not card.request
