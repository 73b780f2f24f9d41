"""Garbage in one call never costs the others, and the call itself is stored.

* A long identity text (a 3,000-character model a proxy passed through, a user id that
  is a whole JWT) made PostgreSQL refuse the row (``ProgramLimitExceeded``: an index
  entry, or a rollup key, past 2704 bytes), which the ledger took for an outage: the
  batch was spooled and replayed forever, and ``costledger ingest`` stopped at it on
  every run. Such a text is now cut to ``KEY_TEXT_LIMIT`` characters (with a hash of the
  whole), the same on SQLite and PostgreSQL, and the row says so in its metadata; a row
  the database still refuses for its size is rejected alone.
* Metadata with a key JSON cannot hold (a ``UUID``, a date, a tuple) or a value whose
  ``str()`` raises lost the whole call, and the reject path claimed a
  ``rejected-*.jsonl`` it never wrote.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import costledger
from costledger import Cost, Tracker, Usage, UsageEvent
from costledger._ingest import ingest
from costledger._ledger import Ledger, _core
from costledger._ledger._engine import resolve_url
from costledger._ledger._rows import COLUMNS, spool_line
from costledger._ledger._store import is_data_error, sqlite_params

from .ingest_support import make_event, own_line, write_lines

COST = Decimal("0.000195000")
rnd = random.Random(16)


def _junk(n: int) -> str:
    """``n`` characters of 4 bytes each in UTF-8, in no order PostgreSQL could compress."""
    return "".join(chr(rnd.randrange(0x1F300, 0x1FAFF)) for _ in range(n))


def _cut(text: str) -> str:
    """What the ledger stores for a text past 256 characters (docs/ledger.md)."""
    return text[:223] + "~" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _event(n: int, **fields: Any) -> UsageEvent:
    return make_event(n, **fields)


def _rejected_lines(spool: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(spool.glob("rejected-*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


# -- 1. long identity texts ---------------------------------------------------------------------

FIELDS = ["id", "model", "response_model", "provider", "user", "team", "project", "feature"]
FIELDS += ["trace_id", "source", "tags"]


@pytest.mark.parametrize("field", FIELDS)
def test_a_long_key_text_is_cut_and_noted_and_the_batch_is_stored(
    url: str, tmp_path: Path, field: str
) -> None:
    long = _junk(3000)
    value: Any = (long, "prod") if field == "tags" else long
    odd = _event(2, **{field: value})
    events = [_event(1), odd, _event(3)]
    with Ledger(url, spool_dir=tmp_path / "spool") as ledger:
        ledger.record_many(events)  # one buffered batch, as a service writes it
        assert ledger.flush(timeout=60)
        stats = ledger.stats()
        stored = ledger.get(odd.id)  # an id past the limit is found by its full text
        others = [ledger.get("evt-000001"), ledger.get("evt-000003")]
        summed = field not in ("id", "trace_id", "response_model", "source")
        by_field = _summary(ledger, field, long) if summed else []

    assert (stats.inserted, stats.spooled, stats.rejected, stats.healthy) == (3, 0, 0, True)
    assert stored is not None
    if field == "tags":
        assert stored.tags == [_cut(long), "prod"]
    else:
        assert getattr(stored, field) == _cut(long)
    assert len(_cut(long)) == 256
    assert dict(stored.metadata) == {"costledger.cut": [field]}
    assert stored.total_cost == COST
    assert [o.metadata for o in others if o is not None] == [{}, {}]
    if summed:
        assert by_field == [(_cut(long), 1, COST)]


def _summary(ledger: Ledger, field: str, long: str) -> list[tuple[str | None, int, Decimal]]:
    """The group of the long value in the rollups, filtered by its full text."""
    by = "tag" if field == "tags" else field
    rows = ledger.summary(by=by, **{by: long})
    return [(getattr(r, by), r.requests, r.cost) for r in rows]


def test_every_key_text_long_at_once_is_summed_exactly(url: str, tmp_path: Path) -> None:
    """Eleven dimensions of 256 four-byte characters make a rollup key of some 11 kB:
    on PostgreSQL a key past 600 characters is keyed by its SHA-256."""
    longs = {name: _junk(400) for name in ("model", "response_model", "provider", "user")}
    longs |= {name: _junk(400) for name in ("team", "project", "feature", "source")}
    tag = _junk(400)
    events = [_event(n, **longs, tags=(tag,)) for n in (1, 2)]
    with Ledger(url, spool_dir=tmp_path / "spool") as ledger:
        ledger.record_many(events)
        assert ledger.flush(timeout=60)
        stats = ledger.stats()
        by_user = [(r.user, r.requests, r.cost) for r in ledger.summary(by="user")]
        by_tag = [(r.tag, r.requests, r.cost) for r in ledger.summary(by=["tag", "model"])]
        stored = ledger.get("evt-000001")
    engine = sa.create_engine(resolve_url(url))
    with engine.connect() as conn:
        keys = conn.exec_driver_sql("SELECT gkey FROM costledger_rollup_daily").scalars().all()
    engine.dispose()

    assert (stats.inserted, stats.spooled, stats.healthy) == (2, 0, True)
    assert stored is not None
    cut = [*longs, "tags"]
    assert dict(stored.metadata) == {"costledger.cut": sorted(cut, key=_column_order)}
    assert by_user == [(_cut(longs["user"]), 2, COST * 2)]
    assert by_tag == [(_cut(tag), 2, COST * 2)]
    if url.startswith("postgresql"):
        gkey = "#" + hashlib.sha256(_json_key(longs, stored).encode()).hexdigest()
        assert keys == [gkey]
    else:
        assert keys == [_json_key(longs, stored)]


def _column_order(name: str) -> int:
    return COLUMNS.index(name)


def _json_key(longs: dict[str, str], stored: Any) -> str:
    dims = [getattr(stored, d) for d in ("model", "response_model", "provider", "user")]
    dims += [getattr(stored, d) for d in ("team", "project", "feature", "source")]
    dims += ["ok", "USD", "priced"]
    return json.dumps(dims, ensure_ascii=False, separators=(",", ":"))


def test_ingest_cuts_a_long_model_and_a_rerun_is_idempotent(url: str, tmp_path: Path) -> None:
    """`costledger ingest` into PostgreSQL stopped at a line with a 3,000-character model
    on every run; the row is now stored cut, and reading the file again adds nothing."""
    long_model, long_id = _junk(3000), "call-" + "x" * 3000
    events = [_event(1), _event(2, model=long_model, id=long_id), _event(3)]
    path = write_lines(tmp_path / "calls.jsonl", [own_line(e) for e in events])
    first = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ck")
    again = ingest(path, ledger=url, checkpoint_dir=tmp_path / "ck", resume=False)
    with Ledger(url, spool_dir=tmp_path / "spool") as ledger:
        stored = ledger.get(long_id)
        ids = sorted(e.id for e in ledger.events())

    assert (first.accepted, first.rejected, again.accepted, again.duplicates) == (3, 0, 0, 3)
    assert stored is not None
    digest = hashlib.sha256(long_id.encode()).hexdigest()
    assert stored.id == "call-" + "x" * 218 + "~" + digest[:32]
    assert stored.model == _cut(long_model)
    assert dict(stored.metadata) == {"costledger.cut": ["id", "model"]}
    assert stored.total_cost == COST
    assert ids == sorted(["evt-000001", "evt-000003", stored.id])


def test_a_spooled_long_user_replays_cut(url: str, tmp_path: Path) -> None:
    """A spool line an older version wrote with a long user is stored at replay, not
    replayed for ever."""
    long = _junk(3000)
    row = sqlite_params(_event(1))
    old = list(row)
    old[COLUMNS.index("user")] = long  # as an older version wrote it: whole
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "00000000000000000001-1-000001-abcdef.jsonl").write_bytes(spool_line(tuple(old)))
    with Ledger(url, spool_dir=spool) as ledger:
        assert ledger.flush(timeout=60)
        stats = ledger.stats()
        stored = ledger.get("evt-000001")

    assert (stats.replayed, stats.rejected, stats.healthy) == (1, 0, True)
    assert stored is not None
    assert stored.user == _cut(long)
    assert dict(stored.metadata) == {"costledger.cut": ["user"]}


def test_a_short_key_text_is_stored_as_it_is(url: str, tmp_path: Path) -> None:
    """256 characters is the limit itself: stored whole, no note."""
    exact = _junk(256)
    event = _event(1, user=exact, model=exact, tags=(exact,))
    with Ledger(url, spool_dir=tmp_path / "spool") as ledger:
        ledger.record(event)
        assert ledger.flush(timeout=60)
        stored = ledger.get(event.id)
    assert stored is not None
    assert (stored.user, stored.model, stored.tags) == (exact, exact, [exact])
    assert dict(stored.metadata) == {}


@pytest.mark.postgres
def test_a_row_postgresql_refuses_for_its_size_is_rejected_alone(
    pg_url: str, tmp_path: Path
) -> None:
    """A row that reaches the database too big (built without the cut: SQLSTATE 54000)
    is a bad row, not an outage: the batch is split, the others stored."""
    rows = [sqlite_params(_event(n)) for n in (1, 2, 3)]
    bad = list(rows[1])
    bad[COLUMNS.index("user")] = _junk(3000)
    rows[1] = tuple(bad)
    with Ledger(pg_url, spool_dir=tmp_path / "spool", sync=True) as ledger:
        store = ledger._core.store
        with pytest.raises(Exception) as raw:
            store.insert_rows([rows[1]])
        engine = sa.create_engine(resolve_url(pg_url))
        with engine.begin() as conn, pytest.raises(sa.exc.OperationalError) as wrapped:
            conn.exec_driver_sql(
                "INSERT INTO costledger_events (id, timestamp, source, status, pricing_status, "
                'currency, "user") VALUES (%s, now(), %s, %s, %s, %s, %s)',
                ("x", "api", "ok", "priced", "USD", _junk(3000)),
            )
        engine.dispose()
        assert ledger._core._insert_isolating(rows) == 2
        stats = ledger.stats()
        ids = sorted(e.id for e in ledger.events())

    assert type(raw.value).__name__ == "ProgramLimitExceeded"
    assert raw.value.sqlstate == "54000"  # type: ignore[attr-defined]
    assert is_data_error(raw.value) is True
    assert is_data_error(wrapped.value) is True
    assert (stats.rejected, stats.healthy) == (1, True)
    assert ids == ["evt-000001", "evt-000003"]
    assert [line["id"] for line in _rejected_lines(tmp_path / "spool")] == ["evt-000002"]


# -- 2. metadata JSON cannot hold ---------------------------------------------------------------


class _NoText:
    """A value (or key) whose ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_metadata_keys_json_cannot_hold_are_written_as_their_text(url: str, tmp_path: Path) -> None:
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["me"] = cyclic
    cases: dict[str, dict[Any, Any]] = {
        "uuid": {"scores": {uuid.UUID(int=7): 0.8}},
        "date": {dt.date(2025, 6, 1): 3},
        "tuple": {("eu", "west"): "a"},
        "numbers": {1: "one", None: "none", False: "no", 2.5: "half"},
        "bad value": {"ok": 1, "bad": _NoText()},
        "bad key": {"ok": 1, _NoText(): 2},
        "huge int": {"n": 10**5000, "m": 5},
        "cycle": {"loop": cyclic},
    }
    expected: dict[str, dict[str, Any]] = {
        "uuid": {"scores": {"00000000-0000-0000-0000-000000000007": 0.8}},
        "date": {"2025-06-01": 3},
        "tuple": {"('eu', 'west')": "a"},
        "numbers": {"1": "one", "null": "none", "false": "no", "2.5": "half"},
        "bad value": {"ok": 1, "costledger.dropped": ["bad"]},
        "bad key": {"ok": 1, "costledger.dropped": ["<_NoText>"]},
        "huge int": {"m": 5, "costledger.dropped": ["n"]},
        "cycle": {"loop": {"a": 1}, "costledger.dropped": ["loop.me"]},
    }
    events = {name: _event(n, metadata=md) for n, (name, md) in enumerate(cases.items())}
    with Ledger(url, spool_dir=tmp_path / "spool") as ledger:
        ledger.record_many(events.values())
        assert ledger.flush(timeout=60)
        stats = ledger.stats()
        stored = {name: ledger.get(e.id) for name, e in events.items()}

    assert (stats.inserted, stats.rejected, stats.dropped) == (len(cases), 0, 0)
    assert {name: dict(s.metadata) for name, s in stored.items() if s} == expected
    assert {name: s.total_cost for name, s in stored.items() if s} == dict.fromkeys(cases, COST)


def test_tracker_and_attribute_metadata_with_such_keys_is_stored(url: str, tmp_path: Path) -> None:
    with Ledger(url, spool_dir=tmp_path / "spool") as ledger:
        tracker = Tracker(ledger, log="off")
        usage = Usage(input_tokens=1000, output_tokens=100)
        one = tracker.record("gpt-4o-mini", usage, metadata={"scores": {uuid.UUID(int=7): 0.8}})
        with costledger.attribute(team="search", route={("eu", "west"): "a"}):
            two = tracker.record("gpt-4o-mini", usage)
        ledger.flush(timeout=60)
        first, second = ledger.get(one.id), ledger.get(two.id)
        stats = ledger.stats()

    assert (stats.inserted, stats.rejected) == (2, 0)
    assert first is not None
    assert second is not None
    assert dict(first.metadata) == {"scores": {"00000000-0000-0000-0000-000000000007": 0.8}}
    assert dict(second.metadata) == {"route": {"('eu', 'west')": "a"}}
    assert (second.team, first.total_cost, second.total_cost) == (
        "search",
        Decimal("0.00021000"),
        Decimal("0.00021000"),
    )


@pytest.fixture
def fresh_log_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger logs a kind of message at most once in 30 s per process: a test that
    reads one starts with none held back by an earlier test's."""
    monkeypatch.setattr(_core._report, "_last", {})
    monkeypatch.setattr(_core._report, "_held", {})


def test_a_rejected_event_is_written_whatever_its_metadata_holds(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, fresh_log_limits: None
) -> None:
    """The reject path wrote nothing for metadata JSON cannot hold, and said it had."""
    bad = _event(
        2,
        status=["error"],  # not text: rejected
        metadata={uuid.UUID(int=7): 1, "odd": _NoText(), _NoText(): 2, "n": 10**5000},
    )
    spool = tmp_path / "spool"
    with (
        caplog.at_level(logging.ERROR, logger="costledger.ledger"),
        Ledger(url, spool_dir=spool) as ledger,
    ):
        ledger.record_many([_event(1), bad, _event(3)])
        assert ledger.flush(timeout=60)
        stats = ledger.stats()
        ids = sorted(e.id for e in ledger.events())
    lines = _rejected_lines(spool)
    (path,) = spool.glob("rejected-*.jsonl")

    assert (stats.inserted, stats.rejected, stats.dropped) == (2, 1, 0)
    assert ids == ["evt-000001", "evt-000003"]
    assert [(line["id"], line["status"]) for line in lines] == [("evt-000002", ["error"])]
    assert lines[0]["metadata"] == {
        "UUID('00000000-0000-0000-0000-000000000007')": 1,
        "odd": "<_NoText>",
        "<_NoText>": 2,
        "n": "<int>",
    }
    assert lines[0]["total_cost"] == "0.000195000"
    (message,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert message.endswith(f"; kept in {path}")


def test_a_rejected_event_that_cannot_be_kept_is_not_said_to_be(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fresh_log_limits: None
) -> None:
    """When ``rejected-*.jsonl`` cannot be written, the log says the event is lost, and
    ``stats()`` counts it as dropped, not as kept."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with caplog.at_level(logging.ERROR, logger="costledger.ledger"):
        ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}", spool_dir=blocker / "spool", sync=True)
        ledger.record(_event(1, status=["error"]))
        stats = ledger.stats()
        ledger.close()

    assert (stats.rejected, stats.dropped) == (0, 1)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("costledger: 1 rejected event(s) or spool line(s) lost: cannot write")
        for m in messages
    )
    assert not any("kept in" in m for m in messages)


def test_a_cut_id_is_repriced_by_its_full_id(url: str, tmp_path: Path) -> None:
    """Re-pricing finds a row by its full id and moves its rollup group exactly."""
    long_id = "id-" + _junk(600)
    event = _event(1, id=long_id, user=_junk(500))
    new = Cost(status="priced", total=Decimal("1.5"), currency="USD")
    with Ledger(url, spool_dir=tmp_path / "spool") as ledger:
        ledger.record(event)
        assert ledger.flush(timeout=60)
        assert ledger.update_cost(long_id, new) is True
        stored = ledger.get(long_id)
        rows = [(r.user, r.requests, r.cost) for r in ledger.summary(by="user")]
    assert stored is not None
    assert stored.total_cost == Decimal("1.5")
    assert rows == [(_cut(event.user or ""), 1, Decimal("1.5"))]
