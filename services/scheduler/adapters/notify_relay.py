"""The scheduler's outbox → notify's Publish (the transactional outbox, services/common/outbox.py),
like the inventory's relay: each outbox row becomes one PublishRequest whose request_id is the row
id, so a retry after a lost reply is a no-op at notify, and whose dedupe_key is the row's.

A scheduler outbox row's payload is an envelope written by services/scheduler/jobs.py:
``{"payload": {...topic fields...}, "subscriber_ids": [...], "expires_at": ISO | null}``.
No subscriber ids = notify's opt-in broadcast to the staff subscribed to the topic and site.
A CANCEL_NOTIFICATION row (store/reminders.py) becomes a CancelNotification by dedupe key.

The relay delivers several rows at once (services/common/outbox_relay.py, "Delivering");
``chain_key`` and ``order_key`` keep in order what must be: every stock command in one chain,
in the order written (inventory_relay.STOCK_CHAIN: the booking made first reserves first), a
failure holding back only its own appointment's later commands (inventory_relay.stock_order);
and a reminder with its CANCEL_NOTIFICATION (a cancel that overtook its reminder would find
nothing to cancel). Other notifications go in any order: notify dedupes them."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Hashable

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.clock import Clock
from services.common.convert import to_datetime
from services.common.db import Database
from services.common.identity import service_caller
from services.common.outbox import OutgoingEvent
from services.common.outbox_relay import OutboxRelay, RelayPolicy, publish_or_dead_letter
from services.common.protojson import to_proto_json
from services.scheduler.adapters.inventory_relay import STOCK_CHAIN, STOCK_TOPICS, stock_order
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.store.models import AppointmentRow, SiteRow, outbox
from services.scheduler.store.reminders import CANCEL_NOTIFICATION

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10


def publish_request(event: OutgoingEvent) -> pb.PublishRequest:
    envelope = event.payload
    field = event.topic.lower()
    descriptor = pb.Payload.DESCRIPTOR.fields_by_name[field].message_type
    payload = pb.Payload()
    json_format.ParseDict({field: to_proto_json(envelope.get("payload", {}), descriptor)}, payload)
    request = pb.PublishRequest(
        topic=f"TOPIC_{event.topic}",
        subscriber_ids=list(envelope.get("subscriber_ids") or []),
        payload=payload,
        dedupe_key=event.dedupe_key,
        request_id=event.id,
    )
    expires = envelope.get("expires_at")
    if expires:
        stamp = Timestamp()
        stamp.FromDatetime(dt.datetime.fromisoformat(expires).astimezone(dt.UTC))
        request.expires_at.CopyFrom(stamp)
    return request


def cancel_notification(stub: notify_pb2_grpc.NotifyServiceStub, event: OutgoingEvent) -> None:
    """A reminder of a cancelled or moved appointment, held back at notify: cancel what it has
    not sent. NOT_FOUND (never published, e.g. no patient copy) leaves nothing to cancel."""
    key = event.payload["payload"]["dedupe_key"]

    def cancel() -> None:
        try:
            stub.CancelNotification(
                pb.CancelNotificationRequest(dedupe_key=key, request_id=event.id),
                timeout=PUBLISH_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise

    publish_or_dead_letter(cancel)


def still_booked(db: Database, event: OutgoingEvent) -> bool:
    """The reminder's appointment is booked, at the start the reminder names."""
    payload = event.payload.get("payload", {})
    with db.read() as session:
        row = session.get(AppointmentRow, payload.get("appointment_id", ""))
    return (
        row is not None
        and row.status == AppointmentStatus.BOOKED.value
        and row.start_at == dt.datetime.fromisoformat(payload["start_time"])
    )


def organisation_of(db: Database, event: OutgoingEvent) -> str:
    """The organisation of the site the event concerns: the scheduler publishes as itself, for
    that organisation (docs/security.md, "Scope"). "" when the site is gone: notify then
    refuses the row (INVALID_ARGUMENT) and the relay dead-letters it."""
    site_id = str(event.payload.get("payload", {}).get("site_id") or "")
    with db.read() as session:
        site = session.get(SiteRow, site_id) if site_id else None
    return site.organisation_id if site is not None else ""


def order_key(event: OutgoingEvent) -> Hashable | None:
    """Which rows a failed row holds back (module docstring); None: none."""
    if event.topic in STOCK_TOPICS:
        return stock_order(event)
    if event.topic == "APPOINTMENT_REMINDER":
        return ("reminder", event.dedupe_key)
    if event.topic == CANCEL_NOTIFICATION:
        return ("reminder", str(event.payload.get("payload", {}).get("dedupe_key", "")))
    return None


def chain_key(event: OutgoingEvent) -> Hashable | None:
    """Which rows go one after another: every stock row in one chain (STOCK_CHAIN), a reminder
    with its cancel; None: at any time."""
    return STOCK_CHAIN if event.topic in STOCK_TOPICS else order_key(event)


def relay_to_notify(
    db: Database,
    clock: Clock,
    channel: grpc.Channel,
    policy: RelayPolicy | None = None,
    stock: Callable[[OutgoingEvent], None] | None = None,
) -> OutboxRelay:
    """``channel``: to notify, carrying the scheduler's own token (services.common.channels);
    ``stock`` takes the rows meant for the inventory (inventory_relay.STOCK_TOPICS)."""
    stub = notify_pb2_grpc.NotifyServiceStub(channel)

    def deliver(event: OutgoingEvent) -> None:
        if event.topic in STOCK_TOPICS:
            if stock is None:
                log.warning("no inventory relay: %s %s not sent", event.topic, event.id)
            else:
                stock(event)
            return
        if event.topic == CANCEL_NOTIFICATION:
            cancel_notification(stub, event)
            return
        if event.topic == "APPOINTMENT_REMINDER" and not still_booked(db, event):
            # cancelled or moved after the reminder was raised, before it was relayed (its
            # CANCEL_NOTIFICATION may have found nothing yet at notify): never send it
            log.info("scheduler outbox %s %s: appointment no longer booked", event.topic, event.id)
            return
        request = publish_request(event)
        if request.HasField("expires_at") and to_datetime(request.expires_at) <= clock.now():
            # e.g. a reminder relayed after the appointment began (notify was down): moot, and
            # notify would refuse it (expires_at must lie ahead); the row counts as delivered.
            log.info("scheduler outbox %s %s expired before relaying", event.topic, event.id)
            return
        request.organisation_id = organisation_of(db, event)
        publish_or_dead_letter(lambda: stub.Publish(request, timeout=PUBLISH_TIMEOUT_SECONDS))

    return OutboxRelay(
        db,
        outbox,
        deliver,
        clock,
        policy,
        caller=service_caller("scheduler"),
        order_key=order_key,
        chain_key=chain_key,
        name="scheduler-outbox-relay",
    )
