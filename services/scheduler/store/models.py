"""Scheduler tables. Plans are versioned: the plan row points at its current version, and every
version's full specification is kept so a calculation can name (and be re-run on) the version
it used."""

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


idempotency_keys = define_idempotency_table(Base.metadata, "scheduler")


class Revisioned:
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)


class SiteRow(Revisioned, Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organisation_id: Mapped[str] = mapped_column(String(100), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    # [[iso_weekday, "HH:MM:SS", "HH:MM:SS"], ...] in the site's local time
    opening_hours: Mapped[list[Any]] = mapped_column(JSON, default=list)
    closure_dates: Mapped[list[str]] = mapped_column(JSON, default=list)


class ChairRow(Revisioned, Base):
    __tablename__ = "chairs"
    __table_args__ = (UniqueConstraint("site_id", "display_name", name="uq_chairs_site_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class PatientRow(Revisioned, Base):
    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("organisation_id", "mrn", name="uq_patients_organisation_mrn"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organisation_id: Mapped[str] = mapped_column(String(100))
    mrn: Mapped[str] = mapped_column(String(100))
    given_name: Mapped[str] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[dt.date] = mapped_column(Date)
    sex_at_birth: Mapped[str] = mapped_column(String(16))
    notify_subscriber_id: Mapped[str] = mapped_column(String(100), default="")


class MeasurementRow(Base):
    __tablename__ = "measurements"
    # dosing asks for "the latest measurement of this patient on or before a date"
    __table_args__ = (Index("ix_measurements_patient_day", "patient_id", "measured_on", "id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    measured_on: Mapped[dt.date] = mapped_column(Date)
    weight_kg: Mapped[Decimal] = mapped_column(DecimalText)
    height_cm: Mapped[Decimal] = mapped_column(DecimalText)
    pregnant: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class PlanRow(Revisioned, Base):
    __tablename__ = "therapy_plans"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    current_version: Mapped[int] = mapped_column(Integer)


class PlanVersionRow(Base):
    __tablename__ = "therapy_plan_versions"
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The whole plan specification as the domain serialises it (services.scheduler.store.codec).
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
