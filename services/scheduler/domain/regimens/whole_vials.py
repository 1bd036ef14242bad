"""Rounding a regimen rule's raw grams into whole vials, the one way the dose calculation does
it (docs/clinical-rules.md#dose-rounding, #vial-selection): the raw grams are taken to 0.01 g
(half up) and handed to the product's :class:`VialSet`, so a proposal accepted as the next plan
version gives the same grams when that version's dose is calculated."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from services.scheduler.domain.dosing import GRAMS
from services.scheduler.domain.plans import DEFAULT_ROUNDING_BAND_PERCENT, RoundingRule
from services.scheduler.domain.vials import VialChoice, VialSet

# "nearest, ties lower, no band" (docs/clinical-rules.md#hyqvia-ramp-up partial doses): an
# infinite band lets every nearest amount pass VialSet's band check.
NO_BAND = Decimal("Infinity")


def round_to_vials(
    raw_grams: Decimal,
    vial_grams: Sequence[Decimal],
    rule: RoundingRule = RoundingRule.NEAREST,
    band_percent: Decimal = DEFAULT_ROUNDING_BAND_PERCENT,
) -> VialChoice:
    """Raises FailedPrecondition (ROUNDING_BAND, NO_WHOLE_VIAL_AT_OR_BELOW) as the dose does."""
    return VialSet(tuple(vial_grams)).choose(
        raw_grams.quantize(GRAMS, ROUND_HALF_UP), rule, band_percent
    )


def grams_text(value: Decimal) -> str:
    """For rationale lines: at most two decimals, no trailing zeros (as CalculateDose prints)."""
    return format(value.quantize(GRAMS, ROUND_HALF_UP).normalize(), "f")
