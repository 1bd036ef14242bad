"""The PostgreSQL pool's check of a connection before handing it out (services.common.db,
``_refuse_if_gone``): no round trip for a healthy connection, which is handed out again as it
is; a connection the server closed (``pg_terminate_backend``, as at a restart or an idle
timeout) is replaced before anyone uses it, so the next transaction just works."""

from __future__ import annotations

import select
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text

from services.common.db import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    made = make_engine(postgres_url, pool_size=1)
    try:
        yield made
    finally:
        made.dispose()


def _backend(engine: Engine) -> tuple[int, Any]:
    """The server process behind the pool's connection, and that connection's driver object."""
    with engine.connect() as conn:
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        return pid, conn.connection.dbapi_connection


def _wait_readable(raw: Any) -> None:
    """Until the server has written to the idle connection (bounded: the test fails, never
    hangs)."""
    readable, _, _ = select.select([raw.fileno()], [], [], 10)
    assert readable, "the server never spoke on the idle connection"


def test_a_healthy_connection_is_handed_out_again_without_a_statement(engine: Engine) -> None:
    first, _ = _backend(engine)
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    for _ in range(5):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert _backend(engine)[0] == first  # the same server process: never discarded
    assert sent == ["SELECT 1"] * 5 + ["SELECT pg_backend_pid()"]  # no ping before any


def test_a_connection_the_server_closed_is_replaced_before_use(
    engine: Engine, postgres_server_url: str
) -> None:
    first, raw = _backend(engine)
    admin = create_engine(postgres_server_url)
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
    finally:
        admin.dispose()
    _wait_readable(raw)  # the server's farewell, then the end of the stream
    second, _ = _backend(engine)  # no error: the dead connection never reached the caller
    assert second != first


def test_a_connection_with_unread_input_is_not_handed_out(
    engine: Engine, postgres_server_url: str
) -> None:
    """Anything waiting on an idle connection means it is not what the pool thinks it is (a
    notification after a LISTEN left behind, a server's farewell): it is discarded."""
    channel = f"c_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        first = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        raw = conn.connection.dbapi_connection
        conn.execute(text(f"LISTEN {channel}"))
        conn.commit()
    admin = create_engine(postgres_server_url)
    try:
        with admin.connect() as other:
            other.execute(text(f"NOTIFY {channel}"))
            other.commit()
    finally:
        admin.dispose()
    _wait_readable(raw)
    assert _backend(engine)[0] != first


def test_connections_carry_keepalives_unless_the_url_sets_its_own(postgres_url: str) -> None:
    """TCP keepalives on every connection (a server gone without closing is noticed), and a
    deployment's own libpq setting in the URL wins over the default."""
    for url, idle in ((postgres_url, "30"), (f"{postgres_url}&keepalives_idle=7", "7")):
        made = make_engine(url, pool_size=1)
        try:
            with made.connect() as conn:
                used = conn.connection.dbapi_connection.info.dsn_parameters
        finally:
            made.dispose()
        assert (used.get("keepalives"), used.get("keepalives_idle")) == ("1", idle)
