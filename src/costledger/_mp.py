"""Which kind of process this is, for the exit flushes (``_tracker``, ``_ledger._core``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def when_mp_child(mark: Callable[[Any], None], anchor: object) -> bool:
    """At import: call ``mark(anchor)`` if this is a ``multiprocessing`` child (``spawn``
    or ``forkserver``, or a ``fork`` child of a process that had not imported costledger),
    whose ``os._exit`` skips atexit; returns whether it is one.

    Imported after the child's bootstrap (in the target): now. Imported while the child
    unpickles its task (its main module): at the bootstrap, which first clears the
    finalizers registered until then (``anchor`` must stay alive until then: the registry
    holds it weakly). ``_inheriting`` is multiprocessing's private flag for that phase;
    nothing public tells it.
    """
    mp_process = sys.modules.get("multiprocessing.process")
    if mp_process is None:
        return False  # multiprocessing not imported: not one of its children
    if mp_process.parent_process() is not None:
        mark(anchor)
        return True
    if getattr(mp_process.current_process(), "_inheriting", False):
        import multiprocessing.util

        multiprocessing.util.register_after_fork(anchor, mark)
        return True
    return False
