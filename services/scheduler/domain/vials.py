"""Rounding a dose to what whole vials can make, and choosing the vials
(docs/clinical-rules.md#dose-rounding, #vial-selection).

Vials are single-use (docs/clinical-rules.md#single-use-vials), so a dose is either a whole-vial
amount or covered by vials with the overfill reported as expected waste. Among vial sets making
the same amount, the fewest vials wins, then the larger vials (fewer vials to open and scan; the
"least waste" of the sources is the amount rule, this is the tie-break).

Amounts are worked in integer units of the greatest common divisor of the vial sizes (in mg),
so a minimum-vials table over every amount up to the largest dose is small and exact; it is
built once per vial set and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.common.reasons import Rule
from services.scheduler.domain.plans import RoundingRule

MG_PER_G = Decimal(1000)
FIVE_GRAMS = Decimal(5)  # nearest_5g (Ontario): docs/clinical-rules.md#dose-rounding
TABLE_LIMIT_GRAMS = 600  # covers 2.5 g/kg × 240 kg; larger doses extend the table on demand


@dataclass(frozen=True)
class VialChoice:
    """What the pharmacist draws: ``vials`` as (size in grams, count), largest first."""

    rule: RoundingRule
    raw_grams: Decimal
    dose_grams: Decimal  # the dose given: the rounded amount, or the raw dose for NONE
    vial_grams: Decimal  # sum of the vials drawn
    vials: tuple[tuple[Decimal, int], ...]
    waste_grams: Decimal  # vial_grams − dose_grams (opened but not given)
    explanation: str

    @property
    def vial_count(self) -> int:
        return sum(count for _, count in self.vials)


def _violation(rule: Rule, text: str) -> FailedPrecondition:
    return FailedPrecondition([PreconditionViolation(rule, "dose", text)])


@lru_cache(maxsize=128)
def _table(units: tuple[int, ...], limit: int) -> tuple[tuple[int, tuple[int, ...]] | None, ...]:
    """best[a] = (vials, counts per size largest first) making exactly ``a`` units, or None.
    Fewest vials first; among equals the lexicographically larger counts (more large vials)."""
    empty = (0,) * len(units)
    best: list[tuple[int, tuple[int, ...]] | None] = [None] * (limit + 1)
    best[0] = (0, empty)
    for amount in range(1, limit + 1):
        chosen: tuple[int, tuple[int, ...]] | None = None
        for index, size in enumerate(units):
            if size > amount:
                continue
            previous = best[amount - size]
            if previous is None:
                continue
            counts = list(previous[1])
            counts[index] += 1
            candidate = (previous[0] + 1, tuple(counts))
            if (
                chosen is None
                or candidate[0] < chosen[0]
                or (candidate[0] == chosen[0] and candidate[1] > chosen[1])
            ):
                chosen = candidate
        best[amount] = chosen
    return tuple(best)


class VialSet:
    """The vial sizes of one product."""

    def __init__(self, sizes_grams: tuple[Decimal, ...]) -> None:
        if not sizes_grams or any(s <= 0 for s in sizes_grams):
            raise ValueError("a vial set needs positive sizes")
        self.sizes = tuple(sorted(set(sizes_grams), reverse=True))
        mg = [int(s * MG_PER_G) for s in self.sizes]
        if any(Decimal(m) != s * MG_PER_G for m, s in zip(mg, self.sizes, strict=True)):
            raise ValueError("vial sizes must be whole milligrams")
        self.unit_mg = math.gcd(*mg)
        self.units = tuple(m // self.unit_mg for m in mg)

    def _grams(self, units: int) -> Decimal:
        return (Decimal(units * self.unit_mg) / MG_PER_G).normalize()

    def _best(self, units: int) -> tuple[int, tuple[int, ...]] | None:
        limit = max(int(TABLE_LIMIT_GRAMS * MG_PER_G) // self.unit_mg, units + max(self.units))
        return _table(self.units, limit)[units]

    def _combination(self, units: int) -> tuple[tuple[Decimal, int], ...]:
        best = self._best(units)
        assert best is not None
        return tuple((size, n) for size, n in zip(self.sizes, best[1], strict=True) if n)

    def at_or_below(self, grams: Decimal) -> int | None:
        """Largest makeable amount (units) ≤ grams, above zero."""
        units = int((grams * MG_PER_G / self.unit_mg).to_integral_value(ROUND_FLOOR))
        for amount in range(units, 0, -1):
            if self._best(amount) is not None:
                return amount
        return None

    def at_or_above(self, grams: Decimal) -> int:
        """Smallest makeable amount (units) ≥ grams (always exists: add the smallest vial)."""
        units = max(1, int((grams * MG_PER_G / self.unit_mg).to_integral_value(ROUND_CEILING)))
        amount = units
        while self._best(amount) is None:
            amount += 1
        return amount

    def choose(self, raw_grams: Decimal, rule: RoundingRule, band_percent: Decimal) -> VialChoice:
        if raw_grams <= 0:
            raise _violation("DOSE_POSITIVE", "the raw dose must be above 0 g")
        if rule is RoundingRule.NONE:
            return self._cover(
                raw_grams,
                raw_grams,
                rule,
                "none: the exact dose (docs/clinical-rules.md#dose-rounding)",
            )
        if rule is RoundingRule.NEAREST_5G:
            multiple = (raw_grams / FIVE_GRAMS).quantize(Decimal(1), rounding=ROUND_FLOOR)
            low, high = multiple * FIVE_GRAMS, (multiple + 1) * FIVE_GRAMS
            target = low if raw_grams - low <= high - raw_grams and low > 0 else high
            return self._cover(
                raw_grams,
                target,
                rule,
                "nearest_5g (docs/clinical-rules.md#dose-rounding): "
                f"{_g(raw_grams)} g → {_g(target)} g",
            )
        below = self.at_or_below(raw_grams)
        above = self.at_or_above(raw_grams)
        if rule is RoundingRule.DOWN:
            if below is None:
                raise _violation(
                    "NO_WHOLE_VIAL_AT_OR_BELOW",
                    f"no whole-vial amount is at or below {_g(raw_grams)} g "
                    f"(smallest vial {_g(self.sizes[-1])} g)",
                )
            return self._exact(
                raw_grams, below, rule, "down (docs/clinical-rules.md#dose-rounding)"
            )
        if rule is RoundingRule.UP:
            return self._exact(raw_grams, above, rule, "up (docs/clinical-rules.md#dose-rounding)")
        # NEAREST: closest whole-vial amount, ties to the lower, within the band
        chosen = above
        if below is not None and raw_grams - self._grams(below) <= self._grams(above) - raw_grams:
            chosen = below
        grams = self._grams(chosen)
        allowed = raw_grams * band_percent / 100
        if abs(grams - raw_grams) > allowed:
            raise _violation(
                "ROUNDING_BAND",
                f"the closest whole-vial amount to {_g(raw_grams)} g is {_g(grams)} g, "
                f"{_g(abs(grams - raw_grams))} g away: more than the plan's ±{_g(band_percent)} % "
                f"band ({_g(allowed.quantize(Decimal('0.01')))} g); choose another rounding rule "
                "or product",
            )
        return self._exact(
            raw_grams,
            chosen,
            rule,
            f"nearest, ±{_g(band_percent)} % (docs/clinical-rules.md#dose-rounding)",
        )

    def _exact(self, raw: Decimal, units: int, rule: RoundingRule, label: str) -> VialChoice:
        grams = self._grams(units)
        vials = self._combination(units)
        text = f"{label}: {_g(raw)} g raw → {_g(grams)} g = {_vials_text(vials)}"
        return VialChoice(rule, raw, grams, grams, vials, Decimal(0), text)

    def _cover(self, raw: Decimal, dose: Decimal, rule: RoundingRule, label: str) -> VialChoice:
        units = self.at_or_above(dose)
        grams = self._grams(units)
        vials = self._combination(units)
        waste = grams - dose
        text = f"{label}; vials {_vials_text(vials)} = {_g(grams)} g"
        if waste:
            text += f", {_g(waste)} g overfill expected as waste"
        return VialChoice(rule, raw, dose, grams, vials, waste, text)


def _g(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _vials_text(vials: tuple[tuple[Decimal, int], ...]) -> str:
    return " + ".join(f"{n} × {_g(size)} g" for size, n in vials)
