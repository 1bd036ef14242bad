"""The scheduler's settings: the shared shape (services/common/settings.py) and its jobs'."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field, field_validator

from services.common.settings import RelayingSettings, load
from services.scheduler.domain.regimens.reviews import ReviewMonths, ReviewPolicies
from services.scheduler.jobs import JobSettings


class SchedulerSettings(RelayingSettings):
    service: ClassVar[str] = "scheduler"

    # hours before a booked start when a reminder goes out, on the site's wall clock
    reminder_offsets_hours: str = "72,24"
    # a booked appointment not checked in this long after its start is reported missed
    missed_after_minutes: float = Field(30.0, gt=0, le=24 * 60)
    # how often the due scan, reminders and missed-infusion jobs run
    jobs_interval_seconds: float = Field(60.0, gt=0, le=24 * 3600)

    # outcome reviews: months to the first review and between reviews, "first,every"
    # (docs/regimens.md); an organisation's own as "org-a=3,12;org-b=6,6"
    review_months: str = "6,12"
    review_months_by_organisation: str = ""

    @field_validator("review_months")
    @classmethod
    def _review_months(cls, value: str) -> str:
        _months(value)
        return value

    @field_validator("review_months_by_organisation")
    @classmethod
    def _review_months_by_organisation(cls, value: str) -> str:
        _organisation_months(value)
        return value

    def review_policies(self) -> ReviewPolicies:
        return ReviewPolicies(
            _months(self.review_months), _organisation_months(self.review_months_by_organisation)
        )

    @field_validator("reminder_offsets_hours")
    @classmethod
    def _offsets(cls, value: str) -> str:
        try:
            hours = [float(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise ValueError("a comma-separated list of hours, e.g. 72,24") from None
        if any(not 0 < h <= 24 * 60 for h in hours):
            raise ValueError("offsets must be above 0 and at most 60 days (1440 h)")
        return value

    def job_settings(self) -> JobSettings:
        hours = {float(x) for x in self.reminder_offsets_hours.split(",") if x.strip()}
        return JobSettings(
            reminder_offsets_hours=tuple(sorted(hours, reverse=True)),
            missed_after=dt.timedelta(minutes=self.missed_after_minutes),
            interval_seconds=self.jobs_interval_seconds,
            review_policies=self.review_policies(),
        )


def _months(value: str) -> ReviewMonths:
    try:
        first, every = (int(x) for x in value.split(","))
        return ReviewMonths(first, every)
    except ValueError:
        raise ValueError(
            'months to the first review and between reviews, 1 to 24 each, e.g. "6,12"'
        ) from None


def _organisation_months(value: str) -> tuple[tuple[str, ReviewMonths], ...]:
    found = []
    for part in value.split(";"):
        if not part.strip():
            continue
        organisation, sep, months = part.partition("=")
        if not sep or not organisation.strip():
            raise ValueError('organisation=first,every pairs separated by ";", e.g. "org-a=3,12"')
        found.append((organisation.strip(), _months(months)))
    return tuple(found)


def load_settings(environ: Mapping[str, str] | None = None) -> SchedulerSettings:
    return load(SchedulerSettings, environ)
