"""The Tracker: the one path every call takes, whatever entry point saw it.

An entry point only translates its framework's callbacks into "a call started"
(``Tracker.start``) and "a call ended" (``Tracker.finish``). Usage reading,
pricing, guards, logging and storage happen here, once.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import inspect
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    NamedTuple,
    Protocol,
    TypeGuard,
    overload,
    runtime_checkable,
)

from ._attribution import EMPTY as EMPTY_ATTRIBUTION
from ._attribution import Attribution, check_attribution_keywords, current_attribution
from ._cost import MONEY_PRECISION, MONEY_SCALE, Cost, money_in_range
from ._errors import GuardRefusal
from ._events import (
    NO_PRICE_CONTEXT,
    CallStatus,
    UsageEvent,
    event_text,
    new_event_id,
    short_repr,
    text_pairs,
)
from ._mp import when_mp_child
from ._redact import redact, redact_text, redact_url
from ._usage import Usage

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from ._guards._store import GuardStore
    from ._logging import UsageLogger
    from ._pricing import Pricer

__all__ = [
    "Call",
    "Guard",
    "LedgerLike",
    "Tracker",
    "configure",
    "defer",
    "drain_deferred",
    "get_tracker",
]


@runtime_checkable
class LedgerLike(Protocol):
    """What the Tracker needs of a ledger: ``Ledger`` and the in-memory one both fit."""

    def record(self, event: UsageEvent) -> None: ...


class Call:
    """A call in flight, from ``Tracker.start`` to ``Tracker.finish``.

    ``prompt_text``, ``max_output_tokens`` (per answer) and ``choices`` (the answers the
    request asks for: OpenAI's ``n``, ``best_of``, Gemini's ``candidate_count``) only
    feed the guards' worst-case estimate (a guard of your own that reads
    ``max_output_tokens`` multiplies it by ``choices``, as ``Estimator`` does);
    ``prompt_text`` is dropped once the guards have reserved and is never stored or
    logged.

    ``id`` and ``started_at`` are made on first use, from the clock read at the
    start: a call finished on the background worker never costs the host's thread a
    UUID or a ``datetime``. A call belongs to one thread at a time (the host's until
    it is finished, then the worker's), so the first use is never a race.
    """

    __slots__ = (
        "_id",
        "_started_at",
        "_wall",
        "attribution",
        "choices",
        "estimate",
        "finished",
        "max_output_tokens",
        "model",
        "notes",
        "parent_run_id",
        "prompt_text",
        "provider",
        "reservations",
        "run_id",
        "source",
        "started",
        "tentative",
        "trace_context",
        "trace_id",
    )

    def __init__(
        self,
        *,
        source: str,
        model: str | None,
        provider: str | None,
        attribution: Attribution,
        id: str | None = None,
        started_at: datetime | None = None,
        started: float | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        trace_id: str | None = None,
        prompt_text: str | None = None,
        max_output_tokens: int | None = None,
        estimate: Decimal | None = None,
        choices: int = 1,
    ) -> None:
        self._id = id
        self._started_at = started_at
        self._wall = time.time() if started_at is None else started_at.timestamp()
        self.started = time.perf_counter() if started is None else started
        self.source = source
        self.model = model
        self.provider = provider
        self.attribution = attribution
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.trace_id = trace_id
        self.prompt_text = prompt_text
        self.max_output_tokens = max_output_tokens
        self.choices = choices
        self.estimate = estimate
        # a list only once a guard holds something: most calls have no guards
        self.reservations: list[tuple[Guard, Any]] | tuple[()] = ()
        self.finished = False
        # True while the guards reserve for a call the tracker asks again if one refuses
        # it (``Guard``): a refusal then may not be final
        self.tentative = False
        # what a call observer noted at the start (costledger.otel: the span then current)
        self.trace_context: Any = None
        # values of the call's fields that could not be kept (``_checked``): event metadata
        self.notes: dict[str, str] | None = None

    @property
    def id(self) -> str:
        """The event's id (UUIDv7, its time the call's start): the idempotency key."""
        if self._id is None:
            self._id = new_event_id(int(self._wall * 1000))
        return self._id

    @property
    def started_at(self) -> datetime:
        """When the call started (aware, UTC)."""
        if self._started_at is None:
            self._started_at = datetime.fromtimestamp(self._wall, timezone.utc)
        return self._started_at

    @started_at.setter
    def started_at(self, value: datetime) -> None:
        self._started_at = value
        self._wall = value.timestamp()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def hold(self, guard: Guard, token: Any) -> None:
        """Keep what ``guard`` reserved for this call, to settle or release at its end."""
        if isinstance(self.reservations, tuple):
            self.reservations = []
        self.reservations.append((guard, token))

    def __repr__(self) -> str:
        return (
            f"Call(id={self.id!r}, source={self.source!r}, model={self.model!r}, "
            f"provider={self.provider!r}, started_at={self.started_at!r}, "
            f"finished={self.finished!r})"
        )


@runtime_checkable
class Guard(Protocol):
    """A budget or rate limit, seen twice per call: reserve before, settle or release after.

    ``reserve`` returns a token (anything) handed back to ``settle``/``release``,
    or raises a ``GuardRefusal`` (``BudgetExceeded``, ``RateLimited``) to stop the call.
    The call's worst-case output is ``call.max_output_tokens`` (one answer's limit, or
    ``None``) times ``call.choices`` (the answers generated); ``Estimator.estimate(call,
    tracker)`` gives the whole worst case as the built-in guards count it.

    Entry points finish calls on the background worker, so right after a call returns its
    reservation may still be held there. A refusal while earlier calls still hold a token
    (not ``None``) of the refusing guard is not final (unless the guard could not check the
    call: its store is down): the tracker waits, at most 5 s, for those calls' settles,
    then asks the guards once more. ``call.tentative`` is ``True``
    while such a second asking is possible: a guard whose refusal does what only a final
    one should (a budget's once-per-period "exceeded" alert) holds it back then and says
    so with the attribute ``reads_tentative = True``; the tracker then asks it again, at
    once when nothing of it is held, with ``call.tentative`` ``False``.

    A guard whose reservation cannot be given back (``release`` undoes nothing: a request
    rate limit counts a call as it admits it) says so with ``refunds = False``: the
    tracker asks it after every other guard, and at a second asking keeps what it
    admitted at the first instead of asking it again.

    A guard with a method ``does_io(token)`` that says ``True`` for a token (the built-in
    guards on a Redis or SQL store) has that token settled on costledger's settle threads,
    concurrently with other calls' settles, so that the store's round trips never hold up
    the background worker; and an async entry point gives its reservations back there, off
    the event loop. A guard without ``does_io`` is settled on the background worker, in
    the order the calls finished.
    """

    def reserve(self, call: Call, tracker: Tracker) -> Any: ...

    def settle(self, token: Any, event: UsageEvent) -> None: ...

    def release(self, token: Any) -> None: ...


class Tracker:
    """Binds a pricer, a ledger, a structured logger, guards and default attribution.

    >>> tracker = Tracker(Ledger("sqlite:///costs.db"), team="search")
    >>> costledger.configure(tracker)   # or costledger.configure(ledger=..., team=...)

    ``ledger`` may also be a database URL (``"sqlite:///costs.db"``, as ``report`` takes):
    the tracker records to ``Ledger(url)``, shared with every other Tracker given that
    URL while one of them uses it (one writer thread and connection pool per database;
    an in-memory SQLite URL is a database of its own each time). Without a ledger, the
    default one (``$COSTLEDGER_DATABASE_URL``, else ``sqlite:///costledger.db``) is shared
    alike. Pricer, ledger and logger are created lazily on first use, so building a
    Tracker opens no file.

    The arguments are checked here, where a mistake is still the developer's to see: a
    ledger without ``record``, a pricer without ``price``, a guard without ``reserve`` /
    ``settle`` / ``release`` is a ``TypeError`` naming the argument and the value, and so
    is a keyword close to a parameter's name (``guard=``), which would otherwise become
    attribution metadata and leave the budget out.
    """

    def __init__(
        self,
        ledger: LedgerLike | str | URL | None = None,
        pricer: Pricer | None = None,
        guards: Iterable[Guard] = (),
        *,
        logger: UsageLogger | None = None,
        log: str | os.PathLike[str] | None = None,
        guard_store: str | GuardStore | None = None,
        alerts: Iterable[Callable[[Any], Any]] = (),
        **default_attribution: Any,
    ) -> None:
        if default_attribution:
            check_attribution_keywords("Tracker", default_attribution, _TRACKER_PARAMETERS)
        for argument, given in (("ledger", ledger), ("pricer", pricer), ("logger", logger)):
            _not_a_class(argument, given)
        # a ledger made from a URL (or the default one) is shared with the other Trackers
        # of that URL, and made anew when closed (see ``ledger``)
        self._ledger_url: str | URL | None = ledger if _is_url(ledger) else None
        self._ledger_is_shared = ledger is None or self._ledger_url is not None
        ledger = _checked_ledger(ledger)
        if self._ledger_url is not None:  # as resolved (a relative path made absolute)
            self._ledger_url = getattr(ledger, "url", self._ledger_url)
        if pricer is not None and not callable(getattr(pricer, "price", None)):
            raise TypeError(
                "Tracker pricer must be a Pricer (or an object with price()), got "
                f"{type(pricer).__name__} {short_repr(pricer)}"
            )
        if logger is not None and not callable(getattr(logger, "emit", None)):
            raise TypeError(
                "Tracker logger must be a UsageLogger (or an object with emit()), got "
                f"{type(logger).__name__} {short_repr(logger)}"
            )
        if log is not None:
            _check_log(log)
        self._ledger = ledger
        # ``Ledger(durable=True)``: a deferred finish prices and stores the event on the
        # caller's thread, so it is in the durable spool before it returns to the host; the
        # rest (guards' settle, sinks, log line, observers) still goes to the background
        # worker (the lazily made default ledger is never durable)
        self._durable = _records_durably(ledger)
        self._pricer = pricer
        self._logger = logger
        self._log_output = log
        self._lock = threading.Lock()
        # Calls whose end was handed to the background worker while they still hold guard
        # reservations (by id): a call a guard refuses while some of them hold that guard's
        # reservations waits for their settles and asks again (``_reserve``), or a
        # sequential loop near a limit would be refused by its own previous call's worst
        # case. Only a refusal waits: a call that fits never waits for the queue.
        self._unsettled: dict[int, Call] = {}
        self._settled = threading.Condition(threading.Lock())
        self._waiters = 0  # threads waiting on ``_settled``: a settle notifies only then
        self.guards: tuple[Guard, ...] = _checked_guards(guards)
        # The order the guards are asked in before a call: those whose reservation can be
        # given back first, then those whose cannot (``refunds = False``: a request rate
        # limit counts a call when it admits it), so that a call another guard refuses
        # is never counted by them.
        self._asking: tuple[Guard, ...] = (
            *(g for g in self.guards if _refunds(g)),
            *(g for g in self.guards if not _refunds(g)),
        )
        # Two guards of one kind with one name share their counters: every call would count
        # twice. Default budget names follow the definition, so it takes one name= given
        # twice, a guard listed twice, or two budgets that differ only in how they run.
        named: dict[tuple[str, str], Guard] = {}
        for guard in self.guards:
            name = getattr(guard, "name", None)
            if not isinstance(name, str):
                continue
            kind = str(getattr(guard, "_kind", type(guard).__name__))
            other = named.get((kind, name))
            if other is not None:
                raise ValueError(
                    f"guards {other!r} and {guard!r} share the name {name!r}, so they would"
                    " share their counters and count every call twice; give one of them"
                    " its own name= (or list a guard once)"
                )
            named[(kind, name)] = guard
        self.guard_store = guard_store
        # Budget alert callbacks (sync or async) for every guard of this tracker.
        self.alerts: tuple[Callable[[Any], Any], ...] = _checked_alerts(alerts)
        self.default_attribution = Attribution.from_mapping(default_attribution)
        _trackers.add(self)  # its lock is made anew in a forked child
        for guard in self.guards:
            bind = getattr(guard, "bind", None)
            if bind is not None:
                bind(self)

    # -- lazily built parts ------------------------------------------------------------------
    @property
    def ledger(self) -> LedgerLike:
        ledger = self._ledger
        # A shared ledger another Tracker closed (``tracker.ledger.close()`` at the end of
        # a request) is not this one's end: it records to that URL's open ledger.
        if ledger is None or (self._ledger_is_shared and ledger._core.closed):  # type: ignore[attr-defined]
            with self._lock:
                ledger = self._ledger
                if ledger is None or (self._ledger_is_shared and ledger._core.closed):  # type: ignore[attr-defined]
                    ledger = self._ledger = _shared_ledger(self._ledger_url)
                    # the URL as resolved now: a later directory change must not move it
                    self._ledger_url = getattr(ledger, "url", self._ledger_url)
        return ledger

    @property
    def pricer(self) -> Pricer:
        pricer = self._pricer
        if pricer is None:
            pricer = self._pricer = _default_pricer()
        return pricer

    @property
    def logger(self) -> UsageLogger:
        if self._logger is None:
            with self._lock:
                if self._logger is None:
                    from ._logging import UsageLogger

                    self._logger = (
                        UsageLogger() if self._log_output is None else UsageLogger(self._log_output)
                    )
        return self._logger

    @property
    def has_guards(self) -> bool:
        """Whether ``start`` reserves anything; entry points skip building prompt text if not."""
        return bool(self.guards)

    # -- the call path -----------------------------------------------------------------------
    def start(
        self,
        *,
        source: str,
        model: str | None = None,
        provider: str | None = None,
        attribution: Attribution | Mapping[str, Any] | None = None,
        call_id: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        trace_id: str | None = None,
        prompt_text: str | None = None,
        max_output_tokens: int | None = None,
        estimate: Decimal | None = None,
        choices: int = 1,
        _reserve: bool = True,
    ) -> Call:
        """Open a call and run the guards. Raises only a guard's ``GuardRefusal``, or a
        ``ValueError`` naming ``estimate`` / ``max_output_tokens`` / ``choices`` when one
        cannot be read (an ``estimate`` is a ``Decimal``, an ``int`` or a decimal string,
        never a float; ``max_output_tokens`` an ``int`` >= 0, the output limit of one
        answer; ``choices`` an ``int`` >= 1, the answers the request generates, each up to
        that limit): a guard must never run on a worst case it cannot read, and silently
        dropping it would let the call past a hard budget."""
        if estimate is not None and not (
            type(estimate) is Decimal and estimate.is_finite() and estimate >= 0
        ):
            from ._guards._estimate import check_estimate

            estimate = check_estimate(estimate)
        if max_output_tokens is not None and (
            type(max_output_tokens) is not int or max_output_tokens < 0
        ):
            from ._guards._estimate import check_max_output_tokens

            max_output_tokens = check_max_output_tokens(max_output_tokens)
        if choices.__class__ is not int or choices < 1:
            from ._guards._estimate import check_choices

            choices = check_choices(choices)
        call = Call(
            id=call_id,
            source=source,
            model=model,
            provider=provider,
            attribution=self._attribution_for(attribution),
            run_id=run_id,
            parent_run_id=parent_run_id,
            trace_id=trace_id,
            prompt_text=prompt_text,
            max_output_tokens=max_output_tokens,
            estimate=estimate,
            choices=choices,
        )
        _name_call(call)
        if _observers:
            _observe_start(call)
        if self.guards and _reserve:
            self._reserve(call)
        return call

    async def astart(
        self,
        *,
        source: str,
        model: str | None = None,
        provider: str | None = None,
        attribution: Attribution | Mapping[str, Any] | None = None,
        call_id: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        trace_id: str | None = None,
        prompt_text: str | None = None,
        max_output_tokens: int | None = None,
        estimate: Decimal | None = None,
        choices: int = 1,
    ) -> Call:
        """``start`` for async entry points: a guard that waits (a rate limit in wait mode)
        awaits its ``areserve`` instead of blocking the event loop."""
        kwargs: dict[str, Any] = {
            "source": source,
            "model": model,
            "provider": provider,
            "attribution": attribution,
            "call_id": call_id,
            "run_id": run_id,
            "parent_run_id": parent_run_id,
            "trace_id": trace_id,
            "prompt_text": prompt_text,
            "max_output_tokens": max_output_tokens,
            "estimate": estimate,
            "choices": choices,
        }
        if not self.guards:
            return self.start(**kwargs)
        call = self.start(**kwargs, _reserve=False)
        tentative = bool(self._unsettled) and not _deferred.on_worker()
        kept: list[tuple[Guard, Any]] = []
        # what the first asking reserved, given back on the settle threads (``_release_soon``)
        given_back: list[Call] = []
        try:
            refused = await self._areserve_once(call, tentative, kept, given_back)
            if refused is not None:
                waiting = self._retry_after(refused, tentative)
                if waiting is None:
                    raise refused[1]
                # asked again only once its own first reservations are given back: a guard
                # must not count them against the second asking
                waiting = [*waiting, *given_back]
                if waiting:
                    await self._await_settled(waiting, _SETTLE_WAIT)
                refused = await self._areserve_once(call, False, kept, given_back)
                if refused is not None:
                    raise refused[1]
        finally:
            call.tentative = False
            call.prompt_text = None
        return call

    async def _areserve_once(
        self,
        call: Call,
        tentative: bool,
        kept: list[tuple[Guard, Any]],
        given_back: list[Call],
    ) -> tuple[Guard, GuardRefusal] | None:
        """``_reserve_once`` awaiting each guard's ``areserve``. What the guards before a
        refusing (or cancelled) one reserved is given back off the event loop
        (``_release_soon``); the stand-in holding it until then goes to ``given_back``."""
        call.tentative = tentative
        # by identity: a guard of the host's may be unhashable (a plain dataclass)
        admitted = {id(guard): token for guard, token in kept}
        try:
            for guard in self._asking:
                if admitted and id(guard) in admitted:
                    call.hold(guard, admitted[id(guard)])
                    continue
                areserve = getattr(guard, "areserve", None)
                try:
                    if areserve is not None:
                        token = await areserve(call, self)
                    else:
                        token = guard.reserve(call, self)
                except GuardRefusal as refusal:
                    stand_in = self._refused(call, kept, background=True)
                    if stand_in is not None:
                        given_back.append(stand_in)
                    return guard, refusal
                except Exception as exc:  # a guard's own bug must not break the host
                    _report("guard.reserve", exc)
                    continue
                call.hold(guard, token)
        except BaseException:
            # the caller cancelled while a guard waited: give back what the guards before
            # it reserved (off the event loop)
            self._release_soon(call)
            raise
        return None

    def handing_off(self, call: Call) -> None:
        """``call`` ends on the background worker while it holds guard reservations: a
        next call those reservations make a guard refuse waits for its settle and asks
        again (entry points that hand a call's whole end to ``defer`` say so here;
        ``finish(defer=True)`` does it itself)."""
        if call.reservations:
            self._unsettled[id(call)] = call

    def _reserve(self, call: Call) -> None:
        # Reserve at once: a wait for earlier calls' settles before every reservation
        # would hold each guarded call behind the background queue, which other threads
        # keep filling. Only a refusal those settles may lift waits, for them alone.
        tentative = bool(self._unsettled) and not _deferred.on_worker()
        kept: list[tuple[Guard, Any]] = []
        try:
            refused = self._reserve_once(call, tentative, kept)
            if refused is not None:
                waiting = self._retry_after(refused, tentative)
                if waiting is None:
                    raise refused[1]
                if waiting:
                    self._wait_settled(waiting, _SETTLE_WAIT)
                refused = self._reserve_once(call, False, kept)
                if refused is not None:
                    raise refused[1]
        finally:
            call.tentative = False
            call.prompt_text = None

    def _reserve_once(
        self, call: Call, tentative: bool, kept: list[tuple[Guard, Any]]
    ) -> tuple[Guard, GuardRefusal] | None:
        """Ask every guard (in ``_asking`` order); on a refusal, give back what the guards
        before it reserved and return the guard and its refusal (raised by the caller, or
        asked again). ``kept``: what guards that cannot give a reservation back admitted
        at an earlier asking of this call (``_refused``), held again, not asked twice."""
        call.tentative = tentative
        # by identity: a guard of the host's may be unhashable (a plain dataclass)
        admitted = {id(guard): token for guard, token in kept}
        try:
            for guard in self._asking:
                if admitted and id(guard) in admitted:
                    call.hold(guard, admitted[id(guard)])
                    continue
                try:
                    token = guard.reserve(call, self)
                except GuardRefusal as refusal:
                    self._refused(call, kept)
                    return guard, refusal
                except Exception as exc:  # a guard's own bug must not break the host
                    _report("guard.reserve", exc)
                    continue
                call.hold(guard, token)
        except BaseException:
            # the caller cancelled while a guard waited (KeyboardInterrupt): give back
            # what the guards before it reserved
            self._release(call)
            raise
        return None

    def _refused(
        self, call: Call, kept: list[tuple[Guard, Any]], background: bool = False
    ) -> Call | None:
        """A guard refused ``call``: what the guards that cannot give it back admitted goes
        to ``kept`` (for a second asking), and every reservation is released; with
        ``background`` (an async caller) off this thread, and the stand-in holding them
        until then is returned (``_release_soon``)."""
        kept[:] = [(guard, token) for guard, token in call.reservations if not _refunds(guard)]
        if background:
            return self._release_soon(call)
        self._release(call)
        return None

    def _retry_after(
        self, refused: tuple[Guard, GuardRefusal], tentative: bool
    ) -> list[Call] | None:
        """After ``refused`` (a guard and its refusal): ``None`` when the refusal is final,
        else the earlier calls whose settles to wait for before asking again (none: ask
        again at once, the guard held back what a final refusal does)."""
        guard, refusal = refused
        if not tentative or _unchecked(refusal):
            return None
        # a refusal is rare: this scan of the calls in the background is off the hot path
        # (of a copy: other threads hand calls off and settle them meanwhile)
        holding = [call for call in self._unsettled.copy().values() if _holds(call, guard)]
        if holding:
            return holding
        return [] if getattr(guard, "reads_tentative", False) is True else None

    def _wait_settled(self, calls: list[Call], timeout: float) -> None:
        """Wait until ``calls`` are settled, or the worker has run everything queued now
        and the settles it handed off by then have run (a call handed off whose end never
        settles it must not hold this one for long), or ``timeout`` seconds passed."""
        passed = [False]
        _deferred.mark((_settles.after, _mark_passed, self, passed))
        deadline = time.monotonic() + timeout
        with self._settled:
            self._waiters += 1
            try:
                while not passed[0] and self._any_unsettled(calls):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._settled.wait(left)
            finally:
                self._waiters -= 1

    async def _await_settled(self, calls: list[Call], timeout: float) -> None:
        """``_wait_settled`` for ``astart``: polls with ``asyncio.sleep``, so the event
        loop runs on and a cancelled caller stops waiting at once (no thread is left
        waiting)."""
        import asyncio  # an async caller: already imported

        passed = [False]
        _deferred.mark((_settles.after, _mark_passed, self, passed))
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while not passed[0] and self._any_unsettled(calls):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.01)

    def _any_unsettled(self, calls: list[Call]) -> bool:
        unsettled = self._unsettled
        return any(unsettled.get(id(call)) is call for call in calls)

    def _settled_now(self, call: Call) -> None:
        """``call`` holds nothing any more: a call waiting for its settle goes on."""
        if self._unsettled.pop(id(call), None) is not None and self._waiters:
            with self._settled:
                self._settled.notify_all()

    def _attribution_for(self, extra: Attribution | Mapping[str, Any] | None) -> Attribution:
        merged = self.default_attribution.merge(current_attribution())
        if extra is None:
            return merged
        if not isinstance(extra, Attribution):
            if not isinstance(extra, Mapping):  # never raised into the host: left out
                _report(
                    "event.attribution",
                    TypeError(
                        "attribution must be a mapping or an Attribution, got "
                        f"{type(extra).__name__} {short_repr(extra)}; left out"
                    ),
                )
                return merged
            extra = Attribution.from_mapping(extra)
        return merged.merge(extra)

    def finish(
        self,
        call: Call,
        *,
        usage: Usage | None = None,
        payload: Any = None,
        response_model: str | None = None,
        provider: str | None = None,
        status: CallStatus = "ok",
        error: BaseException | str | None = None,
        request_id: str | None = None,
        streamed: bool = False,
        cache_hit: bool = False,
        reported_cost: Decimal | None = None,
        metadata: Mapping[str, Any] | None = None,
        latency_ms: float | None = None,
        price_context: Mapping[str, str] | None = None,
        defer: bool = False,
        on_event: Callable[[UsageEvent], None] | None = None,
    ) -> UsageEvent | None:
        """Close a call: read usage, price, settle guards, store and log. Never raises.

        ``latency_ms`` is the call's duration as measured by the framework that ran it
        (LiteLLM hands its callbacks the start and end times); by default it is the time
        since ``start``. ``price_context`` says how the call was served where that changes
        its price (``{"service_tier": "flex"}``, see ``Pricer.price``); by default it is
        read from the response with its usage.

        Returns the recorded event, or ``None`` when tracking failed (the failure is
        logged, rate-limited) or the call was already finished.

        With ``defer=True`` the call's usage is read now (so a payload the host mutates
        later cannot change it) and the rest (pricing, guards' settle, storage, logging)
        runs on costledger's background worker, keeping the host's call path to a few
        microseconds; ``None`` is returned. Ledger reads, ``capture_costs`` and
        ``drain_deferred()`` wait for deferred work, so nothing is seen half-done.
        (An entry point whose whole ending can leave the host's thread hands it to
        ``defer`` instead, and finishes there with ``defer=False``.) A tracker whose
        ledger is durable (``Ledger(durable=True)``) prices the call and stores its event
        (in the durable spool) before ``finish`` returns, and returns it; only the rest
        (the guards' settle, sinks, the log line, observers, ``on_event``) is deferred,
        so a guard store's I/O stays off the caller's thread (an event loop).
        """
        if call.finished:
            return None
        call.finished = True
        if defer and _deferred.on_worker():
            # Already on the background worker (an ending a finalizer handed it): finish
            # here, in order. Queued again, it would land behind a reader's drain mark
            # queued meanwhile, and the reader would not see it.
            defer = False
        if defer:
            # What the host could change or what time would move: fixed now.
            if latency_ms is None:
                latency_ms = call.elapsed_ms()
            if usage is None and payload is not None:
                try:
                    info = _read_response(payload, provider)
                    usage = info.usage
                    response_model = response_model or info.model
                    request_id = request_id or info.response_id
                    price_context = price_context or info.price_context
                    payload = None
                except Exception:  # read again, and reported, on the worker
                    pass
        ending = _Ending(
            usage,
            payload,
            response_model,
            provider,
            status,
            error,
            request_id,
            streamed,
            cache_hit,
            reported_cost,
            metadata,
            latency_ms,
            price_context,
        )
        if defer:
            if call.reservations:
                self.handing_off(call)
            if self._durable:
                return self._store_then_defer(call, ending, on_event)
            # one plain tuple per call, no bound method: every object kept alive until the
            # worker runs is one more for the cyclic GC to scan in a busy host
            _deferred.submit((_complete, self, call, ending, on_event))
            return None
        return self._complete(call, ending, on_event)

    def _store_then_defer(
        self,
        call: Call,
        ending: _Ending,
        on_event: Callable[[UsageEvent], None] | None,
    ) -> UsageEvent | None:
        """A deferred finish on a durable ledger: only what durability needs runs here
        (the event built and priced, handed to the ledger, which appends it to its
        spool); the guards' settle (a Redis or SQL store's network I/O), the sinks, the
        log line, ``on_event`` and the observers run on the background worker, after the
        event is stored, as a deferred finish does on any other ledger."""
        event = self._event_of(call, ending)
        if event is None:  # nothing to store (logged): the guards get their hold back there
            if call.reservations:
                _deferred.submit((_release, self, call))
            return None
        self._store(event)
        _deferred.submit((_publish, self, call, event, on_event, True))
        return event

    def _event_of(self, call: Call, ending: _Ending) -> UsageEvent | None:
        """The call's event, read and priced; on a tracking failure (reported) the event
        with what could be kept, or ``None`` when not even that could be built."""
        try:
            ending = _checked(call, ending)
            if ending.usage is not None and not isinstance(ending.usage, Usage):
                # a provider's usage where a Usage belongs (record("m", {"prompt_tokens":
                # 10, ...}), an SDK usage object): read as extract_usage reads it
                usage = ending.usage
                ending = ending._replace(usage=None)
                ending = ending._replace(usage=_read_response(usage, ending.provider).usage)
            if ending.usage is None and ending.payload is not None:
                info = _read_response(ending.payload, ending.provider)
                ending = ending._replace(
                    usage=info.usage,
                    response_model=ending.response_model or info.model,
                    request_id=ending.request_id or info.response_id,
                    price_context=ending.price_context or info.price_context,
                )
            return self._build_event(call, ending)
        except Exception as exc:
            _report("tracker.finish", exc, source=call.source, model=call.model)
            return self._salvage(call, ending, exc)

    def _complete(
        self,
        call: Call,
        ending: _Ending,
        on_event: Callable[[UsageEvent], None] | None = None,
    ) -> UsageEvent | None:
        event = self._event_of(call, ending)
        if event is None:  # nothing to store (logged): the guards get their hold back
            self._release(call)
            return None
        self._publish(call, event, on_event)
        return event

    def _publish(
        self,
        call: Call,
        event: UsageEvent,
        on_event: Callable[[UsageEvent], None] | None,
        stored: bool = False,
    ) -> None:
        """A finished call's event, in this order: the guards' settle, sinks, storage
        (unless ``stored``: a durable ledger's deferred finish stored it on the caller's
        thread, see ``_store_then_defer``), the log line, ``on_event``, observers.

        On the background worker, a settle that waits on a guard store's I/O is handed to
        the settle threads instead (``_settle_elsewhere``) and runs meanwhile."""
        if not (call.reservations and self._settle_elsewhere(call, event)):
            self._settle(call, event)
        self._emit(event, store=not stored)
        if on_event is not None:
            try:
                on_event(event)
            except Exception as exc:
                _report("tracker.on_event", exc)
        for observer in _observers:
            try:
                observer.finished(call, event)
            except Exception as exc:
                _report("observer.finished", exc)

    def _settle_elsewhere(self, call: Call, event: UsageEvent) -> bool:
        """On the background worker (or on a caller finishing its own call because the
        queue is full): hand the settle of a call whose guards wait on a store's I/O
        (``does_io``: Redis, SQL) to the settle threads, so that the worker goes on with
        the next calls' pricing and storage instead of waiting for round trips. The call
        stays in ``_unsettled`` until its settle ran, and drains wait for it.

        At most ``MAX_SETTLING`` are handed off at once: past that the worker (or the
        caller) waits until one ends, which keeps the settle threads busy and the store's
        I/O off both (a store slower than the calls come slows the worker, never the host
        until the queue is full). A guard of the host's (no ``does_io``) is settled on the
        worker, in order, as before. The event is stored meanwhile: a budget reading spend
        from the ledger (a counter's seed) drains first, which waits for these settles
        too, so a seed of a counter the store lost counts the call once."""
        if not (_deferred.on_worker() or _deferred.finishing_inline()):
            return False
        if not _waits_on_io(call.reservations, custom=False):
            return False
        _settles.start(self._settle, call, event, bounded=True)
        return True

    def _salvage(self, call: Call, ending: _Ending, exc: Exception) -> UsageEvent | None:
        """The event of a call whose tracking failed with ``exc``, with what can be kept.

        The call may still have cost money; keep what we know rather than nothing: the
        usage read (a failed pricing leaves it unpriced, to reprice later); if even that
        fails, the call without its usage; then without its usage, attribution, metadata,
        price context and measures (a bare event under the call's id and model). ``None``,
        logged, when not even that can be built: never an exception into the host.
        """
        try:
            return self._build_event(call, ending, tracking_error=exc)
        except Exception:
            pass
        try:
            return self._build_event(call, ending._replace(usage=None), tracking_error=exc)
        except Exception:
            pass
        try:
            return _bare_event(call, ending, exc)
        except Exception as last:
            _report("tracker.finish.fallback", last, source=call.source, model=call.model)
            return None

    def _build_event(
        self, call: Call, ending: _Ending, tracking_error: BaseException | None = None
    ) -> UsageEvent:
        (
            usage,
            _,
            response_model,
            provider,
            status,
            error,
            request_id,
            streamed,
            cache_hit,
            reported_cost,
            metadata,
            latency_ms,
            price_context,
        ) = ending
        # scrubbed like request_id, and before the pricer logs them: a server may echo
        # the request's key in the name of the model that answered. A clean name (they
        # repeat) costs one set lookup.
        if response_model:
            response_model = redact_text(response_model)
        provider = provider or call.provider
        model = redact_text(call.model) if call.model else response_model
        if cache_hit:  # a cache hit costs nothing, whether or not it reports usage
            usage = usage if usage is not None else _NO_USAGE
            cost = Cost.zero(
                model=model,
                provider=provider,
                source="cache hit",
                currency=self._currency_of(response_model or model, provider, call),
            )
        elif usage is None:
            usage = _NO_USAGE
            cost = Cost(
                status="not_priced",
                model=model,
                provider=provider,
                currency=self._currency_of(response_model or model, provider, call),
            )
        elif tracking_error is not None:  # pricing may be what failed: not tried again
            cost = Cost(status="unknown_model", model=model, provider=provider)
        else:
            cost = self.pricer.price(
                response_model or model or "",
                usage,
                provider=provider,
                at=call.started_at,
                price_context=price_context,
                requested_model=model,
            )
        if price_context:
            # Text entries only (what failed may be this very context), and scrubbed like
            # attribution: the values go to rows, log lines and spans.
            price_context = {k: redact_text(v) for k, v in text_pairs(price_context).items()}
        attribution = _scrubbed(call.attribution)
        meta: Mapping[str, Any] = attribution.metadata
        if metadata:
            meta = {**meta, **metadata}
        if call.notes:
            meta = {**meta, **call.notes}
        if tracking_error is not None:
            meta = {**meta, "costledger.tracking_error": type(tracking_error).__name__}
        if meta:
            meta = redact(dict(meta))
        error_type: str | None = None
        if error is not None:
            error_type = redact_text(error) if isinstance(error, str) else type(error).__name__
        return UsageEvent(
            id=call.id,
            model=model,
            usage=usage,
            cost=cost,
            timestamp=call.started_at,
            source=call.source,
            provider=provider,
            response_model=response_model,
            status=status,
            error_type=error_type,
            latency_ms=round(call.elapsed_ms() if latency_ms is None else latency_ms, 3),
            # scrubbed like attribution: an id a gateway built may carry the request's key
            request_id=redact_text(request_id) if request_id else request_id,
            trace_id=call.trace_id,
            run_id=call.run_id,
            parent_run_id=call.parent_run_id,
            user=attribution.user,
            team=attribution.team,
            project=attribution.project,
            feature=attribution.feature,
            tags=attribution.tags,
            metadata=meta,
            streamed=streamed,
            cache_hit=cache_hit,
            reported_cost=reported_cost,
            price_context=price_context or NO_PRICE_CONTEXT,
        )

    def _currency_of(self, model: str | None, provider: str | None, call: Call) -> str:
        """The currency the pricer prices ``model`` in, for a cost with no amount to say
        it (a failed call without usage, a cache hit): ``Pricer.currency_of``, as ingest
        asks it. USD, as ``Cost`` defaults, for a pricer that is not a ``Pricer``."""
        currency_of = getattr(self.pricer, "currency_of", None)
        if currency_of is None:
            return "USD"
        try:
            currency = currency_of(model, provider=provider, at=call.started_at)
        except Exception as exc:  # never the host's problem; the call is still recorded
            _report("tracker.currency", exc, model=model)
            return "USD"
        return currency if isinstance(currency, str) and currency else "USD"

    def _settle(self, call: Call, event: UsageEvent) -> None:
        for guard, token in call.reservations:
            try:
                # A call that reported usage is settled, failed or not (it was billed), even
                # when its model has no price: the guard counts its tokens, or its
                # reservation. Only a failed call without usage gives its reservation back.
                if event.status == "ok" or event.cost.status != "not_priced":
                    guard.settle(token, event)
                else:
                    guard.release(token)
            except Exception as exc:
                _report("guard.settle", exc)
        call.reservations = ()
        self._settled_now(call)

    def _release(self, call: Call) -> None:
        for guard, token in call.reservations:
            try:
                guard.release(token)
            except Exception as exc:
                _report("guard.release", exc)
        call.reservations = ()
        self._settled_now(call)

    def _release_soon(self, call: Call) -> Call | None:
        """``_release`` for an async entry point: never a guard store's round trip on this
        thread (an event loop's). When a reservation waits on a store's I/O (``does_io``;
        a guard of the host's may too), the reservations move to a stand-in call, kept in
        ``_unsettled`` (a call those reservations make a guard refuse waits for it, as for
        a settle), and are given back on the settle threads; ``call`` holds nothing from
        now on (asked again, its new reservations are its own). Returns the stand-in, or
        ``None`` when they were given back here (``memory://``: microseconds)."""
        held = call.reservations
        if not held or not _waits_on_io(held, custom=True):
            self._release(call)
            return None
        stand_in = Call(
            source=call.source,
            model=call.model,
            provider=call.provider,
            attribution=call.attribution,
            started=call.started,
        )
        stand_in.finished = True
        stand_in.reservations = held
        self._unsettled[id(stand_in)] = stand_in  # before ``call`` lets go: never a gap
        call.reservations = ()
        self._settled_now(call)
        _settles.start(self._release, stand_in, bounded=False)
        return stand_in

    def cancel(self, call: Call, *, background: bool = False) -> None:
        """Forget a call that never reached the provider: release reservations, record nothing.

        ``background=True`` (an async entry point): a reservation on a Redis or SQL guard
        store is given back on costledger's settle threads, never on this thread; a call
        it would make a guard refuse meanwhile waits for it, as for a settle."""
        if not call.finished:
            call.finished = True
            if background:
                self._release_soon(call)
            else:
                self._release(call)

    def emit(self, event: UsageEvent) -> None:
        """Store and log a finished event. Never raises."""
        self._emit(event, store=True)

    def _emit(self, event: UsageEvent, store: bool) -> None:
        for sink in _sinks:
            try:
                sink(event)
            except Exception as exc:
                _report("sink", exc)
        if store:
            self._store(event)
        try:
            self.logger.emit(event)
        except Exception as exc:
            _report("logger.emit", exc)

    def _store(self, event: UsageEvent) -> None:
        try:
            ledger = self.ledger
            if _child_ledgers is not None:  # a forked child: its exit closes this ledger
                _child_ledgers[id(ledger)] = ledger
            ledger.record(event)
        except Exception as exc:
            _report("ledger.record", exc)

    @overload
    def record(
        self,
        model: str | None,
        usage: Usage | None = None,
        *,
        payload: Any = None,
        source: str = "api",
        provider: str | None = None,
        response_model: str | None = None,
        status: CallStatus = "ok",
        error: BaseException | str | None = None,
        latency_ms: float | None = None,
        call_id: str | None = None,
        attribution: Attribution | Mapping[str, Any] | None = None,
        user: object = None,
        team: object = None,
        project: object = None,
        feature: object = None,
        tags: Iterable[object] | str | bytes | None = None,
        started_at: datetime | None = None,
        defer: Literal[False] = False,
        **fields: Any,
    ) -> UsageEvent: ...

    @overload
    def record(
        self,
        model: str | None,
        usage: Usage | None = None,
        *,
        payload: Any = None,
        source: str = "api",
        provider: str | None = None,
        response_model: str | None = None,
        status: CallStatus = "ok",
        error: BaseException | str | None = None,
        latency_ms: float | None = None,
        call_id: str | None = None,
        attribution: Attribution | Mapping[str, Any] | None = None,
        user: object = None,
        team: object = None,
        project: object = None,
        feature: object = None,
        tags: Iterable[object] | str | bytes | None = None,
        started_at: datetime | None = None,
        defer: bool,
        **fields: Any,
    ) -> UsageEvent | None: ...

    def record(
        self,
        model: str | None,
        usage: Usage | None = None,
        *,
        payload: Any = None,
        source: str = "api",
        provider: str | None = None,
        response_model: str | None = None,
        status: CallStatus = "ok",
        error: BaseException | str | None = None,
        latency_ms: float | None = None,
        call_id: str | None = None,
        attribution: Attribution | Mapping[str, Any] | None = None,
        user: object = None,
        team: object = None,
        project: object = None,
        feature: object = None,
        tags: Iterable[object] | str | bytes | None = None,
        started_at: datetime | None = None,
        defer: bool = False,
        **fields: Any,
    ) -> UsageEvent | None:
        """Record a finished call in one step (ingestion, tool costs, the public API).

        ``started_at`` (timezone-aware; a naive one is read as UTC) is when the call
        started, if known; the event's timestamp and the price's point in time.
        ``latency_ms`` (a number) is stored as given.
        Guards are settled too, so spend recorded this way counts against budgets.
        ``fields`` are ``finish``'s other keywords (``request_id``, ``metadata``,
        ``price_context``, ...); any other keyword is a ``TypeError`` naming it.

        ``user``, ``team``, ``project``, ``feature`` and ``tags`` attribute the call, as
        ``Tracker()`` and ``track_cost()`` take them; they win over ``attribution=``'s
        values of those names (tags are added to its), which win over the
        ``costledger.attribute`` scopes and the tracker's defaults.

        Returns the event; on a tracking failure (logged, never raised), the event with
        what could be kept. A field given a value it cannot hold (``status=["error"]``) is
        left out with a warning naming it and the note ``costledger.invalid.<field>``; a
        number, UUID, enum or bytes for a text field is stored as its text.

        With ``defer=True`` (as ``finish``) the pricing and storage run on costledger's
        background worker and ``None`` is returned (a durable ledger: priced and stored
        here, the event returned; the guards' settle and the rest on the worker).
        """
        if fields and not fields.keys() <= _RECORD_FIELDS:
            _unknown_record_keyword(fields)
        # The host's values, checked before they are used: one that cannot be is left out
        # with a warning and a note (noted on the call once it is made), never raised.
        dropped: list[tuple[str, Any, str, str]] = []
        lag = 0.0  # how long ago the call started, by its latency
        if latency_ms is not None:
            if latency_ms.__class__ is not float:
                latency_ms = _measure(latency_ms, dropped)
            if math.isfinite(latency_ms):
                lag = latency_ms
        if started_at is not None and (
            started_at.__class__ is not datetime or started_at.tzinfo is None
        ):
            started_at = _start_time(started_at, dropped)
        call = Call(
            id=call_id,
            source=source,
            model=model,
            provider=provider,
            attribution=self._attribution_for(attribution).merge(
                _named_attribution(user, team, project, feature, tags)
            ),
            started_at=started_at,
            started=time.perf_counter() - lag / 1000.0,
        )
        _name_call(call)
        for name, value, instead, expected in dropped:
            _dropped(call, name, value, instead, expected)
        if _observers:
            _observe_start(call)
        for guard in self.guards:
            # Guards that count spend they did not reserve (budgets) say so with ``account``.
            account = getattr(guard, "account", None)
            if account is not None:
                try:
                    call.hold(guard, account(call, self))
                except Exception as exc:
                    _report("guard.account", exc)
        event = self.finish(
            call,
            usage=usage,
            payload=payload,
            provider=provider,
            response_model=response_model,
            status=status,
            error=error,
            latency_ms=latency_ms,
            defer=defer,
            **fields,
        )
        if event is None and not defer:
            # not even a bare event could be built (logged, nothing stored): what the caller
            # gets says the call went unrecorded rather than None
            return _unrecorded(model)
        return event


_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()

# The keywords ``record`` hands on to ``finish`` (its ``**fields``): finish's own, read from
# its signature so that one added there is taken here too.
_RECORD_FIELDS = frozenset(inspect.signature(Tracker.finish).parameters) - {"self", "call"}


def _named_attribution(
    user: object, team: object, project: object, feature: object, tags: object
) -> Attribution:
    """``record``'s attribution keywords, read as ``attribution=``'s values are: one that
    cannot be read is left out with a warning, never raised into the host."""
    if user is None and team is None and project is None and feature is None and tags is None:
        return EMPTY_ATTRIBUTION
    return Attribution.from_mapping(
        {"user": user, "team": team, "project": project, "feature": feature, "tags": tags}
    )


def _unknown_record_keyword(fields: Mapping[str, Any]) -> None:
    """``TypeError`` naming ``Tracker.record`` and a keyword it does not take. Python's own
    would name ``Tracker.finish()``, which ``record`` hands its other keywords to and the
    caller never called."""
    key = next(name for name in fields if name not in _RECORD_FIELDS)
    parameters = inspect.signature(Tracker.record).parameters.values()
    known = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY] + sorted(_RECORD_FIELDS)
    close = difflib.get_close_matches(key, known, n=1)
    advice = (
        f"did you mean {close[0]!r}?"
        if close
        else f"to store it with the call: metadata={{{key!r}: ...}}"
    )
    raise TypeError(f"Tracker.record() got an unexpected keyword argument {key!r} ({advice})")


_TRACKER_PARAMETERS = ("ledger", "pricer", "guards", "logger", "log", "guard_store", "alerts")


def _checked_ledger(ledger: Any) -> LedgerLike | None:
    """``Tracker``'s ``ledger``: a database URL (text or SQLAlchemy's ``URL``) as
    ``Ledger(url)`` (which reads it now: a bad URL is its ``ValueError``, and opens
    nothing); ``TypeError`` for anything without ``record``, whose every call would
    otherwise fail in the background, one rate-limited warning for all of them."""
    if ledger is None:
        return None
    if _is_url(ledger):
        try:
            return _shared_ledger(ledger)
        except ValueError as exc:
            raise ValueError(f"Tracker ledger: {exc}") from exc
    if not callable(getattr(ledger, "record", None)):
        raise TypeError(
            "Tracker ledger must be a Ledger, a database URL or an object with "
            f"record(event), got {type(ledger).__name__} {short_repr(ledger)}"
        )
    return ledger  # type: ignore[no-any-return]


# Ledgers Trackers made from a URL, by the URL: one writer thread and one connection pool
# per database however many Trackers record to it (a Tracker per request, or two on one
# SQLite file, which would otherwise wait on each other's locks). Weak: a ledger no
# Tracker uses is collected, and closed, as before.
_url_ledgers: weakref.WeakValueDictionary[str, LedgerLike] = weakref.WeakValueDictionary()
_url_ledgers_lock = threading.Lock()


def _shared_ledger(url: str | URL | None) -> LedgerLike:
    """The open ``Ledger(url)`` other Trackers record to, or a new one (``None``: the
    default URL). An in-memory SQLite URL always gets its own (a database per ledger); a
    relative SQLite path is made absolute first, so that a process that changes its
    directory does not record to the database of the directory it left."""
    from ._ledger import Ledger  # imported on use: ``import costledger`` is light
    from ._ledger._engine import is_memory_sqlite, resolve_url, sqlite_path

    resolved = resolve_url(url)
    if is_memory_sqlite(resolved):
        return Ledger(resolved)
    path = sqlite_path(resolved)
    if path is not None and not (resolved.database or "").startswith("file:"):
        resolved = resolved.set(database=str(path))
    key = resolved.render_as_string(hide_password=False)  # a key in memory, never shown
    with _url_ledgers_lock:
        ledger = _url_ledgers.get(key)
    if ledger is not None and not ledger._core.closed:  # type: ignore[attr-defined]
        return ledger
    made = Ledger(resolved)  # not under the lock: a fork meanwhile must not inherit it held
    with _url_ledgers_lock:
        ledger = _url_ledgers.get(key)
        if ledger is None or ledger._core.closed:  # type: ignore[attr-defined]
            _url_ledgers[key] = ledger = made
    if ledger is not made:  # another thread made one first: this one was never used
        made.close()
    return ledger


def _new_url_ledgers_lock() -> None:
    global _url_ledgers_lock
    _url_ledgers_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_url_ledgers_lock)


def _is_url(value: object) -> TypeGuard[str | URL]:
    return isinstance(value, str) or _is_sqlalchemy_url(value)


def _not_a_class(name: str, value: Any) -> None:
    """``TypeError`` for a class given where an instance belongs (``ledger=InMemoryLedger``,
    ``guards=[Budget]``): it has the methods the other checks look for, unbound."""
    if isinstance(value, type):
        raise TypeError(
            f"Tracker {name} must be an instance, got the class {value.__name__}: "
            f"pass {value.__name__}(...)"
        )


def _is_sqlalchemy_url(value: Any) -> bool:
    cls = type(value)
    return cls.__name__ == "URL" and cls.__module__.startswith("sqlalchemy.")


def _checked_guards(guards: Any) -> tuple[Guard, ...]:
    """``guards`` as a tuple; ``TypeError`` naming ``guards`` for one that is not a guard
    (a spec such as ``"10 USD/day"``: ``Budget("10 USD", "day")`` is the guard), or a
    single guard or text where a list belongs."""
    if isinstance(guards, (str, bytes)) or callable(getattr(guards, "reserve", None)):
        raise TypeError(
            "Tracker guards must be a list of guards (guards=[Budget(...)]), got "
            f"{type(guards).__name__} {short_repr(guards)}"
        )
    try:
        items = tuple(guards)
    except TypeError:
        raise TypeError(
            "Tracker guards must be a list of guards (guards=[Budget(...)]), got "
            f"{type(guards).__name__} {short_repr(guards)}"
        ) from None
    for guard in items:
        _not_a_class("guards", guard)
        missing = [
            name
            for name in ("reserve", "settle", "release")
            if not callable(getattr(guard, name, None))
        ]
        if missing:
            raise TypeError(
                "Tracker guards must be guards (Budget, RateLimit, TokenRateLimit, or "
                f"objects with reserve, settle and release), got {type(guard).__name__} "
                f"{short_repr(guard)} (no {', '.join(missing)})"
            )
    return items


def _checked_alerts(alerts: Any) -> tuple[Callable[[Any], Any], ...]:
    """``alerts`` as a tuple of callables; ``TypeError`` naming ``alerts`` otherwise (a
    single callback where a list belongs: ``alerts=[print]``)."""
    if callable(alerts) or isinstance(alerts, (str, bytes)):
        items = None
    else:
        try:
            items = tuple(alerts)
        except TypeError:
            items = None
    if items is None or not all(callable(alert) for alert in items):
        raise TypeError(
            "Tracker alerts must be a list of callbacks (alerts=[callback]), got "
            f"{type(alerts).__name__} {short_repr(alerts)}"
        )
    return items


def _check_log(log: Any) -> None:
    """``Tracker``'s ``log``: a keyword, a path or a text stream, checked here because the
    logger is made on first use, where a mistake would only be a warning."""
    if isinstance(log, str):
        from ._logging import check_output_text

        check_output_text(log, "Tracker log")
        return
    if isinstance(log, os.PathLike) or callable(getattr(log, "write", None)):
        return
    raise TypeError(
        "Tracker log must be 'auto', 'off', 'stdout', 'stderr', 'structlog', a file path "
        f"or a text stream, got {type(log).__name__} {short_repr(log)}"
    )


def _records_durably(ledger: object) -> bool:
    """Whether ``ledger.record`` puts an event beyond a SIGKILL before returning
    (``Ledger.durable``); any other ledger is not relied on for it."""
    try:
        return getattr(ledger, "durable", False) is True
    except Exception:  # a ledger-like object whose attribute raises
        return False


_NO_USAGE = Usage()
_STATUSES: frozenset[str] = frozenset(("ok", "error", "cancelled"))


def _bare_event(call: Call, ending: _Ending, exc: BaseException) -> UsageEvent:
    """The last event ``_salvage`` tries: the call's id, time, source, model and status,
    no usage, attribution, metadata, price context or measures."""
    model = redact_text(call.model) if isinstance(call.model, str) else None
    provider = ending.provider or call.provider
    status = ending.status
    if status.__class__ is not str or status not in _STATUSES:
        status = "error"
    return UsageEvent(
        id=call.id,
        model=model,
        usage=_NO_USAGE,
        cost=Cost(status="not_priced", model=model),
        timestamp=call.started_at,
        source=call.source if isinstance(call.source, str) else "api",
        provider=provider if isinstance(provider, str) else None,
        status=status,
        metadata={"costledger.tracking_error": type(exc).__name__},
    )


def _name_call(call: Call) -> None:
    """``call.model`` and ``call.provider`` as the event will hold them, before the guards
    key their counters by them (a per-model budget would fail on a bool) and observers
    see them: their obvious text (``event_text``: an enum, bytes), else left out (noted
    and warned of, as the finish does: ``_field``); the model scrubbed of secrets."""
    model = call.model
    if model is not None and model.__class__ is not str:
        model = _field(call, "model", model)
    call.model = redact_text(model) if model else model
    provider = call.provider
    if provider is not None and provider.__class__ is not str:
        call.provider = _field(call, "provider", provider)


def _checked(call: Call, ending: _Ending) -> _Ending:
    """``ending``, and ``call`` in place, with every text field of the event to be text.

    The fields come from the host (``record``'s arguments, an entry point's framework): a
    value whose text is obvious (a number, a UUID, an enum, bytes: ``event_text``) becomes
    that text, a status in another case (``"Error"``) the status; any other value (a list
    for ``status``, a dict for ``request_id``) is left out (a status: ``"error"`` when an
    error was given, else ``"ok"``; a source: ``"api"``; an id: a new one), with a warning
    naming the field and the value, and the note ``costledger.invalid.<field>`` (the
    value's ``repr``) in the event's metadata. Never raises on the host's values. One
    pass of type checks when everything is text, as it nearly always is.

    Likewise ``metadata`` is a mapping (else none), ``reported_cost`` exact money (a
    ``Decimal``, an ``int``, a decimal string, a float by its shortest ``repr``) that the
    ledger can store (under 10^20); else none: the ledger would reject the whole event for
    it. (``record`` checks its ``latency_ms``; an entry point's is its own clock's float.)"""
    status: Any = ending.status
    error = ending.error
    metadata = ending.metadata
    reported = ending.reported_cost
    if (
        status.__class__ is str
        and status in _STATUSES
        and call.source.__class__ is str
        and (error is None or error.__class__ is str or isinstance(error, BaseException))
        and call._id != ""
        and (metadata is None or metadata.__class__ is dict or isinstance(metadata, Mapping))
        and (
            reported is None
            or (reported.__class__ is Decimal and reported.is_finite() and money_in_range(reported))
        )
    ):
        for value in (
            call._id,
            call.source,
            call.model,
            call.provider,
            call.run_id,
            call.parent_run_id,
            call.trace_id,
            ending.response_model,
            ending.provider,
            ending.request_id,
        ):
            if value is not None and value.__class__ is not str:
                break
        else:
            return ending
    call._id = _field(call, "call_id", call._id, "a new id")
    if call._id == "":
        _dropped(call, "call_id", "", "a new id", "non-empty text")
        call._id = None
    source = _field(call, "source", call.source, '"api"')
    call.source = "api" if source is None else source
    call.model = _field(call, "model", call.model)
    call.provider = _field(call, "provider", call.provider)
    call.run_id = _field(call, "run_id", call.run_id)
    call.parent_run_id = _field(call, "parent_run_id", call.parent_run_id)
    call.trace_id = _field(call, "trace_id", call.trace_id)
    if not (error is None or error.__class__ is str or isinstance(error, BaseException)):
        if isinstance(error, type) and issubclass(error, BaseException):
            error = error.__name__  # the class rather than an instance: its name
        else:
            error = _field(call, "error", error)
    if not (status.__class__ is str and status in _STATUSES):
        default = "ok" if error is None else "error"
        try:
            text = event_text("status", status)
        except (TypeError, ValueError):
            text = None
        normal = None if text is None else text.strip().lower()
        if normal in _STATUSES:
            status = normal  # "Error", " ok", an enum whose value is a status
        elif status is None:
            status = default  # not given
        else:
            _dropped(call, "status", status, repr(default), "ok, error or cancelled")
            status = default
    dropped: list[tuple[str, Any, str, str]] = []
    if metadata is not None and not isinstance(metadata, Mapping):
        dropped.append(("metadata", metadata, "none", "a mapping"))
        metadata = None
    if reported is not None:
        reported = _money(reported, dropped)
    for name, value, instead, expected in dropped:
        _dropped(call, name, value, instead, expected)
    return ending._replace(
        status=status,
        error=error,
        metadata=metadata,
        reported_cost=reported,
        response_model=_field(call, "response_model", ending.response_model),
        provider=_field(call, "provider", ending.provider),
        request_id=_field(call, "request_id", ending.request_id),
    )


_NO_LATENCY = float("nan")
"""The latency of a call whose given one was left out: the event stores none (``None``)."""


def _measure(value: Any, dropped: list[tuple[str, Any, str, str]]) -> float:
    """``latency_ms`` as a float (an int or a Decimal: its value); anything else (a string,
    a bool) is left out: ``_NO_LATENCY``, and ``dropped`` says so."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        try:
            return float(value)
        except (OverflowError, ValueError):  # an int past float's range
            pass
    dropped.append(("latency_ms", value, "None", "a number of milliseconds"))
    return _NO_LATENCY


def _money(value: Any, dropped: list[tuple[str, Any, str, str]]) -> Decimal | None:
    """``reported_cost`` as exact money: a ``Decimal``, an ``int`` or a decimal string as
    it is, a float by its shortest ``repr`` (``1.35e-05`` -> ``Decimal("0.0000135")``,
    never its binary expansion); anything else, an amount that is not finite, or one the
    ledger cannot store (10^20 or more either way: its ``NUMERIC(38, 18)``), is left out
    (``None``) and ``dropped`` says so."""
    amount: Decimal | None = None
    if not isinstance(value, bool):
        try:
            if isinstance(value, (Decimal, int, str)):
                amount = Decimal(value)
            elif isinstance(value, float):
                amount = Decimal(float.__repr__(value))  # numpy's repr is np.float64(...)
        except (ArithmeticError, ValueError):  # decimal.InvalidOperation: not a number
            amount = None
    if amount is not None and amount.is_finite():
        if money_in_range(amount):
            return amount
        dropped.append(("reported_cost", value, "None", _IN_RANGE))
        return None
    dropped.append(("reported_cost", value, "None", "a finite amount (Decimal, int or text)"))
    return None


_IN_RANGE = (
    f"an amount under 10^20 (the ledger's NUMERIC({MONEY_PRECISION}, {MONEY_SCALE}) "
    "holds 20 whole digits)"
)


def _start_time(value: Any, dropped: list[tuple[str, Any, str, str]]) -> datetime | None:
    """``started_at`` as an aware datetime: a naive one is read as UTC, as the ledger reads
    naive times (with a warning: it may have been local time); anything else (a string, a
    date, a number) is left out, the call timed when it is recorded, and ``dropped`` says
    so."""
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return value
        _report(
            "event.started_at",
            ValueError(
                f"started_at should be timezone-aware, got naive {short_repr(value)}; read as UTC"
            ),
        )
        return value.replace(tzinfo=timezone.utc)
    dropped.append(
        (
            "started_at",
            value,
            "the time of this record() call",
            "a timezone-aware datetime",
        )
    )
    return None


def _field(call: Call, name: str, value: Any, instead: str = "None") -> str | None:
    """``value`` as the text of field ``name`` (``event_text``); ``None`` (noted and
    logged, ``instead`` saying what the event holds then) when it has none."""
    if value is None or value.__class__ is str:
        return value
    try:
        return event_text(name, value)
    except (TypeError, ValueError):  # ValueError: an int too long to write out
        _dropped(call, name, value, instead, "text or None")
        return None


def _dropped(call: Call, name: str, value: Any, instead: str, expected: str) -> None:
    """Note on ``call`` and log (rate-limited per field) that ``value`` was not kept."""
    shown = short_repr(value)
    if call.notes is None:
        call.notes = {}
    call.notes[f"costledger.invalid.{name}"] = shown
    _report(
        f"event.{name}",
        TypeError(
            f"{name} must be {expected}, got {type(value).__name__} {shown}; the call is recorded"
            f" with {name} {instead}"
        ),
    )


def _unrecorded(model: Any) -> UsageEvent:
    """What ``record`` returns for a call it could not record at all (logged)."""
    return UsageEvent(
        model=model if isinstance(model, str) else None,
        usage=_NO_USAGE,
        cost=Cost(status="not_priced"),
        metadata={"costledger.tracking_error": "unrecorded"},
    )


def _scrubbed(attribution: Attribution) -> Attribution:
    """``attribution`` with no secret in its names and tags: they go to rows and log lines
    as they are (metadata is scrubbed with the rest of the event's). Most names are clean
    and a clean one costs one precompiled search."""
    if attribution is EMPTY_ATTRIBUTION:  # no names, no tags: nothing to scrub
        return attribution
    names = (attribution.user, attribution.team, attribution.project, attribution.feature)
    clean = tuple(None if v is None else redact_text(v) for v in names)
    tags = tuple(redact_text(t) for t in attribution.tags)
    if clean == names and tags == attribution.tags:
        return attribution
    user, team, project, feature = clean
    return replace(attribution, user=user, team=team, project=project, feature=feature, tags=tags)


class _Ending(NamedTuple):
    """How a call ended, as ``finish`` was told; ``_complete`` turns it into an event."""

    usage: Usage | None
    payload: Any
    response_model: str | None
    provider: str | None
    status: CallStatus
    error: BaseException | str | None
    request_id: str | None
    streamed: bool
    cache_hit: bool
    reported_cost: Decimal | None
    metadata: Mapping[str, Any] | None
    latency_ms: float | None
    price_context: Mapping[str, str] | None


_reader: Callable[..., Any] | None = None


def _read_response(payload: Any, provider: str | None) -> Any:
    # imported on first use (the module is not needed to import costledger), then kept:
    # an import statement here cost a tenth of @track_cost's time on the call path
    global _reader
    if _reader is None:
        from ._extract import read_response

        _reader = read_response
    return _reader(payload, provider=provider)


MAX_DEFERRED = 10_000
"""At most this many deferred finishes wait for the background worker (about 1 KB each).
When the queue is full, ``finish(defer=True)`` finishes the call on the caller's thread
instead, so a host that produces calls faster than the worker stores them is slowed to
the worker's pace rather than growing without bound, and nothing is lost."""

SETTLE_THREADS = 32
"""Threads for the settles the background worker hands off (a finished call whose guards'
store does I/O, ``Tracker._settle_elsewhere``) and the reservations async entry points
give back (``Tracker.cancel(background=True)``): started on demand, gone after a minute
idle. Their own, apart from the guards' threads for reservations (``_guards._store``),
where a reservation may read the ledger (a counter's seed), which waits for the settles
in flight: sharing threads, it could wait on work queued behind itself. Daemon threads,
as the worker's: the exit hook still hands settles to them (a ``ThreadPoolExecutor`` is
shut down before the exit hooks run, which would leave every settle of the queue's
remainder to one thread)."""

MAX_SETTLING = 128
"""At most this many settles handed off by the background worker wait or run on the settle
threads at once; past that the worker waits for one of them to end (a store slower than
the calls come slows the worker, never the host)."""

_EXIT_TIMEOUT = 30.0
"""At interpreter exit (or a ``multiprocessing`` child's), how long the queued finishes
may take; whatever is still queued then is dropped, counted and logged."""

_log = logging.getLogger("costledger.tracker")


class _DeferredWorker:
    """One background thread that finishes deferred calls, in submission order.

    The host's thread only appends to a deque (atomic, no lock, no wake-up): the worker
    wakes every ``interval`` seconds, or at once when ``batch`` items are waiting or a
    reader drains, and works through everything queued. Waking it per call would cost
    the host a thread switch each time. ``batch`` is small enough that what the queued
    calls keep alive (about six container objects each) stays under the cyclic GC's
    first threshold (700 allocations) between wakes: with 256, a host in a tight loop of
    LangChain calls ran a collection every ~190 calls on its own thread (1.2-1.7 us a
    call); with 64, 0.4-0.5 us. ``drain`` is a no-op on the worker itself (a
    sink or guard that reads the ledger must not wait for its own work).

    The queue holds at most ``limit`` items: past that, the caller finishes its call
    itself (``n_inline`` counts them). ``drain`` waits for what was queued before it (a
    mark queued behind it) and for the settles the worker handed to the settle threads
    by then (``_Settles``), never for what other threads queue meanwhile. At exit,
    ``finish_queued`` runs what is left, and waits for the settles in flight, before the
    ledgers close. In a forked child, ``after_fork`` gives the worker new
    locks and an empty queue (the parent's items are the parent's to finish); its
    thread starts again on the child's first deferred finish.
    """

    def __init__(self, interval: float = 0.05, batch: int = 64, limit: int = MAX_DEFERRED) -> None:
        self._items: deque[tuple[Any, ...]] = deque()  # (fn, *args)
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._interval = interval
        self._batch = batch
        self._limit = limit
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # the process whose running worker takes items; 0: none (not started, a forked
        # child, or after the exit hook: then the caller's thread finishes its call)
        self._owner = 0
        self._exiting = False
        self.n_inline = 0  # finished on the caller's thread: the queue was full
        self.n_dropped = 0  # still queued when the exit's time ran out
        self._next_warning = 0.0
        self._local = threading.local()  # ``full``: this thread runs an item itself (``_full``)

    def submit(self, item: tuple[Any, ...]) -> None:
        """Queue ``item`` = ``(fn, *args)``; the worker calls ``fn(*args)``."""
        if self._owner != os.getpid():
            if self._exiting or sys.is_finalizing():
                # No new thread at interpreter shutdown (Python 3.11 hangs the exit on
                # one), nor after the exit hook finished the queue: a call finished now
                # (a generator closed by the GC) runs here, before the ledger closes.
                self._run_now(item)
                return
            self._start()
        items = self._items
        if len(items) >= self._batch:
            if len(items) >= self._limit:
                self._full(item)
                return
            # Event.set takes a lock even when the event is already set: wake it once
            if not self._wake.is_set():
                self._wake.set()
        items.append(item)

    def submit_nowait(self, item: tuple[Any, ...]) -> None:
        """``submit`` for cleanup code (a finalizer, a weakref or GC callback).

        The GC runs such code on whatever thread it interrupted, which may hold a lock the
        item needs (a ledger's, a guard store's) or that waking the worker takes: run on
        that thread, the item would deadlock it. So the item is only appended (past the
        queue's limit too: cleanup is rare, bounded by the calls in flight), never run
        here, and the worker takes it on its next round (every ``interval``); not started
        yet, when it starts (the next ``submit``, a ``drain``, or the exit hook). Only
        once the exit hook has finished the queue (or the interpreter is shutting down) is
        it run here, as ``submit`` does: nothing would run it later."""
        if self._owner != os.getpid():
            if self._exiting or sys.is_finalizing():
                self._run_now(item)
                return
            if self._pid != os.getpid():  # a fork the at-fork hook did not see
                self.after_fork()
        self._items.append(item)

    def mark(self, item: tuple[Any, ...]) -> None:
        """Queue ``item`` after everything queued so far (past the limit too) and wake the
        worker: it runs once the worker has run all of that. When the worker is gone (at
        exit, calls are finished on their callers' threads), it runs here, now."""
        if self._owner != os.getpid():
            if self._exiting or sys.is_finalizing():
                self._run_now(item)
                return
            self._start()
        self._items.append(item)
        self._wake.set()

    def on_worker(self) -> bool:
        """Whether this is the worker's thread, which must never wait for its own work."""
        return self._thread is threading.current_thread()

    def finishing_inline(self) -> bool:
        """Whether this thread is finishing queued calls itself: the queue is full
        (``_full``), or the exit hook (``finish_queued``)."""
        return getattr(self._local, "full", False) is True

    def _full(self, item: tuple[Any, ...]) -> None:
        """The queue is full: the caller finishes its own call (bounded memory, nothing lost)."""
        self.n_inline += 1
        if not self._wake.is_set():
            self._wake.set()
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + 60.0
            _log.warning(
                "costledger: %d calls wait for the background worker; finishing calls on "
                "the caller's thread until it catches up (%d so far)",
                self._limit,
                self.n_inline,
            )
        self._local.full = True
        try:
            self._run_now(item)
        finally:
            self._local.full = False

    def _start(self) -> None:
        if self._pid != os.getpid():  # a fork the at-fork hook did not see (C-level)
            self.after_fork()
        with self._idle:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="costledger-deferred", daemon=True
                )
                self._thread.start()
            if not self._exiting:
                self._owner = self._pid

    def after_fork(self) -> None:
        """In a forked child: locks the parent's threads may have held, an empty queue,
        no thread (started again on first use)."""
        self._pid = os.getpid()
        self._owner = 0
        self._items = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._thread = None
        self._exiting = False
        self._local = threading.local()

    def _run(self) -> None:
        items = self._items
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._busy = True
            while items:
                try:
                    item = items.popleft()
                except IndexError:  # the exit hook took the last one
                    break
                self._run_now(item)
            self._busy = False
            with self._idle:
                self._idle.notify_all()

    @staticmethod
    def _run_now(item: tuple[Any, ...]) -> None:
        """Call ``fn(*args)``; what it raises is reported, never the host's problem."""
        fn, *args = item
        try:
            fn(*args)
        except Exception as exc:
            _report("tracker.deferred", exc)

    @property
    def pending(self) -> bool:
        return bool(self._items) or self._busy or _settles.busy

    def drain(self, timeout: float | None = None, *, settles: bool = True) -> bool:
        """Wait until everything queued before this call has run, and the settles the
        worker handed to the settle threads by then (a mark queued now, past the limit
        too): what other threads queue meanwhile is not waited for, so a reader under a
        steady load waits for its share, not for the queue to be empty. A no-op on the
        worker and on a settle thread (never waiting for their own work). ``False`` when
        ``timeout`` ran out first. At exit, the whole queue (``finish_queued``).
        ``settles=False``: the events only (a reader of totals has nothing to wait for
        in a guard store's round trips)."""
        if self._thread is None and self._items and not self._exiting:
            self._start()  # only ``submit_nowait`` queued so far, which starts no thread
        thread = self._thread
        if thread is threading.current_thread() or _settles.on_thread():
            return not self._items
        if self._pid != os.getpid():
            return not self._items
        if thread is None or self._exiting:
            deadline = None if timeout is None else time.monotonic() + timeout
            if not self._drain_all(timeout):
                return False
            if not settles:
                return True
            return _settles.wait(None if deadline is None else deadline - time.monotonic())
        reached = threading.Event()
        self.mark((_settles.after, reached.set) if settles else (reached.set,))
        return reached.wait(timeout)

    def _drain_all(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and the worker idle (the exit hook)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread() or self._pid != os.getpid():
            return not self._items
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._items or self._busy:
                self._wake.set()
                wait = 0.01 if deadline is None else min(0.01, deadline - time.monotonic())
                if wait <= 0:
                    return False
                self._idle.wait(wait)
        return True

    def finish_queued(self, timeout: float = _EXIT_TIMEOUT) -> None:
        """At exit: finish every queued call now, on this thread and the worker both (the
        worker may be stuck in a slow sink), and stop queueing: a call finished afterwards
        is finished on its caller's thread; then wait for the settles in flight on the
        settle threads. What the time does not allow is counted in ``n_dropped`` and
        logged."""
        self._exiting = True
        self._owner = 0
        if self._pid != os.getpid():
            return  # a fork the at-fork hook did not see: these are the parent's
        deadline = time.monotonic() + timeout
        items = self._items
        self._wake.set()
        self._local.full = True  # its settles go to the settle threads too
        try:
            while items and time.monotonic() < deadline:
                try:
                    item = items.popleft()
                except IndexError:  # the worker took the last one
                    break
                self._run_now(item)
        finally:
            self._local.full = False
        if not self._drain_all(max(0.0, deadline - time.monotonic())):
            lost = len(items)
            items.clear()
            if lost:
                self.n_dropped += lost
                _log.error(
                    "costledger: %d deferred call(s) lost: not finished %.0f s into the exit",
                    lost,
                    timeout,
                )
        if not _settles.wait(max(0.0, deadline - time.monotonic())):
            _log.error(
                "costledger: %d guard settle(s) still running %.0f s into the exit",
                _settles.in_flight,
                timeout,
            )


class _Settles:
    """The settles the background worker handed to the settle threads
    (``Tracker._settle_elsewhere``) and the reservations given back there
    (``Tracker._release_soon``), numbered in the order they were handed off, so that a
    drain waits for those handed off before its mark, never for later ones."""

    def __init__(self, limit: int = MAX_SETTLING) -> None:
        self._limit = limit
        self.after_fork()

    def after_fork(self) -> None:
        """New lock, nothing in flight, no thread (in a forked child: the parent's work and
        threads are the parent's)."""
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # one ended: room for another
        self._work = threading.Condition(lock)  # a job for a settle thread
        self._next = 0  # the number the next one handed off gets
        self._running: dict[int, None] = {}  # numbers in flight, oldest first
        # (number, fn, args): ``fn(*args)`` once every one numbered below has run
        self._waiting: deque[tuple[int, Callable[..., object], tuple[Any, ...]]] = deque()
        self._jobs: deque[tuple[int, Callable[..., object], tuple[Any, ...]]] = deque()
        self._threads = 0
        self._idle = 0  # threads waiting for a job
        self._local = threading.local()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def on_thread(self) -> bool:
        """Whether this thread is running one of them (it must never wait for them)."""
        return getattr(self._local, "running", False) is True

    def start(self, fn: Callable[..., object], *args: Any, bounded: bool) -> None:
        """Run ``fn(*args)`` on a settle thread; ``bounded`` (a settle): once fewer than
        ``limit`` are in flight (a release is not: bounded by the calls in flight)."""
        with self._cond:
            if bounded:
                while len(self._running) >= self._limit:
                    self._cond.wait(1.0)
            number = self._next
            self._next += 1
            self._running[number] = None
            job = (number, fn, args)
            self._jobs.append(job)
            if self._idle >= len(self._jobs) or self._threads >= SETTLE_THREADS:
                # a thread is free to take it, or will be
                self._work.notify()
                return
            self._threads += 1
        try:
            if sys.is_finalizing():  # Python 3.11 hangs the exit on a thread started now
                raise RuntimeError("interpreter shutdown")
            threading.Thread(target=self._serve, name="costledger-settle", daemon=True).start()
        except RuntimeError:  # no new thread (the interpreter is finalizing): run it here
            with self._cond:
                self._threads -= 1
                try:
                    self._jobs.remove(job)
                except ValueError:  # another settle thread took it
                    return
            self._run(*job)

    def _serve(self) -> None:
        """A settle thread: runs jobs until it has waited a minute for one."""
        self._local.running = True
        work = self._work
        jobs = self._jobs
        while True:
            with work:
                deadline = 0.0
                while not jobs:
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + 60.0
                    elif now >= deadline:
                        self._threads -= 1
                        return
                    self._idle += 1
                    try:
                        work.wait(deadline - now)
                    finally:
                        self._idle -= 1
                job = jobs.popleft()
            self._run(*job)

    def _run(self, number: int, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        running = self.on_thread()
        self._local.running = True
        try:
            fn(*args)
        except Exception as exc:  # ``_settle`` / ``_release`` report their own
            _report("tracker.settle", exc)
        finally:
            self._local.running = running
            self._done(number)

    def _done(self, number: int) -> None:
        ready = []
        with self._cond:
            self._running.pop(number, None)
            oldest = next(iter(self._running), self._next)
            waiting = self._waiting
            while waiting and waiting[0][0] <= oldest:
                ready.append(waiting.popleft())
            self._cond.notify_all()
        for _, fn, args in ready:
            try:
                fn(*args)
            except Exception as exc:
                _report("tracker.settle", exc)

    def after(self, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` once everything handed off so far has run: now when nothing is in
        flight, else on the settle thread that ends the last of them."""
        with self._cond:
            if self._running:
                self._waiting.append((self._next, fn, args))
                return
        fn(*args)

    def wait(self, timeout: float | None) -> bool:
        """Wait until everything handed off so far has run; ``False`` on timeout."""
        if self.on_thread():  # it would wait for itself
            return not self._running
        done = threading.Event()
        self.after(done.set)
        return done.wait(None if timeout is None else max(0.0, timeout))


def _waits_on_io(reservations: Iterable[tuple[Guard, Any]], *, custom: bool) -> bool:
    """Whether settling or giving back ``reservations`` waits on a guard store's I/O: one
    of them says so (``does_io``); a guard without ``does_io`` (the host's) counts as
    ``custom`` says: for a settle, it keeps the whole call on the worker (``False``); for
    a release, it may wait on anything (``True``)."""
    io = False
    for guard, token in reservations:
        if getattr(type(guard), "does_io", None) is None:
            if not custom:
                return False
            io = True
            continue
        if io:
            continue
        try:
            io = guard.does_io(token) is True  # type: ignore[attr-defined]
        except Exception as exc:
            _report("guard.does_io", exc)
            if not custom:
                return False
            io = True
    return io


_deferred = _DeferredWorker()
_settles = _Settles()
_SETTLE_WAIT = 5.0  # seconds a refused call waits at most for earlier calls' settles
_complete = Tracker._complete  # what deferred finishes run: a plain function, no bound method
_publish = Tracker._publish  # a durable ledger's deferred finish, once stored
_release = Tracker._release


def _refunds(guard: Guard) -> bool:
    """Whether ``guard.release`` gives a reservation back (see ``Guard``: ``refunds``)."""
    return getattr(guard, "refunds", True) is not False


def _holds(call: Call, guard: Guard) -> bool:
    """Whether ``call`` holds a reservation of ``guard`` (a token: ``None`` holds nothing)."""
    return any(held is guard and token is not None for held, token in call.reservations)


def _unchecked(refusal: GuardRefusal) -> bool:
    """Whether ``refusal`` says its guard could not check the call (its store is down, a
    budget's own failure): no settle changes that, and waiting would only add to an
    outage's delay."""
    from ._guards._budget import BudgetCheckFailed
    from ._guards._store import StoreUnavailable

    return isinstance(refusal, (BudgetCheckFailed, StoreUnavailable))


def _mark_passed(tracker: Tracker, passed: list[bool]) -> None:
    """The worker reached a waiter's mark, and the settles it handed off before it ran:
    what was queued before the mark is done."""
    passed[0] = True
    with tracker._settled:
        tracker._settled.notify_all()


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on the background worker, in order with deferred finishes.

    For entry points whose whole ending can leave the host's thread (LangChain hands its
    result objects on unchanged). ``fn`` should finish its call itself, with
    ``defer=False``; an exception it raises is reported, never the host's problem.
    """
    _deferred.submit((fn, *args))


def defer_nowait(fn: Callable[..., Any], *args: Any) -> None:
    """``defer`` for cleanup code (a finalizer, a weakref or GC callback): ``fn`` never
    runs on the calling thread, which the GC may have interrupted holding a lock ``fn``
    needs (``_DeferredWorker.submit_nowait``)."""
    _deferred.submit_nowait((fn, *args))


def drain_deferred(timeout: float | None = None) -> bool:
    """Wait until every call finished with ``defer=True`` so far (on any thread) is stored,
    logged and settled with its guards; calls other threads finish meanwhile are not
    waited for.

    Returns ``False`` if ``timeout`` (seconds) ran out first.
    """
    if not _deferred.pending:
        return True
    return _deferred.drain(timeout)


def drain_events(timeout: float | None = None) -> bool:
    """``drain_deferred`` for a reader of events only (running totals): every call
    finished with ``defer=True`` so far is priced, stored and handed to its observers;
    its guards' settle may still be under way on the settle threads (a Redis or SQL round
    trip a total does not need, which on an event loop would hold the loop)."""
    if not (_deferred._items or _deferred._busy):
        return True
    return _deferred.drain(timeout, settles=False)


# Run at exit before the queued calls are finished (the process's or a ``multiprocessing``
# child's, which ends with ``os._exit`` and runs no atexit hook): the decorator's, which
# finishes the tracked streams still open so that their calls are queued in time.
_before_exit: list[Callable[[], None]] = []


def before_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` at the exit of this process (a ``multiprocessing`` child's too), before
    the calls still queued for the background worker are finished and the ledgers close."""
    _before_exit.append(hook)


def _finish_at_exit() -> None:
    for hook in _before_exit:
        try:
            hook()
        except Exception as exc:  # at exit: report, never raise
            _report("tracker.exit", exc)
    try:
        _deferred.finish_queued()
    except Exception as exc:  # at exit: report, never raise
        _report("tracker.exit", exc)


# The exit hook must run before the ledgers' own (``weakref.finalize`` closes a ledger at
# exit, and a finish landing after that would only reach its spool). atexit runs hooks
# last-registered first: make sure weakref's is registered, then register ours.
weakref.finalize(_deferred, int).detach()
atexit.register(_finish_at_exit)


class _ForkGate:
    """Holds ``os.fork`` back (up to ``WAIT`` seconds) while a thread of this process is in
    a state a forked child cannot get out of.

    - **An import.** A module being imported is locked (an importlib module lock) until its
      code has run: a fork in the meantime leaves the child with the module half built
      and its lock held by a thread that is not there, so the child hangs the moment it
      imports that module or any the import had under way (``argparse``,
      ``configparser``: the host's own imports too), or (a thread of the child that
      happens to get the dead thread's id) finds it half built: ``ImportError``,
      ``AttributeError``. costledger's background threads import on first use: the
      ledger's first schema creation imports Alembic and some 120 modules with it, the
      first priced call the pricing modules, genai-prices and its price data
      (``_default_pricer``, ``Pricer.preload``).
    - **A SQLite write transaction.** SQLite keeps the locks of every connection to a file
      in a table of the process (WAL: the ``-shm`` node's), which the child inherits: a
      fork while this process holds the write lock leaves the child's own connections
      waiting for a lock nobody in the child will release (``SQLITE_BUSY`` until the busy
      timeout, at every write). A transaction lasts milliseconds.

    The background worker and the ledger's writer thread do both on their first call: a
    ``multiprocessing`` fork of the host's at that moment was such a fork. A fork waits
    for the threads inside; none enters during the fork. The bound keeps a fork from
    waiting out a database lock held by another process (the child is then as before, and
    ``_forget_dead_imports`` mends what imports it finds half done)."""

    WAIT = 5.0

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._held = False

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def before_fork(self) -> None:
        deadline = time.monotonic() + self.WAIT
        if not self._cond.acquire(timeout=self.WAIT):
            return  # never stop the host's fork: at worst as before the gate
        self._held = True
        while self._busy and (remaining := deadline - time.monotonic()) > 0:
            self._cond.wait(remaining)  # held again on return: no import starts now

    def after_fork_in_parent(self) -> None:
        if self._held:
            self._held = False
            self._cond.release()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the parent's threads are not here


fork_gate = _ForkGate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=fork_gate.before_fork,
        after_in_parent=fork_gate.after_fork_in_parent,
        after_in_child=fork_gate.after_fork_in_child,
    )


def _default_pricer() -> Pricer:
    """``Pricer.default()`` with genai-prices' data loaded, under the fork gate: the first
    finish (on the background worker) imports the pricing modules and genai-prices and
    loads its data, and a fork of the host's meanwhile left every call of the child
    unpriced. The data is loaded here, not on the first price: a tracker's pricer prices
    at once, and a load there would be out of the gate."""
    with fork_gate.busy():
        from ._pricing import Pricer

        pricer = Pricer.default()
        pricer.preload()  # gated itself too: the host may call it on any thread
        return pricer


# The packages whose imports a child forgets when a thread that is not there left them half
# done: costledger's own (and what they were importing), and genai-prices, imported on use.
_MENDED_IMPORTS = ("costledger", "genai_prices")


def _forget_dead_imports() -> None:
    """In a forked child: the imports a thread of the parent (not here) had under way at
    the fork, when they are costledger's or genai-prices' (a fork the gate could not hold
    back: its wait ran out, a host's thread was importing them): each module half built,
    its import lock held by that thread. Left so, every import of it would hang or find
    it half built (every call of the child unpriced, for the child's whole life).
    Forgotten, with the lock, and the other modules that thread was importing (the
    chain that led to it), the next import builds them anew."""
    import importlib._bootstrap as bootstrap

    locks = getattr(bootstrap, "_module_locks", None)
    if not isinstance(locks, dict):
        return
    me = threading.get_ident()
    held: dict[int, list[str]] = {}  # the dead thread's id -> the modules it was importing
    for name, ref in list(locks.items()):
        lock = ref() if callable(ref) else None
        owner = getattr(lock, "owner", None)
        if owner is not None and owner != me:
            held.setdefault(owner, []).append(name)
    for names in held.values():
        if not any(name.partition(".")[0] in _MENDED_IMPORTS for name in names):
            continue
        for name in names:
            locks.pop(name, None)
            module = sys.modules.get(name)
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                del sys.modules[name]


# Ledgers the trackers wrote to since this process was forked (``None`` in a process not
# forked): a ``multiprocessing`` child ends with ``os._exit``, skipping atexit and the
# ledgers' finalizers, so its exit closes them here. Only these: a ledger the child never
# used still holds the parent's buffer, connections and locks, which are not the child's.
_child_ledgers: dict[int, LedgerLike] | None = None
_child_exit_pid = 0


def _after_fork_in_child() -> None:
    """``os.register_at_fork``: a lock another thread held at the fork stays held forever
    in the child. New locks, an empty queue, and the child's own exit flush."""
    global _child_ledgers, _sinks_lock, _default_lock
    try:
        _forget_dead_imports()
    except Exception as exc:
        _report("tracker.after_fork", exc)
    try:
        _deferred.after_fork()
        _settles.after_fork()
        _sinks_lock = threading.Lock()
        _default_lock = threading.Lock()
        for tracker in list(_trackers):
            tracker._lock = threading.Lock()
            # the parent's calls: their settles are the parent's queue's, not the child's
            tracker._unsettled = {}
            tracker._settled = threading.Condition(threading.Lock())
            tracker._waiters = 0
        _child_ledgers = {}
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # multiprocessing clears its finalizers at the child's start, then runs these
            mp_util.register_after_fork(_deferred, _register_child_exit)
    except Exception as exc:
        _report("tracker.after_fork", exc)


def _register_child_exit(_: object) -> None:
    global _child_exit_pid
    if _child_exit_pid == os.getpid():
        return
    _child_exit_pid = os.getpid()
    import multiprocessing.util

    # run by multiprocessing.util._exit_function before the child's os._exit
    multiprocessing.util.Finalize(None, _finish_child, exitpriority=0)


def _finish_child() -> None:
    """A ``multiprocessing`` child ends: finish the queued calls, then close (flush) the
    ledgers it wrote to."""
    _finish_at_exit()
    for ledger in list((_child_ledgers or {}).values()):
        close = getattr(ledger, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception as exc:
            _report("ledger.close", exc)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _watch_mp_child() -> None:
    """At import: costledger first imported in a ``multiprocessing`` child saw no fork
    hook: set it up as the hook does (``when_mp_child``). A spawned child also runs atexit
    afterwards: the queue is empty by then, a ``Ledger`` already closed."""
    global _child_ledgers
    try:
        if when_mp_child(_register_child_exit, _deferred):
            _child_ledgers = {}
    except Exception as exc:  # never break the host's import
        _report("tracker.after_fork", exc)


# Process-wide observers of every emitted event (``capture_costs``). A tuple swapped under a
# lock, so the hot path reads it without locking.
_sinks: tuple[Callable[[UsageEvent], None], ...] = ()
_sinks_lock = threading.Lock()


class CallObserver(Protocol):
    """Sees every call start (on the host's thread) and finish (wherever it is finished).

    For integrations that need the call itself, not only its event (``costledger.otel``
    notes the span current at the start and makes a span at the end). Both methods must
    be quick and may not raise into the host: ``started`` is on the call path.
    """

    def started(self, call: Call) -> None: ...

    def finished(self, call: Call, event: UsageEvent) -> None: ...


_observers: tuple[CallObserver, ...] = ()


def add_observer(observer: CallObserver) -> None:
    global _observers
    with _sinks_lock:
        if observer not in _observers:
            _observers = (*_observers, observer)


def remove_observer(observer: CallObserver) -> None:
    global _observers
    with _sinks_lock:
        _observers = tuple(o for o in _observers if o is not observer)


def _observe_start(call: Call) -> None:
    for observer in _observers:
        try:
            observer.started(call)
        except Exception as exc:
            _report("observer.started", exc)


def add_sink(sink: Callable[[UsageEvent], None]) -> None:
    global _sinks
    with _sinks_lock:
        _sinks = (*_sinks, sink)


def remove_sink(sink: Callable[[UsageEvent], None]) -> None:
    global _sinks
    with _sinks_lock:
        _sinks = tuple(s for s in _sinks if s is not sink)


def _report(where: str, exc: BaseException, **context: Any) -> None:
    try:
        from ._logging import report_failure

        report_failure(where, exc, **context)
    except Exception:  # the failure reporter itself must never break the host either
        pass


_default: Tracker | None = None
_default_lock = threading.Lock()


def get_tracker() -> Tracker:
    """The process default Tracker (``configure`` sets it; built with defaults on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Tracker()
    return _default


def check_tracker(entry: str, tracker: object) -> Tracker | None:
    """``tracker`` as an entry point (``entry``: ``"track_cost()"``,
    ``"CostLedgerCallbackHandler()"``, ...) takes it: a ``Tracker``, or ``None`` for the
    process default. Anything else is a ``TypeError`` naming the entry point and the
    value, raised where the entry point is built: taken as given, every call through it
    would fail to be recorded (and run no guard) with only a rate-limited warning."""
    if tracker is None or isinstance(tracker, Tracker):
        return tracker
    # a ledger URL's password must not reach the message (nor a log line quoting it)
    shown = redact_url(tracker) if isinstance(tracker, str) else tracker
    raise TypeError(
        f"{entry} tracker must be a costledger Tracker or None, got "
        f"{type(tracker).__name__} {short_repr(shown)}{_tracker_hint(tracker)}"
    )


def _tracker_hint(value: object) -> str:
    """How to make a Tracker of what was given instead, for the likely slips."""
    if _is_url(value):  # Tracker(), report() and the CLI take a URL, so this one is natural
        return " (for a ledger URL: tracker=Tracker(Ledger(url)))"
    if isinstance(value, type) and issubclass(value, Tracker):
        return " (an instance: tracker=Tracker(...))"
    if not isinstance(value, type) and callable(getattr(value, "record", None)):
        return " (for a ledger: tracker=Tracker(ledger))"
    return ""


def configure(
    tracker: Tracker | None = None,
    /,
    *,
    ledger: LedgerLike | str | URL | None = None,
    pricer: Pricer | None = None,
    guards: Iterable[Guard] = (),
    logger: UsageLogger | None = None,
    log: str | os.PathLike[str] | None = None,
    guard_store: str | GuardStore | None = None,
    alerts: Iterable[Callable[[Any], Any]] = (),
    **default_attribution: Any,
) -> Tracker:
    """Set the process default Tracker, used by every entry point not handed one.

    Either pass a ready ``Tracker`` (positionally or as ``tracker=``), or the same
    arguments ``Tracker`` takes. Returns the Tracker now in force.
    """
    global _default
    if "tracker" in default_attribution:  # configure(tracker=t): the positional one's name
        named = default_attribution.pop("tracker")
        if tracker is not None:
            raise TypeError("configure() got a Tracker both positionally and as tracker=")
        tracker = named  # None: not given, as positionally
    tracker = check_tracker("configure()", tracker)
    if default_attribution:
        check_attribution_keywords(
            "configure", default_attribution, ("tracker", *_TRACKER_PARAMETERS)
        )
    if tracker is not None:
        given = [
            name
            for name, value in (
                ("ledger", ledger),
                ("pricer", pricer),
                ("logger", logger),
                ("log", log),
                ("guard_store", guard_store),
            )
            if value is not None
        ]
        given += ["guards"] if tuple(guards) else []
        given += ["alerts"] if tuple(alerts) else []
        given += sorted(default_attribution)
        if given:
            raise TypeError(
                "configure() takes a ready Tracker or the arguments to build one, not both: "
                f"got a Tracker and {', '.join(given)}"
            )
    if tracker is None:
        tracker = Tracker(
            ledger,
            pricer,
            guards,
            logger=logger,
            log=log,
            guard_store=guard_store,
            alerts=alerts,
            **default_attribution,
        )
    with _default_lock:
        _default = tracker
    return tracker


def _set_default(tracker: Tracker | None) -> Tracker | None:
    """Swap the default Tracker, returning the previous one (for ``capture_costs``)."""
    global _default
    with _default_lock:
        previous, _default = _default, tracker
    return previous


_watch_mp_child()  # last: it may report, and reports need this whole module
