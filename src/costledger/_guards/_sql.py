"""A SQL database as guard store (PostgreSQL or SQLite), for example the ledger's own.

Five small tables named ``<prefix>_counters``, ``_buckets``, ``_reservations``,
``_marks`` and ``_settled`` (the ids settled in the last hour: a settle is idempotent per
id; prefix ``costledger_guard`` unless the URL says ``?prefix=...``), created on first
use. Every operation is one transaction that first locks the counter's row, and answers
within the URL's ``timeout`` (PostgreSQL: statement and lock timeouts, TCP keepalives;
SQLite: the busy timeout) or fails as the store being unavailable.

On PostgreSQL the operations on the call path (reserve, settle, release, acquire) are
PL/pgSQL functions, the SQL analogue of the Redis scripts: one round trip each, and the
row lock (``SELECT ... FOR UPDATE``) is held for microseconds rather than for a dialogue
of statements. Every statement inside a function takes a fresh snapshot (READ
COMMITTED), so the sums read after the lock see every settle committed before it.
On SQLite they are plain statements in a ``BEGIN IMMEDIATE`` transaction (the database
write lock), in-process and cheap. Amounts are BIGINT units (see ``_spec``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._sqlite import prepare_sqlite_connection
from ._store import (
    SETTLED_KEEP_MS,
    Acquired,
    Admission,
    CounterState,
    GuardStore,
    Marks,
    Settlement,
    StoreUnavailable,
    display_url,
    parse_timeout,
    store_shift,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["SqlStore"]

_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_NEVER = 2**62


_stores: weakref.WeakSet[SqlStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (gunicorn --preload, a multiprocessing fork) must never talk to the
    database over the parent's pooled connections: two processes on one PostgreSQL
    connection corrupt its protocol ("got no result", "prepared statement already
    exists") for both. The child gets empty pools (the parent's connections are left
    open for the parent) and new locks."""
    for store in list(_stores):
        store._lock = threading.Lock()
        for engine in (store._engine, store._auto):
            if engine is not None:
                engine.dispose(close=False)


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SqlStore(GuardStore):
    kind = "sql"

    def __init__(self, url: str) -> None:
        # The ledger's reading: a password with an unencoded "@" is refused here, before
        # the driver's errors quote its tail as the host.
        from .._ledger._engine import parse_url_text

        parsed = parse_url_text(url, "guard_store")
        query = dict(parsed.query)
        prefix = str(query.pop("prefix", "costledger_guard"))
        if not _PREFIX_RE.match(prefix):
            raise ValueError(
                f"guard_store prefix must be a SQL identifier of at most 40 letters, digits"
                f" and underscores, got {prefix!r}"
            )
        timeout = query.pop("timeout", None)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._url = parsed.set(query=query)
        # SQLAlchemy hides the userinfo password only: display_url hides ?password=... too
        self.url = display_url(parsed.render_as_string(hide_password=True))
        # Seconds to connect, to wait for a pooled connection, and for each operation to
        # answer (PostgreSQL: statement and lock timeouts, TCP keepalives and user timeout;
        # SQLite: the busy timeout on the database's write lock).
        self.timeout = parse_timeout(
            None if timeout is None else str(timeout), url=self.url, default=5.0
        )
        self.prefix = prefix
        self._engine: Engine | None = None
        self._auto: Engine | None = None
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
        self._sql = _statements(prefix, pg=self._is_pg)
        self._pg: dict[str, str] = _pg_calls(prefix) if self._is_pg else {}
        _stores.add(self)

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

        timeout_ms = max(1, int(self.timeout * 1000))
        if self._is_pg:
            try:
                import psycopg  # noqa: F401 - the driver, for a clear error
            except ModuleNotFoundError as exc:
                from .._errors import missing_extra

                raise missing_extra(exc, f"guard store {self.url}", "postgres") from None
            # whole seconds; psycopg (like libpq) raises anything below 2 to 2 (documented)
            whole = max(1, math.ceil(self.timeout))
            connect_args = {
                "connect_timeout": whole,
                "application_name": "costledger-guards",
                # A commit need not wait for its WAL to reach the disk: that wait
                # (milliseconds) dominated every guard operation. Only a crash of the
                # PostgreSQL server itself can lose the last fraction of a second of
                # guard writes, never corrupt them; the ledger stays fully durable (it
                # has its own connections), and spend lost here is reseeded from it
                # only if the counter is gone, so such a crash can under-count a
                # counter by what was settled in that fraction of a second.
                # A statement (a lock wait included) that runs longer than the timeout
                # is cancelled by the server: a locked counter row (a stuck session, a
                # lock taken by hand) must not hang the guarded call.
                "options": "-c synchronous_commit=off"
                f" -c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
                " -c idle_in_transaction_session_timeout=60000",
                # A server or network that stops answering: the kernel gives up on the
                # connection (unacknowledged data, dead keepalives) instead of waiting
                # the many minutes of the TCP defaults.
                "keepalives": 1,
                "keepalives_idle": whole,
                "keepalives_interval": whole,
                "keepalives_count": 2,
            }
            if _libpq_version() >= 120000:  # older libpq refuses the option
                connect_args["tcp_user_timeout"] = timeout_ms
            engine = create_engine(
                self._url,
                pool_size=4,
                max_overflow=8,
                pool_timeout=self.timeout,
                connect_args=connect_args,
            )
            # The functions run on their own autocommit pool: no BEGIN, no COMMIT, no
            # reset when a connection goes back to the pool.
            self._auto = create_engine(
                self._url,
                pool_size=16,
                max_overflow=16,
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,
                pool_timeout=self.timeout,
                connect_args=connect_args,
            )
        else:
            # A pool as wide as the threads that call at once: a connection opened and
            # closed per call would redo the connection set-up every time.
            engine = create_engine(
                self._url,
                pool_size=16,
                max_overflow=16,
                pool_timeout=self.timeout,
                connect_args={"check_same_thread": False, "timeout": self.timeout},
            )

            @event.listens_for(engine, "connect")
            def _connect(dbapi_connection: Any, _record: Any) -> None:
                # We issue BEGIN ourselves: IMMEDIATE takes the write lock up front, so
                # a transaction never fails half-way upgrading a read lock.
                # The write lock is waited for up to the store's timeout, then the
                # operation fails as the store being unavailable (fail open or closed).
                prepare_sqlite_connection(dbapi_connection, busy_timeout_ms=timeout_ms)

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            self._create_tables(engine)
        except Exception as exc:
            engine.dispose()
            raise self._unavailable(exc, connecting=True) from exc
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
            # the ids settled in the last hour: a settle replayed after a late answer
            # adds nothing the second time
            f"CREATE TABLE IF NOT EXISTS {p}_settled (counter VARCHAR(512) NOT NULL,"
            " id VARCHAR(64) NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (counter, id))",
            f"CREATE INDEX IF NOT EXISTS {p}_settled_at ON {p}_settled (at)",
            # the once-a-minute sweep of counters whose period is long over
            f"CREATE INDEX IF NOT EXISTS {p}_counters_keep ON {p}_counters (keep_until)",
        ]
        with engine.begin() as conn:
            if self._is_pg:
                # Several processes may start at once; CREATE TABLE IF NOT EXISTS alone
                # races on PostgreSQL's catalog.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:p))"), {"p": p})
            for statement in ddl:
                if self._is_pg and statement.startswith("CREATE INDEX"):
                    # Only when missing: even IF NOT EXISTS takes a SHARE lock on the
                    # table, and two such locks taken while other processes' functions
                    # write both tables deadlock (a process starting among busy ones).
                    index = statement.split(" ON ", 1)[0].rsplit(" ", 1)[1]
                    found = conn.execute(text("SELECT to_regclass(:i)"), {"i": index})
                    if found.scalar() is not None:
                        continue
                conn.execute(text(statement))
            if self._is_pg:
                for function in _pg_functions(p):
                    conn.exec_driver_sql(function)

    def _call(self, name: str, params: dict[str, Any], *, fetch: bool = True) -> Any:
        """One PL/pgSQL function call on an autocommit connection: one round trip, its
        own transaction. Straight on the driver's cursor: SQLAlchemy's Connection costs
        more than the round trip here."""
        return self._guarded(lambda: self._call_once(name, params, fetch))

    def _call_once(self, name: str, params: dict[str, Any], fetch: bool) -> Any:
        self.engine  # noqa: B018 - opens the engines (and the tables) on first use
        auto = self._auto
        assert auto is not None
        errors = self._db_errors()
        try:
            conn = auto.raw_connection()  # the pool's wait is bounded by the timeout
        except errors as exc:
            raise self._unavailable(exc, connecting=True) from exc
        started = time.monotonic()
        try:
            cursor = conn.cursor()
            cursor.execute(self._pg[name], params)
            row = cursor.fetchone() if fetch else None
            cursor.close()
        except errors as exc:
            # A timed-out or broken connection never goes back to the pool.
            _invalidate(conn, self)
            raise self._unavailable(exc, started=started) from exc
        finally:
            conn.close()
        return row

    def drop(self) -> None:
        """Drop this store's tables and functions (tests and benchmarks clean up with it)."""
        p = self.prefix
        with self.engine.begin() as conn:
            for table in ("counters", "buckets", "reservations", "marks", "settled"):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {p}_{table}")
            if self._is_pg:
                for fn in ("reserve", "settle", "release"):
                    conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {p}_{fn}")
                # acquire by each signature: an earlier version's (6 arguments) may be
                # there too, and a bare name with two of them is ambiguous
                for args in _ACQUIRE_SIGNATURES:
                    conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {p}_acquire({args})")

    def _db_errors(self) -> tuple[type[BaseException], ...]:
        """What a failing database raises: the driver's errors, SQLAlchemy's, and OSError."""
        from sqlalchemy.exc import SQLAlchemyError

        return (self.engine.dialect.loaded_dbapi.Error, SQLAlchemyError, OSError)

    def _unavailable(
        self, exc: BaseException, *, connecting: bool = False, started: float | None = None
    ) -> StoreUnavailable:
        """``exc`` as the store being unavailable; opens the breaker (``STORE_COOLDOWN``)
        when it is an outage (``_is_outage``)."""
        outage = self._is_outage(exc, connecting=connecting, started=started)
        return self._breaker_failed(exc, outage=outage)

    def _is_outage(self, exc: BaseException, *, connecting: bool, started: float | None) -> bool:
        """PostgreSQL unreachable or stuck: no connection (refused, unreachable, no pooled
        one in time), or no answer at all within the timeout (the TCP timeouts). Not an
        error the server answered, a statement or lock timeout included (a counter row
        locked by a stuck session delays that counter, not the others), nor a pooled
        connection the server dropped (a restart: the next operation connects again at
        once). SQLite never opens the breaker: a busy database file is contention between
        local processes."""
        if not self._is_pg:
            return False
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        if connecting or isinstance(exc, PoolTimeout):
            return True
        state = _sqlstate(exc)
        if state is not None and not state.startswith("08"):  # answered (08: connection)
            return False
        return started is not None and time.monotonic() - started >= self.timeout * 0.9

    def _tx(self) -> Any:
        return _Tx(self)

    # -- helpers inside a transaction ----------------------------------------------------------
    def _lock_counter(
        self, conn: _Raw, counter: str, keep_until: int | None
    ) -> tuple[int, int, int]:
        s = self._sql
        row = conn.execute(s["lock"], {"c": counter}).first()
        if row is None:
            conn.execute(s["create"], {"c": counter, "k": keep_until})
            row = conn.execute(s["lock"], {"c": counter}).first()
            assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def _spent(self, conn: _Raw, counter: str, floor: int) -> int:
        self._maybe_prune(conn, counter, floor)
        return int(conn.execute(self._sql["spent"], {"c": counter, "f": floor}).scalar_one())

    def _maybe_prune(self, conn: _Raw, counter: str, floor: int) -> None:
        if floor <= 0:
            return
        now = time.monotonic()
        if self._pruned.get(counter, 0.0) > now:
            return
        self._pruned[counter] = now + 60.0
        if len(self._pruned) > 10_000:
            self._pruned.clear()
        conn.execute(self._sql["prune"], {"c": counter, "f": floor})

    def _expire(self, conn: _Raw, counter: str, now_ms: int, reserved: int) -> tuple[int, int]:
        """Drop the reservations expired at ``now_ms``; store and return what is still
        reserved and the earliest expiry of the reservations still held (``_NEVER``: none)."""
        s = self._sql
        gone = conn.execute(s["expired"], {"c": counter, "n": now_ms}).scalar_one()
        if gone:
            conn.execute(s["drop_expired"], {"c": counter, "n": now_ms})
            reserved -= int(gone)
        nxt = conn.execute(s["next_expiry"], {"c": counter}).scalar_one()
        next_expiry = _NEVER if nxt is None else int(nxt)
        conn.execute(s["set_reserved"], {"c": counter, "r": reserved, "e": next_expiry})
        return reserved, next_expiry

    def _fire(self, conn: _Raw, counter: str, spent: int, marks: Marks) -> tuple[str, ...]:
        fired = []
        for label, units in marks:
            if spent >= units:
                result = conn.execute(self._sql["mark"], {"c": counter, "l": label})
                if result.rowcount == 1:
                    fired.append(label)
        return tuple(fired)

    def _gc(self, conn: _Raw, now_ms: int) -> None:
        """Drop counters of periods long over (once a minute per process)."""
        if time.monotonic() < self._next_gc:
            return
        self._next_gc = time.monotonic() + 60.0
        s = self._sql
        for table in ("gc_buckets", "gc_reservations", "gc_marks", "gc_counters"):
            conn.execute(s[table], {"n": now_ms})
        # settled ids: by the wall clock (``now_ms`` is the budget's, which tests move)
        conn.execute(s["gc_settled"], {"n": int(time.time() * 1000) - SETTLED_KEEP_MS})

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
        if self._is_pg:
            if time.monotonic() >= self._next_gc:
                with self._tx() as conn:
                    self._gc(conn, now_ms)
            code, spent, held, first = self._call(
                "reserve",
                {
                    "c": counter,
                    "i": res_id,
                    "a": amount,
                    "l": limit,
                    "f": floor,
                    "n": now_ms,
                    "e": expires_ms,
                    "k": keep_until,
                    "m": refuse_mark,
                },
            )
            if code < 0:
                return Admission("unseeded")
            return Admission("ok" if code else "refused", int(spent), int(held), bool(first))
        s = self._sql
        with self._tx() as conn:
            self._gc(conn, now_ms)
            seeded, reserved, next_expiry = self._lock_counter(conn, counter, keep_until)
            if not seeded:
                return Admission("unseeded")
            if next_expiry <= now_ms:
                # the next expiry of the reservations still held: the update below keeps
                # the earlier of it and this reservation's own
                reserved, next_expiry = self._expire(conn, counter, now_ms, reserved)
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
        if self._is_pg:
            spent, held, fired = self._call(
                "settle",
                {
                    "c": counter,
                    "i": res_id,
                    "r": reserved,
                    "b": bucket,
                    "a": amount,
                    "f": floor,
                    "k": keep_until,
                    "ml": [label for label, _ in marks],
                    "mu": [units for _, units in marks],
                },
            )
            return Settlement(int(spent), int(held), tuple(fired or ()))
        s = self._sql
        with self._tx() as conn:
            seeded, total_reserved, _ = self._lock_counter(conn, counter, keep_until)
            if res_id is not None:
                result = conn.execute(s["unhold"], {"c": counter, "i": res_id})
                if result.rowcount == 1:
                    total_reserved -= reserved
                    conn.execute(s["less_reserved"], {"c": counter, "a": reserved})
                now = int(time.time() * 1000)
                result = conn.execute(s["settled"], {"c": counter, "i": res_id, "t": now})
                if result.rowcount != 1:  # settled before: a replay adds nothing
                    spent = self._spent(conn, counter, floor) if seeded else 0
                    return Settlement(spent, total_reserved)
            if not seeded:  # the seed that recreates the counter reads this call from the ledger
                return Settlement(0, total_reserved)
            if amount:
                conn.execute(s["add"], {"c": counter, "b": bucket, "a": amount})
            spent = self._spent(conn, counter, floor)
            fired = self._fire(conn, counter, spent, marks) if marks else ()
            return Settlement(spent, total_reserved, fired)

    def release(self, counter: str, *, res_id: str, reserved: int) -> None:
        if self._is_pg:
            self._call("release", {"c": counter, "i": res_id, "r": reserved})
            return
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
                reserved, _ = self._expire(conn, counter, now_ms, reserved)
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
        width: int = 0,
    ) -> Acquired:
        if self._is_pg:
            ok, used, retry, shift = self._call(
                "acquire",
                {
                    "c": counter,
                    "b": bucket,
                    "a": amount,
                    "l": limit,
                    "f": floor,
                    "k": keep_until,
                    "w": width,
                },
            )
            return Acquired(bool(ok), int(used), None if retry is None else int(retry), int(shift))
        s = self._sql
        with self._tx() as conn:
            self._lock_counter(conn, counter, keep_until)
            # the database's write lock is held: the time the request is judged at
            shift = store_shift(bucket, width)
            bucket, floor, keep_until = bucket + shift, floor + shift, keep_until + shift
            used = self._spent(conn, counter, floor)
            if used + amount > limit:
                need = used + amount - limit
                dropped = 0
                for b, units in conn.execute(s["buckets"], {"c": counter, "f": floor}):
                    dropped += int(units)
                    if dropped >= need:
                        return Acquired(False, used, int(b), shift)
                return Acquired(False, used, None, shift)
            conn.execute(s["add"], {"c": counter, "b": bucket, "a": amount})
            conn.execute(s["keep"], {"c": counter, "k": keep_until})
            return Acquired(True, used, None, shift)

    def adjust(self, counter: str, *, bucket: int, delta: int, floor: int, keep_until: int) -> None:
        if bucket < floor or not delta:
            return
        if self._is_pg:
            # One statement: the row lock of the UPDATE is all a correction needs.
            self._call("adjust", {"c": counter, "b": bucket, "a": delta}, fetch=False)
            return
        with self._tx() as conn:
            self._lock_counter(conn, counter, keep_until)
            conn.execute(self._sql["adjust"], {"c": counter, "b": bucket, "a": delta})

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._auto is not None:
            self._auto.dispose()


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, also wrapped by SQLAlchemy (``orig``)."""
    for error in (exc, getattr(exc, "orig", None)):
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _libpq_version() -> int:
    try:
        import psycopg

        return int(psycopg.pq.version())
    except Exception:  # another driver: leave the option out
        return 0


def _invalidate(conn: Any, store: SqlStore) -> None:
    """Close a pooled connection for good (after a failure: it may be mid-answer, or dead).
    A connection the server dropped (a restart, a terminated backend) means the pools'
    other connections are likely dead too: the pools start afresh rather than failing
    one call per pooled connection."""
    with contextlib.suppress(Exception):
        raw = conn.dbapi_connection
        lost = bool(getattr(raw, "closed", False) or getattr(raw, "broken", False))
        conn.invalidate()
        if lost:
            for engine in (store._engine, store._auto):
                if engine is not None:
                    engine.dispose(close=False)


class _Result:
    """What the store reads from a DB-API cursor (the few SQLAlchemy Result calls it used)."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def first(self) -> Any:
        return self._cursor.fetchone()

    def scalar_one(self) -> Any:
        return self._cursor.fetchone()[0]

    def all(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def __iter__(self) -> Any:
        return iter(self._cursor.fetchall())


class _Raw:
    """A pooled DB-API connection in one transaction. Guard operations are a few tiny
    statements each; SQLAlchemy's Connection would cost more than the statements."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, statement: str, params: dict[str, Any]) -> _Result:
        self._cursor.execute(statement, params)
        return _Result(self._cursor)


class _Tx:
    """One transaction on a pooled connection (``BEGIN IMMEDIATE`` on SQLite); turns
    connection and server failures into ``StoreUnavailable``."""

    __slots__ = ("_conn", "_probe", "_started", "_store")

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._conn: Any = None
        self._probe = False
        self._started = 0.0

    def __enter__(self) -> _Raw:
        store = self._store
        if store._down is not None:  # failed recently: at once, or this one tries again
            self._probe = store._breaker_enter()
        try:
            self._conn = store.engine.raw_connection()
            self._started = time.monotonic()
            cursor = self._conn.cursor()
            if not store._is_pg:
                cursor.execute("BEGIN IMMEDIATE")
        except StoreUnavailable:
            raise
        except BaseException as exc:
            if self._conn is not None:
                self._conn.close()
            if isinstance(exc, store._db_errors()):
                raise store._unavailable(exc, connecting=self._conn is None) from exc
            if self._probe:
                store._breaker_abandon()
            raise
        return _Raw(cursor)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        store = self._store
        conn = self._conn
        errors = store._db_errors()
        try:
            if exc is None:
                conn.commit()
            else:
                if isinstance(exc, errors):
                    # A timed-out or broken connection never goes back to the pool.
                    _invalidate(conn, store)
                else:
                    conn.rollback()
        except errors as err:
            _invalidate(conn, store)
            if exc is None:
                raise store._unavailable(err, started=self._started) from err
        finally:
            conn.close()
        if isinstance(exc, errors):
            raise store._unavailable(exc, started=self._started) from exc
        if exc is None or isinstance(exc, Exception):  # the database answered
            if store._down is not None:
                store._breaker_close()
        elif self._probe:  # interrupted (KeyboardInterrupt, ...): no answer either way
            store._breaker_abandon()


def _statements(p: str, *, pg: bool) -> dict[str, str]:
    """The store's statements in the driver's parameter style: ``:name`` for sqlite3,
    ``%(name)s`` for psycopg."""
    for_update = " FOR UPDATE" if pg else ""
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
        "settled": f"INSERT INTO {p}_settled (counter, id, at) VALUES (:c, :i, :t)"
        " ON CONFLICT (counter, id) DO NOTHING",
        "gc_settled": f"DELETE FROM {p}_settled WHERE at < :n",
        "list": f"SELECT counter FROM {p}_counters WHERE counter LIKE :p ESCAPE '\\'",
        "gc_buckets": f"DELETE FROM {p}_buckets WHERE counter IN (SELECT counter FROM"
        f" {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n)",
        "gc_reservations": f"DELETE FROM {p}_reservations WHERE counter IN (SELECT counter FROM"
        f" {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n)",
        "gc_marks": f"DELETE FROM {p}_marks WHERE counter IN (SELECT counter FROM"
        f" {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n)",
        "gc_counters": f"DELETE FROM {p}_counters WHERE keep_until IS NOT NULL AND keep_until < :n",
    }
    if pg:
        return {name: _PARAM.sub(r"%(\1)s", statement) for name, statement in sql.items()}
    return sql


_PARAM = re.compile(r"(?<![:\w]):([a-z]\w*)")
_ACQUIRE_SIGNATURES = (
    "text, bigint, bigint, bigint, bigint, bigint, bigint",
    "text, bigint, bigint, bigint, bigint, bigint",
)


def _pg_functions(p: str) -> list[str]:
    """The PL/pgSQL functions of a PostgreSQL store (see the module docstring)."""
    lock = f"""
  SELECT c.reserved, c.seeded, c.next_expiry INTO v_reserved, v_seeded, v_next
    FROM {p}_counters c WHERE c.counter = p_c FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO {p}_counters (counter, keep_until) VALUES (p_c, p_k)
      ON CONFLICT (counter) DO NOTHING;
    SELECT c.reserved, c.seeded, c.next_expiry INTO v_reserved, v_seeded, v_next
      FROM {p}_counters c WHERE c.counter = p_c FOR UPDATE;
  END IF;"""
    spent = f"""
  SELECT COALESCE(SUM(b.amount), 0) INTO v_spent
    FROM {p}_buckets b WHERE b.counter = p_c AND b.bucket >= p_f;"""
    head = "DECLARE v_reserved bigint; v_seeded int; v_next bigint; v_spent bigint;"
    return [
        f"""
CREATE OR REPLACE FUNCTION {p}_reserve(p_c text, p_i text, p_a bigint, p_l bigint,
    p_f bigint, p_n bigint, p_e bigint, p_k bigint, p_m text)
RETURNS TABLE (o_code int, o_spent bigint, o_reserved bigint, o_first boolean)
LANGUAGE plpgsql AS $fn$
{head} v_gone bigint; v_first boolean := false;
BEGIN
{lock}
  IF v_seeded = 0 THEN
    RETURN QUERY SELECT -1, 0::bigint, 0::bigint, false; RETURN;
  END IF;
  IF v_next <= p_n THEN
    WITH gone AS (DELETE FROM {p}_reservations r WHERE r.counter = p_c AND r.expires_at <= p_n
                  RETURNING r.amount)
      SELECT COALESCE(SUM(gone.amount), 0) INTO v_gone FROM gone;
    v_reserved := v_reserved - v_gone;
    SELECT COALESCE(MIN(r.expires_at), 4611686018427387904) INTO v_next
      FROM {p}_reservations r WHERE r.counter = p_c;
    UPDATE {p}_counters c SET reserved = v_reserved, next_expiry = v_next WHERE c.counter = p_c;
  END IF;
{spent}
  IF p_l IS NOT NULL AND v_spent + v_reserved + p_a > p_l THEN
    IF p_m IS NOT NULL THEN
      INSERT INTO {p}_marks (counter, label) VALUES (p_c, p_m) ON CONFLICT DO NOTHING;
      v_first := FOUND;
    END IF;
    RETURN QUERY SELECT 0, v_spent, v_reserved, v_first; RETURN;
  END IF;
  INSERT INTO {p}_reservations (counter, id, amount, expires_at) VALUES (p_c, p_i, p_a, p_e);
  UPDATE {p}_counters c SET reserved = v_reserved + p_a, next_expiry = LEAST(v_next, p_e),
    keep_until = p_k WHERE c.counter = p_c;
  RETURN QUERY SELECT 1, v_spent, v_reserved, false;
END $fn$""",
        f"""
CREATE OR REPLACE FUNCTION {p}_settle(p_c text, p_i text, p_r bigint, p_b bigint,
    p_a bigint, p_f bigint, p_k bigint, p_ml text[], p_mu bigint[])
RETURNS TABLE (o_spent bigint, o_reserved bigint, o_fired text[])
LANGUAGE plpgsql AS $fn$
{head} v_fired text[] := '{{}}';
BEGIN
{lock}
  IF p_i IS NOT NULL THEN
    DELETE FROM {p}_reservations r WHERE r.counter = p_c AND r.id = p_i;
    IF FOUND THEN
      v_reserved := v_reserved - p_r;
      UPDATE {p}_counters c SET reserved = v_reserved WHERE c.counter = p_c;
    END IF;
    INSERT INTO {p}_settled (counter, id, at)
      VALUES (p_c, p_i, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
      ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN  -- settled before (a late answer, then a replay): add nothing
      v_spent := 0;
      IF v_seeded <> 0 THEN
{spent}
      END IF;
      RETURN QUERY SELECT v_spent, v_reserved, '{{}}'::text[]; RETURN;
    END IF;
  END IF;
  IF v_seeded = 0 THEN
    RETURN QUERY SELECT 0::bigint, v_reserved, '{{}}'::text[]; RETURN;
  END IF;
  IF p_a <> 0 THEN
    INSERT INTO {p}_buckets AS b (counter, bucket, amount) VALUES (p_c, p_b, p_a)
      ON CONFLICT (counter, bucket) DO UPDATE SET amount = b.amount + excluded.amount;
  END IF;
{spent}
  FOR j IN 1 .. COALESCE(array_length(p_ml, 1), 0) LOOP
    IF v_spent >= p_mu[j] THEN
      INSERT INTO {p}_marks (counter, label) VALUES (p_c, p_ml[j]) ON CONFLICT DO NOTHING;
      IF FOUND THEN v_fired := v_fired || p_ml[j]; END IF;
    END IF;
  END LOOP;
  RETURN QUERY SELECT v_spent, v_reserved, v_fired;
END $fn$""",
        f"""
CREATE OR REPLACE FUNCTION {p}_release(p_c text, p_i text, p_r bigint)
RETURNS TABLE (o_done boolean)
LANGUAGE plpgsql AS $fn$
DECLARE v_reserved bigint;
BEGIN
  SELECT c.reserved INTO v_reserved FROM {p}_counters c WHERE c.counter = p_c FOR UPDATE;
  IF FOUND THEN
    DELETE FROM {p}_reservations r WHERE r.counter = p_c AND r.id = p_i;
    IF FOUND THEN
      UPDATE {p}_counters c SET reserved = v_reserved - p_r WHERE c.counter = p_c;
    END IF;
  END IF;
  RETURN QUERY SELECT true;
END $fn$""",
        # p_w > 0: the bucket width, and the time is read again once the row is locked
        # (clock_timestamp(), not now(): the time the request is judged, not when its
        # transaction began), moving the bucket and the window forward (o_shift)
        f"""
CREATE OR REPLACE FUNCTION {p}_acquire(p_c text, p_b bigint, p_a bigint, p_l bigint,
    p_f bigint, p_k bigint, p_w bigint)
RETURNS TABLE (o_ok boolean, o_used bigint, o_retry bigint, o_shift bigint)
LANGUAGE plpgsql AS $fn$
{head} v_dropped bigint := 0; v_row record; v_now bigint; v_shift bigint := 0;
BEGIN
{lock}
  IF p_w > 0 THEN
    v_now := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_shift := GREATEST(0, v_now - mod(v_now, p_w) - p_b);
    p_b := p_b + v_shift; p_f := p_f + v_shift; p_k := p_k + v_shift;
  END IF;
  DELETE FROM {p}_buckets b WHERE b.counter = p_c AND b.bucket < p_f;
{spent}
  IF v_spent + p_a > p_l THEN
    FOR v_row IN SELECT b.bucket, b.amount FROM {p}_buckets b
                 WHERE b.counter = p_c AND b.bucket >= p_f ORDER BY b.bucket LOOP
      v_dropped := v_dropped + v_row.amount;
      IF v_dropped >= v_spent + p_a - p_l THEN
        RETURN QUERY SELECT false, v_spent, v_row.bucket, v_shift; RETURN;
      END IF;
    END LOOP;
    RETURN QUERY SELECT false, v_spent, NULL::bigint, v_shift; RETURN;
  END IF;
  INSERT INTO {p}_buckets AS b (counter, bucket, amount) VALUES (p_c, p_b, p_a)
    ON CONFLICT (counter, bucket) DO UPDATE SET amount = b.amount + excluded.amount;
  UPDATE {p}_counters c SET keep_until = p_k WHERE c.counter = p_c;
  RETURN QUERY SELECT true, v_spent, NULL::bigint, v_shift;
END $fn$""",
    ]


def _pg_calls(p: str) -> dict[str, str]:
    """Function calls in the driver's own parameter style (psycopg: ``%(name)s``)."""
    return {
        "reserve": f"SELECT * FROM {p}_reserve(%(c)s, %(i)s, %(a)s, %(l)s, %(f)s, %(n)s,"
        " %(e)s, %(k)s, %(m)s)",
        "settle": f"SELECT * FROM {p}_settle(%(c)s, %(i)s, %(r)s, %(b)s, %(a)s, %(f)s, %(k)s,"
        " %(ml)s::text[], %(mu)s::bigint[])",
        "release": f"SELECT * FROM {p}_release(%(c)s, %(i)s, %(r)s)",
        "acquire": f"SELECT * FROM {p}_acquire(%(c)s, %(b)s, %(a)s, %(l)s, %(f)s, %(k)s,"
        " %(w)s::bigint)",
        "adjust": f"UPDATE {p}_buckets SET amount = GREATEST(0, amount + %(a)s)"
        " WHERE counter = %(c)s AND bucket = %(b)s",
    }
