"""Calls that reported no usage (nothing to price): counted apart as ``no_usage`` in the
summaries, reports, ``whatif`` and the dashboard, never shown as a silent $0. Recorded
through the real ``Tracker`` on real SQLite files and a real PostgreSQL database; the
rollups' answer equals the events table's."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from costledger import Usage
from costledger._dashboard import build_dashboard
from costledger._ledger import Ledger, upgrade
from costledger._ledger._engine import make_engine, resolve_url
from costledger._ledger._migrate import HEAD, current_revision
from costledger._ledger._query import summarize_events
from costledger._ledger._rollups import plan, rebuild_rollups, summarize
from costledger._reports import report, whatif
from costledger._tracker import Tracker
from costledger.cli import app

PRICED = Decimal("0.00021")  # gpt-4o-mini: 1,000 input and 100 output tokens


def record_calls(ledger: Ledger) -> None:
    """Per feature: ``chat`` one priced call and one that returned no usage; ``stream`` a
    stream that ended without usage and one cancelled before any; ``failed`` a failed call
    without usage; ``unknown`` a call with usage of a model without a price."""
    tracker = Tracker(ledger, log="off")
    tracker.record(
        "gpt-4o-mini",
        Usage(input_tokens=1000, output_tokens=100),
        attribution={"feature": "chat"},
    )
    tracker.record("gpt-4o-mini", None, attribution={"feature": "chat"})
    call = tracker.start(source="api", model="gpt-4o-mini", attribution={"feature": "stream"})
    tracker.finish(call, streamed=True)
    call = tracker.start(source="api", model="gpt-4o-mini", attribution={"feature": "stream"})
    tracker.finish(call, status="cancelled", streamed=True)
    tracker.record(
        "gpt-4o-mini", None, status="error", error="boom", attribution={"feature": "failed"}
    )
    tracker.record(
        "no-such-model-for-no-usage",
        Usage(input_tokens=10, output_tokens=1),
        attribution={"feature": "unknown"},
    )


# (requests, errors, cancelled, unpriced, no_usage, cost) per feature
EXPECTED: dict[str, tuple[int, int, int, int, int, Decimal]] = {
    "chat": (2, 0, 0, 0, 1, PRICED),
    "stream": (2, 0, 1, 0, 2, Decimal(0)),
    "failed": (1, 1, 0, 0, 0, Decimal(0)),  # it consumed nothing: no blind spot
    "unknown": (1, 0, 0, 1, 0, Decimal(0)),
}
TOTAL = (6, 1, 1, 1, 3, PRICED)


def figures(row: Any) -> tuple[int, int, int, int, int, Decimal]:
    return (row.requests, row.errors, row.cancelled, row.unpriced, row.no_usage, row.cost)


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    with Ledger(url, sync=True) as opened:
        record_calls(opened)
        yield opened


def _events(ledger: Ledger) -> int:
    with ledger._core.store.read_connection() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM costledger_events")).scalar_one())


# -- the summaries: rollups and events table --------------------------------------------------


@pytest.mark.parametrize(
    "by",
    [(), ("feature",), ("status",), ("day", "feature"), ("month",), ("tag",), ("model", "user")],
    ids=lambda b: "+".join(b) or "total",
)
def test_rollups_equal_the_events_table(ledger: Ledger, by: tuple[str, ...]) -> None:
    store = ledger._core.store
    assert plan(by, None, None, {}).rollup
    got = summarize(store, by=by, since=None, until=None, filters={})
    direct = summarize_events(store, by=by, since=None, until=None, filters={})
    assert got == direct
    assert sum(r.no_usage for r in got) == TOTAL[4]
    for filters in ({"status": "cancelled"}, {"feature": ["chat", "failed"]}):
        got = summarize(store, by=by, since=None, until=None, filters=filters)
        assert got == summarize_events(store, by=by, since=None, until=None, filters=filters)


def test_summary_by_feature(ledger: Ledger) -> None:
    rows = {r.feature: figures(r) for r in ledger.summary(by="feature")}
    assert rows == EXPECTED
    by_status = {r.status: r.no_usage for r in ledger.summary(by="status")}
    assert by_status == {"ok": 2, "cancelled": 1, "error": 0}


def test_the_rollups_answer_it_and_a_rebuild_keeps_it(ledger: Ledger) -> None:
    """The count comes from the rollup rows a ledger already holds (every group has one
    status and one pricing status): rows written before this count existed answer it
    without a migration or a rebuild."""
    with ledger._core.store.engine.begin() as conn:  # behind the ledger's back
        conn.execute(sa.text("DELETE FROM costledger_events"))
    assert _events(ledger) == 0
    (total,) = ledger.summary(by=())
    assert figures(total) == TOTAL  # still the rollups' rows
    assert rebuild_rollups(ledger) == 0
    assert ledger.summary(by=()) == []


def test_a_ledger_at_the_current_revision_needs_no_migration(tmp_path: Path) -> None:
    """Rollups written by a costledger without this count (same schema revision): after
    a reopen, the counts are right at once, and equal after a rebuild."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    with Ledger(url, sync=True) as ledger:
        record_calls(ledger)
    engine = make_engine(resolve_url(url))
    try:
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("costledger_rollup_daily")}
        assert "no_usage" not in columns  # derived from status and pricing status
    finally:
        engine.dispose()
    with Ledger(url, sync=True) as ledger:
        assert figures(ledger.summary(by=())[0]) == TOTAL
        rebuild_rollups(ledger)
        assert {r.feature: figures(r) for r in ledger.summary(by="feature")} == EXPECTED


# -- report -----------------------------------------------------------------------------------


def test_report_rows_and_totals(ledger: Ledger) -> None:
    got = report(ledger, "feature", sort="key")
    assert {r.key[0]: figures(r) for r in got.rows} == EXPECTED
    (total,) = got.totals
    assert figures(total) == TOTAL
    assert report(ledger, "feature", sort="key", use_rollups=False) == got
    chat = next(r for r in got.rows if r.key == ("chat",))
    assert chat.as_dict()["no_usage"] == 1
    # converted into another currency, the count stays
    eur = report(ledger, "feature", currency="EUR", rates={"USD": "0.9"})
    assert sum(r.no_usage for r in eur.rows) == 3
    assert eur.totals[0].no_usage == 3


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_cli_json_and_csv(ledger: Ledger, url: str) -> None:
    result = run("report", "--db", url, "--by", "feature", "--sort", "key", "-f", "json")
    assert result.exit_code == 0, result.output
    rows = {r["feature"]: r for r in json.loads(result.stdout)}
    assert {k: (r["no_usage"], r["unpriced"], Decimal(r["cost"])) for k, r in rows.items()} == {
        k: (v[4], v[3], v[5]) for k, v in EXPECTED.items()
    }
    result = run("report", "--db", url, "-f", "csv")
    assert result.exit_code == 0, result.output
    (line,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert (line["requests"], line["no_usage"], line["unpriced"]) == ("6", "3", "1")
    assert Decimal(line["cost"]) == PRICED
    header = result.stdout.splitlines()[0].split(",")
    assert header.index("no_usage") == header.index("unpriced") + 1


def _cells(table: str, first: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").replace("┃", "|").split("|")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{table}")


def test_cli_table(ledger: Ledger, url: str) -> None:
    result = run("report", "--db", url, "--by", "feature", "--sort", "key")
    assert result.exit_code == 0, result.output
    header = _cells(result.stdout, "feature")
    assert "no usage" in header
    cost, none = header.index("cost"), header.index("no usage")
    chat, stream = _cells(result.stdout, "chat"), _cells(result.stdout, "stream")
    failed, total = _cells(result.stdout, "failed"), _cells(result.stdout, "total")
    assert (chat[none], Decimal(chat[cost])) == ("1", PRICED)
    assert (stream[none], stream[cost]) == ("2", "-")  # no call of it has a known cost
    assert (failed[none], Decimal(failed[cost])) == ("0", 0)  # failed, consumed nothing
    assert (total[none], Decimal(total[cost])) == ("3", PRICED)
    assert "warning: 3 call(s) reported no usage" in result.stderr
    assert "not included (not $0)" in result.stderr
    # only a stream without usage: its cost is unknown, never 0.00
    alone = run("report", "--db", url, "--feature", "stream")
    assert alone.exit_code == 0, alone.output
    header = _cells(alone.stdout, "requests")  # no --by: the totals are the one row
    assert _cells(alone.stdout, "2")[header.index("cost")] == "-"
    # no such calls selected: neither the column nor the warning
    priced = run("report", "--db", url, "--by", "feature", "--feature", "unknown")
    assert priced.exit_code == 0, priced.output
    assert "no usage" not in priced.stdout
    assert "reported no usage" not in priced.stderr


# -- whatif and the dashboard -----------------------------------------------------------------


def test_whatif_counts_them_apart(ledger: Ledger) -> None:
    result = whatif(ledger, {"gpt-4o-mini": {"input": "0.10", "output": "0.40"}})
    rows = {r.model: r for r in result.rows}
    mini = rows["gpt-4o-mini"]
    assert (mini.requests, mini.no_usage, mini.unpriced_then, mini.unpriced_book) == (5, 3, 0, 0)
    assert mini.cost_then == PRICED
    assert mini.cost_book == Decimal("0.00014")  # 1000 * 0.10 + 100 * 0.40, per million
    assert mini.compared == 1
    assert mini.as_dict()["no_usage"] == 3
    assert [t.no_usage for t in result.totals] == [3]
    assert result.unpriced_count == 1  # the unknown model's call, and only it


def test_whatif_cli_shows_no_amount_for_a_group_without_usage(
    ledger: Ledger, url: str, tmp_path: Path
) -> None:
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"gpt-4o-mini": {"input": "0.10", "output": "0.40"}}))
    result = run("whatif", "--db", url, "--price-book", str(book), "--feature", "stream")
    assert result.exit_code == 0, result.output
    header = _cells(result.stdout, "model")
    row = _cells(result.stdout, "gpt-4o-mini")
    assert row[header.index("no usage")] == "2"
    assert row[header.index("cost then")] == "-"
    assert row[header.index("under the book")] == "-"
    assert "2 call(s) reported no usage" in result.stderr


def test_dashboard_data(ledger: Ledger) -> None:
    dash = build_dashboard(ledger, since="30d")
    payload = dash.payload()
    assert payload["no_usage"] == {"calls": 3, "models": [{"model": "gpt-4o-mini", "calls": 3}]}
    assert payload["unpriced"]["calls"] == 1
    (totals,) = payload["totals"]
    assert (totals["requests"], totals["no_usage"], totals["unpriced"]) == (6, 3, 1)
    assert dash.no_usage == {"gpt-4o-mini": 3}
    groups = {g["feature"]: g for g in payload["cost_by_feature"]["groups"]}
    assert {k: g["no_usage"] for k, g in groups.items()} == {k: v[4] for k, v in EXPECTED.items()}
