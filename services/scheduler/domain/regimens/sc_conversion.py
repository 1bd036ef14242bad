"""IV → SC: the weekly dose, the infusions that give it, and the first SC date
(docs/clinical-rules.md#sc-dose, #sc-infusions, #first-sc-date).

The weekly grams follow from what the patient actually received IV (the rounded grams of the
cycle, all its days) and the product's factor for the indication. Vials are single-use, so each
infusion, not the week, is rounded to whole vials; a frequency whose rounding leaves the band or
whose volume needs more sites than may run at once is skipped for the next one, so the schedule
found is the first in the fixed order that a patient can actually be given.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.common.errors import FailedPrecondition, Violations
from services.scheduler.domain.dosing import ivig_to_scig_weekly
from services.scheduler.domain.plans import DEFAULT_ROUNDING_BAND_PERCENT, Indication, RoundingRule
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.sc_products import CURRENT_LABEL, ScProduct
from services.scheduler.domain.regimens.whole_vials import grams_text, round_to_vials
from services.scheduler.domain.vials import VialChoice

FIRST_SC_DAYS = 7  # docs/clinical-rules.md#first-sc-date
FIRST_SC_DAYS_TWO_WEEKLY_OPTION = 14


@dataclass(frozen=True)
class FactorOverride:
    """A clinician's factor (for example the 1.53 of the MMN open-label study); the reason is
    required and is cited by the plan version it makes."""

    factor: Decimal
    reason: str


@dataclass(frozen=True)
class Factor:
    value: Decimal
    text: str


def conversion_factor(
    product: ScProduct,
    indication: Indication,
    label_version: str = CURRENT_LABEL,
    override: FactorOverride | None = None,
) -> Factor | None:
    """The factor for (product, indication, label version), or the clinician's override; None
    when there is none (Hizentra in CIDP has a fixed dose instead)."""
    if override is not None:
        v = Violations()
        if override.factor <= 0:
            v.add("factor_override.factor", "must be above 0")
        v.require(override.reason, "factor_override.reason")
        v.raise_if_any()
        return Factor(
            override.factor, f"clinician's factor {override.factor}: {override.reason.strip()}"
        )
    if product.any_indication_factor is not None:
        return Factor(
            product.any_indication_factor,
            f"{product.brand} factor {product.any_indication_factor} for any indication",
        )
    for f in product.factors:
        if f.indication is indication and f.label_version == label_version:
            return Factor(
                f.factor,
                f"{product.brand} factor {f.factor} for {indication.value} "
                f"({f.label_version} label)",
            )
    return None


@dataclass(frozen=True)
class ScDose:
    weekly_raw_grams: Decimal
    factor: Decimal | None  # None for a fixed g/kg a week
    rationale: tuple[str, ...]


def sc_weekly_dose(
    product: ScProduct,
    indication: Indication,
    iv_cycle_grams: Decimal,
    iv_interval_days: int,
    dosing_weight_kg: Decimal,
    label_version: str = CURRENT_LABEL,
    override: FactorOverride | None = None,
) -> ScDose:
    """factor × IV grams per cycle ÷ (IV interval days ÷ 7); Hizentra in CIDP a fixed 0.2 g/kg
    a week × dosing weight. Refused (``no_conversion_factor``) when neither applies."""
    if (
        override is None
        and indication is Indication.CIDP
        and product.cidp_g_per_kg_week is not None
    ):
        weekly = product.cidp_g_per_kg_week * dosing_weight_kg
        return ScDose(
            weekly,
            None,
            (
                f"{product.brand} in CIDP: a fixed {product.cidp_g_per_kg_week} g/kg a week × "
                f"{grams_text(dosing_weight_kg)} kg = {grams_text(weekly)} g a week, no factor "
                "(docs/clinical-rules.md#sc-dose).",
            ),
        )
    factor = conversion_factor(product, indication, label_version, override)
    if factor is None:
        raise Refused(
            "no_conversion_factor",
            f"{product.brand} has no conversion factor for {indication.value} "
            f"({label_version} label): a clinician's factor with a reason is needed "
            "(docs/clinical-rules.md#sc-dose)",
        )
    converted = ivig_to_scig_weekly(iv_cycle_grams, iv_interval_days, factor.value)
    return ScDose(
        converted.weekly_grams,
        factor.value,
        (f"{factor.text}: {converted.rationale} (docs/clinical-rules.md#sc-dose).",),
    )


@dataclass(frozen=True)
class Frequency:
    """``per_week`` infusions a week, or one every ``every_weeks`` weeks."""

    per_week: int = 1
    every_weeks: int = 1

    @property
    def name(self) -> str:
        if self.every_weeks > 1:
            return f"every {self.every_weeks} weeks"
        return "weekly" if self.per_week == 1 else f"{self.per_week} a week"

    def days(self) -> tuple[int, ...]:
        """Days of the week (or fortnight) the infusions fall on: ⌊7i ÷ k⌋, i = 0…k−1."""
        return tuple(7 * i // self.per_week for i in range(self.per_week))


EVERY_TWO_WEEKS = Frequency(1, 2)
WEEKLY = Frequency(1, 1)
ORDER = (EVERY_TWO_WEEKS, WEEKLY, *(Frequency(k, 1) for k in range(2, 8)))


@dataclass(frozen=True)
class ScSchedule:
    frequency: Frequency
    infusion: VialChoice  # each infusion's whole vials
    volume_ml: Decimal
    sites: int
    site_max_ml: Decimal
    weekly_grams: Decimal  # what the schedule gives a week, after rounding
    skipped: tuple[str, ...]  # the frequencies tried before, and why each was skipped
    rationale: tuple[str, ...]

    @property
    def infusion_days(self) -> tuple[int, ...]:
        return self.frequency.days()


def volume_ml(grams: Decimal, concentration_percent: Decimal) -> Decimal:
    """docs/clinical-rules.md#sc-infusions: mL = g × 100 ÷ concentration %."""
    return grams * 100 / concentration_percent


def sites_needed(volume: Decimal, site_max_ml: Decimal) -> int:
    return math.ceil(volume / site_max_ml)


def sc_infusions(
    product: ScProduct,
    indication: Indication,
    weekly_raw_grams: Decimal,
    body_weight_kg: Decimal,
    asked: Frequency = WEEKLY,
    band_percent: Decimal = DEFAULT_ROUNDING_BAND_PERCENT,
) -> ScSchedule:
    """Tries the frequencies of :data:`ORDER` from ``asked`` on; refused
    (``no_sc_schedule_fits``) when none fits."""
    if asked not in ORDER:
        raise ValueError(f"{asked} is not an SC frequency")
    if not product.vial_grams:
        raise Refused(
            "vials_not_configured", f"{product.brand}'s vial sizes are not in the catalogue"
        )
    site_max = product.site_max(indication, body_weight_kg)
    if site_max is None:
        raise Refused(
            "site_volume_not_configured",
            f"{product.brand}'s volume per site is not known: configure it "
            "(docs/clinical-rules.md#sc-infusions)",
        )
    anchor = "(docs/clinical-rules.md#sc-infusions)"
    skipped: list[str] = []
    for frequency in ORDER[ORDER.index(asked) :]:
        raw = weekly_raw_grams * frequency.every_weeks / frequency.per_week
        try:
            choice = round_to_vials(raw, product.vial_grams, RoundingRule.NEAREST, band_percent)
        except FailedPrecondition as refused:
            skipped.append(f"{frequency.name}: {refused.violations[0].description}")
            continue
        volume = volume_ml(choice.dose_grams, product.concentration_percent)
        sites = sites_needed(volume, site_max)
        if product.max_sites is not None and sites > product.max_sites:
            skipped.append(
                f"{frequency.name}: {grams_text(choice.dose_grams)} g = {grams_text(volume)} mL "
                f"needs ⌈{grams_text(volume)} ÷ {grams_text(site_max)}⌉ = {sites} sites, more "
                f"than the {product.max_sites} that may run at once"
            )
            continue
        weekly = choice.dose_grams * frequency.per_week / frequency.every_weeks
        how = (
            f"{grams_text(weekly_raw_grams)} g a week × {frequency.every_weeks}"
            if frequency.every_weeks > 1
            else f"{grams_text(weekly_raw_grams)} g a week ÷ {frequency.per_week}"
        )
        why = [f"Skipped {s} {anchor}." for s in skipped]
        why.append(
            f"{product.brand} {frequency.name}: {how} = {grams_text(raw)} g an infusion; "
            f"{choice.explanation} (each infusion rounded: vials are single-use) {anchor}."
        )
        why.append(
            f"Volume {grams_text(choice.dose_grams)} g × 100 ÷ "
            f"{grams_text(product.concentration_percent)} % = {grams_text(volume)} mL; "
            f"sites ⌈{grams_text(volume)} ÷ {grams_text(site_max)} mL⌉ = {sites} "
            f"(steady-state volume per site for {indication.value}; first-infusion limits "
            "apply at administration)."
        )
        if frequency.per_week > 1:
            listed = ", ".join(str(d) for d in frequency.days())
            why.append(f"Infusions on days {listed} of each week (⌊7i ÷ {frequency.per_week}⌋).")
        why.append(f"{grams_text(weekly)} g a week given.")
        return ScSchedule(
            frequency, choice, volume, sites, site_max, weekly, tuple(skipped), tuple(why)
        )
    raise Refused(
        "no_sc_schedule_fits",
        f"no SC frequency of {product.brand} fits {grams_text(weekly_raw_grams)} g a week "
        f"{anchor}: " + "; ".join(skipped),
    )


class PreviousTherapy(StrEnum):
    IV = "IV"
    WEEKLY_SC = "WEEKLY_SC"


def first_sc_date(
    last_dose: dt.date,
    previous: PreviousTherapy = PreviousTherapy.IV,
    frequency: Frequency = WEEKLY,
    two_weekly_start_days: int = FIRST_SC_DAYS,
) -> tuple[dt.date, str]:
    """docs/clinical-rules.md#first-sc-date: 7 days after the last IV dose for every SC schedule
    and for HyQvia (plan option 14 days for every 2 weeks); 7 days after the last weekly SC."""
    if two_weekly_start_days not in (FIRST_SC_DAYS, FIRST_SC_DAYS_TWO_WEEKLY_OPTION):
        raise ValueError("the every-2-weeks start is 7 or 14 days after the last IV dose")
    days = FIRST_SC_DAYS
    if previous is PreviousTherapy.IV and frequency == EVERY_TWO_WEEKS:
        days = two_weekly_start_days
    what = "IV dose" if previous is PreviousTherapy.IV else "weekly SC infusion"
    first = last_dose + dt.timedelta(days=days)
    return first, (
        f"First SC on {first.isoformat()}: {days} days after the last {what} of "
        f"{last_dose.isoformat()} (docs/clinical-rules.md#first-sc-date)."
    )
