"""Notify's use cases: subscribers, Publish, Cancel, reads, and the event log the stream reads.

Each mutating method runs inside the caller's write transaction (the idempotency store's), so
its effects and the stored response commit together. Validation collects every bad field and
raises before anything is written.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import exists, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common import tracing
from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidArgument, NotFound, Violations
from services.common.etag import check_etag
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.notify.domain.model import (
    NO_EXCEPTIONS,
    OPEN,
    Channel,
    QuietHours,
    Status,
    Subscriber,
    SubscriberKind,
    Topic,
    validate_subscriber,
)
from services.notify.domain.timing import quiet_until
from services.notify.domain.webhook_target import WebhookAllowList
from services.notify.store.models import (
    AttemptRow,
    DeliveryRow,
    EventRow,
    NotificationRow,
    SubscriberRow,
)
from services.notify.templates import RenderError, Templates

# pg_advisory_xact_lock key ("notify" in ASCII): event rows get their sequence numbers in
# commit order, so a stream reading "seq > cursor" never skips one committed late.
EVENT_LOCK = 0x6E6F74696679


# ---------------------------------------------------------------------------------------------
# views returned to the api


@dataclass(frozen=True)
class StoredSubscriber:
    id: str
    subscriber: Subscriber
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class AttemptView:
    number: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str
    error: str


@dataclass(frozen=True)
class DeliveryView:
    id: str
    subscriber_id: str
    channel: Channel
    destination: str
    status: Status
    next_attempt_at: dt.datetime | None
    attempts: tuple[AttemptView, ...]
    delivered_at: dt.datetime | None
    last_error: str
    deferred: bool


@dataclass(frozen=True)
class NotificationView:
    id: str
    topic: Topic
    payload: dict[str, Any]
    subscriber_ids: tuple[str, ...]
    site_ids: tuple[str, ...]
    dedupe_key: str
    send_after: dt.datetime
    expires_at: dt.datetime | None
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    deliveries: tuple[DeliveryView, ...] = ()
    organisation_id: str = ""


@dataclass(frozen=True)
class EventView:
    seq: int
    kind: str
    created_at: dt.datetime
    notification: NotificationView
    recipients: frozenset[str]


@dataclass(frozen=True)
class PublishCommand:
    topic: Topic
    subscriber_ids: Sequence[str]
    # the typed payload as protobuf JSON (stored and sent to webhooks)
    payload_json: Mapping[str, Any]
    # the same payload with dates, instants and money as Python values (for templates)
    context: Mapping[str, Any]
    # request path of the payload message ("payload.lot_recalled"), for field violations
    payload_field: str
    site_ids: Sequence[str]
    dedupe_key: str = ""
    send_after: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    # as requested: empty for a person's or hospital system's own organisation
    organisation_id: str = ""


@dataclass
class Published:
    notification: NotificationView
    duplicate: bool


# ---------------------------------------------------------------------------------------------
# subscribers


def _subscriber_from(row: SubscriberRow) -> StoredSubscriber:
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
        ),
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _write_subscriber(row: SubscriberRow, s: Subscriber) -> None:
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


class SubscriberService:
    def __init__(
        self, db: Database, clock: Clock, webhooks: WebhookAllowList = NO_EXCEPTIONS
    ) -> None:
        self.db = db
        self.clock = clock
        self.webhooks = webhooks  # the operator's allow-list for webhook targets

    def create(self, session: Session, subscriber: Subscriber) -> StoredSubscriber:
        organisation = current_scope().organisation_for(
            subscriber.organisation_id, "subscriber.organisation_id"
        )
        clean = validate_subscriber(
            replace(subscriber, organisation_id=organisation), webhooks=self.webhooks
        )
        now = self.clock.now()
        row = SubscriberRow(id=new_id(), revision=1, created_at=now, updated_at=now)
        _write_subscriber(row, clean)
        session.add(row)
        session.flush()
        return _subscriber_from(row)

    def get(self, subscriber_id: str) -> StoredSubscriber:
        with self.db.read() as session:
            row = session.get(SubscriberRow, subscriber_id)
            if row is None:
                raise NotFound("subscriber", subscriber_id)
            current_scope().check("subscriber", subscriber_id, row.organisation_id)
            return _subscriber_from(row)

    def list(self, external_ref: str, site_id: str, page: PageRequest) -> list[StoredSubscriber]:
        with self.db.read() as session:
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
                stored = _subscriber_from(row)
                if (
                    site_id
                    and stored.subscriber.site_ids
                    and site_id not in stored.subscriber.site_ids
                ):
                    continue
                found.append(stored)
                if len(found) > page.size:
                    break
            return found

    def update(
        self,
        session: Session,
        subscriber_id: str,
        etag: str,
        change: Callable[[StoredSubscriber], Subscriber],
    ) -> StoredSubscriber:
        query = select(SubscriberRow).where(SubscriberRow.id == subscriber_id)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        row = session.scalars(query).first()
        if row is None:
            raise NotFound("subscriber", subscriber_id)
        current_scope().check("subscriber", subscriber_id, row.organisation_id)
        check_etag(etag, row.revision, field="subscriber.etag", resource="subscriber")
        # the organisation is not the caller's to move
        changed = replace(change(_subscriber_from(row)), organisation_id=row.organisation_id)
        url_changed = changed.webhook_url != row.webhook_url
        clean = validate_subscriber(changed, webhooks=self.webhooks if url_changed else None)
        _write_subscriber(row, clean)
        row.revision += 1
        row.updated_at = self.clock.now()
        session.flush()
        return _subscriber_from(row)


# ---------------------------------------------------------------------------------------------
# notifications


def _delivery_views(session: Session, ids: Sequence[str]) -> dict[str, list[DeliveryView]]:
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
            )
        )
    return found


def _view(row: NotificationRow, deliveries: Iterable[DeliveryView] = ()) -> NotificationView:
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


def _views(session: Session, rows: Sequence[NotificationRow]) -> list[NotificationView]:
    deliveries = _delivery_views(session, [r.id for r in rows])
    return [_view(r, deliveries.get(r.id, ())) for r in rows]


@dataclass
class _Planned:
    row: DeliveryRow
    violations: list[FieldViolation] = field(default_factory=list)


class NotificationService:
    def __init__(self, db: Database, clock: Clock, templates: Templates) -> None:
        self.db = db
        self.clock = clock
        self.templates = templates

    # -- Publish ------------------------------------------------------------------------------

    def publish(self, session: Session, cmd: PublishCommand) -> Published:
        scope = current_scope()
        organisation = scope.organisation_for(cmd.organisation_id, "organisation_id")
        for i, site_id in enumerate(cmd.site_ids):
            scope.require_site(site_id, f"payload site_ids[{i}]")
        cmd = replace(cmd, organisation_id=organisation)
        if cmd.dedupe_key:
            seen = self._by_dedupe(session, organisation, cmd.dedupe_key)
            if seen is not None:
                return Published(_views(session, [seen])[0], True)
        now = self.clock.now()
        v = Violations()
        send_after = cmd.send_after or now
        if cmd.expires_at is not None and cmd.expires_at <= send_after:
            v.add("expires_at", "must be after send_after (and after now)")
        # Render once without a recipient: a payload the templates cannot render is refused
        # even when nobody would receive it today.
        for channel in (Channel.EMAIL, Channel.SMS):
            self._render(cmd, channel, "UTC", "", v)
        recipients = self._recipients(session, cmd, v)
        notification_id = new_id()
        deliveries: list[DeliveryRow] = []
        if not v:
            for stored in recipients:
                sub = stored.subscriber
                for channel in sub.channels_for(cmd.topic, named=bool(cmd.subscriber_ids)):
                    delivery_id = new_id()
                    zone = str(cmd.context.get("time_zone") or sub.time_zone)
                    rendered = self._render(cmd, channel, zone, sub.display_name, v)
                    if rendered is None:
                        continue
                    subject, body_text, body_html = rendered
                    if channel is Channel.WEBHOOK:
                        body_text = json.dumps(
                            {
                                "delivery_id": delivery_id,
                                "notification_id": notification_id,
                                "topic": cmd.topic.value,
                                "subscriber_id": stored.id,
                                "created_at": now.isoformat(),
                                "subject": subject,
                                "text": body_text,
                                "payload": dict(cmd.payload_json),
                            },
                            separators=(",", ":"),
                            sort_keys=True,
                        )
                        body_html = ""
                    due = send_after
                    if not cmd.topic.critical:
                        due = quiet_until(send_after, sub.zone, sub.quiet_hours)
                    deliveries.append(
                        DeliveryRow(
                            id=delivery_id,
                            notification_id=notification_id,
                            subscriber_id=stored.id,
                            channel=channel.value,
                            destination=sub.destination(channel),
                            subject=subject[:1000],
                            body_text=body_text,
                            body_html=body_html,
                            critical=cmd.topic.critical,
                            status=Status.PENDING.value,
                            next_attempt_at=due,
                            lease_until=None,
                            attempt_count=0,
                            deferred=due > send_after,
                            last_error="",
                            delivered_at=None,
                            updated_at=now,
                        )
                    )
        v.raise_if_any()
        row = NotificationRow(
            id=notification_id,
            topic=cmd.topic.value,
            payload=dict(cmd.payload_json),
            subscriber_ids=list(dict.fromkeys(cmd.subscriber_ids)),
            site_ids=list(dict.fromkeys(cmd.site_ids)),
            organisation_id=organisation,
            dedupe_key=cmd.dedupe_key or None,
            send_after=send_after,
            expires_at=cmd.expires_at,
            created_at=now,
            cancelled_at=None,
            traceparent=tracing.current_traceparent(),
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:  # the same dedupe_key committed by a concurrent Publish
            seen = (
                self._by_dedupe(session, organisation, cmd.dedupe_key) if cmd.dedupe_key else None
            )
            if seen is None:
                raise
            return Published(_views(session, [seen])[0], True)
        session.add_all(deliveries)
        session.flush()
        self._event(session, row, "PUBLISHED", now)
        return Published(_views(session, [row])[0], False)

    def _render(
        self, cmd: PublishCommand, channel: Channel, zone: str, name: str, v: Violations
    ) -> tuple[str, str, str] | None:
        template_channel = Channel.CONSOLE if channel is Channel.WEBHOOK else channel
        try:
            r = self.templates.render(
                cmd.topic,
                template_channel,
                cmd.context,
                payload_field=cmd.payload_field,
                zone=zone,
                display_name=name,
            )
        except RenderError as error:
            if not any(x.field == error.field for x in v.items):
                v.add(error.field, error.description)
            return None
        return r.subject, r.text, r.html

    def _recipients(
        self, session: Session, cmd: PublishCommand, v: Violations
    ) -> list[StoredSubscriber]:
        if cmd.subscriber_ids:
            ids = list(dict.fromkeys(cmd.subscriber_ids))
            rows = {
                r.id: r
                for r in session.scalars(
                    select(SubscriberRow).where(
                        SubscriberRow.id.in_(ids),
                        SubscriberRow.organisation_id == cmd.organisation_id,
                    )
                )
            }
            # another organisation's subscriber reads as missing (no existence leak)
            for i, sid in enumerate(cmd.subscriber_ids):
                if sid not in rows:
                    v.add(f"subscriber_ids[{i}]", f"no subscriber {sid!r}")
            return [_subscriber_from(rows[i]) for i in ids if i in rows]
        everyone = session.scalars(
            select(SubscriberRow)
            .where(SubscriberRow.organisation_id == cmd.organisation_id)
            .order_by(SubscriberRow.id)
        )
        return [
            s
            for s in map(_subscriber_from, everyone)
            if s.subscriber.wants_broadcast(cmd.topic, cmd.site_ids)
        ]

    def _by_dedupe(self, session: Session, organisation: str, key: str) -> NotificationRow | None:
        return session.scalars(
            select(NotificationRow).where(
                NotificationRow.organisation_id == organisation, NotificationRow.dedupe_key == key
            )
        ).first()

    def _event(self, session: Session, row: NotificationRow, kind: str, now: dt.datetime) -> None:
        if self.db.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_LOCK})
        session.add(EventRow(notification_id=row.id, kind=kind, topic=row.topic, created_at=now))
        session.flush()

    # -- Cancel -------------------------------------------------------------------------------

    def cancel(self, session: Session, notification_id: str, dedupe_key: str) -> NotificationView:
        if bool(notification_id) == bool(dedupe_key):
            raise InvalidArgument([FieldViolation("id", "give exactly one of id or dedupe_key")])
        query = select(NotificationRow).where(
            current_scope().where(NotificationRow.organisation_id)
        )
        query = (
            query.where(NotificationRow.id == notification_id)
            if notification_id
            else query.where(NotificationRow.dedupe_key == dedupe_key)
        )
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        row = session.scalars(query).first()
        if row is None:
            raise NotFound("notification", notification_id or f"dedupe_key={dedupe_key}")
        if row.cancelled_at is None:
            now = self.clock.now()
            row.cancelled_at = now
            open_rows = select(DeliveryRow).where(
                DeliveryRow.notification_id == row.id,
                DeliveryRow.status.in_([s.value for s in OPEN]),
            )
            if self.db.dialect == "postgresql":
                open_rows = open_rows.with_for_update()
            for d in session.scalars(open_rows):
                d.status = Status.CANCELLED.value
                d.updated_at = now
            session.flush()
            self._event(session, row, "CANCELLED", now)
        return _views(session, [row])[0]

    # -- reads --------------------------------------------------------------------------------

    def get(self, notification_id: str) -> NotificationView:
        with self.db.read() as session:
            row = session.get(NotificationRow, notification_id)
            if row is None:
                raise NotFound("notification", notification_id)
            scope = current_scope()
            scope.check("notification", notification_id, row.organisation_id)
            if not scope.sees_any_site(row.site_ids):
                raise NotFound("notification", notification_id)
            return _views(session, [row])[0]

    def list(
        self,
        page: PageRequest,
        *,
        topic: Topic | None,
        subscriber_id: str,
        status: Status | None,
        dedupe_key: str,
    ) -> list[NotificationView]:
        with self.db.read() as session:
            query = (
                select(NotificationRow)
                .where(current_scope().where(NotificationRow.organisation_id))
                .order_by(NotificationRow.id)
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
            rows = list(session.scalars(query.limit(page.size + 1)))
            return _views(session, rows)

    # -- the event log ------------------------------------------------------------------------

    def events_after(self, after: int, limit: int) -> builtins.list[EventView]:
        with self.db.read() as session:
            events = list(
                session.scalars(
                    select(EventRow).where(EventRow.seq > after).order_by(EventRow.seq).limit(limit)
                )
            )
            if not events:
                return []
            ids = list({e.notification_id for e in events})
            rows = {
                r.id: r
                for r in session.scalars(select(NotificationRow).where(NotificationRow.id.in_(ids)))
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
                    notification=_view(rows[e.notification_id]),
                    recipients=frozenset(
                        recipients.get(e.notification_id, set())
                        | set(rows[e.notification_id].subscriber_ids)
                    ),
                )
                for e in events
            ]

    def last_sequence(self) -> int:
        with self.db.read() as session:
            found = session.execute(select(EventRow.seq).order_by(EventRow.seq.desc()).limit(1))
            value = found.scalar()
            return int(value or 0)
