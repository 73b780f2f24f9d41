"""The write side of the ledger: idempotent batch inserts, re-pricing, and the hooks rollups use.

The insert path skips SQLAlchemy's per-value bind processing (it cost more than SQLite
itself): each event becomes one tuple of driver-native values, columns holding their
default in every row of a batch are left out, and the rest go in one multi-row
``INSERT ... ON CONFLICT (id) DO NOTHING`` per chunk (``RETURNING id`` on PostgreSQL;
SQLite counts the rows added and finds them by rowid when some were duplicates), run
through the SQLAlchemy ``Connection`` (so transactions, pooling and events stay SQLAlchemy's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from .._cost import Cost
from .._events import UsageEvent, event_text
from .._tracker import fork_gate as _fork_gate
from ._engine import BEGIN_OPTION, FILE_ID, file_id, is_memory_sqlite, make_engine, sqlite_path
from ._migrate import HEAD, current_revision, ensure_schema
from ._money import (
    _QUANTUM,
    _SUM_CONTEXT,
    MONEY_PRECISION,
    MONEY_SCALE,
    dumps,
    json_default,
    money_text,
    sqlite_timestamp,
)
from ._rows import (
    COLUMNS,
    FLAG_COLUMNS,
    MONEY_COLUMNS,
    TOKEN_COLUMNS,
    Row,
    StoredEvent,
    postgresql_row,
    row_to_event,
)
from ._tables import EVENTS_TABLE, events_table
from ._text import TEXT_INDEXES, clean_row, clean_text, key_text

__all__ = [
    "CostChange",
    "CostHook",
    "FileReplaced",
    "InsertHook",
    "Store",
    "cost_columns",
    "is_data_error",
]

InsertHook = Callable[[Connection, Sequence[UsageEvent]], None]
"""Called inside the insert transaction with the events that were newly inserted."""


@dataclass(frozen=True, slots=True)
class CostChange:
    """One re-priced row: what it was and what it is now (same transaction as the update)."""

    before: StoredEvent
    after: StoredEvent


CostHook = Callable[[Connection, Sequence[CostChange]], None]

_MAX_ADJUSTED = MONEY_PRECISION - MONEY_SCALE - 1
_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(COLUMNS),
    **dict.fromkeys((*TOKEN_COLUMNS, *FLAG_COLUMNS), 0),
    "tags": "[]",
    "metadata": "{}",
    "price_context": "{}",
}
"""What an omitted column gets from the table (NULL or its server default)."""
_ALWAYS = frozenset(("id", "timestamp", "source", "status", "pricing_status", "currency"))
_OMITTABLE = tuple((i, _DEFAULTS[name]) for i, name in enumerate(COLUMNS) if name not in _ALWAYS)
# PostgreSQL batches are JSON documents: tags and metadata travel as JSON values there
_PG_OMITTABLE = tuple(
    (i, [] if name == "tags" else {} if name in ("metadata", "price_context") else default)
    for i, default in _OMITTABLE
    for name in (COLUMNS[i],)
)
_ALWAYS_INDEXES = tuple(i for i, name in enumerate(COLUMNS) if name in _ALWAYS)
_EVERY_INDEX = tuple(range(len(COLUMNS)))
_row_timestamp = itemgetter(COLUMNS.index("timestamp"))
_row_id = itemgetter(COLUMNS.index("id"))
_JSON_COLUMNS = frozenset(("tags", "metadata", "price_context"))
_PG_TYPES: dict[str, str] = {
    **dict.fromkeys(COLUMNS, "text"),
    "timestamp": "timestamptz",
    "latency_ms": "float8",
    **dict.fromkeys(FLAG_COLUMNS, "bool"),
    **dict.fromkeys(TOKEN_COLUMNS, "int8"),
    **dict.fromkeys(MONEY_COLUMNS, "numeric"),
}
"""PostgreSQL type of each column, to cast the JSON text of a batch's values to."""


def _pg_value(position: int, name: str) -> str:
    if name in _JSON_COLUMNS:
        return f"(r.e->{position})"
    return f"(r.e->>{position})::{_PG_TYPES[name]}"


_log = logging.getLogger("costledger.ledger")


class FileReplaced(OSError):
    """A SQLite write went to a file no longer at the ledger's path: as good as lost."""


_CHUNK_PARAMS = 30_000  # under SQLite's 32766 host parameters, and PostgreSQL's 65535
_CHUNK_ROWS = 1000


def _check_money(field: str, d: Decimal | None) -> Decimal | None:
    """Storable money: finite, at most 18 places (rounded half-even, as documented), < 1e20."""
    if d is None:
        return None
    if not isinstance(d, Decimal) or not d.is_finite():
        raise ValueError(f"UsageEvent {field} must be a finite Decimal or None, got {d!r}")
    if d.adjusted() > _MAX_ADJUSTED:
        raise ValueError(f"UsageEvent {field} = {d!r} exceeds NUMERIC({MONEY_PRECISION}, 18)")
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_SCALE:
        # in a context of 80 digits: the default 28 would raise InvalidOperation past 10^10
        d = d.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_SUM_CONTEXT)
    return d


def _text_money(field: str, d: Decimal | None) -> str | None:
    """The storage text of an amount (plain notation, at most 18 places)."""
    if d is None:
        return None
    if d.__class__ is Decimal:
        # runs 7 times per stored event: one format, then checks on the text (a
        # non-finite amount formats as "NaN" / "Infinity", ending in a letter)
        text = money_text(d)
        dot = text.find(".")
        if dot < 0:
            dot = len(text)
        if text[-1] <= "9" and dot <= _MAX_WHOLE_CHARS and len(text) - dot <= MONEY_SCALE + 1:
            return text
    checked = _check_money(field, d)  # rounds, or raises the precise error
    return None if checked is None else money_text(checked)


_MAX_WHOLE_CHARS = _MAX_ADJUSTED + 1  # "-" + 20 digits also fails: the slow path decides


def _json(value: Any, empty: str) -> str:
    return dumps(value) if value else empty


_TAGS_TEXT: dict[tuple[str, ...], str] = {(): "[]"}


def _tags_text(tags: tuple[str, ...]) -> str:
    """The JSON text of a tag tuple (cached: a service uses a handful of tag sets)."""
    try:
        return _TAGS_TEXT[tags]
    except KeyError:
        text = dumps(list(tags))
        if len(_TAGS_TEXT) < 4096:
            _TAGS_TEXT[tags] = text
        return text
    except TypeError:  # an unhashable tag: the ledger's JSON encoder decides
        return dumps(list(tags))


def _check_id(event: UsageEvent) -> str:
    if not isinstance(event, UsageEvent):
        raise TypeError(f"expected a UsageEvent, got {type(event).__name__} {event!r}")
    if not isinstance(event.id, str) or not event.id:
        raise ValueError(f"UsageEvent id must be a non-empty string, got {event.id!r}")
    return event.id


def sqlite_params(e: UsageEvent) -> tuple[Any, ...]:
    """Driver-native values of one event for SQLite, in ``COLUMNS`` order; its texts
    without NUL or lone surrogates (``clean_row``; the JSON columns: ``dumps``)."""
    u = e.usage
    c = e.cost
    metadata = e.metadata
    row = (
        _check_id(e),
        sqlite_timestamp(e.timestamp),
        e.source,
        e.provider,
        e.model,
        e.response_model,
        e.status,
        e.error_type,
        e.latency_ms,
        e.request_id,
        e.trace_id,
        e.run_id,
        e.parent_run_id,
        e.user,
        e.team,
        e.project,
        e.feature,
        _tags_text(e.tags),
        dumps(dict(metadata)) if metadata else "{}",
        1 if e.streamed else 0,
        1 if e.cache_hit else 0,
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.cache_write_1h_tokens,
        u.reasoning_tokens,
        u.input_audio_tokens,
        u.output_audio_tokens,
        c.status,
        c.currency,
        _text_money("cost.total", c.total),
        _text_money("cost.input", c.input),
        _text_money("cost.cache_read", c.cache_read),
        _text_money("cost.cache_write", c.cache_write),
        _text_money("cost.output", c.output),
        _text_money("cost.audio", c.audio),
        c.source,
        c.model,
        c.provider,
        _text_money("reported_cost", e.reported_cost),
        dumps(dict(e.price_context)) if e.price_context else "{}",
    )
    cleaned = clean_row(row)
    # ``clean_row`` returns the row itself when every text in it is clean text: a new
    # tuple means one was cleaned, or one is not text at all (checked here, off the hot path)
    return cleaned if cleaned is row else _texts_checked(cleaned)


def _texts_checked(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with each text column holding text or ``None``: a value whose text is
    obvious (a number, a UUID, an enum, bytes: ``event_text``) as that text, the same on
    SQLite and PostgreSQL; ``TypeError`` naming the column for anything else (a list, a
    dict: SQLite cannot bind it, PostgreSQL would store its JSON), so the event is
    rejected to ``rejected-*.jsonl`` on either database, never left to fail its batch."""
    values: list[Any] | None = None
    for i, name in TEXT_INDEXES:
        value = row[i]
        if value is None or value.__class__ is str:
            continue
        text = event_text(f"UsageEvent {name}", value)
        if values is None:
            values = list(row)
        values[i] = text
    return row if values is None else clean_row(tuple(values))


def _text(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) else value


def _key(value: Any) -> Any:
    return key_text(value) if isinstance(value, str) else value


def cost_columns(cost: Cost) -> dict[str, Any]:
    """The cost columns of a row for ``cost`` (validated as on insert)."""
    if not isinstance(cost, Cost):
        raise TypeError(f"expected a Cost, got {type(cost).__name__} {cost!r}")
    return {
        "pricing_status": _key(cost.status),
        "currency": _key(cost.currency),
        "total_cost": _check_money("cost.total", cost.total),
        "input_cost": _check_money("cost.input", cost.input),
        "cache_read_cost": _check_money("cost.cache_read", cost.cache_read),
        "cache_write_cost": _check_money("cost.cache_write", cost.cache_write),
        "output_cost": _check_money("cost.output", cost.output),
        "audio_cost": _check_money("cost.audio", cost.audio),
        "pricing_source": _text(cost.source),
        "priced_model": _text(cost.model),
        "priced_provider": _text(cost.provider),
    }


def is_data_error(exc: BaseException) -> bool:
    """True when retrying cannot help: the rows themselves are bad (not the connection)."""
    if isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError)):
        return True
    if isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError):
        return True  # a bind value could not be converted
    # The write path runs on the driver's own cursor, so its errors arrive unwrapped: PEP 249
    # names the bad-row kinds the same in every driver (psycopg, sqlite3).
    if any(c.__name__ in _DBAPI_DATA_ERRORS for c in type(exc).__mro__):
        return True
    if _is_binding_error(exc) or _is_too_big(exc):
        return True
    return isinstance(exc, (ValueError, TypeError, OverflowError))


def _is_too_big(exc: BaseException) -> bool:
    """PostgreSQL refused something for its size (SQLSTATE class 54, "program limit
    exceeded": an index entry past 2704 bytes, a JSON nested past the stack depth), raw
    from the driver or wrapped by SQLAlchemy (the rollups' upserts): a smaller batch, or
    in the end the one row alone, is what helps, not a retry. psycopg names the code
    ``sqlstate``, psycopg2 ``pgcode``."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str) and code.startswith(_TOO_BIG_CLASS):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


_TOO_BIG_CLASS = "54"


def _is_binding_error(exc: BaseException) -> bool:
    """sqlite3 could not bind a value of the row (a list where text belongs): its
    ``ProgrammingError`` (Python 3.11+: "Error binding parameter 5: type 'list' is not
    supported") or ``InterfaceError`` (3.10: "Error binding parameter 5 - probably
    unsupported type."), raw or wrapped by SQLAlchemy. The rest of those two kinds (a
    closed connection, a wrong parameter count) is no fault of a row's."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper holds the driver's error
    for error in (exc, orig):
        if isinstance(error, (sqlite3.ProgrammingError, sqlite3.InterfaceError)) and str(
            error
        ).startswith("Error binding parameter"):
            return True
    return False


_DBAPI_DATA_ERRORS = frozenset(("DataError", "IntegrityError"))


def _import_alembic() -> None:
    """Import what a migration imports, under the fork gate (``_tracker._ForkGate``, which
    the background worker's first pricing passes too): ``alembic.command`` brings in
    every module the migrations use (a test checks that the first write imports nothing
    more), so the migration itself, under way when a fork comes, imports nothing."""
    import importlib

    with _fork_gate.busy():
        importlib.import_module("alembic.command")
        importlib.import_module("alembic.config")


class Store:
    """One database: engine, schema, idempotent inserts, cost updates, hooks."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        # One shared in-memory connection (StaticPool) must never be used by two threads at once.
        self.single_connection = is_memory_sqlite(url)
        self._lock: threading.RLock | None = threading.RLock() if self.single_connection else None
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self.path = sqlite_path(url)  # a SQLite file: checked at every write transaction
        # a fork in a SQLite write transaction leaves the child unable to write (_tracker._ForkGate)
        self._fork_gated = self.path is not None
        from ._rollups import apply_cost_changes

        # the daily rollups are kept in every write transaction, from the rows (see
        # ``on_inserted``); these hooks come after them and get events
        self.insert_hooks: list[InsertHook] = []
        self.cost_hooks: list[CostHook] = [apply_cost_changes]
        pg = self.dialect == "postgresql"
        self._omittable = _PG_OMITTABLE if pg else _OMITTABLE
        self._sql_cache: dict[tuple[tuple[int, ...], int], str] = {}

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def serialized(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """A transaction that holds the write lock from its start (SQLite ``BEGIN IMMEDIATE``).

        A SQLite file that was removed or replaced since the connection opened it (its
        directory deleted, say) is not written: the connections let go of it, and the
        database is made again at its path (one ``stat`` before and one after each
        transaction). One removed while the transaction ran raises ``FileReplaced``
        after the commit, so the caller spools what it wrote into the lost file."""
        self.ensure_schema()
        with self.serialized():
            conn = self._write_connection()
            try:
                conn = conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
                with self._no_fork(), conn.begin():
                    yield conn
                if self.path is not None and file_id(self.path) != conn.info.get(FILE_ID):
                    self._file_replaced(conn)
                    raise FileReplaced(f"the SQLite file {self.path} was removed during a write")
            finally:
                conn.close()

    def _write_connection(self) -> Connection:
        conn = self.engine.connect()
        if self.path is None or file_id(self.path) == conn.info.get(FILE_ID):
            return conn
        self._file_replaced(conn)
        conn.close()
        self.ensure_schema()  # the directory, the file and the schema, made again
        return self.engine.connect()

    def _file_replaced(self, conn: Connection) -> None:
        """The file the pooled connections write to is no longer at ``self.path``."""
        _log.warning(
            "costledger: the SQLite file %s was removed or replaced while the ledger had it "
            "open; creating the ledger again at that path (events written since are spooled "
            "and replayed there)",
            self.path,
        )
        with contextlib.suppress(Exception):
            conn.invalidate()
        self.engine.dispose()  # every pooled connection holds the old file
        self._schema_ready = False

    @contextlib.contextmanager
    def read_connection(self) -> Iterator[Connection]:
        self.ensure_schema()
        with self.serialized(), self.engine.connect() as conn:
            yield conn

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock, self.serialized():
            if not self._schema_ready:
                if "alembic.command" not in sys.modules and current_revision(self.engine) != HEAD:
                    _import_alembic()
                with self._no_fork():  # a migration is a write transaction
                    ensure_schema(self.engine)
                self._schema_ready = True

    def _no_fork(self) -> contextlib.AbstractContextManager[None]:
        """Around a SQLite write transaction: a fork waits for its end (``_tracker._ForkGate``)."""
        return _fork_gate.busy() if self._fork_gated else contextlib.nullcontext()

    def schema_suspect(self) -> None:
        """After a failed write: check the schema again before the next one (it may be gone)."""
        self._schema_ready = False

    def dispose(self) -> None:
        self.engine.dispose()

    def after_fork(self) -> None:
        """In a forked child: the parent's threads may have held these locks at the fork
        (its writer creating the schema holds ``_schema_lock``), and they would stay held
        forever here; the pooled connections are the parent's (its sockets, its SQLite
        handles mid-transaction): left to it unclosed, and the child connects anew."""
        self._schema_lock = threading.Lock()
        if self._lock is not None:
            self._lock = threading.RLock()
        self.engine.dispose(close=False)

    # -- inserts ----------------------------------------------------------------------------
    def _sql(self, present: tuple[int, ...], nrows: int) -> str:
        key = (present, nrows)
        sql = self._sql_cache.get(key)
        if sql is None:
            columns = ",".join(f'"{COLUMNS[i]}"' for i in present)
            if self.dialect == "postgresql":
                # the batch is one JSON array of rows, unpacked server-side: one short
                # statement and one parameter whatever the batch size (psycopg parses
                # query strings and dumps arrays in Python; PostgreSQL parses JSON in C)
                values = ",".join(_pg_value(k, COLUMNS[i]) for k, i in enumerate(present))
                sql = (
                    f"INSERT INTO {EVENTS_TABLE} ({columns}) SELECT {values} "
                    "FROM jsonb_array_elements(%s::jsonb) AS r(e)"
                    ' ON CONFLICT ("id") DO NOTHING RETURNING "id"'
                )
            else:
                # no RETURNING on SQLite (it costs ~15% of the insert): ``insert_params``
                # counts the rows added and finds them by rowid only when some were not
                one = "(" + ",".join("?" * len(present)) + ")"
                sql = f"INSERT INTO {EVENTS_TABLE} ({columns}) VALUES " + ",".join([one] * nrows)
                sql += ' ON CONFLICT ("id") DO NOTHING'
            if len(self._sql_cache) > 256:
                self._sql_cache.clear()
            self._sql_cache[key] = sql
        return sql

    def insert_params(
        self, conn: Connection, rows: Sequence[tuple[Any, ...]], *, every_column: bool = False
    ) -> set[str]:
        """Insert driver-native rows (ids unique); the ids that were new.

        ``every_column`` (SQLite): bind every column of every row, without first looking
        for columns at their default in the whole batch (that scan costs more than
        binding the few it leaves out, for a bulk loader whose batches rarely have any).
        """
        if not rows:
            return set()
        n = len(rows)
        if self.dialect == "postgresql" and n > 1:
            # One lock order for every writer: a row inserted waits for another
            # transaction's uncommitted row of the same id, so two batches holding some of
            # the same ids in different orders (two logs of the same calls ingested at once)
            # each waited for the other (DeadlockDetected). By id, whoever waits holds only
            # smaller ids than the one it waits for. The rollups are written after, from the
            # caller's rows, in their own sorted order.
            with contextlib.suppress(TypeError):  # a malformed row: left to the insert
                rows = sorted(rows, key=_row_id)
        elif n > 1:
            # In time order, each index's new entries land on a few neighbouring pages
            # (the timestamp index at its end, (user, timestamp) at each user's end): a
            # batch in no time order (a shuffled log) inserts ~25% faster sorted; one
            # already in order costs a linear pass. Rows are unique by id, so the order
            # changes nothing stored.
            with contextlib.suppress(TypeError):  # a malformed row: left to the insert
                rows = sorted(rows, key=_row_timestamp)
        if every_column and self.dialect != "postgresql":
            by_column = [tuple(row[0] for row in rows)]
            kept = _EVERY_INDEX
        else:
            by_column = list(zip(*rows, strict=True))
            present = list(_ALWAYS_INDEXES)
            for i, default in self._omittable:
                if by_column[i].count(default) != n:
                    present.append(i)
            present.sort()
            kept = tuple(present)
        inserted: set[str] = set()
        # the DBAPI cursor of this SQLAlchemy connection, inside its transaction: fetching
        # the returned ids in C rather than building a Row object per id
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if self.dialect == "postgresql":
                sparse_rows = zip(*(by_column[i] for i in kept), strict=True)
                document = json.dumps(
                    list(sparse_rows), default=json_default, separators=(",", ":")
                )
                cursor.execute(self._sql(kept, 0), (document,))
                inserted.update(row[0] for row in cursor.fetchall())
                return inserted
            # inside this write transaction nobody else inserts, and SQLite gives a new row
            # a rowid above every existing one: the rows added are those above this mark
            cursor.execute(f"SELECT max(rowid) FROM {EVENTS_TABLE}")
            mark = cursor.fetchone()[0] or 0
            per_chunk = max(1, min(_CHUNK_ROWS, _CHUNK_PARAMS // len(kept)))
            columns = None if kept is _EVERY_INDEX else [by_column[i] for i in kept]
            added = 0
            for start in range(0, n, per_chunk):
                end = min(n, start + per_chunk)
                if columns is None:
                    flat = tuple(chain.from_iterable(rows[start:end]))
                else:
                    # row by row straight from the columns: zip reuses its one result tuple
                    # when nothing keeps it, so no tuple per row outlives this line (a
                    # batch's worth of them used to survive into the GC's older generations)
                    flat = tuple(
                        chain.from_iterable(zip(*(c[start:end] for c in columns), strict=True))
                    )
                cursor.execute(self._sql(kept, end - start), flat)
                added += cursor.rowcount
            if added == n:
                return set(by_column[0])
            if added:
                cursor.execute(f"SELECT id FROM {EVENTS_TABLE} WHERE rowid > ?", (mark,))
                inserted.update(row[0] for row in cursor.fetchall())
        finally:
            cursor.close()
        return inserted

    def insert_rows(self, rows: Sequence[Row]) -> list[Row]:
        """Insert SQLite-form rows idempotently in one transaction; return those newly
        inserted (the first of each id; ids already stored are skipped). The rollups and
        insert hooks run in the same transaction, with the new rows only."""
        unique: dict[str, Row] = {}
        for row in rows:
            unique.setdefault(row[0], row)
        if not unique:
            return []
        firsts = list(unique.values())
        params = [postgresql_row(r) for r in firsts] if self.dialect == "postgresql" else firsts
        with self.write_transaction() as conn:
            new_ids = self.insert_params(conn, params)
            new = firsts if len(new_ids) == len(firsts) else [r for r in firsts if r[0] in new_ids]
            if new:
                self.on_inserted(conn, new)
        return new

    def on_inserted(self, conn: Connection, rows: Sequence[Row]) -> None:
        """Inside the insert transaction, with exactly the newly inserted rows (SQLite
        form): the daily rollups add them, so a duplicate is never counted twice; then
        any insert hook gets them as ``UsageEvent`` objects."""
        from ._rollups import apply_inserted

        apply_inserted(conn, rows)
        if self.insert_hooks:
            events = [row_to_event(dict(zip(COLUMNS, row, strict=True))) for row in rows]
            for hook in self.insert_hooks:
                hook(conn, events)

    # -- re-pricing -------------------------------------------------------------------------
    def update_costs(self, changes: Iterable[tuple[str, Cost]]) -> int:
        """Replace the cost of stored events; the number of rows found and updated.

        Runs the cost hooks with each row's before and after in the same transaction
        (rows are locked ``FOR UPDATE`` on PostgreSQL).
        """
        wanted: dict[str, dict[str, Any]] = {}
        for event_id, cost in changes:
            if not isinstance(event_id, str) or not event_id:
                raise ValueError(f"event id must be a non-empty string, got {event_id!r}")
            wanted[key_text(event_id)] = cost_columns(cost)  # the id as stored
        if not wanted:
            return 0
        t = events_table
        done: list[CostChange] = []
        ids = list(wanted)
        with self.write_transaction() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                stmt = select(t).where(t.c.id.in_(chunk))
                if self.dialect == "postgresql":
                    stmt = stmt.with_for_update()
                before = [StoredEvent.from_row(r._mapping) for r in conn.execute(stmt)]
                if not before:
                    continue
                params = [{"_id": b.id, **wanted[b.id]} for b in before]
                conn.execute(
                    update(t)
                    .where(t.c.id == bindparam("_id"))
                    .values({name: bindparam(name) for name in params[0] if name != "_id"}),
                    params,
                )
                done.extend(CostChange(before=b, after=replace(b, **wanted[b.id])) for b in before)
            if done:
                self._on_cost_changed(conn, done)
        return len(done)

    def _on_cost_changed(self, conn: Connection, changes: Sequence[CostChange]) -> None:
        """Hook: runs inside the re-pricing transaction (a rollup subtracts ``before`` and
        adds ``after``)."""
        for hook in self.cost_hooks:
            hook(conn, changes)
