"""Stock sites, storage units and the outbox listing: protobuf ↔ use cases. No rules here."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from infusion.inventory.v1 import inventory_pb2 as pb
from services.common.convert import from_datetime, from_time_of_day, parse_time_of_day
from services.common.errors import FieldViolation, InvalidArgument, Violations
from services.common.etag import etag_for
from services.common.outbox import Outbox, OutgoingEvent
from services.common.pagination import page_request, split_page
from services.inventory.domain.catalogue import StorageKind
from services.inventory.domain.sites import (
    DEFAULT_EXPIRY_CHECK_TIME,
    DEFAULT_EXPIRY_WARNING_DAYS,
    StockSite,
    StorageUnit,
)
from services.inventory.site_service import SiteService
from services.inventory.store.site_scope import scoped_events

STORAGE_KIND: Mapping[StorageKind, Any] = {
    k: pb.StorageKind.Value(f"STORAGE_KIND_{k.name}") for k in StorageKind
}
_STORAGE_IN = {v: k for k, v in STORAGE_KIND.items()}


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


class SiteApi:
    """Mixed into InventoryApi; ``sites``, ``outbox``, ``db`` and ``_mutate`` come from it."""

    sites: SiteService
    outbox: Outbox
    _mutate: Callable[..., Any]
    _read: Callable[..., Any]

    def CreateStockSite(
        self, request: pb.CreateStockSiteRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        msg = request.site
        check_time = (
            parse_time_of_day(msg.expiry_check_time, "site.expiry_check_time", v)
            if msg.HasField("expiry_check_time")
            else DEFAULT_EXPIRY_CHECK_TIME
        )
        v.raise_if_any()
        site = StockSite(
            id=msg.id,
            display_name=msg.display_name,
            time_zone=msg.time_zone,
            expiry_check_time=check_time or DEFAULT_EXPIRY_CHECK_TIME,
            expiry_warning_days=tuple(msg.expiry_warning_days) or DEFAULT_EXPIRY_WARNING_DAYS,
            organisation_id=msg.organisation_id,
        )
        return self._mutate(
            "CreateStockSite",
            request,
            pb.CreateStockSiteResponse,
            lambda s: pb.CreateStockSiteResponse(site=site_out(*self.sites.create(s, site))),
        )

    def GetStockSite(self, request: pb.GetStockSiteRequest, context: grpc.ServicerContext) -> Any:
        site = self.sites.get(request.id)
        return pb.GetStockSiteResponse(site=site_out(site, self.sites.created_at(site.id)))

    def ListStockSites(
        self, request: pb.ListStockSitesRequest, context: grpc.ServicerContext
    ) -> Any:
        page = page_request(request.page_size, request.page_token, scope="stock-sites")
        rows, token = split_page(
            self.sites.list_sites(page), page, lambda pair: [pair[0].id], scope="stock-sites"
        )
        return pb.ListStockSitesResponse(
            sites=[site_out(site, created) for site, created in rows], next_page_token=token
        )

    def CreateStorageUnit(
        self, request: pb.CreateStorageUnitRequest, context: grpc.ServicerContext
    ) -> Any:
        msg = request.storage_unit
        storage = _STORAGE_IN.get(msg.storage)
        unit = StorageUnit("", msg.site_id, msg.display_name, storage.value if storage else "")
        return self._mutate(
            "CreateStorageUnit",
            request,
            pb.CreateStorageUnitResponse,
            lambda s: pb.CreateStorageUnitResponse(
                storage_unit=unit_out(*self.sites.create_unit(s, unit))
            ),
        )

    def ListStorageUnits(
        self, request: pb.ListStorageUnitsRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.site_id:
            raise InvalidArgument([FieldViolation("site_id", "is required")])
        return pb.ListStorageUnitsResponse(
            storage_units=[unit_out(u, c) for u, c in self.sites.units(request.site_id)]
        )

    def ListOutgoingEvents(
        self, request: pb.ListOutgoingEventsRequest, context: grpc.ServicerContext
    ) -> Any:
        if request.page_size < 0 or request.after_sequence < 0:
            raise InvalidArgument(
                [FieldViolation("page_size", "page_size and after_sequence must not be negative")]
            )
        size = min(request.page_size or 100, 1000)
        events = self._read(
            lambda s: scoped_events(
                s,
                lambda after: self.outbox.list(s, after, request.topic, size),
                request.after_sequence,
                size,
            )
        )
        return pb.ListOutgoingEventsResponse(events=[event_out(e) for e in events])
