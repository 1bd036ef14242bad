"""Dosing rules of docs/clinical-rules.md#dose-calculation against hand-worked examples; the
arithmetic is in comments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from services.common.errors import FailedPrecondition
from services.scheduler.domain.dosing import (
    ProductSpec,
    RateSchedule,
    calculate_dose,
    ivig_to_scig_weekly,
)
from services.scheduler.domain.due import CourseKind
from services.scheduler.domain.infusion import (
    RateStepSpec,
    RateUnit,
    chair_time,
    infusion_time,
    observation_minutes,
)
from services.scheduler.domain.patients import BodyMeasurement, Patient, SexAtBirth
from services.scheduler.domain.plans import (
    DoseBasis,
    Induction,
    RoundingRule,
    WeightPolicy,
)
from services.scheduler.domain.vials import VialSet
from services.scheduler.domain.weight import dosing_weight
from tests.unit.builders import plan

DAY = dt.date(2026, 12, 1)
# docs/clinical-rules.md#infusion-time: 0.5 → 1 → 2 → 3 → 4 → 5 → 5.4 mL/kg/h, 30 min each
GAMMAGARD_MMN = tuple(
    RateStepSpec(D(r), RateUnit.ML_PER_KG_H, 30) for r in ("0.5", "1", "2", "3", "4", "5", "5.4")
)
GAMMAGARD = ProductSpec(
    id="gammagard",
    brand="Gammagard Liquid",
    concentration_percent=D(10),
    # docs/clinical-rules.md#products
    presentations=tuple((D(g), D(g) * 10) for g in ("1", "2.5", "5", "10", "20", "30")),
    rate_schedules=(RateSchedule("MMN", GAMMAGARD_MMN),),
)
# docs/clinical-rules.md#products: 1 → 2 → 4 → 8 → 12 mg/kg/min, 30 min per step
OCTAGAM_10 = tuple(
    RateStepSpec(D(r), RateUnit.MG_PER_KG_MIN, 30) for r in ("1", "2", "4", "8", "12")
)


def vials(sizes: tuple[str, ...]) -> VialSet:
    return VialSet(tuple(D(s) for s in sizes))


# docs/clinical-rules.md#products [R11]
GAMMAGARD_VIALS = vials(("1", "2.5", "5", "10", "20", "30"))
PRIVIGEN_VIALS = vials(("2.5", "5", "10", "20", "40"))  # docs/clinical-rules.md#products [R30]
# docs/clinical-rules.md#products [R22c]
CUTAQUIG_VIALS = vials(("1", "1.65", "2", "3.3", "4", "8"))


def patient(sex: SexAtBirth = SexAtBirth.FEMALE, born: dt.date = dt.date(1970, 1, 1)) -> Patient:
    return Patient("pt", "org", "MRN", "Ada", "Example", born, sex)


def measurement(kg: str, cm: str, pregnant: bool = False) -> BodyMeasurement:
    return BodyMeasurement("m", "pt", dt.date(2026, 11, 1), D(kg), D(cm), pregnant)


# --- dosing weight -----------------------------------------------------------------------------


def test_obese_man_under_the_automatic_policy_gets_adjusted_weight() -> None:
    # docs/clinical-rules.md#weight-precision: 100 kg man, 175 cm. 175 × 0.393701 = 68.898 in;
    # IBW = 50 + 2.3 × 8.898 = 70.46 → 70.4 kg (truncated, as the cited calculator shows);
    # AdjBW = 70.4 + 0.4 × (100 − 70.4) = 82.24 → 82.2 kg; BMI 100 / 1.75² = 32.65 > 30.
    w = dosing_weight(
        WeightPolicy.AUTOMATIC, SexAtBirth.MALE, dt.date(1980, 6, 1), DAY, D(100), D(175), False
    )
    assert (w.ideal_kg, w.adjusted_kg, w.dosing_kg) == (D("70.4"), D("82.2"), D("82.2"))
    assert w.policy_applied is WeightPolicy.ADJUSTED
    assert "BMI 32.7 > 30" in w.reason


@pytest.mark.parametrize(
    ("kg", "cm", "born", "pregnant", "blocking"),
    [
        ("70", "175", dt.date(1980, 1, 1), False, "BMI 22.9 ≤ 30"),  # 70 / 1.75² = 22.86
        ("100", "175", dt.date(2010, 1, 1), False, "age 16 < 18"),
        ("80", "150", dt.date(1980, 1, 1), False, "height 150 cm < 152"),
        ("100", "175", dt.date(1980, 1, 1), True, "pregnant"),
    ],
)
def test_automatic_policy_exclusions_use_actual_weight(
    kg: str, cm: str, born: dt.date, pregnant: bool, blocking: str
) -> None:
    w = dosing_weight(WeightPolicy.AUTOMATIC, SexAtBirth.MALE, born, DAY, D(kg), D(cm), pregnant)
    assert w.policy_applied is WeightPolicy.ACTUAL and w.dosing_kg == D(kg)
    assert blocking in w.reason


def test_female_ideal_weight_devine() -> None:
    # 165 cm × 0.393701 = 64.961 in; 45.5 + 2.3 × 4.961 = 56.91 → 56.9 kg
    w = dosing_weight(
        WeightPolicy.IDEAL, SexAtBirth.FEMALE, dt.date(1970, 1, 1), DAY, D(90), D(165), False
    )
    assert w.dosing_kg == D("56.9") and w.policy_applied is WeightPolicy.IDEAL


# --- rounding into real vial sizes --------------------------------------------------------------


def combo(choice: object) -> list[tuple[str, int]]:
    return [(format(g.normalize(), "f"), n) for g, n in choice.vials]  # type: ignore[attr-defined]


def test_70g_is_two_30s_and_a_10_without_waste() -> None:
    # docs/clinical-rules.md#dose-rounding: 70 g = 30 + 30 + 10 g Gammagard, no waste
    c = GAMMAGARD_VIALS.choose(D(70), RoundingRule.NEAREST, D(10))
    assert c.dose_grams == D(70) and combo(c) == [("30", 2), ("10", 1)] and c.waste_grams == 0


def test_nearest_ties_go_to_the_lower_amount_and_the_band_refuses() -> None:
    # Privigen 2.5 g steps: 16.25 g is 1.25 g from 15 and from 17.5 → the lower, 15 g
    c = PRIVIGEN_VIALS.choose(D("16.25"), RoundingRule.NEAREST, D(10))
    assert c.dose_grams == D(15) and combo(c) == [("10", 1), ("5", 1)]
    # 1.2 g: the nearest whole-vial amount is 2.5 g, 1.3 g away > 10 % of 1.2 g = 0.12 g
    with pytest.raises(FailedPrecondition) as refused:
        PRIVIGEN_VIALS.choose(D("1.2"), RoundingRule.NEAREST, D(10))
    assert refused.value.violations[0].type == "ROUNDING_BAND"


def test_privigen_40g_vial_is_used_for_large_doses() -> None:
    # 164 g: fewest vials is 4 × 40 + 1 × 2.5 + ... 164 − 160 = 4 = not a Privigen amount;
    # nearest whole-vial amounts are 162.5 (4×40 + 2.5) and 165 (4×40 + 5): 162.5 is 1.5 away,
    # 165 is 1 away → 165 g = 4 × 40 + 1 × 5 (5 vials)
    c = PRIVIGEN_VIALS.choose(D(164), RoundingRule.NEAREST, D(10))
    assert c.dose_grams == D(165) and combo(c) == [("40", 4), ("5", 1)]


def test_down_up_nearest_5g_and_none_for_82_2g() -> None:
    raw = D("82.2")
    # down: 82 = 2×30 + 20 + 2×1 (5 vials); up: 82.5 = 2×30 + 20 + 2.5 (4 vials)
    assert GAMMAGARD_VIALS.choose(raw, RoundingRule.DOWN, D(10)).dose_grams == D(82)
    up = GAMMAGARD_VIALS.choose(raw, RoundingRule.UP, D(10))
    assert up.dose_grams == D("82.5") and combo(up) == [("30", 2), ("20", 1), ("2.5", 1)]
    # nearest 5 g: 82.2 → 80 g (2.2 below vs 2.8 above) = 2×30 + 20
    five = GAMMAGARD_VIALS.choose(raw, RoundingRule.NEAREST_5G, D(10))
    assert five.dose_grams == D(80) and combo(five) == [("30", 2), ("20", 1)]
    # none: give 82.2 g exactly from the least overfill: 82.5 g, 0.3 g wasted
    exact = GAMMAGARD_VIALS.choose(raw, RoundingRule.NONE, D(10))
    assert (exact.dose_grams, exact.vial_grams, exact.waste_grams) == (
        D("82.2"),
        D("82.5"),
        D("0.3"),
    )


def test_cutaquig_odd_sizes() -> None:
    # 23.975 g (the SCIg conversion below): 23.95 = 2×8 + 3.3 + 2 + 1.65 + 1 (6 vials) is
    # 0.025 g below; 24 = 3×8 (3 vials) is 0.025 g above: a tie → the lower amount
    # (docs/clinical-rules.md#dose-rounding)
    c = CUTAQUIG_VIALS.choose(D("23.975"), RoundingRule.NEAREST, D(10))
    assert c.dose_grams == D("23.95")
    assert combo(c) == [("8", 2), ("3.3", 1), ("2", 1), ("1.65", 1), ("1", 1)]
    # 24 g exactly: 3 × 8 g beats 6 × 4 g (fewest vials)
    assert combo(CUTAQUIG_VIALS.choose(D(24), RoundingRule.NEAREST, D(10))) == [("8", 3)]


# --- IVIg → SCIg ---------------------------------------------------------------------------------


def test_ivig_to_weekly_scig_conversion_hizentra_pi() -> None:
    # docs/clinical-rules.md#sc-conversion: weekly g = 1.37 × 70 g ÷ (28 days / 7 = 4 weeks) = 95.9
    # / 4 = 23.975 g
    result = ivig_to_scig_weekly(D(70), 28, D("1.37"))
    assert result.weekly_grams == D("23.975")
    assert "1.37 × 70 g ÷ 4 weeks" in result.rationale


# --- rate ramp and chair time --------------------------------------------------------------------


def test_gammagard_ramp_to_label_maximum_70kg_70g() -> None:
    # 70 g at 10 % = 700 mL. At 70 kg the steps are 35, 70, 140, 210, 280, 350, 378 mL/h.
    # 30 min each gives 17.5 + 35 + 70 + 105 + 140 + 175 = 542.5 mL in 180 min;
    # 700 − 542.5 = 157.5 mL at 378 mL/h = 0.41667 h = 25 min → 205 min
    # (docs/clinical-rules.md#infusion-time-examples: 3.4 h).
    t = infusion_time(D(70), D(10), GAMMAGARD_MMN, D(70))
    assert t.minutes == 205
    assert [s.rate_ml_per_h for s in t.steps][-1] == D(378)
    assert sum(s.volume_ml for s in t.steps) == 700


def test_patient_maximum_caps_the_ramp() -> None:
    # Max 3 mL/kg/h = 210 mL/h. Steps 0.5, 1, 2, 3 give 17.5 + 35 + 70 + 105 = 227.5 mL in
    # 120 min; steps 5 and 6 (4 and 5 mL/kg/h) are capped at 210 mL/h: 105 + 105 = 210 mL,
    # 437.5 mL by 180 min; the last (5.4, capped) gives the remaining 262.5 mL at 210 mL/h
    # = 75 min → 255 min.
    t = infusion_time(D(70), D(10), GAMMAGARD_MMN, D(70), max_rate_ml_per_kg_h=D(3))
    assert t.minutes == 255
    assert [s.capped for s in t.steps] == [False, False, False, False, True, True, True]


def test_octagam_mg_per_kg_min_converts_at_10_percent() -> None:
    # docs/clinical-rules.md#products: at 10 %, 1 mg/kg/min = 0.6 mL/kg/h. 70 kg: 42, 84, 168, 336,
    # 504 mL/h.
    # 1 g/kg = 700 mL: 21 + 42 + 84 + 168 = 315 mL in 120 min; 385 mL at 504 mL/h = 45.8 min
    # → 166 min = 2.8 h (docs/clinical-rules.md#infusion-time-examples table: 2.8 h).
    t = infusion_time(D(70), D(10), OCTAGAM_10, D(70))
    assert [s.rate_ml_per_h for s in t.steps] == [D(42), D(84), D(168), D(336), D(504)]
    assert t.minutes == 166


def test_chair_minutes_and_observation_rule() -> None:
    first = observation_minutes("p", DAY, None, "")
    assert first[0] == 60  # first infusion on record
    switch = observation_minutes("p", DAY, DAY - dt.timedelta(days=28), "other")
    assert switch[0] == 60
    gap = observation_minutes("p", DAY, DAY - dt.timedelta(days=57), "p")
    assert gap[0] == 60  # 57 days > 8 weeks
    usual = observation_minutes("p", DAY, DAY - dt.timedelta(days=28), "p")
    assert usual[0] == 15
    # 30 + 205 + 60 = 295 → booked in 15-minute slots: 300
    chair = chair_time(30, 205, first)
    assert (chair.chair_minutes, chair.booked_minutes) == (295, 300)


# --- the whole calculation -----------------------------------------------------------------------


def test_70kg_2g_per_kg_induction_over_5_days() -> None:
    # 2 g/kg × 70 kg = 140 g over 5 days = 28 g a day, each day rounded on its own
    # (docs/clinical-rules.md#induction-split):
    # 28 g = 20 + 5 + 3 × 1 (5 vials; no 4-vial set of 1/2.5/5/10/20/30 g makes 28 g).
    p = plan(induction=Induction(D(2), 5))
    result = calculate_dose(
        p, patient(), measurement("70", "165"), GAMMAGARD, DAY, CourseKind.INDUCTION
    )
    assert [d.vials.dose_grams for d in result.days] == [D(28)] * 5
    assert combo(result.days[0].vials) == [("20", 1), ("5", 1), ("1", 3)]
    assert result.total_grams == D(140)
    assert [d.date for d in result.days] == [DAY + dt.timedelta(days=i) for i in range(5)]
    # 28 g = 280 mL: 17.5 + 35 + 70 + 105 = 227.5 mL in 120 min; 52.5 mL at 4 × 70 = 280 mL/h
    # = 11.25 min → 131.25, rounded up to 132 min (docs/clinical-rules.md#infusion-time-examples:
    # 0.4 g/kg, 28 g ≈ 2.2 h)
    assert result.days[0].infusion is not None and result.days[0].infusion.minutes == 132


def test_fixed_dose_outside_the_band_needs_an_override() -> None:
    # 200 g fixed for a 70 kg patient = 2.86 g/kg > 2.5 g/kg
    # (docs/clinical-rules.md#validation-bands)
    fixed = plan(dose_basis=DoseBasis.FIXED_GRAMS, maintenance_dose=D(200))
    with pytest.raises(FailedPrecondition) as refused:
        calculate_dose(
            fixed, patient(), measurement("70", "165"), GAMMAGARD, DAY, CourseKind.MAINTENANCE
        )
    assert refused.value.violations[0].type == "DOSE_BAND"


def test_max_grams_per_day_is_enforced() -> None:
    p = plan(max_grams_per_day=D(60))
    with pytest.raises(FailedPrecondition) as refused:
        calculate_dose(
            p, patient(), measurement("70", "165"), GAMMAGARD, DAY, CourseKind.MAINTENANCE
        )
    assert refused.value.violations[0].type == "MAX_GRAMS_PER_DAY"
