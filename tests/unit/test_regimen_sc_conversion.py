"""IV → SC conversion (docs/clinical-rules.md#sc-dose, #sc-infusions, #first-sc-date) against
hand-worked cases; the arithmetic is in comments."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.scheduler.domain.plans import Indication
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.sc_conversion import (
    EVERY_TWO_WEEKS,
    ORDER,
    WEEKLY,
    FactorOverride,
    Frequency,
    PreviousTherapy,
    first_sc_date,
    sc_infusions,
    sc_weekly_dose,
)
from services.scheduler.domain.regimens.sc_products import OLDER_LABEL, SC_PRODUCTS

HIZENTRA = SC_PRODUCTS["hizentra"]
CUVITRU = SC_PRODUCTS["cuvitru"]
KG = D(70)
# 70 kg on 2 g/kg every 4 weeks of Gammagard Liquid: 140 g (4 × 30 + 20 g) every 28 days
IV_GRAMS, IV_DAYS = D(140), 28


def test_gammagard_to_hizentra_in_mmn_at_1_to_1() -> None:
    # weekly = 1.00 × 140 g ÷ (28 ÷ 7) = 35 g
    dose = sc_weekly_dose(HIZENTRA, Indication.MMN, IV_GRAMS, IV_DAYS, KG)
    assert dose.factor == D("1.00") and dose.weekly_raw_grams == D(35)
    # weekly infusion: 35 g = 3 × 10 + 4 + 1 g exactly; 35 × 100 ÷ 20 % = 175 mL;
    # MMN uses Hizentra's CIDP 50 mL a site: ⌈175 ÷ 50⌉ = 4 sites ≤ 4 at once
    plan = sc_infusions(HIZENTRA, Indication.MMN, dose.weekly_raw_grams, KG)
    assert plan.frequency == WEEKLY
    assert plan.infusion.dose_grams == D(35)
    assert plan.infusion.vials == ((D(10), 3), (D(4), 1), (D(1), 1))
    assert plan.volume_ml == D(175) and plan.site_max_ml == D(50) and plan.sites == 4
    assert plan.weekly_grams == D(35) and plan.skipped == ()
    text = "\n".join(dose.rationale + plan.rationale)
    assert "1 × 140 g ÷ 4 weeks = 35 g a week" in text
    assert "⌈175 ÷ 50 mL⌉ = 4" in text


def test_gammagard_to_hizentra_in_pi_at_1_37() -> None:
    # weekly = 1.37 × 140 g ÷ 4 weeks = 191.8 ÷ 4 = 47.95 g
    dose = sc_weekly_dose(HIZENTRA, Indication.PID, IV_GRAMS, IV_DAYS, KG)
    assert dose.factor == D("1.37") and dose.weekly_raw_grams == D("47.95")
    # PI: 25 mL a site, 4 sites at once.
    # weekly: 47.95 → 48 g (4 × 10 + 2 × 4), 240 mL, ⌈240 ÷ 25⌉ = 10 sites > 4: skipped
    # 2 a week: 23.975 → 23.98 → 24 g, 120 mL, ⌈4.8⌉ = 5 sites > 4: skipped
    # 3 a week: 15.983… → 15.98 → 16 g (10 + 4 + 2), 80 mL, ⌈3.2⌉ = 4 sites: fits,
    # on days ⌊7i ÷ 3⌋ = 0, 2, 4; 3 × 16 = 48 g a week
    plan = sc_infusions(HIZENTRA, Indication.PID, dose.weekly_raw_grams, KG)
    assert plan.frequency == Frequency(3, 1)
    assert plan.infusion.dose_grams == D(16)
    assert plan.infusion.vials == ((D(10), 1), (D(4), 1), (D(2), 1))
    assert plan.volume_ml == D(80) and plan.sites == 4
    assert plan.infusion_days == (0, 2, 4)
    assert plan.weekly_grams == D(48)
    assert len(plan.skipped) == 2
    assert "10 sites" in plan.skipped[0] and "5 sites" in plan.skipped[1]


def test_every_two_weeks_asked_falls_back_to_weekly() -> None:
    # MMN, 2 × 35 = 70 g every 2 weeks = 350 mL, ⌈350 ÷ 50⌉ = 7 sites > 4 → weekly, 4 sites
    plan = sc_infusions(HIZENTRA, Indication.MMN, D(35), KG, asked=EVERY_TWO_WEEKS)
    assert plan.frequency == WEEKLY and plan.sites == 4


def test_cuvitru_in_pi_rounds_a_tie_to_the_lower_amount() -> None:
    # 1.30 × 140 ÷ 4 = 45.5 g: 45 and 46 g are equally near → the lower, 45 g
    # (5 × 8 + 4 + 1 g); 45 × 100 ÷ 20 = 225 mL, ⌈225 ÷ 60⌉ = 4 sites ≤ 4
    dose = sc_weekly_dose(CUVITRU, Indication.PID, IV_GRAMS, IV_DAYS, KG)
    assert dose.weekly_raw_grams == D("45.5")
    plan = sc_infusions(CUVITRU, Indication.PID, dose.weekly_raw_grams, KG)
    assert plan.infusion.dose_grams == D(45) and plan.volume_ml == D(225) and plan.sites == 4


def test_hizentra_in_cidp_is_a_fixed_dose_and_other_cidp_products_need_a_factor() -> None:
    # 0.2 g/kg a week × 70 kg = 14 g (10 + 4); 70 mL; ⌈70 ÷ 50⌉ = 2 sites
    dose = sc_weekly_dose(HIZENTRA, Indication.CIDP, IV_GRAMS, IV_DAYS, KG)
    assert dose.factor is None and dose.weekly_raw_grams == D(14)
    assert sc_infusions(HIZENTRA, Indication.CIDP, D(14), KG).sites == 2
    with pytest.raises(Refused) as refused:
        sc_weekly_dose(CUVITRU, Indication.CIDP, IV_GRAMS, IV_DAYS, KG)
    assert refused.value.code == "no_conversion_factor"
    # with a clinician's factor and reason: 1.2 × 140 ÷ 4 = 42 g
    ok = sc_weekly_dose(
        CUVITRU, Indication.CIDP, IV_GRAMS, IV_DAYS, KG, override=FactorOverride(D("1.2"), "x")
    )
    assert ok.weekly_raw_grams == D(42)


def test_an_override_needs_a_reason_and_the_older_label_has_its_factor() -> None:
    with pytest.raises(InvalidArgument) as bad:
        sc_weekly_dose(
            HIZENTRA, Indication.MMN, IV_GRAMS, IV_DAYS, KG, override=FactorOverride(D("1.53"), "")
        )
    assert bad.value.violations[0].field == "factor_override.reason"
    # older Hizentra label, PI: 1.53 × 140 ÷ 4 = 53.55 g
    older = sc_weekly_dose(HIZENTRA, Indication.PID, IV_GRAMS, IV_DAYS, KG, OLDER_LABEL)
    assert older.weekly_raw_grams == D("53.55")


def test_gammagard_sc_under_40_kg_uses_20_ml_a_site() -> None:
    gammagard = SC_PRODUCTS["gammagard-liquid"]
    # 8 g weekly at 10 %: 80 mL; ⌈80 ÷ 20⌉ = 4 sites at 35 kg, ⌈80 ÷ 30⌉ = 3 at 40 kg
    assert sc_infusions(gammagard, Indication.PID, D(8), D(35)).sites == 4
    assert sc_infusions(gammagard, Indication.PID, D(8), D(40)).sites == 3


def test_refusals() -> None:
    with pytest.raises(Refused) as no_vials:
        sc_infusions(SC_PRODUCTS["xembify"], Indication.PID, D(10), KG)
    assert no_vials.value.code == "vials_not_configured"
    gamunex = dataclasses.replace(SC_PRODUCTS["gamunex-c-sc"], vial_grams=(D(1), D(2)))
    with pytest.raises(Refused) as no_site:
        sc_infusions(gamunex, Indication.PID, D(10), KG)
    assert no_site.value.code == "site_volume_not_configured"
    # 200 g a week of Hizentra: even 7 a week is 28.57 → 29 g, 145 mL, 6 sites > 4
    with pytest.raises(Refused) as none:
        sc_infusions(HIZENTRA, Indication.PID, D(200), KG)
    assert none.value.code == "no_sc_schedule_fits"


def test_first_sc_date() -> None:
    last_iv = dt.date(2026, 3, 2)
    assert first_sc_date(last_iv)[0] == dt.date(2026, 3, 9)  # + 7 days
    assert first_sc_date(last_iv, frequency=EVERY_TWO_WEEKS)[0] == dt.date(2026, 3, 9)
    assert first_sc_date(last_iv, frequency=EVERY_TWO_WEEKS, two_weekly_start_days=14)[0] == (
        dt.date(2026, 3, 16)
    )
    weekly_sc = first_sc_date(last_iv, PreviousTherapy.WEEKLY_SC, EVERY_TWO_WEEKS, 14)
    assert weekly_sc[0] == dt.date(2026, 3, 9)  # from weekly SC: 7 days, whatever the option
    assert "docs/clinical-rules.md#first-sc-date" in weekly_sc[1]


@given(
    weekly=st.decimals(D(2), D(120), places=2),
    product=st.sampled_from(["hizentra", "cuvitru", "cutaquig"]),
    indication=st.sampled_from([Indication.PID, Indication.MMN]),
    asked=st.sampled_from(ORDER),
)
@settings(max_examples=200, deadline=None)
def test_a_schedule_found_fits_its_sites_and_the_band(
    weekly: D, product: str, indication: Indication, asked: Frequency
) -> None:
    sc = SC_PRODUCTS[product]
    try:
        plan = sc_infusions(sc, indication, weekly, KG, asked)
    except Refused:
        return
    assert sc.max_sites is not None and 1 <= plan.sites <= sc.max_sites
    assert plan.volume_ml <= plan.sites * plan.site_max_ml
    raw = weekly * plan.frequency.every_weeks / plan.frequency.per_week
    assert abs(plan.infusion.dose_grams - raw) <= raw / 10 + D("0.01")
    assert ORDER.index(plan.frequency) >= ORDER.index(asked)
    assert len(set(plan.infusion_days)) == plan.frequency.per_week
