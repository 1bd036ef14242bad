"""The scheduler's settings: the shared shape (services/common/settings.py) and its jobs'."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field, field_validator

from services.common.settings import ServiceSettings, load
from services.scheduler.jobs import JobSettings


class SchedulerSettings(ServiceSettings):
    service: ClassVar[str] = "scheduler"

    # hours before a booked start when a reminder goes out, on the site's wall clock
    reminder_offsets_hours: str = "72,24"
    # a booked appointment not checked in this long after its start is reported missed
    missed_after_minutes: float = Field(30.0, gt=0, le=24 * 60)
    # how often the due scan, reminders and missed-infusion jobs run
    jobs_interval_seconds: float = Field(60.0, gt=0, le=24 * 3600)

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
        )


def load_settings(environ: Mapping[str, str] | None = None) -> SchedulerSettings:
    return load(SchedulerSettings, environ)
