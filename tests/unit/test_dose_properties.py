"""Invariants of vial rounding and infusion time, over many doses (hypothesis)."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition
from services.scheduler.domain.infusion import RateStepSpec, RateUnit, infusion_time
from services.scheduler.domain.plans import RoundingRule
from services.scheduler.domain.vials import VialSet

VIAL_SETS = [
    VialSet(tuple(D(s) for s in sizes))
    for sizes in (
        ("1", "2.5", "5", "10", "20", "30"),  # Gammagard Liquid, Panzyga
        ("2.5", "5", "10", "20", "40"),  # Privigen
        ("1", "1.65", "2", "3.3", "4", "8"),  # Cutaquig
        ("0.5", "2.5", "5", "10", "20"),  # Flebogamma DIF 5 %
        ("5",),  # Asceniv
    )
]
doses = st.decimals(min_value=D("0.5"), max_value=D(300), places=2)
vial_sets = st.sampled_from(VIAL_SETS)


def total(choice: object) -> D:
    return sum((g * n for g, n in choice.vials), D(0))  # type: ignore[attr-defined]


@given(raw=doses, vials=vial_sets, rule=st.sampled_from(list(RoundingRule)))
@settings(max_examples=300, deadline=None)
def test_the_vials_drawn_make_the_dose_plus_reported_waste(
    raw: D, vials: VialSet, rule: RoundingRule
) -> None:
    try:
        choice = vials.choose(raw, rule, D(10))
    except FailedPrecondition:
        return  # a refusal changes nothing; the band test covers when it may happen
    assert total(choice) == choice.vial_grams
    assert choice.waste_grams == choice.vial_grams - choice.dose_grams >= 0
    if rule in (RoundingRule.NEAREST, RoundingRule.DOWN, RoundingRule.UP):
        assert choice.waste_grams == 0
    if rule is RoundingRule.NONE:
        assert choice.dose_grams == raw


@given(raw=doses, vials=vial_sets)
@settings(max_examples=300, deadline=None)
def test_down_at_or_below_and_up_at_or_above_and_nearest_within_band(
    raw: D, vials: VialSet
) -> None:
    up = vials.choose(raw, RoundingRule.UP, D(10)).dose_grams
    assert up >= raw
    try:
        down = vials.choose(raw, RoundingRule.DOWN, D(10)).dose_grams
        assert down <= raw
    except FailedPrecondition:
        down = None  # below the smallest vial
    try:
        nearest = vials.choose(raw, RoundingRule.NEAREST, D(10)).dose_grams
    except FailedPrecondition:
        # refused only when both neighbours are outside ±10 %
        assert up - raw > raw / 10 and (down is None or raw - down > raw / 10)
        return
    assert abs(nearest - raw) <= raw / 10
    assert nearest in (down, up)


@given(
    grams=st.integers(min_value=1, max_value=200),
    kg=st.decimals(min_value=D(10), max_value=D(200), places=1),
    cap=st.one_of(st.none(), st.decimals(min_value=D("0.5"), max_value=D(6), places=1)),
)
@settings(max_examples=200, deadline=None)
def test_the_whole_volume_is_given_and_no_step_exceeds_the_cap(
    grams: int, kg: D, cap: D | None
) -> None:
    steps = tuple(RateStepSpec(D(r), RateUnit.ML_PER_KG_H) for r in ("0.5", "1", "2", "4", "5.4"))
    t = infusion_time(D(grams), D(10), steps, kg, cap)
    assert sum(s.volume_ml for s in t.steps) == t.volume_ml == grams * 10
    if cap is not None:
        assert all(s.rate_ml_per_kg_h <= cap for s in t.steps)
    assert t.minutes >= sum(s.minutes for s in t.steps) - 1
