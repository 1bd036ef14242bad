"""Pure parts of the scheduler's notification jobs: settings from the environment, wall-clock
reminder times across daylight saving, window-opening instants, and the relay's translation of
an outbox envelope to notify's PublishRequest."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from google.type.date_pb2 import Date

from infusion.notify.v1 import notify_pb2 as pb
from services.common.outbox import OutgoingEvent
from services.common.settings import SettingsError
from services.scheduler.adapters.notify_relay import publish_request
from services.scheduler.domain.reminders import reminder_time
from services.scheduler.jobs import JobSettings, local_midnight
from services.scheduler.settings import load_settings

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def test_settings_default_to_72_and_24_hours_and_30_minutes() -> None:
    s = load_settings({}).job_settings()
    assert s.reminder_offsets_hours == (72.0, 24.0)
    assert s.missed_after == dt.timedelta(minutes=30)
    assert s.interval_seconds == 60
    assert s == JobSettings()


def test_settings_from_the_environment() -> None:
    s = load_settings(
        {
            "SCHEDULER_REMINDER_OFFSETS_HOURS": "2, 48,2",
            "SCHEDULER_MISSED_AFTER_MINUTES": "45",
            "SCHEDULER_JOBS_INTERVAL_SECONDS": "15",
        }
    ).job_settings()
    assert s.reminder_offsets_hours == (48.0, 2.0)
    assert s.missed_after == dt.timedelta(minutes=45)
    assert s.interval_seconds == 15
    none = load_settings({"SCHEDULER_REMINDER_OFFSETS_HOURS": ""}).job_settings()
    assert none.reminder_offsets_hours == ()
    with pytest.raises(SettingsError, match="SCHEDULER_REMINDER_OFFSETS_HOURS='24,0'"):
        load_settings({"SCHEDULER_REMINDER_OFFSETS_HOURS": "24,0"})


def test_reminder_time_is_wall_clock_in_the_sites_zone() -> None:
    # Mon 29 Mar 2027 09:00 BST; clocks went forward on Sun 28 Mar
    start = dt.datetime(2027, 3, 29, 9, 0, tzinfo=LONDON)
    assert reminder_time(start, 72) == dt.datetime(2027, 3, 26, 9, 0, tzinfo=dt.UTC)
    assert reminder_time(start, 24) == dt.datetime(2027, 3, 28, 8, 0, tzinfo=dt.UTC)
    assert start - reminder_time(start, 72) == dt.timedelta(hours=71)
    # autumn: 72 local hours before Mon 2 Nov 2026 09:00 EST are 73 real hours
    autumn = dt.datetime(2026, 11, 2, 9, 0, tzinfo=NEW_YORK)
    assert autumn - reminder_time(autumn, 72) == dt.timedelta(hours=73)
    # no change in between: exactly the offset
    winter = dt.datetime(2026, 12, 2, 10, 0, tzinfo=LONDON)
    assert winter - reminder_time(winter, 24) == dt.timedelta(hours=24)


def test_a_window_opens_at_the_sites_local_midnight() -> None:
    assert local_midnight(dt.date(2026, 7, 1), LONDON) == dt.datetime(
        2026, 6, 30, 23, 0, tzinfo=dt.UTC
    )
    assert local_midnight(dt.date(2026, 12, 1), NEW_YORK) == dt.datetime(
        2026, 12, 1, 5, 0, tzinfo=dt.UTC
    )


def _event(topic: str, envelope: dict[str, object]) -> OutgoingEvent:
    now = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    return OutgoingEvent(1, "row-1", topic, "KEY-1", envelope, now, None)  # type: ignore[arg-type]


def test_the_relay_translates_an_infusion_due_envelope() -> None:
    request = publish_request(
        _event(
            "INFUSION_DUE",
            {
                "payload": {
                    "patient_id": "p1",
                    "site_id": "s1",
                    "therapy_plan_id": "plan-1",
                    "due_date": "2026-12-01",
                    "window_opens": "2026-11-27",
                    "window_closes": "2026-12-05",
                    "patient_name": "",
                    "unknown": "dropped",
                },
                "subscriber_ids": ["sub-1"],
                "expires_at": None,
            },
        )
    )
    assert request.topic == pb.TOPIC_INFUSION_DUE
    assert (request.request_id, request.dedupe_key) == ("row-1", "KEY-1")
    assert list(request.subscriber_ids) == ["sub-1"]
    due = request.payload.infusion_due
    assert due.due_date == Date(year=2026, month=12, day=1)
    assert due.window_closes == Date(year=2026, month=12, day=5)
    assert not request.HasField("expires_at")


def test_the_relay_translates_a_reminder_with_its_expiry() -> None:
    request = publish_request(
        _event(
            "APPOINTMENT_REMINDER",
            {
                "payload": {
                    "appointment_id": "a1",
                    "site_id": "s1",
                    "start_time": "2026-12-02T10:00:00Z",
                    "time_zone": "Europe/London",
                },
                "subscriber_ids": [],
                "expires_at": "2026-12-02T10:00:00+00:00",
            },
        )
    )
    assert request.topic == pb.TOPIC_APPOINTMENT_REMINDER
    assert list(request.subscriber_ids) == []
    start = request.payload.appointment_reminder.start_time.ToDatetime(dt.UTC)
    assert start == dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC)
    assert request.expires_at.ToDatetime(dt.UTC) == start
