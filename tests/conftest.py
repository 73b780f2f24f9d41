"""Shared fixtures: server URLs for the backends the tests run against.

A test that needs PostgreSQL or Redis skips with a clear reason when the URL is unset; under
``CI=true`` an unset or unreachable server fails the run instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ._fake_provider import FakeProvider

IN_CI = os.environ.get("CI", "").lower() == "true"


def _server_url(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        if IN_CI:
            pytest.fail(f"{var} is not set, and CI=true requires every backend")
        pytest.skip(f"{var} is not set; export it to run this test")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        with socket.create_connection((host, port or 0), timeout=2):
            pass
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"{var}={url} is unreachable under CI=true: {exc}")
        pytest.skip(f"{var}={url} is unreachable: {exc}")
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _server_url("COSTLEDGER_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _server_url("COSTLEDGER_TEST_REDIS_URL")


# -- ledgers on both backends ----------------------------------------------------------------


@contextlib.contextmanager
def _new_pg_database(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    from costledger._ledger._engine import resolve_url

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


@pytest.fixture(scope="session")
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (other runs share the server)."""
    with _new_pg_database(postgres_url) as url:
        yield url


@pytest.fixture
def fresh_pg_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, without the ledger's schema."""
    with _new_pg_database(postgres_url) as url:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session database, emptied for this test (the truncate trigger empties the
    rollups with the events)."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        if sa.inspect(conn).has_table("costledger_events"):
            conn.exec_driver_sql("TRUNCATE costledger_events")
    engine.dispose()
    return pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ledger URL on each backend: a SQLite file, and an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_url"))


# -- guards ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_memory_guard_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty ``memory://`` guard store. The store is one per
    process (every tracker naming it shares it, as in an application), so without this
    one test's counters would carry over into the next."""
    from costledger._guards import _store

    monkeypatch.setattr(_store, "_memory", None)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """The fake OpenAI / Anthropic API on 127.0.0.1 (``_fake_provider``), one per module."""
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fresh_provider(provider: FakeProvider) -> FakeProvider:
    """``provider`` with no scripted replies or recorded requests left by another test:
    a module that uses it marks itself ``pytest.mark.usefixtures("fresh_provider")``."""
    provider.reset()
    return provider
