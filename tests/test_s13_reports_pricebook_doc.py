"""``costledger.PriceBook`` is a type alias (``PriceBook({...})`` fails with "'types.UnionType'
object is not callable"), and docs/pricing.md said nothing of it: it now says it is a type
for annotations, not a constructor, with an example that runs and type-checks."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import get_args

import pytest

import costledger
from costledger import PriceBook, Usage

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _example() -> str:
    text = (DOCS / "pricing.md").read_text(encoding="utf-8")
    at = text.index("def pricer_for(book: PriceBook)")
    start = text.rindex("```python\n", 0, at) + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_page_calls_it_a_type_alias_not_a_constructor() -> None:
    text = (DOCS / "pricing.md").read_text(encoding="utf-8")
    assert "`costledger.PriceBook` is the **type** of a price book, for annotations" in text
    assert "not a class\n— there is nothing to construct (`PriceBook({...})` is a `TypeError`)" in (
        text
    )
    assert "PriceBook" in costledger.__all__  # importable, for annotations
    assert len(get_args(PriceBook)) == 3  # Mapping | str | PathLike
    with pytest.raises(TypeError, match="not callable"):
        PriceBook({})  # type: ignore[operator]


def test_the_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_example(), "pricing.md", "exec"), namespace)
    pricer = namespace["pricer"]
    assert isinstance(pricer, costledger.Pricer)
    assert pricer.price("our-model", Usage(1_000_000, 1_000_000)).total == Decimal("2.00")


def test_the_example_type_checks(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(_example())
    api = pytest.importorskip("mypy.api")
    out, err, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", "/dev/null", str(user)]
    )
    assert (status, out.strip()) == (0, "Success: no issues found in 1 source file"), err
