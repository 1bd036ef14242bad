"""Stock sites, storage units and outgoing events: protobuf ↔ domain values. No rules here."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from infusion.inventory.v1 import inventory_pb2 as pb
from services.common.convert import from_datetime, from_time_of_day, parse_time_of_day
from services.common.errors import Violations
from services.common.etag import etag_for
from services.common.outbox import OutgoingEvent
from services.inventory.domain.catalogue import StorageKind
from services.inventory.domain.sites import (
    DEFAULT_EXPIRY_CHECK_TIME,
    DEFAULT_EXPIRY_WARNING_DAYS,
    StockSite,
    StorageUnit,
)

STORAGE_KIND: Mapping[StorageKind, Any] = {
    k: pb.StorageKind.Value(f"STORAGE_KIND_{k.name}") for k in StorageKind
}
STORAGE_IN = {v: k for k, v in STORAGE_KIND.items()}


def site_out(site: StockSite, created: dt.datetime) -> pb.StockSite:
    return pb.StockSite(
        id=site.id,
        display_name=site.display_name,
        time_zone=site.time_zone,
        expiry_check_time=from_time_of_day(site.expiry_check_time),
        expiry_warning_days=list(site.expiry_warning_days),
        organisation_id=site.organisation_id,
        etag=etag_for(1),
        create_time=from_datetime(created),
    )


def unit_out(unit: StorageUnit, created: dt.datetime) -> pb.StorageUnit:
    return pb.StorageUnit(
        id=unit.id,
        site_id=unit.site_id,
        display_name=unit.display_name,
        storage=STORAGE_KIND[StorageKind(unit.storage)],
        create_time=from_datetime(created),
    )


def event_out(event: OutgoingEvent) -> pb.OutgoingEvent:
    reply = pb.OutgoingEvent(
        sequence=event.seq,
        id=event.id,
        topic=event.topic,
        dedupe_key=event.dedupe_key,
        payload_json=json.dumps(event.payload, sort_keys=True),
        create_time=from_datetime(event.created_at),
    )
    if event.delivered_at is not None:
        reply.delivered_time.CopyFrom(from_datetime(event.delivered_at))
    return reply


def site_in(msg: pb.StockSite) -> StockSite:
    v = Violations()
    check_time = (
        parse_time_of_day(msg.expiry_check_time, "site.expiry_check_time", v)
        if msg.HasField("expiry_check_time")
        else DEFAULT_EXPIRY_CHECK_TIME
    )
    v.raise_if_any()
    return StockSite(
        id=msg.id,
        display_name=msg.display_name,
        time_zone=msg.time_zone,
        expiry_check_time=check_time or DEFAULT_EXPIRY_CHECK_TIME,
        expiry_warning_days=tuple(msg.expiry_warning_days) or DEFAULT_EXPIRY_WARNING_DAYS,
        organisation_id=msg.organisation_id,
    )


def unit_in(msg: pb.StorageUnit) -> StorageUnit:
    storage = STORAGE_IN.get(msg.storage)
    return StorageUnit("", msg.site_id, msg.display_name, storage.value if storage else "")
