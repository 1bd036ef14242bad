"""Which reminders a booking schedules (services/scheduler/domain/reminders.py), worked by
hand on the site's wall clock."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.domain.reminders import (
    PlannedReminder,
    local_start,
    plan_reminders,
    reminder_key,
)

LONDON = ZoneInfo("Europe/London")
UTC = dt.UTC


def test_a_booking_a_week_ahead_schedules_both_reminders_earliest_first() -> None:
    # Wed 2 Dec 2026 10:00 London (GMT, = UTC); booked Tue 24 Nov 09:00 UTC
    start = local_start(dt.date(2026, 12, 2), 10 * 60, LONDON)
    assert plan_reminders(start, (72.0, 24.0), dt.datetime(2026, 11, 24, 9, tzinfo=UTC)) == [
        PlannedReminder("72h", dt.datetime(2026, 11, 29, 10, tzinfo=UTC)),  # 2 Dec − 3 days
        PlannedReminder("24h", dt.datetime(2026, 12, 1, 10, tzinfo=UTC)),  # 2 Dec − 1 day
    ]


def test_a_booking_30_hours_ahead_gets_the_24_hour_reminder_only() -> None:
    # booked Tue 1 Dec 04:00 for Wed 2 Dec 10:00: 72 h mark (Sun 29 Nov 10:00) has passed,
    # the 24 h mark (Tue 1 Dec 10:00) is 6 h ahead
    start = local_start(dt.date(2026, 12, 2), 10 * 60, LONDON)
    booked = dt.datetime(2026, 12, 1, 4, tzinfo=UTC)
    assert plan_reminders(start, (72.0, 24.0), booked) == [
        PlannedReminder("24h", dt.datetime(2026, 12, 1, 10, tzinfo=UTC))
    ]
    # an hour ahead: none (the booking was the notice)
    assert plan_reminders(start, (72.0, 24.0), dt.datetime(2026, 12, 2, 9, tzinfo=UTC)) == []


def test_offsets_are_counted_on_the_wall_clock_across_the_spring_change() -> None:
    # Mon 29 Mar 2027 09:00 BST = 08:00 UTC; clocks went forward on Sun 28 Mar. 72 h before on
    # the wall clock is Fri 26 Mar 09:00 GMT = 09:00 UTC: 71 elapsed hours, not 72.
    start = local_start(dt.date(2027, 3, 29), 9 * 60, LONDON)
    (planned,) = plan_reminders(start, (72.0,), dt.datetime(2027, 3, 1, tzinfo=UTC))
    assert planned.due_at == dt.datetime(2027, 3, 26, 9, tzinfo=UTC)
    assert start.astimezone(UTC) - planned.due_at == dt.timedelta(hours=71)


def test_offsets_are_counted_on_the_wall_clock_across_the_autumn_change() -> None:
    # Mon 26 Oct 2026 09:00 GMT = 09:00 UTC; clocks went back on Sun 25 Oct. 72 h before on
    # the wall clock is Fri 23 Oct 09:00 BST = 08:00 UTC: 73 elapsed hours.
    start = local_start(dt.date(2026, 10, 26), 9 * 60, LONDON)
    (planned,) = plan_reminders(start, (72.0,), dt.datetime(2026, 10, 1, tzinfo=UTC))
    assert planned.due_at == dt.datetime(2026, 10, 23, 8, tzinfo=UTC)
    assert start.astimezone(UTC) - planned.due_at == dt.timedelta(hours=73)


def test_the_key_names_the_appointment_the_offset_and_the_utc_start() -> None:
    start_at = dt.datetime(2027, 3, 29, 8, tzinfo=UTC)
    assert reminder_key("a1", "72h", start_at) == "APPOINTMENT_REMINDER:a1:72h:20270329T0800Z"


@given(
    booked=st.datetimes(
        min_value=dt.datetime(2026, 1, 1),
        max_value=dt.datetime(2027, 12, 31),
        timezones=st.just(UTC),
    ),
    minute=st.integers(min_value=6 * 60, max_value=20 * 60),
    days_ahead=st.integers(min_value=0, max_value=30),
    offsets=st.lists(st.floats(min_value=0.5, max_value=240), min_size=1, max_size=4),
)
def test_every_reminder_scheduled_lies_between_the_booking_and_the_start(
    booked: dt.datetime, minute: int, days_ahead: int, offsets: list[float]
) -> None:
    start = local_start(booked.date() + dt.timedelta(days=days_ahead), minute, LONDON)
    planned = plan_reminders(start, offsets, booked)
    assert [p.due_at for p in planned] == sorted(p.due_at for p in planned)
    for p in planned:
        assert booked < p.due_at < start.astimezone(UTC) + dt.timedelta(hours=1)  # DST slack
