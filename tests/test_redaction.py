"""Secrets never reach a log line: the redactor, its structlog processor, and every output.

Keys are planted in metadata, attribution, error types and exception messages, and each
output (file, stdout, an application's structlog chain, the failure log) is searched for them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
import structlog

from costledger import Cost, Usage, UsageEvent
from costledger._logging import FailureReporter, UsageLogger
from costledger._redact import REDACTED, is_secret_key, redact, redact_processor, redact_text
from costledger._schema import event_from_line

OPENAI_KEY = "sk-proj-" + "Q7fK2mZp9XvB4nL1cR8tY3wE6uH0jDsA5gT2kV9b"  # sk-proj- + 40
OPENAI_LEGACY_KEY = "sk-" + "T3BlbkFJ9aZk2LmQ8xWc4vRt7YpN1sDe5GhUo"
ANTHROPIC_KEY = "sk-ant-api03-" + "hX9_kP2-mQ7vL4nR8tZ1wC6yB3dF5gJ0sA" * 3 + "-AAAA"
GOOGLE_KEY = "AIza" + "SyD4k9Xz2LmQ8wRt7YpN1sDe5GhUoKv3bC0"  # AIza + 35
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPL3"
BEARER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dQw4w9WgXcQ-sig_x"
HF_TOKEN = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
PASSWORD = "hunter2-correct-horse"
SECRETS = (OPENAI_KEY, OPENAI_LEGACY_KEY, ANTHROPIC_KEY, GOOGLE_KEY, AWS_KEY_ID, BEARER_TOKEN)
ALL_SECRETS = (*SECRETS, HF_TOKEN, PASSWORD)


def _assert_clean(text: str) -> None:
    for secret in ALL_SECRETS:
        assert secret not in text
    # Not even a long fragment survives.
    for secret in SECRETS:
        assert secret[8:28] not in text


# ------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"call failed with key {OPENAI_KEY} (retry)", "call failed with key [REDACTED] (retry)"),
        (f"old key {OPENAI_LEGACY_KEY}", "old key [REDACTED]"),
        (f"{ANTHROPIC_KEY} rejected", "[REDACTED] rejected"),
        (f"maps?key={GOOGLE_KEY}&q=1", "maps?key=[REDACTED]&q=1"),
        (f"google {GOOGLE_KEY}.", "google [REDACTED]."),
        (f"aws id {AWS_KEY_ID} in us-east-1", "aws id [REDACTED] in us-east-1"),
        (f"Authorization: Bearer {BEARER_TOKEN}", "Authorization: [REDACTED]"),
        (f"sent bearer {BEARER_TOKEN} to api", "sent bearer [REDACTED] to api"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==; next", "authorization=[REDACTED]; next"),
        (f'-H "x-api-key: {ANTHROPIC_KEY}"', '-H "x-api-key: [REDACTED]"'),
        ("https://h/v1?api_key=abc123&b=2", "https://h/v1?api_key=[REDACTED]&b=2"),
        (f"password: {PASSWORD} end", "password: [REDACTED] end"),
        ('{"client_secret": "s3cr3t", "n": 1}', '{"client_secret": "[REDACTED]", "n": 1}'),
        ("token=abc.def", "token=[REDACTED]"),
        ("url=https://h/v1?api_key=abc123&b=2", "url=https://h/v1?api_key=[REDACTED]&b=2"),
        ("{'api_key': 'abc', 'model': 'gpt'}", "{'api_key': '[REDACTED]', 'model': 'gpt'}"),
        (
            "user=bob password=x accessToken=y",
            "user=bob password=[REDACTED] accessToken=[REDACTED]",
        ),
        (f"run-{OPENAI_KEY}", "run-[REDACTED]"),
        ("cache_key=0f3a9c2e8b7d6a5f4e3d2c1b", "cache_key=[REDACTED]"),
        (f"hf {HF_TOKEN}", "hf [REDACTED]"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----\nafter",
            "[REDACTED]\nafter",
        ),
    ],
)
def test_secret_shapes_are_replaced_and_the_rest_is_kept(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "gpt-4o-mini-2024-07-18",
        "claude-sonnet-4-5",
        "max_tokens=100 input_tokens: 5 tokens=7",
        "task-runner-with-a-very-long-descriptive-name",
        "author: Jane, keyboard: azerty, monkey business",
        "Asia/Tokyo",
        "0190c2a0-0000-7000-8000-000000000001",
        "2025-03-04T05:06:07.890123Z",
        "cache_key=short",
        "primary_key=a_long_plain_words_value_here",
        "the secret of success",
    ],
)
def test_ordinary_text_is_returned_unchanged(text: str) -> None:
    assert redact_text(text) is text or redact_text(text) == text
    assert redact_text(text) == text


def test_clean_text_comes_back_as_the_same_object() -> None:
    text = "".join(["gpt-4o", "-mini"])  # a fresh object, not an interned literal
    assert redact_text(text) is text
    assert redact_text(text) is text  # second time from the clean cache


def test_a_secret_is_never_cached_as_clean() -> None:
    text = f"key {OPENAI_KEY}"
    assert redact_text(text) == "key [REDACTED]"
    assert redact_text(text) == "key [REDACTED]"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("apiKey", True),
        ("openaiApiKey", True),
        ("OPENAI_API_KEY", True),
        ("x-api-key", True),
        ("X-Api-Key", True),
        ("Authorization", True),
        ("proxy-authorization", True),
        ("password", True),
        ("db_password", True),
        ("secret", True),
        ("client_secret", True),
        ("aws_secret_access_key", True),
        ("token", True),
        ("access_token", True),
        ("refreshToken", True),
        ("cookie", True),
        ("credentials", True),
        ("private_key", True),
        ("gen_ai.usage.input_tokens", False),
        ("max_tokens", False),
        ("tokens", False),
        ("token_count", False),
        ("tokenizer", False),
        ("secretary", False),
        ("session_id", False),
        ("aws_access_key_id", False),
        ("key", False),
        ("user", False),
        ("costledger.metadata", False),
        (3, False),
    ],
)
def test_secret_key_names(key: Any, secret: bool) -> None:
    assert is_secret_key(key) is secret


# ---------------------------------------------------------------------- structures


def test_nested_values_are_scrubbed_and_types_kept() -> None:
    value = {
        "Authorization": f"Bearer {BEARER_TOKEN}",
        "headers": {"x-api-key": ANTHROPIC_KEY, "accept": "application/json"},
        "api_key": None,  # nothing to hide: stays None
        "token": 12345,  # secret-named: replaced whatever the value is
        "password": {"nested": "anything"},
        "notes": [f"used {OPENAI_KEY}", "fine", (GOOGLE_KEY, 3)],
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "price": Decimal("0.10"),
        7: "int key kept",
        OPENAI_KEY: "a key used as a key",
    }
    out = redact(value)
    assert out == {
        "Authorization": REDACTED,
        "headers": {"x-api-key": REDACTED, "accept": "application/json"},
        "api_key": None,
        "token": REDACTED,
        "password": REDACTED,
        "notes": ["used [REDACTED]", "fine", (REDACTED, 3)],
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "price": Decimal("0.10"),
        7: "int key kept",
        REDACTED: "a key used as a key",
    }
    assert type(out["notes"][2]) is tuple
    # The input is not modified.
    assert value["token"] == 12345
    assert value["headers"]["x-api-key"] == ANTHROPIC_KEY  # type: ignore[index]  # a dict literal


def test_clean_structures_come_back_as_the_same_objects() -> None:
    value = {"model": "gpt-4o", "tags": ["a", "b"], "nested": {"n": 1, "t": ("x",)}}
    assert redact(value) is value
    items = ["a", 1, None]
    assert redact(items) is items


def test_deep_and_cyclic_structures_do_not_recurse_forever() -> None:
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    out = redact(cyclic)
    depth = 0
    node = out
    while isinstance(node, dict):
        node = node["self"]
        depth += 1
    assert node == "[REDACTED: nested too deeply]"
    assert depth <= 40


def test_str_subclasses_are_scrubbed() -> None:
    class Label(str, Enum):
        KEY = f"key {OPENAI_KEY}"

    assert redact([Label.KEY]) == ["key [REDACTED]"]


# ------------------------------------------------------------------ structlog processor


@pytest.fixture
def app_structlog() -> Iterator[io.StringIO]:
    """An application's own structlog setup; restored after the test."""
    out = io.StringIO()
    structlog.configure(
        processors=[redact_processor, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    yield out
    structlog.reset_defaults()


def test_redact_processor_in_an_application_chain(app_structlog: io.StringIO) -> None:
    log = structlog.get_logger("app")
    log.info(
        f"calling with {OPENAI_KEY}",
        api_key=ANTHROPIC_KEY,
        headers={"Authorization": f"Bearer {BEARER_TOKEN}"},
        detail=f"aws {AWS_KEY_ID} google {GOOGLE_KEY}",
        model="gpt-4o",
    )
    text = app_structlog.getvalue()
    _assert_clean(text)
    assert '"model": "gpt-4o"' in text
    assert '"api_key": "[REDACTED]"' in text
    assert '"event": "calling with [REDACTED]"' in text


# ------------------------------------------------------------------ every output, end to end


def _event_with_planted_secrets() -> UsageEvent:
    return UsageEvent(
        model="gpt-4o",
        usage=Usage(input_tokens=100, output_tokens=20),
        cost=Cost(status="priced", total=Decimal("0.00045"), currency="USD"),
        provider="openai",
        status="error",
        error_type=f"AuthenticationError: Incorrect API key provided: {OPENAI_KEY}",
        user=f"alice {OPENAI_LEGACY_KEY}",
        team=f"team Bearer {BEARER_TOKEN}",
        feature=f"feature {GOOGLE_KEY}",
        tags=("prod", f"key={HF_TOKEN}"),
        metadata={
            "api_key": ANTHROPIC_KEY,
            "headers": {"Authorization": f"Bearer {BEARER_TOKEN}", "x-api-key": OPENAI_KEY},
            "note": f"aws {AWS_KEY_ID}",
            "db": {"password": PASSWORD},
            "request": [f"curl -H 'Authorization: Bearer {BEARER_TOKEN}'"],
        },
    )


def test_file_output_never_holds_a_secret(tmp_path: Any) -> None:
    path = tmp_path / "usage.jsonl"
    with UsageLogger(path) as log:
        log.emit(_event_with_planted_secrets())
    text = path.read_text(encoding="utf-8")
    _assert_clean(text)
    assert text.count(REDACTED) >= 9
    # The line is still a valid usage record; only the secrets changed.
    event = event_from_line(text)
    assert event.user == "alice [REDACTED]"
    assert event.metadata["headers"] == {"Authorization": REDACTED, "x-api-key": REDACTED}
    assert event.cost.total == Decimal("0.00045")


def test_stdout_and_stderr_outputs_never_hold_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    UsageLogger("stdout").emit(_event_with_planted_secrets())
    UsageLogger("stderr").emit(_event_with_planted_secrets())
    captured = capsys.readouterr()
    assert '"llm.usage"' in captured.out
    assert '"llm.usage"' in captured.err
    _assert_clean(captured.out)
    _assert_clean(captured.err)


def test_application_structlog_output_never_holds_a_secret() -> None:
    out = io.StringIO()
    # The application's chain has NO redaction of its own: costledger scrubs before handing over.
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    try:
        UsageLogger("structlog").emit(_event_with_planted_secrets())
        with structlog.testing.capture_logs() as captured:
            UsageLogger("auto").emit(_event_with_planted_secrets())
    finally:
        structlog.reset_defaults()
    _assert_clean(out.getvalue())
    assert '"llm.usage"' in out.getvalue()
    assert len(captured) == 1
    _assert_clean(repr(captured))


def test_failure_log_never_holds_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    reporter = FailureReporter(logging.getLogger("costledger.test.redaction"))
    caplog.set_level(logging.DEBUG, logger="costledger.test.redaction")
    with pytest.raises(PermissionError) as info:
        raise PermissionError(f"401 for key {OPENAI_KEY}; Authorization: Bearer {BEARER_TOKEN}")
    assert reporter.report_failure(
        "ledger.write", info.value, api_key=ANTHROPIC_KEY, url=f"https://h/?key={GOOGLE_KEY}"
    )
    reporter.warn_once("w", f"price missing for {AWS_KEY_ID}", header=f"Bearer {BEARER_TOKEN}")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "ledger.write" in text
    assert "PermissionError" in text
    assert "traceback" in text  # DEBUG on: the traceback is logged, scrubbed as well
    _assert_clean(text)
    _assert_clean(caplog.text)
