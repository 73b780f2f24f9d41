"""docs/pricing.md: the values its examples show are the ones Python prints."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _python_block_with(page: str, marker: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    at = text.index(marker)
    start = text.rindex("```python\n", 0, at) + len("```python\n")
    return text[start : text.index("```", start)]


@pytest.mark.skipif(
    tuple(int(part) for part in version("genai-prices").split(".")[:2]) < (0, 2),
    reason="genai-prices 0.1.x (Python 3.10) has no speed=fast variant; the page says so",
)
def test_price_context_example_comments_are_the_printed_values() -> None:
    """Service tiers, speed and batch: each ``# value`` is ``print(...)`` of its line."""
    block = _python_block_with("pricing.md", 'price_context={"service_tier": "flex"}).total')
    namespace: dict[str, object] = {}
    shown: list[tuple[str, str]] = []
    for line in block.splitlines():
        code, _, comment = line.partition("  # ")
        if comment and code.rstrip().endswith(".total"):
            value = eval(compile(code.strip(), "pricing.md", "eval"), namespace)
            shown.append((str(value), comment.strip()))
        else:
            exec(compile(line, "pricing.md", "exec"), namespace)
    assert shown == [
        ("0.03250000", "0.03250000"),
        ("0.016250000", "0.016250000"),
        ("0.200000", "0.200000"),
    ]
