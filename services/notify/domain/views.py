"""What the store hands back and the use cases return: a stored subscriber, a notification with
its deliveries and their attempts, an event of the log the Subscribe stream reads, and the due
delivery the dispatcher decides about. Plain values, so neither side sees an ORM row."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from services.notify.domain.model import Channel, QuietHours, Status, Subscriber, Topic


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
    # the message as rendered for its recipient (read for the recipient's own list only)
    subject: str = ""
    body_text: str = ""


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
class PlannedDelivery:
    """A delivery Publish decided on: rendered now, so a later template change never alters a
    message already accepted; due at ``due`` (``deferred`` when quiet hours moved it)."""

    id: str
    subscriber_id: str
    channel: Channel
    destination: str
    subject: str
    body_text: str
    body_html: str
    critical: bool
    due: dt.datetime
    deferred: bool


@dataclass(frozen=True)
class DueDelivery:
    """A delivery the dispatcher may take now (locked for it), with what it needs of its
    notification and subscriber to decide: send, defer, expire or give up."""

    id: str
    notification_id: str
    topic: str
    channel: Channel
    destination: str
    subject: str
    body_text: str
    body_html: str
    critical: bool
    status: Status
    attempt_count: int
    expires_at: dt.datetime | None
    traceparent: str | None
    time_zone: str
    quiet_hours: QuietHours | None
    webhook_secret: str
