"""Helpers for testing code that uses costledger, shipped to users (like ``structlog.testing``).

>>> from costledger.testing import capture_costs
>>> with capture_costs() as costs:
...     my_llm_feature()
>>> assert costs.total == Decimal("0.0000135")
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _tracker
from ._attribution import check_attribution_keywords
from ._events import UsageEvent
from ._tracker import Tracker, _set_default, add_sink, drain_deferred, remove_sink

if TYPE_CHECKING:
    from ._guards._memory import MemoryStore as MemoryStore
    from ._ledger import InMemoryLedger as InMemoryLedger

__all__ = ["CapturedCosts", "InMemoryLedger", "MemoryStore", "capture_costs"]


class CapturedCosts:
    """The events emitted while ``capture_costs`` was active, in order, with handy totals.

    The totals count as ``costledger_langchain``'s ``CostTotals`` and the reports do:
    ``total`` (or ``total_cost``) adds the priced calls; ``unpriced`` lists the calls no
    price book knows (their cost is unknown, never $0) and ``no_usage`` the calls that did
    not fail but reported no usage (nothing to price); a failed call without usage is in
    neither. Token sums leave LangChain cache hits out (not billed); ``cache_hits`` counts
    them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[UsageEvent] = []

    def _append(self, event: UsageEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[UsageEvent]:
        """The events so far, oldest first; waits for calls finished in the background."""
        drain_deferred(10.0)
        with self._lock:
            return list(self._events)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[UsageEvent]:
        return iter(self.events)

    @property
    def total(self) -> Decimal:
        """Exact sum of priced events (unpriced ones are listed by ``unpriced``, not added as 0)."""
        return sum((e.cost.total for e in self.events if e.cost.total is not None), Decimal(0))

    @property
    def total_cost(self) -> Decimal:
        """``total``, by the name ``CostTotals`` gives it."""
        return self.total

    @property
    def unpriced(self) -> list[UsageEvent]:
        """The calls with usage that no price book knows (pricing status ``unknown_model``)."""
        return [e for e in self.events if e.cost.status == "unknown_model"]

    @property
    def no_usage(self) -> list[UsageEvent]:
        """The calls that did not fail but reported no usage (status ``ok`` or
        ``cancelled``, pricing status ``not_priced``): their cost is unknown too."""
        return [e for e in self.events if e.cost.status == "not_priced" and e.status != "error"]

    @property
    def requests(self) -> int:
        """How many calls were captured."""
        return len(self.events)

    @property
    def errors(self) -> int:
        """How many captured calls did not end ``ok`` (failed or cancelled), as ``CostTotals``."""
        return sum(1 for e in self.events if e.status != "ok")

    @property
    def cache_hits(self) -> int:
        return sum(1 for e in self.events if e.cache_hit)

    @property
    def input_tokens(self) -> int:
        """Input tokens billed: cache hits left out."""
        return sum(e.usage.input_tokens for e in self.events if not e.cache_hit)

    @property
    def output_tokens(self) -> int:
        """Output tokens billed: cache hits left out."""
        return sum(e.usage.output_tokens for e in self.events if not e.cache_hit)

    @property
    def cache_read_tokens(self) -> int:
        return sum(e.usage.cache_read_tokens for e in self.events if not e.cache_hit)

    @property
    def cache_write_tokens(self) -> int:
        return sum(e.usage.cache_write_tokens for e in self.events if not e.cache_hit)

    @property
    def reasoning_tokens(self) -> int:
        return sum(e.usage.reasoning_tokens for e in self.events if not e.cache_hit)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def by_model(self) -> dict[str | None, Decimal]:
        out: dict[str | None, Decimal] = {}
        for e in self.events:
            if e.cost.total is not None:
                key = e.response_model or e.model
                out[key] = out.get(key, Decimal(0)) + e.cost.total
        return out


# The isolating blocks in force, oldest first, in every thread (the default Tracker is the
# process's), and the default they replaced: blocks in two threads may end in any order.
_isolation_lock = threading.Lock()
_isolating: list[Tracker] = []
_replaced: Tracker | None = None


def _isolate(tracker: Tracker) -> None:
    global _replaced
    with _isolation_lock:
        previous = _set_default(tracker)
        if not _isolating:
            _replaced = previous
        _isolating.append(tracker)


def _end_isolation(tracker: Tracker) -> None:
    """Restore the default an isolating block replaced, if the default is still its own:
    the newest block still in force's, or, after the last, the one before the first. A
    block ending out of order (another thread's began after it and is still in force)
    leaves the default alone; a default set by ``configure()`` inside a block stays."""
    global _replaced
    with _isolation_lock:
        for i in range(len(_isolating) - 1, -1, -1):
            if _isolating[i] is tracker:
                del _isolating[i]
                break
        if _tracker._default is not tracker:
            return
        if _isolating:
            _set_default(_isolating[-1])
        else:
            _set_default(_replaced)
            _replaced = None


@contextmanager
def capture_costs(*, isolate: bool = True, **tracker_kwargs: Any) -> Iterator[CapturedCosts]:
    """Capture every usage event any Tracker emits inside the block.

    With ``isolate=True`` (the default) the process default Tracker is swapped for
    one with an in-memory ledger and logging off (``tracker_kwargs``: that Tracker's
    other arguments, ``guards=``, ``team=``...), so tests write no file; entry
    points handed their own Tracker are captured as well, and still record there.
    The default is the process's: blocks in several threads at once share the newest
    one's, and the default from before the first comes back when the last one ends,
    whatever order they end in.
    """
    if tracker_kwargs:
        if not isolate:
            raise TypeError(
                "capture_costs(isolate=False) makes no Tracker, so it takes no Tracker "
                f"arguments, got {', '.join(sorted(tracker_kwargs))}"
            )
        # What is not Tracker's own is attribution metadata: a misspelt parameter (or a
        # Tracker, which this does not take) would become metadata without a word.
        check_attribution_keywords(
            "capture_costs", tracker_kwargs, ("isolate", *_tracker._TRACKER_PARAMETERS)
        )
    # Calls finished before the block, still in the background, are not the block's.
    drain_deferred(10.0)
    captured = CapturedCosts()
    isolating: Tracker | None = None
    if isolate:
        from ._ledger import InMemoryLedger

        tracker_kwargs.setdefault("ledger", InMemoryLedger())
        tracker_kwargs.setdefault("log", "off")
        isolating = Tracker(**tracker_kwargs)
        _isolate(isolating)
    # One bound method, added and removed: each ``captured._append`` is a new object, and
    # remove_sink matches by identity.
    sink = captured._append
    add_sink(sink)
    try:
        yield captured
    finally:
        drain_deferred(10.0)  # calls finished in the block, still in the background
        remove_sink(sink)
        if isolating is not None:
            _end_isolation(isolating)


if not TYPE_CHECKING:  # a misspelt name must fail type checks, not resolve to Any

    def __getattr__(name: str) -> Any:
        if name == "InMemoryLedger":
            from ._ledger import InMemoryLedger

            return InMemoryLedger
        if name == "MemoryStore":  # a private in-process guard store: Tracker(guard_store=...)
            from ._guards._memory import MemoryStore

            return MemoryStore
        raise AttributeError(f"module 'costledger.testing' has no attribute {name!r}")
