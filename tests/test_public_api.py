"""The curated public API: one sorted ``__all__``, every name resolvable, light import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import costledger


def test_all_is_sorted_and_unique() -> None:
    assert list(costledger.__all__) == sorted(set(costledger.__all__))


def test_every_public_name_resolves() -> None:
    for name in costledger.__all__:
        assert getattr(costledger, name) is not None, name


def test_import_does_not_load_frameworks_or_heavy_parts() -> None:
    code = (
        "import sys, costledger, costledger.testing; "
        "heavy = [m for m in ('langchain_core', 'litellm', 'openai', 'anthropic', 'sqlalchemy', "
        "'genai_prices', 'tiktoken', 'opentelemetry') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_misspelt_public_name_fails_type_checking(tmp_path: Path) -> None:
    """The lazy modules' ``__getattr__`` is hidden from type checkers (it returns ``Any``,
    which would make every misspelt import pass ``mypy --strict``)."""
    user = tmp_path / "user.py"
    user.write_text(
        "import costledger\n"
        "from costledger import Ledger, report\n"
        "from costledger.http import TrackingTransport\n"
        "from costledger.testing import InMemoryLedger, capture_costs\n"
        "from costledger import Ledgr\n"
        "from costledger.http import TrackingTransprt\n"
        "from costledger.testing import capture_cost\n"
        "costledger.Budgett\n"
    )
    api = pytest.importorskip("mypy.api")
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", "/dev/null", str(user)]
    )
    errors = [line.split(": error: ")[1] for line in out.splitlines() if ": error: " in line]
    assert status == 1
    assert [e.split(";")[0] for e in errors] == [
        'Module "costledger" has no attribute "Ledgr"',
        'Module "costledger.http" has no attribute "TrackingTransprt"',
        'Module "costledger.testing" has no attribute "capture_cost"',
        'Module has no attribute "Budgett"',
    ]
