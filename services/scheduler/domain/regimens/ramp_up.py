"""HyQvia ramp-up: partial doses at unequal gaps before the steady interval
(docs/clinical-rules.md#hyqvia-ramp-up).

A patient coming from IVIg reaches the full facilitated-SC dose (IV grams per cycle × 1.00) over
a few weeks, so the first HyQvia infusions are fractions of it at weeks 1, 2, 4, 7 (and 11), and
only then does the regular interval (the IV one) start. Only the 21- and 28-day targets have a
published ramp; any other target needs a sequence from the clinician. Partial doses round to the
nearest whole-vial amount without a band (they are steps, not the prescribed dose); the full dose
follows the plan's rounding rule.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from services.common.errors import Violations
from services.scheduler.domain.plans import DEFAULT_ROUNDING_BAND_PERCENT, Indication, RoundingRule
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.sc_conversion import conversion_factor, volume_ml
from services.scheduler.domain.regimens.sc_products import ScProduct
from services.scheduler.domain.regimens.whole_vials import NO_BAND, grams_text, round_to_vials
from services.scheduler.domain.vials import VialChoice

# (week, fraction of the full dose): docs/clinical-rules.md#hyqvia-ramp-up
RAMPS: dict[int, tuple[tuple[int, Fraction], ...]] = {
    21: ((1, Fraction(1, 3)), (2, Fraction(2, 3)), (4, Fraction(1)), (7, Fraction(1))),
    28: (
        (1, Fraction(1, 4)),
        (2, Fraction(1, 2)),
        (4, Fraction(3, 4)),
        (7, Fraction(1)),
        (11, Fraction(1)),
    ),
}


@dataclass(frozen=True)
class RampStep:
    week: int
    day: int  # 7 × (week − 1) after the first HyQvia date
    date: dt.date
    fraction: Fraction
    raw_grams: Decimal
    vials: VialChoice
    volume_ml: Decimal
    sites: int
    flags: tuple[str, ...]  # over_daily_volume


@dataclass(frozen=True)
class RampUp:
    full_dose: VialChoice
    steps: tuple[RampStep, ...]
    steady_interval_days: int
    first_steady_date: dt.date  # the first infusion after the ramp, at the steady interval
    rationale: tuple[str, ...]


def validate_sequence(sequence: Sequence[tuple[int, Fraction]]) -> None:
    """A clinician's sequence: weeks from 1, strictly rising; fractions in (0, 1], never
    falling, ending at the full dose."""
    v = Violations()
    where = "ramp_up.sequence"
    if not sequence:
        v.add(where, "is required for a target interval without a published ramp")
    else:
        weeks = [w for w, _ in sequence]
        fractions = [f for _, f in sequence]
        if weeks[0] != 1 or any(b <= a for a, b in zip(weeks, weeks[1:], strict=False)):
            v.add(where, "weeks must start at 1 and rise")
        if any(not 0 < f <= 1 for f in fractions):
            v.add(where, "each fraction must be above 0 and at most 1")
        if any(b < a for a, b in zip(fractions, fractions[1:], strict=False)):
            v.add(where, "fractions must not fall")
        if fractions[-1] != 1:
            v.add(where, "the last infusion must be the full dose")
    v.raise_if_any()


def hyqvia_ramp_up(
    product: ScProduct,
    indication: Indication,
    iv_cycle_grams: Decimal,
    iv_interval_days: int,
    first_date: dt.date,
    body_weight_kg: Decimal,
    rounding_rule: RoundingRule = RoundingRule.NEAREST,
    rounding_band_percent: Decimal = DEFAULT_ROUNDING_BAND_PERCENT,
    sequence: Sequence[tuple[int, Fraction]] | None = None,
) -> RampUp:
    anchor = "(docs/clinical-rules.md#hyqvia-ramp-up)"
    if sequence is None:
        if iv_interval_days not in RAMPS:
            raise Refused(
                "no_ramp_for_interval",
                f"no published HyQvia ramp for every {iv_interval_days} days (only 21 and 28): "
                f"enter the sequence {anchor}",
            )
        sequence = RAMPS[iv_interval_days]
        source = f"the every-{iv_interval_days // 7}-weeks ramp"
    else:
        validate_sequence(sequence)
        source = "the clinician's sequence"
    if not product.vial_grams:
        raise Refused(
            "vials_not_configured",
            f"{product.brand}'s unit sizes are not in the sources: configure them {anchor}",
        )
    if product.site_max_ml is None:
        raise Refused("site_volume_not_configured", f"{product.brand}'s volume per site")
    factor = conversion_factor(product, indication)
    if factor is None:
        raise Refused("no_conversion_factor", f"{product.brand} has no factor {anchor}")
    full_raw = iv_cycle_grams * factor.value
    full = round_to_vials(full_raw, product.vial_grams, rounding_rule, rounding_band_percent)
    day_max = product.day_max(body_weight_kg)
    why = [
        f"Full dose {factor.text}: {grams_text(iv_cycle_grams)} g × {factor.value} = "
        f"{grams_text(full_raw)} g; {full.explanation} {anchor}.",
        f"Ramp: {source}, week w on the first HyQvia date + 7 × (w − 1) days; partial doses "
        "to the nearest whole-vial amount, ties lower, no band.",
    ]
    steps = []
    for week, fraction in sequence:
        raw = full_raw * fraction.numerator / fraction.denominator
        choice = (
            full
            if fraction == 1
            else round_to_vials(raw, product.vial_grams, RoundingRule.NEAREST, NO_BAND)
        )
        volume = volume_ml(choice.dose_grams, product.concentration_percent)
        sites = math.ceil(volume / product.site_max_ml)
        flags = ("over_daily_volume",) if day_max is not None and volume > day_max else ()
        day = 7 * (week - 1)
        step = RampStep(
            week,
            day,
            first_date + dt.timedelta(days=day),
            fraction,
            raw,
            choice,
            volume,
            sites,
            flags,
        )
        steps.append(step)
        why.append(
            f"Week {week} (day {day}, {step.date.isoformat()}): {fraction} × "
            f"{grams_text(full_raw)} g = {grams_text(raw)} g → {grams_text(choice.dose_grams)} g, "
            f"{grams_text(volume)} mL, ⌈{grams_text(volume)} ÷ {grams_text(product.site_max_ml)}⌉"
            f" = {sites} site(s)"
            + (
                f"; over the {grams_text(day_max)} mL a day maximum: the clinician decides"
                if day_max is not None and flags
                else ""
            )
            + "."
        )
    steady = steps[-1].date + dt.timedelta(days=iv_interval_days)
    why.append(f"Then every {iv_interval_days} days (the IV interval), from {steady.isoformat()}.")
    return RampUp(full, tuple(steps), iv_interval_days, steady, tuple(why))
