"""``Budget``: an allowance of money or tokens per period, global or per attribution key."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from .._errors import BudgetExceeded
from ._alerts import AlertCallback, BudgetAlert, dispatch
from ._estimate import DEFAULT_ESTIMATOR, Estimator
from ._ledger_spend import ledger_buckets
from ._spec import (
    Clock,
    Limit,
    Period,
    Window,
    call_keys,
    check_per,
    from_units,
    matches,
    parse_duration,
    parse_limit,
    parse_period,
    reserve_units,
    to_units,
)
from ._store import GuardStore, StoreRefusal, StoreUnavailable, store_for

if TYPE_CHECKING:
    from .._events import UsageEvent
    from .._tracker import Call, Tracker

__all__ = ["Budget", "BudgetStatus", "counter_key", "decode_key"]

FailMode = Literal["closed", "open"]
_MARGIN_MS = 3_600_000
_MAX_KEY = 200
EXCEEDED_MARK = "exceeded"


def counter_key(key: str | None) -> str:
    """A key as it appears in a counter name: ``~`` for "no key", ``=value`` otherwise
    (long values shortened with a digest so a counter name stays indexable)."""
    if key is None:
        return "~"
    if len(key) > _MAX_KEY:
        import hashlib

        key = key[:100] + "#" + hashlib.sha1(key.encode()).hexdigest()
    return "=" + key


def decode_key(text: str) -> str | None:
    return None if text == "~" else text[1:]


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
    res_id: str | None  # None: the store was down and the budget failed open
    win: Window
    keep_until: int | None


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
    period and key at each ``warn_at`` fraction, and once when a hard budget first refuses.

    ``on_store_error``: what to do when the guard store cannot be reached: ``"closed"``
    (refuse the call; the default for hard budgets) or ``"open"`` (let it through and
    log; the default for soft ones). ``reservation_ttl``: how long a reservation is held
    if its call never ends (a crashed process), default 10 minutes. ``clock``: seconds
    since the epoch, for tests.
    """

    def __init__(
        self,
        limit: Decimal | int | str,
        period: str | Period = "month",
        *,
        per: str | None = None,
        hard: bool = True,
        warn_at: Iterable[float | Decimal | str] = (0.5, 0.8, 1.0),
        tz: str = "UTC",
        name: str | None = None,
        where: Mapping[str, str] | None = None,
        on_store_error: FailMode | None = None,
        reservation_ttl: float | str = 600.0,
        estimator: Estimator | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.limit: Limit = parse_limit(limit)
        self.period: Period = parse_period(period, tz)
        self.per = check_per(per)
        self.hard = bool(hard)
        self.where = _check_where(where)
        if on_store_error is None:
            on_store_error = "closed" if self.hard else "open"
        if on_store_error not in ("closed", "open"):
            raise ValueError(f"on_store_error must be 'closed' or 'open', got {on_store_error!r}")
        self.on_store_error: FailMode = on_store_error
        self.reservation_ttl = parse_duration(reservation_ttl, field="reservation_ttl")
        self.estimator = estimator or DEFAULT_ESTIMATOR
        self._clock: Clock = clock or time.time
        self.warn_at = _check_warn_at(warn_at)
        self.name = name if name is not None else self._default_name()
        if not isinstance(self.name, str) or not self.name or len(self.name) > 200:
            raise ValueError(
                f"name must be a non-empty string of at most 200 characters, got {name!r}"
            )
        self.tokens = self.limit.is_tokens
        self._limit_units = self.limit.units()
        self._marks = tuple((f"warn:{t}", math.ceil(self._limit_units * t)) for t in self.warn_at)
        self._thresholds = {f"warn:{t}": t for t in self.warn_at}
        self._prefix = f"budget:{self.name}:"
        self._callbacks: list[AlertCallback] = []
        self._ttl_ms = int(self.reservation_ttl * 1000)
        self._refuse_mark = EXCEEDED_MARK if self.hard else None
        # Hot-path caches: the last tracker's store, counter names of recent keys.
        self._last_store: tuple[Tracker, GuardStore] | None = None
        self._names: dict[tuple[str | None, str], str] = {}
        self._pending: deque[tuple[_Token, _Hold, int]] = deque(maxlen=100_000)
        self._next_retry = 0.0

    def _default_name(self) -> str:
        text = f"{self.limit}/{self.period.text}"
        if self.period.kind == "calendar" and self.period.tz_name != "UTC":
            text += f" {self.period.tz_name}"
        if self.per:
            text += f" per {self.per}"
        if self.where:
            text += " where " + ",".join(f"{k}={v}" for k, v in sorted(self.where.items()))
        return text

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
        ``guard_store`` URL fails at start-up rather than on the first call."""
        store_for(tracker)

    # -- the guard protocol ---------------------------------------------------------------------
    def reserve(self, call: Call, tracker: Tracker) -> _Token | None:
        if self.where is not None and not matches(call, self.where):
            return None
        if self._pending and time.monotonic() >= self._next_retry:
            self._retry_pending()
        last = self._last_store
        if last is not None and last[0] is tracker:
            store = last[1]
        else:
            store = store_for(tracker)
            self._last_store = (tracker, store)
        now = self._clock()
        now_ms = int(now * 1000)
        win = self.period.window(now)
        units = self._estimate_units(call, tracker)
        token = _Token(store, units, tracker)
        per = self.per
        if per is None:
            keys: tuple[str | None, ...] = (None,)
        elif per == "tag":
            keys = tuple(dict.fromkeys(call.attribution.tags)) or (None,)
        else:
            keys = call_keys(call, per)
        keep = self._keep_until(win, now_ms)
        for i, key in enumerate(keys):
            res_id = call.id if len(keys) == 1 else f"{call.id}/{i}"
            try:
                self._reserve_key(store, tracker, token, key, res_id, win, now, now_ms, keep)
            except StoreUnavailable as exc:
                if self.on_store_error == "closed":
                    self.release(token)
                    raise StoreRefusal(exc.store, exc.cause, f"budget {self.name!r}") from exc
                _report("budget.reserve", exc, budget=self.name)
                for other in keys[i:]:
                    token.holds.append(_Hold(self._counter(other, win), other, None, win, keep))
                return token
        return token

    def account(self, call: Call, tracker: Tracker) -> _Token | None:
        """For ``Tracker.record``: a call that already happened is counted when it settles,
        in the period it started in, with nothing reserved and nothing refused."""
        if self.where is not None and not matches(call, self.where):
            return None
        win = self.period.window(call.started_at.timestamp())
        keep = self._keep_until(win, int(self._clock() * 1000))
        token = _Token(store_for(tracker), 0, tracker)
        per = self.per
        if per == "tag":
            keys: tuple[str | None, ...] = tuple(dict.fromkeys(call.attribution.tags)) or (None,)
        else:
            keys = call_keys(call, per)
        for key in keys:
            token.holds.append(_Hold(self._counter(key, win), key, None, win, keep))
        return token

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
    ) -> None:
        counter = self._counter(key, win)
        limit = self._limit_units if self.hard else None
        expires = now_ms + self._ttl_ms
        admission = store.reserve(
            counter,
            res_id=res_id,
            amount=token.units,
            limit=limit,
            floor=win.floor,
            now_ms=now_ms,
            expires_ms=expires,
            keep_until=keep,
            refuse_mark=self._refuse_mark,
        )
        if admission.status == "unseeded":
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
                refuse_mark=self._refuse_mark,
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

    def settle(self, token: _Token | None, event: UsageEvent) -> None:
        if token is None:
            return
        units = self._actual_units(token, event)
        for hold in token.holds:
            if not self._settle_hold(token, hold, units):
                # The store is down: keep the settle and retry it (before the next
                # reservation), so an outage does not make the spend disappear.
                if len(self._pending) == self._pending.maxlen:
                    _report("budget.settle_dropped", OverflowError("pending settles"))
                self._pending.append((token, hold, units))

    def _settle_hold(self, token: _Token, hold: _Hold, units: int) -> bool:
        """Settle one key; False when the store could not be reached."""
        if self.period.kind == "rolling":
            floor = self.period.window(self._clock()).floor
        else:
            floor = hold.win.floor
        try:
            settled = token.store.settle(
                hold.counter,
                res_id=hold.res_id,
                reserved=token.units,
                bucket=hold.win.bucket,
                amount=units,
                floor=floor,
                keep_until=hold.keep_until,
                marks=self._marks,
            )
        except StoreUnavailable as exc:
            _report("budget.settle", exc, budget=self.name, units=units)
            return False
        for label in settled.fired:
            self._alert(
                token,
                "threshold",
                hold.key,
                self._thresholds.get(label),
                settled.spent,
                settled.reserved,
                hold.win,
            )
        return True

    def _retry_pending(self) -> None:
        """Replay settles the store missed while it was down, oldest first."""
        pending = self._pending
        while pending:
            try:
                token, hold, units = pending.popleft()
            except IndexError:  # another thread took the last one
                return
            if not self._settle_hold(token, hold, units):
                pending.appendleft((token, hold, units))
                self._next_retry = time.monotonic() + 1.0  # not on every call of an outage
                return

    def release(self, token: _Token | None) -> None:
        if token is None:
            return
        for hold in token.holds:
            if hold.res_id is None:
                continue
            try:
                token.store.release(hold.counter, res_id=hold.res_id, reserved=token.units)
            except StoreUnavailable as exc:
                # The reservation lapses at its TTL.
                _report("budget.release", exc, budget=self.name)
        token.holds.clear()

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
        now = self._clock() if now is None else now
        now_ms = int(now * 1000)
        win = self.period.window(now)
        if keys is None:
            found: dict[str | None, None] = {}
            if self.per is None:
                found[None] = None
            suffix = f":{win.label}"
            for name in sorted(store.counters(self._prefix)):
                if name.endswith(suffix):
                    found[decode_key(name[len(self._prefix) : -len(suffix)])] = None
            if self.per is not None:
                for key in _ledger_keys(tracker, self, win, now):
                    found.setdefault(key, None)
            keys = list(found)
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
        if not self.tokens and call.estimate is not None:
            return reserve_units(_check_estimate(call.estimate), tokens=False)
        estimate = self.estimator.estimate(call, tracker)
        if self.tokens:
            return estimate.tokens
        if estimate.cost is None or estimate.currency != self.limit.unit:
            return reserve_units(self.estimator.default_reserve, tokens=False)
        return reserve_units(estimate.cost, tokens=False)

    def _actual_units(self, token: _Token, event: UsageEvent) -> int:
        if event.cost.status == "not_priced":
            # The call ended without usage (an opaque function returned nothing readable):
            # what it spent is unknown, so it counts as its reservation, never as nothing.
            return token.units
        if self.tokens:
            return event.usage.input_tokens + event.usage.output_tokens
        total = event.cost.total
        if total is None or event.cost.currency != self.limit.unit:
            # Unpriced (unknown model, or no usage reported): count what was reserved,
            # so an unknown model can never spend past a hard budget unseen.
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
        store.seed(counter, buckets=buckets, marks=self._marks, floor=win.floor, keep_until=keep)

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


def _for_key(per: str | None, key: str | None) -> str:
    if per is None:
        return ""
    return f" for {per} {key!r}" if key is not None else f" for calls without a {per}"


def _check_estimate(value: Any) -> Decimal:
    if isinstance(value, Decimal) and value.is_finite() and value >= 0:
        return value
    raise ValueError(f"estimate must be a Decimal amount of money >= 0, got {value!r}")


def _check_where(where: Mapping[str, str] | None) -> dict[str, str] | None:
    if where is None:
        return None
    checked = {}
    for key, value in where.items():
        check_per(key)
        if not isinstance(value, str):
            raise ValueError(f"where[{key!r}] must be a string, got {value!r}")
        checked[key] = value
    return checked or None


def _check_warn_at(values: Iterable[float | Decimal | str]) -> tuple[Decimal, ...]:
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
        result.append(fraction.normalize())
    return tuple(sorted(set(result)))


def _ledger_keys(tracker: Tracker, budget: Budget, win: Window, now: float) -> list[str | None]:
    from ._ledger_spend import ledger_keys

    return ledger_keys(tracker, budget, win, now)


def _report(where: str, exc: BaseException, **context: Any) -> None:
    try:
        from .._logging import report_failure

        report_failure(where, exc, **context)
    except Exception:
        pass
