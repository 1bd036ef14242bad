"""Notifications: Publish (who receives what on which channel, rendered now), Cancel, and the
reads.

Publish and Cancel run inside the caller's write transaction (the idempotency store's), so
their effects and the stored response commit together; each writes an event to the log the
Subscribe stream reads (placed in the stream once committed: ``EventLog.place``). Publish is a
handful of statements: the recipients read, the notification, its deliveries and its event
written, and its answer built from what was written rather than read back. Validation collects
every bad field and raises before anything is written.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from services.common import tracing
from services.common.clock import Clock
from services.common.crud import found
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidArgument, NotFound, Violations
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.notify.domain.model import Channel, Status, Topic
from services.notify.domain.templates import Memo, RenderError, Templates
from services.notify.domain.timing import quiet_until
from services.notify.domain.views import NotificationView, PlannedDelivery, StoredSubscriber
from services.notify.store import events, notifications, publishing, subscribers
from services.notify.usecases.subscribers import current_user


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


class Notifications:
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
            seen = notifications.by_dedupe(session, organisation, cmd.dedupe_key)
            if seen is not None:
                return Published(seen, True)
        now = self.clock.now()
        v = Violations()
        send_after = cmd.send_after or now
        if cmd.expires_at is not None and cmd.expires_at <= send_after:
            v.add("expires_at", "must be after send_after (and after now)")
        # Render once without a recipient: a payload the templates cannot render is refused
        # even when nobody would receive it today. A text that reads neither the zone nor the
        # recipient is rendered once for the whole Publish (``memo``).
        memo: Memo = {}
        for channel in (Channel.EMAIL, Channel.SMS):
            self._render(cmd, channel, "UTC", "", v, memo)
        recipients = self._recipients(session, cmd, v)
        notification = NotificationView(
            id=new_id(),
            topic=cmd.topic,
            payload=dict(cmd.payload_json),
            subscriber_ids=tuple(dict.fromkeys(cmd.subscriber_ids)),
            site_ids=tuple(dict.fromkeys(cmd.site_ids)),
            dedupe_key=cmd.dedupe_key,
            send_after=send_after,
            expires_at=cmd.expires_at,
            created_at=now,
            cancelled_at=None,
            organisation_id=organisation,
        )
        planned = [] if v else self._plan(cmd, notification, recipients, v, memo)
        v.raise_if_any()
        # the rows and their event; written with the stored response (store/publishing.py)
        seen = publishing.add(session, notification, planned, tracing.current_traceparent())
        if seen is not None:  # the same dedupe_key committed by a concurrent Publish
            return Published(seen, True)
        return Published(notifications.added(notification, planned), False)

    def _plan(
        self,
        cmd: PublishCommand,
        notification: NotificationView,
        recipients: Sequence[StoredSubscriber],
        v: Violations,
        memo: Memo,
    ) -> list[PlannedDelivery]:
        """A delivery per recipient and channel, rendered in the recipient's zone (or the
        payload's) and due at send_after, or after the recipient's quiet hours for a topic
        that is not critical."""
        planned = []
        for stored in recipients:
            sub = stored.subscriber
            for channel in sub.channels_for(cmd.topic, named=bool(cmd.subscriber_ids)):
                delivery_id = new_id()
                zone = str(cmd.context.get("time_zone") or sub.time_zone)
                rendered = self._render(cmd, channel, zone, sub.display_name, v, memo)
                if rendered is None:
                    continue
                subject, body_text, body_html = rendered
                if channel is Channel.WEBHOOK:
                    body_text = json.dumps(
                        {
                            "delivery_id": delivery_id,
                            "notification_id": notification.id,
                            "topic": cmd.topic.value,
                            "subscriber_id": stored.id,
                            "created_at": notification.created_at.isoformat(),
                            "subject": subject,
                            "text": body_text,
                            "payload": dict(cmd.payload_json),
                        },
                        separators=(",", ":"),
                        sort_keys=True,
                    )
                    body_html = ""
                send_after = notification.send_after
                due = send_after
                if not cmd.topic.critical:
                    due = quiet_until(send_after, sub.zone, sub.quiet_hours)
                planned.append(
                    PlannedDelivery(
                        id=delivery_id,
                        subscriber_id=stored.id,
                        channel=channel,
                        destination=sub.destination(channel),
                        subject=subject,
                        body_text=body_text,
                        body_html=body_html,
                        critical=cmd.topic.critical,
                        due=due,
                        deferred=due > send_after,
                    )
                )
        return planned

    def _render(
        self,
        cmd: PublishCommand,
        channel: Channel,
        zone: str,
        name: str,
        v: Violations,
        memo: Memo,
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
                memo=memo,
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
            named = subscribers.named(session, ids, cmd.organisation_id)
            # another organisation's subscriber reads as missing (no existence leak)
            for i, sid in enumerate(cmd.subscriber_ids):
                if sid not in named:
                    v.add(f"subscriber_ids[{i}]", f"no subscriber {sid!r}")
            return [named[i] for i in ids if i in named]
        return [
            s
            for s in subscribers.of_organisation(session, cmd.organisation_id)
            if s.subscriber.wants_broadcast(cmd.topic, cmd.site_ids)
        ]

    @staticmethod
    def _read(session: Session, notification_id: str) -> NotificationView:
        written = notifications.get(session, notification_id)
        assert written is not None  # written in this transaction
        return written

    # -- Cancel -------------------------------------------------------------------------------

    def cancel(self, session: Session, notification_id: str, dedupe_key: str) -> NotificationView:
        if bool(notification_id) == bool(dedupe_key):
            raise InvalidArgument([FieldViolation("id", "give exactly one of id or dedupe_key")])
        target = found(
            notifications.locked(session, notification_id, dedupe_key),
            "notification",
            notification_id or f"dedupe_key={dedupe_key}",
        )
        if target.cancelled_at is None:
            now = self.clock.now()
            notifications.cancel(session, target.id, now)
            events.append(session, target.id, target.topic.value, "CANCELLED", now)
        return self._read(session, target.id)

    # -- reads --------------------------------------------------------------------------------

    def get(self, notification_id: str) -> NotificationView:
        with self.db.read() as session:
            stored = found(
                notifications.get(session, notification_id), "notification", notification_id
            )
            scope = current_scope()
            scope.check("notification", notification_id, stored.organisation_id)
            if not scope.sees_any_site(stored.site_ids):
                raise NotFound("notification", notification_id)
            return stored

    def list(
        self,
        page: PageRequest,
        *,
        topic: Topic | None,
        subscriber_id: str,
        status: Status | None,
        dedupe_key: str,
    ) -> builtins.list[NotificationView]:
        with self.db.read() as session:
            return notifications.page(
                session,
                page,
                topic=topic,
                subscriber_id=subscriber_id,
                status=status,
                dedupe_key=dedupe_key,
            )

    def mine(self, page: PageRequest) -> builtins.list[NotificationView]:
        """The caller's own notifications, newest first (none before their subscriber exists)."""
        user = current_user()
        with self.db.read() as session:
            own = subscribers.of_user(session, user.organisation_id, user.subject)
            return [] if own is None else notifications.delivered_to(session, own.id, page)
