"""A SQL database as guard store (PostgreSQL or SQLite), for example the ledger's own.

Four small tables named ``<prefix>_counters``, ``_buckets``, ``_reservations`` and
``_marks`` (prefix ``costledger_guard`` unless the URL says ``?prefix=...``), created
on first use. Every operation is one transaction that first locks the counter's row:
``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` (the database write lock)
on SQLite. Amounts are BIGINT units (see ``_spec``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._store import (
    Acquired,
    Admission,
    CounterState,
    GuardStore,
    Marks,
    Settlement,
    StoreUnavailable,
    display_url,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["SqlStore"]

_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_NEVER = 2**62
_BUSY_TIMEOUT_MS = 30_000


class SqlStore(GuardStore):
    kind = "sql"

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        text = url.strip()
        if text.startswith("postgres://"):
            text = "postgresql://" + text[len("postgres://") :]
        try:
            parsed = make_url(text)
        except ArgumentError as exc:
            raise ValueError(
                f"guard_store {display_url(url)!r} is not a valid URL: {exc}"
            ) from None
        query = dict(parsed.query)
        prefix = str(query.pop("prefix", "costledger_guard"))
        if not _PREFIX_RE.match(prefix):
            raise ValueError(
                f"guard_store prefix must be a SQL identifier of at most 40 letters, digits"
                f" and underscores, got {prefix!r}"
            )
        self.timeout = float(str(query.pop("timeout", "5")))
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._url = parsed.set(query=query)
        self.url = parsed.render_as_string(hide_password=True)
        self.prefix = prefix
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._pruned: dict[str, float] = {}
        self._next_gc = 0.0
        backend = parsed.get_backend_name()
        self._is_pg = backend == "postgresql"
        if backend not in ("postgresql", "sqlite"):
            raise ValueError(
                f"guard_store {self.url!r}: a SQL guard store must be PostgreSQL or SQLite"
                f" (or use 'memory://' or a redis:// URL), not {backend!r}"
            )
        if backend == "sqlite" and (parsed.database or ":memory:") == ":memory:":
            raise ValueError(
                f"guard_store {self.url!r}: an in-memory SQLite database is private to one"
                " connection; use 'memory://' for one process, or a SQLite file"
            )
        self._sql = _statements(prefix, for_update=" FOR UPDATE" if self._is_pg else "")

    # -- connection --------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> Engine:
        from sqlalchemy import create_engine, event

        if self._is_pg:
            engine = create_engine(
                self._url,
                pool_size=16,
                max_overflow=16,
                connect_args={
                    "connect_timeout": max(1, int(self.timeout)),
                    "application_name": "costledger-guards",
                },
            )
        else:
            engine = create_engine(
                self._url, connect_args={"check_same_thread": False, "timeout": 30}
            )

            @event.listens_for(engine, "connect")
            def _connect(dbapi_connection: Any, _record: Any) -> None:
                # We issue BEGIN ourselves: IMMEDIATE takes the write lock up front, so
                # a transaction never fails half-way upgrading a read lock.
                dbapi_connection.isolation_level = None
                cur = dbapi_connection.cursor()
                cur.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            self._create_tables(engine)
        except Exception as exc:
            engine.dispose()
            raise self._unavailable(exc) from exc
        return engine

    def _create_tables(self, engine: Engine) -> None:
        from sqlalchemy import text

        p = self.prefix
        ddl = [
            f"CREATE TABLE IF NOT EXISTS {p}_counters (counter VARCHAR(512) PRIMARY KEY,"
            " seeded INTEGER NOT NULL DEFAULT 0, reserved BIGINT NOT NULL DEFAULT 0,"
            " next_expiry BIGINT NOT NULL DEFAULT 4611686018427387904, keep_until BIGINT)",
            f"CREATE TABLE IF NOT EXISTS {p}_buckets (counter VARCHAR(512) NOT NULL,"
            " bucket BIGINT NOT NULL, amount BIGINT NOT NULL, PRIMARY KEY (counter, bucket))",
            f"CREATE TABLE IF NOT EXISTS {p}_reservations (counter VARCHAR(512) NOT NULL,"
            " id VARCHAR(64) NOT NULL, amount BIGINT NOT NULL, expires_at BIGINT NOT NULL,"
            " PRIMARY KEY (counter, id))",
            f"CREATE TABLE IF NOT EXISTS {p}_marks (counter VARCHAR(512) NOT NULL,"
            " label VARCHAR(64) NOT NULL, PRIMARY KEY (counter, label))",
        ]
        with engine.begin() as conn:
            if self._is_pg:
                # Several processes may start at once; CREATE TABLE IF NOT EXISTS alone
                # races on PostgreSQL's catalog.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:p))"), {"p": p})
            for statement in ddl:
                conn.execute(text(statement))

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.url, exc)

    def _tx(self) -> Any:
        return _Tx(self)

    # -- helpers inside a transaction ----------------------------------------------------------
    def _lock_counter(
        self, conn: Connection, counter: str, keep_until: int | None
    ) -> tuple[int, int, int]:
        s = self._sql
        row = conn.execute(s["lock"], {"c": counter}).first()
        if row is None:
            conn.execute(s["create"], {"c": counter, "k": keep_until})
            row = conn.execute(s["lock"], {"c": counter}).first()
            assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def _spent(self, conn: Connection, counter: str, floor: int) -> int:
        self._maybe_prune(conn, counter, floor)
        return int(conn.execute(self._sql["spent"], {"c": counter, "f": floor}).scalar_one())

    def _maybe_prune(self, conn: Connection, counter: str, floor: int) -> None:
        if floor <= 0:
            return
        now = time.monotonic()
        if self._pruned.get(counter, 0.0) > now:
            return
        self._pruned[counter] = now + 60.0
        if len(self._pruned) > 10_000:
            self._pruned.clear()
        conn.execute(self._sql["prune"], {"c": counter, "f": floor})

    def _expire(self, conn: Connection, counter: str, now_ms: int, reserved: int) -> int:
        s = self._sql
        gone = conn.execute(s["expired"], {"c": counter, "n": now_ms}).scalar_one()
        if gone:
            conn.execute(s["drop_expired"], {"c": counter, "n": now_ms})
            reserved -= int(gone)
        nxt = conn.execute(s["next_expiry"], {"c": counter}).scalar_one()
        conn.execute(
            s["set_reserved"],
            {"c": counter, "r": reserved, "e": _NEVER if nxt is None else int(nxt)},
        )
        return reserved

    def _fire(self, conn: Connection, counter: str, spent: int, marks: Marks) -> tuple[str, ...]:
        fired = []
        for label, units in marks:
            if spent >= units:
                result = conn.execute(self._sql["mark"], {"c": counter, "l": label})
                if result.rowcount == 1:
                    fired.append(label)
        return tuple(fired)

    def _gc(self, conn: Connection, now_ms: int) -> None:
        """Drop counters of periods long over (once a minute per process)."""
        if time.monotonic() < self._next_gc:
            return
        self._next_gc = time.monotonic() + 60.0
        s = self._sql
        for table in ("gc_buckets", "gc_reservations", "gc_marks", "gc_counters"):
            conn.execute(s[table], {"n": now_ms})

    # -- operations ------------------------------------------------------------------------------
    def reserve(
        self,
        counter: str,
        *,
        res_id: str,
        amount: int,
        limit: int | None,
        floor: int,
        now_ms: int,
        expires_ms: int,
        keep_until: int | None,
        refuse_mark: str | None,
    ) -> Admission:
        s = self._sql
        with self._tx() as conn:
            self._gc(conn, now_ms)
            seeded, reserved, next_expiry = self._lock_counter(conn, counter, keep_until)
            if not seeded:
                return Admission("unseeded")
            if next_expiry <= now_ms:
                reserved = self._expire(conn, counter, now_ms, reserved)
                next_expiry = _NEVER
            spent = self._spent(conn, counter, floor)
            if limit is not None and spent + reserved + amount > limit:
                first = False
                if refuse_mark is not None:
                    result = conn.execute(s["mark"], {"c": counter, "l": refuse_mark})
                    first = result.rowcount == 1
                return Admission("refused", spent, reserved, first)
            conn.execute(s["hold"], {"c": counter, "i": res_id, "a": amount, "e": expires_ms})
            conn.execute(
                s["update"],
                {
                    "c": counter,
                    "r": reserved + amount,
                    "e": min(next_expiry, expires_ms),
                    "k": keep_until,
                },
            )
            return Admission("ok", spent, reserved)

    def seed(
        self,
        counter: str,
        *,
        buckets: Mapping[int, int],
        marks: Marks,
        floor: int,
        keep_until: int | None,
    ) -> bool:
        s = self._sql
        with self._tx() as conn:
            seeded, _, _ = self._lock_counter(conn, counter, keep_until)
            if seeded:
                return False
            for bucket, units in buckets.items():
                conn.execute(s["add"], {"c": counter, "b": bucket, "a": units})
            spent = self._spent(conn, counter, floor)
            self._fire(conn, counter, spent, marks)
            conn.execute(s["seeded"], {"c": counter})
            return True

    def settle(
        self,
        counter: str,
        *,
        res_id: str | None,
        reserved: int,
        bucket: int,
        amount: int,
        floor: int,
        keep_until: int | None,
        marks: Marks,
    ) -> Settlement:
        s = self._sql
        with self._tx() as conn:
            _, total_reserved, _ = self._lock_counter(conn, counter, keep_until)
            if res_id is not None:
                result = conn.execute(s["unhold"], {"c": counter, "i": res_id})
                if result.rowcount == 1:
                    total_reserved -= reserved
                    conn.execute(s["less_reserved"], {"c": counter, "a": reserved})
            if amount:
                conn.execute(s["add"], {"c": counter, "b": bucket, "a": amount})
            spent = self._spent(conn, counter, floor)
            fired = self._fire(conn, counter, spent, marks) if marks else ()
            return Settlement(spent, total_reserved, fired)

    def release(self, counter: str, *, res_id: str, reserved: int) -> None:
        s = self._sql
        with self._tx() as conn:
            self._lock_counter(conn, counter, None)
            result = conn.execute(s["unhold"], {"c": counter, "i": res_id})
            if result.rowcount == 1:
                conn.execute(s["less_reserved"], {"c": counter, "a": reserved})

    def read(self, counter: str, *, floor: int, now_ms: int) -> CounterState:
        s = self._sql
        with self._tx() as conn:
            row = conn.execute(s["lock"], {"c": counter}).first()
            if row is None:
                return CounterState(0, 0, False)
            seeded, reserved, next_expiry = int(row[0]), int(row[1]), int(row[2])
            if next_expiry <= now_ms:
                reserved = self._expire(conn, counter, now_ms, reserved)
            return CounterState(self._spent(conn, counter, floor), reserved, bool(seeded))

    def counters(self, prefix: str) -> list[str]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._tx() as conn:
            rows = conn.execute(self._sql["list"], {"p": escaped + "%"}).all()
        return [str(r[0]) for r in rows]

    def acquire(
        self,
        counter: str,
        *,
        bucket: int,
        amount: int,
        limit: int,
        floor: int,
        keep_until: int,
    ) -> Acquired:
        s = self._sql
        with self._tx() as conn:
            self._lock_counter(conn, counter, keep_until)
            used = self._spent(conn, counter, floor)
            if used + amount > limit:
                need = used + amount - limit
                dropped = 0
                for b, units in conn.execute(s["buckets"], {"c": counter, "f": floor}):
                    dropped += int(units)
                    if dropped >= need:
                        return Acquired(False, used, int(b))
                return Acquired(False, used, None)
            conn.execute(s["add"], {"c": counter, "b": bucket, "a": amount})
            conn.execute(s["keep"], {"c": counter, "k": keep_until})
            return Acquired(True, used)

    def adjust(self, counter: str, *, bucket: int, delta: int, floor: int, keep_until: int) -> None:
        if bucket < floor or not delta:
            return
        with self._tx() as conn:
            self._lock_counter(conn, counter, keep_until)
            conn.execute(self._sql["adjust"], {"c": counter, "b": bucket, "a": delta})

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class _Tx:
    """``engine.begin()`` that turns connection and server failures into ``StoreUnavailable``."""

    __slots__ = ("_ctx", "_store")

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._ctx: Any = None

    def __enter__(self) -> Connection:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self._ctx = self._store.engine.begin()
            conn: Connection = self._ctx.__enter__()
        except StoreUnavailable:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise self._store._unavailable(exc) from exc
        return conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self._ctx.__exit__(exc_type, exc, tb)
        except (SQLAlchemyError, OSError) as err:
            raise self._store._unavailable(err) from err
        if exc is not None and isinstance(exc, (SQLAlchemyError, OSError)):
            raise self._store._unavailable(exc) from exc


def _statements(p: str, *, for_update: str) -> dict[str, Any]:
    from sqlalchemy import text

    sql = {
        "lock": f"SELECT seeded, reserved, next_expiry FROM {p}_counters"
        f" WHERE counter = :c{for_update}",
        "create": f"INSERT INTO {p}_counters (counter, keep_until) VALUES (:c, :k)"
        " ON CONFLICT (counter) DO NOTHING",
        "update": f"UPDATE {p}_counters SET reserved = :r, next_expiry = :e, keep_until = :k"
        " WHERE counter = :c",
        "keep": f"UPDATE {p}_counters SET keep_until = :k WHERE counter = :c",
        "set_reserved": f"UPDATE {p}_counters SET reserved = :r, next_expiry = :e"
        " WHERE counter = :c",
        "less_reserved": f"UPDATE {p}_counters SET reserved = reserved - :a WHERE counter = :c",
        "seeded": f"UPDATE {p}_counters SET seeded = 1 WHERE counter = :c",
        "spent": f"SELECT COALESCE(SUM(amount), 0) FROM {p}_buckets"
        " WHERE counter = :c AND bucket >= :f",
        "buckets": f"SELECT bucket, amount FROM {p}_buckets WHERE counter = :c AND bucket >= :f"
        " ORDER BY bucket",
        "prune": f"DELETE FROM {p}_buckets WHERE counter = :c AND bucket < :f",
        "add": f"INSERT INTO {p}_buckets (counter, bucket, amount) VALUES (:c, :b, :a)"
        f" ON CONFLICT (counter, bucket) DO UPDATE SET amount = {p}_buckets.amount"
        " + excluded.amount",
        "adjust": f"UPDATE {p}_buckets SET amount = CASE WHEN amount + :a < 0 THEN 0"
        " ELSE amount + :a END WHERE counter = :c AND bucket = :b",
        "hold": f"INSERT INTO {p}_reservations (counter, id, amount, expires_at)"
        " VALUES (:c, :i, :a, :e)",
        "unhold": f"DELETE FROM {p}_reservations WHERE counter = :c AND id = :i",
        "expired": f"SELECT SUM(amount) FROM {p}_reservations"
        " WHERE counter = :c AND expires_at <= :n",
        "drop_expired": f"DELETE FROM {p}_reservations WHERE counter = :c AND expires_at <= :n",
        "next_expiry": f"SELECT MIN(expires_at) FROM {p}_reservations WHERE counter = :c",
        "mark": f"INSERT INTO {p}_marks (counter, label) VALUES (:c, :l)"
        " ON CONFLICT (counter, label) DO NOTHING",
        "list": f"SELECT counter FROM {p}_counters WHERE counter LIKE :p ESCAPE '\\'",
        "gc_buckets": f"DELETE FROM {p}_buckets WHERE counter IN (SELECT counter FROM"
        f" {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n)",
        "gc_reservations": f"DELETE FROM {p}_reservations WHERE counter IN (SELECT counter FROM"
        f" {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n)",
        "gc_marks": f"DELETE FROM {p}_marks WHERE counter IN (SELECT counter FROM"
        f" {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n)",
        "gc_counters": f"DELETE FROM {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n",
    }
    return {name: text(statement) for name, statement in sql.items()}
