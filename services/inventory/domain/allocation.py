"""Choosing the vials for one appointment's reservation (docs/clinical-rules.md#reservations).

The rules, in the order they decide:

0. Only vials that can be promised: lots AVAILABLE, in date on the needed-on day (expiry date
   on or after it), not reserved for another appointment.
1. One product per infusion: the product asked for first, then each allowed alternative in the order
   given. A brand switch is a clinical event (docs/clinical-rules.md#chair-time gives a first
   infusion of a product 60 minutes of observation), so a substitute is used only when the product
   asked for cannot cover the dose at all.
2. Amount: the smallest total that covers the dose, so the fewest grams are opened but not given
   (vials are single-use, partly used vials are discarded, and payers refuse waste caused by a poor
   vial choice: docs/clinical-rules.md#single-use-vials). Only when the stock cannot cover the dose,
   the largest total at or above dose × (1 − rounding band) (the plan's band:
   docs/clinical-rules.md#dose-rounding).
3. First expiry first out: among mixes of that total, the one that takes the most grams from the
   earliest-expiring stock, then the next expiry, and so on (use the oldest stock first:
   docs/clinical-rules.md#first-expiry-first-out). Ranked after the amount because an extra opened
   vial is certain waste today, while later-expiring stock can still go to the next booking before
   it expires.
4. Fewest vials: fewer spikes and less handling for the nurse.
5. Fewest lots: fewer lot numbers to record in the administration trace; within a size, the
   fullest lot is taken first.

Totals are searched as exact sums in units of the greatest common divisor of the vial sizes in
milligrams, with Python integers as bitsets of the reachable totals.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Candidate:
    """Vials of one lot that could be promised for the needed-on day."""

    lot_id: str
    product_id: str
    presentation_grams: Decimal
    expiry_date: dt.date
    available_vials: int


@dataclass(frozen=True)
class Allocation:
    product_id: str
    lines: tuple[tuple[str, int], ...]  # (lot id, vials), in first-expiry order
    total_grams: Decimal
    overfill_grams: Decimal  # opened but not given: total − dose when the total covers it

    @property
    def vials(self) -> int:
        return sum(n for _, n in self.lines)


@dataclass(frozen=True)
class Shortfall:
    """Why a product could not be allocated, for the FAILED_PRECONDITION description."""

    product_id: str
    promisable_grams: Decimal
    by_size: tuple[tuple[Decimal, int], ...]  # (vial grams, vials)


def allocate(
    dose: Decimal,
    band_percent: Decimal,
    products: Sequence[str],
    candidates: Iterable[Candidate],
) -> Allocation | list[Shortfall]:
    """The allocation the rules above choose, or what each product could promise."""
    by_product: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        if c.available_vials > 0:
            by_product[c.product_id].append(c)
    floor = dose * (1 - band_percent / 100)
    shortfalls = []
    for product_id in products:
        lots = by_product.get(product_id, [])
        chosen = _allocate_product(dose, floor, lots)
        if chosen is not None:
            return Allocation(product_id, *chosen)
        sizes: dict[Decimal, int] = defaultdict(int)
        for c in lots:
            sizes[c.presentation_grams] += c.available_vials
        shortfalls.append(
            Shortfall(
                product_id,
                sum((g * n for g, n in sizes.items()), Decimal(0)),
                tuple(sorted(sizes.items(), reverse=True)),
            )
        )
    return shortfalls


def _allocate_product(
    dose: Decimal, floor: Decimal, lots: list[Candidate]
) -> tuple[tuple[tuple[str, int], ...], Decimal, Decimal] | None:
    if not lots:
        return None
    # integer milligrams: vial sizes and doses have at most 3 decimals (reservations.py)
    sizes_mg = {c.lot_id: int(c.presentation_grams * 1000) for c in lots}
    unit = math.gcd(*sizes_mg.values())
    units = {lot_id: mg // unit for lot_id, mg in sizes_mg.items()}
    want = -(-int(dose * 1000) // unit)  # the dose in units, rounded up to cover it
    lowest = -(-math.ceil(floor * 1000) // unit)
    # first-expiry groups: each a list of (size in units, vials) per vial size
    groups: dict[dt.date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for c in lots:
        groups[c.expiry_date][units[c.lot_id]] += c.available_vials
    days = sorted(groups)
    most = sum(u * n for g in groups.values() for u, n in g.items())
    limit = min(most, want + max(max(g) for g in groups.values()))
    mask = (1 << (limit + 1)) - 1
    alone = [_reachable(groups[d], mask) for d in days]
    # suffix[i]: totals the groups i.. can make together
    suffix = [1] * (len(days) + 1)
    for i in range(len(days) - 1, -1, -1):
        suffix[i] = _combine(alone[i], suffix[i + 1], mask)
    total = _pick_total(suffix[0], want, lowest, limit)
    if total is None:
        return None
    # rule 3: take as much as possible from each expiry in turn, keeping the rest makeable
    amounts = []
    left = total
    for i in range(len(days)):
        take = next(
            g
            for g in range(min(left, limit), -1, -1)
            if (alone[i] >> g) & 1 and (suffix[i + 1] >> (left - g)) & 1
        )
        amounts.append(take)
        left -= take
    lines: list[tuple[str, int]] = []
    for day, amount in zip(days, amounts, strict=True):
        if amount:
            counts = _fewest_vials(groups[day], amount)
            lines.extend(_fill_lots([c for c in lots if c.expiry_date == day], units, counts))
    total_grams = _clean(Decimal(total * unit) / 1000)
    return tuple(lines), total_grams, _clean(max(total_grams - dose, Decimal(0)))


def _clean(value: Decimal) -> Decimal:
    """2.50 → 2.5 and 40 stays 40 (normalize alone would give 4E+1)."""
    return value.quantize(Decimal(1)) if value == value.to_integral() else value.normalize()


def _reachable(sizes: dict[int, int], mask: int) -> int:
    """Bitset of the totals the vials can make (bounded counts by binary splitting)."""
    reach = 1
    for size, count in sizes.items():
        piece = 1
        while count > 0:
            k = min(piece, count)
            reach |= (reach << (size * k)) & mask
            count -= k
            piece *= 2
    return reach


def _combine(a: int, b: int, mask: int) -> int:
    """Totals of one mix from a plus one from b."""
    out = 0
    bits = a
    shift = 0
    while bits:
        if bits & 1:
            out |= (b << shift) & mask
        bits >>= 1
        shift += 1
    return out


def _pick_total(reach: int, want: int, lowest: int, limit: int) -> int | None:
    for t in range(want, limit + 1):  # rule 2: the least overfill that covers the dose
        if (reach >> t) & 1:
            return t
    for t in range(want - 1, max(lowest, 1) - 1, -1):  # else the most within the band
        if (reach >> t) & 1:
            return t
    return None


def _fewest_vials(sizes: dict[int, int], amount: int) -> dict[int, int]:
    """Bounded coin change: vials per size making exactly ``amount`` with the fewest vials."""
    inf = amount + 1
    best = [0] + [inf] * amount
    used: list[dict[int, int]] = [{} for _ in range(amount + 1)]
    for size, count in sorted(sizes.items(), reverse=True):
        nxt = best[:]
        nxt_used = [dict(u) for u in used]
        for total in range(amount + 1):
            if best[total] >= inf:
                continue
            for k in range(1, count + 1):
                t = total + size * k
                if t > amount:
                    break
                if best[total] + k < nxt[t]:
                    nxt[t] = best[total] + k
                    nxt_used[t] = {**used[total], size: k}
        best, used = nxt, nxt_used
    return used[amount]


def _fill_lots(
    lots: list[Candidate], units: dict[str, int], counts: dict[int, int]
) -> list[tuple[str, int]]:
    """Spread each size's vials over its lots, fullest lot first (rule 5), then by id."""
    lines = []
    for size, need in sorted(counts.items(), reverse=True):
        same = sorted(
            (c for c in lots if units[c.lot_id] == size),
            key=lambda c: (-c.available_vials, c.lot_id),
        )
        for c in same:
            if need == 0:
                break
            take = min(need, c.available_vials)
            lines.append((c.lot_id, take))
            need -= take
    return lines
