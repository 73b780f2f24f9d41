"""The LiteLLM entry point: a ``CustomLogger`` that turns LiteLLM's call records into Tracker calls.

LiteLLM tells a logger about a call once it is over: ``log_success_event`` /
``log_failure_event`` (sync calls; success on a logging thread, failure on the
caller's thread) or their ``async_`` twins (async calls), each with
``kwargs["standard_logging_object"]``, the start and end times, and the response.
A stream is reported once, when it ends. The logger reads what LiteLLM says (the
call id, model, provider, usage, cache hit, LiteLLM's own ``response_cost``) and
hands it to the Tracker, which prices, settles guards, stores and logs it.

Two registries are shared by every logger in the process:

* the *in-flight* map: calls opened before LiteLLM ran, by the ``completion`` /
  ``acompletion`` wrappers or the proxy's ``async_pre_call_hook``, keyed by the
  ``litellm_call_id`` they handed LiteLLM. The event of such a call closes that
  Call (settling its guards' reservations) instead of recording a new one; a wrapper
  that got LiteLLM's answer first closes it from the answer (``take``), and the
  event then adds nothing.
* the *recent ids*: call ids already recorded. LiteLLM fires callbacks twice on
  some paths, and a logger may be registered twice (globally and per call); the
  ledger would ignore a second row with the same id anyway, but the Tracker (and
  the guards' settlement) should not run twice, so the second one stops here.

Retries and fallbacks (the Router's, ``completion(fallbacks=...)``, a LiteLLM Proxy's)
run several attempts under one ``litellm_call_id``: LiteLLM logs each failed attempt
as a failure and the attempt that answered as the success. So only a success closes
the call under its id (and settles its reservation); a failure event is recorded
under the failed attempt's own id (``failed_attempt_id``) and leaves an opened call
waiting. Whoever knows the call is over without a success releases it: the wrapper
when LiteLLM raises, the proxy's ``async_post_call_failure_hook``.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import inspect
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, TypeGuard, overload

from litellm.integrations.custom_logger import CustomLogger

from costledger import (
    GuardRefusal,
    RateLimited,
    ResponseInfo,
    Tracker,
    UsageError,
    UsageEvent,
    get_tracker,
    read_response,
)
from costledger._attribution import EMPTY as _NO_SCOPE
from costledger._attribution import Attribution, current_attribution
from costledger._events import new_event_id
from costledger._extract import price_context_of
from costledger._guards._estimate import request_json_text, requested_choices
from costledger._guards._store import GuardStore, in_background, off_loop, store_for
from costledger._http._errors import without_secrets
from costledger._pricing._book import BOOK_SOURCE
from costledger._sources.litellm_payload import (
    attribution_values,
    bare_model,
    call_secrets,
    error_message,
    failed_attempt_id,
    litellm_cost_failed,
    proxy_request_metadata,
    reported_cost,
    without_route,
)
from costledger._tracker import check_tracker

if TYPE_CHECKING:
    from costledger._events import CallStatus
    from costledger._tracker import Call

__all__ = [
    "DISAGREEMENT_THRESHOLD",
    "MAX_IN_FLIGHT",
    "MAX_RECENT_IDS",
    "REFUSAL_STATUS_CODE",
    "CostLedgerLogger",
]

MAX_IN_FLIGHT: Final = 10_000
"""Calls opened before LiteLLM ran and not yet reported; past it the oldest is released."""

MAX_RECENT_IDS: Final = 50_000
"""Call ids remembered as recorded, to drop LiteLLM's duplicate callbacks."""

DISAGREEMENT_THRESHOLD: Final = Decimal("0.01")
"""LiteLLM's ``response_cost`` further than this (relative) from costledger's price is logged."""

REFUSAL_STATUS_CODE: Final = 429
"""The HTTP status a LiteLLM Proxy answers when a costledger guard refuses a request."""

_PLAIN_CALL_TYPES: Final = frozenset({"completion", "acompletion"})
_EMPTY: Final[Mapping[str, Any]] = {}


class _Registry:
    """Calls in flight by LiteLLM call id, and the ids already recorded; one lock, bounded.

    A LiteLLM call id usually has one opened call. On a LiteLLM Proxy a client may send one
    ``x-litellm-call-id`` with several requests (a retry after a timeout, while the first
    may still be running): each is opened under an event id of its own (``<id>:<n>``,
    ``open_id``) and waits under the LiteLLM id, first opened (registered) first closed.
    """

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT, max_recent: int = MAX_RECENT_IDS):
        self._lock = threading.Lock()
        # LiteLLM call id -> its opened calls, oldest first; empty: the id is claimed by a
        # call being opened (``reserve_id``/``open_id``) that has not registered yet.
        self._in_flight: OrderedDict[str, deque[tuple[Tracker, Call]]] = OrderedDict()
        # id recorded -> the starts (epoch microseconds) of the successes recorded under it
        self._recent: dict[str, tuple[int, ...]] = {}
        self._order: deque[str] = deque()
        # LiteLLM call id in flight -> its last failed attempt the provider billed (see
        # ``hold_billed``); an entry goes with the id's last opened call, so it is bounded
        self._billed: dict[str, _Billed] = {}
        self.max_in_flight = max_in_flight
        self.max_recent = max_recent

    def reserve_id(self, call_id: str) -> bool:
        """Claim ``call_id`` for a call about to be opened, unless it is recorded or in
        flight (a call under it would be dropped as a duplicate): whether it was claimed.
        ``register`` fills the claim; ``unreserve`` gives it up."""
        with self._lock:
            return self._claim(call_id)

    def open_id(self, call_id: str) -> str:
        """The event id for one more call under LiteLLM's ``call_id`` (the proxy's, which
        the client may repeat): ``call_id`` itself, claimed as ``reserve_id`` does, when it
        is unknown; else ``<call_id>:<n>`` (n = 2, 3, ... the first free), remembered as
        used. The call is registered under ``call_id`` either way."""
        with self._lock:
            if self._claim(call_id):
                return call_id
            n = 2
            while self._taken(derived := f"{call_id}:{n}"):
                n += 1
            self._mark(derived)
            return derived

    def _taken(self, call_id: str) -> bool:
        """Whether ``call_id`` is recorded or in flight (claimed included); under the lock."""
        return call_id in self._recent or call_id in self._in_flight

    def _claim(self, call_id: str) -> bool:
        """Claim ``call_id`` (an empty in-flight entry) unless it is taken; under the lock."""
        if self._taken(call_id):
            return False
        self._in_flight[call_id] = deque()
        return True

    def unreserve(self, call_id: str, event_id: str | None = None) -> None:
        """The call claimed by ``reserve_id(call_id)`` or ``open_id(call_id)`` (which gave
        ``event_id``) was not opened (refused, or costledger failed): its id is free again."""
        with self._lock:
            if event_id is not None and event_id != call_id:
                self._recent.pop(event_id, None)  # a derived id; the next call may take it
            elif self._in_flight.get(call_id) == deque():
                del self._in_flight[call_id]

    def register(self, call_id: str, tracker: Tracker, call: Call) -> None:
        evicted: list[tuple[Tracker, Call]] = []
        billed: _Billed | None = None
        with self._lock:
            pending = self._in_flight.pop(call_id, None)
            if pending is None:
                pending = deque()
            pending.append((tracker, call))
            self._in_flight[call_id] = pending  # the newest last
            if len(self._in_flight) > self.max_in_flight:
                evicted_id, calls = self._in_flight.popitem(last=False)
                evicted.extend(calls)
                billed = self._billed.pop(evicted_id, None)
        for i, (tracker_, call_) in enumerate(evicted):
            # No event came for the oldest call: release what its guards reserved, or the
            # reservation would stay held forever. A late event still records it, unpaired.
            # A failed attempt the provider billed settles it instead.
            if i == 0 and billed is not None:
                billed.settle(tracker_, call_)
            else:
                tracker_.cancel(call_)

    def claim(
        self, call_id: str, started: int | None = None
    ) -> tuple[bool, tuple[Tracker, Call] | None]:
        """Mark ``call_id`` recorded: whether this success is new, and the opened call it
        closes, if any. ``started`` (the attempt's start, epoch microseconds) tells a second
        report of a success from another success. A success under an id already recorded is
        new only when a call is open under the id (a repeated proxy call id), and closes the
        oldest."""
        with self._lock:
            pending = self._in_flight.get(call_id)
            seen = self._recent.get(call_id)
            if seen is None:
                self._mark(call_id, started)
            elif not pending or (started is not None and started in seen):
                return False, None
            elif started is not None:
                self._recent[call_id] = (*seen, started)
            opened = self._pop(call_id, pending)
            billed = self._billed.pop(call_id, None) if opened is not None else None
        if billed is not None:  # an attempt billed before the one that answered: its own row
            billed.record()
        return True, opened

    def take(self, call_id: str) -> tuple[Tracker, Call] | None:
        """A wrapper saw LiteLLM return the call's answer: the opened call under
        ``call_id``, marked recorded (LiteLLM's own success event for the id, should it
        come, then adds nothing), or ``None`` when none is open or LiteLLM's event
        already recorded it (the event closed it)."""
        with self._lock:
            pending = self._in_flight.get(call_id)
            if not pending or call_id in self._recent:
                return None
            self._mark(call_id)
            opened = self._pop(call_id, pending)
            billed = self._billed.pop(call_id, None)
        if billed is not None:
            billed.record()
        return opened

    def claim_attempt(
        self, call_id: str, attempt_id: str
    ) -> tuple[bool, tuple[Tracker, Call] | None]:
        """Mark a failed attempt of ``call_id`` recorded, leaving the call open: whether it
        is new (and the call not already over), and the call's in-flight Call if any."""
        with self._lock:
            pending = self._in_flight.get(call_id)
            if (call_id in self._recent and not pending) or not self._mark(attempt_id):
                return False, None
            return True, pending[0] if pending else None

    def hold_billed(self, call_id: str, billed: _Billed) -> bool:
        """A failed attempt of ``call_id`` that the provider billed (LiteLLM rejected its
        answer afterwards): kept to close the call with, should no other attempt succeed
        (``release``), else recorded as its own row when the call closes. Whether it is
        kept: ``False`` when no call is open under the id (record it now). An attempt
        billed before it is recorded now as its own row."""
        with self._lock:
            if not self._in_flight.get(call_id):
                return False
            previous = self._billed.get(call_id)
            self._billed[call_id] = billed
        if previous is not None:
            previous.record()
        return True

    def refused(self, call_id: str) -> None:
        """A guard refused a call under ``call_id``: the failure LiteLLM logs for it is not
        recorded (it never reached a model). Calls open under the id are left as they are."""
        with self._lock:
            self._mark(call_id)

    def _mark(self, call_id: str, started: int | None = None) -> bool:
        if call_id in self._recent:
            return False
        self._recent[call_id] = () if started is None else (started,)
        self._order.append(call_id)
        while len(self._order) > self.max_recent:
            self._recent.pop(self._order.popleft(), None)
        return True

    def _pop(
        self, call_id: str, pending: deque[tuple[Tracker, Call]] | None
    ) -> tuple[Tracker, Call] | None:
        if not pending:
            return None
        first = pending.popleft()
        if not pending:
            del self._in_flight[call_id]
        return first

    def release(self, call_id: str) -> bool:
        """The call is over with no success to close it: release its reservations (nothing
        is recorded; its failed attempts were, as they came), or, when an attempt the
        provider billed is held (``hold_billed``), settle them with that attempt, recorded
        as its row. Whether one was in flight."""
        with self._lock:
            pending = self._pop(call_id, self._in_flight.get(call_id))
            billed = self._billed.pop(call_id, None) if pending is not None else None
        if pending is None:
            return False
        if billed is not None:
            billed.settle(*pending)
        else:
            pending[0].cancel(pending[1])
        return True

    def in_flight(self, call_id: str) -> bool:
        with self._lock:
            return bool(self._in_flight.get(call_id))

    def known(self, call_id: str) -> bool:
        """Whether ``call_id`` is in flight or already recorded (a new call must not reuse it)."""
        with self._lock:
            return self._taken(call_id)

    def clear(self) -> None:
        with self._lock:
            self._in_flight.clear()
            self._recent.clear()
            self._order.clear()
            self._billed.clear()


class _Billed:
    """A failed attempt of an opened call that the provider billed: LiteLLM rejected its
    answer after it came (``litellm.post_call_rules``, JSON schema validation), so the
    failure event carries the provider's body (``original_response``) with its usage.

    Held by the registry until the call ends: with no attempt succeeding, the call's
    reservations are settled with it (``settle``: the attempt is the call's row, so a token
    rate limit counts its tokens); else it is recorded as a row of its own (``record``),
    as a failed attempt without usage is at once. Either way under the attempt's id."""

    __slots__ = ("attempt_id", "attribution", "fields", "model", "started_at", "tracker")

    def __init__(
        self,
        tracker: Tracker,
        attribution: Attribution,
        attempt_id: str,
        model: str | None,
        started_at: datetime | None,
        fields: dict[str, Any],
    ) -> None:
        self.tracker = tracker
        self.attribution = attribution
        self.attempt_id = attempt_id
        self.model = model
        self.started_at = started_at
        self.fields = fields  # ``Tracker.finish``'s keywords

    def settle(self, tracker: Tracker, call: Call) -> None:
        """Close ``call`` (opened by a wrapper or the proxy hook) as this attempt. Never raises."""
        try:
            # the row is the attempt's, as when it is recorded on its own (and as ``costledger
            # ingest`` names it): the LiteLLM call id stays free for a later success under it
            call._id = self.attempt_id
            if self.started_at is not None:
                call.started_at = self.started_at
            if self.model:
                call.model = self.model
            tracker.finish(call, defer=not tracker.has_guards, **self.fields)
        except Exception as exc:
            _report("litellm.log_event", exc)
            tracker.cancel(call)

    def record(self) -> None:
        """Record this attempt as a row of its own (another attempt closes the call)."""
        try:
            tracker = self.tracker
            tracker.record(
                self.model,
                source="litellm",
                call_id=self.attempt_id,
                attribution=self.attribution,
                started_at=self.started_at,
                defer=not tracker.has_guards,
                **self.fields,
            )
        except Exception as exc:
            _report("litellm.log_event", exc)


_registry: Final = _Registry()


class _Scopes:
    """The ``costledger.attribute`` scopes in force where each LiteLLM call started, by its
    ``litellm_call_id``: LiteLLM reports some events from a thread that does not have them
    (a sync stream's success from its executor, without the caller's context; its
    mid-stream failure from a thread of its own). Noted on the caller's thread
    (``log_pre_api_call``) only when a scope is in force, taken when the call's event comes;
    the oldest of ``maximum`` is dropped (a call whose event never comes)."""

    def __init__(self, maximum: int = MAX_IN_FLIGHT) -> None:
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, Attribution] = OrderedDict()
        self.maximum = maximum

    def note(self, call_id: str, scope: Attribution) -> None:
        with self._lock:
            by_id = self._by_id
            by_id[call_id] = scope
            if len(by_id) > self.maximum:
                by_id.popitem(last=False)

    def take(self, call_id: str) -> Attribution | None:
        if not self._by_id:  # no scope noted (the common case): no lock
            return None
        with self._lock:
            return self._by_id.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def clear(self) -> None:
        with self._lock:
            self._by_id.clear()


_scopes: Final = _Scopes()


class _AttemptKeys:
    """The keys the attempts of a call a wrapper opened were sent with, by its
    ``litellm_call_id``: LiteLLM shows each attempt's (resolved from the environment if
    the caller gave none) to ``log_pre_api_call``, and not to the wrapper, which records
    the call from its answer (``finish_from_response``), where a server may echo the key
    in the model or the id. Taken then, or dropped when the call is released; the oldest
    of ``maximum`` is dropped (a call whose answer never comes: a cancelled one, a stream,
    which LiteLLM's own event records, with the keys)."""

    def __init__(self, maximum: int = MAX_IN_FLIGHT) -> None:
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.maximum = maximum

    def note(self, call_id: str, keys: tuple[str, ...]) -> None:
        with self._lock:
            by_id = self._by_id
            known = by_id.get(call_id, ())
            by_id[call_id] = (*known, *(key for key in keys if key not in known))
            if len(by_id) > self.maximum:
                by_id.popitem(last=False)

    def take(self, call_id: str) -> tuple[str, ...]:
        if not self._by_id:  # no key noted (the common case): no lock
            return ()
        with self._lock:
            return self._by_id.pop(call_id, ())

    def __len__(self) -> int:
        return len(self._by_id)

    def clear(self) -> None:
        with self._lock:
            self._by_id.clear()


_attempt_keys: Final = _AttemptKeys()

# What ``CustomLogger.__init__`` takes by name (``turn_off_message_logging``, ...): it
# swallows any other keyword, so a slip such as ``traker=t`` would leave the logger on the
# default tracker without a word. Read from its signature, to follow LiteLLM's versions.
_CUSTOM_LOGGER_KEYWORDS: Final = tuple(
    name
    for name, parameter in inspect.signature(CustomLogger.__init__).parameters.items()
    if name != "self"
    and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
)


def _check_logger_keywords(kwargs: Mapping[str, Any]) -> None:
    """``TypeError`` naming the keywords of ``CostLedgerLogger(...)`` that neither it nor
    LiteLLM's ``CustomLogger`` takes, with the name likely meant."""
    unknown = [name for name in kwargs if name not in _CUSTOM_LOGGER_KEYWORDS]
    if not unknown:
        return
    known = ("tracker", *_CUSTOM_LOGGER_KEYWORDS)
    named = ", ".join(_with_likely_name(name, known) for name in unknown)
    raise TypeError(
        f"CostLedgerLogger() got unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
        f"{named}; it takes {', '.join(known)}"
    )


def _with_likely_name(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


class CostLedgerLogger(CustomLogger):
    """Record the exact cost of every LiteLLM call in costledger's ledger.

    >>> litellm.callbacks = [CostLedgerLogger()]               # every call
    >>> litellm.completion(..., callbacks=[CostLedgerLogger()])  # one call

    ``tracker`` defaults to the process default (``costledger.configure``), looked
    up at each call, so the logger may be built before costledger is configured.

    Each call is priced by costledger's pricer from the usage LiteLLM reports;
    LiteLLM's own ``response_cost`` is kept beside it as ``reported_cost``, and a
    disagreement over 1% is logged once per model. Cache hits (LiteLLM caching)
    cost 0. Attribution comes from the request's ``metadata`` (``user``, ``team``,
    ``project``, ``feature``, ``tags``, any other plain value as metadata, and a
    ``costledger`` mapping of extra metadata), the OpenAI ``user`` parameter (end
    user), the LiteLLM Proxy's key owner and team, and ``costledger.attribute``
    scopes around the call.

    An SDK callback cannot stop a call; budgets and rate limits are enforced by the
    ``completion`` / ``acompletion`` wrappers, and on a LiteLLM Proxy by
    ``async_pre_call_hook``, which raises the guard's refusal with ``status_code``
    429 so the proxy answers 429.
    """

    def __init__(self, tracker: Tracker | None = None, **kwargs: Any) -> None:
        _check_logger_keywords(kwargs)
        self._tracker = check_tracker("CostLedgerLogger()", tracker)
        super().__init__(**kwargs)

    @property
    def tracker(self) -> Tracker:
        """The Tracker this logger records into (the process default unless one was given)."""
        return self._tracker if self._tracker is not None else get_tracker()

    def __repr__(self) -> str:
        return f"CostLedgerLogger(tracker={self._tracker!r})"

    # -- LiteLLM's callbacks ------------------------------------------------------------------
    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        """On the caller's thread, before each attempt: note the ``costledger.attribute``
        scopes in force, for an event LiteLLM reports from a thread without them, and the
        key of an attempt of a call a wrapper opened (see ``_AttemptKeys``)."""
        try:
            call_id = kwargs.get("litellm_call_id") if _is_map(kwargs) else None
            if not call_id or not isinstance(call_id, str):
                return
            keys = call_secrets(kwargs)
            if keys and _registry.in_flight(call_id):
                _attempt_keys.note(call_id, keys)
            scope = current_attribution()
            if scope is not _NO_SCOPE:
                _scopes.note(call_id, scope)
        except Exception as exc:  # never break the host
            _report("litellm.log_pre_api_call", exc)

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._on_event(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._on_event(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._aon_event(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._aon_event(kwargs, response_obj, start_time, end_time, failed=True)

    async def _aon_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any, *, failed: bool
    ) -> None:
        """An async call's event, on the event loop; in a worker thread when the guards'
        settles wait on a store across the network (Redis, a database), so a slow or
        stuck store never blocks the loop. Either way it is recorded before this returns."""
        store = _guard_store(self.tracker)
        if store is None:
            self._on_event(kwargs, response_obj, start_time, end_time, failed=failed)
            return
        event = functools.partial(self._on_event, failed=failed)
        await off_loop(store, event, kwargs, response_obj, start_time, end_time)

    async def async_pre_call_hook(
        self,
        user_api_key_dict: Any,
        cache: Any,
        data: dict[str, Any],
        call_type: Any,
    ) -> None:
        """LiteLLM Proxy: run costledger's guards before the request goes to a model.

        The reservation is settled by this request's success event (same
        ``litellm_call_id``), or released by ``async_post_call_failure_hook`` when the
        request fails (every retry and fallback failed, or another hook rejected it). A
        refusal (``BudgetExceeded``, ``RateLimited``) is raised with ``status_code`` 429
        (and ``Retry-After`` for a rate limit), which the proxy turns into its HTTP
        answer; the request's failure event then records nothing.
        """
        try:
            tracker = self.tracker
            if not tracker.has_guards:
                return None
            call_id = _proxy_call_id(data)
            # The client may send its x-litellm-call-id again (a retry after a timeout, the
            # first request perhaps still running): another billed call, opened under an
            # event id of its own, and closed by a success under the same LiteLLM id.
            event_id = _registry.open_id(call_id)
            try:
                values = _attribution_values(_hook_metadata(data), data.get("user"))
                _add_key_owner(values, user_api_key_dict)
                start = _start_arguments(tracker, data, event_id, values)
                call = await tracker.astart(**start)
            except BaseException as exc:
                _registry.unreserve(call_id, event_id)
                if isinstance(exc, GuardRefusal):
                    _registry.refused(call_id)  # the proxy logs the refused request: skip it
                    # the failure hook and that failure event get the refusal: nothing of
                    # this request is open (another request under its id may be)
                    exc._costledger_litellm_refused = True  # type: ignore[attr-defined]
                    raise _as_http_refusal(exc) from None
                raise
            _registry.register(call_id, tracker, call)
        except GuardRefusal:
            raise
        except Exception as exc:  # costledger's own failure must not stop the proxy's request
            _report("litellm.async_pre_call_hook", exc)
        return None

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """LiteLLM Proxy: the request failed (every attempt, or a hook rejected it before
        any model was called). Release what ``async_pre_call_hook`` reserved for it; the
        failed attempts' own failure events record them. Returns ``None``: the proxy's
        answer is left as it is."""
        try:
            if _refused_here(original_exception):
                return None  # refused by async_pre_call_hook: it reserved nothing
            call_id = _proxy_call_id(request_data, mint=False)
            if call_id is not None:
                release_off_loop(self.tracker, call_id)
        except Exception as exc:  # never break the proxy's error handling
            _report("litellm.async_post_call_failure_hook", exc)
        return None

    # -- the SDK wrappers, bound to this logger's tracker ---------------------------------------
    def completion(self, *args: Any, **kwargs: Any) -> Any:
        """``litellm.completion`` with this logger's Tracker's guards run first.

        See ``costledger_litellm.completion``.
        """
        from ._wrappers import run_completion

        return run_completion(self, args, kwargs)

    async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
        """``litellm.acompletion`` with this logger's guards run first."""
        from ._wrappers import run_acompletion

        return await run_acompletion(self, args, kwargs)

    # -- translation ----------------------------------------------------------------------------
    def _on_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any, *, failed: bool
    ) -> UsageEvent | None:
        try:
            return self._record(kwargs, response_obj, start_time, end_time, failed)
        except Exception as exc:  # never break the host, whatever LiteLLM handed us
            _report("litellm.log_event", exc)
            return None

    def _record(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any, failed: bool
    ) -> UsageEvent | None:
        if not _is_map(kwargs):
            return None
        slo = kwargs.get("standard_logging_object")
        if not _is_map(slo):
            slo = _EMPTY
        call_id = _text(slo.get("litellm_call_id")) or _text(kwargs.get("litellm_call_id"))
        # the caller's scopes, for an event reported without them (a sync stream's)
        scope = _scopes.take(call_id) if call_id is not None else None
        pending: tuple[Tracker, Call] | None = None
        attempt_of: str | None = None  # a failed attempt: the LiteLLM call it belongs to
        if call_id is None:
            call_id = new_event_id()
        elif failed:
            if _refused_here(kwargs.get("exception")):
                return None  # the proxy's log of a request the hook refused: no model call
            # Retries and fallbacks fail under the call's id before the attempt that
            # answers succeeds under it: a failure is its own row and leaves the call open.
            attempt_of = call_id
            call_id = failed_attempt_id(call_id, _epoch(slo.get("startTime"), start_time))
            new, pending = _registry.claim_attempt(attempt_of, call_id)
            if not new:
                return None
        else:
            # the attempt's start tells a second report of this success (a duplicate) from
            # the success of another request the client sent under the same id
            started = _epoch(slo.get("startTime"), start_time)
            new, pending = _registry.claim(
                call_id, None if started is None else round(started * 1_000_000)
            )
            if not new:
                return None

        # A server may echo the key it was sent (in its error, the model it names, its id):
        # removed from what is recorded, as the HTTP transport does with its request's key.
        secrets = call_secrets(kwargs)
        provider = _text(slo.get("custom_llm_provider")) or _text(kwargs.get("custom_llm_provider"))
        model = _text(slo.get("model")) or _text(kwargs.get("model"))
        model = bare_model(without_secrets(model, secrets), provider)
        started_at = _utc(start_time, slo.get("startTime"))
        latency_ms = _latency_ms(start_time, end_time, slo)
        cache_hit = slo.get("cache_hit") is True or kwargs.get("cache_hit") is True
        streamed = slo.get("stream") is True or kwargs.get("stream") is True
        status: CallStatus = "ok"
        error: BaseException | str | None = None
        metadata: dict[str, Any] = {}
        call_type = _text(slo.get("call_type")) or _text(kwargs.get("call_type"))
        if call_type is not None and call_type not in _PLAIN_CALL_TYPES:
            metadata["litellm_call_type"] = call_type
        model_group = _text(slo.get("model_group"))
        if model_group:
            metadata["litellm_model_group"] = without_secrets(model_group, secrets)
        if failed:
            error, status = _error_of(kwargs, slo)
            if isinstance(error, str):
                error = without_secrets(error, secrets)
            message = _text(slo.get("error_str"))
            if message:
                metadata["error_message"] = error_message(message, secrets)
            if attempt_of is not None:
                metadata["litellm_call_id"] = attempt_of
        usage = _usage_payload(response_obj, slo, failed)
        reported_cost = _reported_cost(slo, kwargs, failed, usage)
        if not failed:
            response_model = _text(_field(response_obj, "model"))
            request_id = _text(_field(response_obj, "id"))
            # the service tier (OpenAI) or speed (Anthropic) the response says it was served at
            price_context = price_context_of(response_obj)
        elif usage is None and (answer := _billed_answer(kwargs, provider)) is not None:
            # an answer the provider billed and LiteLLM rejected after: priced from its body
            usage, response_model, request_id = answer.usage, answer.model, answer.response_id
            price_context = dict(answer.price_context) if answer.price_context else None
        else:
            response_model = request_id = price_context = None
        response_model = without_secrets(response_model, secrets)
        request_id = without_secrets(request_id, secrets)

        # Pricing, storage and logging leave LiteLLM's thread (for acompletion: the event
        # loop) unless guards are on, whose spend is then settled before this returns.
        if pending is not None and not failed:
            tracker, call = pending
            _attempt_keys.take(call_id)  # this event carries the keys: drop what was noted
            if started_at is not None:
                call.started_at = started_at  # LiteLLM's clock: the same one latency comes from
            if model:
                call.model = model  # the model that answered (a fallback's, a Router deployment's)
            event = tracker.finish(
                call,
                payload=usage,
                response_model=response_model,
                provider=provider,
                status=status,
                error=error,
                request_id=request_id,
                streamed=streamed,
                cache_hit=cache_hit,
                reported_cost=reported_cost,
                metadata=metadata,
                latency_ms=latency_ms,
                price_context=price_context,
                defer=not tracker.has_guards,
                on_event=_check_reported_cost,
            )
        else:
            values: Attribution | dict[str, Any]
            if pending is not None:  # a failed attempt of an opened call: its tracker and who
                tracker, values = pending[0], pending[1].attribution
                model = model or pending[1].model
                if usage is not None and attempt_of is not None:
                    # billed: it closes the call if no other attempt succeeds (``_Billed``)
                    billed = _Billed(
                        tracker,
                        pending[1].attribution,
                        call_id,
                        model,
                        started_at,
                        {
                            "payload": usage,
                            "provider": provider,
                            "response_model": response_model,
                            "status": status,
                            "error": error,
                            "latency_ms": latency_ms,
                            "request_id": request_id,
                            "streamed": streamed,
                            "cache_hit": cache_hit,
                            "reported_cost": reported_cost,
                            "metadata": metadata,
                            "price_context": price_context,
                            "on_event": _check_reported_cost,
                        },
                    )
                    if _registry.hold_billed(attempt_of, billed):
                        return None
                    billed.record()  # the call closed meanwhile
                    return None
            else:
                tracker = self.tracker
                values = _attribution_values(_request_metadata(kwargs), kwargs.get("user"), slo)
                if scope is not None and current_attribution() is _NO_SCOPE:
                    # the request's own values win over the scopes, as ``record`` merges them
                    values = scope.merge(Attribution.from_mapping(values))
            event = tracker.record(
                model,
                payload=usage,
                source="litellm",
                provider=provider,
                response_model=response_model,
                status=status,
                error=error,
                latency_ms=latency_ms,
                call_id=call_id,
                attribution=values,
                started_at=started_at,
                request_id=request_id,
                streamed=streamed,
                cache_hit=cache_hit,
                reported_cost=reported_cost,
                metadata=metadata,
                price_context=price_context,
                defer=not tracker.has_guards,
                on_event=_check_reported_cost,
            )
        return event


# --- reading LiteLLM's records ---------------------------------------------------------------


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # LiteLLM's records are plain dicts; the ABC check costs a microsecond, so try dict first.
    return type(value) is dict or isinstance(value, Mapping)


def _is_list(value: Any) -> TypeGuard[Sequence[Any]]:
    return type(value) in (list, tuple) or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    )


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None and isinstance(obj, Mapping):
        return obj.get(name)
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _usage_payload(response_obj: Any, slo: Mapping[str, Any], failed: bool) -> Any:
    """The usage part to price: the response's own, else the one LiteLLM logged.

    LiteLLM's usage follows OpenAI's convention for every provider (cache tokens are
    inside ``prompt_tokens``), which ``costledger.extract_usage`` reads as such.
    """
    if not failed:
        usage = _field(response_obj, "usage")
        if usage is not None:
            return usage
    meta = slo.get("metadata")
    usage = meta.get("usage_object") if _is_map(meta) else None
    if not usage:
        hidden = slo.get("hidden_params")
        usage = hidden.get("usage_object") if _is_map(hidden) else None
    if usage:
        return usage
    if failed:
        return None  # a failed call with no usage cost nothing we know of
    prompt, completion = slo.get("prompt_tokens"), slo.get("completion_tokens")
    if type(prompt) is int and type(completion) is int and (prompt or completion):
        return {"prompt_tokens": prompt, "completion_tokens": completion}
    return None


def _billed_answer(kwargs: Mapping[str, Any], provider: str | None) -> ResponseInfo | None:
    """A failed call's answer the provider billed: LiteLLM's ``original_response`` (the
    provider's body, JSON text or a mapping) when it has usage, read as a response is;
    ``None`` for anything else (an HTTP error's text, a stream, a body without usage)."""
    original = kwargs.get("original_response")
    if not original or not isinstance(original, (str, bytes, bytearray, Mapping)):
        return None
    try:
        return read_response(original, provider)
    except Exception:  # no usage in it (an error body): the failure cost nothing we know of
        return None


def _reported_cost(
    slo: Mapping[str, Any], kwargs: Mapping[str, Any], failed: bool, usage: Any
) -> Decimal | None:
    """LiteLLM's own price of the call, or ``None`` when it has none: its cost lookup
    failed (a model it cannot price) when ``kwargs["response_cost"]`` is ``None`` or the
    payload carries ``response_cost_failure_debug_info``; the payload's ``0.0`` is then a
    placeholder, not a price to compare with."""
    value = slo.get("response_cost")
    if value is None:
        value = kwargs.get("response_cost")
    unpriced = litellm_cost_failed(slo) or (
        "response_cost" in kwargs and kwargs["response_cost"] is None
    )
    try:
        return reported_cost(value, failed=failed, has_usage=usage is not None, unpriced=unpriced)
    except UsageError:
        return None  # LiteLLM's figure is only kept for comparison: never lose the call for it


def _error_of(
    kwargs: Mapping[str, Any], slo: Mapping[str, Any]
) -> tuple[BaseException | str, CallStatus]:
    exc = kwargs.get("exception")
    if isinstance(exc, BaseException):
        cancelled = isinstance(exc, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt))
        return exc, "cancelled" if cancelled else "error"
    info = slo.get("error_information")
    if _is_map(info):
        error_class = _text(info.get("error_class"))
        if error_class:
            return error_class, "error"
    return "Exception", "error"


def _utc(moment: Any, fallback_epoch: Any = None) -> datetime | None:
    """LiteLLM's times are naive local ``datetime.now()``; events are in UTC."""
    if isinstance(moment, datetime):
        # astimezone() reads a naive datetime as local time, which is what LiteLLM wrote.
        return moment.astimezone(timezone.utc)
    for value in (moment, fallback_epoch):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return datetime.fromtimestamp(value, timezone.utc)
    return None


def _epoch(value: Any, moment: Any) -> float | None:
    """A failed attempt's start in epoch seconds: the payload's ``startTime`` (what
    ``costledger ingest`` reads too), else LiteLLM's ``start_time``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(moment, datetime):
        return moment.timestamp()
    return None


def _latency_ms(start_time: Any, end_time: Any, slo: Mapping[str, Any]) -> float | None:
    if (
        isinstance(start_time, datetime)
        and isinstance(end_time, datetime)
        and (start_time.tzinfo is None) == (end_time.tzinfo is None)
    ):
        return max((end_time - start_time).total_seconds() * 1000.0, 0.0)
    start, end = slo.get("startTime"), slo.get("endTime")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return max((end - start) * 1000.0, 0.0)
    return None


def _request_metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The caller's metadata: ``litellm_params.metadata`` (the SDK's ``metadata=``), less
    what a LiteLLM Proxy adds to it (see ``proxy_request_metadata``)."""
    params = kwargs.get("litellm_params")
    meta = params.get("metadata") if _is_map(params) else None
    if not _is_map(meta):
        meta = kwargs.get("metadata")
    if not _is_map(meta):
        return None
    return proxy_request_metadata(meta)


def _hook_metadata(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The caller's metadata of a LiteLLM Proxy request (``data["metadata"]``, or
    ``litellm_metadata`` on the routes that use it), less the proxy's own keys: what the
    request's logged event reads (``_request_metadata``)."""
    for key in ("metadata", "litellm_metadata"):
        meta = data.get(key)
        if _is_map(meta):
            return proxy_request_metadata(meta)
    return None


# Shared with ``costledger ingest``, which reads the same LiteLLM records from log lines.
_attribution_values = attribution_values


def _add_key_owner(values: dict[str, Any], user_api_key_dict: Any) -> None:
    """LiteLLM Proxy: the virtual key's end user, owner and team, where the request said none."""
    for key, attrs in (
        ("user", ("end_user_id", "user_id")),
        ("team", ("team_id",)),
    ):
        if key in values:
            continue
        for attr in attrs:
            value = getattr(user_api_key_dict, attr, None)
            if value:
                values[key] = value
                break


@overload
def _proxy_call_id(data: Mapping[str, Any]) -> str: ...
@overload
def _proxy_call_id(data: Mapping[str, Any], *, mint: bool) -> str | None: ...
def _proxy_call_id(data: Mapping[str, Any], *, mint: bool = True) -> str | None:
    logging_obj = data.get("litellm_logging_obj")
    call_id = _text(getattr(logging_obj, "litellm_call_id", None)) or _text(
        data.get("litellm_call_id")
    )
    if call_id or not mint:
        return call_id or None
    return new_event_id()


# --- the start of a call (wrappers and the proxy hook) ----------------------------------------


def _start_arguments(
    tracker: Tracker, request: Mapping[str, Any], call_id: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """``Tracker.start`` arguments for a LiteLLM request (the kwargs of ``completion``)."""
    model = _text(request.get("model"))
    provider = _text(request.get("custom_llm_provider"))
    if model is not None:
        model, provider = _split_model(model, provider)
    start: dict[str, Any] = {
        "source": "litellm",
        "model": model,
        "provider": provider,
        "call_id": call_id,
        "attribution": values,
    }
    if tracker.has_guards:
        start["prompt_text"] = _prompt_text(request)
        start["max_output_tokens"] = _max_output_tokens(request)
        # best_of where larger: the provider generates and bills best_of, returns n
        start["choices"] = requested_choices(request, ("n", "best_of"))
    return start


def _split_model(model: str, provider: str | None) -> tuple[str, str | None]:
    """``"anthropic/claude-..."`` -> (``"claude-..."``, ``"anthropic"``), as LiteLLM routes it;
    a Bedrock route (``bedrock/converse/<id>``) is dropped as the event's model drops it."""
    try:
        import litellm

        bare, found, _, _ = litellm.get_llm_provider(model=model, custom_llm_provider=provider)
        provider = _text(found) or provider
        return without_route(str(bare), provider), provider
    except Exception:  # an unknown provider is LiteLLM's error to raise, not ours
        return model, provider


def _prompt_text(request: Mapping[str, Any]) -> str | None:
    """The request's text, for the guards' worst-case token estimate; never stored."""
    parts: list[str] = []
    messages = request.get("messages")
    if _is_list(messages):
        for message in messages:
            _collect_text(_field(message, "content"), parts)
            calls = _field(message, "tool_calls")
            if calls:  # an assistant turn's tool calls are billed as input when sent back
                parts.append(request_json_text(calls))
    for key in ("prompt", "input"):  # text_completion, embedding
        _collect_text(request.get(key), parts)
    for key in ("tools", "functions", "tool_choice", "function_call", "response_format"):
        # sent, and billed, as input tokens: 40 tools' schemas can be 30k tokens, a
        # structured output's JSON schema thousands
        value = request.get(key)
        if value:
            parts.append(request_json_text(value))
    return "\n".join(parts) if parts else None


def _collect_text(content: Any, parts: list[str]) -> None:
    if isinstance(content, str):
        parts.append(content)
    elif _is_list(content):
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif _is_map(part) and isinstance(part.get("text"), str):
                parts.append(part["text"])


def _max_output_tokens(request: Mapping[str, Any]) -> int | None:
    """One choice's output limit, as the request sets it (``None``: the guards' estimate
    takes the model's limit from the price data, else its default)."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = request.get(key)
        if type(value) is int and value > 0:
            return value
    return None


# --- after the call ----------------------------------------------------------------------------


def finish_from_response(
    tracker: Tracker,
    call: Call,
    response: Any,
    latency_ms: float | None,
    *,
    fallbacks: Any = None,
) -> UsageEvent | None:
    """Close ``call`` (opened by a wrapper) from the answer LiteLLM returned to it, not
    from LiteLLM's success event, which an ``asyncio.run`` may cancel before it is even
    queued. The same fields as the event gives: the response's usage, model, id and
    service tier, and from its ``_hidden_params`` the provider that answered, LiteLLM's
    ``response_cost`` (as ``reported_cost``) and ``cache_hit``. The wrapper times the
    call (``call.started_at``, ``latency_ms``). A fallback that answered (another
    provider, or LiteLLM's ``x-litellm-attempted-fallbacks``) is recorded under the
    fallback's model as the call's ``fallbacks`` name it (an Azure deployment keeps its
    name, and its price book entry), else the response's, as the event records the model
    that answered. Never raises."""
    hidden = _field(response, "_hidden_params")
    if not _is_map(hidden):
        hidden = _EMPTY
    secrets = _attempt_keys.take(call.id)
    provider = _text(hidden.get("custom_llm_provider")) or call.provider
    usage = _field(response, "usage")
    response_model = without_secrets(_text(_field(response, "model")), secrets)
    attempted = _attempted_fallbacks(hidden)
    if response_model and (attempted or (provider and call.provider and provider != call.provider)):
        call.model = _fallback_model(attempted, fallbacks, provider) or bare_model(
            response_model, provider
        )
    try:
        litellm_cost = reported_cost(
            hidden.get("response_cost"), failed=False, has_usage=usage is not None
        )
    except UsageError:
        litellm_cost = None  # only kept for comparison: never lose the call for it
    return tracker.finish(
        call,
        payload=usage,
        response_model=response_model,
        provider=provider,
        request_id=without_secrets(_text(_field(response, "id")), secrets),
        cache_hit=hidden.get("cache_hit") is True,
        reported_cost=litellm_cost,
        latency_ms=latency_ms,
        price_context=price_context_of(response),
        defer=not tracker.has_guards,
        on_event=_check_reported_cost,
    )


def _attempted_fallbacks(hidden: Mapping[str, Any]) -> int:
    """How many fallbacks LiteLLM tried before this answer (``x-litellm-attempted-fallbacks``
    among the response's headers), 0 when it says nothing."""
    headers = hidden.get("additional_headers")
    attempted = headers.get("x-litellm-attempted-fallbacks") if _is_map(headers) else None
    return attempted if type(attempted) is int and attempted > 0 else 0


def _fallback_model(attempted: int, fallbacks: Any, provider: str | None) -> str | None:
    """The model of the fallback that answered (the ``attempted``-th), as the call's
    ``fallbacks`` name it."""
    if not isinstance(fallbacks, list) or not 1 <= attempted <= len(fallbacks):
        return None
    entry = fallbacks[attempted - 1]
    name = entry.get("model") if _is_map(entry) else entry
    return bare_model(name, provider) if isinstance(name, str) and name else None


def _check_reported_cost(event: UsageEvent) -> None:
    """Log (once per model) when LiteLLM's price and costledger's differ by more than 1%.

    Not for a call priced from the user's price book (a negotiated rate, an Azure
    deployment's price): LiteLLM does not know that price, and the book is what the user
    chose. LiteLLM's figure is still kept as ``reported_cost``."""
    reported, total = event.reported_cost, event.cost.total
    if reported is None or total is None or event.cache_hit or _from_price_book(event):
        return
    base = abs(total) or abs(reported)
    if not base or abs(reported - total) / base <= DISAGREEMENT_THRESHOLD:
        return
    model = event.response_model or event.model
    try:
        from costledger._logging import warn_once

        warn_once(
            f"litellm.cost_disagreement:{event.provider}:{model}",
            "LiteLLM's response_cost differs from costledger's price by more than 1% "
            "(costledger's is recorded; LiteLLM's is kept as reported_cost)",
            model=model,
            provider=event.provider,
            cost=str(total),
            litellm_cost=str(reported),
            event_id=event.id,
        )
    except Exception as exc:
        _report("litellm.check_reported_cost", exc)


def _from_price_book(event: UsageEvent) -> bool:
    """Whether costledger priced the call from the user's price book (``Pricer(overrides=)``,
    whose prices' ``source`` is ``override: <the book>``)."""
    source = event.cost.source
    return isinstance(source, str) and source.startswith(BOOK_SOURCE)


def _refused_here(exc: Any) -> bool:
    """Whether ``exc`` is a refusal ``async_pre_call_hook`` raised."""
    return getattr(exc, "_costledger_litellm_refused", False) is True


def _as_http_refusal(refusal: GuardRefusal) -> GuardRefusal:
    """Give a guard's refusal what LiteLLM Proxy reads to answer with an HTTP status.

    The proxy maps an exception's ``status_code`` (400-599) to its response and its
    ``headers`` to the response headers; no fastapi import is needed here.
    """
    refusal.status_code = REFUSAL_STATUS_CODE  # type: ignore[attr-defined]  # read by the proxy
    if isinstance(refusal, RateLimited):
        retry_after = max(int(-(-refusal.retry_after // 1)), 1)  # ceil, at least one second
        refusal.headers = {"retry-after": str(retry_after)}  # type: ignore[attr-defined]
    return refusal


def _guard_store(tracker: Tracker) -> GuardStore | None:
    """The store ``tracker``'s guards settle and release on (``off_loop`` and
    ``in_background`` leave the loop only when it waits on I/O); None for no guards."""
    if not tracker.has_guards:
        return None
    try:
        return store_for(tracker)
    except Exception:  # a store that cannot open: its guards fail at once anyway
        return None


def release_off_loop(tracker: Tracker, call_id: str) -> None:
    """From the event loop: release the guards' reservations of the LiteLLM call
    ``call_id``, in a worker thread (not waited for) when their store waits on I/O.
    Never raises."""
    store = _guard_store(tracker)
    if store is None:
        _release_quietly(call_id)
    else:
        in_background(store, _release_quietly, call_id)


def _release_quietly(call_id: str) -> None:
    """LiteLLM raised: the call is over with no success. Release the guards' reservations;
    its failed attempts are recorded by their own failure events (as they came, or later
    for an async call), and nothing is recorded if it failed before LiteLLM logged."""
    try:
        _attempt_keys.take(call_id)
        _registry.release(call_id)
    except Exception as exc:
        _report("litellm.release", exc)


def _report(where: str, exc: BaseException, **context: Any) -> None:
    try:
        from costledger._logging import report_failure

        report_failure(where, exc, **context)
    except Exception:  # the failure reporter itself must never break the host either
        pass
