"""A guard config file nested too deeply is an error naming the file (it was a bare
RecursionError printed by `costledger budget status --budgets`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger import guards_from_config
from costledger.cli import app


@pytest.mark.parametrize(
    ("name", "text"), [("deep.json", "[" * 100_000), ("deep.toml", "a = " + "[" * 100_000)]
)
def test_a_config_nested_too_deeply_names_the_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(
        ValueError,
        match=r"guard config .*deep\.(json|toml): not valid .*: its values are nested too deeply",
    ):
        guards_from_config(path)
    result = CliRunner().invoke(
        app, ["budget", "status", "--budgets", str(path), "--db", f"sqlite:///{tmp_path / 'l.db'}"]
    )
    assert result.exit_code != 0
    assert "nested too deeply" in result.output
    assert "RecursionError" not in result.output
