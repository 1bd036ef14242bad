"""HyQvia ramp-up (docs/clinical-rules.md#hyqvia-ramp-up) against hand-worked cases; the
arithmetic is in comments. HyQvia unit sizes are not in the sources, so the tests configure
2.5, 5, 10, 20 and 30 g units."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D
from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.scheduler.domain.plans import Indication
from services.scheduler.domain.regimens.ramp_up import RAMPS, hyqvia_ramp_up
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.sc_products import SC_PRODUCTS

HYQVIA = dataclasses.replace(
    SC_PRODUCTS["hyqvia"], vial_grams=tuple(D(s) for s in ("2.5", "5", "10", "20", "30"))
)
FIRST = dt.date(2026, 3, 9)  # the last IV dose on 2 March + 7 days
KG = D(70)


def test_the_every_4_weeks_ramp_gives_25_50_75_100_100_percent() -> None:
    # 70 kg × 1 g/kg = 70 g every 28 days IV → full HyQvia dose 70 × 1.00 = 70 g (30 + 30 + 10)
    ramp = hyqvia_ramp_up(HYQVIA, Indication.PID, D(70), 28, FIRST, KG)
    assert [s.week for s in ramp.steps] == [1, 2, 4, 7, 11]
    assert [s.fraction for s in ramp.steps] == [F(1, 4), F(1, 2), F(3, 4), 1, 1]
    # days 7 × (w − 1): 0, 7, 21, 42, 70
    assert [s.day for s in ramp.steps] == [0, 7, 21, 42, 70]
    assert [s.date for s in ramp.steps] == [
        dt.date(2026, 3, 9),
        dt.date(2026, 3, 16),
        dt.date(2026, 3, 30),
        dt.date(2026, 4, 20),
        dt.date(2026, 5, 18),
    ]
    # 70 × ¼ = 17.5 g (10 + 5 + 2.5), × ½ = 35 g (30 + 5), × ¾ = 52.5 g (30 + 20 + 2.5), 70 g
    assert [s.vials.dose_grams for s in ramp.steps] == [D("17.5"), D(35), D("52.5"), D(70), D(70)]
    # at 10 %: 175, 350, 525, 700 mL; sites ⌈mL ÷ 600⌉ = 1, 1, 1, 2, 2
    assert [s.volume_ml for s in ramp.steps] == [D(175), D(350), D(525), D(700), D(700)]
    assert [s.sites for s in ramp.steps] == [1, 1, 1, 2, 2]
    assert all(s.flags == () for s in ramp.steps)
    # then every 28 days: 18 May + 28 = 15 June
    assert ramp.steady_interval_days == 28 and ramp.first_steady_date == dt.date(2026, 6, 15)
    assert "docs/clinical-rules.md#hyqvia-ramp-up" in "\n".join(ramp.rationale)


def test_the_every_3_weeks_ramp_rounds_partial_doses_to_the_nearest_unit() -> None:
    # 70 g every 21 days: ⅓ × 70 = 23.33 g → 22.5 (0.83 away) rather than 25 (1.67 away);
    # ⅔ × 70 = 46.67 g → 47.5 (0.83 away) rather than 45; then 70, 70 at weeks 4, 7
    ramp = hyqvia_ramp_up(HYQVIA, Indication.CIDP, D(70), 21, FIRST, KG)
    assert [s.day for s in ramp.steps] == [0, 7, 21, 42]
    assert [s.vials.dose_grams for s in ramp.steps] == [D("22.5"), D("47.5"), D(70), D(70)]
    assert ramp.first_steady_date == FIRST + dt.timedelta(days=42 + 21)


def test_a_dose_over_the_daily_volume_is_flagged() -> None:
    # 2 g/kg × 70 kg = 140 g = 1,400 mL > 1,200 mL a day (≥ 40 kg): flagged, not refused
    ramp = hyqvia_ramp_up(HYQVIA, Indication.MMN, D(140), 28, FIRST, KG)
    assert ramp.steps[-1].volume_ml == D(1400) and ramp.steps[-1].sites == 3
    assert ramp.steps[-1].flags == ("over_daily_volume",)
    assert ramp.steps[0].flags == ()  # 35 g = 350 mL
    # under 40 kg the day's maximum is 600 mL: ½ × 140 = 70 g = 700 mL is over
    small = hyqvia_ramp_up(HYQVIA, Indication.PID, D(140), 28, FIRST, D(35))
    assert [s.flags != () for s in small.steps] == [False, True, True, True, True]


def test_other_targets_need_the_clinicians_sequence() -> None:
    with pytest.raises(Refused) as refused:
        hyqvia_ramp_up(HYQVIA, Indication.CIDP, D(70), 14, FIRST, KG)
    assert refused.value.code == "no_ramp_for_interval"
    mine = hyqvia_ramp_up(
        HYQVIA, Indication.CIDP, D(70), 14, FIRST, KG, sequence=[(1, F(1, 2)), (2, F(1))]
    )
    assert [s.vials.dose_grams for s in mine.steps] == [D(35), D(70)]
    assert mine.first_steady_date == FIRST + dt.timedelta(days=7 + 14)
    with pytest.raises(InvalidArgument):
        hyqvia_ramp_up(
            HYQVIA, Indication.CIDP, D(70), 14, FIRST, KG, sequence=[(1, F(1)), (2, F(1, 2))]
        )
    with pytest.raises(Refused) as no_units:
        hyqvia_ramp_up(SC_PRODUCTS["hyqvia"], Indication.PID, D(70), 28, FIRST, KG)
    assert no_units.value.code == "vials_not_configured"


@given(
    units=st.integers(2, 80),  # the IV grams given are whole-vial amounts: 2.5 g units
    interval=st.sampled_from(sorted(RAMPS)),
)
@settings(max_examples=200, deadline=None)
def test_ramp_fractions_never_fall_and_end_at_the_full_dose(units: int, interval: int) -> None:
    grams = D("2.5") * units
    ramp = hyqvia_ramp_up(HYQVIA, Indication.PID, grams, interval, FIRST, KG)
    fractions = [s.fraction for s in ramp.steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1
    doses = [s.vials.dose_grams for s in ramp.steps]
    assert doses == sorted(doses) and doses[-1] == ramp.full_dose.dose_grams
    days = [s.day for s in ramp.steps]
    assert days == sorted(set(days)) and days[0] == 0
    assert ramp.first_steady_date == ramp.steps[-1].date + dt.timedelta(days=interval)
