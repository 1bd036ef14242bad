"""Infusion time and chair time (docs/clinical-rules.md#infusion-volume, #infusion-time,
#chair-time).

volume mL = grams × 100 / concentration %. The label's rate steps are held for their minutes
(30 when the label gives none), the last step runs until the volume is given, and a step above
the patient's maximum rate is replaced by that maximum. Arithmetic is exact (fractions); only
the total is rounded up to the whole minute.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

DEFAULT_STEP_MINUTES = 30  # docs/clinical-rules.md#infusion-time
DEFAULT_PRE_INFUSION_MINUTES = 30  # premedication: docs/clinical-rules.md#chair-time
# docs/clinical-rules.md#chair-time: first infusion, product switch or gap over 8 weeks
LONG_OBSERVATION_MINUTES = 60
SHORT_OBSERVATION_MINUTES = 15  # docs/clinical-rules.md#chair-time: otherwise
LONG_GAP = dt.timedelta(weeks=8)  # docs/clinical-rules.md#chair-time
# docs/clinical-rules.md#chair-time: bookings round chair minutes up to the slot granularity
SLOT_MINUTES = 15


class RateUnit(StrEnum):
    ML_PER_KG_H = "ML_PER_KG_H"
    MG_PER_KG_MIN = "MG_PER_KG_MIN"
    ML_PER_H = "ML_PER_H"  # absolute, per infusion site


@dataclass(frozen=True)
class RateStepSpec:
    rate: Decimal
    unit: RateUnit
    minutes: int | None = None


@dataclass(frozen=True)
class StepFollowed:
    rate_ml_per_kg_h: Decimal
    rate_ml_per_h: Decimal
    minutes: Fraction
    volume_ml: Fraction
    capped: bool


@dataclass(frozen=True)
class InfusionTime:
    volume_ml: Fraction
    steps: tuple[StepFollowed, ...]
    minutes: int


def volume_ml(grams: Decimal, concentration_percent: Decimal) -> Fraction:
    """docs/clinical-rules.md#infusion-volume: 10 % → 10 mL/g, 5 % → 20 mL/g, 20 % → 5 mL/g."""
    return Fraction(grams) * 100 / Fraction(concentration_percent)


def _per_kg_h(
    step: RateStepSpec, concentration_percent: Decimal, dosing_kg: Decimal, sites: int
) -> Fraction:
    rate = Fraction(step.rate)
    if step.unit is RateUnit.ML_PER_KG_H:
        return rate
    if step.unit is RateUnit.MG_PER_KG_MIN:
        # mg/kg/min × 60 min/h ÷ (mg per mL = concentration % × 10); at 10 %: × 0.6
        # (docs/clinical-rules.md#infusion-volume)
        return rate * 60 / (Fraction(concentration_percent) * 10)
    return rate * sites / Fraction(dosing_kg)


def infusion_time(
    grams: Decimal,
    concentration_percent: Decimal,
    steps: tuple[RateStepSpec, ...],
    dosing_kg: Decimal,
    max_rate_ml_per_kg_h: Decimal | None = None,
    sites: int = 1,
) -> InfusionTime:
    if not steps:
        raise ValueError("a rate schedule needs at least one step")
    total = volume_ml(grams, concentration_percent)
    kg = Fraction(dosing_kg)
    cap = None if max_rate_ml_per_kg_h is None else Fraction(max_rate_ml_per_kg_h)
    remaining = total
    followed: list[StepFollowed] = []
    elapsed = Fraction(0)
    for index, step in enumerate(steps):
        per_kg = _per_kg_h(step, concentration_percent, dosing_kg, sites)
        capped = cap is not None and per_kg > cap
        if capped:
            assert cap is not None
            per_kg = cap
        per_hour = per_kg * kg
        hold = Fraction(step.minutes or DEFAULT_STEP_MINUTES)
        last = index == len(steps) - 1
        can_give = per_hour * hold / 60
        if last or remaining <= can_give:
            minutes = remaining / per_hour * 60
            given = remaining
        else:
            minutes, given = hold, can_give
        followed.append(StepFollowed(_dec(per_kg), _dec(per_hour), minutes, given, capped))
        elapsed += minutes
        remaining -= given
        if remaining <= 0:
            break
    return InfusionTime(total, tuple(followed), math.ceil(elapsed))


def _dec(value: Fraction) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.001"))


@dataclass(frozen=True)
class ChairTime:
    pre_minutes: int
    infusion_minutes: int
    observation_minutes: int
    chair_minutes: int
    booked_minutes: int
    observation_reason: str


def observation_minutes(
    product_id: str,
    dosing_date: dt.date,
    last_infusion_date: dt.date | None,
    last_product_id: str,
    override: int | None = None,
) -> tuple[int, str]:
    """docs/clinical-rules.md#chair-time (from the EU SmPC wording): 60 min after a first
    infusion, a switch of product or a gap over 8 weeks; otherwise 15."""
    if override is not None:
        return override, f"plan sets {override} min observation"
    if last_infusion_date is None:
        return (
            LONG_OBSERVATION_MINUTES,
            "first infusion on record: 60 min observation (docs/clinical-rules.md#chair-time)",
        )
    if last_product_id and last_product_id != product_id:
        return (
            LONG_OBSERVATION_MINUTES,
            "product switch: 60 min observation (docs/clinical-rules.md#chair-time)",
        )
    gap = dosing_date - last_infusion_date
    if gap > LONG_GAP:
        return (
            LONG_OBSERVATION_MINUTES,
            f"{gap.days}-day gap > 8 weeks: 60 min (docs/clinical-rules.md#chair-time)",
        )
    return (
        SHORT_OBSERVATION_MINUTES,
        f"{gap.days}-day gap, same product: 15 min (docs/clinical-rules.md#chair-time)",
    )


def chair_time(
    pre_minutes: int, infusion_minutes: int, observation: tuple[int, str], slot: int = SLOT_MINUTES
) -> ChairTime:
    minutes = pre_minutes + infusion_minutes + observation[0]
    booked = -(-minutes // slot) * slot
    return ChairTime(pre_minutes, infusion_minutes, observation[0], minutes, booked, observation[1])
