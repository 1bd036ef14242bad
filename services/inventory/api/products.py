"""Products: protobuf ↔ the catalogue's domain objects. No rules live here."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from infusion.inventory.v1 import inventory_pb2 as pb
from services.common.convert import (
    decimal_str,
    from_datetime,
    from_money,
    parse_decimal,
    to_money,
)
from services.common.errors import Violations
from services.common.etag import etag_for
from services.inventory.api.sites import STORAGE_KIND
from services.inventory.domain.catalogue import (
    SC_FIGURES,
    ConversionFactor,
    IgClass,
    Presentation,
    Price,
    Product,
    RateSchedule,
    RateStep,
    RateUnit,
    Route,
    ScAdministration,
    Source,
    StorageRule,
    StoredProduct,
)

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


def reverse(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    return {v: k for k, v in mapping.items()}


def _choice(value: int, mapping: Mapping[Any, Any], field: str, v: Violations) -> Any:
    found = reverse(mapping).get(value)
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
                indication=c.indication,
                factor=decimal_str(c.factor),
                source=c.source,
                label_version=c.label_version,
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
    if p.sc_administration is not None:
        sc = p.sc_administration
        msg.sc_administration.CopyFrom(
            pb.ScAdministration(
                **{name: decimal_str(value) for name, value in sc.figures().items()},
                max_sites=sc.max_sites or 0,
                source=sc.source,
            )
        )
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
            factors.append(
                ConversionFactor(c.indication, factor, c.source, c.label_version or "current")
            )
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
    storage_kind = reverse(STORAGE_KIND).get(msg.storage.kind)
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
        sc_administration=_sc_in(msg, v),
    )


def _sc_in(msg: pb.Product, v: Violations) -> ScAdministration | None:
    if not msg.HasField("sc_administration"):
        return None
    sc = msg.sc_administration
    figures = {
        name: parse_decimal(
            getattr(sc, name), f"product.sc_administration.{name}", v, required=False
        )
        for name in SC_FIGURES
    }
    return ScAdministration(**figures, max_sites=sc.max_sites or None, source=sc.source)
