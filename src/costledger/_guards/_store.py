"""Guard stores: where budgets and rate limits keep their counters, chosen by URL.

``memory://`` (one process), ``redis://...`` (atomic Lua scripts) or a SQL
database URL (row locks on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite). Every
store offers the same few atomic operations on a *counter*: a set of time
buckets of settled units, the reservations in flight (each with an expiry, so a
crashed caller's reservation lapses), a "seeded from the ledger" flag, and the
alert marks already fired. Budgets and token rate limits are built on them.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .._errors import GuardRefusal, GuardStoreUnavailable
from .._redact import redact_url as display_url

if TYPE_CHECKING:
    from limits.storage import Storage

    from .._tracker import Tracker

__all__ = [
    "STORE_COOLDOWN",
    "Acquired",
    "Admission",
    "CounterState",
    "GuardStore",
    "Settlement",
    "StoreRefusal",
    "StoreUnavailable",
    "display_url",
    "in_background",
    "memory_store",
    "off_loop",
    "open_store",
    "store_for",
    "store_shift",
]

_T = TypeVar("_T")

STORE_COOLDOWN = 1.0
"""Seconds a Redis or PostgreSQL guard store is left alone after an operation on it timed
out or could not connect: operations in that time fail at once, without I/O, as the store
being unavailable (each guard fails open or closed as configured; settles are kept and
replayed). After it, one operation at a time tries the store again (the others keep
failing at once until it answers); a failure starts another cool-down."""

Marks = Sequence[tuple[str, int]]
"""Alert marks: (label, units); a mark fires once, the first time spend reaches its units."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Result of ``reserve``: ``status`` ``"unseeded"`` means nothing was reserved and the
    counter wants its ledger seed first."""

    status: Literal["ok", "refused", "unseeded"]
    spent: int = 0
    reserved: int = 0  # other reservations in flight, before this one
    first_refusal: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    spent: int
    reserved: int
    fired: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Acquired:
    """Result of a rate-window ``acquire``; ``retry_bucket`` is the newest bucket that
    must leave the window before the refused amount fits (None: it never will);
    ``shift`` how far (ms) the store moved the bucket and the window forward, to the
    time it judged the request at (see ``GuardStore.acquire``)."""

    ok: bool
    used: int
    retry_bucket: int | None = None
    shift: int = 0


def store_shift(bucket: int, width: int) -> int:
    """For an ``acquire`` told ``width``: how far the bucket of this process's clock, read
    now, is past ``bucket`` (0 when it is not). In-process and SQLite stores call it once
    they hold the counter's lock."""
    if width <= 0:
        return 0
    now = int(time.time() * 1000)
    return max(0, now - now % width - bucket)


@dataclass(frozen=True, slots=True)
class CounterState:
    spent: int
    reserved: int
    seeded: bool


class StoreUnavailable(GuardStoreUnavailable):
    """The store could not be reached or answered with an error; names the store.

    ``cooling``: the store was not asked at all, because an operation on it failed less
    than ``STORE_COOLDOWN`` seconds ago (``cause`` is that failure)."""

    def __init__(self, store: str, cause: BaseException, *, cooling: bool = False) -> None:
        text = f"guard store {store} is unavailable: {type(cause).__name__}: {_short(cause)}"
        if cooling:
            text += f" (failed less than {STORE_COOLDOWN:g} s ago: not asked again yet)"
        super().__init__(text)
        self.store = store
        self.cause = cause
        self.cooling = cooling


class StoreRefusal(StoreUnavailable, GuardRefusal):
    """A guard failed closed because its store is unavailable: the call is refused."""

    def __init__(
        self, store: str, cause: BaseException, guard: str, *, cooling: bool = False
    ) -> None:
        super().__init__(store, cause, cooling=cooling)
        self.guard = guard
        self.args = (f"{self.args[0]}; {guard} fails closed, so the call is refused",)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


class GuardStore(ABC):
    """The atomic operations budgets and rate limits need. Amounts are whole units and
    times integer milliseconds since the epoch. Raise ``StoreUnavailable`` when the
    backing service cannot answer."""

    kind: str
    url: str  # for messages: never holds a password

    # The circuit breaker (``STORE_COOLDOWN``), used by stores that do I/O: the failure
    # that opened it (None: closed, the store is asked), until when it stays open
    # (``time.monotonic``), and whether an operation is trying the store again. Class
    # defaults, so a store that never uses it needs no ``__init__`` call.
    _down: BaseException | None = None
    _down_until: float = 0.0
    _probing: bool = False

    @property
    def does_io(self) -> bool:
        """Whether operations wait on another process (Redis, a database): async entry
        points run them off the event loop. The in-process ``memory://`` store: False."""
        return self.kind != "memory"

    def _outage(self, cause: BaseException) -> bool:
        """Whether ``cause`` (an operation's failure) means the store is unreachable or
        stuck (a timeout, a lost connection), which opens the circuit breaker. A store
        that answered with an error is not down. Default: never (no breaker)."""
        return False

    def _breaker_enter(self) -> bool:
        """Before an operation, when the breaker is open (``_down`` is set): raise
        ``StoreUnavailable`` at once while the store cools down or another operation is
        trying it; else this operation is the one that tries it (True)."""
        with _breaker_lock:
            cause = self._down
            if cause is None:
                return False
            if self._probing or time.monotonic() < self._down_until:
                raise StoreUnavailable(self.url, cause, cooling=True)
            self._probing = True
            return True

    def _breaker_failed(
        self, cause: BaseException, *, outage: bool | None = None
    ) -> StoreUnavailable:
        """An operation failed with ``cause``: open the breaker if the store is down
        (``outage``, by default ``_outage(cause)``), else the store answered, which closes
        it. Returns the error to raise."""
        if self._outage(cause) if outage is None else outage:
            with _breaker_lock:
                self._down = cause
                self._down_until = time.monotonic() + STORE_COOLDOWN
                self._probing = False
        elif self._down is not None:
            self._breaker_close()
        return StoreUnavailable(self.url, cause)

    def _breaker_close(self) -> None:
        """The store answered: ask it again."""
        with _breaker_lock:
            self._down = None
            self._probing = False

    def _breaker_abandon(self) -> None:
        """The operation trying the store ended without an answer either way (interrupted):
        the next one after the cool-down tries again."""
        with _breaker_lock:
            self._probing = False

    def _guarded(self, op: Callable[[], _T]) -> _T:
        """Run one operation of a store with a breaker. ``op`` raises ``StoreUnavailable``
        made by ``_breaker_failed`` on a failure of the store."""
        probe = self._breaker_enter() if self._down is not None else False
        try:
            result = op()
        except BaseException:
            if probe and self._probing:  # ended without telling the breaker
                self._breaker_abandon()
            raise
        if self._down is not None:
            self._breaker_close()
        return result

    def reopen(self) -> None:
        """Forget a recent failure: the next operation asks the store (at exit, what is
        still pending gets one try however recently the store failed)."""
        if self._down is not None:
            self._breaker_close()

    @abstractmethod
    def reserve(
        self,
        counter: str,
        *,
        res_id: str,
        amount: int,
        limit: int | None,
        floor: int,
        now_ms: int,
        expires_ms: int,
        keep_until: int | None,
        refuse_mark: str | None,
    ) -> Admission:
        """Drop expired reservations; refuse if spent + reserved + amount > limit
        (``limit=None`` never refuses); else hold ``amount`` under ``res_id``."""

    @abstractmethod
    def seed(
        self,
        counter: str,
        *,
        buckets: Mapping[int, int],
        marks: Marks,
        floor: int,
        keep_until: int | None,
    ) -> bool:
        """Unless already seeded: add ``buckets``, mark as fired (silently) each mark the
        seeded spend already reaches, and flag the counter seeded. True if this call seeded."""

    @abstractmethod
    def settle(
        self,
        counter: str,
        *,
        res_id: str | None,
        reserved: int,
        bucket: int,
        amount: int,
        floor: int,
        keep_until: int | None,
        marks: Marks,
    ) -> Settlement:
        """Drop the reservation (if still held), add ``amount`` to ``bucket`` and return the
        labels of the marks this settle made fire (each fires once per counter, ever).
        A counter that is not seeded (gone: its period long over, or the store lost it)
        takes nothing: the seed that recreates it reads the call from the ledger.

        Idempotent per ``res_id``: the store remembers each settled id (for
        ``SETTLED_KEEP_MS``, in the same atomic step), and a settle whose id it has seen
        adds nothing and fires nothing. Budgets give every settle an id, also when no
        reservation is held (a budget that failed open, ``Tracker.record``), so a settle
        replayed after an answer that came too late is counted once. ``res_id=None``:
        not idempotent."""

    @abstractmethod
    def release(self, counter: str, *, res_id: str, reserved: int) -> None:
        """Drop a reservation without spending anything."""

    @abstractmethod
    def read(self, counter: str, *, floor: int, now_ms: int) -> CounterState: ...

    @abstractmethod
    def counters(self, prefix: str) -> list[str]:
        """Names of the counters that start with ``prefix``."""

    @abstractmethod
    def acquire(
        self,
        counter: str,
        *,
        bucket: int,
        amount: int,
        limit: int,
        floor: int,
        keep_until: int,
        width: int = 0,
    ) -> Acquired:
        """Rate window: add ``amount`` to ``bucket`` if the buckets >= ``floor`` plus it stay
        within ``limit``.

        ``width`` (ms, above 0): the window's bucket width, and ``bucket`` was read from
        the real clock. The store then reads the time again once it holds the counter's
        lock (PostgreSQL's ``clock_timestamp()``, Redis's ``TIME``, this process's clock
        for the others) and, when that falls in a later bucket, moves ``bucket``,
        ``floor`` and ``keep_until`` forward by the difference (``Acquired.shift``): a
        request delayed on its way (a lock wait, a connection being opened) is filed when
        it is judged, never in the past, where it would leave the window early."""

    @abstractmethod
    def adjust(self, counter: str, *, bucket: int, delta: int, floor: int, keep_until: int) -> None:
        """Rate window: correct a bucket by ``delta`` (a refund is negative; never below 0).
        Ignored once the bucket has left the window."""

    def limits_storage(self) -> Storage | None:
        """A ``limits`` storage on the same backend, or None where ``limits`` has none."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


_shared: dict[str, GuardStore] = {}
_shared_lock = threading.Lock()
_breaker_lock = threading.Lock()
_per_tracker: weakref.WeakKeyDictionary[Any, GuardStore] = weakref.WeakKeyDictionary()
_memory: GuardStore | None = None
"""The process's ``memory://`` store: one per process (a forked child starts a new one)."""

SETTLED_KEEP_MS = 3_600_000
"""How long a store remembers the id of each settle, so that a settle replayed after an
answer that came too late (the store ran it, the client had given up) is not counted
twice. A replay comes at the next reservation once the store answers again."""

MEMORY_URLS = ("memory://", "memory", "")


def memory_store() -> GuardStore:
    """The one ``memory://`` store of this process."""
    global _memory
    store = _memory
    if store is None:
        from ._memory import MemoryStore

        with _shared_lock:
            store = _memory
            if store is None:
                store = _memory = MemoryStore()
    return store


def open_store(url: str | GuardStore | None) -> GuardStore:
    """The store for ``url``: the one ``memory://`` store of this process (also for None),
    or the one shared store of this process for a Redis or SQL URL (one connection pool
    each). A ``GuardStore`` object is used as it is (``MemoryStore()``: a private
    in-process store, for tests)."""
    if isinstance(url, GuardStore):
        return url
    if url is None:
        return memory_store()
    if not isinstance(url, str):
        raise TypeError(
            f"guard_store must be a URL string or a GuardStore, got {type(url).__name__} {url!r}"
        )
    if url.strip() in MEMORY_URLS:
        return memory_store()
    with _shared_lock:
        store = _shared.get(url)
        if store is None:
            scheme = url.split("://", 1)[0].lower() if "://" in url else ""
            if scheme in ("redis", "rediss", "unix", "redis+unix", "valkey", "valkeys"):
                from ._redis import RedisStore

                store = RedisStore(url)
            elif scheme:
                from ._sql import SqlStore

                store = SqlStore(url)
            else:
                raise ValueError(
                    "guard_store must be 'memory://', a redis:// URL or a SQL database URL"
                    " such as 'postgresql+psycopg://host/db' or 'sqlite:///guards.db',"
                    f" got {display_url(url)!r}"
                )
            _shared[url] = store
    return store


def store_for(tracker: Tracker) -> GuardStore:
    """The store a Tracker's guards share (built from ``Tracker(guard_store=...)``)."""
    store = _per_tracker.get(tracker)
    if store is None:
        with _shared_lock:
            store = _per_tracker.get(tracker)
        if store is None:
            store = open_store(getattr(tracker, "guard_store", None))
            with _shared_lock:
                store = _per_tracker.setdefault(tracker, store)
    return store


async def off_loop(
    store: GuardStore,
    fn: Callable[..., _T],
    *args: Any,
    undo: Callable[[_T], object] | None = None,
    waits: bool = False,
) -> _T:
    """``fn(*args)`` for an async entry point: in a worker thread when ``store`` waits on
    I/O (so a slow or stuck store never blocks the event loop), or when ``waits`` (``fn``
    waits on something else: a budget's seed reads the ledger, which waits for the
    background worker's queue); inline on ``memory://`` otherwise (microseconds). A worker
    thread cannot be stopped: when the caller is cancelled while ``fn`` runs, ``fn`` runs
    to its end and ``undo(result)`` gives back what it took, in a worker thread too
    (``undo`` must not raise)."""
    if not (waits or store.does_io):
        return fn(*args)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    handoff = _Handoff()

    def work() -> _T:
        result = context.run(fn, *args)
        with handoff.lock:
            handoff.result = result
            handoff.done = True
            abandoned = handoff.abandoned
        if abandoned and undo is not None:
            undo(result)
        return result

    try:
        future = loop.run_in_executor(_guard_threads(), work)
    except RuntimeError:  # the interpreter is exiting: no new threads
        return fn(*args)
    try:
        return await future
    except asyncio.CancelledError:
        with handoff.lock:
            handoff.abandoned = True
            done = handoff.done
        if done and undo is not None:  # finished as the caller was cancelled: never taken
            in_background(store, undo, handoff.result)
        raise


class _Handoff:
    __slots__ = ("abandoned", "done", "lock", "result")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.done = False
        self.result: Any = None


def in_background(store: GuardStore, fn: Callable[..., object], *args: Any) -> None:
    """``fn(*args)`` without waiting for it, from an async entry point: in a worker thread
    when ``store`` waits on I/O, else inline. ``fn`` must not raise."""
    if not store.does_io:
        fn(*args)
        return
    try:
        _guard_threads().submit(contextvars.copy_context().run, fn, *args)
    except RuntimeError:  # the interpreter is exiting: no new threads
        fn(*args)


GUARD_THREADS = 32
"""Worker threads for the guards' store I/O from async entry points (one pool per process,
apart from the event loop's default executor, so the host's ``to_thread`` work and a
slow store never wait on each other)."""
_threads: ThreadPoolExecutor | None = None


def _guard_threads() -> ThreadPoolExecutor:
    global _threads
    pool = _threads
    if pool is None:
        with _shared_lock:
            pool = _threads
            if pool is None:
                pool = _threads = ThreadPoolExecutor(
                    max_workers=GUARD_THREADS, thread_name_prefix="costledger-guards"
                )
    return pool


def parse_timeout(value: object, *, url: str, default: float) -> float:
    """The ``?timeout=`` of a guard store URL: seconds, finite and above zero."""
    if value is None:
        return default
    try:
        seconds = float(str(value))
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"guard_store {url!r}: timeout must be a number of seconds above 0, got {value!r}"
        )
    return seconds


def _after_fork_in_child() -> None:
    """A forked child starts a ``memory://`` store of its own: the parent's counters are
    the parent's (and its lock may have been held by another thread at the fork)."""
    global _shared_lock, _breaker_lock, _memory, _threads
    _shared_lock = threading.Lock()
    _breaker_lock = threading.Lock()
    _threads = None  # the parent's threads are not in the child
    old = _memory
    _memory = None
    if old is not None:
        for tracker, store in list(_per_tracker.items()):
            if store is old:
                del _per_tracker[tracker]


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)
