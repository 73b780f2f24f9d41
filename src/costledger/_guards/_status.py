"""``budget_status``: where every budget stands (for ``costledger budget status``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._budget import Budget, BudgetStatus

if TYPE_CHECKING:
    from .._tracker import Guard, Tracker

__all__ = ["budget_status"]


def budget_status(
    tracker: Tracker | None = None,
    guards: Iterable[Guard | Any] | None = None,
    *,
    now: float | None = None,
) -> list[BudgetStatus]:
    """Spent, reserved, remaining and reset time of each budget and key, this period.

    ``tracker``: whose guards, store and ledger to read (default: the process default
    Tracker). ``guards``: read these budgets instead of the tracker's (through the
    tracker's store and ledger). Rows come in budget order, then key order.
    """
    from .._tracker import check_tracker, get_tracker

    tracker = check_tracker("budget_status()", tracker) or get_tracker()
    chosen = tracker.guards if guards is None else tuple(guards)
    rows: list[BudgetStatus] = []
    for guard in chosen:
        if isinstance(guard, Budget):
            found = guard.status(tracker, now=now)
            found.sort(key=lambda s: (s.key is not None, s.key or ""))
            rows.extend(found)
    return rows
