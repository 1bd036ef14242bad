"""The stock rule of a schedule, as arithmetic on the days' grams (capacity.py states it).

Per product, the days with a ``DayStock`` entry in date order: each has the grams in date and
unreserved (``grams``) and the grams that expire unused at its start (``expiring``: lots whose
last in-date day was the day before). Placements draw on the soonest-expiring stock first, so
what was drawn earlier is still missing on a later day only as far as it did not come out of
stock that expired in between:

    carried(first) = 0
    carried(j) = max(0, carried(j') + placed(j') − expiring(j))     j' the entry day before j
    placed(j) + carried(j) ≤ grams(j)                               for every entry day j

With no expiry, that is the stock running down (every gram placed is gone from every later
day); a short-dated lot can still be used up before it expires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class StockDay:
    day: dt.date
    grams: Decimal
    expiring: Decimal = Decimal(0)


def usage(days: Sequence[StockDay], placed: Mapping[dt.date, Decimal]) -> list[Decimal]:
    """placed(j) + carried(j) for each entry day j: what the placements take from its grams."""
    out = []
    carried = Decimal(0)
    previous = Decimal(0)
    for k, d in enumerate(days):
        if k:
            carried = max(Decimal(0), carried + previous - d.expiring)
        previous = placed.get(d.day, Decimal(0))
        out.append(previous + carried)
    return out


def first_short(
    days: Sequence[StockDay], placed: Mapping[dt.date, Decimal], day: dt.date, grams: Decimal
) -> int | None:
    """The index of the first entry day the stock cannot cover once ``grams`` more are placed
    on ``day``; -1 when ``day`` has no entry; None when every day is covered."""
    if not any(d.day == day for d in days):
        return -1
    more = dict(placed)
    more[day] = more.get(day, Decimal(0)) + grams
    for k, (d, used) in enumerate(zip(days, usage(days, more), strict=True)):
        if d.day >= day and used > d.grams:
            return k
    return None
