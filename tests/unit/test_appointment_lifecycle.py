"""An appointment's lifecycle without gRPC or a database (the Appointment of
services/scheduler/domain/appointments.py): each move checks its rules, applies itself, counts
a revision and returns the events it raises.

The appointment is a London booking on Tuesday 1 Dec 2026, 09:00–11:00 GMT (= UTC in winter).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.common import errors
from services.scheduler.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Booked,
    Cancelled,
    Completion,
    Fulfilled,
    MarkedNoShow,
    Moved,
)
from tests.unit.builders import BOOKED_AT, DAY, LONDON, booked, held, placement

S = AppointmentStatus


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def refusal(error: errors.FailedPrecondition) -> str:
    assert len(error.violations) == 1
    return error.violations[0].type


# --- booking and holds --------------------------------------------------------------------------


def test_a_new_booking_is_revision_one_and_raises_booked() -> None:
    appointment, events = Appointment.placed("a-1", placement(), S.BOOKED, BOOKED_AT)
    assert appointment.local_date == DAY
    assert appointment.status is S.BOOKED
    assert appointment.revision == 1
    assert (appointment.start_at, appointment.end_at) == (utc(2026, 12, 1, 9), utc(2026, 12, 1, 11))
    assert events == [Booked("a-1")]


def test_a_new_hold_raises_nothing_until_it_is_confirmed() -> None:
    hold = held(BOOKED_AT + dt.timedelta(minutes=15))
    assert hold.status is S.PENDING
    assert hold.status_at(BOOKED_AT) is S.PENDING
    events = hold.confirm(BOOKED_AT + dt.timedelta(minutes=5))
    assert events == [Booked("h-1")]
    assert hold.status is S.BOOKED
    assert hold.hold_expires_at is None
    assert hold.revision == 2


def test_a_lapsed_hold_reads_as_cancelled_and_cannot_be_confirmed() -> None:
    expiry = BOOKED_AT + dt.timedelta(minutes=15)
    hold = held(expiry)
    assert hold.status_at(expiry) is S.CANCELLED
    with pytest.raises(errors.FailedPrecondition) as caught:
        hold.confirm(expiry + dt.timedelta(seconds=1))
    assert refusal(caught.value) == "HOLD_EXPIRED"
    assert hold.status is S.PENDING and hold.revision == 1


def test_a_booking_cannot_be_confirmed_again() -> None:
    appointment = booked()
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.confirm(BOOKED_AT)
    assert refusal(caught.value) == "APPOINTMENT_STATUS"


# --- the visit ----------------------------------------------------------------------------------


def test_check_in_start_and_complete_on_the_day_raise_only_the_dispense() -> None:
    appointment = booked()
    assert appointment.check_in(utc(2026, 12, 1, 8, 40), LONDON) == []
    assert appointment.status is S.CHECKED_IN
    assert appointment.start(utc(2026, 12, 1, 9, 5), LONDON, utc(2026, 12, 1, 9, 5)) == []
    assert appointment.status is S.IN_PROGRESS
    lots = [{"lot_number": "L1", "gs1_element_string": "", "vials": 3, "product_id": ""}]
    given = Completion(Decimal("30"), None, None, lots)
    events = appointment.complete(utc(2026, 12, 1, 11, 10), LONDON, given)
    assert events == [Fulfilled("a-1", Decimal("30"), lots)]
    assert appointment.status is S.FULFILLED
    # the recorded start stays; the end defaults to now
    assert appointment.actual_start_at == utc(2026, 12, 1, 9, 5)
    assert appointment.actual_end_at == utc(2026, 12, 1, 11, 10)
    assert appointment.grams_given == Decimal("30")
    assert appointment.revision == 4


def test_check_in_on_another_day_is_refused_and_changes_nothing() -> None:
    appointment = booked()
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.check_in(utc(2026, 11, 25, 9), LONDON)
    assert refusal(caught.value) == "CHECK_IN_WINDOW"
    assert appointment.status is S.BOOKED and appointment.revision == 1


def test_an_infusion_starts_only_after_check_in() -> None:
    appointment = booked()
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.start(utc(2026, 12, 1, 9), LONDON, utc(2026, 12, 1, 9))
    assert refusal(caught.value) == "APPOINTMENT_STATUS"


def test_a_start_ahead_of_the_clock_is_refused() -> None:
    appointment = booked()
    appointment.check_in(utc(2026, 12, 1, 8, 40), LONDON)
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.start(utc(2026, 12, 1, 9), LONDON, utc(2026, 12, 1, 10))
    assert refusal(caught.value) == "START_WINDOW"


def test_a_booking_completed_without_times_started_at_its_booked_time() -> None:
    appointment = booked()
    appointment.complete(utc(2026, 12, 1, 11), LONDON, Completion(Decimal("30"), None, None, []))
    assert appointment.actual_start_at == utc(2026, 12, 1, 9)


@pytest.mark.parametrize(
    ("grams", "started", "ended", "field"),
    [
        (Decimal("0"), None, None, "grams_given"),
        (Decimal("30"), utc(2026, 12, 1, 10), utc(2026, 12, 1, 9), "actual_end_time"),
    ],
)
def test_a_completion_needs_grams_and_an_end_after_the_start(
    grams: Decimal, started: dt.datetime | None, ended: dt.datetime | None, field: str
) -> None:
    appointment = booked()
    with pytest.raises(errors.InvalidArgument) as caught:
        appointment.complete(utc(2026, 12, 1, 11), LONDON, Completion(grams, started, ended, []))
    assert [v.field for v in caught.value.violations] == [field]
    assert appointment.status is S.BOOKED


def test_a_completion_days_later_is_refused() -> None:
    appointment = booked()
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.complete(utc(2026, 12, 3, 9), LONDON, Completion(Decimal("30"), None, None, []))
    assert refusal(caught.value) == "COMPLETE_WINDOW"


# --- cancellation and no-show -------------------------------------------------------------------


def test_a_cancellation_keeps_its_reason_and_raises_cancelled() -> None:
    appointment = booked()
    assert appointment.cancel(utc(2026, 11, 28, 12), "patient unwell") == [Cancelled("a-1")]
    assert appointment.status is S.CANCELLED
    assert appointment.cancel_reason == "patient unwell"
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.cancel(utc(2026, 11, 28, 13), "again")
    assert refusal(caught.value) == "APPOINTMENT_STATUS"


def test_a_fulfilled_appointment_cannot_be_cancelled() -> None:
    appointment = booked()
    appointment.complete(utc(2026, 12, 1, 11), LONDON, Completion(Decimal("30"), None, None, []))
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.cancel(utc(2026, 12, 1, 12), "too late")
    assert refusal(caught.value) == "APPOINTMENT_STATUS"


def test_a_no_show_is_recorded_only_after_the_booked_time() -> None:
    appointment = booked()
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.mark_no_show(utc(2026, 12, 1, 8, 59))
    assert refusal(caught.value) == "APPOINTMENT_STARTED"
    assert appointment.mark_no_show(utc(2026, 12, 1, 9, 30)) == [MarkedNoShow("a-1")]
    assert appointment.status is S.NOSHOW


def test_a_checked_in_patient_is_no_no_show() -> None:
    appointment = booked()
    appointment.check_in(utc(2026, 12, 1, 8, 40), LONDON)
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.mark_no_show(utc(2026, 12, 1, 9, 30))
    assert refusal(caught.value) == "APPOINTMENT_STATUS"


# --- rescheduling -------------------------------------------------------------------------------


def test_a_booking_moved_to_another_time_raises_moved_with_its_old_start() -> None:
    appointment = booked()
    assert appointment.check_movable(BOOKED_AT) is S.BOOKED
    events = appointment.move_to(placement(dt.date(2026, 12, 2), 13 * 60), BOOKED_AT)
    assert events == [Moved("a-1", utc(2026, 12, 1, 9))]
    assert (appointment.local_date, appointment.start_at) == (
        dt.date(2026, 12, 2),
        utc(2026, 12, 2, 13),
    )
    assert appointment.status is S.BOOKED and appointment.revision == 2


def test_a_booking_moved_to_another_chair_at_the_same_time_raises_nothing() -> None:
    appointment = booked()
    assert appointment.move_to(placement(chair_id="chair-2"), BOOKED_AT) == []
    assert appointment.chair_id == "chair-2"
    assert appointment.revision == 2


def test_a_hold_moves_quietly_and_keeps_its_expiry() -> None:
    expiry = BOOKED_AT + dt.timedelta(minutes=15)
    hold = held(expiry)
    assert hold.check_movable(BOOKED_AT) is S.PENDING
    assert hold.move_to(placement(minute=10 * 60, hold_expires_at=expiry), BOOKED_AT) == []
    assert hold.status is S.PENDING and hold.hold_expires_at == expiry


def test_only_a_held_or_booked_appointment_moves() -> None:
    appointment = booked()
    appointment.check_in(utc(2026, 12, 1, 8, 40), LONDON)
    with pytest.raises(errors.FailedPrecondition) as caught:
        appointment.check_movable(utc(2026, 12, 1, 8, 45))
    assert refusal(caught.value) == "APPOINTMENT_STATUS"
    lapsed = held(BOOKED_AT)
    with pytest.raises(errors.FailedPrecondition):
        lapsed.check_movable(BOOKED_AT)
