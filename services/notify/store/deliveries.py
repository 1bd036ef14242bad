"""What the dispatcher reads and writes: due deliveries (locked for one dispatcher), their
attempt rows and their outcomes, and the open backlog for the metrics scrape.

A delivery is due when it is open (PENDING or TEMPORARY_FAILURE) and its next attempt is due,
or when it is SENDING and its lease has passed: the dispatcher that took it stopped before
recording an outcome. On PostgreSQL due rows are locked ``FOR UPDATE SKIP LOCKED`` so several
replicas never take the same one; on SQLite the write transaction holds the database's lock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.orm import Session

from services.notify.domain.model import OPEN, Channel, Status
from services.notify.domain.views import DueDelivery
from services.notify.store import subscribers
from services.notify.store.models import AttemptRow, DeliveryRow, NotificationRow

OPEN_OR_SENDING = [s.value for s in OPEN] + [Status.SENDING.value]


def due(session: Session, now: dt.datetime, limit: int) -> list[DueDelivery]:
    """Up to ``limit`` due deliveries, the longest due first, locked for this transaction."""
    is_due = or_(
        and_(
            DeliveryRow.status.in_([s.value for s in OPEN]),
            DeliveryRow.next_attempt_at <= now,
        ),
        and_(DeliveryRow.status == Status.SENDING.value, DeliveryRow.lease_until <= now),
    )
    query = select(DeliveryRow).where(is_due).order_by(DeliveryRow.next_attempt_at).limit(limit)
    rows = list(session.scalars(query.with_for_update(skip_locked=True)))
    if not rows:
        return []
    notes = {
        n.id: n
        for n in session.scalars(
            select(NotificationRow).where(NotificationRow.id.in_({r.notification_id for r in rows}))
        )
    }
    subs = subscribers.by_ids(session, {r.subscriber_id for r in rows})
    found = []
    for row in rows:
        note = notes[row.notification_id]
        sub = subs[row.subscriber_id].subscriber
        found.append(
            DueDelivery(
                id=row.id,
                notification_id=row.notification_id,
                topic=note.topic,
                channel=Channel(row.channel),
                destination=row.destination,
                subject=row.subject,
                body_text=row.body_text,
                body_html=row.body_html,
                critical=row.critical,
                status=Status(row.status),
                attempt_count=row.attempt_count,
                expires_at=note.expires_at,
                traceparent=note.traceparent,
                time_zone=sub.time_zone,
                quiet_hours=sub.quiet_hours,
                webhook_secret=sub.webhook_secret,
            )
        )
    return found


def close_attempt(
    session: Session,
    delivery_id: str,
    number: int,
    outcome: Status,
    now: dt.datetime,
    error: str,
) -> None:
    """Ends attempt ``number`` with its outcome (an attempt already ended stays as it was)."""
    session.execute(
        update(AttemptRow)
        .where(
            AttemptRow.delivery_id == delivery_id,
            AttemptRow.number == number,
            AttemptRow.finished_at.is_(None),
        )
        .values(finished_at=now, outcome=outcome.value, error=error[:1000])
    )


def start_attempt(
    session: Session, delivery_id: str, now: dt.datetime, lease_until: dt.datetime
) -> int:
    """Marks a due delivery SENDING until ``lease_until`` and opens its next attempt; returns
    the attempt's number."""
    row = session.get_one(DeliveryRow, delivery_id)
    row.status = Status.SENDING.value
    row.attempt_count += 1
    row.lease_until = lease_until
    row.updated_at = now
    session.add(
        AttemptRow(
            delivery_id=row.id,
            number=row.attempt_count,
            started_at=now,
            finished_at=None,
            outcome=Status.SENDING.value,
            error="",
        )
    )
    return row.attempt_count


def defer(session: Session, delivery_id: str, until: dt.datetime, now: dt.datetime) -> None:
    """Due again at ``until`` (quiet hours); a SENDING one (abandoned) becomes a temporary
    failure, so it is open again rather than leased."""
    row = session.get_one(DeliveryRow, delivery_id)
    if row.status == Status.SENDING.value:
        row.status = Status.TEMPORARY_FAILURE.value
    row.next_attempt_at = until
    row.deferred = True
    row.lease_until = None
    row.updated_at = now


def end(
    session: Session, delivery_id: str, status: Status, now: dt.datetime, error: str = ""
) -> None:
    """Closes a delivery unsent (EXPIRED, or PERMANENT_FAILURE when retries are exhausted);
    ``error``, when given, says why."""
    row = session.get_one(DeliveryRow, delivery_id)
    row.status = status.value
    if error:
        row.last_error = error
    row.lease_until = None
    row.updated_at = now


@dataclass(frozen=True)
class Sending:
    """A delivery's state when its outcome is to be recorded."""

    status: Status
    attempt_count: int
    channel: Channel


def sending(session: Session, delivery_id: str) -> Sending:
    """The delivery, locked while its outcome is recorded."""
    query = select(DeliveryRow).where(DeliveryRow.id == delivery_id)
    row = session.scalars(query.with_for_update()).one()
    return Sending(Status(row.status), row.attempt_count, Channel(row.channel))


def record(
    session: Session,
    delivery_id: str,
    status: Status,
    error: str,
    now: dt.datetime,
    next_attempt_at: dt.datetime | None = None,
) -> None:
    """The attempt's outcome: DELIVERED (and when), or a failure with its error; a temporary
    failure is due again at ``next_attempt_at``."""
    row = session.get_one(DeliveryRow, delivery_id)
    row.status = status.value
    row.lease_until = None
    row.updated_at = now
    row.last_error = error
    if status is Status.DELIVERED:
        row.delivered_at = now
    elif next_attempt_at is not None:
        row.next_attempt_at = next_attempt_at


def backlog(connection: Connection) -> list[tuple[str, int, dt.datetime | None]]:
    """(status, how many, the earliest next attempt) for each open or sending status that has
    any: one query over the (status, next_attempt_at) index."""
    query = (
        select(DeliveryRow.status, func.count(), func.min(DeliveryRow.next_attempt_at))
        .where(DeliveryRow.status.in_(OPEN_OR_SENDING))
        .group_by(DeliveryRow.status)
    )
    return [(status, count, first) for status, count, first in connection.execute(query).all()]
