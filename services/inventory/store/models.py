"""Inventory tables. A product's nested label data (presentations, rate schedules, storage,
conversion factors, sources) is one JSON document: it is read and written whole, never
queried by part, and keeping it together keeps a product version coherent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import DecimalText, UtcDateTime
from services.common.jobstore import define_job_table
from services.common.outbox import define_outbox_table
from services.common.store_base import define_request_tables, service_metadata


class Base(DeclarativeBase):
    metadata = service_metadata()


idempotency_keys, audit_tables = define_request_tables(Base.metadata, "inventory")
outbox = define_outbox_table(Base.metadata, "inventory")
job_table = define_job_table(Base.metadata, "inventory")


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
        # a reservation's read of promisable lots walks this in allocation order, a few lots
        # of each vial size, whatever the number of lots (store/reservations.py, promisable)
        Index(
            "ix_lots_available",
            "site_id",
            "product_id",
            "presentation_grams",
            "expiry_date",
            postgresql_where=text("state = 'AVAILABLE'"),
            sqlite_where=text("state = 'AVAILABLE'"),
        ),
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
    storage_unit_id: Mapped[str] = mapped_column(String(40), default="")
    # Projections of the ledger, updated with every movement in its transaction (the lot row
    # is locked first); ReconcileStock proves they equal the sums over stock_movements.
    on_hand_vials: Mapped[int] = mapped_column(Integer, default=0)
    reserved_vials: Mapped[int] = mapped_column(Integer, default=0)
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
    # grams: what the movement means in product: vials × size, or for a dispense the grams
    # given and for the waste of an opened vial the grams thrown away.
    grams: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(0))
    reservation_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    # reference: the purchase order, transfer or recall the movement belongs to.
    reference: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class StockSiteRow(Base):
    """A site the inventory keeps stock for (the scheduler's site id). Every write at a site
    needs its stock site, so the stock site's organisation is the organisation of every row
    at the site: lots, movements, reservations, administrations, forecasts, policies and
    orders (docs/security.md, "Scope"). Sites created before scoping have "" (nobody): only
    our services see them until an operator assigns them (docs/operations.md)."""

    __tablename__ = "stock_sites"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organisation_id: Mapped[str] = mapped_column(String(100), server_default="", index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    expiry_check_time: Mapped[str] = mapped_column(String(5))  # HH:MM local
    expiry_warning_days: Mapped[list[int]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class StorageUnitRow(Base):
    __tablename__ = "storage_units"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("stock_sites.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    storage: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ReservationRow(Base):
    """Vials set aside for one appointment. Grams are kept as integer milligrams so that the
    forecast can sum thousands of them in SQL."""

    __tablename__ = "reservations"
    __table_args__ = (
        Index("ix_reservations_site_product_day", "site_id", "product_id", "needed_on"),
        Index("ix_reservations_state_day", "state", "needed_on"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    appointment_id: Mapped[str] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str] = mapped_column(String(40))
    patient_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    product_id: Mapped[str] = mapped_column(String(40))
    alternative_product_ids: Mapped[list[str]] = mapped_column(JSON)
    grams_mg: Mapped[int] = mapped_column(BigInteger)
    rounding_band_percent: Mapped[Decimal] = mapped_column(DecimalText)
    needed_on: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16))
    allocated_product_id: Mapped[str] = mapped_column(String(40), default="")
    allocated_mg: Mapped[int] = mapped_column(BigInteger, default=0)
    at_risk_reason: Mapped[str] = mapped_column(String(1000), default="")
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ReservationLineRow(Base):
    __tablename__ = "reservation_lines"
    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id"), primary_key=True)
    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"), primary_key=True, index=True)
    vials: Mapped[int] = mapped_column(Integer)


class AdministrationRow(Base):
    """The trace a recall follows: which patient got how much of which lot, when."""

    __tablename__ = "administrations"
    __table_args__ = (
        Index("ix_administrations_product_lot", "product_id", "lot_number"),
        Index("ix_administrations_site_time", "site_id", "administered_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    reservation_id: Mapped[str] = mapped_column(String(40), index=True)
    patient_id: Mapped[str] = mapped_column(String(128))
    appointment_id: Mapped[str] = mapped_column(String(128))
    site_id: Mapped[str] = mapped_column(String(40))
    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"))
    product_id: Mapped[str] = mapped_column(String(40))
    lot_number: Mapped[str] = mapped_column(String(40))
    vials: Mapped[int] = mapped_column(Integer)
    grams_administered: Mapped[Decimal] = mapped_column(DecimalText)
    grams_wasted: Mapped[Decimal] = mapped_column(DecimalText)
    unit_cost: Mapped[Decimal] = mapped_column(DecimalText)
    currency: Mapped[str] = mapped_column(String(3))
    presentation_grams: Mapped[Decimal] = mapped_column(DecimalText)
    administered_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class DemandForecastRow(Base):
    __tablename__ = "demand_forecasts"
    site_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    grams_mg: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ReorderPolicyRow(Base):
    __tablename__ = "reorder_policies"
    site_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), primary_key=True)
    lead_time_days: Mapped[int] = mapped_column(Integer)
    safety_stock_grams: Mapped[Decimal] = mapped_column(DecimalText)
    review_period_days: Mapped[int] = mapped_column(Integer)
    order_presentation_grams: Mapped[Decimal] = mapped_column(DecimalText)
    case_vials: Mapped[int] = mapped_column(Integer)
    maximum_grams: Mapped[Decimal] = mapped_column(DecimalText)
    revision: Mapped[int] = mapped_column(default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class PurchaseOrderRow(Base):
    __tablename__ = "purchase_orders"
    __table_args__ = (Index("ix_purchase_orders_site_state", "site_id", "state"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(40))
    supplier: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(24))
    expected_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    reference: Mapped[str] = mapped_column(String(200), default="")
    cancel_reason: Mapped[str] = mapped_column(String(1000), default="")
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class PurchaseOrderLineRow(Base):
    __tablename__ = "purchase_order_lines"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    purchase_order_id: Mapped[str] = mapped_column(ForeignKey("purchase_orders.id"), index=True)
    line_number: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    presentation_grams: Mapped[Decimal] = mapped_column(DecimalText)
    vials_ordered: Mapped[int] = mapped_column(Integer)
    vials_received: Mapped[int] = mapped_column(Integer, default=0)
    unit_cost: Mapped[Decimal] = mapped_column(DecimalText)
    currency: Mapped[str] = mapped_column(String(3))
