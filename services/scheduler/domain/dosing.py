"""CalculateDose: a plan, a patient's measurement and a product → grams, vials, volume, rate
steps and chair minutes per course day, with the rules named and a rationale to check.

Order (each step a named rule of docs/clinical-rules.md#dose-calculation): dosing weight
(#ideal-body-weight, #adjusted-body-weight, #dosing-weight-policy, #rate-per-kg) → raw grams
(g/kg × dosing weight, or fixed grams; an induction course total split equally over its days,
#induction-split) → validation bands (#validation-bands) → rounding into whole vials
(#dose-rounding) → plan's maximum grams per day (#daily-maximum) → volume and rate ramp
(#infusion-volume, #infusion-time) → chair minutes (#chair-time); every # is an anchor of
docs/clinical-rules.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.common.reasons import Rule
from services.scheduler.domain.due import CourseKind
from services.scheduler.domain.infusion import (
    ChairTime,
    InfusionTime,
    RateStepSpec,
    chair_time,
    infusion_time,
    observation_minutes,
)
from services.scheduler.domain.patients import BodyMeasurement, Patient
from services.scheduler.domain.plans import (
    DOSE_G_PER_KG_BAND,
    MAX_G_PER_KG_ONE_DAY,
    DoseBasis,
    TherapyPlan,
)
from services.scheduler.domain.vials import VialChoice, VialSet
from services.scheduler.domain.weight import DosingWeight, dosing_weight

GRAMS = Decimal("0.01")


@dataclass(frozen=True)
class RateSchedule:
    indication: str
    steps: tuple[RateStepSpec, ...]


@dataclass(frozen=True)
class ProductSpec:
    id: str
    brand: str
    concentration_percent: Decimal
    presentations: tuple[tuple[Decimal, Decimal], ...]  # (grams, mL)
    rate_schedules: tuple[RateSchedule, ...] = ()


@dataclass(frozen=True)
class DoseDay:
    day: int
    date: dt.date
    raw_grams: Decimal
    vials: VialChoice
    infusion: InfusionTime | None
    chair: ChairTime | None


@dataclass(frozen=True)
class DoseResult:
    plan_id: str
    plan_version: int
    product: ProductSpec
    course: CourseKind
    measurement: BodyMeasurement
    weight: DosingWeight
    days: tuple[DoseDay, ...]
    rules_applied: tuple[str, ...]
    rationale: tuple[str, ...]

    @property
    def total_grams(self) -> Decimal:
        return sum((d.vials.dose_grams for d in self.days), Decimal(0))


def _rule(rule: Rule, subject: str, text: str) -> FailedPrecondition:
    return FailedPrecondition([PreconditionViolation(rule, subject, text)])


def choose_rate_schedule(product: ProductSpec, indication: str) -> tuple[RateSchedule | None, str]:
    """The label ramp for the plan's indication, else a general one, else the first listed."""
    if not product.rate_schedules:
        return None, f"{product.brand} has no label rate schedule in the catalogue"
    for schedule in product.rate_schedules:
        tokens = {t.strip().upper() for t in schedule.indication.replace(",", " ").split()}
        if indication.upper() in tokens:
            return schedule, f"{product.brand} label ramp for {schedule.indication}"
    for schedule in product.rate_schedules:
        if schedule.indication.strip().lower() == "general":
            return schedule, f"{product.brand} general label ramp (none for {indication})"
    first = product.rate_schedules[0]
    return first, f"{product.brand} ramp for {first.indication} (none listed for {indication})"


def calculate_dose(
    plan: TherapyPlan,
    patient: Patient,
    measurement: BodyMeasurement,
    product: ProductSpec,
    dosing_date: dt.date,
    course: CourseKind,
) -> DoseResult:
    rules: list[str] = []
    why: list[str] = []
    weight = dosing_weight(
        plan.weight_policy,
        patient.sex_at_birth,
        patient.birth_date,
        dosing_date,
        measurement.weight_kg,
        measurement.height_cm,
        measurement.pregnant,
    )
    rules.append(
        f"dosing weight: {weight.policy_requested.value.lower()} "
        "(docs/clinical-rules.md#ideal-body-weight, #adjusted-body-weight, #dosing-weight-policy)"
    )
    why.append(
        f"Dosing weight {weight.dosing_kg} kg from the measurement of "
        f"{measurement.measured_on.isoformat()} ({measurement.weight_kg} kg, "
        f"{measurement.height_cm} cm): {weight.reason}."
    )
    kg = weight.dosing_kg
    if course is CourseKind.INDUCTION:
        if plan.induction is None:
            raise _rule("NO_INDUCTION_COURSE", f"plans/{plan.id}", "the plan has no induction")
        days = plan.induction.days
        total_g_per_kg = plan.induction.total_g_per_kg
        course_raw = total_g_per_kg * kg
        day_raw = course_raw / days
        rules.append(
            "induction split equally over course days, each rounded "
            "(docs/clinical-rules.md#induction-split)"
        )
        why.append(
            f"Induction {total_g_per_kg} g/kg × {kg} kg = {_g(course_raw)} g over {days} "
            f"day(s) = {_g(day_raw)} g a day (docs/clinical-rules.md#induction-split)."
        )
        course_g_per_kg, day_g_per_kg = total_g_per_kg, total_g_per_kg / days
    else:
        days = 1
        if plan.dose_basis is DoseBasis.G_PER_KG:
            day_raw = plan.maintenance_dose * kg
            why.append(f"Maintenance {plan.maintenance_dose} g/kg × {kg} kg = {_g(day_raw)} g.")
        else:
            day_raw = plan.maintenance_dose
            why.append(f"Maintenance fixed dose {_g(day_raw)} g.")
        course_g_per_kg = day_g_per_kg = day_raw / kg
    _check_bands(plan, course_g_per_kg, day_g_per_kg, rules, why)

    vial_set = VialSet(tuple(grams for grams, _ in product.presentations))
    schedule, schedule_text = choose_rate_schedule(product, plan.indication.value)
    observation = observation_minutes(
        product.id,
        dosing_date,
        plan.last_infusion_date,
        plan.last_product_id,
        plan.observation_minutes,
    )
    rules.append(
        f"rounding: {plan.rounding_rule.value.lower()} (docs/clinical-rules.md#dose-rounding)"
    )
    results: list[DoseDay] = []
    for index in range(days):
        choice = vial_set.choose(
            day_raw.quantize(GRAMS, ROUND_HALF_UP), plan.rounding_rule, plan.rounding_band_percent
        )
        if plan.max_grams_per_day is not None and choice.dose_grams > plan.max_grams_per_day:
            raise _rule(
                "MAX_GRAMS_PER_DAY",
                f"plans/{plan.id}",
                f"{_g(choice.dose_grams)} g on one day is more than the plan's maximum of "
                f"{_g(plan.max_grams_per_day)} g: split the course over more days",
            )
        timing: InfusionTime | None = None
        chair: ChairTime | None = None
        if schedule is not None:
            timing = infusion_time(
                choice.dose_grams,
                product.concentration_percent,
                schedule.steps,
                kg,
                plan.max_rate_ml_per_kg_h,
                plan.infusion_sites,
            )
            # Course days after the first follow yesterday's infusion of the same product.
            obs = (
                observation
                if index == 0
                else observation_minutes(
                    product.id,
                    dosing_date + dt.timedelta(days=index),
                    dosing_date + dt.timedelta(days=index - 1),
                    product.id,
                    plan.observation_minutes,
                )
            )
            chair = chair_time(plan.pre_infusion_minutes, timing.minutes, obs)
        results.append(
            DoseDay(
                index + 1, dosing_date + dt.timedelta(days=index), day_raw, choice, timing, chair
            )
        )
    first = results[0]
    why.append(f"{first.vials.explanation} (fewest vials, then larger vials).")
    if schedule is None:
        why.append(f"{schedule_text}: infusion and chair time not computed.")
    else:
        assert first.infusion is not None and first.chair is not None
        rules.append(
            "infusion time: label steps, capped at patient maximum "
            "(docs/clinical-rules.md#infusion-time)"
        )
        rules.append(
            "chair minutes: pre + infusion + observation, slot 15 min "
            "(docs/clinical-rules.md#chair-time)"
        )
        capped = any(s.capped for s in first.infusion.steps)
        given = first.infusion.volume_ml
        volume = _g(Decimal(given.numerator) / given.denominator)
        why.append(
            f"Volume {volume} mL at {_g(product.concentration_percent)} % "
            "(docs/clinical-rules.md#infusion-volume); "
            f"{schedule_text}, {len(first.infusion.steps)} step(s)"
            + (
                f", capped at the patient maximum {plan.max_rate_ml_per_kg_h} mL/kg/h"
                if capped
                else ""
            )
            + f": {first.infusion.minutes} min infusing."
        )
        why.append(
            f"Chair {first.chair.pre_minutes} pre + {first.chair.infusion_minutes} infusion + "
            f"{first.chair.observation_minutes} observation = {first.chair.chair_minutes} min, "
            f"booked as {first.chair.booked_minutes} min; {first.chair.observation_reason}."
        )
    return DoseResult(
        plan_id=plan.id,
        plan_version=plan.version,
        product=product,
        course=course,
        measurement=measurement,
        weight=weight,
        days=tuple(results),
        rules_applied=tuple(rules),
        rationale=tuple(why),
    )


def _check_bands(
    plan: TherapyPlan,
    course_g_per_kg: Decimal,
    day_g_per_kg: Decimal,
    rules: list[str],
    why: list[str],
) -> None:
    """docs/clinical-rules.md#validation-bands: 0.1–2.5 g/kg per course or maintenance infusion,
    at most 2.0 g/kg on one day."""
    low, high = DOSE_G_PER_KG_BAND
    inside = low <= course_g_per_kg <= high and day_g_per_kg <= MAX_G_PER_KG_ONE_DAY
    if inside:
        return
    text = (
        f"{_g(course_g_per_kg)} g/kg per course and {_g(day_g_per_kg)} g/kg on one day are "
        f"outside the {low}–{high} g/kg band or the {MAX_G_PER_KG_ONE_DAY} g/kg daily limit"
    )
    if not plan.override_outside_bands:
        raise _rule(
            "DOSE_BAND", f"plans/{plan.id}", f"{text} (docs/clinical-rules.md#validation-bands)"
        )
    rules.append(
        "dose outside the bands by clinician override (docs/clinical-rules.md#validation-bands)"
    )
    why.append(f"Override: {text}; reason given: {plan.override_reason}.")


@dataclass(frozen=True)
class ScigConversion:
    weekly_grams: Decimal
    rationale: str


def ivig_to_scig_weekly(
    ivig_grams: Decimal, ivig_interval_days: int, factor: Decimal
) -> ScigConversion:
    """docs/clinical-rules.md#sc-conversion: weekly SCIg g = factor × previous IVIg g ÷ weeks
    between IVIg doses (e.g. 1.37 for
    Hizentra and Gammagard SC in PI, 1.30 for Cuvitru and Cutaquig; 1:1 in the MMN trials)."""
    if ivig_grams <= 0 or ivig_interval_days <= 0 or factor <= 0:
        raise ValueError("IVIg grams, interval and factor must be positive")
    weeks = Decimal(ivig_interval_days) / 7
    weekly = factor * ivig_grams / weeks
    text = (
        f"{_g(factor)} × {_g(ivig_grams)} g ÷ {_g(weeks)} weeks = {_g(weekly)} g a week "
        "(docs/clinical-rules.md#sc-conversion)"
    )
    return ScigConversion(weekly, text)


def _g(value: Decimal) -> str:
    """For rationale text: at most two decimals, no trailing zeros."""
    return format(value.quantize(GRAMS, ROUND_HALF_UP).normalize(), "f")
