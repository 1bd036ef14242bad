"""Outcome records as the clinic stores them, their validation bands, and the one series the
wearing-off rule reads from them (docs/regimens.md, "Outcome records").

A record is one dated measure under a plan: grip strength of one hand (dynamometer, kg), the MRC
sum score, a disability scale (INCAT, ONLS or I-RODS), or the day the patient reports weakness
returning (or "none" since the last infusion). The wearing-off rule reads one measure at a time
(docs/clinical-rules.md#wearing-off), so grip strength is read per hand and a disability score
per scale; a lower-is-better scale (INCAT, ONLS) is negated there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.common.errors import Violations
from services.scheduler.domain.regimens.cycles import Measure, OutcomeRecord


class Hand(StrEnum):
    LEFT = "LEFT"
    RIGHT = "RIGHT"


class Scale(StrEnum):
    INCAT = "INCAT"  # 0–10, higher is worse
    ONLS = "ONLS"  # 0–12, higher is worse
    I_RODS = "I_RODS"  # centile 0–100, higher is better


GRIP_KG_BAND = (Decimal(0), Decimal(100))
MRC_SUM_BAND = (Decimal(0), Decimal(60))  # 12 muscle groups × 0–5
SCALE_BANDS = {
    Scale.INCAT: (Decimal(0), Decimal(10)),
    Scale.ONLS: (Decimal(0), Decimal(12)),
    Scale.I_RODS: (Decimal(0), Decimal(100)),
}
LOWER_IS_BETTER = frozenset({Scale.INCAT, Scale.ONLS})


@dataclass(frozen=True)
class OutcomeEntry:
    id: str
    patient_id: str
    plan_id: str
    recorded_on: dt.date
    measure: Measure
    value: Decimal | None = None
    hand: Hand | None = None
    scale: Scale | None = None
    wearing_off_none: bool = False
    appointment_id: str = ""
    note: str = ""
    recorded_by: str = ""


def validate_outcome(entry: OutcomeEntry, today: dt.date, prefix: str = "outcome") -> Violations:
    """Every bad field at once. ``today`` is the last day a record may carry (the caller gives
    a day of slack for clinics west of UTC)."""
    v = Violations()
    p = prefix
    if not entry.plan_id:
        v.add(f"{p}.therapy_plan_id", "is required")
    if entry.recorded_on > today:
        v.add(f"{p}.recorded_on", f"{entry.recorded_on} is in the future")
    measure = entry.measure
    if measure is Measure.WEARING_OFF:
        if entry.value is not None:
            v.add(f"{p}.value", "must be empty for a reported wearing-off day")
    elif entry.wearing_off_none:
        v.add(f"{p}.wearing_off_none", "is for OUTCOME_MEASURE_WEARING_OFF only")
    if measure is Measure.GRIP_STRENGTH_KG:
        if entry.hand is None:
            v.add(f"{p}.hand", "is required for grip strength")
    elif entry.hand is not None:
        v.add(f"{p}.hand", "is for grip strength only")
    if measure is Measure.DISABILITY_SCORE:
        if entry.scale is None:
            v.add(f"{p}.scale", "is required for a disability score")
    elif entry.scale is not None:
        v.add(f"{p}.scale", "is for a disability score only")
    band = _band(entry)
    if band is not None:
        low, high, unit, whole = band
        value = entry.value
        if value is None:
            v.add(f"{p}.value", "is required")
        elif not low <= value <= high:
            v.add(
                f"{p}.value",
                f"{_n(value)} is outside {_n(low)}–{_n(high)} {unit} (docs/regimens.md)",
            )
        elif whole and value != value.to_integral_value():
            v.add(f"{p}.value", f"{_n(value)} is not a whole number of {unit}")
    return v


def _band(entry: OutcomeEntry) -> tuple[Decimal, Decimal, str, bool] | None:
    if entry.measure is Measure.GRIP_STRENGTH_KG:
        return (*GRIP_KG_BAND, "kg", False)
    if entry.measure is Measure.MRC_SUM_SCORE:
        return (*MRC_SUM_BAND, "points", True)
    if entry.measure is Measure.DISABILITY_SCORE and entry.scale is not None:
        low, high = SCALE_BANDS[entry.scale]
        return low, high, f"{entry.scale.value.replace('_', '-')} points", True
    return None


def _n(value: Decimal) -> str:
    return format(value.normalize(), "f")


def grip_hand(entries: Iterable[OutcomeEntry]) -> Hand:
    """The hand with the most grip-strength records (the right one on a tie)."""
    counts = {Hand.LEFT: 0, Hand.RIGHT: 0}
    for e in entries:
        if e.measure is Measure.GRIP_STRENGTH_KG and e.hand is not None:
            counts[e.hand] += 1
    return Hand.LEFT if counts[Hand.LEFT] > counts[Hand.RIGHT] else Hand.RIGHT


@dataclass(frozen=True)
class Series:
    """What the wearing-off rule reads: the records, the measure and its direction."""

    records: tuple[OutcomeRecord, ...]
    measure: Measure
    lower_is_better: bool
    label: str


def series(
    entries: Sequence[OutcomeEntry],
    measure: Measure = Measure.GRIP_STRENGTH_KG,
    hand: Hand | None = None,
    scale: Scale | None = None,
) -> Series:
    """The reported wearing-off days plus the chosen measure's values (one hand, one scale);
    a report of "none" carries no day and is left out."""
    if measure is Measure.WEARING_OFF:
        raise ValueError("the plan's measure must be a measured value, not WEARING_OFF")
    if measure is Measure.DISABILITY_SCORE and scale is None:
        raise ValueError("a disability score needs its scale")
    if measure is Measure.GRIP_STRENGTH_KG and hand is None:
        hand = grip_hand(entries)
    records = []
    for e in entries:
        if e.measure is Measure.WEARING_OFF:
            if not e.wearing_off_none:
                records.append(OutcomeRecord(e.recorded_on, Measure.WEARING_OFF))
        elif e.measure is measure and e.value is not None:
            if measure is Measure.GRIP_STRENGTH_KG and e.hand is not hand:
                continue
            if measure is Measure.DISABILITY_SCORE and e.scale is not scale:
                continue
            records.append(OutcomeRecord(e.recorded_on, measure, e.value))
    if measure is Measure.GRIP_STRENGTH_KG:
        label = f"grip strength, {hand.value.lower() if hand else ''} hand"
    elif measure is Measure.DISABILITY_SCORE and scale is not None:
        label = scale.value.replace("_", "-")
    else:
        label = "MRC sum score"
    lower = measure is Measure.DISABILITY_SCORE and scale in LOWER_IS_BETTER
    return Series(tuple(records), measure, lower, label)
