"""Event metadata JSON that both databases take: no NaN or infinity, no NUL character.

JSON has no NaN or infinity (Python's ``json`` writes them anyway) and PostgreSQL's
``jsonb`` refuses the NUL character: either made the database reject the whole event.
The ledger's JSON encoder writes a non-finite float as text and leaves NUL out of
strings, on SQLite and PostgreSQL alike, for every entry point."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from costledger import Cost, Usage, UsageEvent
from costledger._ledger import Ledger
from costledger._ledger._engine import resolve_url
from costledger._ledger._money import dumps

NAN, INF = float("nan"), float("inf")

ODD_METADATA: dict[str, Any] = {
    "quality_score": NAN,
    "upper": INF,
    "lower": -INF,
    "fine": 0.25,
    "note": "before\x00after",
    "nested": {"scores": [1.5, NAN, -INF], "key\x00with nul": "v\x00"},
    "pair": (INF, "x\x00"),
    "count": 3,
    "flag": True,
    "nothing": None,
}
CLEAN_METADATA: dict[str, Any] = {
    "quality_score": "NaN",
    "upper": "Infinity",
    "lower": "-Infinity",
    "fine": 0.25,
    "note": "beforeafter",
    "nested": {"scores": [1.5, "NaN", "-Infinity"], "keywith nul": "v"},
    "pair": ["Infinity", "x"],
    "count": 3,
    "flag": True,
    "nothing": None,
}


def _event(**fields: Any) -> UsageEvent:
    return UsageEvent(
        model="gpt-4o-mini",
        usage=Usage(input_tokens=10, output_tokens=20),
        cost=Cost(status="priced", total=Decimal("0.0000135")),
        **fields,
    )


def test_non_finite_floats_and_nul_are_stored_on_both_databases(url: str) -> None:
    odd = _event(metadata=ODD_METADATA, tags=("prod", "t\x00ag"))
    plain = _event(metadata={"k": "v"})
    with Ledger(url, sync=True) as ledger:
        ledger.record_many([odd, plain])
        assert ledger.flush(timeout=30)
        stats = ledger.stats()
        stored = ledger.get(odd.id)
        other = ledger.get(plain.id)

    assert (stats.inserted, stats.rejected) == (2, 0)
    assert stored is not None
    assert other is not None
    assert dict(stored.metadata) == CLEAN_METADATA
    assert list(stored.tags) == ["prod", "tag"]
    assert stored.total_cost == Decimal("0.0000135")
    assert dict(other.metadata) == {"k": "v"}


def test_the_stored_metadata_is_valid_json_for_the_database(url: str) -> None:
    event = _event(metadata={"score": NAN, "text": "a\x00b"})
    with Ledger(url, sync=True) as ledger:
        ledger.record(event)
        assert ledger.flush(timeout=30)
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                sql = "SELECT metadata->>'score', metadata->>'text' FROM costledger_events"
            else:  # SQLite's JSON functions refuse the NaN token too
                sql = (
                    "SELECT json_extract(metadata, '$.score'), json_extract(metadata, '$.text')"
                    " FROM costledger_events WHERE json_valid(metadata)"
                )
            rows = conn.exec_driver_sql(sql).fetchall()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("NaN", "ab")]


def test_encoder_output() -> None:
    # the common case is json.dumps' own text, unchanged
    assert (
        dumps({"a": 1.5, "b": [1, "x"], "c": Decimal("0.10")}) == '{"a":1.5,"b":[1,"x"],"c":"0.10"}'
    )
    assert dumps({"a": NAN, "b": [INF, -INF]}) == '{"a":"NaN","b":["Infinity","-Infinity"]}'
    assert dumps({"n\x00": "x\x00y", NAN: 1}) == '{"n":"xy","NaN":1}'
    # non-finite values inside what the default encoder turns into JSON (a set)
    assert dumps({"s": {INF}}) == '{"s":["Infinity"]}'
    # a string holding the text of the escape (not a NUL) is kept as it is
    assert dumps({"t": "\\u0000"}) == '{"t":"\\\\u0000"}'
    assert math.isnan(ODD_METADATA["quality_score"])  # the caller's own mapping is untouched
    assert ODD_METADATA["note"] == "before\x00after"
