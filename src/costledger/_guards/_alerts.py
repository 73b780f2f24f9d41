"""Budget alerts: a log event (structlog if the application configured it, else stdlib
logging) and the callbacks an operator registered.

A threshold alert fires once per budget, period and key, across every process sharing
the store: the store marks it atomically (``HSETNX`` in Redis, a unique row in SQL) and
only the caller that made the mark fires it. Callbacks run on one background thread,
never on the caller's, so a slow webhook never slows a model call; async callbacks run
on that thread's event loop.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import queue
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["AlertCallback", "BudgetAlert", "dispatch", "flush_alerts", "webhook_alert"]

AlertCallback = Callable[["BudgetAlert"], Awaitable[None] | None]
ALERT_LOGGER = "costledger.alerts"
ALERT_EVENT = "costledger.budget_alert"


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A budget reached one of its ``warn_at`` thresholds (``kind="threshold"``), or refused a
    call for the first time in its period (``kind="exceeded"``)."""

    kind: Literal["threshold", "exceeded"]
    budget: str
    per: str | None
    key: str | None
    threshold: Decimal | None
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    unit: str
    period: str
    resets_at: datetime | None
    hard: bool
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: Decimals as strings (exact), times in ISO 8601. No secret is in here."""
        return {
            "event": ALERT_EVENT,
            "kind": self.kind,
            "budget": self.budget,
            "per": self.per,
            "key": self.key,
            "threshold": None if self.threshold is None else str(self.threshold),
            "limit": str(self.limit),
            "spent": str(self.spent),
            "reserved": str(self.reserved),
            "unit": self.unit,
            "period": self.period,
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat(),
            "hard": self.hard,
            "at": self.at.isoformat(),
        }


def _report(where: str, exc: BaseException, **context: Any) -> None:
    try:
        from .._logging import report_failure

        report_failure(where, exc, **context)
    except Exception:
        pass


_Item = tuple[BudgetAlert, tuple[AlertCallback, ...]] | threading.Event


class _Dispatcher:
    """One daemon thread running alert callbacks in order, with its own event loop."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._flush_registered = False

    def submit(self, alert: BudgetAlert, callbacks: tuple[AlertCallback, ...]) -> None:
        if not callbacks:
            return
        self._start()
        try:
            self._queue.put_nowait((alert, callbacks))
        except queue.Full as exc:
            _report("alerts.queue", exc, budget=alert.budget)

    def _start(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    # a forked child: the parent's thread is not here, its queue is the
                    # parent's (alerts queued before the fork are the parent's to deliver)
                    self._pid = os.getpid()
                    self._thread = None
                    self._queue = queue.Queue(maxsize=10_000)
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, args=(self._queue,), name="costledger-alerts", daemon=True
                    )
                    thread.start()
                    self._thread = thread
                    if not self._flush_registered:  # a child inherits the parent's hook
                        atexit.register(self.flush, 5.0)
                        self._flush_registered = True

    def _forked(self) -> None:
        """In a forked child, before any other thread runs: a lock another thread of the
        parent held at the fork would stay held here forever."""
        self._lock = threading.Lock()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every alert submitted so far has been delivered; False on timeout."""
        if self._thread is None or self._pid != os.getpid():
            return True  # nothing submitted in this process
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def _run(self, items: queue.Queue[_Item]) -> None:
        import asyncio  # here, not at import: most programs never have an alert

        loop = asyncio.new_event_loop()
        while True:
            item = items.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            alert, callbacks = item
            for callback in callbacks:
                try:
                    result = callback(alert)
                    if inspect.isawaitable(result):
                        loop.run_until_complete(_as_coroutine(result))
                except Exception as exc:
                    _report("alerts.callback", exc, budget=alert.budget)


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


_dispatcher = _Dispatcher()
if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_dispatcher._forked)


def _log(alert: BudgetAlert) -> None:
    """The alert as a WARNING on the logger ``costledger.alerts``.

    Through the application's structlog chain when it has configured structlog; else on
    the stdlib logger of that name, so it goes where the application's logging sends it
    (and, with no logging set up at all, to stderr through logging's last-resort handler).
    An unconfigured structlog is never used: its default logger prints to stdout, which a
    library must not write to uninvited (it would corrupt a CLI's output or a pipe).
    """
    fields = alert.to_dict()
    structlog = sys.modules.get("structlog")  # never imported: never configured
    if structlog is not None and structlog.is_configured():
        del fields["event"]
        structlog.get_logger(ALERT_LOGGER).warning(ALERT_EVENT, **fields)
        return
    text = " ".join(
        f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
        for key, value in fields.items()
        if key != "event"
    )
    logging.getLogger(ALERT_LOGGER).warning(
        "%s %s", ALERT_EVENT, text, extra={"costledger_alert": fields}
    )


def dispatch(alert: BudgetAlert, callbacks: Iterable[AlertCallback]) -> None:
    """Log the alert (logger ``costledger.alerts``, see ``_log``) and queue its callbacks."""
    try:
        _log(alert)
    except Exception as exc:
        _report("alerts.log", exc, budget=alert.budget)
    _dispatcher.submit(alert, tuple(callbacks))


def flush_alerts(timeout: float | None = 10.0) -> bool:
    """Block until queued alert callbacks have run (tests, graceful shutdown)."""
    return _dispatcher.flush(timeout)


def webhook_alert(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    attempts: int = 3,
) -> Callable[[BudgetAlert], None]:
    """An alert callback that POSTs the alert as JSON (``BudgetAlert.to_dict()``) to ``url``.

    Retries connection errors, timeouts and 5xx answers (``attempts`` tries, exponential
    backoff with jitter). The payload holds budget figures only; ``headers`` (an auth
    token, say) are sent but never logged, and a failure is logged with the host only,
    since webhook URLs often carry their secret in the path.

    >>> Budget("500 USD", "month", per="team").on_alert(webhook_alert(os.environ["HOOK"]))
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("webhook_alert url must be an http:// or https:// URL")
    host = parts.hostname or "?"
    if attempts < 1:
        raise ValueError(f"webhook_alert attempts must be >= 1, got {attempts!r}")
    send_headers = dict(headers or {})
    client_box: list[Any] = []

    def post(alert: BudgetAlert) -> None:
        import httpx
        from tenacity import (
            retry,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
            wait_random,
        )

        if not client_box:
            client_box.append(httpx.Client(timeout=timeout))
        client = client_box[0]

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, httpx.HTTPStatusError):
                return exc.response.status_code >= 500
            return isinstance(exc, httpx.TransportError)

        @retry(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2),
            retry=retry_if_exception(retryable),
            reraise=True,
        )
        def send() -> None:
            response = client.post(url, json=alert.to_dict(), headers=send_headers)
            response.raise_for_status()

        try:
            send()
        except httpx.HTTPStatusError as exc:
            raise WebhookError(
                f"budget alert webhook on {host} answered {exc.response.status_code}"
            ) from None
        except httpx.HTTPError as exc:
            raise WebhookError(
                f"budget alert webhook on {host} failed: {type(exc).__name__}"
            ) from None

    return post


class WebhookError(Exception):
    """A webhook could not be delivered; the message names the host only."""
