"""Subscriber rows: read as :class:`StoredSubscriber`, written from a validated
:class:`Subscriber`. Preferences keep the order given (a JSON list of [topic, [channel, ...]]);
quiet hours are two "HH:MM:SS" strings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.notify.domain.model import Channel, QuietHours, Subscriber, SubscriberKind, Topic
from services.notify.domain.views import StoredSubscriber
from services.notify.store.models import SubscriberRow

_table = SubscriberRow.metadata.tables[SubscriberRow.__tablename__]


def stored(row: SubscriberRow | Row[Any]) -> StoredSubscriber:
    """The stored subscriber of a row: a mapped one, or a plain row of the table (the hot
    reads below: no object to build and track)."""
    quiet = None
    if row.quiet_start is not None and row.quiet_end is not None:
        quiet = QuietHours(
            dt.time.fromisoformat(row.quiet_start), dt.time.fromisoformat(row.quiet_end)
        )
    prefs = {Topic(t): tuple(Channel(c) for c in chans) for t, chans in row.preferences}
    return StoredSubscriber(
        id=row.id,
        subscriber=Subscriber(
            external_ref=row.external_ref,
            display_name=row.display_name,
            time_zone=row.time_zone,
            email=row.email,
            phone=row.phone,
            webhook_url=row.webhook_url,
            webhook_secret=row.webhook_secret,
            preferences=prefs,
            quiet_hours=quiet,
            site_ids=tuple(row.site_ids),
            kind=SubscriberKind(row.kind),
            organisation_id=row.organisation_id,
            user_subject=row.user_subject or "",
        ),
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _write(row: SubscriberRow, s: Subscriber) -> None:
    row.external_ref = s.external_ref
    row.display_name = s.display_name
    row.time_zone = s.time_zone
    row.email = s.email
    row.phone = s.phone
    row.webhook_url = s.webhook_url
    row.webhook_secret = s.webhook_secret
    row.preferences = [[t.value, [c.value for c in chans]] for t, chans in s.preferences.items()]
    row.quiet_start = s.quiet_hours.start.isoformat() if s.quiet_hours else None
    row.quiet_end = s.quiet_hours.end.isoformat() if s.quiet_hours else None
    row.site_ids = list(s.site_ids)
    assert s.kind is not None  # validated
    row.kind = s.kind.value
    row.organisation_id = s.organisation_id
    row.user_subject = s.user_subject or None


def add(session: Session, subscriber: Subscriber, now: dt.datetime) -> StoredSubscriber:
    row = SubscriberRow(id=new_id(), revision=1, created_at=now, updated_at=now)
    _write(row, subscriber)
    session.add(row)
    session.flush()
    return stored(row)


def get(
    session: Session, subscriber_id: str, *, for_update: bool = False
) -> StoredSubscriber | None:
    """Any organisation's: the caller checks the scope (and answers NOT_FOUND outside it).
    ``for_update`` locks the row on PostgreSQL (SQLite's write transaction already holds the
    database's lock), so an etag check and the write that follows see the same revision."""
    if not for_update:
        row = session.get(SubscriberRow, subscriber_id)
    else:
        query = select(SubscriberRow).where(SubscriberRow.id == subscriber_id)
        row = session.scalars(query.with_for_update()).first()
    return stored(row) if row is not None else None


def of_user(
    session: Session, organisation_id: str, subject: str, *, for_update: bool = False
) -> StoredSubscriber | None:
    """The user's own subscriber (one per organisation and subject), locked like :func:`get`
    with ``for_update``."""
    query = select(SubscriberRow).where(
        SubscriberRow.organisation_id == organisation_id, SubscriberRow.user_subject == subject
    )
    row = session.scalars(query.with_for_update() if for_update else query).first()
    return stored(row) if row is not None else None


def replace(
    session: Session, subscriber_id: str, subscriber: Subscriber, now: dt.datetime
) -> StoredSubscriber:
    """Writes a new revision of a subscriber read (and locked) in this transaction."""
    row = session.get_one(SubscriberRow, subscriber_id)
    _write(row, subscriber)
    row.revision += 1
    row.updated_at = now
    session.flush()
    return stored(row)


def page(
    session: Session, external_ref: str, site_id: str, page: PageRequest
) -> list[StoredSubscriber]:
    """Up to ``page.size + 1`` of the caller's organisation's subscribers after the page's
    cursor, in id order; a subscriber without sites counts as at every site."""
    query = (
        select(SubscriberRow)
        .where(current_scope().where(SubscriberRow.organisation_id))
        .order_by(SubscriberRow.id)
    )
    if external_ref:
        query = query.where(SubscriberRow.external_ref == external_ref)
    if page.after:
        query = query.where(SubscriberRow.id > page.after[0])
    found = []
    # the site filter reads the JSON list in Python (portable across both databases)
    for row in session.scalars(query.limit(page.size + 1 if not site_id else None)):
        s = stored(row)
        if site_id and s.subscriber.site_ids and site_id not in s.subscriber.site_ids:
            continue
        found.append(s)
        if len(found) > page.size:
            break
    return found


# Publish's and the dispatcher's reads, built once and run on the session's connection: a
# statement built per call cost more than running it (its cache key worked out again, its
# values found in it, the ORM's layer around a plain table's rows).
_NAMED = select(_table).where(
    _table.c.id.in_(bindparam("ids", expanding=True)),
    _table.c.organisation_id == bindparam("organisation_id"),
)
_BY_IDS = select(_table).where(_table.c.id.in_(bindparam("ids", expanding=True)))


def named(
    session: Session, subscriber_ids: Collection[str], organisation_id: str
) -> dict[str, StoredSubscriber]:
    """The organisation's subscribers among ``subscriber_ids`` (another's read as missing)."""
    found = session.connection().execute(
        _NAMED, {"ids": list(subscriber_ids), "organisation_id": organisation_id}
    )
    return {row.id: stored(row) for row in found}


def of_organisation(session: Session, organisation_id: str) -> list[StoredSubscriber]:
    """Every subscriber of the organisation, in id order (a broadcast's candidates)."""
    query = select(_table).where(_table.c.organisation_id == organisation_id).order_by(_table.c.id)
    return [stored(row) for row in session.execute(query)]


def by_ids(session: Session, subscriber_ids: Collection[str]) -> dict[str, StoredSubscriber]:
    """Any organisation's (the dispatcher's read: the deliveries already name them)."""
    found = session.connection().execute(_BY_IDS, {"ids": list(subscriber_ids)})
    return {row.id: stored(row) for row in found}
