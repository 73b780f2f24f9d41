"""The README's snippets stay true: every Python block compiles and imports only names that
exist, and every ``costledger`` command line parses (command, arguments and options)."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costledger.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(README.read_text()) if lang == language]


def _command_lines() -> list[list[str]]:
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "costledger":
                    lines.append(words[1:])
    return lines


def test_the_readme_has_snippets_to_check() -> None:
    assert len(_blocks("python")) >= 6
    assert len(_command_lines()) >= 6


@pytest.mark.parametrize("source", _blocks("python"), ids=lambda s: s.splitlines()[0][:40])
def test_python_snippet_compiles_and_its_imports_exist(source: str) -> None:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "costledger"
        ):
            assert hasattr(importlib.import_module("costledger"), node.attr), node.attr


@pytest.mark.parametrize("args", _command_lines(), ids=lambda a: " ".join(a)[:50])
def test_cli_line_parses(args: list[str]) -> None:
    # --help after the line's own arguments: click rejects an unknown command or option
    # while parsing, before --help prints and exits 0
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
