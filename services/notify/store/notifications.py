"""Notification rows and the deliveries and attempts a notification is read with.

A notification is read whole (its deliveries, each with its attempts in order) in two more
queries however many there are; a dedupe key is unique within the publishing organisation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.notify.domain.model import OPEN, Channel, Status, Topic
from services.notify.domain.views import (
    AttemptView,
    DeliveryView,
    NotificationView,
    PlannedDelivery,
)
from services.notify.store.models import AttemptRow, DeliveryRow, NotificationRow


def _deliveries(session: Session, ids: Sequence[str]) -> dict[str, list[DeliveryView]]:
    if not ids:
        return {}
    rows = list(
        session.scalars(
            select(DeliveryRow)
            .where(DeliveryRow.notification_id.in_(ids))
            .order_by(DeliveryRow.notification_id, DeliveryRow.id)
        )
    )
    attempts: dict[str, list[AttemptView]] = {}
    if rows:
        for a in session.scalars(
            select(AttemptRow)
            .where(AttemptRow.delivery_id.in_([r.id for r in rows]))
            .order_by(AttemptRow.delivery_id, AttemptRow.number, AttemptRow.seq)
        ):
            attempts.setdefault(a.delivery_id, []).append(
                AttemptView(a.number, a.started_at, a.finished_at, a.outcome, a.error)
            )
    found: dict[str, list[DeliveryView]] = {}
    for r in rows:
        status = Status(r.status)
        found.setdefault(r.notification_id, []).append(
            DeliveryView(
                id=r.id,
                subscriber_id=r.subscriber_id,
                channel=Channel(r.channel),
                destination=r.destination,
                status=status,
                next_attempt_at=r.next_attempt_at if status in OPEN else None,
                attempts=tuple(attempts.get(r.id, ())),
                delivered_at=r.delivered_at,
                last_error=r.last_error,
                deferred=r.deferred,
                subject=r.subject,
                body_text=r.body_text,
            )
        )
    return found


def view(row: NotificationRow, deliveries: Sequence[DeliveryView] = ()) -> NotificationView:
    """The notification alone (the event log's reads), or with the deliveries given."""
    return NotificationView(
        id=row.id,
        topic=Topic(row.topic),
        payload=row.payload,
        subscriber_ids=tuple(row.subscriber_ids),
        site_ids=tuple(row.site_ids),
        dedupe_key=row.dedupe_key or "",
        send_after=row.send_after,
        expires_at=row.expires_at,
        created_at=row.created_at,
        cancelled_at=row.cancelled_at,
        deliveries=tuple(deliveries),
        organisation_id=row.organisation_id,
    )


def _whole(session: Session, rows: Sequence[NotificationRow]) -> list[NotificationView]:
    deliveries = _deliveries(session, [r.id for r in rows])
    return [view(r, deliveries.get(r.id, ())) for r in rows]


def get(session: Session, notification_id: str) -> NotificationView | None:
    """With its deliveries; any organisation's (the caller checks the scope)."""
    row = session.get(NotificationRow, notification_id)
    return _whole(session, [row])[0] if row is not None else None


def by_dedupe(session: Session, organisation_id: str, key: str) -> NotificationView | None:
    row = session.scalars(
        select(NotificationRow).where(
            NotificationRow.organisation_id == organisation_id, NotificationRow.dedupe_key == key
        )
    ).first()
    return _whole(session, [row])[0] if row is not None else None


_notifications = NotificationRow.metadata.tables[NotificationRow.__tablename__]
# an insert that does nothing when the organisation's dedupe key is taken (no savepoint)
ADD = {
    "postgresql": postgresql.insert(_notifications)
    .on_conflict_do_nothing()
    .returning(_notifications.c.id),
    "sqlite": sqlite.insert(_notifications).on_conflict_do_nothing().returning(_notifications.c.id),
}


def added(
    notification: NotificationView, deliveries: Sequence[PlannedDelivery]
) -> NotificationView:
    """The notification publishing.add just wrote, as ``get`` would read it back (no second
    read)."""
    return replace(
        notification,
        deliveries=tuple(
            DeliveryView(
                id=d.id,
                subscriber_id=d.subscriber_id,
                channel=d.channel,
                destination=d.destination,
                status=Status.PENDING,
                next_attempt_at=d.due,
                attempts=(),
                delivered_at=None,
                last_error="",
                deferred=d.deferred,
            )
            for d in sorted(deliveries, key=lambda d: d.id)
        ),
    )


def locked(session: Session, notification_id: str, dedupe_key: str) -> NotificationView | None:
    """The caller's organisation's notification by id or by dedupe key, locked for a change
    (on PostgreSQL; SQLite's write transaction holds the database's lock); None when there is
    none the caller may see. Without its deliveries."""
    query = select(NotificationRow).where(current_scope().where(NotificationRow.organisation_id))
    query = (
        query.where(NotificationRow.id == notification_id)
        if notification_id
        else query.where(NotificationRow.dedupe_key == dedupe_key)
    )
    row = session.scalars(query.with_for_update()).first()
    return view(row) if row is not None else None


def cancel(session: Session, notification_id: str, now: dt.datetime) -> None:
    """Marks a notification (read and locked in this transaction) cancelled, and every
    delivery of it still open CANCELLED: a dispatcher's claim skips them from now on."""
    session.get_one(NotificationRow, notification_id).cancelled_at = now
    open_rows = select(DeliveryRow).where(
        DeliveryRow.notification_id == notification_id,
        DeliveryRow.status.in_([s.value for s in OPEN]),
    )
    for d in session.scalars(open_rows.with_for_update()):
        d.status = Status.CANCELLED.value
        d.updated_at = now
    session.flush()


def site_keys(site_ids: Sequence[str]) -> str:
    """The sites of a notification as its ``site_keys`` column holds them."""
    return f" {' '.join(site_ids)} " if site_ids else ""


def page(
    session: Session,
    page: PageRequest,
    *,
    topic: Topic | None,
    subscriber_id: str,
    status: Status | None,
    dedupe_key: str,
) -> list[NotificationView]:
    """Up to ``page.size + 1`` of the caller's organisation's notifications after the page's
    cursor, in id order, each with its deliveries; ``subscriber_id`` and ``status`` keep those
    with a delivery to that subscriber / in that status (one delivery with both, when both)."""
    scope = current_scope()
    query = (
        select(NotificationRow)
        .where(scope.where(NotificationRow.organisation_id))
        .order_by(NotificationRow.id)
    )
    if scope.site_ids is not None:  # organisation-wide ones and those about one of its sites
        keys = NotificationRow.site_keys
        query = query.where(
            or_(keys == "", *(keys.contains(f" {s} ", autoescape=True) for s in scope.site_ids))
        )
    if topic is not None:
        query = query.where(NotificationRow.topic == topic.value)
    if dedupe_key:
        query = query.where(NotificationRow.dedupe_key == dedupe_key)
    conditions = []
    if subscriber_id:
        conditions.append(DeliveryRow.subscriber_id == subscriber_id)
    if status is not None:
        conditions.append(DeliveryRow.status == status.value)
    if conditions:
        query = query.where(
            exists().where(DeliveryRow.notification_id == NotificationRow.id, *conditions)
        )
    if page.after:
        query = query.where(NotificationRow.id > page.after[0])
    return _whole(session, list(session.scalars(query.limit(page.size + 1))))


def delivered_to(session: Session, subscriber_id: str, page: PageRequest) -> list[NotificationView]:
    """Up to ``page.size + 1`` notifications with a delivery to the subscriber, newest first
    (ids are UUIDv7: their order is their creation's), each with that subscriber's deliveries
    only (another recipient's address or state is not theirs to see)."""
    query = (
        select(NotificationRow)
        .where(
            exists().where(
                DeliveryRow.notification_id == NotificationRow.id,
                DeliveryRow.subscriber_id == subscriber_id,
            )
        )
        .order_by(NotificationRow.id.desc())
    )
    if page.after:
        query = query.where(NotificationRow.id < page.after[0])
    found = _whole(session, list(session.scalars(query.limit(page.size + 1))))
    return [
        replace(n, deliveries=tuple(d for d in n.deliveries if d.subscriber_id == subscriber_id))
        for n in found
    ]
