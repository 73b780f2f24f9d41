"""The Alembic migrations: an empty database, twice, from several processes at once, and
a schema that matches the SQLModel tables exactly."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
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


@pytest.fixture
def pg_fresh(postgres_url: str) -> Iterator[str]:
    admin = sa.create_engine(resolve_url(postgres_url), isolation_level="AUTOCOMMIT")
    name = f"costledger_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield resolve_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("pg_fresh"))


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
