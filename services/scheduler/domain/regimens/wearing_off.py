"""Wearing-off onset in one cycle and the expected onset over the last cycles
(docs/clinical-rules.md#wearing-off).

The next dose should land before the response fades, so the day it fades is measured per cycle:
a day the patient reports wins; otherwise the plan's measure rises from a baseline to a peak
after the infusion, and the onset is the first later reading that has lost a share ``f`` of that
gain (default half: well past the scatter of single readings, yet before a full relapse). All
comparisons are exact Decimal arithmetic, so two implementations agree on the boundary case.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.scheduler.domain.regimens.cycles import Cycle, Measure, OutcomeRecord

DEFAULT_LOSS_SHARE = Decimal("0.5")  # f: docs/clinical-rules.md#wearing-off
DEFAULT_CYCLES = 3  # N: docs/clinical-rules.md#wearing-off
BASELINE_DAYS = 7  # baseline from day −7 to day 0


class CycleVerdict(StrEnum):
    ONSET = "ONSET"
    NO_WEARING_OFF = "NO_WEARING_OFF"  # complete, evaluable, no onset
    PENDING = "PENDING"  # incomplete and no onset yet: does not count
    NO_BASELINE = "NO_BASELINE"
    NO_POST_INFUSION_VALUE = "NO_POST_INFUSION_VALUE"
    NO_RESPONSE = "NO_RESPONSE"  # gain ≤ 0: flagged to the clinician
    LATE_DOSE = "LATE_DOSE"  # onset on or after the planned interval day

    @property
    def evaluable(self) -> bool:
        return self in (CycleVerdict.ONSET, CycleVerdict.NO_WEARING_OFF)


@dataclass(frozen=True)
class CycleOnset:
    cycle: Cycle
    verdict: CycleVerdict
    onset_day: int | None
    explanation: str


def cycle_onset(
    cycle: Cycle,
    records: Iterable[OutcomeRecord],
    interval_days: int,
    measure: Measure = Measure.GRIP_STRENGTH_KG,
    lower_is_better: bool = False,
    loss_share: Decimal = DEFAULT_LOSS_SHARE,
) -> CycleOnset:
    """``records`` may hold the patient's whole series: the baseline looks back 7 days before
    day 0, into the previous cycle. ``interval_days`` is the planned interval of the cycle's
    regimen version."""
    records = tuple(records)
    end_day = cycle.day(cycle.end) if cycle.end is not None else None

    def inside(day: int) -> bool:
        return day >= 0 and (end_day is None or day <= end_day)

    reported = sorted(
        cycle.day(r.date)
        for r in records
        if r.measure is Measure.WEARING_OFF and inside(cycle.day(r.date))
    )
    if reported:
        return _judge(cycle, reported[0], interval_days, "reported by the patient")
    if measure is Measure.WEARING_OFF:
        raise ValueError("the plan's measure must be a measured value, not WEARING_OFF")
    sign = Decimal(-1) if lower_is_better else Decimal(1)
    series = sorted(  # by day only: the sort is stable, so one day's records keep their order
        (
            (cycle.day(r.date), sign * r.value)
            for r in records
            if r.measure is measure and r.value is not None
        ),
        key=lambda day_value: day_value[0],
    )
    before = [(d, v) for d, v in series if -BASELINE_DAYS <= d <= 0]
    after = [(d, v) for d, v in series if d >= 1 and inside(d)]
    if not before:
        return _no(cycle, CycleVerdict.NO_BASELINE, "no baseline value from day −7 to day 0")
    if not after:
        return _no(cycle, CycleVerdict.NO_POST_INFUSION_VALUE, "no value after the infusion")
    baseline = before[-1][1]  # the latest; on the same day the later record wins
    peak_day, peak = after[0]
    for day, value in after:
        if value > peak:
            peak_day, peak = day, value
    gain = peak - baseline
    if gain <= 0:
        return _no(
            cycle,
            CycleVerdict.NO_RESPONSE,
            f"no response: peak {_v(sign * peak)} is not above baseline {_v(sign * baseline)}",
        )
    threshold = peak - loss_share * gain
    for day, value in after:
        if day > peak_day and value <= threshold:
            how = (
                f"{measure.value.lower()} fell to {_v(sign * value)} on day {day}, at or past "
                f"{_v(sign * threshold)} = peak {_v(sign * peak)} (day {peak_day}) − "
                f"{_v(loss_share)} × gain {_v(gain)} over baseline {_v(sign * baseline)}"
            )
            return _judge(cycle, day, interval_days, how)
    if cycle.complete:
        return CycleOnset(
            cycle, CycleVerdict.NO_WEARING_OFF, None, "complete cycle without wearing-off"
        )
    return CycleOnset(cycle, CycleVerdict.PENDING, None, "cycle under way, no onset yet")


def _judge(cycle: Cycle, day: int, interval_days: int, how: str) -> CycleOnset:
    if day >= interval_days:
        return _no(
            cycle,
            CycleVerdict.LATE_DOSE,
            f"onset on day {day} ({how}) is on or after the planned interval day "
            f"{interval_days}: a late dose, not wearing-off",
        )
    return CycleOnset(cycle, CycleVerdict.ONSET, day, f"wearing-off on day {day}: {how}")


def _no(cycle: Cycle, verdict: CycleVerdict, text: str) -> CycleOnset:
    return CycleOnset(cycle, verdict, None, text)


def _v(value: Decimal) -> str:
    return format(value.normalize(), "f")


class Expectation(StrEnum):
    WEARING_OFF = "WEARING_OFF"  # two or more onsets: expected onset E
    STABLE = "STABLE"  # no onset in the last N evaluable cycles
    INCONCLUSIVE = "INCONCLUSIVE"  # one onset, or fewer than N evaluable cycles: no proposal


@dataclass(frozen=True)
class ExpectedOnset:
    expectation: Expectation
    day: int | None  # E, for WEARING_OFF
    cycles: tuple[CycleOnset, ...]  # the last N evaluable cycles, oldest first
    explanation: str


def expected_onset(
    onsets: Sequence[CycleOnset], cycles_wanted: int = DEFAULT_CYCLES
) -> ExpectedOnset:
    """Over the last N evaluable cycles: 2 or more onsets give E = their lower median (of 3 the
    middle, of 2 the earlier); none gives "stable"; otherwise inconclusive."""
    evaluable = sorted((o for o in onsets if o.verdict.evaluable), key=lambda o: o.cycle.start)
    last = tuple(evaluable[-cycles_wanted:])
    if len(last) < cycles_wanted:
        return ExpectedOnset(
            Expectation.INCONCLUSIVE,
            None,
            last,
            f"{len(last)} evaluable cycle(s) of the {cycles_wanted} needed "
            "(docs/clinical-rules.md#wearing-off)",
        )
    days = sorted(o.onset_day for o in last if o.onset_day is not None)
    listed = ", ".join(str(d) for d in days)
    if not days:
        return ExpectedOnset(
            Expectation.STABLE,
            None,
            last,
            f"no wearing-off in the last {cycles_wanted} evaluable cycles: stable "
            "(docs/clinical-rules.md#wearing-off)",
        )
    if len(days) == 1:
        return ExpectedOnset(
            Expectation.INCONCLUSIVE,
            None,
            last,
            f"one onset (day {listed}) in the last {cycles_wanted} evaluable cycles: "
            "inconclusive (docs/clinical-rules.md#wearing-off)",
        )
    day = days[(len(days) - 1) // 2]
    return ExpectedOnset(
        Expectation.WEARING_OFF,
        day,
        last,
        f"onsets on days {listed} in the last {cycles_wanted} evaluable cycles: expected "
        f"onset day {day}, their lower median (docs/clinical-rules.md#wearing-off)",
    )
