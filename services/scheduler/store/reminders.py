"""Appointment reminder rows (domain/reminders.py): scheduled in the booking's transaction,
cancelled in the cancellation's or the move's, claimed by the reminder job when due.

A reminder already handed to notify may still be waiting there (the patient's quiet hours, a
retry), so cancelling it also writes CANCEL_NOTIFICATION rows to the outbox, one per
notification the job may have published under its key (the staff broadcast and the patient's
copy); the relay calls notify's CancelNotification with them (adapters/notify_relay.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from services.common.ids import new_id
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.reminders import (
    ReminderStatus,
    local_start,
    plan_reminders,
    reminder_key,
)
from services.scheduler.store.events import PATIENT_COPY, Event, write_events
from services.scheduler.store.models import AppointmentRow, ReminderRow, SiteRow, outbox

CANCEL_NOTIFICATION = "CANCEL_NOTIFICATION"


def schedule(
    session: Session,
    appointment_id: str,
    zone: ZoneInfo,
    offsets_hours: Sequence[float],
    now: dt.datetime,
) -> None:
    """The reminders of a booking made (or moved) at ``now`` (saved before this is called)."""
    row = _saved(session, appointment_id)
    start = local_start(row.local_date, row.start_minute, zone)
    taken = {r.dedupe_key for r in row.reminders}
    for values in new_rows(row.id, start, row.start_at, offsets_hours, now, taken):
        del values["appointment_id"]
        row.reminders.append(ReminderRow(**values))
    session.flush()


def new_rows(
    appointment_id: str,
    start: dt.datetime,
    start_at: dt.datetime,
    offsets_hours: Sequence[float],
    now: dt.datetime,
    taken: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The reminder rows a booking starting at ``start`` (local) scheduled at ``now``; a key
    in ``taken`` (moved away and back to the same time: the old key may be cancelled at
    notify) gets a suffix."""
    rows = []
    for planned in plan_reminders(start, offsets_hours, now):
        base = key = reminder_key(appointment_id, planned.offset, start_at)
        n = 1
        while key in taken:
            n += 1
            key = f"{base}:{n}"
        rows.append(
            {
                "id": new_id(),
                "appointment_id": appointment_id,
                "offset_label": planned.offset,
                "due_at": planned.due_at,
                "status": ReminderStatus.SCHEDULED.value,
                "dedupe_key": key,
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


def cancel(session: Session, appointment_id: str, now: dt.datetime) -> int:
    """Cancel the appointment's reminders not yet sent; those already raised are cancelled at
    notify too, unless the appointment has begun (nothing left to hold back). Returns how many
    reminders were cancelled."""
    row = _saved(session, appointment_id)
    cancelled = 0
    events: list[Event] = []
    for reminder in row.reminders:
        if reminder.status == ReminderStatus.SCHEDULED.value:
            reminder.status = ReminderStatus.CANCELLED.value
            reminder.updated_at = now
            cancelled += 1
        elif reminder.status == ReminderStatus.RAISED.value and row.start_at > now:
            reminder.status = ReminderStatus.CANCELLED.value
            reminder.updated_at = now
            cancelled += 1
            for key in (reminder.dedupe_key, reminder.dedupe_key + PATIENT_COPY):
                events.append(Event(CANCEL_NOTIFICATION, f"CANCEL:{key}", {"dedupe_key": key}))
    session.flush()
    write_events(session, outbox, events, now)
    return cancelled


def _saved(session: Session, appointment_id: str) -> AppointmentRow:
    """The appointment's row, from the session that saved it (no query)."""
    row = session.get(AppointmentRow, appointment_id)
    assert row is not None, "save the appointment before its reminders"
    return row


def claim_due(session: Session, now: dt.datetime) -> list[tuple[AppointmentRow, ReminderRow]]:
    """The reminders to raise now, marked RAISED: per appointment the latest one due (earlier
    ones due with it are SKIPPED), and only while the appointment is booked and has not begun.
    Rows another replica is claiming are skipped (SKIP LOCKED on PostgreSQL)."""
    due = list(
        session.scalars(
            select(ReminderRow)
            .where(
                ReminderRow.status == ReminderStatus.SCHEDULED.value,
                ReminderRow.due_at <= now,
            )
            .order_by(ReminderRow.appointment_id, ReminderRow.due_at)
            .with_for_update(skip_locked=True)
        )
    )
    if not due:
        return []
    ids = sorted({r.appointment_id for r in due})
    appointments = {
        a.id: a for a in session.scalars(select(AppointmentRow).where(AppointmentRow.id.in_(ids)))
    }
    claimed: list[tuple[AppointmentRow, ReminderRow]] = []
    for appointment_id, group in groupby(due, key=lambda r: r.appointment_id):
        reminders = list(group)
        for reminder in reminders:
            reminder.status = ReminderStatus.SKIPPED.value
            reminder.updated_at = now
        appointment = appointments[appointment_id]
        if appointment.status == AppointmentStatus.BOOKED.value and appointment.start_at > now:
            latest = reminders[-1]
            latest.status = ReminderStatus.RAISED.value
            claimed.append((appointment, latest))
    session.flush()
    return claimed


def schedule_booked(
    connection: Connection, offsets_hours: Sequence[float], now: dt.datetime
) -> int:
    """Migration 0007's backfill: the reminders of the appointments booked before reminders
    were stored, as a booking made ``now`` would schedule them (an appointment that already
    has reminder rows is left alone). Core SQL on a connection: it runs inside Alembic."""
    table = ReminderRow.__table__
    has_rows = select(table.c.appointment_id).distinct()
    booked = connection.execute(
        select(
            AppointmentRow.id,
            AppointmentRow.local_date,
            AppointmentRow.start_minute,
            AppointmentRow.start_at,
            SiteRow.time_zone,
        )
        .join(SiteRow, SiteRow.id == AppointmentRow.site_id)
        .where(
            AppointmentRow.status == AppointmentStatus.BOOKED.value,
            AppointmentRow.start_at > now,
            AppointmentRow.id.not_in(has_rows),
        )
    ).all()
    rows = []
    for appointment_id, local_date, start_minute, start_at, zone in booked:
        start = local_start(local_date, start_minute, ZoneInfo(zone))
        rows.extend(new_rows(appointment_id, start, start_at, offsets_hours, now))
    if rows:
        connection.execute(table.insert(), rows)  # type: ignore[attr-defined]
    return len(rows)
