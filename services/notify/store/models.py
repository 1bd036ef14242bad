"""Notify tables.

A notification's payload is its typed protobuf payload as JSON (read and written whole). Each
delivery holds what it sends (rendered at Publish, so a template change never alters a message
already accepted) and its state; every attempt is a row of its own. ``notify_events`` is the
log the Subscribe stream reads: each row is written with its transaction (``seq``, the order
of writing) and placed in the stream (``stream_seq``) by a short step after its commit, so the
stream's numbers only grow in commit order without a lock held across the writing transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import UtcDateTime
from services.common.store_base import define_request_tables, service_metadata

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
SEQ = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = service_metadata()


idempotency_keys, audit_tables = define_request_tables(Base.metadata, "notify")


class SubscriberRow(Base):
    __tablename__ = "notify_subscribers"
    # a user's own subscriber: one per organisation and token subject (NULLs never collide)
    __table_args__ = (
        UniqueConstraint(
            "organisation_id", "user_subject", name="uq_notify_subscribers_organisation_user"
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_ref: Mapped[str] = mapped_column(String(200), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str] = mapped_column(String(20))
    webhook_url: Mapped[str] = mapped_column(String(2000))
    webhook_secret: Mapped[str] = mapped_column(String(200))
    # [[topic, [channel, ...]], ...] in the order given
    preferences: Mapped[list[Any]] = mapped_column(JSON)
    quiet_start: Mapped[str | None] = mapped_column(String(8), nullable=True)  # "HH:MM:SS"
    quiet_end: Mapped[str | None] = mapped_column(String(8), nullable=True)
    site_ids: Mapped[list[str]] = mapped_column(JSON)
    kind: Mapped[str] = mapped_column(String(8), server_default="STAFF")  # SubscriberKind
    # the organisation it belongs to (docs/security.md, "Scope"); "" for rows older than
    # scoping: seen by our services only
    organisation_id: Mapped[str] = mapped_column(String(100), server_default="", index=True)
    # the signed-in user (token subject) whose own subscriber this is; NULL for the others
    user_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class NotificationRow(Base):
    __tablename__ = "notify_notifications"
    # a dedupe key is the publishing organisation's: two organisations' keys never meet
    __table_args__ = (
        UniqueConstraint(
            "organisation_id", "dedupe_key", name="uq_notify_notifications_organisation_dedupe"
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organisation_id: Mapped[str] = mapped_column(String(100), server_default="", index=True)
    topic: Mapped[str] = mapped_column(String(40), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    subscriber_ids: Mapped[list[str]] = mapped_column(JSON)
    site_ids: Mapped[list[str]] = mapped_column(JSON)
    # the same sites as text with a space around each (" s1 s2 ", "" when none), so a
    # site-limited caller's list is one portable LIKE per site (store/notifications.py)
    site_keys: Mapped[str] = mapped_column(Text, server_default="")
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    send_after: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # W3C traceparent of the Publish that accepted it: the dispatcher's sends join its trace
    traceparent: Mapped[str | None] = mapped_column(String(55), nullable=True)


class DeliveryRow(Base):
    __tablename__ = "notify_deliveries"
    __table_args__ = (
        Index("ix_notify_deliveries_due", "status", "next_attempt_at"),
        Index("ix_notify_deliveries_subscriber", "subscriber_id", "notification_id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    notification_id: Mapped[str] = mapped_column(ForeignKey("notify_notifications.id"), index=True)
    subscriber_id: Mapped[str] = mapped_column(ForeignKey("notify_subscribers.id"))
    channel: Mapped[str] = mapped_column(String(16))
    destination: Mapped[str] = mapped_column(String(2000))
    subject: Mapped[str] = mapped_column(String(1000))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    critical: Mapped[bool] = mapped_column()
    status: Mapped[str] = mapped_column(String(20))
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # a SENDING delivery whose lease has passed was abandoned (crash) and may be claimed again
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    attempt_count: Mapped[int] = mapped_column(Integer)
    deferred: Mapped[bool] = mapped_column()
    last_error: Mapped[str] = mapped_column(String(1000))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class AttemptRow(Base):
    __tablename__ = "notify_attempts"
    __table_args__ = (Index("ix_notify_attempts_delivery", "delivery_id", "number"),)
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("notify_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str] = mapped_column(String(1000))


class EventRow(Base):
    __tablename__ = "notify_events"
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    # the stream's sequence: NULL until the event is placed, just after its transaction commits
    stream_seq: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, index=True, unique=True
    )
    notification_id: Mapped[str] = mapped_column(ForeignKey("notify_notifications.id"))
    kind: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
