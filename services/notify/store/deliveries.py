"""What the dispatcher reads and writes: due deliveries (locked for one dispatcher), their
attempt rows and their outcomes, and the open backlog for the metrics scrape.

A delivery is due when it is open (PENDING or TEMPORARY_FAILURE) and its next attempt is due,
or when it is SENDING and its lease has passed: the dispatcher that took it stopped before
recording an outcome. On PostgreSQL due rows are locked ``FOR UPDATE SKIP LOCKED`` so several
replicas never take the same one; on SQLite the write transaction holds the database's lock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from services.common.db import UtcDateTime
from services.notify.domain.model import OPEN, Channel, Status
from services.notify.domain.views import DueDelivery
from services.notify.store import subscribers
from services.notify.store.models import AttemptRow, DeliveryRow, NotificationRow

OPEN_OR_SENDING = [s.value for s in OPEN] + [Status.SENDING.value]


def due(session: Session, now: dt.datetime, limit: int) -> list[DueDelivery]:
    """Up to ``limit`` due deliveries, the longest due first, locked for this transaction
    (read with their notifications in one statement, as plain rows: no objects to build)."""
    d, n = DeliveryRow, NotificationRow
    is_due = or_(
        and_(d.status.in_([s.value for s in OPEN]), d.next_attempt_at <= now),
        and_(d.status == Status.SENDING.value, d.lease_until <= now),
    )
    query = (
        select(
            d.id,
            d.notification_id,
            d.subscriber_id,
            d.channel,
            d.destination,
            d.subject,
            d.body_text,
            d.body_html,
            d.critical,
            d.status,
            d.attempt_count,
            n.topic,
            n.expires_at,
            n.traceparent,
        )
        .join(n, n.id == d.notification_id)
        .where(is_due)
        .order_by(d.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=d)
    )
    rows = session.execute(query).all()
    if not rows:
        return []
    subs = subscribers.by_ids(session, {r.subscriber_id for r in rows})
    found = []
    for row in rows:
        sub = subs[row.subscriber_id].subscriber
        found.append(
            DueDelivery(
                id=row.id,
                notification_id=row.notification_id,
                topic=row.topic,
                channel=Channel(row.channel),
                destination=row.destination,
                subject=row.subject,
                body_text=row.body_text,
                body_html=row.body_html,
                critical=row.critical,
                status=Status(row.status),
                attempt_count=row.attempt_count,
                expires_at=row.expires_at,
                traceparent=row.traceparent,
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


def start_attempts(
    session: Session, started: Sequence[DueDelivery], now: dt.datetime, lease_until: dt.datetime
) -> None:
    """Marks due deliveries (locked by ``due`` in this transaction) SENDING until
    ``lease_until`` and opens each one's next attempt: two statements for the batch."""
    if not started:
        return
    connection = session.connection()
    connection.execute(
        update(DeliveryRow)
        .where(DeliveryRow.id.in_([d.id for d in started]))
        .values(
            status=Status.SENDING.value,
            attempt_count=DeliveryRow.attempt_count + 1,
            lease_until=lease_until,
            updated_at=now,
        )
    )
    connection.execute(
        insert(AttemptRow),
        [
            {
                "delivery_id": d.id,
                "number": d.attempt_count + 1,
                "started_at": now,
                "finished_at": None,
                "outcome": Status.SENDING.value,
                "error": "",
            }
            for d in started
        ],
    )


def defer(session: Session, d: DueDelivery, until: dt.datetime, now: dt.datetime) -> None:
    """Due again at ``until`` (quiet hours); a SENDING one (abandoned) becomes a temporary
    failure, so it is open again rather than leased."""
    status = Status.TEMPORARY_FAILURE if d.status is Status.SENDING else d.status
    session.connection().execute(
        update(DeliveryRow)
        .where(DeliveryRow.id == d.id)
        .values(
            status=status.value,
            next_attempt_at=until,
            deferred=True,
            lease_until=None,
            updated_at=now,
        )
    )


def end(
    session: Session, delivery_id: str, status: Status, now: dt.datetime, error: str = ""
) -> None:
    """Closes a delivery unsent (EXPIRED, or PERMANENT_FAILURE when retries are exhausted);
    ``error``, when given, says why."""
    values: dict[str, object] = {"status": status.value, "lease_until": None, "updated_at": now}
    if error:
        values["last_error"] = error
    session.connection().execute(
        update(DeliveryRow).where(DeliveryRow.id == delivery_id).values(values)
    )


@dataclass(frozen=True)
class Sending:
    """A delivery's state when its outcome is to be recorded."""

    status: Status
    attempt_count: int
    channel: Channel


def sending(session: Session, delivery_ids: Collection[str]) -> dict[str, Sending]:
    """The deliveries, locked while their outcomes are recorded (one statement for a batch)."""
    query = (
        select(DeliveryRow.id, DeliveryRow.status, DeliveryRow.attempt_count, DeliveryRow.channel)
        .where(DeliveryRow.id.in_(list(delivery_ids)))
        .order_by(DeliveryRow.id)  # one lock order for every dispatcher: no deadlock
        .with_for_update()
    )
    return {
        i: Sending(Status(status), count, Channel(channel))
        for i, status, count, channel in session.execute(query)
    }


@dataclass(frozen=True)
class Outcome:
    """One attempt's end as sent (``sent``, ``sent_error``) and the delivery's state after it:
    DELIVERED, or a failure with its error (a temporary failure due again at
    ``next_attempt_at``; a last one given up as permanent)."""

    delivery_id: str
    attempt: int
    sent: Status
    sent_error: str
    status: Status
    error: str
    next_attempt_at: dt.datetime | None = None


_CLOSE_ATTEMPT = (
    update(AttemptRow)
    .where(
        AttemptRow.delivery_id == bindparam("d_id"),
        AttemptRow.number == bindparam("d_number"),
        AttemptRow.finished_at.is_(None),
    )
    .values(
        finished_at=bindparam("d_now"), outcome=bindparam("d_outcome"), error=bindparam("d_error")
    )
)

_RECORD = (
    update(DeliveryRow)
    .where(DeliveryRow.id == bindparam("d_id"))
    .values(
        status=bindparam("d_status"),
        lease_until=None,
        updated_at=bindparam("d_now"),
        last_error=bindparam("d_error"),
        delivered_at=func.coalesce(
            bindparam("d_delivered", type_=UtcDateTime), DeliveryRow.delivered_at
        ),
        next_attempt_at=func.coalesce(
            bindparam("d_next", type_=UtcDateTime), DeliveryRow.next_attempt_at
        ),
    )
)


def record(session: Session, outcomes: Sequence[Outcome], now: dt.datetime) -> None:
    """Ends each outcome's attempt (an attempt already ended stays as it was) and writes the
    delivery's state: two statements, each run once for the whole batch."""
    if not outcomes:
        return
    connection = session.connection()
    connection.execute(
        _CLOSE_ATTEMPT,
        [
            {
                "d_id": o.delivery_id,
                "d_number": o.attempt,
                "d_now": now,
                "d_outcome": o.sent.value,
                "d_error": o.sent_error[:1000],
            }
            for o in outcomes
        ],
    )
    connection.execute(
        _RECORD,
        [
            {
                "d_id": o.delivery_id,
                "d_status": o.status.value,
                "d_now": now,
                "d_error": o.error[:1000],
                "d_delivered": now if o.status is Status.DELIVERED else None,
                "d_next": o.next_attempt_at,
            }
            for o in outcomes
        ],
    )


def backlog(connection: Connection) -> list[tuple[str, int, dt.datetime | None]]:
    """(status, how many, the earliest next attempt) for each open or sending status that has
    any: one query over the (status, next_attempt_at) index."""
    query = (
        select(DeliveryRow.status, func.count(), func.min(DeliveryRow.next_attempt_at))
        .where(DeliveryRow.status.in_(OPEN_OR_SENDING))
        .group_by(DeliveryRow.status)
    )
    return [(status, count, first) for status, count, first in connection.execute(query).all()]
