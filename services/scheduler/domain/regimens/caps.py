"""Payer quantity caps over rolling 7- and 28-day runs (docs/clinical-rules.md#payer-caps).

Payers cap the grams of a product group per week and per 28 days. The check counts what is
actually dispensed (whole-vial grams, dose plus overfill) of every booked, held or given
administration, each on its own date, and looks at every run of consecutive days that contains
the new administration's date, not at calendar weeks, so no placement of the window hides an
excess. A given administration is a fact and is never refused; it is flagged instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.scheduler.domain.regimens.whole_vials import grams_text

WINDOWS = (7, 28)


@dataclass(frozen=True)
class PayerCap:
    grams_per_7_days: Decimal
    grams_per_28_days: Decimal

    def of(self, days: int) -> Decimal:
        return self.grams_per_7_days if days == 7 else self.grams_per_28_days


def _cap(week: int, four_weeks: int) -> PayerCap:
    return PayerCap(Decimal(week), Decimal(four_weeks))


# ⚠ example caps of one payer policy, by product group: docs/clinical-rules.md#payer-caps
DEFAULT_CAPS: dict[str, PayerCap] = {
    "hizentra": _cap(46, 184),
    "gamunex-c": _cap(42, 168),
    "gammagard-liquid": _cap(42, 168),
    "gammaked": _cap(42, 168),
    "hyqvia": _cap(40, 160),
    "cuvitru": _cap(40, 160),
    "cutaquig": _cap(40, 160),
    "xembify": _cap(42, 168),
}


class State(StrEnum):
    BOOKED = "BOOKED"
    HELD = "HELD"
    GIVEN = "GIVEN"
    CANCELLED = "CANCELLED"
    NO_SHOW = "NO_SHOW"

    @property
    def counts(self) -> bool:
        return self not in (State.CANCELLED, State.NO_SHOW)


@dataclass(frozen=True)
class Dispensed:
    """One administration day: whole-vial grams dispensed (dose + overfill)."""

    date: dt.date
    grams: Decimal
    state: State


@dataclass(frozen=True)
class CapRun:
    days: int  # 7 or 28
    first: dt.date
    last: dt.date
    grams: Decimal
    cap: Decimal


@dataclass(frozen=True)
class CapCheck:
    allowed: bool
    code: str | None  # payer_cap_exceeded, cap_exceeded_given, cap_overridden
    runs: tuple[CapRun, ...]  # per window over its cap: the run with the highest total
    explanation: str


def check_caps(
    history: Iterable[Dispensed],
    new: Dispensed,
    cap: PayerCap,
    override_reason: str = "",
) -> CapCheck:
    """Every run of 7 (and 28) consecutive days containing ``new.date`` must total at most the
    cap, ``new`` included; over → refused unless the authorisation carries an override."""
    anchor = "(docs/clinical-rules.md#payer-caps)"
    by_day: dict[dt.date, Decimal] = {}
    for item in (*history, new):
        if item.state.counts:
            by_day[item.date] = by_day.get(item.date, Decimal(0)) + item.grams
    over = []
    for days in WINDOWS:
        worst: CapRun | None = None
        for back in range(days - 1, -1, -1):  # earliest run first
            first = new.date - dt.timedelta(days=back)
            last = first + dt.timedelta(days=days - 1)
            total = sum((g for d, g in by_day.items() if first <= d <= last), Decimal(0))
            if total > cap.of(days) and (worst is None or total > worst.grams):
                worst = CapRun(days, first, last, total, cap.of(days))
        if worst is not None:
            over.append(worst)
    if not over:
        return CapCheck(True, None, (), f"within the payer's caps {anchor}")
    named = "; ".join(
        f"{grams_text(r.grams)} g from {r.first} to {r.last}, over {grams_text(r.cap)} g per "
        f"{r.days} days"
        for r in over
    )
    if new.state is State.GIVEN:
        return CapCheck(True, "cap_exceeded_given", tuple(over), f"given: {named} {anchor}")
    if override_reason.strip():
        return CapCheck(
            True,
            "cap_overridden",
            tuple(over),
            f"{named}; allowed by the authorisation's override: {override_reason.strip()}",
        )
    return CapCheck(False, "payer_cap_exceeded", tuple(over), f"{named} {anchor}")
