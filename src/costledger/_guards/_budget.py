"""``Budget``: an allowance of money or tokens per period, global or per attribution key."""

from __future__ import annotations

import atexit
import hashlib
import itertools
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from .._errors import BudgetExceeded, GuardRefusal
from .._ledger._text import clean_text
from ._alerts import AlertCallback, BudgetAlert, dispatch
from ._estimate import Estimator, check_estimate, check_estimator
from ._ledger_spend import ledger_buckets
from ._spec import (
    MAX_UNITS,
    PER_KEYS,
    ROLLING_BUCKETS,
    Clock,
    Limit,
    Period,
    Window,
    call_keys,
    check_clock,
    check_guard_name,
    check_per,
    from_units,
    key_text,
    matches,
    parse_duration,
    parse_limit,
    parse_period,
    plain,
    reserve_units,
    to_units,
)
from ._store import GuardStore, StoreRefusal, StoreUnavailable, off_loop, store_for

if TYPE_CHECKING:
    from .._events import UsageEvent
    from .._tracker import Call, Tracker

__all__ = [
    "Budget",
    "BudgetCheckFailed",
    "BudgetStatus",
    "CurrencyMismatch",
    "counter_key",
    "decode_key",
]

FailMode = Literal["closed", "open"]
_MARGIN_MS = 3_600_000
_MAX_KEY = 200
_MAX_NAME = 200
EXCEEDED_MARK = "exceeded"
REPLAY_INLINE_ITEMS = 16
REPLAY_INLINE_SECONDS = 0.005
"""Settles a store missed are replayed before a reservation, on the caller's thread, up
to this many and for about this long (one round trip may run past it); the rest on a
background thread."""
DEFAULT_WARN_AT = (0.5, 0.8, 1.0)


def counter_key(key: str | None) -> str:
    """A key as it appears in a counter name: ``~`` for "no key", ``=value`` otherwise
    (long values shortened with a digest so a counter name stays indexable)."""
    if key is None:
        return "~"
    if len(key) > _MAX_KEY:
        key = key[:100] + "#" + hashlib.sha1(key.encode()).hexdigest()
    return "=" + key


def counter_name(name: str) -> str:
    """A guard's name as it appears in its counters' names: as it is, or a long one
    shortened with a digest as ``counter_key`` shortens keys, so a counter name stays
    within every store's limit (512 characters in SQL) whatever the name."""
    if len(name) > _MAX_NAME:
        return name[:100] + "#" + hashlib.sha1(name.encode()).hexdigest()
    return name


def decode_key(text: str) -> str | None:
    return None if text == "~" else text[1:]


class BudgetCheckFailed(BudgetExceeded):
    """A budget that fails closed could not check a call (an unexpected error in its
    reservation: the estimator, the call's attribution, ...), so it refused it: spending
    unchecked could go past a hard limit. ``cause`` is the error; ``spent`` and
    ``reserved`` are unknown and given as 0."""

    def __init__(self, budget: Budget, cause: BaseException) -> None:
        text = str(cause).strip().splitlines()
        super().__init__(
            f"budget {budget.name!r} could not check this call:"
            f" {type(cause).__name__}: {text[0][:300] if text else ''}; it fails closed,"
            " so the call is refused",
            scope=budget.name,
            key=None,
            limit=budget.limit.amount,
            spent=Decimal(0),
            reserved=Decimal(0),
            resets_at=None,
            unit=budget.limit.unit,
        )
        self.cause = cause


class CurrencyMismatch(ValueError):
    """A money budget met an amount in another currency than its own: it cannot count
    it (costledger never converts currencies on its own). ``what`` reads before the
    currency: ``"model 'gpt-4o' is priced in"``."""

    def __init__(self, budget: Budget, currency: object, what: str) -> None:
        super().__init__(
            f"{what} {currency}, but budget {budget.name!r} counts"
            f" {budget.limit.unit}: an amount in another currency cannot be counted against"
            f" it; give the budget a limit in {currency}, or price the model in"
            f" {budget.limit.unit} with a price book"
        )
        self.currency = currency
        self.budget_currency = budget.limit.unit


# Reservation ids: one per reservation, never the call's id (two calls in flight may share
# one, and a caller's id may be of any length). A random prefix per process (made anew in
# a forked child) and a counter: unique across the processes sharing a store, and cheap.
_res_prefix = ""
_res_count = itertools.count()


def _new_prefix() -> None:
    global _res_prefix, _res_count
    _res_prefix = os.urandom(8).hex() + "."
    _res_count = itertools.count()


_new_prefix()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_prefix)


def _reservation_id() -> str:
    """A new reservation id: 17 + up to 16 hex characters, within any store's 64."""
    return f"{_res_prefix}{next(_res_count):x}"


def _recorded_id(call_id: str) -> str:
    """The settle id of a recorded call: its call id (the ledger's idempotency key),
    within any store's 64 characters (a longer one by its digest). ``rec`` keeps it apart
    from reservation ids, which hold no colon or hash. As the ledger stores the id: a NUL
    or a lone surrogate, which no store can write, is cleaned (``clean_text``)."""
    call_id = clean_text(call_id)
    text = "rec:" + call_id
    if len(text) <= 64:
        return text
    return "rec#" + hashlib.sha256(call_id.encode()).hexdigest()[:48]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where one budget stands for one key in its current period."""

    budget: str
    per: str | None
    key: str | None
    unit: str
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    period: str
    period_start: datetime | None
    resets_at: datetime | None
    hard: bool

    @property
    def used(self) -> Decimal:
        """Fraction of the limit spent (settled only), e.g. ``Decimal("0.42")``."""
        if not self.limit:
            return Decimal(1) if self.spent else Decimal(0)
        return self.spent / self.limit


@dataclass(slots=True)
class _Hold:
    counter: str
    key: str | None
    # The reservation's id, and its settle's: a store settles each id once, so a settle
    # replayed after an answer that came too late is not counted twice.
    res_id: str
    win: Window
    keep_until: int | None
    # True: reserved. None: unknown (the store did not answer the reservation in time; it
    # may have made it). False: nothing reserved (failed open, ``Tracker.record``).
    held: bool | None = True


_Pending = tuple[Literal["settle", "release"], "_Token", _Hold, int]


@dataclass(slots=True)
class _Token:
    store: GuardStore
    units: int
    tracker: Tracker
    holds: list[_Hold] = field(default_factory=list)


class Budget:
    """An allowance of money or tokens per period, enforced before each call.

    >>> Budget("100 USD", "month")                        # everything, this calendar month
    >>> Budget("5 USD", "day", per="user", tz="Europe/Paris")   # each user, each local day
    >>> Budget("2M tokens", "24h", per="team", hard=False)      # alerts only, rolling 24 hours

    ``limit``: money (a ``Decimal``, an ``int``, ``"100 USD"``) or tokens (``"2M tokens"``;
    input plus output, cached input included). ``period``: ``hour``/``day``/``week``/
    ``month``/``year`` (calendar periods in ``tz``; weeks start on Monday), a rolling window
    (``"24h"``, ``"30d"``) or ``lifetime``. ``per``: ``None`` (one allowance) or ``user``,
    ``team``, ``project``, ``feature``, ``model``, ``provider`` or ``tag``: each value gets
    its own allowance (calls without one share the key ``None``; a call with several tags
    counts against each). ``where``: only calls whose attribution matches, e.g.
    ``{"team": "search"}``.

    A hard budget refuses a call whose worst-case estimate no longer fits with
    ``BudgetExceeded``; a soft one (``hard=False``) only alerts. Alerts fire once per
    period and key at each ``warn_at`` fraction, and once when a hard budget first refuses
    (rolling windows: once per slot of the window's length).

    ``on_store_error``: what to do when the guard store cannot be reached, or the budget
    fails to check a call for any other reason: ``"closed"`` (refuse the call; the default
    for hard budgets) or ``"open"`` (let it through and log; the default for soft ones).
    ``reservation_ttl``: how long a reservation is held if its call never ends (a crashed
    process), default 10 minutes. ``clock``: seconds since the epoch, for tests.
    """

    # Its refusal sends the once-per-period "exceeded" alert: held back while the tracker
    # may still ask again (``Call.tentative``, see ``costledger._tracker.Guard``).
    reads_tentative = True

    def __init__(
        self,
        limit: Decimal | int | str,
        period: str | Period = "month",
        *,
        per: str | None = None,
        hard: bool = True,
        warn_at: Iterable[float | Decimal | str] = DEFAULT_WARN_AT,
        tz: str = "UTC",
        name: str | None = None,
        where: Mapping[str, str] | None = None,
        on_store_error: FailMode | None = None,
        reservation_ttl: float | str = 600.0,
        estimator: Estimator | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.limit: Limit = parse_limit(limit)
        if not isinstance(tz, str):
            raise ValueError(f"tz must be an IANA time zone such as 'Europe/Paris', got {tz!r}")
        self.period: Period = parse_period(period, tz)
        self.per = check_per(per)
        if not isinstance(hard, bool):
            raise ValueError(f"hard must be True or False, got {hard!r}")
        self.hard = hard
        self.where = _check_where(where)
        if on_store_error is None:
            on_store_error = "closed" if self.hard else "open"
        if on_store_error not in ("closed", "open"):
            raise ValueError(f"on_store_error must be 'closed' or 'open', got {on_store_error!r}")
        self.on_store_error: FailMode = on_store_error
        self.reservation_ttl = parse_duration(reservation_ttl, field="reservation_ttl")
        self.estimator: Estimator = check_estimator(estimator)
        self._clock: Clock = check_clock(clock)
        # the calls' own times are on the same clock (an injected one is the test's alone)
        self._real_clock = clock is None
        self.warn_at = _check_warn_at(warn_at)
        self.name = name if name is not None else self._default_name()
        if name is None and len(self.name) > _MAX_NAME:
            raise ValueError(self._long_default_name())
        if not isinstance(self.name, str) or not self.name or len(self.name) > _MAX_NAME:
            raise ValueError(
                f"name must be a non-empty string of at most {_MAX_NAME} characters, got {name!r}"
            )
        check_guard_name(self.name)
        self.tokens = self.limit.is_tokens
        self._limit_units = self.limit.units()
        # A mark is at least 1 unit: a "0 USD" budget's marks would be 0, reached (and
        # marked without an alert) when its counter is seeded, so none would ever fire.
        # And at most what a counter holds (a warn_at above 1 of the largest limit).
        self._marks = tuple(
            (f"warn:{t}", min(MAX_UNITS, max(1, math.ceil(self._limit_units * t))))
            for t in self.warn_at
        )
        self._thresholds = {f"warn:{t}": t for t in self.warn_at}
        self._prefix = f"budget:{self.name}:"
        self._callbacks: list[AlertCallback] = []
        self._ttl_ms = int(self.reservation_ttl * 1000)
        self._refuse_mark = EXCEEDED_MARK if self.hard else None
        # Rolling windows: marks of the current slot (see _marks_for).
        self._slot: tuple[int, tuple[tuple[str, int], ...], str | None] | None = None
        self._slot_ms = (
            self.period.bucket_ms * ROLLING_BUCKETS if self.period.kind == "rolling" else 0
        )
        # Hot-path caches: the last tracker's store, counter names of recent keys.
        self._last_store: tuple[Tracker, GuardStore] | None = None
        self._names: dict[tuple[str | None, str], str] = {}
        # Settles (and releases) the store could not take, replayed oldest first.
        self._pending: deque[_Pending] = deque(maxlen=100_000)
        self._next_retry = 0.0
        self._replaying = False  # a background replay of the backlog is under way
        # Counters seen seeded in the last minute (Tracker.record seeds before it settles).
        self._seeded: dict[tuple[int, str], float] = {}
        _budgets.add(self)

    def _default_name(self) -> str:
        """The budget's definition: limit, period, zone, ``per``, ``where``; then ``soft``
        for a soft budget and a digest of ``warn_at`` when it is not the default, so two
        different budgets never share counters by their default names. A hard budget with
        the default alerts keeps the name it always had (``"2 USD/day per user"``)."""
        text = f"{self.limit}/{self.period.text}"
        if self.period.kind == "calendar" and self.period.tz_name != "UTC":
            text += f" {self.period.tz_name}"
        if self.per:
            text += f" per {self.per}"
        if self.where:
            text += " where " + ",".join(f"{k}={v}" for k, v in sorted(self.where.items()))
        if not self.hard:
            text += " soft"
        if self.warn_at != _check_warn_at(DEFAULT_WARN_AT):
            settings = "warn_at=" + ",".join(str(t) for t in self.warn_at)
            text += " #" + hashlib.sha1(settings.encode()).hexdigest()[:6]
        return text

    def _long_default_name(self) -> str:
        """The error for a default name too long to key the budget's counters: it names
        the ``where`` value that made it so (else the name itself)."""
        if self.where:
            field, value = max(self.where.items(), key=lambda item: len(item[1]))
            shown = value if len(value) <= 60 else value[:60] + "..."
            return (
                f"where[{field!r}] is {len(value)} characters long ({shown!r}), too long for"
                f" the budget's default name, which names it (at most {_MAX_NAME}"
                " characters): give the budget a name= of its own"
            )
        return (
            f"the budget's default name {self.name[:60] + '...'!r} is longer than"
            f" {_MAX_NAME} characters: give the budget a name= of its own"
        )

    def __repr__(self) -> str:
        return f"Budget({self.name!r}, hard={self.hard})"

    # -- configuration ---------------------------------------------------------------------
    def on_alert(self, callback: AlertCallback) -> AlertCallback:
        """Call ``callback(alert)`` (sync or async) for each alert of this budget; returns it,
        so it also works as a decorator."""
        if not callable(callback):
            raise TypeError(f"on_alert needs a callable, got {callback!r}")
        self._callbacks.append(callback)
        return callback

    def bind(self, tracker: Tracker) -> None:
        """Called by the Tracker: open (or check) its guard store now, so a bad
        ``guard_store`` URL fails at start-up rather than on the first call; and refuse a
        money budget whose currency the tracker's pricer never prices in (it could count
        none of its calls)."""
        store_for(tracker)
        if self.tokens:
            return
        currencies = _pricer_currencies(tracker)
        if currencies is not None and self.limit.unit not in currencies:
            raise ValueError(
                f"budget {self.name!r} counts {self.limit.unit}, but this tracker's pricer"
                f" prices in {', '.join(sorted(currencies)) or 'no currency'} only, so the"
                " budget could count none of its calls; give the budget a limit in"
                f" {' or '.join(sorted(currencies)) or 'USD'}, or price the models in"
                f" {self.limit.unit} with a price book (currency = {self.limit.unit!r})"
            )

    # -- the guard protocol ---------------------------------------------------------------------
    def reserve(self, call: Call, tracker: Tracker) -> _Token | None:
        return self._reserve(call, tracker, True)

    def _reserve(
        self, call: Call, tracker: Tracker, seed: bool, units: int | None = None
    ) -> _Token | None:
        """``reserve``; with ``seed=False`` (on an event loop's thread) a counter that needs
        its seed raises ``_SeedNeeded`` instead, with nothing held. ``units``: the call's
        estimate, when it was made already (``_SeedNeeded.units``)."""
        # An estimate that cannot be read is the caller's mistake: a ValueError naming it
        # (Tracker.start checks it before any guard runs, so it never gets here from there).
        explicit = None
        if not self.tokens and call.estimate is not None:
            explicit = check_estimate(call.estimate)
        token: _Token | None = None
        try:
            if self.where is not None and not matches(call, self.where):
                return None
            if self._pending and time.monotonic() >= self._next_retry:
                self._replay()
            store = self._store_of(tracker)
            now = self._clock()
            now_ms = int(now * 1000)
            win = self.period.window(now)
            if units is not None:
                pass
            elif explicit is not None:
                units = reserve_units(explicit, tokens=False)
            else:
                units = self._estimate_units(call, tracker)
            token = _Token(store, units, tracker)
            keys = call_keys(call, self.per)
            keep = self._keep_until(win, now_ms)
            for i, key in enumerate(keys):
                res_id = _reservation_id()
                try:
                    self._reserve_key(
                        store,
                        tracker,
                        token,
                        key,
                        res_id,
                        win,
                        now,
                        now_ms,
                        keep,
                        call.tentative,
                        seed,
                    )
                except StoreUnavailable as exc:
                    # The store may have made the reservation and lost only its answer (a
                    # timeout): it is given back later, with what this call holds already,
                    # off this call's path (the store has just failed). When the ledger
                    # failed (seeding), the store is fine and nothing was reserved.
                    failed = _Hold(self._counter(key, win), key, res_id, win, keep, None)
                    if exc.store != store.url or exc.cooling:
                        # the ledger failed, or the store was not asked (it failed less
                        # than STORE_COOLDOWN ago): nothing was reserved
                        failed.held = False
                    if self.on_store_error == "closed":
                        if failed.held is None:
                            for hold in (*token.holds, failed):
                                self._queue(("release", token, hold, 0))
                            token.holds = []
                        else:
                            self.release(token)
                        raise StoreRefusal(
                            exc.store, exc.cause, f"budget {self.name!r}", cooling=exc.cooling
                        ) from exc
                    _report("budget.reserve", exc, budget=self.name)
                    # Fails open: the call's spend still counts when it settles. The settle
                    # of the failed key also drops its reservation, if it was made.
                    token.holds.append(failed)
                    for other in keys[i + 1 :]:
                        hold = _Hold(
                            self._counter(other, win), other, _reservation_id(), win, keep, False
                        )
                        token.holds.append(hold)
                    return token
            return token
        except GuardRefusal:
            raise
        except _SeedNeeded:
            if token is not None:
                self._release_quietly(token)  # the keys before this one: asked again
            raise
        except Exception as exc:
            # The budget's own failure (the estimator, the call's attribution, a store
            # answering nonsense): it cannot tell whether the call fits. Whatever it held
            # is given back; then it fails the way it fails when its store is down.
            if token is not None:
                self._release_quietly(token)
            if self.on_store_error == "closed":
                raise BudgetCheckFailed(self, exc) from exc
            try:  # fails open: the call is not checked, but what it spends still counts
                accounted = self._account(call, tracker, recorded=False, seed=seed)
            except _SeedNeeded:
                raise  # asked again in a worker thread, which reports the failure
            except Exception:
                accounted = None
            _report("budget.reserve", exc, budget=self.name)
            return accounted

    async def areserve(self, call: Call, tracker: Tracker) -> _Token | None:
        """``reserve`` for async entry points (``Tracker.astart``): unless the store is
        ``memory://``, it runs in a worker thread, so the store's round trips (and a seed's
        ledger read) never block the event loop. On ``memory://`` it runs inline, except
        the first reservation of a counter (a period's first, a new key's, the first after
        a start): its seed reads the ledger, which waits for the calls queued on the
        background worker and the ledger's writer (seconds under load), so that
        reservation runs in a worker thread too. Same checks, refusals and alerts; if the
        caller is cancelled meanwhile, what it reserved is given back."""
        if self.where is not None and not matches(call, self.where):
            return None
        store = self._store_of(tracker)
        if not store.does_io:
            try:
                return self._reserve(call, tracker, False)
            except _SeedNeeded as need:  # nothing held; the estimate is not made again
                return await off_loop(
                    store,
                    self._reserve,
                    call,
                    tracker,
                    True,
                    need.units,
                    undo=self._release_quietly,
                    waits=True,
                )
        return await off_loop(store, self.reserve, call, tracker, undo=self._release_quietly)

    def _store_of(self, tracker: Tracker) -> GuardStore:
        last = self._last_store
        if last is not None and last[0] is tracker:
            return last[1]
        store = store_for(tracker)
        self._last_store = (tracker, store)
        return store

    def account(self, call: Call, tracker: Tracker) -> _Token | None:
        """For ``Tracker.record``: a call that already happened is counted when it settles,
        in the period it started in, with nothing reserved and nothing refused. A counter
        not seeded yet is seeded from the ledger first, so the settle counts (and alerts).

        The settle's id comes from the call's id, as the ledger's event does: a call
        recorded twice (a retried webhook, a backfill run again) is stored once by the
        ledger and counted once by the store (which remembers settled ids for an hour)."""
        return self._account(call, tracker, recorded=True)

    def _account(
        self, call: Call, tracker: Tracker, *, recorded: bool, seed: bool = True
    ) -> _Token | None:
        """``account``; ``recorded=False`` for a call that failed open in ``reserve``: two
        such calls in flight may share an id, so each settles under an id of its own.
        ``seed=False``: as in ``_reserve``."""
        if self.where is not None and not matches(call, self.where):
            return None
        if self._pending and time.monotonic() >= self._next_retry:
            self._replay()
        now = self._clock()
        win = self.period.window(call.started_at.timestamp())
        keep = self._keep_until(win, int(now * 1000))
        store = store_for(tracker)
        token = _Token(store, 0, tracker)
        for key in call_keys(call, self.per):
            counter = self._counter(key, win)
            self._ensure_seeded(store, tracker, counter, key, win, now, keep, seed)
            settle_id = _recorded_id(call.id) if recorded else _reservation_id()
            token.holds.append(_Hold(counter, key, settle_id, win, keep, False))
        return token

    def _ensure_seeded(
        self,
        store: GuardStore,
        tracker: Tracker,
        counter: str,
        key: str | None,
        win: Window,
        now: float,
        keep: int | None,
        seed: bool = True,
    ) -> None:
        """Seed ``counter`` from the ledger unless it is (a settle on a counter that is not
        seeded adds nothing). On a store or ledger failure the settle goes ahead: kept
        and replayed, or left to the seed that later reads this call from the ledger.
        ``seed=False``: raise ``_SeedNeeded`` instead of seeding."""
        seen = (id(store), counter)
        if self._seeded.get(seen, 0.0) > time.monotonic():
            return
        try:
            if not store.read(counter, floor=win.floor, now_ms=int(now * 1000)).seeded:
                if not seed:
                    raise _SeedNeeded(None)
                self._seed(store, tracker, counter, key, win, now, keep)
        except StoreUnavailable as exc:
            _report("budget.seed", exc, budget=self.name)
            return
        if len(self._seeded) > 4096:
            self._seeded.clear()
        self._seeded[seen] = time.monotonic() + 60.0

    def _reserve_key(
        self,
        store: GuardStore,
        tracker: Tracker,
        token: _Token,
        key: str | None,
        res_id: str,
        win: Window,
        now: float,
        now_ms: int,
        keep: int | None,
        tentative: bool = False,
        seed: bool = True,
    ) -> None:
        counter = self._counter(key, win)
        limit = self._limit_units if self.hard else None
        expires = now_ms + self._ttl_ms
        # A tentative refusal (earlier calls' settles may still free room: the tracker asks
        # again) must not use up the once-per-period mark nor send the "exceeded" alert.
        refuse_mark = (
            None
            if tentative
            else self._refuse_mark
            if self._slot_ms == 0
            else self._marks_for(win)[1]
        )
        admission = store.reserve(
            counter,
            res_id=res_id,
            amount=token.units,
            limit=limit,
            floor=win.floor,
            now_ms=now_ms,
            expires_ms=expires,
            keep_until=keep,
            refuse_mark=refuse_mark,
        )
        if admission.status == "unseeded":
            if not seed:
                raise _SeedNeeded(token.units)
            self._seed(store, tracker, counter, key, win, now, keep)
            admission = store.reserve(
                counter,
                res_id=res_id,
                amount=token.units,
                limit=limit,
                floor=win.floor,
                now_ms=now_ms,
                expires_ms=expires,
                keep_until=keep,
                refuse_mark=refuse_mark,
            )
        if admission.status == "ok":
            token.holds.append(_Hold(counter, key, res_id, win, keep))
            return
        if admission.status != "refused":  # the store lost the seed between two scripts
            raise RuntimeError(f"guard store {store.url} did not keep counter {counter!r}")
        self.release(token)
        spent = from_units(admission.spent, tokens=self.tokens)
        reserved = from_units(admission.reserved, tokens=self.tokens)
        wanted = from_units(token.units, tokens=self.tokens)
        if admission.first_refusal:
            self._alert(token, "exceeded", key, None, admission.spent, admission.reserved, win)
        resets_at = self._resets_at(win)
        raise BudgetExceeded(
            f"budget {self.name!r}{_for_key(self.per, key)} would be exceeded:"
            f" spent {spent} + reserved {reserved} + this call's estimate {wanted}"
            f" > limit {self.limit.amount} {self.limit.unit}"
            + (f"; resets at {resets_at.isoformat()}" if resets_at else ""),
            scope=self.name,
            key=key,
            limit=self.limit.amount,
            spent=spent,
            reserved=reserved,
            resets_at=resets_at,
            unit=self.limit.unit,
        )

    def does_io(self, token: _Token | None) -> bool:
        """Whether settling or releasing ``token`` waits on the guard store (Redis, SQL):
        the tracker then runs it on its settle threads, off the background worker and off
        an event loop (``Tracker``)."""
        return token is not None and token.store.does_io

    def settle(self, token: _Token | None, event: UsageEvent) -> None:
        if token is None:
            return
        units = self._actual_units(token, event)
        if self._real_clock and self.period.kind == "calendar":
            self._follow_event(token, event)
        for hold in token.holds:
            if not self._settle_hold(token, hold, units):
                # The store is down, or answered too late: keep the settle and replay it
                # (before the next reservation). The store settles each id once, so a
                # settle it did run and answered too late is not counted twice.
                self._queue(("settle", token, hold, units))
        token.holds = []

    def _follow_event(self, token: _Token, event: UsageEvent) -> None:
        """Settle in the period the ledger files the call in: its event's timestamp. An
        entry point may move a call's start after its guards ran (the LiteLLM wrappers
        restart the clock after a rate limit's wait), across the end of a period: the
        spend then belongs to the next period, as it will to a seed of that period read
        from the ledger, never to both. Each hold in another period gives its reservation
        back and settles, under the same id, in the event's period. It does not seed that
        period's counter: a durable ledger has the event already, and the seed would count
        it too; a counter not seeded takes nothing, and its seed reads the call from the
        ledger."""
        when = getattr(event, "timestamp", None)
        if when is None or not token.holds:
            return
        at = when.timestamp()
        win = self.period.window(at)
        if all(hold.win.label == win.label for hold in token.holds):
            return
        now = self._clock()
        keep = self._keep_until(win, int(now * 1000))
        moved = []
        for hold in token.holds:
            if hold.win.label == win.label:
                moved.append(hold)
                continue
            counter = self._counter(hold.key, win)
            if hold.held is not False and (
                hold.held is None or not self._release_hold(token, hold)
            ):
                self._queue(("release", token, hold, 0))
            moved.append(_Hold(counter, hold.key, hold.res_id, win, keep, False))
        token.holds = moved

    def _queue(self, item: _Pending) -> None:
        """Keep a settle or release the store could not take, to replay it later."""
        if len(self._pending) == self._pending.maxlen:
            _report("budget.settle_dropped", OverflowError("pending settles"), budget=self.name)
        self._pending.append(item)
        # not on the next call's path at once: the store has just failed
        self._next_retry = max(self._next_retry, time.monotonic() + 1.0)

    def _settle_hold(self, token: _Token, hold: _Hold, units: int) -> bool:
        """Settle one key; False when the store could not be reached."""
        if self._slot_ms:  # rolling: the window and alert slot of now
            now_win = self.period.window(self._clock())
            floor = now_win.floor
            marks = self._marks_for(now_win)[0]
        else:
            floor = hold.win.floor
            marks = self._marks
        try:
            settled = token.store.settle(
                hold.counter,
                res_id=hold.res_id,
                reserved=token.units,
                bucket=hold.win.bucket,
                amount=units,
                floor=floor,
                keep_until=hold.keep_until,
                marks=marks,
            )
        except StoreUnavailable as exc:
            _report("budget.settle", exc, budget=self.name, units=units)
            return False
        for label in settled.fired:
            self._alert(
                token,
                "threshold",
                hold.key,
                self._thresholds.get(label.partition("@")[0]),
                settled.spent,
                settled.reserved,
                hold.win,
            )
        return True

    def _replay(self) -> None:
        """Replay what the store missed, from a caller's path: the oldest few (at most
        ``REPLAY_INLINE_ITEMS``, for at most ``REPLAY_INLINE_SECONDS``), so a reservation
        usually sees them; a backlog left by an outage (up to 100,000) is replayed on a
        background thread, never on a caller's (or an event loop's) time."""
        more = self._retry_pending(
            max_items=REPLAY_INLINE_ITEMS,
            until=time.monotonic() + REPLAY_INLINE_SECONDS,
        )
        if more:
            self._replay_in_background()

    def _replay_in_background(self) -> None:
        with _replay_lock:
            if self._replaying:
                return
            self._replaying = True
        try:
            from ._store import _guard_threads

            _guard_threads().submit(self._replay_all)
        except Exception:  # the interpreter is exiting: the exit hook replays them
            self._replaying = False

    def _replay_all(self) -> None:
        try:
            self._retry_pending()
        except Exception as exc:
            _report("budget.retry", exc, budget=self.name)
        finally:
            self._replaying = False

    def _retry_pending(
        self,
        failed: set[int] | None = None,
        *,
        max_items: int | None = None,
        until: float | None = None,
    ) -> bool:
        """Replay the settles and releases the store missed, oldest first. ``failed``
        (at exit): ids of stores that failed already, skipped. Stops after ``max_items``
        or at ``until`` (``time.monotonic``); returns True when it stopped so with some
        still pending (the store answers: the rest can be replayed at once)."""
        pending = self._pending
        done_items = 0
        while pending:
            if max_items is not None and (
                done_items >= max_items or (until is not None and time.monotonic() >= until)
            ):
                return True
            done_items += 1
            try:
                item = pending.popleft()
            except IndexError:  # another thread took the last one
                return False
            op, token, hold, units = item
            if failed is not None and id(token.store) in failed:
                continue
            try:
                if op == "settle":
                    done = self._settle_hold(token, hold, units)
                else:
                    done = self._release_hold(token, hold)
            except Exception as exc:  # not the store being down: this one cannot be done
                _report(f"budget.{op}", exc, budget=self.name)
                continue
            if not done:
                if failed is not None:
                    failed.add(id(token.store))
                    continue
                pending.appendleft(item)
                self._next_retry = time.monotonic() + 1.0  # not on every call of an outage
                return False
        return False

    def _release_quietly(self, token: _Token | None) -> None:
        try:
            self.release(token)
        except Exception as exc:
            _report("budget.release", exc, budget=self.name)

    def release(self, token: _Token | None) -> None:
        if token is None:
            return
        for hold in token.holds:
            if hold.held is False:
                continue
            if hold.held is None or not self._release_hold(token, hold):
                # Given back later (its store failed just now), else it lapses at its TTL.
                self._queue(("release", token, hold, 0))
        token.holds = []

    def _release_hold(self, token: _Token, hold: _Hold) -> bool:
        """Give one reservation back; False when the store could not be reached."""
        try:
            token.store.release(hold.counter, res_id=hold.res_id, reserved=token.units)
        except StoreUnavailable as exc:
            _report("budget.release", exc, budget=self.name)
            return False
        return True

    # -- status ------------------------------------------------------------------------------
    def status(
        self,
        tracker: Tracker,
        *,
        now: float | None = None,
        keys: Iterable[str | None] | None = None,
    ) -> list[BudgetStatus]:
        """Spent, reserved and remaining for each key in the current period: the keys the
        store has counters for, plus those with spend in the ledger (after a restart)."""
        store = store_for(tracker)
        if self._pending:  # what the store missed first, if it answers again
            try:
                self._replay()
            except Exception as exc:
                _report("budget.retry", exc, budget=self.name)
        now = self._clock() if now is None else now
        now_ms = int(now * 1000)
        win = self.period.window(now)
        if keys is None:
            # One row per counter: a key longer than 200 characters is shortened (with a
            # digest) in its counter's name, so the store's name and the ledger's full key
            # are the same row, shown with the full key.
            found: dict[str, str | None] = {}
            if self.per is None:
                found[self._counter(None, win)] = None
            suffix = f":{win.label}"
            for name in sorted(store.counters(self._prefix)):
                if not name.endswith(suffix):
                    continue
                key = decode_key(name[len(self._prefix) : -len(suffix)])
                # Only this budget's own counters: another budget whose name starts with
                # this one's and a colon ("search" and "search:eu") shares the prefix.
                if self._counter(key, win) == name:
                    found.setdefault(name, key)
            if self.per is not None:
                for key in _ledger_keys(tracker, self, win, now):
                    found[self._counter(key, win)] = key
            keys = list(found.values())
        else:  # as a call's keys are counted (``call_keys``)
            keys = list(dict.fromkeys(map(key_text, keys)))
        result = []
        for key in keys:
            counter = self._counter(key, win)
            state = store.read(counter, floor=win.floor, now_ms=now_ms)
            spent = state.spent
            if not state.seeded:
                spent = sum(ledger_buckets(tracker, self, key, win, now).values())
            result.append(self._status(key, spent, state.reserved, win))
        return result

    def _status(self, key: str | None, spent: int, reserved: int, win: Window) -> BudgetStatus:
        remaining = max(0, self._limit_units - spent - reserved)
        return BudgetStatus(
            budget=self.name,
            per=self.per,
            key=key,
            unit=self.limit.unit,
            limit=self.limit.amount,
            spent=from_units(spent, tokens=self.tokens),
            reserved=from_units(reserved, tokens=self.tokens),
            remaining=from_units(remaining, tokens=self.tokens),
            period=win.label if self.period.kind == "calendar" else self.period.text,
            period_start=None if self.period.kind == "lifetime" else self._time(win.start),
            resets_at=self._resets_at(win),
            hard=self.hard,
        )

    # -- internals ---------------------------------------------------------------------------
    def _counter(self, key: str | None, win: Window) -> str:
        names = self._names
        name = names.get((key, win.label))
        if name is None:
            if len(names) > 4096:
                names.clear()
            name = names[(key, win.label)] = f"{self._prefix}{counter_key(key)}:{win.label}"
        return name

    def _marks_for(self, win: Window) -> tuple[tuple[tuple[str, int], ...], str | None]:
        """The alert marks (and the "exceeded" mark) of the window ``win`` is in.

        A calendar counter lives one period, so its marks fire once per period. A rolling
        counter lives as long as the budget is in use, so its marks carry a slot: the
        window's length, counted from the epoch. Each alert then fires at most once per
        slot, and again in a later slot in which spend reaches it again, rather than once
        for the counter's whole life."""
        if not self._slot_ms:
            return self._marks, self._refuse_mark
        slot = win.bucket // self._slot_ms
        cached = self._slot
        if cached is not None and cached[0] == slot:
            return cached[1], cached[2]
        tag = f"@{slot}"
        marks = tuple((label + tag, units) for label, units in self._marks)
        refuse = None if self._refuse_mark is None else self._refuse_mark + tag
        self._slot = (slot, marks, refuse)
        return marks, refuse

    def _keep_until(self, win: Window, now_ms: int) -> int | None:
        ttl = int(self.reservation_ttl * 1000) + _MARGIN_MS
        if self.period.kind == "lifetime":
            return None
        if self.period.kind == "rolling":
            return now_ms + self.period.span_ms + ttl
        assert win.end is not None
        return win.end + ttl

    def _time(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, self.period.tz)

    def _resets_at(self, win: Window) -> datetime | None:
        if self.period.kind != "calendar" or win.end is None:
            return None
        return self._time(win.end)

    def _estimate_units(self, call: Call, tracker: Tracker) -> int:
        estimate = self.estimator.estimate(call, tracker)
        if self.tokens:
            return estimate.tokens
        if estimate.cost is None:
            return reserve_units(self.estimator.default_reserve, tokens=False)
        if estimate.currency != self.limit.unit:
            # Its worst case cannot be compared with the limit: a failed check (refused
            # by a budget that fails closed), never a guess such as default_reserve.
            raise CurrencyMismatch(self, estimate.currency, f"model {call.model!r} is priced in")
        return reserve_units(estimate.cost, tokens=False)

    def _actual_units(self, token: _Token, event: UsageEvent) -> int:
        if event.cost.status == "not_priced":
            # The call ended without usage (an opaque function returned nothing readable):
            # what it spent is unknown, so it counts as its reservation, never as nothing.
            return token.units
        if self.tokens:
            return event.usage.input_tokens + event.usage.output_tokens
        total = event.cost.total
        if total is None:
            # Unpriced (unknown model, or no usage reported): count what was reserved,
            # so an unknown model can never spend past a hard budget unseen.
            return token.units
        if event.cost.currency != self.limit.unit:
            # Priced in another currency (an explicit estimate, a fallback model, a
            # recorded call): it cannot be counted; it counts as its reservation, the
            # worst case the budget agreed to, and the log says so.
            model = event.response_model or event.model
            _report(
                "budget.currency",
                CurrencyMismatch(
                    self, event.cost.currency, f"the cost of a call to {model!r} ({total}) is in"
                ),
                budget=self.name,
                counted=str(from_units(token.units, tokens=False)),
            )
            return token.units
        return to_units(total, tokens=False)

    def _seed(
        self,
        store: GuardStore,
        tracker: Tracker,
        counter: str,
        key: str | None,
        win: Window,
        now: float,
        keep: int | None,
    ) -> None:
        buckets = ledger_buckets(tracker, self, key, win, now)
        marks = self._marks_for(win)[0]
        store.seed(counter, buckets=buckets, marks=marks, floor=win.floor, keep_until=keep)

    def _alert(
        self,
        token: _Token,
        kind: Literal["threshold", "exceeded"],
        key: str | None,
        threshold: Decimal | None,
        spent: int,
        reserved: int,
        win: Window,
    ) -> None:
        label = win.label
        alert = BudgetAlert(
            kind=kind,
            budget=self.name,
            per=self.per,
            key=key,
            threshold=threshold,
            limit=self.limit.amount,
            spent=from_units(spent, tokens=self.tokens),
            reserved=from_units(reserved, tokens=self.tokens),
            unit=self.limit.unit,
            period=label if self.period.kind == "calendar" else self.period.text,
            resets_at=self._resets_at(win),
            hard=self.hard,
            at=datetime.fromtimestamp(self._clock(), timezone.utc),
        )
        tracker_alerts = getattr(token.tracker, "alerts", None) or ()
        dispatch(alert, (*self._callbacks, *tracker_alerts))


class _SeedNeeded(Exception):
    """A reservation on an event loop's thread met a counter that needs its seed (a
    ledger read, which waits for the background worker): it is made again in a worker
    thread (``Budget.areserve``), with the call's estimate ``units`` when it was made
    (None: a budget failing open, which estimates nothing). Never leaves the budget."""

    def __init__(self, units: int | None) -> None:
        super().__init__(units)
        self.units = units


def _for_key(per: str | None, key: str | None) -> str:
    if per is None:
        return ""
    return f" for {per} {key!r}" if key is not None else f" for calls without a {per}"


def _check_where(where: Mapping[str, str] | None) -> dict[str, str] | None:
    """``where=`` of a budget or rate limit; each error starts with ``where``."""
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise ValueError(f"where must be a mapping such as {{'team': 'search'}}, got {where!r}")
    checked = {}
    for key, value in where.items():
        try:
            check_per(key)
        except ValueError:
            raise ValueError(
                f"where[{key!r}]: where keys are per keys, and per must be one of"
                f" {', '.join(PER_KEYS)}; got {key!r}"
            ) from None
        if not isinstance(value, str):
            raise ValueError(f"where[{key!r}] must be a string, got {value!r}")
        # compared with the call's keys, which are cleaned as the ledger stores them
        text = key_text(value)
        if text is None:
            raise ValueError(
                f"where[{key!r}] must be a non-empty string, got {value!r}: an empty"
                f" {key} is no {key}, which where= cannot select"
            )
        checked[key] = text
    return checked or None


def _check_warn_at(values: Iterable[float | Decimal | str]) -> tuple[Decimal, ...]:
    if isinstance(values, (str, bytes, Decimal, int, float)) or not isinstance(values, Iterable):
        raise ValueError(
            f"warn_at must be a list of fractions such as [0.5, 0.8, 1.0], got {values!r}"
        )
    result = []
    for value in values:
        if isinstance(value, bool):
            raise ValueError(f"warn_at values must be fractions such as 0.8, got {value!r}")
        try:
            fraction = Decimal(str(value))
        except (InvalidOperation, ValueError):
            raise ValueError(
                f"warn_at values must be fractions such as 0.8, got {value!r}"
            ) from None
        if not fraction.is_finite() or fraction <= 0:
            raise ValueError(f"warn_at values must be fractions above 0, got {value!r}")
        result.append(plain(fraction.normalize()))
    return tuple(sorted(set(result)))


def _pricer_currencies(tracker: Tracker) -> set[str] | None:
    """The currencies a tracker's pricer can price in, or None when it is not told (a
    pricer of the host's own making, or none given: see below)."""
    pricer = getattr(tracker, "_pricer", None)
    if pricer is None:
        # The tracker of a status-only tool (``costledger budget status``) prices nothing:
        # it is not refused; a call's reservation still checks its model's currency.
        return None
    from .._pricing import Pricer

    if not isinstance(pricer, Pricer):
        return None
    try:
        found = set()
        sources = (getattr(pricer, "_genai", None), getattr(pricer, "_litellm", None))
        if any(source is not None for source in sources):
            found.add("USD")  # both default sources price in USD
        for entry in getattr(pricer, "_overrides", {}).values():
            found.add(str(entry.card.currency))
        return found
    except Exception:  # a pricer of another shape: not known
        return None


def _ledger_keys(tracker: Tracker, budget: Budget, win: Window, now: float) -> list[str | None]:
    from ._ledger_spend import ledger_keys

    return ledger_keys(tracker, budget, win, now)


_budgets: weakref.WeakSet[Budget] = weakref.WeakSet()
_replay_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child starts with nothing pending: the parent's pending settles are the
    parent's to replay (replayed in both, they would also count twice on a store the
    child does not share, such as its own ``memory://``). Cached stores are dropped too:
    the child's ``memory://`` store is a new one."""
    global _replay_lock
    _replay_lock = threading.Lock()
    for budget in list(_budgets):
        budget._pending = deque(maxlen=budget._pending.maxlen)
        budget._next_retry = 0.0
        budget._replaying = False
        budget._last_store = None
        budget._seeded = {}


def _flush_at_exit() -> None:
    """At exit, replay what is still pending, once, for stores that answer again (a store
    still down costs one timeout, then is skipped). Calls finished in the background are
    finished first: their settles may be among them."""
    budgets = list(_budgets)
    if not budgets:
        return
    try:
        from .._tracker import _finish_at_exit

        _finish_at_exit()  # it runs once: the tracker's own exit hook then finds it done
    except Exception as exc:
        _report("budget.exit", exc)
    failed: set[int] = set()
    for budget in budgets:
        if budget._pending:
            for _, token, _, _ in list(budget._pending):
                # one try however recently the store failed (its breaker is open)
                if id(token.store) not in failed:
                    token.store.reopen()
            try:
                budget._retry_pending(failed)
            except Exception as exc:
                _report("budget.exit", exc, budget=budget.name)


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)


def _report(where: str, exc: BaseException, **context: Any) -> None:
    try:
        from .._logging import report_failure

        report_failure(where, exc, **context)
    except Exception:
        pass
