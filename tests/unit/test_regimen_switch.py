"""A route switch as the plan's next version (domain/regimens/switch.py), the due dates of a
converted version (domain/due.py, rule 5) and a plan's coverage (domain/regimens/coverage.py),
with the arithmetic written out."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D

import pytest

from services.scheduler.domain.due import Administration, CourseKind, DueSpec, due_infusions
from services.scheduler.domain.plans import DoseBasis, Indication, RampDose, Route, TherapyPlan
from services.scheduler.domain.regimens.caps import State
from services.scheduler.domain.regimens.coverage import (
    Given,
    PlanAuthorisation,
    PlanCaps,
    check_booking,
    check_regimen,
)
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.sc_products import SC_PRODUCTS
from services.scheduler.domain.regimens.switch import Switch, convert, doses_after, first_doses

LAST_IV = dt.date(2026, 11, 20)


def iv(indication: Indication = Indication.MMN, **kw: object) -> TherapyPlan:
    fields: dict[str, object] = dict(
        id="p1",
        patient_id="pt",
        site_id="s",
        indication=indication,
        route=Route.IV,
        product_id="gammagard",
        dose_basis=DoseBasis.G_PER_KG,
        maintenance_dose=D(2),
        interval_days=28,
        start_date=dt.date(2026, 1, 1),
    )
    fields.update(kw)
    return TherapyPlan(**fields)  # type: ignore[arg-type]


def to_hizentra(plan: TherapyPlan) -> Switch:
    return Switch(Route.SC, SC_PRODUCTS["hizentra"], D(140), LAST_IV, D(70))


def test_mmn_version_gives_35_g_weekly_on_4_sites_from_7_days_after_the_last_iv() -> None:
    done = convert(iv(), to_hizentra(iv()))
    new = done.plan
    # 1.00 × 140 g ÷ 4 weeks = 35 g a week; 175 mL ÷ 50 mL a site → 4 sites
    assert (new.route, new.dose_basis, new.maintenance_dose, new.interval_days) == (
        Route.SC,
        DoseBasis.FIXED_GRAMS,
        D(35),
        7,
    )
    assert (new.infusion_sites, new.infusion_days) == (4, ())
    assert new.start_date == new.regimen_start_date == dt.date(2026, 11, 27)
    assert (new.last_infusion_date, new.last_product_id) == (LAST_IV, "gammagard")
    # a 7-day interval: windows narrower than half of it, (7 − 1) // 2 = 3 days each way
    assert (new.window_days_early, new.window_days_late) == (3, 3)


def test_pi_version_three_a_week_and_its_first_doses() -> None:
    plan = iv(Indication.PID)
    new = convert(plan, to_hizentra(plan)).plan
    assert (new.maintenance_dose, new.infusion_days) == (D(16), (0, 2, 4))
    # gaps 2, 2, 3 days: windows (2 − 1) // 2 = 0
    assert (new.window_days_early, new.window_days_late) == (0, 0)
    # first 14 days from Fri 27 Nov: days 0, 2, 4, 7, 9, 11 of 16 g each
    assert first_doses(new, 14) == [
        (dt.date(2026, 11, 27) + dt.timedelta(days=n), D(16)) for n in (0, 2, 4, 7, 9, 11)
    ]
    # 16 g on 27 Nov, 29 Nov and 1 Dec: the earliest 7-day run holding all three, 25 Nov to
    # 1 Dec, has 48 g > 46 g; 28 days from 25 Nov hold 12 infusions, 192 g > 184 g
    with pytest.raises(Refused) as refused:
        check_regimen(PlanCaps("p1", "", D(46), D(184)), first_doses(new))
    assert refused.value.code == "payer_cap_exceeded"
    assert "48 g from 2026-11-25 to 2026-12-01, over 46 g per 7 days" in refused.value.text
    assert "192 g from 2026-11-25 to 2026-12-22, over 184 g per 28 days" in refused.value.text
    check_regimen(PlanCaps("p1", "", D(46), D(184)), first_doses(new), "payer letter")


def test_same_route_and_sc_to_sc_are_refused() -> None:
    with pytest.raises(Refused) as same:
        convert(
            iv(),
            Switch(Route.IV, SC_PRODUCTS["hizentra"], D(140), LAST_IV, D(70), iv_interval_days=28),
        )
    assert same.value.code == "same_route"
    sc = convert(iv(), to_hizentra(iv())).plan
    with pytest.raises(Refused) as sc_to_sc:
        convert(sc, Switch(Route.FACILITATED_SC, SC_PRODUCTS["hyqvia"], D(35), LAST_IV, D(70)))
    assert sc_to_sc.value.code == "conversion_route"


def spec(**kw: object) -> DueSpec:
    fields: dict[str, object] = dict(
        plan_id="p1",
        plan_version=2,
        patient_id="pt",
        product_id="hyqvia",
        start_date=dt.date(2026, 11, 27),
        interval_days=28,
        window_days_early=2,
        window_days_late=2,
        history_from=dt.date(2026, 11, 27),
    )
    fields.update(kw)
    return DueSpec(**fields)  # type: ignore[arg-type]


def given(*days: dt.date) -> list[Administration]:
    return [Administration(d, CourseKind.MAINTENANCE) for d in days]


RAMP = ((0, D("17.5")), (7, D(35)), (21, D("52.5")), (42, D(70)), (70, D(70)))
TODAY = dt.date(2026, 11, 24)


def test_a_ramp_up_is_due_step_by_step_then_at_the_steady_interval() -> None:
    s = spec(ramp=RAMP)
    # the last IV dose (20 Nov) is before the regimen start: it does not count
    first = due_infusions(s, given(LAST_IV), TODAY)
    assert [(i.due_date, i.ramp_step, i.dose_grams) for i in first] == [
        (dt.date(2026, 11, 27), 1, D("17.5"))
    ]
    # step 1 given a day late (28 Nov): step 2 is its 7-day gap later, 5 Dec
    second = due_infusions(s, given(dt.date(2026, 11, 28)), TODAY)
    assert [(i.due_date, i.ramp_step, i.dose_grams) for i in second] == [
        (dt.date(2026, 12, 5), 2, D(35))
    ]
    # step 3 is 14 days after step 2 (days 7 → 21)
    third = due_infusions(s, given(dt.date(2026, 11, 28), dt.date(2026, 12, 5)), TODAY)
    assert (third[0].due_date, third[0].ramp_step) == (dt.date(2026, 12, 19), 3)
    # all five given: then every 28 days from the last, a full dose from CalculateDose
    days = [dt.date(2026, 11, 27) + dt.timedelta(days=d) for d, _ in RAMP]
    steady = due_infusions(s, given(*days), TODAY)
    assert [(i.due_date, i.ramp_step, i.dose_grams) for i in steady] == [
        (days[-1] + dt.timedelta(days=28), 0, None)
    ]


def test_several_infusions_a_week_fall_on_their_days() -> None:
    s = spec(interval_days=7, infusion_days=(0, 2, 4), window_days_early=0, window_days_late=0)
    start = dt.date(2026, 11, 27)  # day 0
    assert due_infusions(s, [], TODAY)[0].due_date == start
    assert due_infusions(s, given(start), TODAY)[0].due_date == start + dt.timedelta(days=2)
    day4 = start + dt.timedelta(days=4)
    assert due_infusions(s, given(day4), TODAY)[0].due_date == start + dt.timedelta(days=7)
    # given a day late on day 3: the next is still day 4 of the pattern
    day3 = start + dt.timedelta(days=3)
    assert due_infusions(s, given(day3), TODAY)[0].due_date == day4


AUTH = PlanAuthorisation(
    "a1", "p1", "Acme", dt.date(2026, 12, 1), dt.date(2027, 5, 31), approved_grams=D(100)
)


def test_booking_within_the_approved_grams_and_doses() -> None:
    day = dt.date(2026, 12, 29)
    before = [Given("x", "p1", dt.date(2026, 12, 1), D(35), State.GIVEN)]
    # 35 given + 35 = 70 ≤ 100 g approved
    check_booking([AUTH], None, "p1", day, D(35), before)
    # 35 + 35 + 35 = 105 > 100 g
    two = [*before, Given("y", "p1", day, D(35), State.BOOKED)]
    with pytest.raises(Refused) as over:
        check_booking([AUTH], None, "p1", dt.date(2027, 1, 26), D(35), two)
    assert over.value.code == "authorised_quantity"
    assert "with this 35 g it would be 105 g" in over.value.text
    # a cancelled booking does not count
    cancelled = [*before, Given("y", "p1", day, D(35), State.CANCELLED)]
    check_booking([AUTH], None, "p1", dt.date(2027, 1, 26), D(35), cancelled)
    # outside the period, with an authorisation required: refused
    required = PlanCaps("p1", authorisation_required=True)
    with pytest.raises(Refused) as outside:
        check_booking([AUTH], required, "p1", dt.date(2026, 11, 30), D(35), [])
    assert outside.value.code == "no_authorisation"


def test_doses_after_for_the_forecast() -> None:
    plan = iv(maintenance_dose=D(1))
    ramped = dataclasses.replace(
        plan,
        start_date=dt.date(2026, 11, 27),
        maintenance_dose=D(70),
        ramp_up=tuple(RampDose(day, grams) for day, grams in RAMP),
    )
    # step 2 due 5 Dec (step 1 given a day late): steps 3–5 keep their gaps (14, 21, 28 days),
    # then every 28 days at the full dose (None)
    after = doses_after(ramped, dt.date(2026, 12, 5), 2, dt.date(2027, 3, 31))
    assert after == [
        (dt.date(2026, 12, 19), D("52.5")),
        (dt.date(2027, 1, 9), D(70)),
        (dt.date(2027, 2, 6), D(70)),
        (dt.date(2027, 3, 6), None),
    ]
    weekly = dataclasses.replace(
        plan, start_date=dt.date(2026, 11, 27), interval_days=7, infusion_days=(0, 2, 4)
    )
    assert doses_after(weekly, dt.date(2026, 11, 29), 0, dt.date(2026, 12, 7)) == [
        (dt.date(2026, 12, 1), None),
        (dt.date(2026, 12, 4), None),
        (dt.date(2026, 12, 6), None),
    ]
    assert doses_after(plan, dt.date(2026, 12, 1), 0, dt.date(2027, 1, 31)) == [
        (dt.date(2026, 12, 29), None),
        (dt.date(2027, 1, 26), None),
    ]


def test_only_a_subcutaneous_version_is_given_at_home() -> None:
    from services.scheduler.domain.plans import validate_plan

    home_iv = iv(home_administration=True)
    assert [v.field for v in validate_plan(home_iv).items] == ["therapy_plan.home_administration"]
    switch = Switch(Route.SC, SC_PRODUCTS["hizentra"], D(140), LAST_IV, D(70), home=True)
    assert convert(iv(), switch).plan.home_administration
    sc = convert(iv(), switch).plan
    back = Switch(
        Route.IV,
        SC_PRODUCTS["gammagard-liquid"],
        D(35),
        LAST_IV,
        D(70),
        iv_interval_days=28,
        from_product=SC_PRODUCTS["hizentra"],
        home=True,
    )
    assert not convert(sc, back).plan.home_administration
