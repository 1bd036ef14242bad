"""The event log the Subscribe stream reads: one row per Publish or Cancel, numbered by a
sequence that only grows and is handed out in commit order."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from services.notify.domain.views import EventView
from services.notify.store.models import DeliveryRow, EventRow, NotificationRow
from services.notify.store.notifications import view

# pg_advisory_xact_lock key ("notify" in ASCII): event rows get their sequence numbers in
# commit order, so a stream reading "seq > cursor" never skips one committed late.
EVENT_LOCK = 0x6E6F74696679


def append(session: Session, notification_id: str, topic: str, kind: str, now: dt.datetime) -> None:
    """On PostgreSQL the transaction first takes the log's lock, held to its commit (SQLite's
    write transaction already serialises writers)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_LOCK})
    session.add(EventRow(notification_id=notification_id, kind=kind, topic=topic, created_at=now))
    session.flush()


def after(session: Session, cursor: int, limit: int) -> list[EventView]:
    """Up to ``limit`` events after ``cursor``, in order; each names its notification (without
    deliveries) and everyone it concerns: its named subscribers and its deliveries' ones."""
    events = list(
        session.scalars(
            select(EventRow).where(EventRow.seq > cursor).order_by(EventRow.seq).limit(limit)
        )
    )
    if not events:
        return []
    ids = list({e.notification_id for e in events})
    rows = {
        r.id: r for r in session.scalars(select(NotificationRow).where(NotificationRow.id.in_(ids)))
    }
    recipients: dict[str, set[str]] = {}
    for nid, sid in session.execute(
        select(DeliveryRow.notification_id, DeliveryRow.subscriber_id).where(
            DeliveryRow.notification_id.in_(ids)
        )
    ):
        recipients.setdefault(nid, set()).add(sid)
    return [
        EventView(
            seq=e.seq,
            kind=e.kind,
            created_at=e.created_at,
            notification=view(rows[e.notification_id]),
            recipients=frozenset(
                recipients.get(e.notification_id, set())
                | set(rows[e.notification_id].subscriber_ids)
            ),
        )
        for e in events
    ]


def last_sequence(session: Session) -> int:
    found = session.execute(select(EventRow.seq).order_by(EventRow.seq.desc()).limit(1))
    return int(found.scalar() or 0)
