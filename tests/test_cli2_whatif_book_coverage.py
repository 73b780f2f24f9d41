"""``costledger whatif`` names a book model that re-priced no selected call by what the
what-if's own pricer did (a price whose ``Cost.source`` is the book), not by whether the
book alone matches the call's names: a fallback model that answered calls asking for the
book's model is priced as itself, and the book's model then priced nothing."""

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

JUNE = datetime(2025, 6, 1, tzinfo=timezone.utc)
DATED = "claude-sonnet-4-20250514"


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def events(model: str, total: str, n: int = 3, **fields: Any) -> list[UsageEvent]:
    return [
        UsageEvent(
            model=model,
            usage=Usage(input_tokens=100_000, output_tokens=1_000),
            cost=Cost("priced", total=Decimal(total)),
            timestamp=JUNE.replace(hour=i),
            **fields,
        )
        for i in range(n)
    ]


def ledger(tmp_path: Path, *batches: list[UsageEvent], url: str | None = None) -> str:
    url = url or f"sqlite:///{tmp_path / 'w.db'}"
    with Ledger(url, sync=True) as opened:
        for batch in batches:
            opened.record_many(batch)
    return url


def book(tmp_path: Path, *models: str, provider: str | None = None) -> str:
    where = f'provider = "{provider}"\n' if provider else ""
    path = tmp_path / "book.toml"
    path.write_text("".join(f'["{m}"]\ninput = "1.5"\noutput = "7.5"\n{where}' for m in models))
    return str(path)


def whatif(db: str, path: str, *args: str) -> tuple[list[str], list[str]]:
    result = run("whatif", "--db", db, "-p", path, "-f", "csv", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines(), result.stderr.splitlines()


def test_dated_calls_are_re_priced_by_the_book_entry_for_their_model(tmp_path: Path) -> None:
    # what the Anthropic SDK requests and answers: the dated name; the book has the family
    db = ledger(tmp_path, events(DATED, "0.315", provider="anthropic"))
    out, err = whatif(db, book(tmp_path, "claude-sonnet-4", provider="anthropic"))
    assert out[1:] == [f"{DATED},USD,3,0.945,0.4725,3,0.4725,0.500000,0,0,0,0"]
    assert err == []


def test_a_typo_is_named_with_the_undated_model(tmp_path: Path) -> None:
    db = ledger(tmp_path, events(DATED, "0.315", provider="anthropic"))
    out, err = whatif(db, book(tmp_path, "claude-sonet-4", provider="anthropic"))
    assert out[1:] == [f"{DATED},USD,3,0.945,0.945,3,0,0.000000,0,0,0,0"]
    assert err == [
        "warning: no model of the price book matches a selected call: 'claude-sonet-4' (did "
        "you mean 'claude-sonnet-4'?); nothing is re-priced by the book (names are matched "
        "as recorded: see 'costledger report --by model')"
    ]


def test_a_fallback_answer_is_not_priced_by_the_requested_models_entry(tmp_path: Path) -> None:
    # a router asked for claude-sonnet-4 and gpt-4o-mini answered: priced as gpt-4o-mini
    db = ledger(tmp_path, events("claude-sonnet-4", "0.0156", response_model="gpt-4o-mini"))
    path = book(tmp_path, "claude-sonnet-4")
    out, err = whatif(db, path)
    assert out[1:] == ["gpt-4o-mini,USD,3,0.0468,0.0468,3,0,0.000000,0,0,0,0"]
    assert err == [
        "warning: 'claude-sonnet-4' priced no call: the calls that asked for it were answered "
        "by another model, 'gpt-4o-mini', which is priced as itself",
        "warning: no selected call is re-priced by the book",
    ]
    # the same lines on stderr for every format, the table's own note first
    result = run("whatif", "--db", db, "-p", path)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "savings = cost then - cost under the book, over the calls priced both ways "
        "(positive: the book is cheaper)",
        *err,
    ]
    result = run("whatif", "--db", db, "-p", path, "-f", "json")
    assert json.loads(result.stdout)["totals"][0]["savings"] == "0"
    assert result.stderr.splitlines() == err


def test_one_model_priced_the_other_named_in_a_note(tmp_path: Path) -> None:
    db = ledger(
        tmp_path,
        events("claude-sonnet-4", "0.0156", response_model="gpt-4o-mini"),
        events(DATED, "0.315", provider="anthropic"),
    )
    out, err = whatif(db, book(tmp_path, "claude-sonnet-4", "gpt-4o-mini"))
    assert out[1:] == [
        f"{DATED},USD,3,0.945,0.4725,3,0.4725,0.500000,0,0,0,0",
        "gpt-4o-mini,USD,3,0.0468,0.4725,3,-0.4257,-9.096154,0,0,0,0",
    ]
    assert err == []  # each model of the book priced some call
    # only the calls that asked for claude-sonnet-4: the gpt-4o-mini entry prices them all
    path = book(tmp_path, "claude-sonnet-4", "gpt-4o-mini")
    out, err = whatif(db, path, "--model", "claude-sonnet-4")
    assert out[1:] == ["gpt-4o-mini,USD,3,0.0468,0.4725,3,-0.4257,-9.096154,0,0,0,0"]
    assert err == [
        "note: 'claude-sonnet-4' priced no call: the calls that asked for it were answered "
        "by another model, 'gpt-4o-mini', which is priced by the book's entry 'gpt-4o-mini'"
    ]


def test_a_typo_and_an_unused_model_when_nothing_is_re_priced(tmp_path: Path) -> None:
    db = ledger(tmp_path, events("claude-sonnet-4", "0.0156", response_model="gpt-4o-mini"))
    out, err = whatif(db, book(tmp_path, "gpt4o-mini", "claude-sonnet-4"))
    assert out[1:] == ["gpt-4o-mini,USD,3,0.0468,0.0468,3,0,0.000000,0,0,0,0"]
    assert err == [
        "warning: model(s) of the price book that match no selected call: 'gpt4o-mini' (did "
        "you mean 'gpt-4o-mini'?)",
        "warning: 'claude-sonnet-4' priced no call: the calls that asked for it were answered "
        "by another model, 'gpt-4o-mini', which is priced as itself",
        "warning: no selected call is re-priced by the book",
    ]


def test_matched_books_say_nothing(tmp_path: Path) -> None:
    db = ledger(
        tmp_path,
        events(DATED, "0.315", provider="anthropic"),
        events("gpt-4o", "0.26", provider="openai"),
    )
    out, err = whatif(db, book(tmp_path, "Claude-Sonnet-4", "gpt-4o"))
    assert out[1:] == [
        f"{DATED},USD,3,0.945,0.4725,3,0.4725,0.500000,0,0,0,0",
        "gpt-4o,USD,3,0.78,0.4725,3,0.3075,0.394231,0,0,0,0",
    ]
    assert err == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_cache_hits_keep_their_cost(tmp_path: Path, backend: str, request: Any) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    db = ledger(
        tmp_path,
        events("gpt-4o", "0", provider="openai", cache_hit=True),
        events("claude-sonnet-4", "0.0156", n=1, response_model="gpt-4o-mini"),
        url=url,
    )
    out, err = whatif(db, book(tmp_path, "gpt-4o", "claude-sonnet-4"))
    assert out[1:] == [
        "gpt-4o-mini,USD,1,0.0156,0.0156,1,0,0.000000,0,0,0,0",
        "gpt-4o,USD,3,0,0,3,0,,0,0,0,0",
    ]
    assert err == [
        "warning: 'gpt-4o' priced no call: its calls keep their recorded cost (cache hits, "
        "or nothing to price)",
        "warning: 'claude-sonnet-4' priced no call: the calls that asked for it were answered "
        "by another model, 'gpt-4o-mini', which is priced as itself",
        "warning: no selected call is re-priced by the book",
    ]


def test_cache_hits_only(tmp_path: Path) -> None:
    db = ledger(tmp_path, events("gpt-4o", "0", provider="openai", cache_hit=True))
    out, err = whatif(db, book(tmp_path, "gpt-4o"))
    assert out[1:] == ["gpt-4o,USD,3,0,0,3,0,,0,0,0,0"]
    assert err == [
        "warning: 'gpt-4o' priced no call: its calls keep their recorded cost (cache hits, "
        "or nothing to price)",
        "warning: no selected call is re-priced by the book",
    ]
