"""CalculateDose's answer: the domain's DoseResult as a DoseCalculation message."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import decimal_str, from_date
from services.scheduler.api.resources import enum_out
from services.scheduler.domain.dosing import DoseResult
from services.scheduler.domain.due import CourseKind

COURSE_IN = {
    pb.COURSE_KIND_MAINTENANCE: CourseKind.MAINTENANCE,
    pb.COURSE_KIND_INDUCTION: CourseKind.INDUCTION,
}
_COURSE_OUT = {v: k for k, v in COURSE_IN.items()}


def _fraction_str(value: Fraction, places: str = "0.1") -> str:
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return decimal_str(exact.quantize(Decimal(places), ROUND_HALF_UP))


_DOSE_MEMO: dict[int, tuple[DoseResult, pb.DoseCalculation]] = {}
_DOSE_MEMO_LIMIT = 4096


def dose_out(result: DoseResult) -> pb.DoseCalculation:
    """Memoised per result object: Doses hands back the same object for the same inputs,
    and the entry pins it, so its id cannot be reused while the entry lives."""
    entry = _DOSE_MEMO.get(id(result))
    if entry is not None and entry[0] is result:
        return entry[1]
    if len(_DOSE_MEMO) >= _DOSE_MEMO_LIMIT:
        _DOSE_MEMO.clear()
    message = _translate_dose(result)
    _DOSE_MEMO[id(result)] = (result, message)
    return message


def _translate_dose(result: DoseResult) -> pb.DoseCalculation:
    w = result.weight
    ml_per_gram = Decimal(100) / result.product.concentration_percent
    sizes_ml = dict(result.product.presentations)
    days = []
    for d in result.days:
        day = pb.DoseDay(
            day=d.day,
            date=from_date(d.date),
            raw_grams=decimal_str(d.raw_grams.quantize(Decimal("0.01"), ROUND_HALF_UP)),
            rounded_grams=decimal_str(d.vials.dose_grams),
            vials=[
                pb.VialCount(
                    grams=decimal_str(size),
                    ml=decimal_str(sizes_ml.get(size, size * ml_per_gram)),
                    count=count,
                )
                for size, count in d.vials.vials
            ],
            expected_waste_grams=decimal_str(d.vials.waste_grams),
        )
        if d.infusion is not None and d.chair is not None:
            day.volume_ml = _fraction_str(d.infusion.volume_ml)
            day.rate_steps.extend(
                pb.RateStep(
                    rate_ml_per_kg_h=decimal_str(s.rate_ml_per_kg_h),
                    rate_ml_per_h=decimal_str(s.rate_ml_per_h),
                    minutes=math.ceil(s.minutes),
                    volume_ml=_fraction_str(s.volume_ml),
                    capped_by_patient_maximum=s.capped,
                )
                for s in d.infusion.steps
            )
            day.infusion_minutes = d.infusion.minutes
            day.pre_infusion_minutes = d.chair.pre_minutes
            day.observation_minutes = d.chair.observation_minutes
            day.chair_minutes = d.chair.chair_minutes
            day.booked_chair_minutes = d.chair.booked_minutes
        else:
            day.volume_ml = decimal_str(
                (d.vials.dose_grams * ml_per_gram).quantize(Decimal("0.1"), ROUND_HALF_UP)
            )
        days.append(day)
    return pb.DoseCalculation(
        therapy_plan_id=result.plan_id,
        patient_id=result.measurement.patient_id,
        plan_version=result.plan_version,
        product_id=result.product.id,
        product_brand=result.product.brand,
        course=_COURSE_OUT[result.course],
        dosing_weight=pb.DosingWeight(
            dosing_weight_kg=decimal_str(w.dosing_kg),
            policy_applied=enum_out(w.policy_applied, pb.WeightPolicy),
            policy_requested=enum_out(w.policy_requested, pb.WeightPolicy),
            actual_weight_kg=decimal_str(w.actual_kg),
            ideal_weight_kg=decimal_str(w.ideal_kg),
            adjusted_weight_kg=decimal_str(w.adjusted_kg),
            bmi=decimal_str(w.bmi),
            height_cm=decimal_str(result.measurement.height_cm),
            measured_on=from_date(result.measurement.measured_on),
            reason=w.reason,
        ),
        days=days,
        total_grams=decimal_str(result.total_grams),
        rules_applied=list(result.rules_applied),
        rationale=list(result.rationale),
    )
