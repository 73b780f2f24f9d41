"""A password inside a URL never reaches a message, a repr, a row or a log line: not when it
holds an unencoded ``@``, ``/``, ``?`` or ``#``, not as ``?password=``, not in free text."""

from __future__ import annotations

import json
import sqlite3
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

import costledger
from costledger import (
    Budget,
    Ledger,
    Tracker,
    Usage,
    UsageError,
    event_from_line,
    guards_from_config,
    track_cost,
)
from costledger._ledger._engine import resolve_url
from costledger._redact import redact_text
from costledger.cli import app

AT_URL = "postgresql://app:Sup3r@Secr3tTail@127.0.0.1:5499/test"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # SQLAlchemy reads password "Sup3r", host "Secr3tTail@127.0.0.1": the driver's
        # "failed to resolve host" quoted the tail in log lines, stats() and refusals
        (AT_URL, "postgresql://app:***@127.0.0.1:5499/test"),
        # ... or host "db", database "Secr3t@127.0.0.1/test"
        ("postgres://app:Sup3r@db/Secr3t@127.0.0.1/test", "postgres://app:***@127.0.0.1/test"),
    ],
)
def test_an_unencoded_at_in_the_password_is_refused_by_ledger_and_sql_guard_store(
    url: str, shown: str
) -> None:
    why = "is not a valid URL: the password holds an '@': percent-encode it as %40"
    with pytest.raises(ValueError) as info:
        Ledger(url)
    assert str(info.value) == f"database url {shown!r} {why}"
    with pytest.raises(ValueError) as info:
        Tracker(Ledger("sqlite://"), guards=[Budget("1 USD", "day")], guard_store=url)
    assert str(info.value) == f"guard_store {shown!r} {why}"


def test_a_percent_encoded_at_and_an_at_in_the_query_are_read() -> None:
    url = resolve_url("postgresql://app:Sup3r%40Secr3tTail@127.0.0.1:5499/test")
    assert (url.password, url.host, url.port) == ("Sup3r@Secr3tTail", "127.0.0.1", 5499)
    url = resolve_url("postgresql://app:pw@db/costs?application_name=me@example")
    assert (url.host, url.database, url.query) == (
        "db",
        "costs",
        {"application_name": "me@example"},
    )


_REDIS_HINT = (
    "is not a valid URL: a character in the password (such as / ? # @ :) must be"
    " percent-encoded (/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A)"
)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:AzKeyS16abc/de+f=@127.0.0.1:6380/0",  # an Azure Cache key is base64
        "redis://:AzKey#S16tail@127.0.0.1:6380/0",
        "redis://:AzKey?S16tail@127.0.0.1:6380/0",
        # the head is a valid port: redis-py read db "S16tail@..." as none and went on
        "redis://:6380/S16tail@127.0.0.1:6380/0",
    ],
)
def test_a_redis_password_with_an_unencoded_character_is_refused_masked(url: str) -> None:
    with pytest.raises(ValueError) as info:
        Tracker(guards=[Budget("1 USD", "day")], guard_store=url)
    assert str(info.value) == f"guard_store 'redis://:***@127.0.0.1:6380/0' {_REDIS_HINT}"
    # redis-py's "Port could not be cast to integer value as 'AzKeyS16abc'" is not chained
    assert info.value.__cause__ is None
    assert "S16" not in "".join(traceback.format_exception(info.value))


def test_a_redis_url_error_is_redis_pys_own_for_the_masked_url() -> None:
    with pytest.raises(ValueError) as info:
        Tracker(guards=[Budget("1 USD", "day")], guard_store="redis://:Pw16@cache:6x79/0")
    assert str(info.value) == (
        "guard_store 'redis://:***@cache:6x79/0' is not a valid URL:"
        " Port could not be cast to integer value as '6x79'"
    )


def test_budget_status_shows_a_bad_redis_url_masked(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(db) as ledger:
        ledger.summary()  # the file and its tables
    config = tmp_path / "guards.toml"
    config.write_text('[[budget]]\nlimit = "1 USD"\nperiod = "day"\n')
    url = "redis://:AzKeyS16abc/de+f=@127.0.0.1:6380/0"
    args = ["budget", "status", "--budgets", str(config), "--db", db, "--guard-store", url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.output == f"error: guard_store 'redis://:***@127.0.0.1:6380/0' {_REDIS_HINT}\n"


def test_an_unsupported_database_url_hides_a_query_password() -> None:
    with pytest.raises(ValueError) as info:
        Ledger("mysql://app@db.internal/costs?password=PgPwS16")
    assert str(info.value) == (
        "database url 'mysql://app@db.internal/costs?password=***':"
        " costledger supports sqlite and postgresql, not 'mysql'"
    )


@pytest.mark.postgres
def test_the_demo_prints_a_query_password_masked(
    fresh_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # a PostgreSQL ledger's spool is under ~
    monkeypatch.delenv("COSTLEDGER_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    shown = f"{fresh_pg_url}?password=***"
    result = CliRunner().invoke(app, ["demo", "--db", f"{fresh_pg_url}?password=PgPwS16"])
    assert result.exit_code == 0, result.output
    assert "PgPwS16" not in result.output
    lines = [line for line in result.output.splitlines() if shown in line]
    tag = lines[0].split("(tag ")[1].split(")")[0]
    assert lines == [
        f"ledger: {shown}, 13 calls, all from this run (tag {tag}); a new run adds its own",
        f"this run again: costledger report --db '{shown}' --by model --tag {tag}",
        f"whole ledger:   costledger report --db '{shown}' --by model",
    ]


def test_guard_config_repr_hides_the_store_password() -> None:
    store = "redis://:RedisPwS16@cache:6379/0?password=QueryPwS16"
    config = guards_from_config(
        {"guard_store": store, "budget": [{"limit": "1 USD", "period": "day"}]}
    )
    assert repr(config) == (
        "GuardConfig(guards=(Budget('1 USD/day', hard=True),),"
        " guard_store='redis://:***@cache:6379/0?password=***')"
    )
    assert config.guard_store == store  # what Tracker(guard_store=...) is given


def test_a_key_across_the_cut_of_a_bad_lines_snippet_is_scrubbed() -> None:
    key = "sk-proj-S16op3nAiKey9x8y7z6w5v4u3t2s1r0q"
    head = '{"schema":"costledger.usage/1","event":"llm.usage","note":"Incorrect API key:'
    line = head + "x" * (120 - len(head) - 13) + " " + key + '"'
    with pytest.raises(UsageError) as info:
        event_from_line(line)
    assert info.value.value == line.replace(key, "[REDACTED]")
    assert str(info.value).endswith(repr(line.replace(key, "[REDACTED]")))


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("postgresql://app:PgPw16@db/x", "postgresql://app:[REDACTED]@db/x"),
        ("redis://:RedisPw16@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        (
            "GET https://user:pw16@host/path?mail=a@b.example failed",
            "GET https://user:[REDACTED]@host/path?mail=a@b.example failed",
        ),
        (
            "connect postgresql://app:Sup3r@Secr3tTail@127.0.0.1:5499/test: refused",
            "connect postgresql://app:[REDACTED]@127.0.0.1:5499/test: refused",
        ),
        ("dsn='redis://:Az/b+c=@cache:6380/0'", "dsn='redis://:[REDACTED]@cache:6380/0'"),
        # no password: kept
        ("https://registry.npmjs.org:443/@scope/pkg", "https://registry.npmjs.org:443/@scope/pkg"),
        ("ssh://git@github.com:22/org/repo", "ssh://git@github.com:22/org/repo"),
        ('{"a":"https://h:8080","b":"c@d"}', '{"a":"https://h:8080","b":"c@d"}'),
        # a trace id is 32 hex: not a secret
        ("trace 4bf92f3577b34da6a3ce929d0e0e4736", "trace 4bf92f3577b34da6a3ce929d0e0e4736"),
    ],
)
def test_free_text_scrubbing_masks_a_url_password(text: str, scrubbed: str) -> None:
    assert redact_text(text) == scrubbed
    assert costledger.redact({"note": text}) == {"note": scrubbed}


def test_a_dsn_in_metadata_and_tags_reaches_row_and_log_line_masked(tmp_path: Path) -> None:
    db, log = tmp_path / "ledger.db", tmp_path / "usage.jsonl"
    tracker = Tracker(Ledger(f"sqlite:///{db}"), log=str(log))
    tracker.record(
        "gpt-4o-mini",
        Usage(input_tokens=1, output_tokens=1),
        metadata={"dsn": "postgresql://app:PgPw16@db/x"},
        attribution={"tags": ["redis://:RedisPw16@cache:6379/0"]},
    )
    tracker.ledger.close()
    with sqlite3.connect(db) as conn:
        row = conn.execute("select tags, metadata from costledger_events").fetchone()
    assert row == (
        '["redis://:[REDACTED]@cache:6379/0"]',
        '{"dsn":"postgresql://app:[REDACTED]@db/x"}',
    )
    (line,) = log.read_text().splitlines()
    record = json.loads(line)
    assert record["costledger.tags"] == ["redis://:[REDACTED]@cache:6379/0"]
    assert record["costledger.metadata"] == {"dsn": "postgresql://app:[REDACTED]@db/x"}


def test_a_url_shown_masks_a_password_cut_by_an_unencoded_slash() -> None:
    with pytest.raises(TypeError) as info:
        track_cost(tracker="postgresql://app:Az/b+c=@db/costs")
    assert str(info.value) == (
        "track_cost() tracker must be a costledger Tracker or None, got str"
        " 'postgresql://app:***@db/costs' (for a ledger URL: tracker=Tracker(Ledger(url)))"
    )
