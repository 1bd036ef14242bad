"""A plan's coverage: its prior authorisations and payer caps, and what a booking or a converted
regimen may not exceed (docs/regimens.md, "Authorisations and payer caps").

The rules are authorisations.py (the period, ``no_authorisation``, ``authorisation_expiring``)
and caps.py (rolling 7- and 28-day runs); this module adds what the payer approved (grams or
doses over the authorisation's period) and composes the three into one check, refused with the
first rule broken. A cap left empty is no cap of that kind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from services.common.errors import Violations
from services.scheduler.domain.regimens.authorisations import (
    Authorisation,
    AuthorisationCheck,
    check_authorisation,
)
from services.scheduler.domain.regimens.caps import (
    CapCheck,
    Dispensed,
    PayerCap,
    State,
    check_caps,
)
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.whole_vials import grams_text

NO_CAP = Decimal("Infinity")
MAX_PERIOD_DAYS = 3 * 366


@dataclass(frozen=True)
class PlanAuthorisation:
    id: str
    plan_id: str
    payer: str
    valid_from: dt.date
    valid_to: dt.date
    approved_grams: Decimal | None = None
    approved_doses: int | None = None
    active: bool = True
    cap_override_reason: str = ""

    def rule(self) -> Authorisation:
        return Authorisation(self.payer, "", self.valid_from, self.valid_to, self.active)


@dataclass(frozen=True)
class PlanCaps:
    plan_id: str
    payer: str = ""
    grams_per_7_days: Decimal | None = None
    grams_per_28_days: Decimal | None = None
    authorisation_required: bool = False

    @property
    def any_cap(self) -> bool:
        return self.grams_per_7_days is not None or self.grams_per_28_days is not None

    def cap(self) -> PayerCap:
        return PayerCap(self.grams_per_7_days or NO_CAP, self.grams_per_28_days or NO_CAP)


def validate_authorisation(a: PlanAuthorisation, prefix: str = "authorisation") -> Violations:
    v = Violations()
    v.require(a.plan_id, f"{prefix}.therapy_plan_id")
    v.require(a.payer, f"{prefix}.payer")
    if a.valid_to < a.valid_from:
        v.add(f"{prefix}.valid_to", "must not be before valid_from")
    elif (a.valid_to - a.valid_from).days > MAX_PERIOD_DAYS:
        v.add(f"{prefix}.valid_to", f"a period is at most {MAX_PERIOD_DAYS} days")
    if a.approved_grams is not None and a.approved_grams <= 0:
        v.add(f"{prefix}.approved_grams", "must be greater than 0 (or empty for no limit)")
    return v


def validate_caps(c: PlanCaps, prefix: str = "payer_caps") -> Violations:
    v = Violations()
    v.require(c.plan_id, f"{prefix}.therapy_plan_id")
    for name in ("grams_per_7_days", "grams_per_28_days"):
        value = getattr(c, name)
        if value is not None and value <= 0:
            v.add(f"{prefix}.{name}", "must be greater than 0 (or empty for no cap)")
    if (
        c.grams_per_7_days is not None
        and c.grams_per_28_days is not None
        and c.grams_per_28_days < c.grams_per_7_days
    ):
        v.add(f"{prefix}.grams_per_28_days", "must not be below the 7-day cap")
    return v


def authorisation_state(
    authorisations: Sequence[PlanAuthorisation], caps: PlanCaps | None, day: dt.date
) -> tuple[AuthorisationCheck, PlanAuthorisation | None]:
    """The plan's state on ``day``: the rule's check and the authorisation that covers it."""
    required = caps is not None and caps.authorisation_required
    check = check_authorisation([a.rule() for a in authorisations], day, required)
    covering = None
    if check.authorisation is not None:
        covering = next(a for a in authorisations if a.rule() == check.authorisation)
    return check, covering


@dataclass(frozen=True)
class Given:
    """One administration of the patient as the caps count it."""

    id: str
    plan_id: str
    date: dt.date
    grams: Decimal
    state: State


def check_booking(
    authorisations: Sequence[PlanAuthorisation],
    caps: PlanCaps | None,
    plan_id: str,
    day: dt.date,
    grams: Decimal,
    others: Iterable[Given],
) -> CapCheck | None:
    """Refused (``no_authorisation``, ``authorised_quantity``, ``payer_cap_exceeded``) when a
    new administration of ``grams`` on ``day`` would break the plan's coverage; ``others``
    are the patient's other administrations of the product (the one being moved left out).
    Returns the cap check (None when the plan has no caps)."""
    check, covering = authorisation_state(authorisations, caps, day)
    if not check.allowed:
        raise Refused("no_authorisation", check.explanation)
    counted = [g for g in others if g.state.counts]
    if covering is not None:
        inside = [
            g
            for g in counted
            if g.plan_id == plan_id and covering.valid_from <= g.date <= covering.valid_to
        ]
        anchor = "(docs/regimens.md, authorisations and payer caps)"
        if covering.approved_doses is not None and len(inside) + 1 > covering.approved_doses:
            raise Refused(
                "authorised_quantity",
                f"the {covering.payer} authorisation approves {covering.approved_doses} doses "
                f"from {covering.valid_from} to {covering.valid_to}; {len(inside)} are already "
                f"booked or given {anchor}",
            )
        if covering.approved_grams is not None:
            total = sum((g.grams for g in inside), Decimal(0)) + grams
            if total > covering.approved_grams:
                raise Refused(
                    "authorised_quantity",
                    f"the {covering.payer} authorisation approves "
                    f"{grams_text(covering.approved_grams)} g from {covering.valid_from} to "
                    f"{covering.valid_to}; with this {grams_text(grams)} g it would be "
                    f"{grams_text(total)} g {anchor}",
                )
    if caps is None or not caps.any_cap:
        return None
    result = check_caps(
        [Dispensed(g.date, g.grams, g.state) for g in counted],
        Dispensed(day, grams, State.BOOKED),
        caps.cap(),
        covering.cap_override_reason if covering is not None else "",
    )
    if not result.allowed:
        raise Refused("payer_cap_exceeded", result.explanation)
    return result


def check_regimen(
    caps: PlanCaps | None, doses: Sequence[tuple[dt.date, Decimal]], override_reason: str = ""
) -> None:
    """A converted regimen's doses (its first weeks) against the plan's caps: refused
    (``payer_cap_exceeded``) naming the first dose whose runs go over."""
    if caps is None or not caps.any_cap:
        return
    for index, (day, grams) in enumerate(doses):
        rest = [Dispensed(d, g, State.BOOKED) for i, (d, g) in enumerate(doses) if i != index]
        result = check_caps(rest, Dispensed(day, grams, State.BOOKED), caps.cap(), override_reason)
        if not result.allowed:
            raise Refused(
                "payer_cap_exceeded",
                f"the converted regimen's dose of {day}: {result.explanation}",
            )
