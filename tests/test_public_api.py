"""The curated public API: one sorted ``__all__``, every name resolvable, light import."""

from __future__ import annotations

import subprocess
import sys

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
