"""Publish's round trips to the database, counted, so they cannot creep back up.

Counted on the engine: every statement (``before_cursor_execute``), every transaction's begin
and end, and every connection checkout (on PostgreSQL the pool pings each one). A Publish with
a request_id, to one named subscriber by e-mail (one delivery) takes:

- its write transaction: the request_id's claim, the recipients' read, the notification, its
  deliveries, its event, the stored response and the audit record with its queue row (on
  SQLite six statements; on PostgreSQL one data-modifying WITH: store/publishing.py and
  services.common.audit.trail.ride): 3 statements (8), a BEGIN and a COMMIT, one checkout;
- the event's placement in the stream, after the commit: the log's lock (PostgreSQL only) and
  one UPDATE, a BEGIN and a COMMIT, one checkout (one placement serves every Publish that
  committed meanwhile, so under load it costs each a fraction of this).

That is 11 on PostgreSQL and 13 on SQLite, counted alone (12 on PostgreSQL with the audit
record in a statement of its own; 15 with the notification's rows and the response written one
statement each; before that, 22 and 19, with a global lock held from the event to the commit).
Both databases.
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

PUBLISH_ROUND_TRIPS = {"postgresql": 11, "sqlite": 13}


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

    def begin(_conn: Any) -> None:
        if ours():
            counts["begin"] += 1

    def end(_conn: Any) -> None:
        if ours():
            counts["end"] += 1

    def checkout(*_args: Any) -> None:
        if ours():
            counts["checkout"] += 1

    listeners: list[tuple[Any, str, Any]] = [
        (engine, "before_cursor_execute", statement),
        (engine, "begin", begin),
        (engine, "commit", end),
        (engine, "rollback", end),
        (engine.pool, "checkout", checkout),
    ]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield counts
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)


def round_trips(counts: Counter[str], dialect: str) -> int:
    pings = counts["checkout"] if dialect == "postgresql" else 0
    return counts["statement"] + counts["begin"] + counts["end"] + pings


def test_publish_stays_within_its_round_trips(notify_server: NotifyServer) -> None:
    s = create(notify_server)
    publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(lot="WARM"), [s.id])  # warm
    db = notify_server.app.db
    with counting(db.engine) as counts:
        response = publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id])
    assert len(response.notification.deliveries) >= 1
    used = round_trips(counts, db.dialect)
    assert used <= PUBLISH_ROUND_TRIPS[db.dialect], dict(counts)
