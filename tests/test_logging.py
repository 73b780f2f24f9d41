"""UsageLogger outputs (file, stdout, stderr, stream, off, auto, structlog); the failure logger."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from costledger import Cost, Usage, UsageEvent
from costledger import _logging as costledger_logging
from costledger._logging import ENV_VAR, FailureReporter, UsageLogger, report_failure, warn_once
from costledger._schema import event_from_line, event_to_record


def _event(n: int = 0, **changes: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "id": f"event-{n}",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "usage": Usage(input_tokens=1200 + n, output_tokens=300, cache_read_tokens=1024),
        "cost": Cost(
            status="priced",
            total=Decimal("0.0003486000"),
            input=Decimal("0.0000264"),
            cache_read=Decimal("0.0000768"),
            cache_write=Decimal("0"),
            output=Decimal("0.000180"),
            audio=Decimal("0"),
            provider="openai",
            model="gpt-4o-mini",
            source="genai-prices",
        ),
        "timestamp": datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
        "user": "alice",
        "tags": ("prod",),
        "metadata": {"tenant": "acme", "n": n},
        "latency_ms": 812.25,
    }
    fields.update(changes)
    return UsageEvent(**fields)


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No COSTLEDGER_LOG from the environment, structlog unconfigured, failure state fresh."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    structlog.reset_defaults()
    costledger_logging._reporter.reset()
    yield
    structlog.reset_defaults()
    costledger_logging._reporter.reset()


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


# ---------------------------------------------------------------------------- file


def test_file_output_appends_one_exact_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_text('{"app": "an earlier line"}\n', encoding="utf-8")
    with UsageLogger(path) as log:
        assert log.output == f"file:{path}"
        assert log.enabled
        log.emit(_event(1))
        log.emit(_event(2))
    with UsageLogger(str(path)) as log:
        log.emit(_event(3))
    lines = _lines(path.read_text(encoding="utf-8"))
    assert len(lines) == 4
    assert lines[0] == '{"app": "an earlier line"}'
    assert [event_from_line(line) for line in lines[1:]] == [_event(1), _event(2), _event(3)]
    record = json.loads(lines[1])
    # Money as decimal strings, digit for digit (trailing zeros kept).
    assert record["costledger.cost.total"] == "0.0003486000"
    assert record["costledger.cost.output"] == "0.000180"
    assert record["event"] == "llm.usage"
    assert record["schema"] == "costledger.usage/1"
    assert record["gen_ai.usage.input_tokens"] == 1201
    assert record["gen_ai.usage.cache_read.input_tokens"] == 1024
    assert set(record) == set(event_to_record(_event(1)))


def test_file_lines_are_flushed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    log = UsageLogger(path)
    log.emit(_event())
    # Read before close(): the line is already in the file.
    assert event_from_line(path.read_text(encoding="utf-8")) == _event()
    log.close()


def test_many_threads_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    log = UsageLogger(path)
    threads_n, per_thread = 8, 250
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            log.emit(_event(t * per_thread + i, id=f"event-{t}-{i}"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    lines = _lines(path.read_text(encoding="utf-8"))
    assert len(lines) == threads_n * per_thread
    ids = {event_from_line(line).id for line in lines}
    assert ids == {f"event-{t}-{i}" for t in range(threads_n) for i in range(per_thread)}


def test_close_stops_writing(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    log = UsageLogger(path)
    log.emit(_event(1))
    log.close()
    log.emit(_event(2))
    assert not log.enabled
    assert len(_lines(path.read_text(encoding="utf-8"))) == 1


def test_explicit_bad_path_raises_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        UsageLogger(tmp_path / "missing-dir" / "usage.jsonl")


# -------------------------------------------------------------------- streams and off


def test_stdout_output(capsys: pytest.CaptureFixture[str]) -> None:
    log = UsageLogger("stdout")
    log.emit(_event())
    captured = capsys.readouterr()
    assert captured.err == ""
    assert [event_from_line(line) for line in _lines(captured.out)] == [_event()]


def test_stderr_output(capsys: pytest.CaptureFixture[str]) -> None:
    log = UsageLogger("STDERR")
    assert log.output == "stderr"
    log.emit(_event())
    captured = capsys.readouterr()
    assert captured.out == ""
    assert [event_from_line(line) for line in _lines(captured.err)] == [_event()]


def test_text_stream_output() -> None:
    out = io.StringIO()
    UsageLogger(out).emit(_event(5))
    assert event_from_line(out.getvalue()) == _event(5)


@pytest.mark.parametrize("output", ["off", "OFF", "none", None])
def test_off_emits_nothing(output: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    log = UsageLogger(output)
    assert log.output == "off"
    assert not log.enabled
    log.emit(_event())
    assert capsys.readouterr() == ("", "")


def test_bad_output_type_is_refused() -> None:
    with pytest.raises(TypeError, match="UsageLogger output"):
        UsageLogger(42)  # type: ignore[arg-type]  # the wrong type is the test


# ---------------------------------------------------------------------------- auto


def test_auto_without_structlog_config_or_env_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    log = UsageLogger()
    assert log.output == "auto"
    assert not log.enabled
    with structlog.testing.capture_logs() as captured:
        pass  # capture_logs configures structlog; leave it again before emitting
    structlog.reset_defaults()
    log.emit(_event())
    assert captured == []
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("value", ["stdout", "stderr"])
def test_env_var_chooses_the_output(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    log = UsageLogger()
    assert log.output == value
    log.emit(_event())
    captured = capsys.readouterr()
    stream = captured.out if value == "stdout" else captured.err
    assert event_from_line(stream) == _event()


def test_env_var_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "from-env.jsonl"
    monkeypatch.setenv(ENV_VAR, str(path))
    with UsageLogger("auto") as log:
        log.emit(_event())
    assert event_from_line(path.read_text(encoding="utf-8")) == _event()


def test_env_var_off_wins_over_a_configured_structlog(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VAR, "off")
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    log = UsageLogger()
    log.emit(_event())
    assert log.output == "off"
    assert capsys.readouterr() == ("", "")


def test_explicit_output_wins_over_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VAR, "stdout")
    out = io.StringIO()
    UsageLogger(out).emit(_event())
    assert capsys.readouterr() == ("", "")
    assert event_from_line(out.getvalue()) == _event()


def test_bad_env_path_does_not_break_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "no-such-dir" / "usage.jsonl"))
    with caplog.at_level(logging.WARNING, logger="costledger"):
        log = UsageLogger()
    assert log.output == "off"
    log.emit(_event())
    assert len(caplog.records) == 1
    assert "FileNotFoundError" in caplog.records[0].getMessage()
    assert "no-such-dir" in caplog.records[0].getMessage()


# ------------------------------------------------------------------------ structlog


def test_structlog_output_goes_through_the_application_chain() -> None:
    out = io.StringIO()

    def add_service(logger: Any, method: str, event_dict: Any) -> Any:
        event_dict["service"] = "checkout"
        return event_dict

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            add_service,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    UsageLogger("structlog").emit(_event(7))
    line = out.getvalue()
    record = json.loads(line)
    # The application's processors ran: its own keys are there, next to ours.
    assert record["service"] == "checkout"
    assert record["level"] == "info"
    assert record["event"] == "llm.usage"
    assert record["costledger.cost.total"] == "0.0003486000"
    # And the line reads back to the same event (the extra keys are ignored).
    assert event_from_line(line) == _event(7)


def test_structlog_capture_logs_sees_the_record() -> None:
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    with structlog.testing.capture_logs() as captured:
        UsageLogger("structlog").emit(_event(1))
    assert len(captured) == 1
    entry = captured[0]
    assert entry["event"] == "llm.usage"
    assert entry["log_level"] == "info"
    assert entry["schema"] == "costledger.usage/1"
    assert entry["gen_ai.request.model"] == "gpt-4o-mini"
    assert entry["gen_ai.usage.input_tokens"] == 1201
    assert entry["costledger.cost.total"] == "0.0003486000"
    assert entry["costledger.metadata"] == {"tenant": "acme", "n": 1}


def test_auto_follows_structlog_configured_after_the_logger_was_made() -> None:
    log = UsageLogger()  # application has not configured structlog yet
    assert not log.enabled
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    assert log.enabled
    with structlog.testing.capture_logs() as captured:
        log.emit(_event(2))
    assert [entry["gen_ai.usage.input_tokens"] for entry in captured] == [1202]


def test_structlog_level_filter_of_the_application_is_respected() -> None:
    out = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
    UsageLogger("structlog").emit(_event())
    assert out.getvalue() == ""


def test_our_json_outputs_never_touch_the_application_structlog_config(tmp_path: Path) -> None:
    out = io.StringIO()
    processors = [structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.PrintLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=False,
    )
    before = dict(structlog.get_config())
    before_processors = list(before["processors"])
    path = tmp_path / "usage.jsonl"
    with UsageLogger(path) as log:
        log.emit(_event())
    assert structlog.get_config() == before
    assert list(structlog.get_config()["processors"]) == before_processors
    # Our file got the line despite the application's ERROR-level filter ...
    assert event_from_line(path.read_text(encoding="utf-8")) == _event()
    # ... and the application's own output got nothing from us.
    assert out.getvalue() == ""


def test_json_outputs_leave_structlog_unconfigured(capsys: pytest.CaptureFixture[str]) -> None:
    UsageLogger("stdout").emit(_event())
    assert not structlog.is_configured()
    assert '"llm.usage"' in capsys.readouterr().out


# ----------------------------------------------------------------- emit never raises


class _BrokenStream:
    """A stream whose disk is full."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass


def test_emit_never_raises_and_reports_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    log = UsageLogger(_BrokenStream())  # type: ignore[arg-type]  # a duck-typed stream
    with caplog.at_level(logging.WARNING, logger="costledger"):
        for _ in range(5):
            log.emit(_event())
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "UsageLogger.emit" in message
    assert "OSError" in message
    assert "No space left on device" in message


# ------------------------------------------------------------------- report_failure


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LedgerDown(Exception):
    pass


@pytest.fixture
def reporter_and_records() -> Iterator[tuple[FailureReporter, _Clock, list[logging.LogRecord]]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("costledger.test.failures")
    logger.setLevel(logging.INFO)
    handler = Keep()
    logger.addHandler(handler)
    clock = _Clock()
    yield FailureReporter(logger, clock=clock), clock, records
    logger.removeHandler(handler)


def test_report_failure_is_rate_limited_per_place_and_type(
    reporter_and_records: tuple[FailureReporter, _Clock, list[logging.LogRecord]],
) -> None:
    reporter, clock, records = reporter_and_records
    assert reporter.report_failure("ledger.write", LedgerDown("db gone"), table="usage_events")
    for _ in range(4):
        clock.now += 10
        assert not reporter.report_failure("ledger.write", LedgerDown("db gone"))
    # Another place, another type: their own budgets.
    assert reporter.report_failure("pricer.price", LedgerDown("x"))
    assert reporter.report_failure("ledger.write", ValueError("bad row"))
    assert len(records) == 3
    first = records[0]
    assert first.levelno == logging.WARNING
    assert first.getMessage() == (
        f"costledger: tracking failed in ledger.write: {__name__}.LedgerDown: db gone "
        "[table=usage_events]"
    )
    assert records[2].getMessage() == (
        "costledger: tracking failed in ledger.write: ValueError: bad row"
    )
    # 59.9 s after the first line: still quiet.
    clock.now = 1000.0 + 59.9
    assert not reporter.report_failure("ledger.write", LedgerDown("db gone"))
    # 60 s after: one line, counting the five repeats it held back.
    clock.now = 1000.0 + 60.0
    assert reporter.report_failure("ledger.write", LedgerDown("db gone again"))
    assert records[-1].getMessage() == (
        f"costledger: tracking failed in ledger.write: {__name__}.LedgerDown: "
        "db gone again (5 similar failures suppressed in the last 60 s)"
    )
    assert records[-1].costledger_suppressed == 5  # type: ignore[attr-defined]  # from extra=
    # The count starts again from zero.
    clock.now += 61
    assert reporter.report_failure("ledger.write", LedgerDown("and again"))
    assert "suppressed" not in records[-1].getMessage()
    clock.now += 1
    assert not reporter.report_failure("ledger.write", LedgerDown("quiet"))
    clock.now += 60
    assert reporter.report_failure("ledger.write", LedgerDown("loud"))
    assert records[-1].getMessage().endswith("(1 similar failure suppressed in the last 60 s)")


def test_module_report_failure_uses_monotonic_time(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [5000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="costledger"):
        assert report_failure("http.transport", ConnectionError("refused"))
        assert not report_failure("http.transport", ConnectionError("refused"))
        now[0] += 60
        assert report_failure("http.transport", ConnectionError("refused"))
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "costledger: tracking failed in http.transport: ConnectionError: refused",
        "costledger: tracking failed in http.transport: ConnectionError: refused "
        "(1 similar failure suppressed in the last 60 s)",
    ]
    assert all(record.name == "costledger" for record in caplog.records)


def test_report_failure_never_raises(
    reporter_and_records: tuple[FailureReporter, _Clock, list[logging.LogRecord]],
) -> None:
    reporter, _, records = reporter_and_records

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert reporter.report_failure("x", Unprintable(), value=BadRepr())
    message = records[-1].getMessage()
    assert "<unprintable exception>" in message
    assert "value=<unprintable BadRepr>" in message

    def broken_clock() -> float:
        raise RuntimeError("clock broke")

    assert FailureReporter(clock=broken_clock).report_failure("y", ValueError("v")) is False


def test_report_failure_logs_a_traceback_only_at_debug(
    reporter_and_records: tuple[FailureReporter, _Clock, list[logging.LogRecord]],
) -> None:
    reporter, clock, records = reporter_and_records
    with pytest.raises(KeyError) as info:
        {}["missing"]  # raise a real exception with a traceback
    reporter.report_failure("a", info.value)
    assert [r.levelno for r in records] == [logging.WARNING]
    logging.getLogger("costledger.test.failures").setLevel(logging.DEBUG)
    clock.now += 60
    reporter.report_failure("a", info.value)
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING, logging.DEBUG]
    assert "Traceback (most recent call last)" in records[-1].getMessage()
    assert "KeyError: 'missing'" in records[-1].getMessage()


def test_warn_once(
    reporter_and_records: tuple[FailureReporter, _Clock, list[logging.LogRecord]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter, _, records = reporter_and_records
    assert reporter.warn_once("unknown_model:gpt-9", "no price for model 'gpt-9'", model="gpt-9")
    assert not reporter.warn_once("unknown_model:gpt-9", "no price for model 'gpt-9'")
    assert reporter.warn_once("unknown_model:gpt-10", "no price for model 'gpt-10'")
    assert [r.getMessage() for r in records] == [
        "costledger: no price for model 'gpt-9' [model=gpt-9]",
        "costledger: no price for model 'gpt-10'",
    ]
    with caplog.at_level(logging.WARNING, logger="costledger"):
        assert warn_once("k", "said once")
        assert not warn_once("k", "said once")
    ours = [r.getMessage() for r in caplog.records if r.name == "costledger"]
    assert ours == ["costledger: said once"]
