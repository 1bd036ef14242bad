"""The inventory's outbox → notify's Publish (the transactional outbox, services/common/outbox.py):
each outbox row becomes one PublishRequest whose request_id is the row id, so a retry after a lost
reply is a no-op at notify. Stock events name no subscribers: notify sends them to the subscribers
whose preferences ask for the topic (and the site), never to patients (docs/notify.md)."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.clock import Clock
from services.common.db import Database
from services.common.identity import service_caller
from services.common.outbox import OutgoingEvent
from services.common.outbox_relay import OutboxRelay, RelayPolicy, publish_or_dead_letter
from services.common.protojson import to_proto_json
from services.inventory.store.models import outbox
from services.inventory.store.site_scope import organisation_of

PUBLISH_TIMEOUT_SECONDS = 10


def publish_request(
    event: OutgoingEvent, subscriber_ids: list[str] | None = None
) -> pb.PublishRequest:
    field = event.topic.lower()
    descriptor = pb.Payload.DESCRIPTOR.fields_by_name[field].message_type
    payload = pb.Payload()
    json_format.ParseDict({field: to_proto_json(event.payload, descriptor)}, payload)
    return pb.PublishRequest(
        topic=f"TOPIC_{event.topic}",
        subscriber_ids=subscriber_ids or [],
        payload=payload,
        dedupe_key=event.dedupe_key,
        request_id=event.id,
    )


def event_organisation(db: Database, event: OutgoingEvent) -> str:
    """The organisation of the site(s) the event concerns: the inventory publishes as itself,
    for that organisation (docs/security.md, "Scope"). "" for a site nobody has claimed: notify
    refuses the row and the relay dead-letters it."""
    sites = [event.payload.get("site_id") or "", *event.payload.get("sites", [])]
    with db.read() as session:
        for site_id in sites:
            owner = organisation_of(session, str(site_id)) if site_id else None
            if owner:
                return owner
    return ""


def relay_to_notify(
    db: Database, clock: Clock, channel: grpc.Channel, policy: RelayPolicy | None = None
) -> OutboxRelay:
    """``channel``: to notify, carrying the inventory's own token (services.common.channels)."""
    stub = notify_pb2_grpc.NotifyServiceStub(channel)

    def deliver(event: OutgoingEvent) -> None:
        request = publish_request(event)
        request.organisation_id = event_organisation(db, event)
        publish_or_dead_letter(lambda: stub.Publish(request, timeout=PUBLISH_TIMEOUT_SECONDS))

    return OutboxRelay(
        db,
        outbox,
        deliver,
        clock,
        policy,
        caller=service_caller("inventory"),
        name="inventory-outbox-relay",
    )
