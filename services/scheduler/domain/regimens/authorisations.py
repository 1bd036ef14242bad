"""Prior authorisations: their periods and whether a booking falls inside one
(docs/clinical-rules.md#prior-authorisations).

A payer authorises 6 months first and renews yearly; a booking outside every active
authorisation is refused where the plan requires one, and one close to the end is warned about
so the renewal can be asked for in time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from services.scheduler.domain.regimens.calendar import add_months

FIRST_MONTHS = 6
RENEWAL_MONTHS = 12
EXPIRING_DAYS = 30
ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Authorisation:
    payer: str
    product_group: str
    valid_from: dt.date
    valid_to: dt.date  # inclusive
    active: bool = True

    def covers(self, day: dt.date) -> bool:
        return self.active and self.valid_from <= day <= self.valid_to


def first_period(start: dt.date) -> tuple[dt.date, dt.date]:
    """start to start + 6 months − 1 day."""
    return start, add_months(start, FIRST_MONTHS) - ONE_DAY


def renewal_period(previous_to: dt.date) -> tuple[dt.date, dt.date]:
    """The next day to that day + 12 months − 1 day."""
    start = previous_to + ONE_DAY
    return start, add_months(start, RENEWAL_MONTHS) - ONE_DAY


@dataclass(frozen=True)
class AuthorisationCheck:
    allowed: bool
    code: str | None  # no_authorisation (refused) or authorisation_expiring (warning)
    authorisation: Authorisation | None
    explanation: str


def check_authorisation(
    authorisations: Iterable[Authorisation], day: dt.date, required: bool
) -> AuthorisationCheck:
    """``day`` is the booking's date, or today for the due list."""
    anchor = "(docs/clinical-rules.md#prior-authorisations)"
    covering = [a for a in authorisations if a.covers(day)]
    if not covering:
        if required:
            return AuthorisationCheck(
                False, "no_authorisation", None, f"no active authorisation covers {day} {anchor}"
            )
        return AuthorisationCheck(True, None, None, "the plan needs no authorisation")
    best = max(covering, key=lambda a: a.valid_to)
    left = (best.valid_to - day).days
    if left <= EXPIRING_DAYS:
        return AuthorisationCheck(
            True,
            "authorisation_expiring",
            best,
            f"the {best.payer} authorisation ends on {best.valid_to}, {left} days after {day}: "
            f"30 days or less {anchor}",
        )
    return AuthorisationCheck(
        True, None, best, f"authorised by {best.payer} to {best.valid_to} {anchor}"
    )
