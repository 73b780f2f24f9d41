"""The Alembic migrations: an empty database, twice, from several processes at once, and
a schema that matches the SQLModel tables exactly."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from costledger._ledger import Ledger, SchemaError, upgrade
from costledger._ledger._engine import make_engine, resolve_url
from costledger._ledger._migrate import HEAD, alembic_config, current_revision
from costledger._ledger._tables import VERSION_TABLE, metadata


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))


def test_head_constant_matches_the_scripts() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_current_head() == HEAD


def test_upgrade_an_empty_database_twice(empty_url: str) -> None:
    engine = make_engine(resolve_url(empty_url))
    try:
        assert current_revision(engine) is None
        upgrade(empty_url)
        assert current_revision(engine) == HEAD
        upgrade(empty_url)  # idempotent
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            assert {"costledger_events", VERSION_TABLE} <= tables
            assert "alembic_version" not in tables  # the host's own Alembic table is untouched
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(empty_url: str) -> None:
    upgrade(empty_url)
    engine = make_engine(resolve_url(empty_url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": False}
            )

            def include(
                obj: object, name: str | None, kind: str, reflected: bool, other: object
            ) -> bool:
                if kind == "table":
                    return name == "costledger_events"
                # the GIN index exists only on PostgreSQL (ddl_if)
                return not (conn.dialect.name != "postgresql" and name == "costledger_events_tags")

            ctx.opts["include_object"] = include
            diffs = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_ledger_migrates_on_first_use(empty_url: str) -> None:
    with Ledger(empty_url, sync=True) as ledger:
        assert ledger.summary() == []
    engine = make_engine(resolve_url(empty_url))
    try:
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_concurrent_first_starts(empty_url: str) -> None:
    code = "import sys; from costledger._ledger import upgrade; upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, empty_url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    engine = make_engine(resolve_url(empty_url))
    try:
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_unknown_newer_revision_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    upgrade(url)
    engine = make_engine(resolve_url(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
        with pytest.raises(SchemaError, match="9999"):
            upgrade(url)
    finally:
        engine.dispose()


def test_offline_sql_for_a_dba(capsys: pytest.CaptureFixture[str]) -> None:
    upgrade("postgresql://u@localhost/db", sql=True)
    out = capsys.readouterr().out
    assert "CREATE TABLE costledger_events" in out
    assert "NUMERIC(38, 18)" in out
    assert "USING gin" in out


def _downgrade(url: str, revision: str) -> None:
    """Take the schema back as Alembic would (the connection holds the migration lock)."""
    from alembic import command

    from costledger._ledger._engine import BEGIN_OPTION

    engine = make_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> list[str]:
    engine = make_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return [c["name"] for c in sa.inspect(conn).get_columns(table)]
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["db upgrade", "first use"])
def test_upgrading_0002_with_data_fills_the_bounds(empty_url: str, how: str) -> None:
    """A ledger left at 0002 (sums, no ``max_cost``) by an older costledger: after 0003,
    ``top`` equals a direct SQL recomputation and every bound is its group's dearest call."""
    from costledger._ledger._rollups import BOUND, CUBES, rebuild_rollups, rollup_rows
    from costledger._reports import top

    from .test_reports_api import expected_top, top_history
    from .test_reports_rollups import assert_bounds, assert_rollups_match

    events = top_history(400, seed=77)
    with Ledger(empty_url, sync=True) as ledger:
        ledger.record_many(events)
    _downgrade(empty_url, "0002")
    engine = make_engine(resolve_url(empty_url))
    try:
        assert current_revision(engine) == "0002"
    finally:
        engine.dispose()
    assert BOUND not in _columns(empty_url, "costledger_rollup_daily")
    if how == "db upgrade":
        upgrade(empty_url)  # what `costledger db upgrade` runs
    with Ledger(empty_url, sync=True) as ledger:  # else: ensure_schema on first use
        assert sum(r.requests for r in ledger.summary()) == len(events)
        engine = ledger._core.store.engine
        assert current_revision(engine) == HEAD
        for cube in CUBES:
            assert (BOUND in _columns(empty_url, cube.table)) == cube.bounded
        assert_rollups_match(ledger, events)
        assert_bounds(ledger, events, exact=True)
        with engine.connect() as conn:  # the direct recomputation: plain SQL, exact Decimals
            rows = conn.exec_driver_sql(
                "SELECT id, timestamp, total_cost, currency FROM costledger_events "
                "WHERE total_cost IS NOT NULL"
            ).all()
        direct = sorted(
            ((str(i), _utc(ts), Decimal(str(cost)), cur) for i, ts, cost, cur in rows),
            key=lambda r: (r[3], -r[2], r[1], r[0]),
        )
        currencies = sorted({r[3] for r in direct})
        for n in (1, 10, 100):
            got = [(e.id, e.total_cost) for e in top(ledger, n)]
            # each currency its own top n, currency after currency (never ranked together)
            assert got == [
                (i, cost)
                for c in currencies
                for i, _, cost, _ in [r for r in direct if r[3] == c][:n]
            ]
            assert got == expected_top(events, n)
        assert len(direct) > 250
        before = [rollup_rows(ledger, cube.table) for cube in CUBES]
        assert rebuild_rollups(ledger) == len(events)  # `costledger db rebuild-rollups`
        assert [rollup_rows(ledger, cube.table) for cube in CUBES] == before
        assert_bounds(ledger, events, exact=True)


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return datetime.fromisoformat(str(value)).astimezone(timezone.utc)


def test_ledgers_created_in_several_threads_at_once_all_migrate(tmp_path: Path) -> None:
    """Alembic's migration context is process-wide: concurrent migrations of different
    databases in one process removed each other's proxies (KeyError: 'config'), misused
    SQLite connections and could crash the interpreter. Run in a child process, since the
    failure may be a crash."""
    script = tmp_path / "race.py"
    script.write_text(
        "import threading\n"
        "from costledger import Ledger\n"
        "errors = []\n"
        "def one():\n"
        "    try:\n"
        "        with Ledger('sqlite://', sync=True) as ledger:\n"
        "            assert ledger.summary() == []\n"
        "    except BaseException as exc:\n"
        "        errors.append(repr(exc))\n"
        "for _ in range(15):\n"
        "    threads = [threading.Thread(target=one) for _ in range(6)]\n"
        "    [t.start() for t in threads]\n"
        "    [t.join() for t in threads]\n"
        "print('errors', len(errors), errors[:3])\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "errors 0 []"
