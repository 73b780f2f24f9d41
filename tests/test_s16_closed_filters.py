"""``status`` and ``source`` filters take a closed set of values: a misspelt one is an error
naming the filter and the value, not "no calls match"."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger import Ledger, Tracker, Usage, report
from costledger.cli import app


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as ledger:
        Tracker(ledger, log="off").record("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=10))
    return url


def test_the_api_refuses_a_status_or_source_outside_the_set(url: str) -> None:
    with Ledger(url) as ledger:
        with pytest.raises(
            ValueError, match=r"filter 'status' must be one of ok, error, cancelled, got 'eror'"
        ):
            report(ledger, status="eror")
        with pytest.raises(
            ValueError, match=r"filter 'source' must be one of langchain, .*, api, got 'lang'"
        ):
            list(ledger.events(source=["api", "lang"]))
        assert [e.model for e in ledger.events(status=["ok", "error"], source="api")] == [
            "gpt-4o-mini"
        ]


def test_the_cli_answers_a_misspelt_status_as_a_usage_error(url: str) -> None:
    result = CliRunner().invoke(app, ["report", "--db", url, "--status", "ok,eror"])
    assert result.exit_code == 2
    assert "filter 'status' must be one of ok, error, cancelled, got 'eror'" in result.output
    result = CliRunner().invoke(app, ["top", "--db", url, "--status", "ok"])
    assert result.exit_code == 0, result.output


def test_report_filters_find_a_long_name_by_its_full_text(tmp_path: Path) -> None:
    """A model or user past the ledger's 256 characters is stored cut; ``report`` and the
    CLI filter by the full text as ``Ledger.events`` does."""
    long_user = "u" * 300
    url = f"sqlite:///{tmp_path / 'long.db'}"
    with Ledger(url) as ledger:
        tracker = Tracker(ledger, log="off")
        tracker.record("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=10), user=long_user)
        tracker.record("gpt-4o-mini", Usage(input_tokens=2000, output_tokens=10), user="bob")
        assert [e.user for e in ledger.events(user=long_user)] != [long_user]  # stored cut
        assert len(list(ledger.events(user=long_user))) == 1
        assert report(ledger, user=long_user).cost == {"USD": Decimal("0.000156")}
    result = CliRunner().invoke(app, ["report", "--db", url, "--user", long_user, "-f", "json"])
    assert result.exit_code == 0, result.output
    assert '"requests": 1' in result.output
