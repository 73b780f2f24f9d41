"""Guard stores: where budgets and rate limits keep their counters, chosen by URL.

``memory://`` (one process), ``redis://...`` (atomic Lua scripts) or a SQL
database URL (row locks on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite). Every
store offers the same few atomic operations on a *counter*: a set of time
buckets of settled units, the reservations in flight (each with an expiry, so a
crashed caller's reservation lapses), a "seeded from the ledger" flag, and the
alert marks already fired. Budgets and token rate limits are built on them.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._errors import GuardRefusal, GuardStoreUnavailable
from .._redact import redact_url as display_url

if TYPE_CHECKING:
    from limits.storage import Storage

    from .._tracker import Tracker

__all__ = [
    "Acquired",
    "Admission",
    "CounterState",
    "GuardStore",
    "Settlement",
    "StoreRefusal",
    "StoreUnavailable",
    "display_url",
    "memory_store",
    "open_store",
    "store_for",
]

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
    must leave the window before the refused amount fits (None: it never will)."""

    ok: bool
    used: int
    retry_bucket: int | None = None


@dataclass(frozen=True, slots=True)
class CounterState:
    spent: int
    reserved: int
    seeded: bool


class StoreUnavailable(GuardStoreUnavailable):
    """The store could not be reached or answered with an error; names the store."""

    def __init__(self, store: str, cause: BaseException) -> None:
        super().__init__(
            f"guard store {store} is unavailable: {type(cause).__name__}: {_short(cause)}"
        )
        self.store = store
        self.cause = cause


class StoreRefusal(StoreUnavailable, GuardRefusal):
    """A guard failed closed because its store is unavailable: the call is refused."""

    def __init__(self, store: str, cause: BaseException, guard: str) -> None:
        super().__init__(store, cause)
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
    ) -> Acquired:
        """Rate window: add ``amount`` to ``bucket`` if the buckets >= ``floor`` plus it stay
        within ``limit``."""

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
    global _shared_lock, _memory
    _shared_lock = threading.Lock()
    old = _memory
    _memory = None
    if old is not None:
        for tracker, store in list(_per_tracker.items()):
            if store is old:
                del _per_tracker[tracker]


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)
