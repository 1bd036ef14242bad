"""Outcome records' validation bands and the one series the wearing-off rule reads from them
(services/scheduler/domain/regimens/outcomes.py, docs/regimens.md "What the scheduler
serves")."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.common.settings import SettingsError
from services.scheduler.domain.regimens.cycles import Cycle, Measure, OutcomeRecord
from services.scheduler.domain.regimens.outcomes import (
    Hand,
    OutcomeEntry,
    Scale,
    grip_hand,
    series,
    validate_outcome,
)
from services.scheduler.domain.regimens.reviews import (
    Decision,
    ReviewDecision,
    ReviewMonths,
    ReviewPolicies,
    review_due,
)
from services.scheduler.domain.regimens.wearing_off import CycleVerdict, cycle_onset
from services.scheduler.settings import load_settings

TODAY = dt.date(2026, 12, 2)
DAY = dt.date(2026, 12, 1)


def entry(measure: Measure, value: str | None = None, **kw: object) -> OutcomeEntry:
    fields: dict[str, object] = dict(
        id="o",
        patient_id="p",
        plan_id="tp",
        recorded_on=DAY,
        measure=measure,
        value=None if value is None else Decimal(value),
    )
    fields.update(kw)
    return OutcomeEntry(**fields)  # type: ignore[arg-type]


def bad(e: OutcomeEntry) -> list[str]:
    return [v.field for v in validate_outcome(e, TODAY).items]


@pytest.mark.parametrize(
    ("e", "fields"),
    [
        (entry(Measure.GRIP_STRENGTH_KG, "0", hand=Hand.LEFT), []),
        (entry(Measure.GRIP_STRENGTH_KG, "100", hand=Hand.RIGHT), []),
        (entry(Measure.GRIP_STRENGTH_KG, "31.5", hand=Hand.RIGHT), []),  # kg may carry a decimal
        (entry(Measure.GRIP_STRENGTH_KG, "100.1", hand=Hand.RIGHT), ["outcome.value"]),
        (entry(Measure.GRIP_STRENGTH_KG, "30"), ["outcome.hand"]),
        (entry(Measure.GRIP_STRENGTH_KG, None, hand=Hand.LEFT), ["outcome.value"]),
        (entry(Measure.MRC_SUM_SCORE, "60"), []),
        (entry(Measure.MRC_SUM_SCORE, "61"), ["outcome.value"]),
        (entry(Measure.MRC_SUM_SCORE, "52.5"), ["outcome.value"]),  # whole points
        (entry(Measure.MRC_SUM_SCORE, "52", hand=Hand.LEFT), ["outcome.hand"]),
        (entry(Measure.DISABILITY_SCORE, "10", scale=Scale.INCAT), []),
        (entry(Measure.DISABILITY_SCORE, "11", scale=Scale.INCAT), ["outcome.value"]),
        (entry(Measure.DISABILITY_SCORE, "12", scale=Scale.ONLS), []),
        (entry(Measure.DISABILITY_SCORE, "13", scale=Scale.ONLS), ["outcome.value"]),
        (entry(Measure.DISABILITY_SCORE, "100", scale=Scale.I_RODS), []),
        (entry(Measure.DISABILITY_SCORE, "3"), ["outcome.scale"]),
        (
            entry(Measure.GRIP_STRENGTH_KG, "30", hand=Hand.LEFT, scale=Scale.ONLS),
            ["outcome.scale"],
        ),
        (entry(Measure.WEARING_OFF), []),
        (entry(Measure.WEARING_OFF, wearing_off_none=True), []),
        (entry(Measure.WEARING_OFF, "3"), ["outcome.value"]),
        (entry(Measure.MRC_SUM_SCORE, "40", wearing_off_none=True), ["outcome.wearing_off_none"]),
        (
            entry(Measure.WEARING_OFF, recorded_on=TODAY + dt.timedelta(days=1)),
            ["outcome.recorded_on"],
        ),
        (entry(Measure.WEARING_OFF, plan_id=""), ["outcome.therapy_plan_id"]),
    ],
)
def test_bands_and_fields(e: OutcomeEntry, fields: list[str]) -> None:
    assert bad(e) == fields


def test_every_bad_field_at_once() -> None:
    e = entry(Measure.DISABILITY_SCORE, "2.5", hand=Hand.LEFT, recorded_on=dt.date(2027, 1, 1))
    assert sorted(bad(e)) == ["outcome.hand", "outcome.recorded_on", "outcome.scale"]


def test_the_hand_with_more_records_is_read_and_the_right_one_on_a_tie() -> None:
    left = entry(Measure.GRIP_STRENGTH_KG, "20", hand=Hand.LEFT)
    right = entry(Measure.GRIP_STRENGTH_KG, "30", hand=Hand.RIGHT)
    assert grip_hand([left, left, right]) is Hand.LEFT
    assert grip_hand([left, right]) is Hand.RIGHT
    assert grip_hand([]) is Hand.RIGHT


def test_series_keeps_reported_days_and_one_hand_and_drops_none() -> None:
    d = dt.date(2026, 12, 9)
    entries = [
        entry(Measure.GRIP_STRENGTH_KG, "20", hand=Hand.RIGHT),
        entry(Measure.GRIP_STRENGTH_KG, "11", hand=Hand.LEFT),
        entry(Measure.MRC_SUM_SCORE, "50"),
        entry(Measure.WEARING_OFF, recorded_on=d),
        entry(Measure.WEARING_OFF, recorded_on=d, wearing_off_none=True),
    ]
    got = series(entries)
    assert got.label == "grip strength, right hand" and not got.lower_is_better
    assert got.records == (
        OutcomeRecord(DAY, Measure.GRIP_STRENGTH_KG, Decimal("20")),
        OutcomeRecord(d, Measure.WEARING_OFF),
    )
    assert series(entries, hand=Hand.LEFT).records[0].value == Decimal("11")
    assert [r.value for r in series(entries, Measure.MRC_SUM_SCORE).records] == [
        Decimal("50"),
        None,
    ]
    with pytest.raises(ValueError):
        series(entries, Measure.DISABILITY_SCORE)


def test_a_lower_is_better_scale_is_read_negated() -> None:
    """ONLS 4 before the infusion, 2 on day 7 (better), 3 on day 20: negated, baseline −4, peak
    −2, gain 2; −3 ≤ −2 − 0.5 × 2 = −3, so wearing-off on day 20. I-RODS is higher-better."""
    start = dt.date(2026, 12, 1)
    scores = [(0, "4"), (7, "2"), (20, "3")]
    entries = [
        entry(
            Measure.DISABILITY_SCORE,
            v,
            scale=Scale.ONLS,
            recorded_on=start + dt.timedelta(days=d),
        )
        for d, v in scores
    ]
    onls = series(entries, Measure.DISABILITY_SCORE, scale=Scale.ONLS)
    assert onls.lower_is_better and onls.label == "ONLS"
    cycle = Cycle(start, 1, start + dt.timedelta(days=27))
    found = cycle_onset(cycle, onls.records, 28, onls.measure, lower_is_better=True)
    assert (found.verdict, found.onset_day) == (CycleVerdict.ONSET, 20)
    assert series(entries, Measure.DISABILITY_SCORE, scale=Scale.I_RODS).records == ()
    assert not series(entries, Measure.DISABILITY_SCORE, scale=Scale.I_RODS).lower_is_better


def test_an_organisation_may_have_its_own_review_months() -> None:
    """Start 31 August 2026: 3 months → 30 November (clamped); a continue on 15 January 2027
    + 6 months → 15 July 2027. Others keep 6 and 12: 28 February 2027, then 15 January 2028."""
    policies = ReviewPolicies(by_organisation=(("org-a", ReviewMonths(3, 6)),))
    start = dt.date(2026, 8, 31)
    decided = [ReviewDecision(dt.date(2027, 1, 15), Decision.CONTINUE)]
    own = review_due(start, decided[:0], policies.of("org-a"))
    assert own.due == dt.date(2026, 11, 30) and "+ 3 months" in own.explanation[0]
    assert review_due(start, decided, policies.of("org-a")).due == dt.date(2027, 7, 15)
    assert review_due(start, [], policies.of("org-b")).due == dt.date(2027, 2, 28)
    assert review_due(start, decided, policies.of("org-b")).due == dt.date(2028, 1, 15)
    with pytest.raises(ValueError):
        ReviewMonths(0, 12)


def test_review_months_settings() -> None:
    env = {"SCHEDULER_DATABASE_URL": "sqlite://"}
    assert load_settings(env).review_policies() == ReviewPolicies()
    custom = load_settings(
        {
            **env,
            "SCHEDULER_REVIEW_MONTHS": "4,12",
            "SCHEDULER_REVIEW_MONTHS_BY_ORGANISATION": "org-a=3,6; org-b=6,6",
        }
    ).review_policies()
    assert custom.default == ReviewMonths(4, 12)
    assert (custom.of("org-a"), custom.of("org-b"), custom.of("org-c")) == (
        ReviewMonths(3, 6),
        ReviewMonths(6, 6),
        ReviewMonths(4, 12),
    )
    for bad_value in (
        {"SCHEDULER_REVIEW_MONTHS": "6"},
        {"SCHEDULER_REVIEW_MONTHS": "0,12"},
        {"SCHEDULER_REVIEW_MONTHS_BY_ORGANISATION": "org-a"},
    ):
        with pytest.raises(SettingsError):
            load_settings({**env, **bad_value})
