"""The event log the Subscribe stream reads: one row per Publish or Cancel, written in the
mutation's transaction and placed in the stream just after it commits.

A stream reads "the events after my cursor", so an event must never become visible behind one
already read. Numbering events as they are written does not give that (a transaction numbered
first may commit last), and holding a global lock from the event to the commit binds every
Publish of every process in series. Instead the writing transaction leaves ``stream_seq``
empty, and ``place`` numbers every committed, unplaced event after the highest number, in a
transaction of its own holding the log's lock for that one statement: placements are serial,
each sees the previous one committed, so the numbers visible at any moment are a prefix of
what will ever be visible and a resumed stream neither skips nor repeats an event.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Update, func, insert, select, text, update
from sqlalchemy.orm import Session

from services.notify.domain.views import EventView
from services.notify.store.models import DeliveryRow, EventRow, NotificationRow
from services.notify.store.notifications import view

# pg_advisory_xact_lock key ("notify" in ASCII): one placement at a time, on PostgreSQL
# (SQLite's write transaction already serialises them).
EVENT_LOCK = 0x6E6F74696679

_events = EventRow.metadata.tables[EventRow.__tablename__]
_APPEND = insert(_events)


def append(session: Session, notification_id: str, topic: str, kind: str, now: dt.datetime) -> None:
    """The event, unplaced (``place`` numbers it once this transaction has committed)."""
    session.execute(
        _APPEND,
        {"notification_id": notification_id, "kind": kind, "topic": topic, "created_at": now},
    )


def _placing() -> Update:
    pending = (
        select(_events.c.seq, func.row_number().over(order_by=_events.c.seq).label("n"))
        .where(_events.c.stream_seq.is_(None))
        .subquery("pending")
    )
    placed = _events.alias("placed")
    last = select(func.coalesce(func.max(placed.c.stream_seq), 0)).scalar_subquery()
    return (
        update(_events).values(stream_seq=last + pending.c.n).where(_events.c.seq == pending.c.seq)
    )


_PLACE = _placing()


def place(connection: Connection) -> int:
    """Numbers every committed, unplaced event after the highest number so far, in the order
    they were written; returns how many. Run in a transaction of its own, committed at once."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_LOCK})
    return connection.execute(_PLACE).rowcount


def after(session: Session, cursor: int, limit: int) -> list[EventView]:
    """Up to ``limit`` events after ``cursor``, in order; each names its notification (without
    deliveries) and everyone it concerns: its named subscribers and its deliveries' ones."""
    events = list(
        session.scalars(
            select(EventRow)
            .where(EventRow.stream_seq > cursor)
            .order_by(EventRow.stream_seq)
            .limit(limit)
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
            seq=e.stream_seq or 0,  # (placed: the query's condition)
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


def any_unplaced(session: Session) -> bool:
    """Whether a committed event waits for its place (the stream_seq index answers it)."""
    found = session.execute(select(EventRow.seq).where(EventRow.stream_seq.is_(None)).limit(1))
    return found.first() is not None


def last_sequence(session: Session) -> int:
    found = session.execute(
        select(EventRow.stream_seq).order_by(EventRow.stream_seq.desc()).limit(1)
    )
    return int(found.scalar() or 0)
