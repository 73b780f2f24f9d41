"""Deliver LiteLLM's last queued callbacks before costledger closes its ledgers at exit.

LiteLLM runs an async call's success and failure callbacks from a queue on its logging
worker (``GLOBAL_LOGGING_WORKER``). When an ``asyncio.run(...)`` script ends, the callbacks
still queued are run by the worker's own ``atexit`` hook, registered when LiteLLM is
imported. costledger's exit hooks (the deferred finishes, the ledgers' close) are usually
registered after it (``import litellm`` first), and ``atexit`` runs hooks last-registered
first: costledger would close its ledgers before LiteLLM delivered those events, and they
would only reach the spool.

This module registers, on import (so after both LiteLLM's and costledger's hooks exist), a
hook that runs LiteLLM's public ``LoggingWorker.flush()`` on a fresh event loop, bounded by
``EXIT_FLUSH_TIMEOUT``: the events reach the logger while the ledgers are still open, and
LiteLLM's own hook later finds an empty queue. The same hook then records the wrappers'
streams still open as ``cancelled`` (after the flush: a stream whose end LiteLLM had queued
is recorded by that event instead), handing them to costledger's worker, whose exit hook
runs next and finishes them before the ledgers close.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
from typing import Any, Final

from ._logger import _report
from ._wrappers import abandon_open_streams

__all__ = ["EXIT_FLUSH_TIMEOUT", "flush_callbacks"]

EXIT_FLUSH_TIMEOUT: Final = 5.0
"""Seconds the exit hook waits for LiteLLM's queued callbacks to run (LiteLLM's own exit
flush has the same default limit, ``MAX_TIME_TO_CLEAR_QUEUE``)."""

_WORKER_MODULE: Final = "litellm.litellm_core_utils.logging_worker"
_registered = False
_register_lock = threading.Lock()


def _pending(worker: Any) -> int:
    count = getattr(worker, "pending_count", None)
    if isinstance(count, int):
        return count
    queue = getattr(worker, "_queue", None)  # an older LiteLLM without ``pending_count``
    return queue.qsize() if queue is not None else 0


async def _flush(worker: Any, timeout: float) -> None:
    try:
        await asyncio.wait_for(worker.flush(), timeout)
    finally:
        # ``flush`` started a worker task on this loop: stop it before the loop closes.
        stop = getattr(worker, "stop", None)
        if stop is not None:
            await asyncio.wait_for(stop(timeout=1.0), 2.0)


def _worker() -> Any:
    """LiteLLM's logging worker, if LiteLLM has loaded it."""
    worker = getattr(sys.modules.get(_WORKER_MODULE), "GLOBAL_LOGGING_WORKER", None)
    return worker if worker is not None and hasattr(worker, "flush") else None


# LiteLLM's coroutines that hand an async call's callbacks to its logging worker (or run
# them): ``litellm.utils._client_async_logging_helper`` (LiteLLM 1.110 runs it in a task of
# its own once ``acompletion`` has returned: it queues the success callbacks later), and
# a stream's end (``Logging.dispatch_success_handlers``).
_LOGGING_COROUTINES: Final = frozenset(
    {
        "_client_async_logging_helper",
        "Logging.dispatch_success_handlers",
        "Logging.async_success_handler",
        "Logging.async_failure_handler",
    }
)
_SPAWNED_MODULE: Final = "litellm.responses.streaming_iterator"  # its _PENDING_LOGGING_TASKS
_MAX_FLUSH_ROUNDS: Final = 100


def _logging_tasks() -> list[asyncio.Task[Any]]:
    """LiteLLM's unfinished tasks on this event loop that will queue (or run) callbacks."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    found: dict[int, asyncio.Task[Any]] = {}
    spawned = getattr(sys.modules.get(_SPAWNED_MODULE), "_PENDING_LOGGING_TASKS", None)
    if isinstance(spawned, (set, frozenset)):
        for task in list(spawned):
            if isinstance(task, asyncio.Task) and not task.done() and task.get_loop() is loop:
                found[id(task)] = task
    for task in asyncio.all_tasks(loop):
        if task is current or task.done() or id(task) in found:
            continue
        coro = task.get_coro()
        if getattr(coro, "__qualname__", None) not in _LOGGING_COROUTINES:
            continue
        frame = getattr(coro, "cr_frame", None)
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        if isinstance(module, str) and module.startswith("litellm"):
            found[id(task)] = task
    return list(found.values())


async def flush_callbacks(timeout: float | None = 30.0) -> bool:
    """Wait until LiteLLM has run every callback of the async calls made so far on this
    event loop, so each is recorded (and its guards settled). ``await`` it at the end of
    the coroutine given to ``asyncio.run``: ``asyncio.run`` then cancels the tasks still
    pending, and LiteLLM loses the callbacks whose tasks had not run yet (LiteLLM 1.110
    queues an ``acompletion``'s success callbacks from a task it starts once the call has
    returned; the exit hook can only deliver what is queued).

    It waits for those tasks of LiteLLM's (the callbacks scheduled but not yet queued, a
    stream's end), then for LiteLLM's logging worker (``GLOBAL_LOGGING_WORKER.flush()``),
    again until neither holds anything. Returns False if ``timeout`` (seconds, ``None``
    for no limit) ran out first, or on a failure, which is logged; never raises (but a
    cancellation of the caller)."""
    try:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for _ in range(_MAX_FLUSH_ROUNDS):
            tasks = _logging_tasks()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=_left(loop, deadline))
                if pending:
                    return False
            worker = _worker()
            if worker is not None:
                await asyncio.wait_for(worker.flush(), _left(loop, deadline))
            if not _logging_tasks():  # a callback may have started another
                return True
        return False
    except (asyncio.TimeoutError, TimeoutError):
        return False
    except Exception as exc:
        _report("litellm.exit_flush", exc)
        return False


def _left(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - loop.time(), 0.0)


class _QuietLoopChange(logging.Filter):
    """Drops LiteLLM's warning that its queue moved to a new loop: expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("LoggingWorker: event loop changed")


def flush_litellm_logging(timeout: float = EXIT_FLUSH_TIMEOUT) -> None:
    """Run the callbacks LiteLLM's logging worker still holds, for at most ``timeout`` seconds.

    For the exit hook (no event loop running in this thread); never raises.
    """
    try:
        worker = _worker()
        if worker is None or not _pending(worker):
            return
        quiet = _QuietLoopChange()
        litellm_logger = logging.getLogger("LiteLLM")
        litellm_logger.addFilter(quiet)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_flush(worker, timeout))
        finally:
            loop.close()
            litellm_logger.removeFilter(quiet)
    except BaseException as exc:  # at exit: report, never raise (a timeout included)
        _report("litellm.exit_flush", exc)


def _at_exit() -> None:
    flush_litellm_logging()
    abandon_open_streams()


def register_exit_flush() -> None:
    """Register the exit hook once per process (later than costledger's own, so it runs first)."""
    global _registered
    with _register_lock:
        if not _registered:
            atexit.register(_at_exit)
            _registered = True
