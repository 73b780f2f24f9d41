"""``memory://``: counters in this process, under one lock. The default: one store per
process, shared by every tracker that names it (a forked child starts its own); not
shared between processes (use Redis or SQL for that). ``MemoryStore()`` passed to
``Tracker(guard_store=...)`` is a private store of its own (tests)."""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._store import (
    SETTLED_KEEP_MS,
    Acquired,
    Admission,
    CounterState,
    GuardStore,
    Marks,
    Settlement,
    store_shift,
)

if TYPE_CHECKING:
    from limits.storage import Storage

__all__ = ["MemoryStore"]

_NEVER = 2**63


class _Counter:
    __slots__ = (
        "buckets",
        "keep_until",
        "marks",
        "next_expiry",
        "reservations",
        "reserved",
        "seeded",
        "settled",
    )

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.reservations: dict[str, tuple[int, int]] = {}  # res_id -> (units, expires_ms)
        self.reserved = 0
        self.next_expiry = _NEVER
        self.seeded = False
        self.marks: set[str] = set()
        self.keep_until: int | None = None
        self.settled: dict[str, int] = {}  # settle id -> when (ms, wall clock), oldest first

    def first_settle(self, res_id: str) -> bool:
        """Record ``res_id`` as settled; False if it already was (within SETTLED_KEEP_MS)."""
        settled = self.settled
        now = int(time.time() * 1000)
        if res_id in settled and settled[res_id] > now - SETTLED_KEEP_MS:
            return False
        if settled:
            cutoff = now - SETTLED_KEEP_MS
            for old in list(itertools.islice(settled, 64)):  # oldest first
                if settled[old] > cutoff:
                    break
                del settled[old]
        settled[res_id] = now
        return True

    def spent(self, floor: int) -> int:
        buckets = self.buckets
        if len(buckets) == 1:  # calendar and lifetime counters: one bucket
            for key, value in buckets.items():
                return value if key >= floor else 0
        total = 0
        stale = []
        for key, value in buckets.items():
            if key >= floor:
                total += value
            else:
                stale.append(key)
        for key in stale:
            del buckets[key]
        return total

    def expire(self, now_ms: int) -> None:
        if now_ms < self.next_expiry:
            return
        nxt = _NEVER
        for res_id, (units, expires) in list(self.reservations.items()):
            if expires <= now_ms:
                del self.reservations[res_id]
                self.reserved -= units
            elif expires < nxt:
                nxt = expires
        self.next_expiry = nxt

    def fire(self, spent: int, marks: Marks) -> tuple[str, ...]:
        fired = []
        for label, units in marks:
            if spent >= units and label not in self.marks:
                self.marks.add(label)
                fired.append(label)
        return tuple(fired)


class MemoryStore(GuardStore):
    kind = "memory"
    url = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, _Counter] = {}
        self._limits: Storage | None = None
        self._next_sweep = 0
        _stores.add(self)

    def _get(self, counter: str, keep_until: int | None) -> _Counter:
        c = self._counters.get(counter)
        if c is None:
            c = self._counters[counter] = _Counter()
        c.keep_until = keep_until
        return c

    def _sweep(self, now_ms: int) -> None:
        """Forget counters of periods long over (a per-user daily budget makes one a day)."""
        self._next_sweep = now_ms + 60_000
        dead = [
            name
            for name, c in self._counters.items()
            if c.keep_until is not None and c.keep_until < now_ms and not c.reservations
        ]
        for name in dead:
            del self._counters[name]

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
        with self._lock:
            if now_ms >= self._next_sweep:
                self._sweep(now_ms)
            c = self._get(counter, keep_until)
            if not c.seeded:
                return Admission("unseeded")
            c.expire(now_ms)
            spent = c.spent(floor)
            reserved = c.reserved
            if limit is not None and spent + reserved + amount > limit:
                first = False
                if refuse_mark is not None and refuse_mark not in c.marks:
                    c.marks.add(refuse_mark)
                    first = True
                return Admission("refused", spent, reserved, first)
            c.reservations[res_id] = (amount, expires_ms)
            c.reserved = reserved + amount
            if expires_ms < c.next_expiry:
                c.next_expiry = expires_ms
            return Admission("ok", spent, reserved)

    def seed(
        self,
        counter: str,
        *,
        buckets: Mapping[int, int],
        marks: Marks,
        floor: int,
        keep_until: int | None,
    ) -> bool:
        with self._lock:
            c = self._get(counter, keep_until)
            if c.seeded:
                return False
            for bucket, units in buckets.items():
                c.buckets[bucket] = c.buckets.get(bucket, 0) + units
            c.fire(c.spent(floor), marks)
            c.seeded = True
            return True

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
        with self._lock:
            c = self._get(counter, keep_until)
            if res_id is not None:
                held = c.reservations.pop(res_id, None)
                if held is not None:
                    c.reserved -= held[0]
                if not c.first_settle(res_id):  # settled before: a replay
                    return Settlement(c.spent(floor) if c.seeded else 0, c.reserved)
            if not c.seeded:
                # The counter is gone (a new period long over, a store that lost its data):
                # the seed that recreates it reads this call from the ledger.
                return Settlement(0, c.reserved)
            c.buckets[bucket] = c.buckets.get(bucket, 0) + amount
            spent = c.spent(floor)
            return Settlement(spent, c.reserved, c.fire(spent, marks) if marks else ())

    def release(self, counter: str, *, res_id: str, reserved: int) -> None:
        with self._lock:
            c = self._counters.get(counter)
            if c is not None:
                held = c.reservations.pop(res_id, None)
                if held is not None:
                    c.reserved -= held[0]

    def read(self, counter: str, *, floor: int, now_ms: int) -> CounterState:
        with self._lock:
            c = self._counters.get(counter)
            if c is None:
                return CounterState(0, 0, False)
            c.expire(now_ms)
            return CounterState(c.spent(floor), c.reserved, c.seeded)

    def counters(self, prefix: str) -> list[str]:
        with self._lock:
            return [name for name in self._counters if name.startswith(prefix)]

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
        with self._lock:
            shift = store_shift(bucket, width)
            c = self._get(counter, keep_until + shift)
            used = c.spent(floor + shift)
            if used + amount > limit:
                retry = _retry_bucket(c.buckets, used + amount - limit)
                return Acquired(False, used, retry, shift)
            c.buckets[bucket + shift] = c.buckets.get(bucket + shift, 0) + amount
            return Acquired(True, used, None, shift)

    def adjust(self, counter: str, *, bucket: int, delta: int, floor: int, keep_until: int) -> None:
        with self._lock:
            c = self._counters.get(counter)
            if c is None or bucket < floor or bucket not in c.buckets:
                return
            c.buckets[bucket] = max(0, c.buckets[bucket] + delta)

    def limits_storage(self) -> Storage:
        with self._lock:  # two storages would be two separate windows
            if self._limits is None:
                from limits.storage import MemoryStorage

                self._limits = MemoryStorage()
            return self._limits


def _retry_bucket(buckets: Mapping[int, int], need: int) -> int | None:
    """The newest bucket that must leave the window before ``need`` more units fit."""
    dropped = 0
    for key in sorted(buckets):
        dropped += buckets[key]
        if dropped >= need:
            return key
    return None


_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A lock another thread held at the fork would stay held forever in the child."""
    for store in list(_stores):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)
