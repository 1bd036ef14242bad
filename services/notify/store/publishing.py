"""What a Publish writes: the notification, its deliveries (PENDING, due when planned) and its
PUBLISHED event.

On PostgreSQL the rows go in one statement (services.common.joint_writes) that also carries
the idempotency key's stored response and the audit record (services.common.db.defer_write):
the write waits until the response is known, then costs one round trip where it cost four
(notification, deliveries, event, response), each of which was a statement to build, send and
read back in this process and to parse and plan in PostgreSQL. On SQLite (no data-modifying
WITH) it is one statement per table.

A notification with a dedupe key is inserted first, on its own: whether a concurrent Publish
took the key decides the answer (that one's notification, as a duplicate), so it must be known
before the response is built; its deliveries and event follow with the response. Such a
Publish, and a broadcast of more deliveries than one statement carries, needs a transaction:
run without one (``Database.statementwise``), it raises NeedsTransaction before writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from services.common.audit.trail import wrote
from services.common.db import NeedsTransaction, Rider, defer_write, statementwise
from services.common.joint_writes import Write, insert_in_order, insert_one, write_all
from services.notify.domain.model import Status
from services.notify.domain.views import NotificationView, PlannedDelivery
from services.notify.store.models import DeliveryRow, EventRow, NotificationRow
from services.notify.store.notifications import ADD, by_dedupe, site_keys

_notifications = NotificationRow.metadata.tables[NotificationRow.__tablename__]
_deliveries = DeliveryRow.metadata.tables[DeliveryRow.__tablename__]
_events = EventRow.metadata.tables[EventRow.__tablename__]

TOGETHER = 16
"""The most deliveries written in the one statement: a broadcast's many go by executemany
(a statement of its own, batched by SQLAlchemy), which keeps the statements few in shape and
their bound parameters far below PostgreSQL's limit."""


def add(
    session: Session,
    notification: NotificationView,
    deliveries: Sequence[PlannedDelivery],
    traceparent: str | None,
) -> NotificationView | None:
    """Writes the notification, its deliveries and its event (by the commit at the latest)
    and returns None; when a concurrent Publish committed the same dedupe key first, writes
    nothing and returns that one's notification."""
    n = notification
    together = session.get_bind().dialect.name == "postgresql" and len(deliveries) <= TOGETHER
    if statementwise(session) and (n.dedupe_key or not together):
        raise NeedsTransaction  # more than the one statement: nothing written yet
    row = _notification_row(n, traceparent)
    insert_now = ADD[session.get_bind().dialect.name]
    if n.dedupe_key and session.execute(insert_now, row).first() is None:
        seen = by_dedupe(session, n.organisation_id, n.dedupe_key)
        if seen is None:
            raise RuntimeError(f"notification {n.id} was not added")
        return seen
    # written by statement, not flushed: the audit record names the row as a flushed one
    wrote(session, NotificationRow(id=n.id, organisation_id=n.organisation_id))
    rows: list[tuple[Table, list[dict[str, Any]]]] = []
    if not n.dedupe_key:
        rows.append((_notifications, [row]))
    if deliveries:
        rows.append((_deliveries, [_delivery_row(n, d) for d in deliveries]))
    rows.append((_events, [_event_row(n)]))
    writes: list[Write] = [
        insert_in_order(table, table_rows) if together else (insert_one(table, keys), table_rows)
        for table, table_rows in rows
        for keys in [tuple(table_rows[0])]
    ]

    def write(riders: Sequence[Rider]) -> None:
        ridden: list[Write] = [(statement, [params]) for statement, params in riders]
        write_all(session.connection(), writes + ridden, apart=not together)

    defer_write(session, write)
    return None


def _notification_row(n: NotificationView, traceparent: str | None) -> dict[str, Any]:
    return {
        "id": n.id,
        "topic": n.topic.value,
        "payload": dict(n.payload),
        "subscriber_ids": list(n.subscriber_ids),
        "site_ids": list(n.site_ids),
        "site_keys": site_keys(n.site_ids),
        "organisation_id": n.organisation_id,
        "dedupe_key": n.dedupe_key or None,
        "send_after": n.send_after,
        "expires_at": n.expires_at,
        "created_at": n.created_at,
        "cancelled_at": None,
        "traceparent": traceparent,
    }


def _delivery_row(n: NotificationView, d: PlannedDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "notification_id": n.id,
        "subscriber_id": d.subscriber_id,
        "channel": d.channel.value,
        "destination": d.destination,
        "subject": d.subject[:1000],
        "body_text": d.body_text,
        "body_html": d.body_html,
        "critical": d.critical,
        "status": Status.PENDING.value,
        "next_attempt_at": d.due,
        "lease_until": None,
        "attempt_count": 0,
        "deferred": d.deferred,
        "last_error": "",
        "delivered_at": None,
        "updated_at": n.created_at,
    }


def _event_row(n: NotificationView) -> dict[str, Any]:
    """Unplaced: events.place numbers it once this transaction has committed."""
    return {
        "notification_id": n.id,
        "kind": "PUBLISHED",
        "topic": n.topic.value,
        "created_at": n.created_at,
    }
