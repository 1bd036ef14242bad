"""When an appointment's reminders go: a booking schedules them, a cancellation or a
move cancels them, and the reminder job raises each when its time comes.

Offsets are counted on the site's wall clock, not in elapsed hours: the 72 h reminder of
Monday 09:00 is Friday 09:00 local even when the clocks change in between (a patient reads
"three days before, same time"). A reminder whose time has already passed when the booking is
made is not scheduled: the booking itself was the notice (booked 30 h ahead → the 24 h
reminder only; booked an hour ahead → none). When the job finds several reminders of one
appointment due at once (it was down), only the latest is sent: one message, the most
current. Nothing here touches a database or the network."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

# hours before the booked local start (SCHEDULER_REMINDER_OFFSETS_HOURS; docs/notify.md)
DEFAULT_REMINDER_OFFSETS_HOURS = (72.0, 24.0)


class ReminderStatus(enum.StrEnum):
    SCHEDULED = "SCHEDULED"  # waiting for its time
    RAISED = "RAISED"  # handed to notify (through the outbox) at its time
    CANCELLED = "CANCELLED"  # the appointment was cancelled, moved or marked a no-show
    SKIPPED = "SKIPPED"  # superseded by a later reminder, or the appointment no longer booked


@dataclass(frozen=True)
class PlannedReminder:
    offset: str  # "72h": the label in dedupe keys and on the appointment
    due_at: dt.datetime  # UTC


def offset_label(hours: float) -> str:
    return f"{hours:g}h"


def local_start(local_date: dt.date, start_minute: int, zone: ZoneInfo) -> dt.datetime:
    """The booked wall-clock start (the truth; the UTC instant derives from it)."""
    naive = dt.datetime.combine(local_date, dt.time(0)) + dt.timedelta(minutes=start_minute)
    return naive.replace(tzinfo=zone)


def reminder_time(start: dt.datetime, hours: float) -> dt.datetime:
    """``hours`` before a local start, on the wall clock: 72 h before Monday 09:00 is Friday
    09:00 local even when the clocks change in between."""
    zone = start.tzinfo
    assert isinstance(zone, ZoneInfo)
    wall = start.replace(tzinfo=None) - dt.timedelta(hours=hours)
    return wall.replace(tzinfo=zone).astimezone(dt.UTC)


def plan_reminders(
    start: dt.datetime, offsets_hours: Iterable[float], booked_at: dt.datetime
) -> list[PlannedReminder]:
    """The reminders a booking made at ``booked_at`` schedules, earliest first."""
    planned = [PlannedReminder(offset_label(h), reminder_time(start, h)) for h in offsets_hours]
    return sorted((p for p in planned if p.due_at > booked_at), key=lambda p: p.due_at)


def utc_stamp(instant: dt.datetime) -> str:
    """An instant in dedupe keys: minutes in UTC, e.g. 20261202T1000Z."""
    return instant.astimezone(dt.UTC).strftime("%Y%m%dT%H%MZ")


def reminder_key(appointment_id: str, offset: str, start_at: dt.datetime) -> str:
    """The notification's dedupe key: the start is part of it, so a moved appointment's
    reminders are new notifications, and the old ones can be cancelled by key."""
    return f"APPOINTMENT_REMINDER:{appointment_id}:{offset}:{utc_stamp(start_at)}"
