"""Inventory tables. A product's nested label data (presentations, rate schedules, storage,
conversion factors, sources) is one JSON document: it is read and written whole, never
queried by part, and keeping it together keeps a product version coherent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import DecimalText, UtcDateTime
from services.common.idempotency import define_idempotency_table


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


idempotency_keys = define_idempotency_table(Base.metadata, "inventory")


class ProductRow(Base):
    __tablename__ = "products"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(100), unique=True)
    brand: Mapped[str] = mapped_column(String(200))
    manufacturer: Mapped[str] = mapped_column(String(200))
    ig_class: Mapped[str] = mapped_column(String(20), index=True)
    concentration_percent: Mapped[Decimal] = mapped_column(DecimalText)
    routes: Mapped[list[str]] = mapped_column(JSON)
    price_amount: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    price_currency: Mapped[str] = mapped_column(String(3), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # presentations, storage, rate_schedules, conversion_factors, sources, note, price_source
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class LotRow(Base):
    """One manufacturer lot of one presentation at one site. Quantities are not stored here:
    they are sums over ``stock_movements``."""

    __tablename__ = "lots"
    __table_args__ = (
        UniqueConstraint(
            "site_id", "product_id", "presentation_grams", "lot_number", name="uq_lots_identity"
        ),
        Index("ix_lots_product_lot_number", "product_id", "lot_number"),
        Index("ix_lots_site_product_expiry", "site_id", "product_id", "expiry_date"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(40))
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    presentation_grams: Mapped[Decimal] = mapped_column(DecimalText)
    gtin: Mapped[str] = mapped_column(String(14), default="")
    lot_number: Mapped[str] = mapped_column(String(40))
    expiry_date: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16))
    unit_cost: Mapped[Decimal] = mapped_column(DecimalText)
    currency: Mapped[str] = mapped_column(String(3))
    supplier: Mapped[str] = mapped_column(String(200), default="")
    purchase_order_id: Mapped[str] = mapped_column(String(40), default="")
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class MovementRow(Base):
    """An immutable ledger entry: rows are inserted, never updated or deleted (a correction is
    a REVERSAL row pointing at the one it undoes)."""

    __tablename__ = "stock_movements"
    __table_args__ = (
        Index("ix_stock_movements_lot", "lot_id", "seq"),
        Index("ix_stock_movements_site", "site_id", "seq"),
    )
    # seq orders the ledger (ids are UUIDv7, but two in one millisecond may tie)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"))
    site_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))
    on_hand_delta: Mapped[int] = mapped_column(Integer)
    reserved_delta: Mapped[int] = mapped_column(Integer, default=0)
    unit_cost: Mapped[Decimal] = mapped_column(DecimalText)
    currency: Mapped[str] = mapped_column(String(3))
    reason_code: Mapped[str] = mapped_column(String(64), default="")
    note: Mapped[str] = mapped_column(String(1000), default="")
    actor: Mapped[str] = mapped_column(String(200), default="")
    request_id: Mapped[str] = mapped_column(String(128), default="")
    reverses_movement_id: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
