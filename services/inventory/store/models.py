"""Inventory tables. A product's nested label data (presentations, rate schedules, storage,
conversion factors, sources) is one JSON document: it is read and written whole, never
queried by part, and keeping it together keeps a product version coherent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, MetaData, String
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
