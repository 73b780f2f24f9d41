"""Database URL resolution and engine setup (SQLite pragmas, exact aggregates, psycopg 3)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from .._redact import explain_unparsable_url, mask_userinfo, redact_url
from .._sqlite import prepare_sqlite_connection
from ._money import decimal_sum_aggregate

__all__ = [
    "DEFAULT_URL",
    "FILE_ID",
    "URL_ENV",
    "default_spool_dir",
    "display_url",
    "file_id",
    "is_memory_sqlite",
    "make_engine",
    "parse_url_text",
    "resolve_url",
    "sqlite_path",
]

URL_ENV = "COSTLEDGER_DATABASE_URL"
DEFAULT_URL = "sqlite:///costledger.db"
BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite writer waits for another process's write lock before failing (and spooling)."""
BEGIN_OPTION = "costledger_sqlite_begin"
"""Connection execution option: ``"IMMEDIATE"`` makes a SQLite transaction take the write lock
at BEGIN, so a write transaction can never fail half-way on a lock upgrade."""


def resolve_url(url: str | URL | None = None) -> URL:
    """The argument, else ``$COSTLEDGER_DATABASE_URL``, else ``sqlite:///costledger.db``.

    ``postgres://`` and ``postgresql://`` are rewritten to the psycopg 3 driver
    (``postgresql+psycopg://``); an explicit driver is kept.
    """
    if url is None:
        url = os.environ.get(URL_ENV) or DEFAULT_URL
    if isinstance(url, str):
        parsed = parse_url_text(url, "database url")
    elif isinstance(url, URL):
        parsed = url
    else:
        raise TypeError(f"database url must be a str or sqlalchemy URL, got {url!r}")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"database url {display_url(parsed)!r}: "
            f"costledger supports sqlite and postgresql, not {backend!r}"
        )
    return parsed


# SQLAlchemy's reading of "scheme://user:password@host...": the password stops at the first
# "@". Another "@" before the query means the password held an unencoded one, and its tail
# would be taken for the host (or the database), which the driver's errors quote.
_UNENCODED_AT = re.compile(r"[\w+]+://[^:/]*:[^@]*@[^?]*@")


def parse_url_text(url: str, argument: str) -> URL:
    """A database URL given as text, read for the ledger and the SQL guard store alike.

    ``postgres://`` is read as ``postgresql://``. A URL that does not parse, or whose
    password holds an unencoded ``@``, is a ``ValueError`` naming ``argument`` and showing
    the URL with everything from ``user:`` to the last ``@`` as ``***``."""
    text = url.strip()
    if not text:
        raise ValueError(f"{argument} must not be empty, got {url!r}")
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    try:
        parsed = make_url(text)
    except Exception as exc:
        shown, detail = explain_unparsable_url(url.strip(), str(exc), make_url)
        raise ValueError(f"{argument} {shown!r} is not a valid URL: {detail}") from None
    if _UNENCODED_AT.match(text):
        raise ValueError(
            f"{argument} {redact_url(mask_userinfo(url.strip()))!r} is not a valid URL:"
            " the password holds an '@': percent-encode it as %40"
        )
    return parsed


def display_url(url: URL) -> str:
    """The URL to show: no password, in the userinfo or as a query parameter."""
    return redact_url(url.render_as_string(hide_password=True))


def is_memory_sqlite(url: URL) -> bool:
    if url.get_backend_name() != "sqlite":
        return False
    db = url.database or ""
    return db in ("", ":memory:") or "mode=memory" in db or url.query.get("mode") == "memory"


def sqlite_path(url: URL) -> Path | None:
    """The database file of a file-backed SQLite URL."""
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    db = url.database or ""
    if db.startswith("file:"):
        db = db[len("file:") :].split("?", 1)[0]
    return Path(db).expanduser().absolute()


def default_spool_dir(url: URL) -> Path:
    """Next to a SQLite file (``<file>.spool/``), else ``~/.costledger/spool/<hash of url>``."""
    path = sqlite_path(url)
    if path is not None:
        return path.with_name(path.name + ".spool")
    # the name spooled events are found by: not display_url, whose masking may grow
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path.home() / ".costledger" / "spool" / digest


def _sqlite_connect(dbapi_connection: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
    # costledger emits BEGIN itself (see _sqlite_begin): transactional DDL for the
    # migrations, and BEGIN IMMEDIATE for writes.
    prepare_sqlite_connection(dbapi_connection, busy_timeout_ms=BUSY_TIMEOUT_MS)
    dbapi_connection.create_aggregate("decimal_sum", 1, decimal_sum_aggregate)  # type: ignore[arg-type]  # typeshed wants a Protocol the class satisfies structurally
    dbapi_connection.execute("PRAGMA temp_store = MEMORY")


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def make_engine(url: URL) -> Engine:
    """An engine with costledger's connection setup; SQLite in-memory uses one shared connection."""
    kwargs: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False}
        if is_memory_sqlite(url):
            kwargs["poolclass"] = StaticPool
        path = sqlite_path(url)
    else:
        path = None
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 4
        kwargs["max_overflow"] = 4
        connect_args: dict[str, Any] = {"connect_timeout": 5, "application_name": "costledger"}
        kwargs["connect_args"] = connect_args
    try:
        engine = create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:  # the driver of a URL's database
        from .._errors import missing_extra

        extra = "postgres" if backend == "postgresql" else "all"
        raise missing_extra(exc, f"a {backend} ledger ({display_url(url)})", extra) from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        if path is not None:

            def _make_parent(*_: Any) -> None:
                # Best effort: a missing directory is created; an unwritable one makes
                # the connect fail and the ledger spool until it is fixed.
                with contextlib.suppress(OSError):
                    path.parent.mkdir(parents=True, exist_ok=True)

            event.listen(engine, "do_connect", _make_parent)

            def _note_file(_: Any, record: ConnectionPoolEntry) -> None:
                record.info[FILE_ID] = file_id(path)

            event.listen(engine, "connect", _note_file)
    return engine


FILE_ID = "costledger_file_id"
"""Pool entry info key: ``file_id`` of a SQLite connection's file, as it connected."""


def file_id(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path``; ``None`` when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
