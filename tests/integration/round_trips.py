"""Round trips to the database counted per thread, for the tests that hold a hot path to its
budget.

Counted with SQLAlchemy's engine and pool events in the thread that sent them, as psycopg2
talks to PostgreSQL: every statement; the BEGIN it sends before a transaction's first
statement (none on a connection in autocommit, ``Database.statementwise``); the COMMIT or
ROLLBACK of a transaction that sent one (psycopg2 sends none for a transaction that sent
nothing). The pool's check of a connection at checkout sends nothing
(services.common.db, ``_refuse_if_gone``). What the driver sends of its own accord is not
seen here; tests/integration/test_driver_autocommit.py holds the autocommit lendings to
sending nothing of the kind (psycopg2's ``SET default_transaction_isolation``). On SQLite
only statements are counted (BEGIN IMMEDIATE is one; the driver's COMMIT is not a round
trip to a server).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import Pool


class RoundTrips(Counter[int]):
    """Round trips per thread, and the statements each thread sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, list[str]] = {}

    def of_thread_sending(self, fragment: str) -> int:
        """The round trips of the thread that sent a statement containing ``fragment`` (the
        serving thread, told apart from the audit linker and the other background threads
        that may run during the call)."""
        threads = [t for t, sql in self.sent.items() if any(fragment in s for s in sql)]
        assert len(threads) == 1, f"{len(threads)} threads sent {fragment!r}"
        return self[threads[0]]


@contextmanager
def round_trips_by_thread() -> Iterator[RoundTrips]:
    """Round trips (PostgreSQL) or statements (SQLite) while the block runs, per thread."""
    counted = RoundTrips()
    open_tx: set[int] = set()  # dbapi connections inside a transaction psycopg began
    begun: set[int] = set()  # SQLAlchemy began, psycopg has not sent BEGIN yet

    def me() -> int:
        return threading.get_ident()

    def statement(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        counted[me()] += 1
        counted.sent.setdefault(me(), []).append(sql)
        raw = id(conn.connection.dbapi_connection)
        if conn.dialect.name == "postgresql" and raw in begun:
            begun.discard(raw)
            open_tx.add(raw)
            counted[me()] += 1  # BEGIN

    def begin(conn: Any) -> None:
        raw = conn.connection.dbapi_connection
        if conn.dialect.name == "postgresql" and not raw.autocommit:  # autocommit: no BEGIN
            begun.add(id(raw))

    def end(conn: Any) -> None:
        raw = id(conn.connection.dbapi_connection)
        begun.discard(raw)
        if raw in open_tx:
            open_tx.discard(raw)
            counted[me()] += 1  # COMMIT or ROLLBACK

    def reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        raw = id(dbapi_connection)
        begun.discard(raw)
        if raw in open_tx:  # the pool's rollback on return
            open_tx.discard(raw)
            counted[me()] += 1

    listeners: list[tuple[Any, str, Any]] = [
        (Engine, "before_cursor_execute", statement),
        (Engine, "begin", begin),
        (Engine, "commit", end),
        (Engine, "rollback", end),
        (Pool, "reset", reset),
    ]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield counted
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)
