"""CLI polish: ``--version``, help rendered as written, the demo's re-runs and ledger, the
unknown-model warning's wording and its "did you mean"."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costledger.cli import app


def _run(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", **env})


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


# -- --version -------------------------------------------------------------------------


def test_version_prints_the_installed_version() -> None:
    result = _run("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"costledger {importlib.metadata.version('costledger')}\n"


# -- help ------------------------------------------------------------------------------


def test_help_paragraphs_flow_instead_of_keeping_the_docstring_line_breaks() -> None:
    result = _run("ingest", "--help")
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    start = lines.index(
        "Idempotent: an event already in the ledger is not added again. Resumable: a"
    )
    assert lines[start : start + 4] == [
        "Idempotent: an event already in the ledger is not added again. Resumable: a",
        "run continues after the last batch an earlier run committed. Bad lines go to",
        "the rejects file with their line number and reason; they never stop the run.",
        "Exits 0 when done, 1 when nothing could be read or every line was rejected.",
    ]


def test_the_commands_list_does_not_break_a_sentence() -> None:
    result = _run("--help")
    assert result.exit_code == 0, result.output
    dashboard = next(i for i, line in enumerate(result.stdout.splitlines()) if "dashboard" in line)
    text = " ".join(
        line.strip("│ ").removeprefix("dashboard").strip()
        for line in result.stdout.splitlines()[dashboard : dashboard + 3]
    )
    assert text.startswith(
        "Write the dashboard (cost per day by model, by user and feature, tokens by kind, "
        "the most expensive calls, budget burn-down, unpriced calls) to one HTML file."
    )
    # No line of the list ends before its text reaches the panel's width.
    assert (
        "│            tokens by kind, the                                               │"
        not in (result.stdout)
    )


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (("ingest",), "Usage: costledger ingest [OPTIONS] FILE..."),
        (("prices", "show"), "Usage: costledger prices show [OPTIONS] MODEL"),
        (("prices", "diff"), "Usage: costledger prices diff [OPTIONS] PRICE_BOOK"),
        (("top",), "Usage: costledger top [OPTIONS] [N]"),
    ],
)
def test_usage_lines_name_arguments_plainly(command: tuple[str, ...], usage: str) -> None:
    result = _run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert usage in _lines(result.stdout)


def test_a_missing_argument_is_named_as_in_the_usage_line() -> None:
    result = _run("prices", "show")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: Missing argument 'MODEL'. (see 'costledger prices show --help')\n"
    )


def test_no_help_shows_a_type_for_a_flag() -> None:
    import click
    import typer

    def walk(command: click.Command, path: tuple[str, ...]) -> Any:
        yield path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))

    for path in walk(typer.main.get_command(app), ()):
        result = _run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.stdout, path
    ingest = _lines(_run("ingest", "--help").stdout)
    restart = next(line for line in ingest if line.startswith("│ --restart "))
    assert restart.split()[:4] == ["│", "--restart", "Read", "from"]
    root = _lines(_run("--help").stdout)
    assert (
        "│ --help             Show this message and exit.                               │" in root
    )


# -- the demo --------------------------------------------------------------------------


def _tag(output: str) -> str:
    found = re.search(r"\(tag (demo-run-[0-9a-f]{8})\)", output)
    assert found is not None, output
    return found.group(1)


def _table_row(output: str, model: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(model + " "))


def test_demo_reports_this_run_and_says_what_the_ledger_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COSTLEDGER_DATABASE_URL", raising=False)
    first = _run("demo")
    assert first.exit_code == 0, first.output
    tag = _tag(first.stdout)
    out = _lines(first.stdout)
    assert "total: 0.0250086 USD  (1 unpriced call)" in out
    assert (
        f"ledger: {tmp_path / 'costledger.db'}, 13 calls, all from this run (tag {tag}); "
        "a new run adds its own"
    ) in out
    assert (
        f"this run again: costledger report --db sqlite:///costledger.db --by model --tag {tag}"
        in out
    )
    assert "whole ledger:   costledger report --db sqlite:///costledger.db --by model" in out
    # The cache-write column: the Claude call wrote 500 tokens to the cache.
    assert _table_row(first.stdout, "claude-sonnet-4-20250514") == [
        "claude-sonnet-4-20250514", "1", "5000", "4000", "500", "800", "0.016575"
    ]  # fmt: skip
    assert out[2].split() == ["model", "calls", "input", "cached", "write", "output", "(USD)"]

    second = _run("demo")
    assert second.exit_code == 0, second.output
    tag2 = _tag(second.stdout)
    assert tag2 != tag
    assert "total: 0.0250086 USD  (1 unpriced call)" in _lines(second.stdout)
    assert (
        f"ledger: {tmp_path / 'costledger.db'} keeps every run: 13 calls from this run "
        f"(tag {tag2}), 13 from earlier runs"
    ) in _lines(second.stdout)
    # The printed command gives this run's numbers again.
    again = _run("report", "--db", "sqlite:///costledger.db", "--tag", tag2, "-f", "json")
    assert again.exit_code == 0, again.output
    assert [row["cost"] for row in json.loads(again.stdout)] == ["0.0250086"]


def test_demo_waits_for_this_runs_own_litellm_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second run's report waits for its own LiteLLM calls, however late they land
    (the first run's calls used to satisfy the wait)."""
    from costledger_litellm import _logger

    url = f"sqlite:///{tmp_path}/demo.db"
    assert _run("demo", "--db", url).exit_code == 0
    original = _logger.CostLedgerLogger.log_success_event

    def late(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_logger.CostLedgerLogger, "log_success_event", late)
    second = _run("demo", "--db", url)
    assert second.exit_code == 0, second.output
    assert "total: 0.0250086 USD  (1 unpriced call)" in _lines(second.stdout)
    assert _table_row(second.stdout, "gpt-4o-mini")[:2] == ["gpt-4o-mini", "5"]


def test_demo_rows_from_langchain_name_a_real_provider(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    assert _run("demo", "--db", url).exit_code == 0
    top = _run("report", "--db", url, "--by", "source,provider", "-f", "json")
    assert top.exit_code == 0, top.output
    providers = {row["provider"] for row in json.loads(top.stdout) if row["source"] == "langchain"}
    assert providers == {"openai"}


def test_demo_keeps_out_of_the_ledger_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    prod = f"sqlite:///{tmp_path}/prod.db"
    result = _run("demo", COSTLEDGER_DATABASE_URL=prod)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "prod.db").exists()
    assert (tmp_path / "costledger.db").exists()
    out = _lines(result.stdout)
    assert (
        "note: the demo does not write to $COSTLEDGER_DATABASE_URL; "
        "the commands below read its ledger with --db"
    ) in out
    command = "costledger report --db sqlite:///costledger.db --by model"
    assert f"whole ledger:   {command}" in out
    follow = _run(*command.split()[1:], COSTLEDGER_DATABASE_URL=prod)
    assert follow.exit_code == 0, follow.output


def test_demo_warns_about_its_unpriced_model_without_a_provider_none(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from costledger import Pricer

    # The demo's private model has no provider: the warning names none. (A fresh default
    # pricer: the process's own has warned about the model in an earlier test. Under
    # pytest the warning goes to its log capture, not to the runner's stderr.)
    monkeypatch.setattr(Pricer, "_default", None)
    with caplog.at_level(logging.WARNING, logger="costledger"):
        result = _run("demo", "--db", "sqlite:///:memory:")
    assert result.exit_code == 0, result.output
    assert [r.getMessage() for r in caplog.records if "my-private-finetune" in r.getMessage()] == [
        "costledger: no price for model 'my-private-finetune'; the call is recorded as "
        "unknown_model with no amount (not $0). Add the model to a price book and re-price "
        "the events."
    ]


# -- the unknown-model warning ---------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "hint"),
    [
        (
            "gpt4o-mini",
            None,
            "costledger: did you mean 'gpt-4o-mini'? It has a price; 'gpt4o-mini' has none.",
        ),
        (
            "gpt-4o-mni",
            "openai",
            "costledger: did you mean 'gpt-4o-mini'? It has a price; 'gpt-4o-mni' "
            "(provider 'openai') has none.",
        ),
        (
            "claude-sonet-4-20250514",
            None,
            "costledger: did you mean 'claude-sonnet-4-20250514'? It has a price; "
            "'claude-sonet-4-20250514' has none.",
        ),
        ("my-private-finetune", None, None),
    ],
)
def test_unknown_model_warning_suggests_a_close_priced_name(
    model: str, provider: str | None, hint: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning at once; the hint (a search of some 40,000 names) after it, from the
    background worker, never on the caller's thread."""
    from costledger import Pricer, Usage, drain_deferred

    pricer = Pricer()
    with caplog.at_level(logging.WARNING, logger="costledger"):
        cost = pricer.price(model, Usage(input_tokens=10), provider=provider)
        pricer.price(model, Usage(input_tokens=10), provider=provider)
        drain_deferred()
    assert cost.status == "unknown_model"
    messages = [r.getMessage() for r in caplog.records if r.name == "costledger"]
    shown = f"{model!r}" + (f" (provider {provider!r})" if provider else "")
    assert messages[0] == (
        f"costledger: no price for model {shown}; the call is recorded as unknown_model with "
        "no amount (not $0). Add the model to a price book and re-price the events."
    )
    assert messages[1:] == ([hint] if hint else [])
    assert {r.threadName for r in caplog.records if "did you mean" in r.getMessage()} <= {
        "costledger-deferred"
    }
    assert "provider None" not in " ".join(messages)


def test_demo_follow_up_commands_paste_and_hide_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costledger.cli._demo import _shell_url

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COSTLEDGER_DATABASE_URL", raising=False)
    (tmp_path / "my runs").mkdir()
    done = _run("demo", "--db", "sqlite:///my runs/demo.db")
    assert done.exit_code == 0, done.output
    assert (
        "whole ledger:   costledger report --db 'sqlite:///my runs/demo.db' --by model"
        in _lines(done.stdout)
    )
    assert _shell_url("postgresql+psycopg://app:s3cret@db.example/costs") == (
        "'postgresql+psycopg://app:***@db.example/costs'"
    )
