"""Cycles, wearing-off onset and the expected onset (docs/clinical-rules.md#regimen-cycles,
#wearing-off) against hand-worked series; the arithmetic is in comments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.domain.regimens.cycles import (
    Administration,
    Cycle,
    Measure,
    OutcomeRecord,
    build_cycles,
    current_cycles,
    cycle_of,
)
from services.scheduler.domain.regimens.wearing_off import (
    CycleOnset,
    CycleVerdict,
    Expectation,
    cycle_onset,
    expected_onset,
)

START = dt.date(2026, 1, 5)
GRIP = Measure.GRIP_STRENGTH_KG


def day(n: int, start: dt.date = START) -> dt.date:
    return start + dt.timedelta(days=n)


def grip(start: dt.date, values: dict[int, str]) -> list[OutcomeRecord]:
    return [OutcomeRecord(day(d, start), GRIP, D(v)) for d, v in values.items()]


def test_cycles_run_from_one_administration_to_the_day_before_the_next() -> None:
    # Day 0 on 5 Jan; a split course's second day (6 Jan) starts no cycle; next on 2 Feb.
    cycles = build_cycles(
        [
            Administration(day(0), 1),
            Administration(day(1), 1, course_day=2),
            Administration(day(28), 1),
            Administration(day(56), 2),
        ]
    )
    assert [c.start for c in cycles] == [day(0), day(28), day(56)]
    assert cycles[0].end == day(27) and cycles[0].complete
    assert cycles[-1].end is None and not cycles[-1].complete
    # only the current version's cycles count: version 2 restarts the count
    assert current_cycles(cycles, 2) == (cycles[2],)


def test_a_record_belongs_to_the_cycle_with_the_latest_day_0_on_or_before_it() -> None:
    cycles = build_cycles([Administration(day(0), 1), Administration(day(28), 1)])
    assert cycle_of(day(27), cycles) == cycles[0]
    assert cycle_of(day(28), cycles) == cycles[1]  # day 0 of the second cycle
    assert cycle_of(day(-1), cycles) is None


def cycle(start: dt.date = START, length: int | None = 28) -> Cycle:
    end = day(length - 1, start) if length is not None else None
    return Cycle(start, 1, end)


def test_onset_is_the_first_reading_after_the_peak_that_lost_half_the_gain() -> None:
    # baseline B = 20 (day 0), peak P = 30 (day 7), gain G = 10;
    # threshold P − 0.5 × G = 30 − 5 = 25: day 21 (27) is above it, day 24 (25) is at it.
    records = grip(START, {-3: "19", 0: "20", 7: "30", 14: "29", 21: "27", 24: "25", 27: "22"})
    result = cycle_onset(cycle(), records, interval_days=28)
    assert result.verdict is CycleVerdict.ONSET and result.onset_day == 24
    assert "day 24" in result.explanation


def test_of_two_baseline_readings_on_one_day_the_later_recorded_wins() -> None:
    # day 0: 20 then a re-test of 10, so B = 10 (the later record, not the higher value);
    # P = 30 (day 3), G = 20, threshold 30 − 0.5 × 20 = 20: day 10 (21) is above it → no onset,
    # day 14 (20) is at it → onset day 14. With B = 20 the threshold would be 25 and day 10 onset.
    records = [
        OutcomeRecord(day(0), GRIP, D("20")),
        OutcomeRecord(day(0), GRIP, D("10")),
        *grip(START, {3: "30", 10: "21", 14: "20"}),
    ]
    assert cycle_onset(cycle(), records, 28).onset_day == 14


def test_the_threshold_is_compared_exactly() -> None:
    # B = 20.1, P = 30.3, G = 10.2, threshold 30.3 − 5.1 = 25.2: 25.21 is above, 25.20 is at it
    records = grip(START, {0: "20.1", 5: "30.3", 20: "25.21", 22: "25.20"})
    assert cycle_onset(cycle(), records, 28).onset_day == 22


def test_a_reported_day_wins_the_earliest_if_several() -> None:
    records = grip(START, {0: "20", 7: "30", 24: "25"}) + [
        OutcomeRecord(day(19), Measure.WEARING_OFF),
        OutcomeRecord(day(17), Measure.WEARING_OFF),
    ]
    result = cycle_onset(cycle(), records, 28)
    assert result.onset_day == 17 and "reported" in result.explanation


def test_a_lower_is_better_scale_is_negated() -> None:
    # ONLS (lower is better): 4 before, 2 at best (negated: −4 → −2, gain 2), threshold
    # −2 − 0.5 × 2 = −3, that is a score of 3 or more: day 20
    records = [
        OutcomeRecord(day(d), Measure.DISABILITY_SCORE, D(v))
        for d, v in {0: "4", 6: "2", 15: "2", 20: "3"}.items()
    ]
    result = cycle_onset(cycle(), records, 28, Measure.DISABILITY_SCORE, lower_is_better=True)
    assert result.onset_day == 20


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ({-8: "20", 7: "30"}, CycleVerdict.NO_BASELINE),  # day −8 is outside −7…0
        ({0: "20"}, CycleVerdict.NO_POST_INFUSION_VALUE),
        ({0: "20", 7: "20", 14: "19"}, CycleVerdict.NO_RESPONSE),  # G = 0
        ({0: "20", 7: "30", 28: "24"}, CycleVerdict.NO_WEARING_OFF),  # day 28 is the next cycle
        ({0: "20", 7: "30", 27: "26"}, CycleVerdict.NO_WEARING_OFF),
    ],
)
def test_verdicts_of_a_complete_cycle(values: dict[int, str], verdict: CycleVerdict) -> None:
    assert cycle_onset(cycle(), grip(START, values), 28).verdict is verdict


def test_an_onset_on_the_planned_interval_day_is_a_late_dose() -> None:
    # a 35-day cycle (the dose came a week late) of a 28-day plan: onset day 30 ≥ 28
    records = grip(START, {0: "20", 7: "30", 30: "24"})
    assert cycle_onset(cycle(length=35), records, 28).verdict is CycleVerdict.LATE_DOSE


def test_an_incomplete_cycle_counts_only_once_an_onset_is_found() -> None:
    running = cycle(length=None)
    assert cycle_onset(running, grip(START, {0: "20", 7: "30"}), 28).verdict is (
        CycleVerdict.PENDING
    )
    found = cycle_onset(running, grip(START, {0: "20", 7: "30", 23: "24"}), 28)
    assert found.verdict is CycleVerdict.ONSET and found.onset_day == 23


def onsets(*days: int | None) -> list[CycleOnset]:
    out = []
    for i, d in enumerate(days):
        verdict = CycleVerdict.ONSET if d is not None else CycleVerdict.NO_WEARING_OFF
        out.append(CycleOnset(cycle(day(28 * i)), verdict, d, ""))
    return out


def test_expected_onset_is_the_lower_median_of_the_last_three() -> None:
    # last three of 20, 25, 23, 24: sorted 23, 24, 25 → the middle, 24
    result = expected_onset(onsets(20, 25, 23, 24))
    assert result.expectation is Expectation.WEARING_OFF and result.day == 24
    # two onsets and a cycle without: the earlier of the two
    assert expected_onset(onsets(25, None, 22)).day == 22


def test_stable_and_inconclusive() -> None:
    assert expected_onset(onsets(None, None, None)).expectation is Expectation.STABLE
    assert expected_onset(onsets(24, None, None)).expectation is Expectation.INCONCLUSIVE
    assert expected_onset(onsets(24, 23)).expectation is Expectation.INCONCLUSIVE  # 2 < N = 3
    not_evaluable = CycleOnset(cycle(), CycleVerdict.NO_BASELINE, None, "")
    assert expected_onset([not_evaluable, *onsets(24, 23)]).expectation is (
        Expectation.INCONCLUSIVE
    )


@given(st.lists(st.one_of(st.none(), st.integers(1, 181)), min_size=3, max_size=8))
@settings(max_examples=200, deadline=None)
def test_the_expected_onset_is_one_of_the_last_cycles_onsets(days: list[int | None]) -> None:
    result = expected_onset(onsets(*days))
    last = [d for d in days[-3:] if d is not None]
    if len(last) >= 2:
        assert result.day in last and result.day <= sorted(last)[len(last) // 2]
    else:
        assert result.day is None
