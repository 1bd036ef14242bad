"""The inventory's outbox → notify's Publish (DESIGN.md, transactional outbox): each outbox row
becomes one PublishRequest whose request_id is the row id, so a retry after a lost reply is a
no-op at notify. Stock events name no subscribers: notify sends them to the subscribers whose
preferences ask for the topic (and the site), never to patients (docs/notify.md)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import json_format

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.clock import Clock
from services.common.db import Database
from services.common.outbox import OutgoingEvent
from services.common.outbox_relay import OutboxRelay
from services.inventory.store.models import outbox

PUBLISH_TIMEOUT_SECONDS = 10


def _proto_json(doc: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    """Outbox JSON → protobuf JSON: ISO dates to google.type.Date, {amount, currency} to
    google.type.Money, nested messages recursively; keys notify does not know are dropped."""
    found: dict[str, Any] = {}
    for fd in descriptor.fields:
        value = doc.get(fd.name)
        if value is None:
            continue
        kind = fd.message_type.full_name if fd.message_type else ""
        if kind == "google.type.Date":
            day = dt.date.fromisoformat(str(value))
            found[fd.name] = {"year": day.year, "month": day.month, "day": day.day}
        elif kind == "google.type.Money":
            amount = Decimal(str(value["amount"]))
            units = int(amount)
            found[fd.name] = {
                "currency_code": value["currency"],
                "units": str(units),
                "nanos": int((amount - units) * 1_000_000_000),
            }
        elif kind and kind != "google.protobuf.Timestamp":
            inner = fd.message_type
            found[fd.name] = (
                [_proto_json(x, inner) for x in value]
                if fd.is_repeated
                else _proto_json(value, inner)
            )
        else:
            found[fd.name] = value
    return found


def publish_request(
    event: OutgoingEvent, subscriber_ids: list[str] | None = None
) -> pb.PublishRequest:
    field = event.topic.lower()
    descriptor = pb.Payload.DESCRIPTOR.fields_by_name[field].message_type
    payload = pb.Payload()
    json_format.ParseDict({field: _proto_json(event.payload, descriptor)}, payload)
    return pb.PublishRequest(
        topic=f"TOPIC_{event.topic}",
        subscriber_ids=subscriber_ids or [],
        payload=payload,
        dedupe_key=event.dedupe_key,
        request_id=event.id,
    )


def relay_to_notify(db: Database, clock: Clock, address: str) -> tuple[OutboxRelay, grpc.Channel]:
    channel = grpc.insecure_channel(address)
    stub = notify_pb2_grpc.NotifyServiceStub(channel)

    def deliver(event: OutgoingEvent) -> None:
        stub.Publish(publish_request(event), timeout=PUBLISH_TIMEOUT_SECONDS)

    return OutboxRelay(db, outbox, deliver, clock, name="inventory-outbox-relay"), channel
