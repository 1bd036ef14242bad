"""Cycles and where an outcome record belongs (docs/clinical-rules.md#regimen-cycles).

A cycle runs from an administration (day 0; a split course's first day) to the day before the
next one. Wearing-off is judged per cycle, so each outcome record is placed in the cycle with
the latest day 0 on or before its date, and only cycles of the current regimen version count: a
change of product, dose, days or interval starts the count again, because the old cycles say
nothing about the new regimen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Measure(StrEnum):
    """What an outcome record holds. WEARING_OFF is the day the patient reports weakness
    returning; its record's date is that day and it has no value."""

    GRIP_STRENGTH_KG = "GRIP_STRENGTH_KG"
    MRC_SUM_SCORE = "MRC_SUM_SCORE"
    DISABILITY_SCORE = "DISABILITY_SCORE"  # INCAT, ONLS or I-RODS, as the plan says
    WEARING_OFF = "WEARING_OFF"


@dataclass(frozen=True)
class OutcomeRecord:
    date: dt.date
    measure: Measure
    value: Decimal | None = None  # None only for WEARING_OFF


@dataclass(frozen=True)
class Administration:
    """A day of treatment. ``course_day`` > 1 marks the later days of a split course, which do
    not start a cycle. ``version`` is the regimen version it was given under."""

    date: dt.date
    version: int
    course_day: int = 1


@dataclass(frozen=True)
class Cycle:
    start: dt.date  # day 0
    version: int
    end: dt.date | None  # the day before the next administration; None while incomplete

    @property
    def complete(self) -> bool:
        return self.end is not None

    def day(self, date: dt.date) -> int:
        return (date - self.start).days


def build_cycles(administrations: Iterable[Administration]) -> tuple[Cycle, ...]:
    """Every cycle, oldest first, whatever its version (see :func:`current_cycles`)."""
    starts = sorted(
        (a for a in administrations if a.course_day == 1), key=lambda a: (a.date, a.version)
    )
    cycles = []
    for index, admin in enumerate(starts):
        following = starts[index + 1].date if index + 1 < len(starts) else None
        end = following - dt.timedelta(days=1) if following is not None else None
        cycles.append(Cycle(admin.date, admin.version, end))
    return tuple(cycles)


def current_cycles(cycles: Sequence[Cycle], version: int) -> tuple[Cycle, ...]:
    """The cycles given under the current regimen version: a new version restarts the count."""
    return tuple(c for c in cycles if c.version == version)


def cycle_of(date: dt.date, cycles: Sequence[Cycle]) -> Cycle | None:
    """The cycle with the latest day 0 on or before ``date``; None before the first one."""
    found = None
    for cycle in cycles:
        if cycle.start <= date and (found is None or cycle.start > found.start):
            found = cycle
    return found
