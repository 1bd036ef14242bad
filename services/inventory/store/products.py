"""Product rows ↔ catalogue domain objects."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.errors import AlreadyExists, NotFound
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
    StorageKind,
    StorageRule,
    StoredProduct,
)
from services.inventory.store.models import ProductRow


def _s(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _d(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _document(p: Product) -> dict[str, Any]:
    return {
        "presentations": [
            {"grams": _s(x.grams), "ml": _s(x.ml), "gtin": x.gtin} for x in p.presentations
        ],
        "storage": {
            "kind": p.storage.kind.value if p.storage.kind else None,
            "room_temperature_months": p.storage.room_temperature_months,
            "note": p.storage.note,
        },
        "rate_schedules": [
            {
                "indication": r.indication,
                "unit": r.unit.value,
                "steps": [{"rate": _s(s.rate), "minutes": s.minutes} for s in r.steps],
                "source": r.source,
            }
            for r in p.rate_schedules
        ],
        "price_source": p.price_per_gram.source if p.price_per_gram else "",
        "conversion_factors": [
            {
                "indication": c.indication,
                "factor": _s(c.factor),
                "source": c.source,
                "label_version": c.label_version,
            }
            for c in p.conversion_factors
        ],
        "sources": [{"tag": s.tag, "url": s.url} for s in p.sources],
        "note": p.note,
        "sc_administration": None
        if p.sc_administration is None
        else {
            **{
                k: _s(v) if v is not None else None
                for k, v in p.sc_administration.figures().items()
            },
            "max_sites": p.sc_administration.max_sites,
            "source": p.sc_administration.source,
        },
    }


def product_from_row(row: ProductRow) -> StoredProduct:
    doc = row.document
    storage = doc["storage"]
    price = (
        Price(row.price_amount, row.price_currency, doc.get("price_source", ""))
        if row.price_amount is not None
        else None
    )
    product = Product(
        code=row.code,
        brand=row.brand,
        manufacturer=row.manufacturer,
        ig_class=IgClass(row.ig_class),
        concentration_percent=row.concentration_percent,
        routes=tuple(Route(r) for r in row.routes),
        presentations=tuple(
            Presentation(Decimal(x["grams"]), Decimal(x["ml"]), x.get("gtin"))
            for x in doc["presentations"]
        ),
        storage=StorageRule(
            StorageKind(storage["kind"]) if storage.get("kind") else None,
            storage.get("room_temperature_months"),
            storage.get("note", ""),
        ),
        rate_schedules=tuple(
            RateSchedule(
                r["indication"],
                RateUnit(r["unit"]),
                tuple(RateStep(Decimal(s["rate"]), s.get("minutes")) for s in r["steps"]),
                r.get("source", ""),
            )
            for r in doc["rate_schedules"]
        ),
        price_per_gram=price,
        conversion_factors=tuple(
            ConversionFactor(
                c["indication"],
                Decimal(c["factor"]),
                c.get("source", ""),
                c.get("label_version", "current"),
            )
            for c in doc["conversion_factors"]
        ),
        sources=tuple(Source(s["tag"], s["url"]) for s in doc["sources"]),
        note=doc.get("note", ""),
        sc_administration=_sc_of(doc.get("sc_administration")),
    )
    return StoredProduct(row.id, product, row.active, row.revision, row.created_at, row.updated_at)


def _columns(p: Product) -> dict[str, Any]:
    return {
        "code": p.code,
        "brand": p.brand,
        "manufacturer": p.manufacturer,
        "ig_class": p.ig_class.value,
        "concentration_percent": p.concentration_percent,
        "routes": [r.value for r in p.routes],
        "price_amount": p.price_per_gram.amount if p.price_per_gram else None,
        "price_currency": p.price_per_gram.currency if p.price_per_gram else "",
        "document": _document(p),
    }


def _flush(session: Session, code: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:
        raise AlreadyExists(
            "product", code, f"a product with code {code!r} exists", reason="DUPLICATE_PRODUCT_CODE"
        ) from error


def insert_product(
    session: Session, product_id: str, product: Product, active: bool, now: dt.datetime
) -> ProductRow:
    if session.scalar(select(ProductRow.id).where(ProductRow.code == product.code)):
        raise AlreadyExists(
            "product",
            product.code,
            f"a product with code {product.code!r} exists",
            reason="DUPLICATE_PRODUCT_CODE",
        )
    row = ProductRow(
        id=product_id,
        active=active,
        revision=1,
        created_at=now,
        updated_at=now,
        **_columns(product),
    )
    session.add(row)
    _flush(session, product.code)
    return row


def update_product(
    session: Session, row: ProductRow, product: Product, active: bool, now: dt.datetime
) -> ProductRow:
    clash = session.scalar(
        select(ProductRow.id).where(ProductRow.code == product.code, ProductRow.id != row.id)
    )
    if clash:
        raise AlreadyExists(
            "product",
            product.code,
            f"a product with code {product.code!r} exists",
            reason="DUPLICATE_PRODUCT_CODE",
        )
    for key, value in _columns(product).items():
        setattr(row, key, value)
    row.active = active
    row.revision += 1
    row.updated_at = now
    _flush(session, product.code)
    return row


def product_row(session: Session, key: str, *, for_update: bool = False) -> ProductRow:
    """By id, or by code (a human-friendly alias: `GetProduct(id="gammagard-liquid")`)."""
    query = select(ProductRow).where((ProductRow.id == key) | (ProductRow.code == key))
    if for_update:
        query = query.with_for_update()
    row = session.scalar(query) if key else None
    if row is None:
        raise NotFound("product", key)
    return row


def product_row_by_code(session: Session, code: str) -> ProductRow | None:
    return session.scalar(select(ProductRow).where(ProductRow.code == code))


def catalogue_version(connection: Connection) -> tuple[Any, ...]:
    """Changes whenever a product is added or changed (every change bumps its revision)."""
    row = connection.execute(
        select(func.count(), func.coalesce(func.sum(ProductRow.revision), 0)).select_from(
            ProductRow
        )
    ).one()
    return tuple(row)


def all_products(session: Session) -> list[ProductRow]:
    return list(session.scalars(select(ProductRow).order_by(ProductRow.id)))


def _sc_of(sc: dict[str, Any] | None) -> ScAdministration | None:
    if sc is None:
        return None
    return ScAdministration(
        **{name: Decimal(sc[name]) if sc.get(name) is not None else None for name in SC_FIGURES},
        max_sites=sc.get("max_sites"),
        source=sc.get("source", ""),
    )
