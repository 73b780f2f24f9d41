"""``costledger demo`` with an integration not installed names what it skipped and what to
``pip install``, instead of silently covering fewer entry points than it promises.

The demo runs in a subprocess where the integration packages are made unimportable
(``sys.modules[name] = None``), as when they are not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from costledger import Ledger


def demo_without(blocked: tuple[str, ...], url: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from costledger.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "demo", "--db", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def sources(url: str) -> dict[str, int]:
    with Ledger(url) as ledger:
        found: dict[str, int] = {}
        for row in ledger.events():
            found[row.source] = found.get(row.source, 0) + 1
    return found


def test_demo_with_the_core_alone_names_both_skipped_integrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = demo_without(("costledger_langchain", "costledger_litellm"), url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("entry points: api, decorator, http")
    assert lines[at + 1] == (
        "skipped: langchain, litellm (integration not installed: "
        "pip install costledger-langchain costledger-litellm)"
    )
    assert lines[at + 2] == "total: 0.0183516 USD  (1 unpriced call)"
    assert sources(url) == {"api": 5, "decorator": 2, "http": 1}


def test_demo_names_only_the_integration_that_is_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = demo_without(("costledger_litellm",), url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("entry points: api, decorator, http, langchain")
    assert lines[at + 1] == (
        "skipped: litellm (integration not installed: pip install costledger-litellm)"
    )
    assert sources(url) == {"api": 5, "decorator": 2, "http": 1, "langchain": 3}
    with Ledger(url) as ledger:
        priced = sum(
            (r.total_cost for r in ledger.events() if r.total_cost is not None), Decimal(0)
        )
    # the full demo's 0.0250086 less LiteLLM's two calls (10 in, 20 out of gpt-4o-mini each)
    assert priced == Decimal("0.0250086") - 2 * Decimal("0.0000135")


def test_demo_with_everything_installed_skips_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = demo_without((), url)
    assert result.returncode == 0, result.stderr
    assert "entry points: api, decorator, http, langchain, litellm" in result.stdout
    assert "skipped" not in result.stdout
