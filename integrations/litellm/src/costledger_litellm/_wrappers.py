"""``completion`` / ``acompletion``: LiteLLM's calls with costledger's guards run first.

A LiteLLM SDK callback cannot stop a call, so budgets and rate limits need a way
in before it: the wrapper opens the Tracker call (the guards reserve the worst
case, or refuse), hands LiteLLM the call's id as ``litellm_call_id``, and, when
LiteLLM returns an answer, closes that same call from it, settling the reservation
to the actual cost. It does not wait for LiteLLM's success event: LiteLLM queues an
async call's callbacks from a task of its own, which ``asyncio.run`` cancels when
its coroutine returns. That event, if it comes, finds the id recorded and adds
nothing (LiteLLM's sync logging thread may get there first: the event then closes
the call, once). Failed attempts (retries, fallbacks) are recorded by their own
failure events and leave the call open; when LiteLLM raises, the call is over
without a success and its reservation is released.

A call cancelled while LiteLLM runs it (a task's cancellation, a timeout, Ctrl-C) gets
no event from LiteLLM, yet the request may have reached the provider and be billed: the
wrapper records it as ``cancelled`` (no usage is known) and re-raises.

A stream is returned wrapped and recorded by LiteLLM's success event at its end;
LiteLLM reports nothing for a stream the consumer abandons (LiteLLM #14457), so the
wrapper records it as ``cancelled`` with the usage of what was received when it is
closed, interrupted while read, still open at exit, or garbage-collected unfinished.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import litellm
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

from costledger import GuardRefusal
from costledger._events import new_event_id
from costledger._extract import price_context_of
from costledger._guards._store import off_loop
from costledger._http._errors import without_secrets
from costledger._tracker import defer_nowait

from ._logger import (
    CostLedgerLogger,
    _attempt_keys,
    _attribution_values,
    _guard_store,
    _registry,
    _report,
    _start_arguments,
    finish_from_response,
    release_off_loop,
)
from ._logger import _release_quietly as _release_unreported

if TYPE_CHECKING:
    from costledger import Tracker
    from costledger._tracker import Call

__all__ = ["TrackedStream", "acompletion", "completion"]

_ABANDONED_METADATA: Final = {"costledger.stream": "abandoned", "costledger.usage_estimated": True}


@functools.cache
def _default_logger() -> CostLedgerLogger:
    return CostLedgerLogger()


def completion(*args: Any, **kwargs: Any) -> Any:
    """``litellm.completion``, same arguments and result, with costledger's guards run first.

    Guards (budgets, rate limits) of the default Tracker reserve before the call and
    may raise ``BudgetExceeded`` / ``RateLimited``; the call is recorded from LiteLLM's
    answer when it returns, its reservation settled. A stream comes back as a
    ``TrackedStream`` (iterate it as LiteLLM's), recorded by the ``CostLedgerLogger``
    at its end, as are failed attempts (one is added to the call if none is
    registered). For another Tracker, use ``CostLedgerLogger(tracker).completion(...)``.
    """
    return run_completion(_default_logger(), args, kwargs)


async def acompletion(*args: Any, **kwargs: Any) -> Any:
    """``litellm.acompletion`` with costledger's guards run first (see ``completion``)."""
    return await run_acompletion(_default_logger(), args, kwargs)


def run_completion(logger: CostLedgerLogger, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    opened = _open(logger, args, kwargs, asynchronous=False)
    if opened is None:  # costledger failed to prepare: the call goes ahead untracked by guards
        return litellm.completion(*args, **kwargs)
    tracker, start = opened
    try:
        call = tracker.start(**start)
    except BaseException as exc:
        if _not_started(start, exc, "litellm.completion"):
            raise  # a guard's refusal (the call never happens), or an interruption
        return litellm.completion(*args, **kwargs)  # costledger failed: the call goes ahead
    return _after(tracker, call, lambda: litellm.completion(*args, **kwargs), kwargs)


async def run_acompletion(
    logger: CostLedgerLogger, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    opened = _open(logger, args, kwargs, asynchronous=True)
    if opened is None:
        return await litellm.acompletion(*args, **kwargs)
    tracker, start = opened
    try:
        call = await tracker.astart(**start)  # a guard may wait here (a rate limit's wait=)
    except BaseException as exc:
        if _not_started(start, exc, "litellm.acompletion"):
            raise
        return await litellm.acompletion(*args, **kwargs)
    call_id = call.id  # LiteLLM's (a failed attempt that closes the call renames its row)
    _registry.register(call_id, tracker, call)
    _restart(call)
    try:
        result = await litellm.acompletion(*args, **kwargs)
    except Exception:
        release_off_loop(tracker, call_id)  # a store's round trip: not on the event loop
        raise
    except BaseException as exc:
        _cancelled(call_id, exc)
        raise
    if isinstance(result, CustomStreamWrapper):
        return TrackedStream(result, tracker, call)
    latency_ms = call.elapsed_ms()
    answered = _answered(call_id, result)
    if answered is not None:
        store = _guard_store(answered[0])
        fallbacks = kwargs.get("fallbacks")
        if store is None:
            _record_answer(answered, result, latency_ms, fallbacks)
        else:  # the guards' settle waits on a store: in a worker thread, awaited
            await off_loop(store, _record_answer, answered, result, latency_ms, fallbacks)
    return result


def _after(tracker: Tracker, call: Call, run: Any, kwargs: Mapping[str, Any]) -> Any:
    call_id = call.id  # LiteLLM's (a failed attempt that closes the call renames its row)
    _registry.register(call_id, tracker, call)
    _restart(call)
    try:
        result = run()
    except Exception:
        _release_unreported(call_id)
        raise
    except BaseException as exc:
        _cancelled(call_id, exc)
        raise
    if isinstance(result, CustomStreamWrapper):
        return TrackedStream(result, tracker, call)
    latency_ms = call.elapsed_ms()
    opened = _answered(call_id, result)
    if opened is not None:
        _record_answer(opened, result, latency_ms, kwargs.get("fallbacks"))
    return result


def _cancelled(call_id: str, exc: BaseException) -> None:
    """LiteLLM was interrupted (a cancellation, a timeout, Ctrl-C): it fires no event for
    that, but the request may have reached the provider and be billed. The call is recorded
    as ``cancelled`` (no usage is known), its guards' reservations given back or settled by
    ``finish``, on costledger's worker. An ordinary exception is LiteLLM's to record (its
    failure event), and only releases. Never raises."""
    try:
        opened = _registry.take(call_id)
        if opened is None:  # LiteLLM's success event came first: it recorded the call
            return
        tracker, call = opened
        tracker.finish(call, provider=call.provider, status="cancelled", error=exc, defer=True)
    except Exception as report_exc:
        _report("litellm.completion", report_exc)


def _restart(call: Call) -> None:
    """The call's clock starts when LiteLLM is called (after the guards' reservation, and
    a rate limit's wait): its timestamp and latency are the model call's."""
    call.started_at = datetime.now(timezone.utc)
    call.started = time.perf_counter()


def _answered(call_id: str, result: Any) -> tuple[Tracker, Call] | None:
    """LiteLLM returned ``result`` (not a stream) for the call under ``call_id``: the
    opened call to record from it, taken from the registry so that LiteLLM's own success
    event for the id, whenever it comes (an ``asyncio.run`` may cancel it before it is
    queued), adds nothing. ``None`` when the event came first (it recorded the call). An
    answer without usage is recorded without usage (unpriced, flagged), never guessed."""
    try:
        return _registry.take(call_id)
    except Exception as exc:
        _report("litellm.completion", exc)
        return None


def _record_answer(
    opened: tuple[Tracker, Call], result: Any, latency_ms: float, fallbacks: Any = None
) -> None:
    try:
        finish_from_response(opened[0], opened[1], result, latency_ms, fallbacks=fallbacks)
    except Exception as exc:  # never break the host
        _report("litellm.completion", exc)


def _not_started(start: Mapping[str, Any], exc: BaseException, where: str) -> bool:
    """``Tracker.start`` raised: give up the call's id. Whether to re-raise (a guard's
    refusal, a cancellation); else costledger failed, which is logged."""
    _registry.unreserve(start["call_id"])
    if isinstance(exc, GuardRefusal) or not isinstance(exc, Exception):
        return True
    _report(where, exc)
    return False


def _open(
    logger: CostLedgerLogger, args: tuple[Any, ...], kwargs: dict[str, Any], *, asynchronous: bool
) -> tuple[Tracker, dict[str, Any]] | None:
    """Prepare the call: its id passed to LiteLLM (claimed in the registry until the call
    is opened), the logger attached, ``Tracker.start``'s arguments. Returns ``None`` (and
    the call goes ahead) if any of it fails."""
    reserved: str | None = None
    try:
        tracker = logger.tracker
        call_id = kwargs.get("litellm_call_id")
        # An id already recorded (or in flight) would make this call's success a duplicate
        # to drop, and its reservation would never be settled: a new one. The id is claimed
        # at once, so concurrent calls passing the same one cannot all keep it.
        if not isinstance(call_id, str) or not call_id or not _registry.reserve_id(call_id):
            call_id = new_event_id()
            _registry.reserve_id(call_id)
        reserved = call_id
        request: Mapping[str, Any] = kwargs
        if args:  # model and messages may be positional, as litellm.completion allows
            request = {**kwargs, **dict(zip(("model", "messages"), args, strict=False))}
        values = _attribution_values(request.get("metadata"), request.get("user"))
        start = _start_arguments(tracker, request, call_id, values)
        kwargs["litellm_call_id"] = call_id
        callbacks = kwargs.get("callbacks")
        if not _logger_registered(callbacks):
            # LiteLLM adds per-call callbacks to its global lists, so this registers the
            # logger for later calls too: same as `litellm.callbacks = [logger]`.
            kwargs["callbacks"] = [*(callbacks or ()), logger]
        return tracker, start
    except Exception as exc:
        _report("litellm.completion", exc)
        if reserved is not None:
            _registry.unreserve(reserved)
        return None


def _logger_registered(callbacks: Any) -> bool:
    for registered in (
        callbacks or (),
        litellm.callbacks,
        litellm.success_callback,
        litellm._async_success_callback,
    ):
        for callback in registered:
            if isinstance(callback, CostLedgerLogger):
                return True
    return False


# The wrappers' streams not yet ended: the exit hook records them before the ledgers close.
_open_streams: Final[weakref.WeakSet[TrackedStream]] = weakref.WeakSet()


class TrackedStream:
    """LiteLLM's stream, unchanged to iterate (sync or async), recorded even if abandoned.

    When the stream ends, LiteLLM's own success event records it. When the consumer
    stops early and the stream is closed (``close``/``aclose``, leaving a ``with``
    block), interrupted while read (a task's cancellation, a timeout, Ctrl-C), still
    open at exit, or garbage-collected, the call is recorded as ``cancelled`` with the
    usage of the chunks received so far (LiteLLM's estimate; the provider may bill more).
    Other attributes are LiteLLM's ``CustomStreamWrapper``'s.
    """

    __slots__ = ("__weakref__", "_call", "_call_id", "_ended", "_stream", "_tracker")

    def __init__(self, stream: CustomStreamWrapper, tracker: Tracker, call: Call) -> None:
        self._stream = stream
        self._tracker = tracker
        self._call = call
        # the id LiteLLM was given (a failed attempt that closes the call renames its row)
        self._call_id = call.id
        self._ended = False
        _open_streams.add(self)

    @property
    def litellm_call_id(self) -> str:
        return self._call_id

    @property
    def wrapped(self) -> CustomStreamWrapper:
        """LiteLLM's own stream object."""
        return self._stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __iter__(self) -> TrackedStream:
        return self

    def __next__(self) -> Any:
        try:
            return self._stream.__next__()
        except StopIteration:
            self._end()  # LiteLLM's success event records it
            raise
        except Exception:
            self._failed(asynchronous=False)  # LiteLLM's failure event records it
            raise
        except BaseException:
            # Ctrl-C: LiteLLM records nothing, and the process may be about to end.
            self._abandon()
            raise

    def __aiter__(self) -> TrackedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except Exception:
            self._failed(asynchronous=True)
            raise
        except BaseException:  # a task's cancellation (a timeout), Ctrl-C
            self._abandon()
            raise

    def __enter__(self) -> TrackedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> TrackedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close(self) -> None:
        self._abandon()
        self._stream.close()

    async def aclose(self) -> None:
        self._abandon()
        await self._stream.aclose()  # type: ignore[no-untyped-call]  # LiteLLM's is unannotated

    def __del__(self) -> None:
        # The cyclic GC runs finalizers at any allocation, possibly while this very thread
        # holds the registry's lock or a guard store's: take no lock here, only hand the
        # call to costledger's worker (a deque append), which claims and finishes it.
        with contextlib.suppress(Exception):  # a finalizer must never raise
            if self._ended:
                return
            self._ended = True
            call = self._call
            if not call.finished:
                self._tracker.handing_off(call)  # the next calls' guards wait for its settle
            defer_nowait(
                _finish_abandoned,
                self._call_id,
                _Received.of(self._stream),
                call.elapsed_ms(),
                False,
            )

    def _end(self) -> None:
        self._ended = True
        _open_streams.discard(self)

    def _failed(self, *, asynchronous: bool) -> None:
        """The stream raised: no success will close the call, release its reservation
        (from the event loop: in a worker thread when the guards' store waits on I/O)."""
        if self._ended:
            return
        self._end()
        if asynchronous:
            release_off_loop(self._tracker, self._call_id)
        else:
            _release_unreported(self._call_id)

    def _abandon(self) -> None:
        """Record the unfinished stream as ``cancelled`` now, from the usage received; the
        guards' settle runs on costledger's worker (never on an event loop). Never raises."""
        if self._ended:
            return
        self._end()
        try:
            received = _Received.of(self._stream)
            _finish_abandoned(self._call_id, received, self._call.elapsed_ms(), True)
        except Exception as exc:
            _report("litellm.stream_abandoned", exc)


def abandon_open_streams() -> None:
    """At exit: record the wrappers' streams still open as ``cancelled`` (queued on
    costledger's worker, whose own exit hook finishes them before the ledgers close).
    Never raises."""
    try:
        streams = list(_open_streams)
    except Exception as exc:
        _report("litellm.exit_streams", exc)
        return
    for stream in streams:
        stream._abandon()


class _Received(NamedTuple):
    """What an abandoned stream had received, read without a lock (a finalizer may take it)."""

    chunks: tuple[Any, ...]
    messages: Any
    model: str
    provider: str | None

    @classmethod
    def of(cls, stream: CustomStreamWrapper) -> _Received:
        return cls(
            tuple(getattr(stream, "chunks", None) or ()),
            getattr(stream, "messages", None),
            getattr(stream, "model", None) or "",
            getattr(stream, "custom_llm_provider", None) or None,
        )


def _finish_abandoned(call_id: str, received: _Received, latency_ms: float, deferred: bool) -> None:
    """Close the abandoned stream's call as ``cancelled`` with the usage ``received``,
    unless LiteLLM's success event recorded it already. ``deferred``: the settle and
    storage are handed to the worker (called on the host's thread); else this runs on the
    worker (from a finalizer) and finishes there. Never raises."""
    try:
        claimed, pending = _registry.claim(call_id)
        if not claimed or pending is None:
            return
        tracker, call = pending
        secrets = _attempt_keys.take(call_id)  # the call's own key, kept out of the row
        try:
            usage, built = _received_usage(received)
        except Exception as exc:  # recorded without usage rather than lost, its hold released
            _report("litellm.stream_abandoned", exc)
            usage, built = None, None
        tracker.finish(
            call,
            payload=usage,
            response_model=without_secrets(_response_model(built), secrets),
            provider=received.provider or call.provider,
            # the service tier (OpenAI) or speed (Anthropic) the chunks say it was served at
            price_context=price_context_of(built),
            status="cancelled",
            streamed=True,
            metadata=_ABANDONED_METADATA,
            latency_ms=latency_ms,
            defer=deferred,
        )
    except Exception as exc:
        _report("litellm.stream_abandoned", exc)


def _received_usage(received: _Received) -> tuple[Any, Any]:
    """Usage of the chunks received so far, as LiteLLM would have logged it at the end
    (the provider's usage chunk if one came, else LiteLLM's token count), and the response
    LiteLLM assembles from them (its model, and the service tier it was served at), if any."""
    built = None
    if received.chunks:
        built = litellm.stream_chunk_builder(list(received.chunks), messages=received.messages)
        usage = getattr(built, "usage", None)
        if usage is not None:
            return usage, built
    if received.messages:
        prompt = litellm.token_counter(model=received.model, messages=received.messages)
        return {"prompt_tokens": int(prompt), "completion_tokens": 0}, built
    return None, built


def _response_model(built: Any) -> str | None:
    """The model the received chunks name (``gpt-5-2025-08-07``), as an answer's is read."""
    model = getattr(built, "model", None)
    return model if isinstance(model, str) and model else None
