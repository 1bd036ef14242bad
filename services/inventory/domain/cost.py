"""Cost of what was dispensed and wasted, and the value of what is on the shelf.

Pure rules: no SQL, no gRPC, no clock. The store hands in ledger facts; these functions decide
what counts, what it costs, and how it is grouped.

The rules, and why:

- Grams come from the ledger. A DISPENSE movement carries the grams given from its lot; a WASTE
  movement carries the grams thrown away (the unused part of an opened vial, or whole vials
  written off). Nothing else costs anything in this report: receipts, transfers, returns to the
  supplier and count adjustments move stock and so change the valuation, but they are neither
  dispensed nor wasted product.
- Cost of g grams from a lot = g ÷ vial size × the lot's own cost per vial, rounded to the
  currency's minor unit (half up) once per ledger entry. Lines and totals are sums of those
  rounded entries, so a total is always the exact sum of its lines.
- A REVERSAL undoes a mistake: the movement it reverses counts for nothing, in whatever period
  the reversal was made, and the REVERSAL row itself counts for nothing either. A report is
  therefore "what was dispensed and wasted in the period as the ledger knows it now"; a report
  of a past period changes when a correction is made afterwards, which is what a correction is
  for. (Counting the reversal as a negative entry in its own period instead would leave the
  wrong figure in the old period and a negative one in the new.)
- Grouping by patient or appointment attributes each dispense and waste movement of a dispense
  to the patient and appointment its administration trace names (via the reservation it was
  dispensed from). Whole vials written off with RecordWaste belong to no patient: they form the
  group with the empty key, "unattributed". Grams therefore add up to the same totals whichever
  grouping is asked for.
- Money never mixes currencies: one line per group and currency, one total per currency.
- Valuation: every vial on hand at the end of the period, at its lot's own cost per vial,
  whatever the lot's state (quarantined, expired or recalled vials still on the shelf are still
  held at cost until they are written off as waste or returned). On hand follows the same
  reversal rule: a reversed movement and its REVERSAL are both left out, so a waste recorded in
  error on the 24th and reversed on the 27th leaves the vials on the shelf on the 24th too.
- Times are the ledger's: a movement belongs to the local day on which it was recorded.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from services.common.errors import Violations

MAX_PERIOD_DAYS = 366  # a leap year: one report covers at most a year

# ISO 4217 minor units where they are not 2 (the others are).
_MINOR_UNITS = {
    "BHD": 3,
    "CLP": 0,
    "IQD": 3,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    "UGX": 0,
    "VND": 0,
}

UNATTRIBUTED = ""  # the group key of whole-vial waste that no patient received


class Grouping(StrEnum):
    PRODUCT = "PRODUCT"
    PATIENT = "PATIENT"
    APPOINTMENT = "APPOINTMENT"


class CostKind(StrEnum):
    DISPENSE = "DISPENSE"
    WASTE = "WASTE"


def round_money(amount: Decimal, currency: str) -> Decimal:
    places = _MINOR_UNITS.get(currency, 2)
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def cost_of(grams: Decimal, vial_grams: Decimal, vial_cost: Decimal, currency: str) -> Decimal:
    """g grams of a lot whose vials hold ``vial_grams`` and cost ``vial_cost`` each.
    Multiplied before dividing so that exact cases stay exact (7.3 g of a £340 10 g vial is
    7.3 × 340 ÷ 10 = £248.20)."""
    if vial_grams <= 0:
        return round_money(Decimal(0), currency)
    return round_money(grams * vial_cost / vial_grams, currency)


# --- the period ------------------------------------------------------------------------------


def validate_period(start: dt.date | None, end: dt.date | None, v: Violations) -> None:
    """Both days are inclusive local days; ``None`` means the field was missing (already
    reported by the parser)."""
    if start is None or end is None:
        return
    if start > end:
        v.add("end_date", f"{end} is before start_date {start}")
        return
    days = (end - start).days + 1
    if days > MAX_PERIOD_DAYS:
        v.add("end_date", f"the period is {days} days; at most {MAX_PERIOD_DAYS} are allowed")


def period_bounds(start: dt.date, end: dt.date, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants [from, to) covering local days start..end inclusive at the site: from
    local midnight opening ``start`` to local midnight closing ``end``. Days around a
    daylight-saving change are 23 or 25 hours long; a midnight that does not exist locally
    (a zone that springs forward at 00:00) is the instant of the change."""

    def midnight(day: dt.date) -> dt.datetime:
        local = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        return local.astimezone(dt.UTC)

    return midnight(start), midnight(end + dt.timedelta(days=1))


# --- dispensed and wasted --------------------------------------------------------------------


@dataclass(frozen=True)
class CostMovement:
    """A DISPENSE or WASTE ledger entry in the period, with its lot's price."""

    kind: CostKind
    product_id: str
    grams: Decimal
    vial_grams: Decimal
    vial_cost: Decimal
    currency: str
    reservation_id: str = ""  # set for the movements of a dispense
    reversed: bool = False  # a REVERSAL (made at any time) undid it


@dataclass(frozen=True)
class Recipient:
    """Who a dispense was for, from its administration trace."""

    patient_id: str
    appointment_id: str


@dataclass(frozen=True)
class CostLine:
    key: str
    currency: str
    dispensed_grams: Decimal = Decimal(0)
    dispensed_cost: Decimal = Decimal(0)
    wasted_grams: Decimal = Decimal(0)
    wasted_cost: Decimal = Decimal(0)

    def plus(self, other: CostLine) -> CostLine:
        return CostLine(
            self.key,
            self.currency,
            self.dispensed_grams + other.dispensed_grams,
            self.dispensed_cost + other.dispensed_cost,
            self.wasted_grams + other.wasted_grams,
            self.wasted_cost + other.wasted_cost,
        )


def group_key(
    movement: CostMovement, grouping: Grouping, recipients: Mapping[str, Recipient]
) -> str:
    if grouping is Grouping.PRODUCT:
        return movement.product_id
    who = recipients.get(movement.reservation_id) if movement.reservation_id else None
    if who is None:
        return UNATTRIBUTED
    return who.patient_id if grouping is Grouping.PATIENT else who.appointment_id


def entry_line(key: str, movement: CostMovement) -> CostLine:
    """One ledger entry as a line of its own: grams and its rounded cost."""
    cost = cost_of(movement.grams, movement.vial_grams, movement.vial_cost, movement.currency)
    if movement.kind is CostKind.DISPENSE:
        return CostLine(key, movement.currency, dispensed_grams=movement.grams, dispensed_cost=cost)
    return CostLine(key, movement.currency, wasted_grams=movement.grams, wasted_cost=cost)


def cost_lines(
    movements: Iterable[CostMovement],
    grouping: Grouping,
    recipients: Mapping[str, Recipient],
) -> tuple[list[CostLine], list[CostLine]]:
    """(lines by key then currency, totals by currency with an empty key)."""
    lines: dict[tuple[str, str], CostLine] = {}
    for m in movements:
        if m.reversed:
            continue
        key = group_key(m, grouping, recipients)
        entry = entry_line(key, m)
        found = lines.get((key, m.currency))
        lines[(key, m.currency)] = entry if found is None else found.plus(entry)
    ordered = [lines[k] for k in sorted(lines)]
    totals: dict[str, CostLine] = {}
    for line in ordered:
        # plus() keeps the left side's key: totals carry the empty key
        totals[line.currency] = totals.get(line.currency, CostLine("", line.currency)).plus(line)
    return ordered, [totals[c] for c in sorted(totals)]


# --- valuation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """Vials of one lot on hand at the end of the period."""

    product_id: str
    vials: int
    vial_grams: Decimal
    vial_cost: Decimal
    currency: str


@dataclass(frozen=True)
class ProductValue:
    product_id: str
    currency: str
    vials: int
    grams: Decimal
    value: Decimal


def valuation(holdings: Iterable[Holding]) -> tuple[list[ProductValue], dict[str, Decimal]]:
    """Per product and currency (a product bought in two currencies gets two entries), and
    the total per currency."""
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for h in holdings:
        if h.vials <= 0:
            continue
        s = sums[(h.product_id, h.currency)]
        s[0] += h.vials
        s[1] += h.vials * h.vial_grams
        s[2] += round_money(h.vials * h.vial_cost, h.currency)
    values = [
        ProductValue(product, currency, int(s[0]), s[1], s[2])
        for (product, currency), s in sorted(sums.items())
    ]
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for pv in values:
        totals[pv.currency] += pv.value
    return values, dict(sorted(totals.items()))
