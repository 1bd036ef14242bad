"""Publish's round trips to the database, counted, so they cannot creep back up.

Counted on the engine: every statement (``before_cursor_execute``), and every transaction's
BEGIN and end that the driver sends (none on a connection in autocommit). A Publish with a
request_id, to one named subscriber by e-mail (one delivery) takes:

- on PostgreSQL, no transaction (``Database.statementwise``; services.common.idempotency,
  ``in_one_statement``): the recipients' read, then one data-modifying WITH writing the
  notification, its delivery, its event, the request_id with the stored response and the audit
  record with its queue row (store/publishing.py and services.common.audit.trail.ride): 2;
- on SQLite, its write transaction: the request_id's claim, the recipients' read, the
  notification, its deliveries, its event, the stored response and the audit record with its
  queue row (8 statements), a BEGIN and a COMMIT;
- the event's placement in the stream, after the write: the log's lock (PostgreSQL only) and
  one UPDATE, a BEGIN and a COMMIT (one placement serves every Publish that committed
  meanwhile, so under load it costs each a fraction of this).

That is 6 on PostgreSQL and 13 on SQLite, counted alone. On PostgreSQL it was 9 with the claim
and a transaction around the write (2026-12-05), 11 counting the pool's pings at checkout; 12
with the audit record in a statement of its own; 15 with the notification's rows and the
response written one statement each; before that, 22 and 19, with a global lock held from the
event to the commit. Both databases.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event

from infusion.notify.v1 import notify_pb2 as pb

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.notify_conftest import (  # noqa: E402
    NotifyServer,
    create,
    lot_expiring,
    publish,
)

pytest_plugins = ["tests.integration.notify_conftest"]

PUBLISH_ROUND_TRIPS = {"postgresql": 6, "sqlite": 13}


@contextmanager
def counting(engine: Engine) -> Iterator[Counter[str]]:
    """Counts what the calls' threads send to the database (the audit chain's linker, which
    runs on its own schedule, is left out)."""
    counts: Counter[str] = Counter()

    def ours() -> bool:
        return not threading.current_thread().name.startswith("audit-linker")

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if ours() and not sql.lstrip().upper().startswith("BEGIN"):
            counts["statement"] += 1

    def sent(conn: Any) -> bool:
        """Whether the driver sends a BEGIN, COMMIT or ROLLBACK (none in autocommit)."""
        return ours() and not getattr(conn.connection.dbapi_connection, "autocommit", False)

    def begin(conn: Any) -> None:
        if sent(conn):
            counts["begin"] += 1

    def end(conn: Any) -> None:
        if sent(conn):
            counts["end"] += 1

    listeners: list[tuple[Any, str, Any]] = [
        (engine, "before_cursor_execute", statement),
        (engine, "begin", begin),
        (engine, "commit", end),
        (engine, "rollback", end),
    ]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield counts
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)


def round_trips(counts: Counter[str]) -> int:
    return counts["statement"] + counts["begin"] + counts["end"]


def test_publish_stays_within_its_round_trips(notify_server: NotifyServer) -> None:
    s = create(notify_server)
    publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(lot="WARM"), [s.id])  # warm
    db = notify_server.app.db
    with counting(db.engine) as counts:
        response = publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id])
    assert len(response.notification.deliveries) >= 1
    used = round_trips(counts)
    assert used <= PUBLISH_ROUND_TRIPS[db.dialect], dict(counts)
