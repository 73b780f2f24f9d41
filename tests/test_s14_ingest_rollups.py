"""The rollups of a batch of rows are summed by bucket (``RollupDelta.add_rows``: rows put
in buckets by their group, counts summed in C); these tests hold it to the row by row loop
it replaced (``_add_each``), sums and errors alike, and a batch ingested to the rollups
``Ledger.record`` keeps one event at a time."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costledger._ingest import ingest
from costledger._ledger import Ledger
from costledger._ledger._rollups import RollupDelta
from costledger._ledger._rows import COLUMNS
from costledger._usage import MAX_TOKENS

from .ingest_support import own_line, rich_events, write_lines
from .test_ingest_rows import _rollup_tables

_I = {name: COLUMNS.index(name) for name in COLUMNS}
_amount = st.one_of(
    st.none(),
    st.sampled_from(
        ["0", "0.00", "1", "1.0", "0.000000000000000001", "12.5", "-0.25", "-3", "0.10"]
    ),
    st.decimals(
        min_value=Decimal("-9999999999"),
        max_value=Decimal("9999999999"),
        places=18,
        allow_nan=False,
        allow_infinity=False,
    ).map(lambda d: format(d, "f")),
)
_small = st.sampled_from([None, "a", "b"])
_row = st.fixed_dictionaries(
    {
        "timestamp": st.sampled_from(
            ["2025-06-01T10:00:00.000000+00:00", "2025-06-02T23:59:59.999999+00:00"]
        ),
        "source": st.sampled_from(["api", "litellm"]),
        "provider": _small,
        "model": st.sampled_from(["m1", "m2"]),
        "response_model": _small,
        "status": st.sampled_from(["ok", "error", "cancelled"]),
        "user": _small,
        "team": _small,
        "project": _small,
        "feature": _small,
        "tags": st.sampled_from(["[]", '["a"]', '["a","a"]', '["b","a"]', '["a","b"]']),
        "input_tokens": st.integers(0, 10**6),
        "output_tokens": st.integers(0, 10**6),
        "cache_read_tokens": st.integers(0, 10**6),
        "cache_write_tokens": st.integers(0, 10**6),
        "reasoning_tokens": st.integers(0, 10**6),
        "pricing_status": st.sampled_from(["priced", "unknown_model", "not_priced"]),
        "currency": st.sampled_from(["USD", "EUR"]),
        "total_cost": _amount,
    }
)


def _as_row(values: dict[str, Any]) -> tuple[Any, ...]:
    row: list[Any] = [None] * len(COLUMNS)
    for name, value in values.items():
        row[_I[name]] = value
    return tuple(row)


def _outcome(rows: list[tuple[Any, ...]], *, each: bool, min_places: int) -> Any:
    delta = RollupDelta(min_places)
    try:
        if each:
            delta._add_each(rows)
        else:
            delta.add_rows(rows)
    except Exception as exc:
        return type(exc), str(exc)
    return delta.groups


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_row, min_size=0, max_size=60), st.sampled_from([0, 18]))
def test_bucketed_sums_equal_row_by_row_sums(values: list[dict[str, Any]], places: int) -> None:
    rows = [_as_row(v) for v in values]
    bucketed = _outcome(rows, each=False, min_places=places)
    assert bucketed == _outcome(rows, each=True, min_places=places)
    if isinstance(bucketed, dict):  # the bound is a float: -inf where nothing was priced
        for acc in bucketed.values():
            assert acc[13] == -math.inf or isinstance(acc[13], float)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("input_tokens", MAX_TOKENS + 1),
        ("output_tokens", MAX_TOKENS + 1),
        ("total_cost", "9223372036854775808"),
        ("total_cost", "0.0000000000000000001"),
    ],
)
def test_bucketed_sums_raise_what_the_row_by_row_loop_raises(column: str, value: Any) -> None:
    good = {
        "timestamp": "2025-06-01T10:00:00.000000+00:00",
        "source": "api",
        "model": "m",
        "status": "ok",
        "tags": "[]",
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "pricing_status": "priced",
        "currency": "USD",
        "total_cost": "0.5",
    }
    rows = [_as_row(good)] * 20 + [_as_row({**good, column: value})] + [_as_row(good)] * 5
    expected = _outcome(rows, each=True, min_places=0)
    assert isinstance(expected, tuple)  # an error
    assert _outcome(rows, each=False, min_places=0) == expected


def test_a_batch_ingested_keeps_the_rollups_of_events_recorded_one_by_one(tmp_path: Path) -> None:
    events = [
        replace(e, id=f"{e.id}-{n}", tags=tags)
        for n, tags in enumerate([(), ("x",), ("x", "y"), ("y", "x")])
        for e in rich_events()
    ]
    ingested, recorded = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    path = write_lines(tmp_path / "e.log", [own_line(e) for e in events])
    assert ingest(path, ledger=ingested, checkpoint_dir=tmp_path).accepted == len(events)
    with Ledger(recorded, sync=True) as ledger:
        for event in events:  # one row a write: the row by row loop
            ledger.record(event)
    assert _rollup_tables(ingested) == _rollup_tables(recorded)
    assert any(_rollup_tables(ingested).values())
