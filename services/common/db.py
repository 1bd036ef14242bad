"""SQLAlchemy 2 engine and sessions: SQLite (embedded default) or PostgreSQL via psycopg2.

Writes go through ``Database.write()``: one transaction, committed on success, rolled back on
any error, so "nothing is written on any error" holds by construction. On SQLite a write
transaction starts with BEGIN IMMEDIATE: taking the write lock up front turns a read-then-write
race into a short wait (busy_timeout) instead of a "database is locked" failure mid-request.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Engine,
    QueuePool,
    String,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from services.common import metrics, tracing


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine with ``pool_size`` connections and as many again of overflow. Its errors
    never show the statement's parameters (``hide_parameters``): an error's text reaches the
    log and an outbox row's last_error, and parameters can be a patient's name. PostgreSQL is
    spoken to through ``POSTGRESQL_DRIVER`` whichever driver the URL names (``postgresql://``,
    ``postgresql+psycopg://``...): the URL says where the database is, the product which
    driver serves its threads best."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        parsed.set(drivername=POSTGRESQL_DRIVER),
        # a Core executemany (the linker's links, a broadcast's deliveries) as pages of
        # statements, not a round trip per row
        executemany_mode="values_plus_batch",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=POOL_RECYCLE_SECONDS,
        hide_parameters=True,
        # the URL's own libpq settings (``?keepalives_idle=...``) win over ours
        connect_args={k: v for k, v in PG_KEEPALIVES.items() if k not in parsed.query},
    )
    event.listen(engine, "checkout", _refuse_if_gone)
    event.listen(engine, "engine_connect", _autocommit_if_asked)
    event.listen(engine, "checkin", _autocommit_off)
    return engine


AUTOCOMMIT = "driver_autocommit"
"""An execution option of ours (``engine.execution_options(driver_autocommit=True)``): the
connection is in the driver's autocommit while checked out, so it sends no BEGIN and no
COMMIT. Not SQLAlchemy's ``isolation_level="AUTOCOMMIT"``: on psycopg2 that sets an explicit
isolation level on the connection and resets it at checkin, and psycopg2 then sends
``SET default_transaction_isolation TO DEFAULT`` at the next switch, a round trip of its own
on every lending (one a reservation, counted on the wire with strace, 2026-12-05). Switching
psycopg2's ``autocommit`` on a connection whose level was never set sends nothing."""


def _autocommit_if_asked(connection: Connection) -> None:
    if connection.get_execution_options().get(AUTOCOMMIT):
        connection.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]


def _autocommit_off(dbapi_connection: Any, _record: Any) -> None:
    """Every connection goes back to the pool out of autocommit. One in autocommit began no
    transaction (the pool's rollback before this sent nothing), so the switch is allowed and
    sends nothing; the others are left as they are."""
    if dbapi_connection is not None and not dbapi_connection.closed and dbapi_connection.autocommit:
        dbapi_connection.autocommit = False


POSTGRESQL_DRIVER = "postgresql+psycopg2"
"""psycopg2, not psycopg 3: the services serve each call on a thread of their own, and psycopg 3
releases the GIL around every short libpq call of a round trip (its C generators and libpq
wrapper), so under load each of those hands the GIL to a waiting thread, a wake-up and a context
switch each; psycopg2 releases it once per blocking round trip. Measured (docs/benchmarks.md,
"2026-12-04, 11:30-13:10 UTC"; bench/driver_threads.py): 16 threads each doing 100 us of
Python and four small round trips ran 763 operations a second on psycopg 3 (144 context
switches and 1.7 ms of CPU each) and 1,617 on psycopg2 (31 switches, 0.64 ms); in the services,
the same code on psycopg2 cost BookAppointment 21 % less CPU a call and notify's end to end 33 %
less."""

POOL_RECYCLE_SECONDS = 1800
"""A pooled PostgreSQL connection older than this is replaced at its next checkout (a bound on
what a proxy or firewall that forgets idle connections can leave behind)."""

PG_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
"""TCP keepalives on every PostgreSQL connection: a server that vanished without closing the
connection (a host gone, a network cut) is noticed by the kernel within about a minute of
idleness, and the socket then reads as closed at the next checkout."""


def _refuse_if_gone(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pool's check of a PostgreSQL connection before handing it out, without a round
    trip. An idle connection in the pool has nothing to read: the server speaks only when
    asked. If its socket is readable, the server has said goodbye (a restart, an
    administrator's ``pg_terminate_backend``, an idle timeout: a FATAL message, then the end
    of the stream) or the kernel's keepalive gave up on it, so the pool discards it and opens
    another (SQLAlchemy's answer to ``DisconnectionError`` at checkout). SQLAlchemy's own
    ``pool_pre_ping`` sent a statement to the server on every checkout instead: a round trip
    before every transaction, about a twentieth of a reservation's CPU (py-spy, 2026-12-04)."""
    if dbapi_connection.closed:
        raise DisconnectionError("the connection is closed")
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLPRI)
        events = poller.poll(0)
    except (OSError, ValueError) as error:  # no usable socket left
        raise DisconnectionError("the connection's socket is gone") from error
    if events:
        raise DisconnectionError("the server closed the connection or sent unasked")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred-only).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("sqlite_single_statement", False):
            return  # one SELECT is its own consistent snapshot: no BEGIN round trip
        connection.exec_driver_sql(
            "BEGIN IMMEDIATE" if options.get("sqlite_immediate") else "BEGIN"
        )


class CompiledOnce:
    """SQLAlchemy's compiled cache for one statement object that is built once and kept.

    SQLAlchemy finds a statement's compiled form in the engine's cache by a key that holds the
    statement's whole structure as nested tuples, which Python hashes anew at every execution:
    14 µs for a joint write of six 20-column INSERTs, 4 % of the scheduler's time under
    booking load (py-spy, 2026-12-04). A kept statement's structure never changes, so its
    compiled forms are told apart by the rest of the key only (dialect, parameter names,
    schema translation, executemany). One instance per statement (``Kept``), never shared."""

    __slots__ = ("_compiled",)

    def __init__(self) -> None:
        self._compiled: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    def _without_statement(key: tuple[Any, ...]) -> tuple[Any, ...]:
        dialect, _statement, *rest = key
        return (dialect, *rest)

    def get(self, key: tuple[Any, ...], default: Any = None) -> Any:
        return self._compiled.get(self._without_statement(key), default)

    def __setitem__(self, key: tuple[Any, ...], compiled: Any) -> None:
        if len(self._compiled) < COMPILED_FORMS_KEPT:
            self._compiled[self._without_statement(key)] = compiled


COMPILED_FORMS_KEPT = 64
"""A kept statement's compiled forms at most (one per engine and parameter set in practice)."""


class _Rendered:
    """A kept statement as PostgreSQL receives it: SQLAlchemy's rendering of it, the
    parameters written into it (a literal's value), and the conversions (bind processors) its
    typed parameters need, so that a call sends its values with ``exec_driver_sql``."""

    __slots__ = ("fixed", "processors", "sql")

    def __init__(self, sql: str, fixed: dict[str, Any], processors: dict[str, Any]) -> None:
        self.sql = sql
        self.fixed = fixed
        self.processors = processors

    @classmethod
    def of(cls, statement: Any, dialect: Dialect) -> _Rendered | None:
        """None when the statement needs SQLAlchemy at each execution: a parameter expanded
        per call (an IN list), a renamed parameter, or a result column converted on the way
        back (a row would come back unconverted)."""
        compiled = statement.compile(dialect=dialect)
        if compiled.post_compile_params or compiled.literal_execute_params:
            return None
        if compiled.escaped_bind_names or compiled.positional:
            return None
        if any(c.type._cached_result_processor(dialect, None) for c in compiled._result_columns):
            return None
        processors = {n: p for n, p in compiled._bind_processors.items() if p is not None}
        fixed = {}
        for bind, name in compiled.bind_names.items():
            if not bind.required:
                value = bind.effective_value
                fixed[name] = processors[name](value) if name in processors else value
        return cls(compiled.string, fixed, processors)

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        bound = {**self.fixed, **params}
        for name, process in self.processors.items():
            if name in params:
                bound[name] = process(params[name])
        return bound


class Kept:
    """A hot path's statement, built once (a module constant, or from a cached builder).

    On PostgreSQL a statement that allows it (``_Rendered.of``) is rendered once and each call
    sends its values with ``exec_driver_sql``: SQLAlchemy's connection still runs it (its
    events, the statement counters and tracing, its error translation and the handling of a
    lost connection), but no longer binds each call's values to the compiled form, which for
    a joint write of 270 parameters cost as much as the driver's own work (about 250 µs of
    ~700 µs a booking's write, measured in-process on psycopg 3, before the services moved to
    psycopg2; not measured again since). Every other statement, and every one on
    SQLite, gets a compiled cache of its own (``CompiledOnce``): each execution binds its
    parameters to the same compiled form without SQLAlchemy hashing the statement's
    structure to find it."""

    __slots__ = ("_rendered", "options", "statement")

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self.options = {"compiled_cache": CompiledOnce()}
        self._rendered: dict[Dialect, _Rendered | None] = {}

    def execute(self, connection: Connection | Session, params: Any = None) -> Any:
        if isinstance(params, dict):
            session = connection if isinstance(connection, Session) else None
            bind = session.get_bind() if session is not None else connection
            rendered = self.rendered(bind.dialect)  # type: ignore[union-attr]
            if rendered is not None:
                if session is not None:
                    if session.autoflush:  # as Session.execute would, before its statement
                        session.flush()
                    connection = session.connection()
                assert isinstance(connection, Connection)
                return connection.exec_driver_sql(rendered.sql, rendered.parameters(params))
        return connection.execute(self.statement, params, execution_options=self.options)

    def rendered(self, dialect: Dialect) -> _Rendered | None:
        """The statement as sent to ``dialect`` by ``exec_driver_sql``; None: by SQLAlchemy's
        compiled execution (SQLite; a statement ``_Rendered.of`` refuses)."""
        try:
            return self._rendered[dialect]
        except KeyError:
            pass
        rendered = _Rendered.of(self.statement, dialect) if dialect.name == "postgresql" else None
        if len(self._rendered) < COMPILED_FORMS_KEPT:
            self._rendered[dialect] = rendered
        return rendered


_DEFERRED = "db.deferred_write"
Rider = tuple[Any, dict[str, Any]]
"""A DML statement (an UPDATE, an INSERT) and its parameters, every one bound by name
(``bindparam``), that a deferred write carries in its own round trip."""


def defer_write(session: Session, write: Callable[[Sequence[Rider]], None]) -> None:
    """Hold a write of this transaction until its response is known, so that the statements
    belonging with it (the idempotency key's stored response) can ride in the same round trip
    (``write`` receives them). It runs at ``flush_deferred``, and at the latest before the
    commit: a deferred write is never lost. One per transaction."""
    if _DEFERRED in session.info:
        raise RuntimeError("one deferred write per transaction")
    session.info[_DEFERRED] = write


_STATEMENTWISE = "db.statementwise"


class NeedsTransaction(Exception):
    """Raised by a write running ``statementwise`` that finds, before writing anything, that it
    cannot be one statement (more rows than one statement carries, a write whose answer is
    needed before the rest): its caller runs it again in a transaction (``Database.write``)."""


def statementwise(session: Session) -> bool:
    """Whether ``session`` runs each statement as a transaction of its own
    (``Database.statementwise`` on PostgreSQL): a write of several statements must raise
    NeedsTransaction there rather than leave a part of itself committed."""
    return bool(session.info.get(_STATEMENTWISE))


# PostgreSQL's "try again" errors: deadlock detected, serialization failure, lock not available.
_RACE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def lost_race(error: DBAPIError) -> bool:
    """The statement lost a race with a concurrent transaction (PostgreSQL chose it as a
    deadlock's victim, or could not serialise or lock): nothing it did stands, and the same
    work tried again may succeed."""
    return sqlstate(error) in _RACE_SQLSTATES


def sqlstate(error: DBAPIError) -> str:
    """The SQLSTATE the server answered with (psycopg2's ``pgcode``); empty when the error is
    not the server's (a lost connection, SQLite)."""
    return getattr(error.orig, "pgcode", None) or ""


def has_deferred_write(session: Session) -> bool:
    """Whether the transaction holds a deferred write that riders can join."""
    return _DEFERRED in session.info


def flush_deferred(session: Session, *riders: Rider) -> bool:
    """Run the transaction's deferred write, if any, carrying ``riders``; False when there
    was none (the caller then executes its riders itself)."""
    write = session.info.pop(_DEFERRED, None)
    if write is None:
        return False
    write(riders)
    return True


def _flush_before_commit(session: Session) -> None:
    flush_deferred(session)


def _forget_deferred(session: Session, *_args: Any) -> None:
    session.info.pop(_DEFERRED, None)


class Database:
    """One engine and its sessions; a service holds exactly one. Its pool's use is reported
    to Prometheus at each scrape, labelled with the database's name."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        tracing.instrument_engine(self.engine)  # a span per statement, when tracing is on
        self.max_connections = 2 * pool_size  # pool plus overflow (make_engine)
        parsed = make_url(url)
        database = parsed.database or ""
        self.name = Path(database).stem if parsed.get_backend_name() == "sqlite" else database
        metrics.watch(f"db-pool:{self.name}", self.pool_use)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        # the same pool, each connection in autocommit while checked out (``statementwise``)
        self._statementwise = (
            self.engine.execution_options(**{AUTOCOMMIT: True})
            if self.engine.dialect.name == "postgresql"
            else None
        )
        event.listen(self._writer, "before_commit", _flush_before_commit)
        event.listen(self._writer, "after_rollback", _forget_deferred)

    def on_write_session(self, name: str, listener: Callable[..., None]) -> None:
        """Listen to a session event (``before_commit``, ``after_flush``...) of the write
        sessions only: the audit trail writes a mutation's record into its own transaction.
        Such listeners run ahead of this class's own, so that the trail's ``before_commit``
        runs a held-back write itself, with the record riding in it."""
        event.listen(self._writer, name, listener, insert=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction: commit on success, roll back on any exception."""
        with self._writer.begin() as session:
            yield session

    @contextmanager
    def statementwise(self) -> Iterator[Session]:
        """A write whose every statement is a transaction of its own on PostgreSQL: the driver
        sends no BEGIN before the first statement and no COMMIT after the last, two round trips
        of the four a hot write (one unlocked read, one joint write) would otherwise make. Only
        for a write that is all in one statement, whatever it reads before: a joint write
        (services.common.joint_writes) with ``expect``, which fails as a whole when any of its
        conditions no longer holds. On SQLite, a transaction as ``write`` gives (its writes run
        apart, and the failed ``expect`` rolls them back). The write session's hooks (the audit
        trail's record riding in the statement) run as in ``write``."""
        if self._statementwise is None:
            with self.write() as session:
                yield session
            return
        with self._writer(bind=self._statementwise) as session, session.begin():
            session.info[_STATEMENTWISE] = True
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work. Closing (not rolling back) ends it: the connection's
        transaction is rolled back on return to the pool, and the loaded rows stay readable
        after the block instead of being expired."""
        with self._reader() as session:
            yield session

    @contextmanager
    def single_read(self) -> Iterator[Connection]:
        """A plain connection for one SELECT on a hot path, where a Session's bookkeeping (and
        an explicit BEGIN: on PostgreSQL the connection is in autocommit, so the driver sends
        neither a BEGIN nor the ROLLBACK that ends it) cost more than the query. Use ``read``
        for anything that needs several statements to agree."""
        engine = self._statementwise or self.engine
        with engine.connect() as connection:
            yield connection.execution_options(sqlite_single_statement=True)

    def dispose(self) -> None:
        metrics.unwatch(f"db-pool:{self.name}", self.pool_use)
        self.engine.dispose()

    def pool_use(self) -> list[metrics.Reading]:
        """Connections in use and idle, and the most the pool opens (no query)."""
        pool = self.engine.pool
        labels = {"pool": self.name}
        if not isinstance(pool, QueuePool):
            return []
        return [
            metrics.Reading("db_pool_checked_out_connections", labels, pool.checkedout()),
            metrics.Reading("db_pool_idle_connections", labels, pool.checkedin()),
            metrics.Reading("db_pool_max_connections", labels, self.max_connections),
        ]


class DecimalText(TypeDecorator[Decimal]):
    """A Decimal stored as its exact text: SQLite has no exact numeric type, and dose and stock
    figures must read back exactly as written on either database."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else format(value, "f")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC instants on both databases (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
