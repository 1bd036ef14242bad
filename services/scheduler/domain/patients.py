"""Patients and their dated body measurements.

Measurement bands (docs/clinical-rules.md#validation-bands): weight 2–400 kg, height 40–250 cm.
Dosing uses the latest measurement on or before the dosing date, so a later weigh-in never
changes a past calculation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.common.errors import Violations

WEIGHT_KG_RANGE = (Decimal("2"), Decimal("400"))  # docs/clinical-rules.md#validation-bands
HEIGHT_CM_RANGE = (Decimal("40"), Decimal("250"))  # docs/clinical-rules.md#validation-bands


class SexAtBirth(StrEnum):
    FEMALE = "FEMALE"
    MALE = "MALE"


@dataclass(frozen=True)
class Patient:
    id: str
    organisation_id: str
    mrn: str
    given_name: str
    family_name: str
    birth_date: dt.date
    sex_at_birth: SexAtBirth
    notify_subscriber_id: str = ""


@dataclass(frozen=True)
class BodyMeasurement:
    id: str
    patient_id: str
    measured_on: dt.date
    weight_kg: Decimal
    height_cm: Decimal
    pregnant: bool = False


def validate_patient(patient: Patient, today: dt.date, prefix: str = "patient") -> Violations:
    v = Violations()
    for name in ("organisation_id", "mrn", "family_name"):
        if not str(getattr(patient, name)).strip():
            v.add(f"{prefix}.{name}", "is required")
    if patient.birth_date > today:
        v.add(f"{prefix}.birth_date", f"{patient.birth_date} is in the future")
    return v


def validate_measurement(
    measurement: BodyMeasurement, birth_date: dt.date, today: dt.date, prefix: str = "measurement"
) -> Violations:
    v = Violations()
    for name, value, (low, high), unit in (
        ("weight_kg", measurement.weight_kg, WEIGHT_KG_RANGE, "kg"),
        ("height_cm", measurement.height_cm, HEIGHT_CM_RANGE, "cm"),
    ):
        if not low <= value <= high:
            v.add(
                f"{prefix}.{name}",
                f"{value} {unit} is outside {low}–{high} {unit} "
                "(docs/clinical-rules.md#validation-bands)",
            )
    if measurement.measured_on > today:
        v.add(f"{prefix}.measured_on", f"{measurement.measured_on} is in the future")
    if measurement.measured_on < birth_date:
        v.add(f"{prefix}.measured_on", "is before the patient's birth date")
    return v


def latest_on_or_before(
    measurements: Iterable[BodyMeasurement], day: dt.date
) -> BodyMeasurement | None:
    """The measurement dosing uses for ``day`` (ties on a date: the last recorded wins)."""
    eligible = [m for m in measurements if m.measured_on <= day]
    if not eligible:
        return None
    return max(eligible, key=lambda m: (m.measured_on, m.id))
