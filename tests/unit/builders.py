"""Domain objects for unit tests: a typical MMN plan (1 g/kg every 4 weeks,
docs/clinical-rules.md#regimen), and a London appointment on Tuesday 1 Dec 2026, 09:00–11:00
GMT (= UTC in winter), booked or held on 20 Nov."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from services.scheduler.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Placement,
    timing,
)
from services.scheduler.domain.due import CourseKind
from services.scheduler.domain.plans import DoseBasis, Indication, Route, TherapyPlan

LONDON = ZoneInfo("Europe/London")
DAY = dt.date(2026, 12, 1)
BOOKED_AT = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)


def plan(**overrides: object) -> TherapyPlan:
    fields: dict[str, object] = dict(
        id="plan",
        patient_id="pt",
        site_id="s",
        indication=Indication.MMN,
        route=Route.IV,
        product_id="gammagard",
        dose_basis=DoseBasis.G_PER_KG,
        maintenance_dose=Decimal(1),
        interval_days=28,
        start_date=dt.date(2026, 12, 1),
    )
    fields.update(overrides)
    return TherapyPlan(**fields)  # type: ignore[arg-type]


def placement(day: dt.date = DAY, minute: int = 9 * 60, **overrides: object) -> Placement:
    """Two chair hours from ``minute`` on ``day`` (09:00 on 1 Dec) at site-1, chair-1."""
    fields: dict[str, object] = dict(
        site_id="site-1",
        patient_id="patient-1",
        plan_id="plan-1",
        plan_version=1,
        chair_id="chair-1",
        local_date=day,
        timing=timing(day, minute, 120, LONDON),
        chair_minutes=120,
        course=CourseKind.MAINTENANCE,
        course_day=0,
        due_date=DAY,
        dose_grams=Decimal("30"),
        product_id="product-1",
    )
    fields.update(overrides)
    return Placement(**fields)  # type: ignore[arg-type]


def booked(appointment_id: str = "a-1") -> Appointment:
    return Appointment.placed(appointment_id, placement(), AppointmentStatus.BOOKED, BOOKED_AT)[0]


def held(expires: dt.datetime, appointment_id: str = "h-1") -> Appointment:
    """A hold made at BOOKED_AT that lapses at ``expires``."""
    hold = placement(hold_expires_at=expires)
    return Appointment.placed(appointment_id, hold, AppointmentStatus.PENDING, BOOKED_AT)[0]
