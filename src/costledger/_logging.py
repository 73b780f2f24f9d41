"""Usage log lines (one JSON object per call) and the rate-limited log of costledger's own failures.

``UsageLogger`` writes each ``UsageEvent`` as a ``costledger.usage/1`` record
(see ``_schema``) to one output. Our own JSON outputs are structlog loggers
made with ``structlog.wrap_logger`` and a short chain of small processors;
``structlog.configure`` is never called, so an application's own structlog
setup is never replaced. With ``output="structlog"`` the record goes through
the APPLICATION's configured chain instead.

``report_failure`` and ``warn_once`` are how every part of costledger tells the
developer that tracking failed without breaking the host call: a stdlib
``logging`` WARNING on the ``"costledger"`` logger, secrets scrubbed, at most one
line per minute for the same kind of failure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from functools import lru_cache
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

from ._cost import money_text
from ._redact import redact, redact_processor, redact_text
from ._schema import USAGE_EVENT_NAME, USAGE_SCHEMA, event_to_record

if TYPE_CHECKING:
    from ._events import UsageEvent

__all__ = [
    "ENV_VAR",
    "FailureReporter",
    "UsageLogger",
    "add_schema_version",
    "dumps_record",
    "report_failure",
    "warn_once",
]

ENV_VAR = "COSTLEDGER_LOG"
USAGE_LOGGER_NAME = "costledger.usage"

_KEYWORDS = frozenset({"auto", "off", "none", "", "stdout", "stderr", "structlog"})

# ------------------------------------------------------------------------ rendering


def _json_default(obj: Any) -> Any:
    """What the JSON serializers do with values JSON has no type for."""
    if isinstance(obj, Decimal):
        # exact, never via float, and never in exponent form (2E-7)
        return money_text(obj) if obj.is_finite() else str(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (datetime, date, dt_time)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return redact(sorted(obj, key=repr))
    if isinstance(obj, bytes):
        return redact_text(obj.decode("utf-8", "replace"))
    # Unknown objects become their text, scrubbed: redact() could not look inside them.
    return redact_text(str(obj))


def _stdlib_dumps(obj: Any, **_: Any) -> str:
    text = json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # a lone surrogate ("\ud83d", half an emoji), which no UTF-8 output can write:
            # the line with its non-ASCII text as JSON escapes, read back the same
            return json.dumps(obj, default=_json_default, separators=(",", ":"))
    return text


@lru_cache(maxsize=1)
def _serializer() -> Callable[..., str]:
    try:
        import orjson
    except ImportError:
        return _stdlib_dumps
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
    options |= orjson.OPT_PASSTHROUGH_DATACLASS
    orjson_dumps = orjson.dumps
    encode_error = orjson.JSONEncodeError

    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson_dumps(obj, default=_json_default, option=options).decode("utf-8")
        except encode_error:
            # integers beyond 64 bits, lone surrogates, very deep nesting: json copes or says why
            return _stdlib_dumps(obj)

    return dumps


def dumps_record(record: Mapping[str, Any]) -> str:
    """One compact JSON line (no newline) for a record; Decimal renders as a string."""
    return _serializer()(record)


def add_schema_version(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: stamp ``schema`` on a usage event dict that lacks it."""
    if event_dict.get("event") == USAGE_EVENT_NAME:
        event_dict.setdefault("schema", USAGE_SCHEMA)
    return event_dict


# ---------------------------------------------------------------------------- output


def check_output_text(text: str, who: str) -> None:
    """Text naming where usage lines go: a keyword, or a path. Text that is no keyword and
    has nothing of a path (no directory, no suffix: ``"stdot"``, ``"bogus"``) is a
    ``ValueError`` naming ``who``: taken as a path, it would write a file of that name."""
    stripped = text.strip()
    if stripped.lower() in _KEYWORDS or "/" in stripped or os.sep in stripped or "." in stripped:
        return
    raise ValueError(
        f"{who} must be 'auto', 'off', 'stdout', 'stderr', 'structlog' or a file path, got "
        f"{text!r}; for a file without a suffix in this directory, write './{stripped}'"
    )


class UsageLogger:
    """Write one ``costledger.usage/1`` JSON line per ``UsageEvent`` to one output.

    ``output``:

    * ``"auto"`` (default): the ``COSTLEDGER_LOG`` environment variable if set, else
      ``"structlog"`` when the application has configured structlog (checked at
      every emit, so configuring it after this object exists works), else off.
    * ``"structlog"``: ``structlog.get_logger("costledger.usage").info("llm.usage", ...)``
      through the application's own processors and renderer.
    * ``"stdout"`` / ``"stderr"``: JSON lines to that stream.
    * a path (``str`` or ``os.PathLike``): JSON lines appended to that file,
      line-buffered; emits from many threads never interleave.
    * a text stream (anything with ``write``): JSON lines to it.
    * ``"off"`` / ``None``: nothing; ``emit`` returns at once.

    ``emit`` never raises: a failure is reported through ``report_failure``.
    """

    def __init__(self, output: str | os.PathLike[str] | IO[str] | None = "auto") -> None:
        self._lock = threading.Lock()
        self._owned_file: IO[str] | None = None
        self._bound: Any = None  # the structlog logger used for our own JSON outputs
        self._app_logger: Any = None  # structlog.get_logger(...) proxy for the application's chain
        self._mode = "off"  # off | auto | structlog | json
        self._description = "off"
        from_env = False
        if isinstance(output, str) and output.strip().lower() == "auto":
            env = os.environ.get(ENV_VAR)
            if env is not None and env.strip():
                output, from_env = env.strip(), True
        try:
            if isinstance(output, str):
                check_output_text(output, ENV_VAR if from_env else "UsageLogger output")
            self._configure(output)
        except (OSError, ValueError) as exc:
            if not from_env:
                raise
            # A bad COSTLEDGER_LOG must not stop the application from starting.
            report_failure("UsageLogger", exc, output=output)
            self._mode, self._description = "off", "off"

    def _configure(self, output: str | os.PathLike[str] | IO[str] | None) -> None:
        if output is None:
            return
        if isinstance(output, str) and output.strip().lower() in _KEYWORDS:
            keyword = output.strip().lower()
            if keyword in ("off", "none", ""):
                return
            self._description = keyword
            if keyword == "auto":
                self._mode = "auto"
            elif keyword == "structlog":
                self._mode = "structlog"
            else:
                self._use_stream(sys.stdout if keyword == "stdout" else sys.stderr)
            return
        if isinstance(output, (str, os.PathLike)):
            path = os.fspath(output)
            # Line-buffered append: each line reaches the file in one write, so lines
            # from several processes appending to one file do not interleave either.
            stream = open(  # noqa: SIM115  # kept open for the logger's life; close() closes it
                path, "a", encoding="utf-8", errors="backslashreplace", buffering=1
            )
            self._owned_file = stream
            self._use_stream(stream)
            self._description = f"file:{path}"
            return
        if callable(getattr(output, "write", None)):
            self._use_stream(output)
            self._description = f"stream:{output!r}"
            return
        raise TypeError(
            "UsageLogger output must be 'auto', 'off', 'stdout', 'stderr', 'structlog', "
            f"a file path or a text stream, got {output!r}"
        )

    def _use_stream(self, stream: IO[str]) -> None:
        import structlog

        self._bound = structlog.wrap_logger(
            structlog.WriteLogger(cast(TextIO, stream)),  # writes and flushes under a per-file lock
            processors=[
                add_schema_version,
                redact_processor,
                structlog.processors.JSONRenderer(serializer=_serializer()),
            ],
            # Set explicitly so the application's structlog.configure() has no say here.
            wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
            context_class=dict,
            cache_logger_on_first_use=True,
        ).bind()
        self._mode = "json"

    @property
    def output(self) -> str:
        """Where lines go: ``off``, ``auto``, ``structlog``, ``stdout``, ``stderr``, ``file:PATH``.

        For messages and reports; not a value to parse.
        """
        return self._description

    @property
    def enabled(self) -> bool:
        """Whether ``emit`` would write a line now."""
        if self._mode == "auto":
            structlog = sys.modules.get("structlog")
            return structlog is not None and bool(structlog.is_configured())
        return self._mode != "off"

    def emit(self, event: UsageEvent) -> None:
        """Write ``event`` as one line. Never raises."""
        mode = self._mode
        if mode == "off":
            return
        try:
            if mode == "json":
                bound = self._bound
                if bound is not None:  # None once close() has run in another thread
                    record = event_to_record(event)
                    bound.info(record.pop("event"), **record)
                return
            if mode == "auto":
                # An application that never imported structlog has not configured it:
                # no import (about 200 ms) and nothing to do.
                structlog = sys.modules.get("structlog")
                if structlog is None or not structlog.is_configured():
                    return
            self._emit_structlog(event)
        except Exception as exc:
            report_failure("UsageLogger.emit", exc, output=self._description)

    def _emit_structlog(self, event: UsageEvent) -> None:
        app_logger = self._app_logger
        if app_logger is None:
            import structlog

            # A lazy proxy: it follows the application's configuration, even a later one.
            app_logger = self._app_logger = structlog.get_logger(USAGE_LOGGER_NAME)
        # Scrubbed here: the application's chain may have no redaction of its own.
        record = redact(event_to_record(event))
        app_logger.info(record.pop("event"), **record)

    def close(self) -> None:
        """Stop writing; close the file if this logger opened it."""
        with self._lock:
            self._mode = "off"
            self._bound = None
            stream, self._owned_file = self._owned_file, None
        if stream is not None:
            stream.close()

    def __enter__(self) -> UsageLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UsageLogger(output={self._description!r})"


# ------------------------------------------------------------------ failure reporting


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _describe(exc: BaseException) -> str:
    try:
        return redact_text(str(exc))
    except Exception:  # a broken __str__ must not hide the failure itself
        return "<unprintable exception>"


def _context_text(context: Mapping[str, Any]) -> str:
    if not context:
        return ""
    parts = []
    for key, value in redact(dict(context)).items():
        try:
            text = value if isinstance(value, str) else repr(value)
        except Exception:  # one bad value must not cost the whole report
            text = f"<unprintable {type(value).__name__}>"
        parts.append(f"{key}={redact_text(text)}")
    return " [" + ", ".join(parts) + "]"


class FailureReporter:
    """Logs costledger's own failures on a stdlib logger, rate-limited, and never raises.

    One line per ``(where, exception type)`` per ``interval`` seconds; the next
    line that gets through says how many were suppressed in between.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] | None = None,
        max_keys: int = 1024,
    ) -> None:
        self._logger = logger if logger is not None else logging.getLogger("costledger")
        self._interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        # key -> [time of the last line written, repeats suppressed since]
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._warned: OrderedDict[str, None] = OrderedDict()

    def _now(self) -> float:
        # time.monotonic looked up at each call so tests may patch it.
        return self._clock() if self._clock is not None else time.monotonic()

    def report_failure(self, where: str, exc: BaseException, **context: Any) -> bool:
        """Log that tracking failed at ``where``; returns whether a line was written."""
        try:
            type_name = _type_name(exc)
            key = (where, type_name)
            now = self._now()
            with self._lock:
                state = self._failures.get(key)
                if state is not None and now - state[0] < self._interval:
                    state[1] += 1
                    return False
                suppressed = int(state[1]) if state is not None else 0
                self._failures[key] = [now, 0]
                self._failures.move_to_end(key)
                while len(self._failures) > self._max_keys:
                    self._failures.popitem(last=False)
            suffix = (
                f" ({suppressed} similar failure{'s' if suppressed != 1 else ''} suppressed "
                f"in the last {self._interval:g} s)"
                if suppressed
                else ""
            )
            self._logger.warning(
                "costledger: tracking failed in %s: %s: %s%s%s",
                where,
                type_name,
                _describe(exc),
                _context_text(context),
                suffix,
                extra={
                    "costledger_where": where,
                    "costledger_error_type": type_name,
                    "costledger_suppressed": suppressed,
                },
            )
            if self._logger.isEnabledFor(logging.DEBUG):
                # The traceback only on request: its frames may quote values, so it is scrubbed too.
                self._logger.debug(
                    "costledger: traceback of the failure in %s:\n%s",
                    where,
                    redact_text("".join(traceback.format_exception(exc))),
                )
            return True
        except Exception:
            return False

    def warn_once(self, key: str, message: str, **context: Any) -> bool:
        """Log ``message`` the first time ``key`` is seen; returns whether a line was written."""
        try:
            with self._lock:
                if key in self._warned:
                    return False
                self._warned[key] = None
                while len(self._warned) > self._max_keys * 4:
                    self._warned.popitem(last=False)
            self._logger.warning(
                "costledger: %s%s",
                redact_text(message),
                _context_text(context),
                extra={"costledger_warning": key},
            )
            return True
        except Exception:
            return False

    def reset(self) -> None:
        """Forget every key (each failure and warning may log again)."""
        with self._lock:
            self._failures.clear()
            self._warned.clear()


_reporter = FailureReporter()


def report_failure(where: str, exc: BaseException, **context: Any) -> bool:
    """Log a tracking failure on the ``"costledger"`` logger, rate-limited; never raises.

    At most one WARNING per minute per ``(where, exception type)``; the next line
    counts the repeats suppressed meanwhile. The message and ``context`` are
    scrubbed of secrets. Returns whether a line was written.
    """
    return _reporter.report_failure(where, exc, **context)


def warn_once(key: str, message: str, **context: Any) -> bool:
    """Log ``message`` as a WARNING on the ``"costledger"`` logger once per process per ``key``."""
    return _reporter.warn_once(key, message, **context)
