"""The scheduler's view of the product catalogue, read from the inventory service over gRPC.

Inventory owns product master data (docs/architecture.md); the scheduler never stores products.
Products change rarely and every dose calculation needs one, so answers are cached for a short time
(``ttl_seconds``); an inventory outage turns into UNAVAILABLE for calls that need a product the
cache does not hold, never into a wrong dose.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from decimal import Decimal

import grpc

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc as inv_grpc
from services.common.errors import Unavailable
from services.scheduler.domain.dosing import ProductSpec, RateSchedule
from services.scheduler.domain.infusion import RateStepSpec, RateUnit
from services.scheduler.domain.plans import Indication
from services.scheduler.domain.regimens.sc_products import (
    CURRENT_LABEL,
    SC_PRODUCTS,
    ConversionFactor,
    ScProduct,
)

_UNITS = {
    inv.RATE_UNIT_ML_PER_KG_H: RateUnit.ML_PER_KG_H,
    inv.RATE_UNIT_MG_PER_KG_MIN: RateUnit.MG_PER_KG_MIN,
    inv.RATE_UNIT_ML_PER_H: RateUnit.ML_PER_H,
}


def product_spec(product: inv.Product) -> ProductSpec:
    """What dosing needs of an inventory product (translated once per cached answer)."""
    return ProductSpec(
        id=product.id,
        brand=product.brand,
        concentration_percent=Decimal(product.concentration_percent),
        presentations=tuple((Decimal(p.grams), Decimal(p.ml)) for p in product.presentations),
        rate_schedules=tuple(
            RateSchedule(
                r.indication,
                tuple(
                    RateStepSpec(Decimal(s.rate), _UNITS[r.unit], s.minutes or None)
                    for s in r.steps
                ),
            )
            for r in product.rate_schedules
            if r.unit in _UNITS and r.steps
        ),
    )


def sc_product(product: inv.Product) -> ScProduct:
    """What the SC rules need of a catalogue product: its concentration and vial sizes, the
    conversion factors it lists per indication and label version, and its SC administration
    figures (volume per site, sites at once, mL a day); what it does not list (the MMN 1.00,
    a figure left empty) comes from the adopted defaults for its code
    (domain/regimens/sc_products.py), nothing for a code without defaults."""
    default = SC_PRODUCTS.get(product.code)
    listed = []
    for f in product.conversion_factors:
        if f.indication.upper() in Indication.__members__ and f.factor:
            listed.append(
                ConversionFactor(
                    Indication[f.indication.upper()],
                    Decimal(f.factor),
                    f.label_version or CURRENT_LABEL,
                )
            )
    known = {(f.indication, f.label_version) for f in listed}
    if default is not None:
        listed += [f for f in default.factors if (f.indication, f.label_version) not in known]
    vials = tuple(sorted({Decimal(p.grams) for p in product.presentations if p.grams}))
    base = default or ScProduct(
        product.id, product.brand, Decimal(product.concentration_percent or "10"), (), None
    )
    if product.HasField("sc_administration"):  # the catalogue's figures win over the defaults
        sc = product.sc_administration

        def figure(text: str, fallback: Decimal | None) -> Decimal | None:
            return Decimal(text) if text else fallback

        base = dataclasses.replace(
            base,
            site_max_ml=figure(sc.site_max_ml, base.site_max_ml),
            site_max_ml_cidp=figure(sc.site_max_ml_cidp, base.site_max_ml_cidp),
            site_max_ml_under_40_kg=figure(
                sc.site_max_ml_under_40_kg, base.site_max_ml_under_40_kg
            ),
            max_sites=sc.max_sites or base.max_sites,
            max_ml_per_day=figure(sc.max_ml_per_day, base.max_ml_per_day),
            max_ml_per_day_under_40_kg=figure(
                sc.max_ml_per_day_under_40_kg, base.max_ml_per_day_under_40_kg
            ),
        )
    return dataclasses.replace(
        base,
        key=product.id,
        brand=product.brand or base.brand,
        concentration_percent=Decimal(product.concentration_percent)
        if product.concentration_percent
        else base.concentration_percent,
        vial_grams=vials or base.vial_grams,
        factors=tuple(listed),
    )


class InventoryProducts:
    def __init__(
        self,
        channel: grpc.Channel,
        *,
        ttl_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._stub = inv_grpc.InventoryServiceStub(channel)
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, inv.Product | None, ProductSpec | None]] = {}
        self._lock = threading.Lock()

    def get(self, product_id: str) -> inv.Product | None:
        """The product, or None when inventory says it does not exist."""
        return self._entry(product_id)[1]

    def spec(self, product_id: str) -> ProductSpec | None:
        """The product as dosing sees it, or None when it does not exist."""
        return self._entry(product_id)[2]

    def _entry(self, product_id: str) -> tuple[float, inv.Product | None, ProductSpec | None]:
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(product_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit
        try:
            product: inv.Product | None = self._stub.GetProduct(
                inv.GetProductRequest(id=product_id), timeout=self._timeout
            ).product
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                product = None
            else:
                raise Unavailable(
                    f"the inventory service could not be asked for product {product_id!r} "
                    f"({code.name}); try again shortly",
                    metadata={"peer": "inventory"},
                ) from error
        entry = (now, product, None if product is None else product_spec(product))
        with self._lock:
            self._cache[product_id] = entry
        return entry

    def forget(self) -> None:
        """Drop every cached answer: the next read asks inventory again."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        self._channel.close()

    def sc(self, product_id: str) -> ScProduct | None:
        """The product as the SC rules see it, or None when it does not exist or is inactive."""
        product = self.get(product_id)
        return None if product is None or not product.active else sc_product(product)

    def exists(self, product_id: str) -> bool:
        product = self.get(product_id)
        return product is not None and product.active
