"""Dosing weight (docs/clinical-rules.md#ideal-body-weight, #adjusted-body-weight,
#weight-precision, #dosing-weight-policy, #rate-per-kg).

Weights are truncated to 0.1 kg at each step, which is what the calculator behind the worked example
of docs/clinical-rules.md#weight-precision shows: a 100 kg man of 175 cm has an exact Devine weight
of 70.46 kg, shown as IBW 70.4 kg (rounding would give 70.5), and AdjBW 70.4 + 0.4 × 29.6 = 82.24,
shown as 82.2 kg. The adjusted weight is computed from the shown ideal weight so a pharmacist can
reproduce it from the printed figures.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.scheduler.domain.patients import SexAtBirth
from services.scheduler.domain.plans import WeightPolicy

# docs/clinical-rules.md#ideal-body-weight (BloodSTAR conversion)
INCHES_PER_CM = Decimal("0.393701")
# docs/clinical-rules.md#ideal-body-weight
DEVINE_BASE_KG = {SexAtBirth.MALE: Decimal("50"), SexAtBirth.FEMALE: Decimal("45.5")}
DEVINE_KG_PER_INCH_OVER_60 = Decimal("2.3")  # docs/clinical-rules.md#ideal-body-weight
# docs/clinical-rules.md#adjusted-body-weight: IBW + 0.4 × (actual − IBW)
ADJUSTMENT_FACTOR = Decimal("0.4")
BMI_TRIGGER = Decimal("30")  # Ontario trigger: docs/clinical-rules.md#dosing-weight-policy
ADULT_AGE = 18  # Australian exclusion: docs/clinical-rules.md#dosing-weight-policy
MIN_HEIGHT_CM = Decimal("152")  # Australian exclusion: docs/clinical-rules.md#dosing-weight-policy
KG = Decimal("0.1")


def round_kg(value: Decimal) -> Decimal:
    """Truncate to 0.1 kg (see the module docstring for why not round)."""
    return value.quantize(KG, rounding=ROUND_DOWN)


def ideal_body_weight(sex: SexAtBirth, height_cm: Decimal) -> Decimal:
    """Devine: male 50 + 2.3 × (in − 60), female 45.5 + 2.3 × (in − 60)
    (docs/clinical-rules.md#ideal-body-weight)."""
    inches = height_cm * INCHES_PER_CM
    return round_kg(DEVINE_BASE_KG[sex] + DEVINE_KG_PER_INCH_OVER_60 * (inches - 60))


def adjusted_body_weight(ideal_kg: Decimal, actual_kg: Decimal) -> Decimal:
    """IBW + 0.4 × (actual − IBW) (docs/clinical-rules.md#adjusted-body-weight)."""
    return round_kg(ideal_kg + ADJUSTMENT_FACTOR * (actual_kg - ideal_kg))


def body_mass_index(weight_kg: Decimal, height_cm: Decimal) -> Decimal:
    metres = height_cm / 100
    return weight_kg / (metres * metres)


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class DosingWeight:
    dosing_kg: Decimal
    policy_requested: WeightPolicy
    policy_applied: WeightPolicy
    actual_kg: Decimal
    ideal_kg: Decimal
    adjusted_kg: Decimal
    bmi: Decimal
    reason: str


def dosing_weight(
    policy: WeightPolicy,
    sex: SexAtBirth,
    birth_date: dt.date,
    dosing_date: dt.date,
    weight_kg: Decimal,
    height_cm: Decimal,
    pregnant: bool,
) -> DosingWeight:
    actual = round_kg(weight_kg)
    ideal = ideal_body_weight(sex, height_cm)
    adjusted = adjusted_body_weight(ideal, actual)
    bmi_exact = body_mass_index(weight_kg, height_cm)
    bmi = bmi_exact.quantize(KG, rounding=ROUND_HALF_UP)
    age = age_on(birth_date, dosing_date)
    figures = f"actual {actual} kg, ideal {ideal} kg, adjusted {adjusted} kg, BMI {bmi}"

    def result(applied: WeightPolicy, kg: Decimal, why: str) -> DosingWeight:
        if kg <= 0:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "DOSING_WEIGHT_UNDEFINED",
                        "dosing_weight",
                        f"the {applied.value.lower()} weight is {kg} kg for a height of "
                        f"{height_cm} cm: Devine is not defined this short; use ACTUAL",
                    )
                ]
            )
        return DosingWeight(kg, policy, applied, actual, ideal, adjusted, bmi, why)

    if policy is WeightPolicy.ACTUAL:
        return result(WeightPolicy.ACTUAL, actual, f"plan fixes actual weight ({figures})")
    if policy is WeightPolicy.IDEAL:
        return result(
            WeightPolicy.IDEAL,
            ideal,
            f"plan fixes ideal weight, docs/clinical-rules.md#ideal-body-weight ({figures})",
        )
    if policy is WeightPolicy.ADJUSTED:
        return result(
            WeightPolicy.ADJUSTED,
            adjusted,
            f"plan fixes adjusted weight, docs/clinical-rules.md#adjusted-body-weight ({figures})",
        )
    checks = [
        (bmi_exact > BMI_TRIGGER, f"BMI {bmi} {'>' if bmi_exact > BMI_TRIGGER else '≤'} 30"),
        (age >= ADULT_AGE, f"age {age} {'≥' if age >= ADULT_AGE else '<'} 18"),
        (
            height_cm >= MIN_HEIGHT_CM,
            f"height {height_cm} cm {'≥' if height_cm >= MIN_HEIGHT_CM else '<'} 152",
        ),
        (not pregnant, "not pregnant" if not pregnant else "pregnant"),
        (
            actual > adjusted,
            f"actual {actual} {'>' if actual > adjusted else '≤'} adjusted {adjusted}",
        ),
    ]
    if all(ok for ok, _ in checks):
        why = ", ".join(text for _, text in checks)
        return result(
            WeightPolicy.ADJUSTED,
            adjusted,
            "automatic rule "
            f"docs/clinical-rules.md#dosing-weight-policy: {why}, so the adjusted weight is used",
        )
    failed = ", ".join(text for ok, text in checks if not ok)
    return result(
        WeightPolicy.ACTUAL,
        actual,
        "automatic rule "
        f"docs/clinical-rules.md#dosing-weight-policy: {failed}, "
        f"so the actual weight is used ({figures})",
    )
