"""CalculateDose over gRPC returns the hand-worked figures (SQLite and PostgreSQL); the
scheduler reads the product from the inventory service."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.builders import (
    date,
    make_patient,
    make_plan,
    make_site,
    measure,
    plan_message,
    product_id,
)
from tests.integration.conftest import Platform, request_id
from tests.integration.errors import precondition_types


def calculate(p: Platform, plan_id: str, **kw: object) -> pb.DoseCalculation:
    request = pb.CalculateDoseRequest(therapy_plan_id=plan_id, dosing_date=date(2026, 12, 1))
    for key, value in kw.items():
        setattr(request, key, value) if not hasattr(value, "CopyFrom") else getattr(
            request, key
        ).CopyFrom(value)
    return p.scheduler.CalculateDose(request).calculation


def test_70kg_1g_per_kg_gammagard_mmn(platform: Platform) -> None:
    site = make_site(platform)
    patient = make_patient(platform, sex=pb.SEX_AT_BIRTH_FEMALE)
    measure(platform, patient.id, weight="70", height="165")  # BMI 25.7: actual weight
    plan = make_plan(
        platform,
        plan_message(
            patient.id,
            site.id,
            product_id(platform, "gammagard-liquid"),
        ),
    )
    calc = calculate(platform, plan.id)
    # 1 g/kg × 70 kg = 70 g = 2 × 30 g + 1 × 10 g (docs/clinical-rules.md#dose-rounding example),
    # 700 mL at 10 %.
    assert calc.dosing_weight.dosing_weight_kg == "70"
    assert calc.dosing_weight.policy_applied == pb.WEIGHT_POLICY_ACTUAL
    [day] = calc.days
    assert day.rounded_grams == "70" and day.expected_waste_grams == "0"
    assert [(v.grams, v.count) for v in day.vials] == [("30", 2), ("10", 1)]
    assert day.volume_ml == "700"
    # Ramp 0.5,1,2,3,4,5 mL/kg/h × 30 min at 70 kg = 17.5+35+70+105+140+175 = 542.5 mL in
    # 180 min; 157.5 mL left at 5.4 × 70 = 378 mL/h = 25 min → 205 min
    # (docs/clinical-rules.md#infusion-time-examples: 3.4 h).
    assert day.infusion_minutes == 205
    assert [s.rate_ml_per_h for s in day.rate_steps] == [
        "35",
        "70",
        "140",
        "210",
        "280",
        "350",
        "378",
    ]
    # 30 pre + 205 + 60 observation (first infusion on record) = 295 → booked 300.
    assert (day.chair_minutes, day.booked_chair_minutes) == (295, 300)
    assert calc.plan_version == 1 and calc.product_brand == "Gammagard Liquid"
    assert any("docs/clinical-rules.md#dose-rounding" in line for line in calc.rationale)


def test_obese_patient_automatic_policy_two_day_induction(platform: Platform) -> None:
    # docs/clinical-rules.md#weight-precision: a 100 kg man, 175 cm (BMI 32.7) → IBW 70.4 kg, AdjBW
    # 82.2 kg;
    # 2 g/kg → 164.4 g, 82.2 g a day over 2 days.
    site = make_site(platform)
    patient = make_patient(platform, sex=pb.SEX_AT_BIRTH_MALE, birth=date(1980, 6, 1))
    measure(platform, patient.id, weight="100", height="175")
    plan = make_plan(
        platform,
        plan_message(
            patient.id,
            site.id,
            product_id(platform, "gammagard-liquid"),
            induction=pb.InductionCourse(total_g_per_kg="2", days=2),
        ),
    )
    calc = calculate(platform, plan.id)
    w = calc.dosing_weight
    assert (w.ideal_weight_kg, w.adjusted_weight_kg, w.dosing_weight_kg) == ("70.4", "82.2", "82.2")
    assert w.policy_applied == pb.WEIGHT_POLICY_ADJUSTED and w.bmi == "32.7"  # 100 / 1.75² = 32.65
    assert calc.course == pb.COURSE_KIND_INDUCTION
    assert [d.raw_grams for d in calc.days] == ["82.2", "82.2"]
    # nearest whole-vial amount: 82 g (0.2 g away) beats 82.5 g (0.3 g away);
    # 82 = 2 × 30 + 1 × 20 + 2 × 1 (5 vials, the fewest).
    assert [d.rounded_grams for d in calc.days] == ["82", "82"]
    assert [(v.grams, v.count) for v in calc.days[0].vials] == [("30", 2), ("20", 1), ("1", 2)]
    assert calc.total_grams == "164"
    assert [d.date for d in calc.days] == [date(2026, 12, 1), date(2026, 12, 2)]
    # day 2 follows day 1's infusion of the same product: 15 min observation, not 60
    assert [d.observation_minutes for d in calc.days] == [60, 15]


def test_dosing_uses_the_latest_measurement_on_or_before_the_date(platform: Platform) -> None:
    site = make_site(platform)
    patient = make_patient(platform)
    measure(platform, patient.id, "60", "165", on=date(2026, 10, 1))
    platform.clock.set(dt.datetime(2026, 12, 20, 9, 0, tzinfo=dt.UTC))
    measure(platform, patient.id, "80", "165", on=date(2026, 12, 15))  # after the dosing date
    plan = make_plan(
        platform, plan_message(patient.id, site.id, product_id(platform, "gammagard-liquid"))
    )
    assert calculate(platform, plan.id).days[0].rounded_grams == "60"


def test_missing_measurement_and_band_refusal_are_failed_precondition(platform: Platform) -> None:
    site = make_site(platform)
    patient = make_patient(platform)
    plan = make_plan(
        platform, plan_message(patient.id, site.id, product_id(platform, "gammagard-liquid"))
    )
    with pytest.raises(grpc.RpcError) as missing:
        calculate(platform, plan.id)
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_types(missing.value) == ["MEASUREMENT_ON_OR_BEFORE_DOSING_DATE"]
    measure(platform, patient.id, "4", "50", on=date(2026, 11, 1))
    tiny = make_plan(
        platform,
        plan_message(
            patient.id,
            site.id,
            product_id(platform, "privigen"),
            maintenance_dose="0.1",
        ),
    )
    # 0.1 g/kg × 4 kg = 0.4 g; Privigen's smallest vial is 2.5 g: far outside ±10 %.
    with pytest.raises(grpc.RpcError) as band:
        calculate(platform, tiny.id)
    assert band.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_types(band.value) == ["ROUNDING_BAND"]


def test_bad_request_lists_fields(platform: Platform) -> None:
    with pytest.raises(grpc.RpcError) as bad:
        platform.scheduler.CalculateDose(pb.CalculateDoseRequest(plan_version=-1))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as missing:
        calculate(platform, "no-such-plan")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_repeated_calculations_follow_every_input_change(platform: Platform) -> None:
    """The dose memo is keyed by input identities: a new measurement, a new plan version or a
    patient change must each produce a fresh calculation, never the remembered one."""
    site = make_site(platform)
    patient = make_patient(platform, sex=pb.SEX_AT_BIRTH_FEMALE)
    measure(platform, patient.id, "70", "165", on=date(2026, 10, 1))
    plan = make_plan(
        platform, plan_message(patient.id, site.id, product_id(platform, "gammagard-liquid"))
    )
    assert calculate(platform, plan.id).total_grams == "70"
    assert calculate(platform, plan.id).total_grams == "70"  # served again, same answer
    measure(platform, patient.id, "80", "165", on=date(2026, 11, 20))
    assert calculate(platform, plan.id).total_grams == "80"  # 1 g/kg × 80 kg
    v2 = platform.scheduler.UpdateTherapyPlan(
        pb.UpdateTherapyPlanRequest(
            therapy_plan=pb.TherapyPlan(id=plan.id, etag=plan.etag, maintenance_dose="0.5"),
            update_mask=FieldMask(paths=["maintenance_dose"]),
            request_id=request_id(),
            reason="minimum effective dose",
        )
    ).therapy_plan
    fresh = calculate(platform, plan.id)
    assert (fresh.total_grams, fresh.plan_version) == ("40", 2)  # 0.5 g/kg × 80 kg
    old = calculate(platform, plan.id, plan_version=1)
    assert (old.total_grams, old.plan_version) == ("80", 1)
    assert v2.version == 2


def test_inventory_down_is_unavailable_not_a_guess(platform: Platform) -> None:
    site = make_site(platform)
    patient = make_patient(platform)
    measure(platform, patient.id, "70", "165")
    privigen = product_id(platform, "privigen")
    plan = make_plan(platform, plan_message(patient.id, site.id, privigen))
    # The plan was checked against inventory (product cached as existing); drop the cached
    # answer so the next calculation must ask inventory again, then stop inventory.
    platform.stop_inventory()
    platform.forget_products()
    with pytest.raises(grpc.RpcError) as down:
        calculate(platform, plan.id)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
