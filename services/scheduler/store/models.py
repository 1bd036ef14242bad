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
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.common.db import DecimalText, UtcDateTime
from services.common.jobstore import define_job_table
from services.common.outbox import define_outbox_table
from services.common.store_base import Revisioned, define_request_tables, service_metadata
from services.scheduler.store import due_inputs


class Base(DeclarativeBase):
    metadata = service_metadata()


idempotency_keys, audit_tables = define_request_tables(Base.metadata, "scheduler")


class SiteRow(Revisioned, Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organisation_id: Mapped[str] = mapped_column(String(100), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    # [[iso_weekday, "HH:MM:SS", "HH:MM:SS"], ...] in the site's local time
    opening_hours: Mapped[list[Any]] = mapped_column(JSON, default=list)
    closure_dates: Mapped[list[str]] = mapped_column(JSON, default=list)
    # nurse shifts, ratio, start limit, turnover, grid, hold, holiday calendar (SiteCapacity)
    capacity: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # PlanSchedule's objective weights the site sets (name → points); NULL or {}: defaults
    schedule_objective: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)


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
    # the patient's usual weekday (ISO), start (local minutes) and chair, when set on the plan:
    # scheduling preferences, so on the plan row rather than in its versioned specification
    usual_weekday: Mapped[int | None] = mapped_column(Integer, nullable=True)
    usual_start_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    usual_chair_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


def _due_inputs_of_spec(context: Any) -> str:
    return due_inputs.encode(context.get_current_parameters()["spec"])


class PlanVersionRow(Base):
    __tablename__ = "therapy_plan_versions"
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The whole plan specification as the domain serialises it (services.scheduler.store.codec).
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The due rule's inputs out of ``spec`` (store/due_inputs.py), for the due scan: derived by
    # the default on every insert, so no writer can store a version without them or with
    # others (versions are never updated).
    due_inputs: Mapped[str] = mapped_column(Text, default=_due_inputs_of_spec)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class PlanAuthorisationRow(Revisioned, Base):
    """A payer's prior authorisation of a plan (docs/regimens.md, "Authorisations and payer
    caps"): the period it covers, what it approved, and whether the payer allows going over the
    caps. ``expiry_notice_for`` is the end date an AUTHORISATION_EXPIRING was raised for (a
    changed end date is noticed again)."""

    __tablename__ = "plan_authorisations"
    __table_args__ = (Index("ix_plan_authorisations_active_to", "active", "valid_to"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"), index=True)
    patient_id: Mapped[str] = mapped_column(String(40))  # the plan's (the audit trail names them)
    payer: Mapped[str] = mapped_column(String(200), default="")
    approved_grams: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    approved_doses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date] = mapped_column(Date)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    cap_override_reason: Mapped[str] = mapped_column(String(1000), default="")
    expiry_notice_for: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class PayerCapsRow(Revisioned, Base):
    """A plan's payer quantity caps over rolling 7 and 28 days, and whether its bookings need an
    authorisation (docs/regimens.md, "Authorisations and payer caps")."""

    __tablename__ = "plan_payer_caps"
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(40))  # the plan's (the audit trail names them)
    payer: Mapped[str] = mapped_column(String(200), default="")
    grams_per_7_days: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    grams_per_28_days: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    authorisation_required: Mapped[bool] = mapped_column(Boolean, default=False)


class HomeInfusionRow(Base):
    """A dose given at home (a home-administration plan), recorded with its lots: the due
    list's history beside the fulfilled appointments (docs/regimens.md)."""

    __tablename__ = "home_infusions"
    __table_args__ = (Index("ix_home_infusions_plan_day", "plan_id", "given_on"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"))
    plan_version: Mapped[int] = mapped_column(Integer)
    patient_id: Mapped[str] = mapped_column(String(40))
    site_id: Mapped[str] = mapped_column(String(40))
    given_on: Mapped[dt.date] = mapped_column(Date)
    due_date: Mapped[dt.date] = mapped_column(Date)
    ramp_step: Mapped[int] = mapped_column(Integer, default=0)
    grams_given: Mapped[Decimal] = mapped_column(DecimalText)
    product_id: Mapped[str] = mapped_column(String(40))
    scanned_lots: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ChairBlockRow(Base):
    """A chair out of service between two instants (maintenance)."""

    __tablename__ = "chair_blocks"
    __table_args__ = (Index("ix_chair_blocks_site_start", "site_id", "start_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    chair_id: Mapped[str] = mapped_column(ForeignKey("chairs.id"))
    start_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class AppointmentRow(Revisioned, Base):
    """A hold or booking. The booked wall-clock time (local_date, start_minute) is the truth;
    the instants are derived from it in the site's zone, so a daylight-saving change never
    moves a booking's local time."""

    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointments_site_day", "site_id", "local_date"),
        Index("ix_appointments_patient_day", "patient_id", "local_date"),
        Index("ix_appointments_plan_status", "plan_id", "status"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    patient_id: Mapped[str] = mapped_column(String(40))
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"))
    plan_version: Mapped[int] = mapped_column(Integer)
    chair_id: Mapped[str] = mapped_column(ForeignKey("chairs.id"))
    status: Mapped[str] = mapped_column(String(16))
    local_date: Mapped[dt.date] = mapped_column(Date)
    start_minute: Mapped[int] = mapped_column(Integer)  # local wall-clock minutes
    end_minute: Mapped[int] = mapped_column(Integer)  # local wall clock at start + chair time
    start_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    chair_minutes: Mapped[int] = mapped_column(Integer)
    course: Mapped[str] = mapped_column(String(16))
    course_day: Mapped[int] = mapped_column(Integer, default=0)
    due_date: Mapped[dt.date] = mapped_column(Date)
    series_id: Mapped[str] = mapped_column(String(40), default="")
    dose_grams: Mapped[Decimal] = mapped_column(DecimalText)
    product_id: Mapped[str] = mapped_column(String(40))
    hold_expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    cancel_reason: Mapped[str] = mapped_column(String(1000), default="")
    grams_given: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    actual_start_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    actual_end_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    scanned_lots: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # the inventory's answer to this booking's reservation: "", RESERVED or AT_RISK
    stock_status: Mapped[str] = mapped_column(String(16), default="")
    stock_note: Mapped[str] = mapped_column(String(1000), default="")
    # scheduled at booking, cancelled with it; loaded on access or by selectinload
    reminders: Mapped[list[ReminderRow]] = relationship(
        order_by="(ReminderRow.due_at, ReminderRow.created_at)", back_populates="appointment"
    )


class ReminderRow(Base):
    """One APPOINTMENT_REMINDER a booking scheduled (domain/reminders.py): the reminder job
    raises the SCHEDULED rows whose time has come (indexed on status and time), a cancel or a
    move marks them CANCELLED. The dedupe key is the notification's, so a reminder already
    handed to notify can be cancelled there by key."""

    __tablename__ = "appointment_reminders"
    __table_args__ = (Index("ix_appointment_reminders_status_due", "status", "due_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    appointment_id: Mapped[str] = mapped_column(ForeignKey("appointments.id"), index=True)
    offset_label: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(12))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    appointment: Mapped[AppointmentRow] = relationship(back_populates="reminders")


class BookingLockRow(Base):
    """Once the site-day lock (a row per site and local day, locked FOR UPDATE). The lock is
    now a transaction-level advisory lock on the same site and day (store/appointments.
    lock_days), which writes nothing; the table stays until a migration drops it."""

    __tablename__ = "booking_locks"
    site_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    local_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)


class OutcomeRow(Base):
    """One outcome record of a patient under a plan (domain/regimens/outcomes.py): append-only,
    listed newest first per patient."""

    __tablename__ = "outcome_records"
    __table_args__ = (
        Index("ix_outcome_records_patient_day", "patient_id", "recorded_on", "id"),
        Index("ix_outcome_records_plan_day", "plan_id", "recorded_on"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"))
    appointment_id: Mapped[str] = mapped_column(String(40), default="")
    recorded_on: Mapped[dt.date] = mapped_column(Date)
    measure: Mapped[str] = mapped_column(String(24))
    value: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    hand: Mapped[str] = mapped_column(String(8), default="")
    scale: Mapped[str] = mapped_column(String(8), default="")
    wearing_off_none: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(String(1000), default="")
    recorded_by: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ReviewDecisionRow(Base):
    """An outcome review's decision on a plan (domain/regimens/reviews.py): append-only; the
    next review date is replayed from the plan's start and these."""

    __tablename__ = "review_decisions"
    __table_args__ = (Index("ix_review_decisions_plan_day", "plan_id", "decided_on"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("therapy_plans.id"))
    # the plan's patient, so the audit trail names whose therapy was reviewed
    patient_id: Mapped[str] = mapped_column(String(40))
    plan_version: Mapped[int] = mapped_column(Integer)
    decided_on: Mapped[dt.date] = mapped_column(Date)
    decision: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(1000))
    decided_by: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


# --- notifications -------------------------------------------------------------------------------

# Events owed to notify, written in the transaction that raises them (services.common.outbox).
outbox = define_outbox_table(Base.metadata, "scheduler")
job_table = define_job_table(Base.metadata, "scheduler")


class DueWatchRow(Base):
    """The due-scan's memory (services/scheduler/jobs.py): per active plan, the next instant
    its due state can change without any write to the plan or its appointments — the local
    midnight its next window opens, or a hold's expiry. NULL: only a write can change it. The
    scan reads the plans whose instant has come plus the plans and appointments written since
    its last run, so its cost follows the number due, not the number of plans."""

    __tablename__ = "scheduler_due_watch"
    plan_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_check_at: Mapped[dt.datetime | None] = mapped_column(
        UtcDateTime, nullable=True, index=True
    )
    # when the scan last changed the row (rewriting an unchanged next check costs the first
    # pass a write per watched plan: store/due_watch.py's ``save``)
    checked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class JobMarkRow(Base):
    """When a job last completed a pass (the due-scan's change watermark)."""

    __tablename__ = "scheduler_job_marks"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    mark_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


# The due-scan finds plans and appointments written since its last pass; the reminder and
# missed-infusion jobs read booked appointments by start time.
Index("ix_therapy_plans_updated_at", PlanRow.updated_at)
Index("ix_appointments_updated_at", AppointmentRow.updated_at)
Index("ix_appointments_status_start", AppointmentRow.status, AppointmentRow.start_at)
