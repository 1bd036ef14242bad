"""Regimen proposals (docs/clinical-rules.md#interval-shortening, #dose-reduction-trial,
#split-over-days) against hand-worked cases; the arithmetic is in comments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition
from services.scheduler.domain.plans import RoundingRule
from services.scheduler.domain.regimens.cycles import (
    Administration,
    Measure,
    OutcomeRecord,
    build_cycles,
)
from services.scheduler.domain.regimens.proposals import (
    IntervalUnit,
    NoProposal,
    Proposal,
    ProposalKind,
    Regimen,
    propose,
    reduction_trial,
    shorter_interval,
    split_over_days,
)
from services.scheduler.domain.regimens.wearing_off import (
    CycleOnset,
    CycleVerdict,
    cycle_onset,
    expected_onset,
)

GAMMAGARD = tuple(D(s) for s in ("1", "2.5", "5", "10", "20", "30"))
START = dt.date(2026, 1, 5)


def regimen(interval: int, day_grams: tuple[str, ...], g_per_kg: str) -> Regimen:
    return Regimen(interval, tuple(D(g) for g in day_grams), D(70), GAMMAGARD, D(g_per_kg))


def test_grip_strength_falling_on_day_24_of_28_gives_21_days() -> None:
    # 70 kg, 2 g/kg every 28 days of Gammagard Liquid = 140 g (4 × 30 + 20) a cycle.
    # Three cycles: grip 20 kg before, 30 kg on day 7, 25 kg on day 24 (threshold
    # 30 − 0.5 × (30 − 20) = 25), then the next dose on day 28.
    admins = [Administration(START + dt.timedelta(days=28 * i), 1) for i in range(4)]
    cycles = build_cycles(admins)
    records = [
        OutcomeRecord(c.start + dt.timedelta(days=d), Measure.GRIP_STRENGTH_KG, D(v))
        for c in cycles[:3]
        for d, v in ((0, "20"), (7, "30"), (14, "29"), (21, "27"), (24, "25"))
    ]
    found = [cycle_onset(c, records, 28) for c in cycles[:3]]
    assert [f.onset_day for f in found] == [24, 24, 24]
    expected = expected_onset(found)  # lower median of 24, 24, 24 = 24
    result = propose(regimen(28, ("140",), "2"), expected)
    assert isinstance(result, Proposal)
    # E − margin = 24 − 2 = 22 days, down to whole weeks: 22 // 7 × 7 = 21; lead 24 − 21 = 3
    assert result.kind is ProposalKind.SHORTER_INTERVAL
    assert result.interval_days == 21 and result.lead_days == 3
    assert result.expected_onset_day == 24
    # dose unchanged; 140 × 7 ÷ 28 = 35 g a week → 140 × 7 ÷ 21 = 46.67 g a week
    assert result.day_grams == (D(140),)
    assert result.grams_per_week_before == D(35)
    assert round(result.grams_per_week_after, 2) == D("46.67")
    assert result.flags == ()
    text = "\n".join(result.rationale)
    assert "24 − 2 days' margin = 22 days, rounded down to whole weeks = 21 days" in text
    assert "Lead 24 − 21 = 3 days" in text
    assert "35 g a week" in text and "46.67 g a week" in text
    assert "docs/clinical-rules.md#interval-shortening" in text


def test_whole_days_and_the_seven_day_floor() -> None:
    r = regimen(28, ("140",), "2")
    # day option: 24 − 2 = 22 days exactly
    assert shorter_interval(r, 24, unit=IntervalUnit.DAY).interval_days == 22
    # E = 8: 8 − 2 = 6 → 0 weeks → at least 7 days, flagged
    low = shorter_interval(r, 8)
    assert low.interval_days == 7 and low.flags == ("at_minimum_interval",)
    assert "raising the dose is the clinician's decision" in "\n".join(low.rationale)
    # a 5-day plan stays at 5 days: never longer than the current interval, flagged
    five = shorter_interval(regimen(5, ("35",), "0.5"), 4)
    assert five.interval_days == 5 and five.flags == ("at_minimum_interval",)


def test_a_stable_patient_on_1_g_per_kg_every_3_weeks_gets_a_reduction_trial() -> None:
    # 70 kg × 1 g/kg = 70 g (30 + 30 + 10) every 21 days, stable over the last 3 cycles.
    # 21 < 56 days → trial: 1 − 10 % = 0.9 g/kg × 70 kg = 63 g; nearest whole-vial amount
    # 63 g exactly = 2 × 30 + 3 × 1 g (5 vials; 30 + 20 + 10 + 3 × 1 would be 6).
    stable = [
        CycleOnset(c, CycleVerdict.NO_WEARING_OFF, None, "")
        for c in build_cycles(
            [Administration(START + dt.timedelta(days=21 * i), 1) for i in range(4)]
        )[:3]
    ]
    result = propose(regimen(21, ("70",), "1"), expected_onset(stable))
    assert isinstance(result, Proposal)
    assert result.kind is ProposalKind.REDUCTION_TRIAL
    assert result.interval_days == 21
    assert result.g_per_kg == D("0.9")
    assert result.day_grams == (D(63),)
    assert result.vials[0].vials == ((D(30), 2), (D(1), 3))
    # 70 × 7 ÷ 21 = 23.33 g a week → 63 × 7 ÷ 21 = 21 g a week
    assert result.grams_per_week_after == D(21)
    text = "\n".join(result.rationale)
    assert "1 g/kg − 10 % = 0.9 g/kg × 70 kg = 63 g" in text
    assert "docs/clinical-rules.md#dose-reduction-trial" in text


def test_a_reduction_that_rounds_back_up_takes_the_largest_amount_below() -> None:
    # Asceniv-like 5 g vials only, 70 kg, fixed 35 g: 35 ÷ 70 = 0.5 g/kg − 10 % = 0.45 g/kg
    # × 70 = 31.5 g → nearest 30 g (1.5 g away, band 3.15 g): below 35, kept.
    five = Regimen(21, (D(35),), D(70), (D(5),))
    trial = reduction_trial(five)
    assert isinstance(trial, Proposal) and trial.day_grams == (D(30),)
    # 10 g vials, fixed 10 g at 70 kg, UP rounding: 10 ÷ 70 g/kg − 10 % = 9 ÷ 70 g/kg × 70
    # = 9 g → up 10 g, the current grams → no whole-vial amount below 10 g → no proposal.
    ten = Regimen(21, (D(10),), D(70), (D(10),), rounding_rule=RoundingRule.UP)
    assert isinstance(reduction_trial(ten), NoProposal)
    # 1 g vials, UP rounding: 0.9 × 70 = 63 → up 63; with 0.99 g/kg × 70 = 69.3 → up 70 =
    # the current 70 g → the largest amount below it, 69 g
    up = Regimen(21, (D(70),), D(70), (D(1),), D(1), RoundingRule.UP)
    near = reduction_trial(up, share=D("0.01"))
    assert isinstance(near, Proposal) and near.day_grams == (D(69),)
    assert "not below the current 70 g" in "\n".join(near.rationale)


def test_no_reduction_trial_at_long_intervals_or_below_the_band() -> None:
    long = reduction_trial(regimen(56, ("140",), "2"))
    assert isinstance(long, NoProposal) and long.code == "stable_long_interval"
    # 0.1 g/kg − 10 % = 0.09 g/kg < 0.1
    low = reduction_trial(regimen(21, ("7",), "0.1"))
    assert isinstance(low, NoProposal) and low.code == "below_minimum_dose"


def test_a_dose_above_the_daily_maximum_is_split_over_days() -> None:
    # 2 g/kg in one day > 1 g/kg a day: ⌈2 ÷ 1⌉ = 2 days of 2 × 70 ÷ 2 = 70 g (30 + 30 + 10)
    result = split_over_days(regimen(28, ("140",), "2"))
    assert isinstance(result, Proposal) and result.kind is ProposalKind.SPLIT_OVER_DAYS
    assert result.day_grams == (D(70), D(70))
    assert result.vials[0].vials == ((D(30), 2), (D(10), 1))
    # 2.4 g/kg at a 0.8 g/kg maximum: ⌈2.4 ÷ 0.8⌉ = 3 days of 2.4 × 70 ÷ 3 = 56 g
    three = split_over_days(regimen(28, ("168",), "2.4"), D("0.8"))
    assert isinstance(three, Proposal) and three.day_grams == (D(56),) * 3
    inside = split_over_days(regimen(28, ("70", "70"), "2"))
    assert isinstance(inside, NoProposal) and inside.code == "within_daily_maximum"


@given(
    current=st.integers(7, 182),
    onset=st.integers(0, 181),
    margin=st.integers(0, 14),
    unit=st.sampled_from(list(IntervalUnit)),
)
@settings(max_examples=300, deadline=None)
def test_a_proposed_interval_is_never_longer_and_at_least_7_days(
    current: int, onset: int, margin: int, unit: IntervalUnit
) -> None:
    onset = min(onset, current - 1)  # an onset on or after the interval day is a late dose
    result = shorter_interval(regimen(current, ("70",), "1"), onset, margin, unit)
    assert 7 <= result.interval_days <= current
    assert result.day_grams == (D(70),)
    if unit is IntervalUnit.WEEK and result.interval_days not in (7, current):
        assert result.interval_days % 7 == 0
    if result.interval_days > 7:
        assert result.interval_days <= onset - margin  # the dose lands before E − margin


@given(g_per_kg=st.decimals(D("0.2"), D("2.5"), places=2), interval=st.integers(7, 55))
@settings(max_examples=200, deadline=None)
def test_a_reduction_trial_always_lowers_the_grams(g_per_kg: D, interval: int) -> None:
    grams = D(70) * g_per_kg
    current = Regimen(interval, (grams.to_integral_value(),), D(70), GAMMAGARD, g_per_kg)
    try:
        trial = reduction_trial(current)
    except FailedPrecondition:  # a rounding band the plan would refuse as well
        return
    if isinstance(trial, Proposal):
        assert trial.cycle_grams < current.cycle_grams
        assert trial.interval_days == interval
