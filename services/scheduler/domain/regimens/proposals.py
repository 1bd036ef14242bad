"""Regimen proposals: a shorter interval when wearing-off is seen, a reduction trial when the
patient is stable, a split over days when one day's dose is too large
(docs/clinical-rules.md#interval-shortening, #dose-reduction-trial, #split-over-days).

A proposal is never applied by itself: it carries the figures and a rationale in the style of the
dose calculation's, and a clinician accepts it (making the next plan version with the reason) or
not. When a rule has nothing to propose it says why, with a stable code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.scheduler.domain.plans import (
    DEFAULT_ROUNDING_BAND_PERCENT,
    DOSE_G_PER_KG_BAND,
    MAX_G_PER_KG_ONE_DAY,
    RoundingRule,
)
from services.scheduler.domain.regimens.wearing_off import Expectation, ExpectedOnset
from services.scheduler.domain.regimens.whole_vials import grams_text, round_to_vials
from services.scheduler.domain.vials import VialChoice, VialSet

DEFAULT_MARGIN_DAYS = 2  # docs/clinical-rules.md#interval-shortening
MIN_INTERVAL_DAYS = 7
REDUCTION_MAX_INTERVAL_DAYS = 56  # below it, infusions are more often than every 2 months
DEFAULT_REDUCTION_SHARE = Decimal("0.10")  # docs/clinical-rules.md#dose-reduction-trial
DEFAULT_MAX_G_PER_KG_DAY = Decimal(1)  # docs/clinical-rules.md#split-over-days


class IntervalUnit(StrEnum):
    WEEK = "WEEK"  # default: intervals are held in whole weeks
    DAY = "DAY"


class ProposalKind(StrEnum):
    SHORTER_INTERVAL = "SHORTER_INTERVAL"
    REDUCTION_TRIAL = "REDUCTION_TRIAL"
    SPLIT_OVER_DAYS = "SPLIT_OVER_DAYS"


@dataclass(frozen=True)
class Regimen:
    """The current regimen version a proposal starts from. ``day_grams`` are the rounded grams
    given on each day of a cycle (one entry unless the cycle is split over days);
    ``g_per_kg`` is the dose per cycle, None for a fixed-grams plan."""

    interval_days: int
    day_grams: tuple[Decimal, ...]
    dosing_weight_kg: Decimal
    vial_grams: tuple[Decimal, ...]
    g_per_kg: Decimal | None = None
    rounding_rule: RoundingRule = RoundingRule.NEAREST
    rounding_band_percent: Decimal = DEFAULT_ROUNDING_BAND_PERCENT

    @property
    def cycle_grams(self) -> Decimal:
        return sum(self.day_grams, Decimal(0))

    @property
    def cycle_g_per_kg(self) -> Decimal:
        if self.g_per_kg is not None:
            return self.g_per_kg
        return self.cycle_grams / self.dosing_weight_kg


@dataclass(frozen=True)
class Proposal:
    kind: ProposalKind
    interval_days: int
    day_grams: tuple[Decimal, ...]  # per day of the proposed cycle
    vials: tuple[VialChoice, ...]  # per day, when the dose changes; empty otherwise
    g_per_kg: Decimal  # per cycle, as proposed (raw, before rounding)
    grams_per_week_before: Decimal
    grams_per_week_after: Decimal
    flags: tuple[str, ...]
    rules_applied: tuple[str, ...]
    rationale: tuple[str, ...]
    expected_onset_day: int | None = None
    lead_days: int | None = None

    @property
    def cycle_grams(self) -> Decimal:
        return sum(self.day_grams, Decimal(0))


@dataclass(frozen=True)
class NoProposal:
    code: str  # e.g. inconclusive, stable_long_interval, below_minimum_dose
    explanation: str


def weekly(grams: Decimal, interval_days: int) -> Decimal:
    return grams * 7 / interval_days


def propose(
    regimen: Regimen,
    expected: ExpectedOnset,
    margin_days: int = DEFAULT_MARGIN_DAYS,
    unit: IntervalUnit = IntervalUnit.WEEK,
    reduction_share: Decimal = DEFAULT_REDUCTION_SHARE,
) -> Proposal | NoProposal:
    """Wearing-off seen → a shorter interval; stable → a reduction trial; else nothing."""
    if expected.expectation is Expectation.WEARING_OFF:
        assert expected.day is not None
        return shorter_interval(regimen, expected.day, margin_days, unit, expected.explanation)
    if expected.expectation is Expectation.STABLE:
        return reduction_trial(regimen, reduction_share, expected.explanation)
    return NoProposal("inconclusive", expected.explanation)


def shorter_interval(
    regimen: Regimen,
    expected_onset_day: int,
    margin_days: int = DEFAULT_MARGIN_DAYS,
    unit: IntervalUnit = IntervalUnit.WEEK,
    evidence: str = "",
) -> Proposal:
    """E − margin, rounded down to whole weeks (or days), at least 7 days, never longer than the
    current interval; the dose and its days stay."""
    current = regimen.interval_days
    raw = expected_onset_day - margin_days
    rounded = raw // 7 * 7 if unit is IntervalUnit.WEEK else raw
    proposed = min(max(rounded, MIN_INTERVAL_DAYS), current)
    lead = expected_onset_day - proposed
    flags = ("at_minimum_interval",) if proposed <= MIN_INTERVAL_DAYS else ()
    grams = regimen.cycle_grams
    before, after = weekly(grams, current), weekly(grams, proposed)
    why = [f"{evidence[:1].upper()}{evidence[1:]}."] if evidence else []
    unit_text = "whole weeks" if unit is IntervalUnit.WEEK else "whole days"
    why.append(
        f"Expected onset day {expected_onset_day} − {margin_days} days' margin = {raw} days, "
        f"rounded down to {unit_text} = {rounded} days"
        + (f", at least {MIN_INTERVAL_DAYS} days" if rounded < MIN_INTERVAL_DAYS else "")
        + (f", at most the current {current} days" if proposed < max(rounded, 7) else "")
        + f": every {proposed} days instead of every {current} "
        "(docs/clinical-rules.md#interval-shortening)."
    )
    why.append(
        f"Lead {expected_onset_day} − {proposed} = {lead} days: the next dose lands before the "
        "expected wearing-off."
    )
    why.append(
        f"Dose per infusion and its days unchanged: {grams_text(grams)} g a cycle; "
        f"{grams_text(grams)} g × 7 ÷ {current} days = {grams_text(before)} g a week → "
        f"{grams_text(grams)} g × 7 ÷ {proposed} days = {grams_text(after)} g a week."
    )
    if flags:
        why.append(
            f"At the {MIN_INTERVAL_DAYS}-day minimum interval (at_minimum_interval): raising "
            "the dose is the clinician's decision (docs/clinical-rules.md#interval-shortening)."
        )
    return Proposal(
        kind=ProposalKind.SHORTER_INTERVAL,
        interval_days=proposed,
        day_grams=regimen.day_grams,
        vials=(),
        g_per_kg=regimen.cycle_g_per_kg,
        grams_per_week_before=before,
        grams_per_week_after=after,
        flags=flags,
        rules_applied=(
            "wearing-off onset: lower median of the last cycles "
            "(docs/clinical-rules.md#wearing-off)",
            f"shorter interval: E − {margin_days} days, down to {unit_text}, ≥ 7 days "
            "(docs/clinical-rules.md#interval-shortening)",
        ),
        rationale=tuple(why),
        expected_onset_day=expected_onset_day,
        lead_days=lead,
    )


def reduction_trial(
    regimen: Regimen,
    share: Decimal = DEFAULT_REDUCTION_SHARE,
    evidence: str = "",
) -> Proposal | NoProposal:
    """Interval under 56 days: the g/kg dose less a step (default 10 %), interval unchanged;
    the grams are rounded by the plan's rule and, when that gives the current grams or more,
    the largest whole-vial amount below them (per day for a split cycle)."""
    current = regimen.interval_days
    anchor = "(docs/clinical-rules.md#dose-reduction-trial)"
    if current >= REDUCTION_MAX_INTERVAL_DAYS:
        return NoProposal(
            "stable_long_interval",
            f"stable on an interval of {current} days, not under "
            f"{REDUCTION_MAX_INTERVAL_DAYS}: no reduction trial {anchor}",
        )
    old = regimen.cycle_g_per_kg
    new = old * (1 - share)
    low = DOSE_G_PER_KG_BAND[0]
    if new < low:
        return NoProposal(
            "below_minimum_dose",
            f"{_n(old)} g/kg less {_n(share * 100)} % = {_n(new)} g/kg is under the "
            f"{low} g/kg band (docs/clinical-rules.md#validation-bands): no reduction trial",
        )
    kg = regimen.dosing_weight_kg
    days = len(regimen.day_grams)
    day_raw = new * kg / days
    why = [f"{evidence[:1].upper()}{evidence[1:]}."] if evidence else []
    why.append(
        f"Stable with infusions every {current} days (under {REDUCTION_MAX_INTERVAL_DAYS}): "
        f"trial of {_n(old)} g/kg − {_n(share * 100)} % = {_n(new)} g/kg × {_n(kg)} kg = "
        f"{grams_text(new * kg)} g" + (f" over {days} days" if days > 1 else "") + f" {anchor}."
    )
    vial_set = VialSet(regimen.vial_grams)
    choices = []
    for current_day in regimen.day_grams:
        choice = round_to_vials(
            day_raw, regimen.vial_grams, regimen.rounding_rule, regimen.rounding_band_percent
        )
        if choice.dose_grams >= current_day:
            smaller = _largest_below(vial_set, current_day)
            if smaller is None:
                return NoProposal(
                    "no_smaller_amount",
                    f"no whole-vial amount is below the current {grams_text(current_day)} g "
                    f"{anchor}",
                )
            why.append(
                f"{choice.explanation}: not below the current {grams_text(current_day)} g, so "
                f"the largest whole-vial amount below it, {grams_text(smaller.dose_grams)} g = "
                f"{_vials(smaller)}."
            )
            choice = smaller
        else:
            why.append(f"{choice.explanation} (fewest vials, then larger vials).")
        choices.append(choice)
    day_grams = tuple(c.dose_grams for c in choices)
    total = sum(day_grams, Decimal(0))
    before, after = weekly(regimen.cycle_grams, current), weekly(total, current)
    why.append(
        f"Interval unchanged at {current} days: {grams_text(regimen.cycle_grams)} g → "
        f"{grams_text(total)} g a cycle, {grams_text(before)} → {grams_text(after)} g a week. "
        "Whether to try it, and when to judge it, is the clinician's decision."
    )
    return Proposal(
        kind=ProposalKind.REDUCTION_TRIAL,
        interval_days=current,
        day_grams=day_grams,
        vials=tuple(choices),
        g_per_kg=new,
        grams_per_week_before=before,
        grams_per_week_after=after,
        flags=(),
        rules_applied=(
            f"reduction trial: −{_n(share * 100)} % g/kg, interval unchanged {anchor}",
            f"rounding: {regimen.rounding_rule.value.lower()} "
            "(docs/clinical-rules.md#dose-rounding)",
        ),
        rationale=tuple(why),
    )


def _largest_below(vial_set: VialSet, grams: Decimal) -> VialChoice | None:
    step = Decimal(vial_set.unit_mg) / 1000
    units = vial_set.at_or_below(grams - step)
    if units is None:
        return None
    amount = Decimal(units) * step
    return vial_set.choose(amount, RoundingRule.DOWN, DEFAULT_ROUNDING_BAND_PERCENT)


def split_over_days(
    regimen: Regimen, max_g_per_kg_day: Decimal = DEFAULT_MAX_G_PER_KG_DAY
) -> Proposal | NoProposal:
    """The fewest consecutive days whose equal share respects the per-day maximum, each day
    rounded on its own (docs/clinical-rules.md#induction-split)."""
    if not 0 < max_g_per_kg_day <= MAX_G_PER_KG_ONE_DAY:
        raise ValueError(f"the per-day maximum must be above 0 and at most {MAX_G_PER_KG_ONE_DAY}")
    anchor = "(docs/clinical-rules.md#split-over-days)"
    cycle = regimen.cycle_g_per_kg
    days_now = len(regimen.day_grams)
    if cycle / days_now <= max_g_per_kg_day:
        return NoProposal(
            "within_daily_maximum",
            f"{_n(cycle)} g/kg over {days_now} day(s) is within {_n(max_g_per_kg_day)} g/kg a "
            f"day {anchor}",
        )
    days = math.ceil(cycle / max_g_per_kg_day)
    kg = regimen.dosing_weight_kg
    day_raw = cycle * kg / days
    choices = tuple(
        round_to_vials(
            day_raw, regimen.vial_grams, regimen.rounding_rule, regimen.rounding_band_percent
        )
        for _ in range(days)
    )
    day_grams = tuple(c.dose_grams for c in choices)
    total = sum(day_grams, Decimal(0))
    interval = regimen.interval_days
    why = [
        f"{_n(cycle)} g/kg over {days_now} day(s) is {_n(cycle / days_now)} g/kg a day, above "
        f"the plan's {_n(max_g_per_kg_day)} g/kg a day: ⌈{_n(cycle)} ÷ "
        f"{_n(max_g_per_kg_day)}⌉ = {days} consecutive days {anchor}.",
        f"{_n(cycle)} g/kg × {_n(kg)} kg = {grams_text(cycle * kg)} g over {days} days = "
        f"{grams_text(day_raw)} g a day, each day rounded on its own "
        "(docs/clinical-rules.md#induction-split).",
        f"{choices[0].explanation} (fewest vials, then larger vials).",
        f"Interval unchanged at {interval} days; {grams_text(total)} g a cycle.",
    ]
    return Proposal(
        kind=ProposalKind.SPLIT_OVER_DAYS,
        interval_days=interval,
        day_grams=day_grams,
        vials=choices,
        g_per_kg=cycle,
        grams_per_week_before=weekly(regimen.cycle_grams, interval),
        grams_per_week_after=weekly(total, interval),
        flags=(),
        rules_applied=(
            f"split over days: at most {_n(max_g_per_kg_day)} g/kg a day {anchor}",
            "each day rounded on its own (docs/clinical-rules.md#induction-split)",
        ),
        rationale=tuple(why),
    )


def _n(value: Decimal) -> str:
    return grams_text(value)


def _vials(choice: VialChoice) -> str:
    return " + ".join(f"{n} × {grams_text(size)} g" for size, n in choice.vials)
