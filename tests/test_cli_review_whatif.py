"""``costledger whatif`` with a book that cannot change anything says so: an empty book is
refused as ``prices diff`` refuses it (exit 1), and the book's models that match no
selected call (a typo such as ``gpt4o``) are named, with the closest model of the
selection, instead of a silent "savings 0.00"."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger.cli import app

JUNE = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def event(model: str, total: str, **fields: Any) -> UsageEvent:
    return UsageEvent(
        model=model,
        usage=Usage(input_tokens=1_000_000, output_tokens=0),
        cost=Cost("priced", total=Decimal(total)),
        timestamp=JUNE,
        **fields,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with Ledger(url, sync=True) as ledger:
        ledger.record_many(
            [
                event("gpt-4o", "2.5", provider="openai", team="search"),
                # an Azure deployment: requested under its own name, answered by a snapshot
                event("my-deploy", "2.5", response_model="gpt-4o-2024-08-06", team="chat"),
                event("claude-sonnet-4", "3", provider="anthropic", team="chat"),
            ]
        )
    return url


def book(tmp_path: Path, *models: str, name: str = "book.toml") -> Path:
    path = tmp_path / name
    path.write_text("".join(f'["{m}"]\ninput = "1"\noutput = "1"\n' for m in models))
    return path


@pytest.mark.parametrize(("name", "text"), [("empty.toml", ""), ("empty.json", "{}")])
def test_an_empty_book_is_refused_as_prices_diff_refuses_it(
    db: str, tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = run("whatif", "--db", db, "-p", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"error: price book {str(path)!r} lists no models\n"
    assert run("prices", "diff", str(path)).stderr == result.stderr


def test_a_book_matching_no_call_is_named_with_the_closest_model(db: str, tmp_path: Path) -> None:
    path = book(tmp_path, "gpt4o")
    result = run("whatif", "--db", db, "-p", str(path))
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == (
        "warning: no model of the price book matches a selected call: 'gpt4o' (did you "
        "mean 'gpt-4o'?); nothing is re-priced by the book (names are matched as "
        "recorded: see 'costledger report --by model')"
    )
    # json and csv: the same document on stdout, the warning on stderr
    for fmt in ("json", "csv"):
        result = run("whatif", "--db", db, "-p", str(path), "-f", fmt)
        assert result.exit_code == 0
        assert "warning: no model of the price book matches a selected call: 'gpt4o'" in (
            result.stderr
        )
    document = json.loads(run("whatif", "--db", db, "-p", str(path), "-f", "json").stdout)
    assert {t["savings"] for t in document["totals"]} == {"0"}


def test_only_the_models_that_match_nothing_are_named(db: str, tmp_path: Path) -> None:
    path = book(tmp_path, "GPT-4O", "claude-sonet-4", "my-deploy", "gemini-2.5-pro")
    result = run("whatif", "--db", db, "-p", str(path))
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == (
        "note: model(s) of the price book that match no selected call: 'claude-sonet-4' "
        "(did you mean 'claude-sonnet-4'?), 'gemini-2.5-pro'"
    )


def test_matched_as_the_pricer_matches(db: str, tmp_path: Path) -> None:
    # the requested name of a deployment, a snapshot's base name, any case
    path = book(tmp_path, "my-deploy", "Claude-Sonnet-4")
    result = run("whatif", "--db", db, "-p", str(path))
    assert result.exit_code == 0
    assert "match no selected call" not in result.stderr
    assert "matches a selected call" not in result.stderr
    snapshot = book(tmp_path, "gpt-4o", name="snapshot.toml")  # gpt-4o-2024-08-06 too
    result = run("whatif", "--db", db, "-p", str(snapshot), "--team", "chat")
    assert "match" not in result.stderr


def test_the_selection_decides(db: str, tmp_path: Path) -> None:
    path = book(tmp_path, "claude-sonnet-4", "gpt-4o")
    result = run("whatif", "--db", db, "-p", str(path), "--team", "search")
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == (
        "note: model(s) of the price book that match no selected call: 'claude-sonnet-4'"
    )
