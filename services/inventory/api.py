"""InventoryService servicer: protobuf ↔ catalogue domain objects. No rules live here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from infusion.inventory.v1 import inventory_pb2 as pb
from infusion.inventory.v1 import inventory_pb2_grpc as pb_grpc
from services.common.convert import (
    decimal_str,
    from_datetime,
    from_money,
    parse_decimal,
    to_money,
)
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidArgument, Violations
from services.common.etag import etag_for
from services.common.fieldmask import apply_mask
from services.common.idempotency import IdempotencyStore
from services.common.outbox import Outbox
from services.common.pagination import page_request, split_page
from services.inventory.catalogue_service import CatalogueService
from services.inventory.cost_api import CostApi
from services.inventory.cost_service import CostService
from services.inventory.domain.catalogue import (
    ConversionFactor,
    IgClass,
    Presentation,
    Price,
    Product,
    RateSchedule,
    RateStep,
    RateUnit,
    Route,
    Source,
    StorageRule,
)
from services.inventory.planning_api import PlanningApi
from services.inventory.planning_service import PlanningService
from services.inventory.reservation_api import ReservationApi
from services.inventory.reservation_service import ReservationService
from services.inventory.site_api import STORAGE_KIND, SiteApi
from services.inventory.site_service import SiteService
from services.inventory.stock_api import StockApi
from services.inventory.stock_service import StockService
from services.inventory.store.products import StoredProduct

R = TypeVar("R", bound=Message)

IG_CLASS = {
    IgClass.IVIG: pb.IG_CLASS_IVIG,
    IgClass.SCIG: pb.IG_CLASS_SCIG,
    IgClass.FSCIG: pb.IG_CLASS_FACILITATED_SCIG,
}
ROUTE = {Route.IV: pb.ROUTE_IV, Route.SC: pb.ROUTE_SC, Route.FSC: pb.ROUTE_FACILITATED_SC}
RATE_UNIT = {
    RateUnit.ML_PER_KG_H: pb.RATE_UNIT_ML_PER_KG_H,
    RateUnit.MG_PER_KG_MIN: pb.RATE_UNIT_MG_PER_KG_MIN,
    RateUnit.ML_PER_H: pb.RATE_UNIT_ML_PER_H,
}
MUTABLE = tuple(
    f.name
    for f in pb.Product.DESCRIPTOR.fields
    if f.name not in {"id", "etag", "create_time", "update_time"}
)


def _reverse(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    return {v: k for k, v in mapping.items()}


def _choice(value: int, mapping: Mapping[Any, Any], field: str, v: Violations) -> Any:
    found = _reverse(mapping).get(value)
    if found is None:
        v.add(field, "is required")
    return found


_MEMO: dict[tuple[str, int], pb.Product] = {}
_MEMO_LIMIT = 4096


def product_out(stored: StoredProduct) -> pb.Product:
    """Memoised by (id, revision): the translation is pure and a product's revision changes
    whenever its content does, so the catalogue is not re-translated on every read."""
    key = (stored.id, stored.revision)
    found = _MEMO.get(key)
    if found is None:
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.clear()
        found = _MEMO[key] = _translate(stored)
    return found


def _translate(stored: StoredProduct) -> pb.Product:
    p = stored.product
    msg = pb.Product(
        id=stored.id,
        code=p.code,
        brand=p.brand,
        manufacturer=p.manufacturer,
        ig_class=IG_CLASS[p.ig_class],
        concentration_percent=decimal_str(p.concentration_percent),
        routes=[ROUTE[r] for r in p.routes],
        presentations=[
            pb.Presentation(grams=decimal_str(x.grams), ml=decimal_str(x.ml), gtin=x.gtin or "")
            for x in p.presentations
        ],
        storage=pb.StorageRule(
            kind=STORAGE_KIND[p.storage.kind] if p.storage.kind else pb.STORAGE_KIND_UNSPECIFIED,
            room_temperature_months=p.storage.room_temperature_months or 0,
            note=p.storage.note,
        ),
        rate_schedules=[
            pb.RateSchedule(
                indication=r.indication,
                unit=RATE_UNIT[r.unit],
                steps=[
                    pb.RateStep(rate=decimal_str(s.rate), minutes=s.minutes or 0) for s in r.steps
                ],
                source=r.source,
            )
            for r in p.rate_schedules
        ],
        conversion_factors=[
            pb.ConversionFactor(
                indication=c.indication, factor=decimal_str(c.factor), source=c.source
            )
            for c in p.conversion_factors
        ],
        sources=[pb.Source(tag=s.tag, url=s.url) for s in p.sources],
        note=p.note,
        active=stored.active,
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )
    if p.price_per_gram is not None:
        msg.price_per_gram.CopyFrom(to_money(p.price_per_gram.amount, p.price_per_gram.currency))
        msg.price_source = p.price_per_gram.source
    return msg


def product_in(msg: pb.Product, v: Violations) -> Product:
    f = "product"
    presentations = []
    for i, x in enumerate(msg.presentations):
        grams = parse_decimal(x.grams, f"{f}.presentations[{i}].grams", v)
        ml = parse_decimal(x.ml, f"{f}.presentations[{i}].ml", v)
        if grams is not None and ml is not None:
            presentations.append(Presentation(grams, ml, x.gtin or None))
    schedules = []
    for i, r in enumerate(msg.rate_schedules):
        unit = _choice(r.unit, RATE_UNIT, f"{f}.rate_schedules[{i}].unit", v)
        steps = []
        for j, s in enumerate(r.steps):
            rate = parse_decimal(s.rate, f"{f}.rate_schedules[{i}].steps[{j}].rate", v)
            if rate is not None:
                steps.append(RateStep(rate, s.minutes or None))
        if unit is not None:
            schedules.append(RateSchedule(r.indication, unit, tuple(steps), r.source))
    factors = []
    for i, c in enumerate(msg.conversion_factors):
        factor = parse_decimal(c.factor, f"{f}.conversion_factors[{i}].factor", v)
        if factor is not None:
            factors.append(ConversionFactor(c.indication, factor, c.source))
    price = None
    if msg.HasField("price_per_gram"):
        price = Price(
            from_money(msg.price_per_gram), msg.price_per_gram.currency_code, msg.price_source
        )
    routes = []
    for i, route in enumerate(msg.routes):
        chosen = _choice(route, ROUTE, f"{f}.routes[{i}]", v)
        if chosen is not None:
            routes.append(chosen)
    storage_kind = _reverse(STORAGE_KIND).get(msg.storage.kind)
    concentration = parse_decimal(msg.concentration_percent, f"{f}.concentration_percent", v)
    return Product(
        code=msg.code,
        brand=msg.brand,
        manufacturer=msg.manufacturer,
        ig_class=_choice(msg.ig_class, IG_CLASS, f"{f}.ig_class", v) or IgClass.IVIG,
        concentration_percent=concentration if concentration is not None else Decimal(0),
        routes=tuple(routes),
        presentations=tuple(presentations),
        storage=StorageRule(
            storage_kind, msg.storage.room_temperature_months or None, msg.storage.note
        ),
        rate_schedules=tuple(schedules),
        price_per_gram=price,
        conversion_factors=tuple(factors),
        sources=tuple(Source(s.tag, s.url) for s in msg.sources),
        note=msg.note,
    )


@dataclass(frozen=True)
class InventoryServices:
    """Everything the servicer translates to, built by ``__main__``."""

    db: Database
    idempotency: IdempotencyStore
    outbox: Outbox
    catalogue: CatalogueService
    sites: SiteService
    stock: StockService
    reservations: ReservationService
    planning: PlanningService
    costs: CostService


class InventoryApi(
    StockApi, SiteApi, ReservationApi, PlanningApi, CostApi, pb_grpc.InventoryServiceServicer
):
    def __init__(self, services: InventoryServices) -> None:
        self.db = services.db
        self.idem = services.idempotency
        self.outbox = services.outbox
        self.catalogue = services.catalogue
        self.sites = services.sites
        self.stock = services.stock
        self.reservations = services.reservations
        self.planning = services.planning
        self.costs = services.costs

    def _read(self, fn: Callable[[Session], R]) -> R:
        with self.db.read() as session:
            return fn(session)

    def _mutate(self, name: str, request: Message, rtype: type[R], fn: Callable[..., R]) -> R:
        return self.idem.run(f"inventory.{name}", request, rtype, fn)

    def CreateProduct(self, request: pb.CreateProductRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        product = product_in(request.product, v)
        v.raise_if_any()
        active = True  # a new product is active; UpdateProduct can retire it
        return self._mutate(
            "CreateProduct",
            request,
            pb.CreateProductResponse,
            lambda s: pb.CreateProductResponse(
                product=product_out(self.catalogue.create(s, product, active))
            ),
        )

    def GetProduct(self, request: pb.GetProductRequest, context: grpc.ServicerContext) -> Any:
        if not request.id:
            raise InvalidArgument([FieldViolation("id", "is required (a product id or code)")])
        return pb.GetProductResponse(product=product_out(self.catalogue.get(request.id)))

    def ListProducts(self, request: pb.ListProductsRequest, context: grpc.ServicerContext) -> Any:
        ig_class = _reverse(IG_CLASS).get(request.ig_class)
        route = _reverse(ROUTE).get(request.route)
        scope = f"products:{request.ig_class}:{request.route}:{request.include_inactive}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.catalogue.list(ig_class, route, request.include_inactive, page),
            page,
            lambda p: [p.id],
            scope=scope,
        )
        return pb.ListProductsResponse(
            products=[product_out(p) for p in rows], next_page_token=token
        )

    def UpdateProduct(self, request: pb.UpdateProductRequest, context: grpc.ServicerContext) -> Any:
        if not request.product.id:
            raise InvalidArgument([FieldViolation("product.id", "is required")])

        def change(current: StoredProduct) -> tuple[Product, bool]:
            merged: pb.Product = apply_mask(  # type: ignore[assignment]
                product_out(current),
                request.product,
                request.update_mask,
                MUTABLE,
                prefix="product",
            )
            v = Violations()
            product = product_in(merged, v)
            v.raise_if_any()
            return product, merged.active

        return self._mutate(
            "UpdateProduct",
            request,
            pb.UpdateProductResponse,
            lambda s: pb.UpdateProductResponse(
                product=product_out(
                    self.catalogue.update(s, request.product.id, request.product.etag, change)
                )
            ),
        )
