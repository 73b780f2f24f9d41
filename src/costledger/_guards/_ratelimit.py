"""Rate limits: requests (``RateLimit``) and tokens (``TokenRateLimit``) per window.

``RateLimit`` counts each call once, when it starts, with the ``limits`` library's
moving window on the store's backend (its memory or Redis storage). ``limits`` has no
SQL storage, so on a SQL guard store the same moving window is kept in the store's
own counters (60 buckets per window).

``TokenRateLimit`` must reserve a worst-case estimate and later give back what the call
did not use: a call estimated at 16,000 tokens that used 600 would otherwise hold
26 times its share of the window. ``limits`` can add to a window but not take back
from it, so token limits use the store's counters (an atomic script in Redis, a locked
row in SQL), where a settle corrects the bucket the estimate went into.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._errors import RateLimited
from ._budget import _check_where, counter_key, counter_name
from ._estimate import Estimator, check_estimator
from ._spec import (
    ROLLING_BUCKETS,
    Clock,
    call_keys,
    check_clock,
    check_commas,
    check_guard_name,
    check_per,
    matches,
    parse_limit,
)
from ._store import (
    GuardStore,
    StoreRefusal,
    StoreUnavailable,
    in_background,
    off_loop,
    store_for,
)

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.strategies import MovingWindowRateLimiter

    from .._events import UsageEvent
    from .._tracker import Call, Tracker

__all__ = ["RateLimit", "TokenRateLimit"]

FailMode = Literal["closed", "open"]
_MARGIN_MS = 60_000
_WINDOW_COUNT_RE = re.compile(r"[0-9]*\.?[0-9]+|[0-9]+\.?")
_RATE_RE = re.compile(r"^\s*([0-9][0-9_,.]*\s*[kmb]?)\s*(?:/|\bper\b)\s*(\S.*?)\s*$", re.I)


def _parse_rate(text: object, *, tokens: bool) -> tuple[int, RateLimitItem]:
    import limits

    what = "TokenRateLimit" if tokens else "RateLimit"
    example = "'200000/minute' or '2M/hour'" if tokens else "'60/minute' or '10/second'"
    match = _RATE_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{what} limit must look like {example}, got {text!r}")
    amount_text, window = match.groups()
    # "1,5/second" is not 15 a second: a comma only separates thousands
    check_commas(re.sub(r"\s*[kmb]$", "", amount_text.strip(), flags=re.I), f"{what} limit", text)
    # "10/0 minutes", "10/0minutes", "10/0.0 s": limits would read a zero as 1
    count = _WINDOW_COUNT_RE.match(window)
    if count is not None and not any(digit in "123456789" for digit in count.group()):
        raise ValueError(f"{what} limit must have a window longer than zero, got {text!r}")
    try:
        amount = int(parse_limit(f"{amount_text.strip()} tokens", field="limit").amount)
        item = limits.parse(f"{amount}/{window.strip()}")
    except ValueError:
        raise ValueError(f"{what} limit must look like {example}, got {text!r}") from None
    if amount < 1:
        raise ValueError(f"{what} limit must allow at least 1 per window, got {text!r}")
    return amount, item


class _Window:
    """What RateLimit and TokenRateLimit share: keys, the store, waiting, failing open/closed."""

    _kind = "rate"

    def __init__(
        self,
        limit: str,
        *,
        per: str | None,
        wait: float,
        name: str | None,
        where: Mapping[str, str] | None,
        on_store_error: FailMode,
        clock: Clock | None,
        tokens: bool,
    ) -> None:
        self.limit_text = limit
        self.amount, self.item = _parse_rate(limit, tokens=tokens)
        self.per = check_per(per)
        if (
            isinstance(wait, bool)
            or not isinstance(wait, (int, float))
            or not math.isfinite(wait)
            or wait < 0
        ):
            raise ValueError(f"wait must be a finite number of seconds >= 0, got {wait!r}")
        self.wait = float(wait)
        self.where = _check_where(where)
        if on_store_error not in ("closed", "open"):
            raise ValueError(f"on_store_error must be 'closed' or 'open', got {on_store_error!r}")
        self.on_store_error = on_store_error
        self._clock: Clock = check_clock(clock)
        self._real_clock = clock is None
        self.window_ms = int(self.item.get_expiry() * 1000)
        self.bucket_ms = max(1, -(-self.window_ms // ROLLING_BUCKETS))
        # How long a bucket counts from its start: the window, and the bucket itself (so
        # spend leaves up to one bucket late, never early).
        self.span_ms = self.bucket_ms * (ROLLING_BUCKETS + 1)
        default = f"{limit}" + (" tokens" if tokens and "token" not in limit else "")
        if self.per:
            default += f" per {self.per}"
        if self.where:
            default += " where " + ",".join(f"{k}={v}" for k, v in sorted(self.where.items()))
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")
        self.name = check_guard_name(name or default)
        # A long name (a long where value) is shortened with a digest in counter names,
        # on every store alike: the SQL stores' names hold at most 512 characters.
        self._short_name = counter_name(self.name)
        self._prefix = f"{self._kind}:{self._short_name}:"

    def bind(self, tracker: Tracker) -> None:
        store_for(tracker)

    def _counter(self, key: str | None) -> str:
        return self._prefix + counter_key(key)

    def _bucket(self) -> tuple[int, int, int]:
        """(now ms, current bucket, oldest bucket in the window). The window is the current
        bucket and the ``ROLLING_BUCKETS`` before it: a token used at the very end of the
        oldest one still counts a whole window later (late by up to a bucket, never early)."""
        ms = int(self._clock() * 1000)
        bucket = ms - ms % self.bucket_ms
        return ms, bucket, bucket - self.bucket_ms * ROLLING_BUCKETS

    def _acquire(self, store: GuardStore, key: str | None, amount: int) -> tuple[float | None, int]:
        """Take ``amount`` from the window kept in the store's counters.
        Returns (None, bucket) when taken, else (seconds to wait, 0)."""
        ms, bucket, floor = self._bucket()
        span = self.span_ms
        got = store.acquire(
            self._counter(key),
            bucket=bucket,
            amount=amount,
            limit=self.amount,
            floor=floor,
            keep_until=bucket + span + _MARGIN_MS,
            # The real clock: the store reads it again once it holds the counter, so a
            # request held up on its way is filed when it is judged. An injected clock
            # (tests) is the only time there is.
            width=self.bucket_ms if self._real_clock else 0,
        )
        ms += got.shift
        if got.ok:
            return None, bucket + got.shift
        if got.retry_bucket is None:
            return self.window_ms / 1000, 0
        return max(0.001, (got.retry_bucket + span - ms) / 1000), 0

    def _pause(self, key: str | None, retry: float, deadline: float) -> float:
        """Seconds to wait before trying ``key`` again, or its refusal when the wait would
        go past ``deadline`` (``wait=`` seconds after the call started)."""
        if time.monotonic() + retry > deadline:
            raise self._refuse(key, retry)
        return retry

    def _refuse(self, key: str | None, retry_after: float) -> RateLimited:
        who = "" if self.per is None else f" for {self.per} {key!r}"
        return RateLimited(
            f"rate limit {self.name!r}{who} reached; retry after {retry_after:.3f} s",
            limit=self.limit_text,
            key=key,
            retry_after=retry_after,
        )

    def _store_failed(self, exc: StoreUnavailable) -> None:
        if self.on_store_error == "closed":
            raise StoreRefusal(
                exc.store, exc.cause, f"rate limit {self.name!r}", cooling=exc.cooling
            ) from exc
        _report("ratelimit.reserve", exc, limit=self.name)

    def _keys(self, call: Call) -> list[str | None]:
        return list(dict.fromkeys(call_keys(call, self.per)))


class RateLimit(_Window):
    """At most N calls per window, e.g. ``RateLimit("60/minute", per="user")``.

    A call over the limit raises ``RateLimited`` with ``retry_after`` seconds, or, with
    ``wait=`` seconds, waits for room up to that long first (``astart`` waits without
    blocking the event loop). A call counts when it starts, whether it then succeeds or
    fails. Store failures let calls through by default (``on_store_error="open"``): the
    provider enforces its own limits, and a rate limiter should not become the outage.
    """

    # A request is counted as it is admitted and never given back (``release`` does
    # nothing): the tracker asks this guard after those that can give theirs back.
    refunds = False

    _kind = "rate"

    def __init__(
        self,
        limit: str,
        *,
        per: str | None = None,
        wait: float = 0.0,
        name: str | None = None,
        where: Mapping[str, str] | None = None,
        on_store_error: FailMode = "open",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            limit,
            per=per,
            wait=wait,
            name=name,
            where=where,
            on_store_error=on_store_error,
            clock=clock,
            tokens=False,
        )
        self._limiters: weakref.WeakKeyDictionary[GuardStore, MovingWindowRateLimiter | None]
        self._limiters = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimit({self.name!r})"

    def _limiter(self, store: GuardStore) -> MovingWindowRateLimiter | None:
        try:
            return self._limiters[store]
        except KeyError:
            pass
        with self._lock:
            if store not in self._limiters:
                storage = store.limits_storage()
                limiter = None
                if storage is not None:
                    from limits.strategies import MovingWindowRateLimiter

                    limiter = MovingWindowRateLimiter(storage)
                self._limiters[store] = limiter
            return self._limiters[store]

    def _try(self, store: GuardStore, key: str | None) -> float | None:
        """Take one request; None when taken, else the seconds until there is room."""
        limiter = self._limiter(store)
        if limiter is None:
            return self._acquire(store, key, 1)[0]
        ids = (self._short_name, counter_key(key))

        def hit() -> float | None:
            try:
                if limiter.hit(self.item, *ids):
                    return None
                reset = limiter.get_window_stats(self.item, *ids).reset_time
            except Exception as exc:
                raise store._breaker_failed(exc) from exc
            return max(0.001, reset - time.time())

        # the store's breaker: ``limits`` talks to the store's own connection pool
        return store._guarded(hit)

    def reserve(self, call: Call, tracker: Tracker) -> None:
        if self.where is not None and not matches(call, self.where):
            return None
        store = store_for(tracker)
        deadline = time.monotonic() + self.wait
        try:
            for key in self._keys(call):
                while (retry := self._try(store, key)) is not None:
                    time.sleep(self._pause(key, retry, deadline))
        except StoreUnavailable as exc:
            self._store_failed(exc)
        return None

    async def areserve(self, call: Call, tracker: Tracker) -> None:
        """``reserve`` for async entry points: waits with ``asyncio.sleep``, and the store's
        round trips run in a worker thread unless the store is ``memory://``."""
        if self.where is not None and not matches(call, self.where):
            return None
        store = store_for(tracker)
        deadline = time.monotonic() + self.wait
        try:
            for key in self._keys(call):
                while (retry := await off_loop(store, self._try, store, key)) is not None:
                    await asyncio.sleep(self._pause(key, retry, deadline))
        except StoreUnavailable as exc:
            self._store_failed(exc)
        return None

    def does_io(self, token: None) -> bool:
        """Settling and releasing do nothing (a request counts when it is admitted)."""
        return False

    def settle(self, token: None, event: UsageEvent) -> None:
        return None

    def release(self, token: None) -> None:
        return None


@dataclass(slots=True)
class _Taken:
    store: GuardStore
    amount: int
    held: list[tuple[str, int]] = field(default_factory=list)  # (counter, bucket)


class TokenRateLimit(_Window):
    """At most N tokens (input plus output) per window, e.g.
    ``TokenRateLimit("200000/minute", per="model")``.

    Each call reserves its worst-case estimate (prompt tokens plus its maximum output)
    and settles to the tokens it really used, so the window holds the truth once calls
    end. A call whose estimate alone exceeds the whole limit reserves the whole limit
    rather than being refused forever. ``wait``, ``per``, ``where`` and ``on_store_error``
    as for ``RateLimit``.
    """

    _kind = "tokens"

    def __init__(
        self,
        limit: str,
        *,
        per: str | None = None,
        wait: float = 0.0,
        name: str | None = None,
        where: Mapping[str, str] | None = None,
        on_store_error: FailMode = "open",
        estimator: Estimator | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            limit,
            per=per,
            wait=wait,
            name=name,
            where=where,
            on_store_error=on_store_error,
            clock=clock,
            tokens=True,
        )
        self.estimator: Estimator = check_estimator(estimator)

    def __repr__(self) -> str:
        return f"TokenRateLimit({self.name!r})"

    def _start(self, call: Call, tracker: Tracker) -> _Taken | None:
        if self.where is not None and not matches(call, self.where):
            return None
        amount = min(self.amount, max(1, self.estimator.estimate(call, tracker).tokens))
        return _Taken(store_for(tracker), amount)

    def reserve(self, call: Call, tracker: Tracker) -> _Taken | None:
        taken = self._start(call, tracker)
        if taken is None:
            return None
        deadline = time.monotonic() + self.wait
        try:
            for key in self._keys(call):
                while True:
                    retry, bucket = self._acquire(taken.store, key, taken.amount)
                    if retry is None:
                        taken.held.append((self._counter(key), bucket))
                        break
                    time.sleep(self._pause(key, retry, deadline))
        except StoreUnavailable as exc:
            self._give_back(taken)
            self._store_failed(exc)
            return None
        except BaseException:
            # Refused, cancelled while waiting for a later key (CancelledError,
            # KeyboardInterrupt), or any other failure: the keys already taken give their
            # tokens back, or they would hold them for a whole window.
            self._give_back(taken)
            raise
        return taken

    async def areserve(self, call: Call, tracker: Tracker) -> _Taken | None:
        """``reserve`` for async entry points: waits with ``asyncio.sleep``, and the store's
        round trips (giving back included) run in a worker thread unless the store is
        ``memory://``."""
        taken = self._start(call, tracker)
        if taken is None:
            return None
        store = taken.store
        deadline = time.monotonic() + self.wait
        try:
            for key in self._keys(call):
                while True:
                    # cancelled while the store answers: what it took is given back
                    undo = functools.partial(self._untake, taken, key)
                    got = await off_loop(store, self._acquire, store, key, taken.amount, undo=undo)
                    retry, bucket = got
                    if retry is None:
                        taken.held.append((self._counter(key), bucket))
                        break
                    await asyncio.sleep(self._pause(key, retry, deadline))
        except StoreUnavailable as exc:
            await self._agive_back(taken)
            self._store_failed(exc)
            return None
        except BaseException as exc:
            # as in ``reserve``; given back before the refusal or cancellation goes on
            if isinstance(exc, GeneratorExit):  # the coroutine is closed: it cannot wait
                in_background(store, self._give_back, taken)
            else:
                await self._agive_back(taken)
            raise
        return taken

    async def _agive_back(self, taken: _Taken) -> None:
        """``_give_back`` off the event loop; carried on if the caller is cancelled again."""
        if taken.held:
            await asyncio.shield(off_loop(taken.store, self._give_back, taken))

    def _untake(self, taken: _Taken, key: str | None, got: tuple[float | None, int]) -> None:
        """Give back what ``_acquire`` took for ``key`` for a caller that was cancelled."""
        retry, bucket = got
        if retry is None:
            self._give_back(_Taken(taken.store, taken.amount, [(self._counter(key), bucket)]))

    def does_io(self, token: _Taken | None) -> bool:
        """Whether settling or releasing ``token`` waits on the guard store (Redis, SQL):
        the tracker then runs it on its settle threads (``Budget.does_io``)."""
        return token is not None and token.store.does_io

    def settle(self, token: _Taken | None, event: UsageEvent) -> None:
        if token is None:
            return
        if event.cost.status == "not_priced":  # no usage known: the estimate stands
            token.held = []
            return
        used = event.usage.input_tokens + event.usage.output_tokens
        self._correct(token, used - token.amount)

    def release(self, token: _Taken | None) -> None:
        if token is None:
            return
        self._correct(token, -token.amount)

    def _give_back(self, taken: _Taken) -> None:
        """``release`` while another error is on its way: never replaces it."""
        try:
            self.release(taken)
        except Exception as exc:
            _report("ratelimit.release", exc, limit=self.name)

    def _correct(self, token: _Taken, delta: int) -> None:
        held, token.held = token.held, []
        if not delta:
            return
        _, bucket_now, floor = self._bucket()
        span = self.span_ms
        for counter, bucket in held:
            try:
                token.store.adjust(
                    counter,
                    bucket=bucket,
                    delta=delta,
                    floor=floor,
                    keep_until=bucket_now + span + _MARGIN_MS,
                )
            except StoreUnavailable as exc:
                _report("ratelimit.settle", exc, limit=self.name)


def _report(where: str, exc: BaseException, **context: Any) -> None:
    try:
        from .._logging import report_failure

        report_failure(where, exc, **context)
    except Exception:
        pass
