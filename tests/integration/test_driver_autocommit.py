"""A PostgreSQL connection lent in autocommit (``Database.single_read``,
``Database.statementwise``) sends its statements and nothing else, and goes back to the pool
out of autocommit, so the next transaction on it is one.

What the server last received from a connection is read from ``pg_stat_activity.query`` of
its backend: SQLAlchemy's own events cannot see what the driver sends by itself (psycopg2's
``SET default_transaction_isolation TO DEFAULT`` after an explicit isolation level, a round
trip of its own at every lending before services.common.db's ``AUTOCOMMIT`` option).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from services.common.db import Database

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    made = Database(postgres_url, pool_size=1)  # one connection: every block below shares it
    try:
        yield made
    finally:
        made.dispose()


def _backend(database: Database) -> int:
    with database.read() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _last_sent(server_url: str, pid: int) -> str:
    admin = create_engine(server_url)
    try:
        with admin.connect() as conn:
            query = conn.execute(
                text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
            return str(query)
    finally:
        admin.dispose()


def test_a_single_read_sends_only_its_statement(
    database: Database, postgres_server_url: str
) -> None:
    pid = _backend(database)
    for _ in range(3):  # psycopg2's SET came from the second lending on
        with database.single_read() as conn:
            assert conn.execute(text("SELECT 'single read' AS marker")).scalar_one()
    assert _last_sent(postgres_server_url, pid) == "SELECT 'single read' AS marker"


def test_a_statementwise_write_sends_only_its_statement(
    database: Database, postgres_server_url: str
) -> None:
    pid = _backend(database)
    for _ in range(3):
        with database.statementwise() as session:
            session.execute(text("SELECT 'statementwise' AS marker"))
    assert _last_sent(postgres_server_url, pid) == "SELECT 'statementwise' AS marker"


def test_the_connection_comes_back_out_of_autocommit(database: Database) -> None:
    with database.write() as session:
        session.execute(text("CREATE TABLE kept (n integer)"))
    with database.statementwise() as session:
        session.execute(text("INSERT INTO kept VALUES (1)"))  # committed on its own
    with pytest.raises(RuntimeError), database.write() as session:
        session.execute(text("INSERT INTO kept VALUES (2)"))
        raise RuntimeError("the transaction fails after its insert")
    with database.single_read() as conn:
        assert conn.execute(text("SELECT n FROM kept ORDER BY n")).scalars().all() == [1]
    with pytest.raises(RuntimeError), database.write() as session:
        session.execute(text("INSERT INTO kept VALUES (3)"))
        raise RuntimeError("and so does this one, after a single read")
    with database.read() as session:
        assert session.execute(text("SELECT n FROM kept ORDER BY n")).scalars().all() == [1]


def test_a_statement_that_fails_in_autocommit_leaves_a_transactional_connection(
    database: Database,
) -> None:
    with database.write() as session:
        session.execute(text("CREATE TABLE kept (n integer)"))
    with pytest.raises(DBAPIError), database.statementwise() as session:
        session.execute(text("SELECT 1 / 0"))  # the server refuses it: division by zero
    with pytest.raises(RuntimeError), database.write() as session:
        session.execute(text("INSERT INTO kept VALUES (1)"))
        raise RuntimeError("the transaction fails after its insert")
    with database.read() as session:
        assert session.execute(text("SELECT count(*) FROM kept")).scalar_one() == 0
