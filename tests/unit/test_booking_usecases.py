"""The booking use cases on an in-memory appointment store: load, let the appointment decide,
save, write what its events set going (the outbox and the reminders), with no gRPC and no
database. The slot rules and the SQL behind them are the integration tests' part."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.common import errors
from services.common.clock import FixedClock
from services.scheduler.domain.appointments import Appointment, AppointmentStatus, Parties
from services.scheduler.store.events import Event, board_changed
from services.scheduler.usecases.bookings import Bookings
from tests.unit.builders import BOOKED_AT, LONDON, booked, held

S = AppointmentStatus


class FakeAppointments:
    """An AppointmentStore in a dict: what a use case saved, wrote and asked of the reminders."""

    def __init__(self, *appointments: Appointment) -> None:
        self.saved = {a.id: copy.deepcopy(a) for a in appointments}
        self.outbox: list[Event] = []
        self.board: list[Event] = []  # the BOARD_CHANGED signals, kept apart
        self.reminders: list[tuple[str, str]] = []

    def get(self, appointment_id: str) -> Appointment:
        if appointment_id not in self.saved:
            raise errors.NotFound("appointment", appointment_id)
        return copy.deepcopy(self.saved[appointment_id])

    def add(self, appointment: Appointment) -> None:
        self.saved[appointment.id] = copy.deepcopy(appointment)

    save = add

    def current(self, appointment_id: str) -> Appointment:
        return copy.deepcopy(self.saved[appointment_id])

    def zone(self, site_id: str) -> ZoneInfo:
        return LONDON

    def parties(self, appointment: Appointment) -> Parties:
        return Parties("Day unit", "Europe/London", "Ada Lovelace", "subscriber-1")

    def write(self, events: Sequence[Event], now: dt.datetime) -> None:
        for e in events:
            (self.board if e.topic == "BOARD_CHANGED" else self.outbox).append(e)

    def schedule_reminders(
        self, appointment_id: str, zone: ZoneInfo, offsets: Sequence[float], now: dt.datetime
    ) -> None:
        self.reminders.append(("schedule", appointment_id))

    def cancel_reminders(self, appointment_id: str, now: dt.datetime) -> None:
        self.reminders.append(("cancel", appointment_id))


def bookings(store: FakeAppointments, now: dt.datetime) -> Bookings:
    """Only the lifecycle's collaborators are real: the rest is never reached by these calls."""
    return Bookings(
        None,  # type: ignore[arg-type]
        FixedClock(now),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        appointments=lambda session: store,
    )


def topics(store: FakeAppointments) -> list[str]:
    return [e.topic for e in store.outbox]


def test_a_cancellation_is_saved_and_tells_the_patient_the_staff_and_the_inventory() -> None:
    store = FakeAppointments(booked())
    cancelled = bookings(store, dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)).cancel(
        None, "a-1", "patient unwell"
    )
    assert cancelled.status is S.CANCELLED and cancelled.cancel_reason == "patient unwell"
    assert store.saved["a-1"].status is S.CANCELLED
    assert topics(store) == ["APPOINTMENT_CHANGED", "APPOINTMENT_CHANGED", "RELEASE_RESERVATION"]
    # keyed by the revision the cancellation made, so a retry writes nothing twice
    assert store.outbox[-1].dedupe_key == "RELEASE_RESERVATION:a-1:2"
    notice: dict[str, Any] = store.outbox[0].payload
    assert notice["cancelled"] is True and "start_time" not in notice
    assert notice["previous_start_time"] == "2026-12-01T09:00:00+00:00"
    assert store.reminders == [("cancel", "a-1")]
    assert [e.dedupe_key for e in store.board] == ["BOARD_CHANGED:a-1:2"]
    assert store.board[0].payload == {
        "appointment_id": "a-1",
        "site_id": cancelled.site_id,
        "local_date": cancelled.local_date.isoformat(),
        "status": "CANCELLED",
        "revision": 2,
        "stock_status": "",
    }


def test_a_refused_move_saves_and_writes_nothing() -> None:
    store = FakeAppointments(booked())
    with pytest.raises(errors.FailedPrecondition):
        bookings(store, dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)).mark_no_show(None, "a-1")
    assert store.saved["a-1"].status is S.BOOKED and store.saved["a-1"].revision == 1
    assert store.outbox == [] and store.reminders == [] and store.board == []


def test_a_no_show_releases_the_stock_and_cancels_the_reminders() -> None:
    store = FakeAppointments(booked())
    bookings(store, dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)).mark_no_show(None, "a-1")
    assert store.saved["a-1"].status is S.NOSHOW
    assert topics(store) == ["RELEASE_RESERVATION"]
    assert store.reminders == [("cancel", "a-1")]


def test_check_in_and_start_change_the_appointment_only() -> None:
    store = FakeAppointments(booked())
    at_nine = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
    cases = bookings(store, at_nine)
    cases.check_in(None, "a-1")
    started = cases.start(None, "a-1", at_nine)
    assert started.status is S.IN_PROGRESS and started.actual_start_at == at_nine
    assert started.revision == 3
    assert store.outbox == [] and store.reminders == []
    # but every chair board at the site hears of each step, once per revision
    assert [(e.payload["status"], e.dedupe_key) for e in store.board] == [
        ("CHECKED_IN", "BOARD_CHANGED:a-1:2"),
        ("IN_PROGRESS", "BOARD_CHANGED:a-1:3"),
    ]


def test_confirming_a_hold_reserves_the_stock_and_schedules_the_reminders() -> None:
    store = FakeAppointments(held(BOOKED_AT + dt.timedelta(minutes=15)))
    confirmed = bookings(store, BOOKED_AT + dt.timedelta(minutes=5)).book(
        None, "h-1", "", "", None, None
    )
    assert confirmed.status is S.BOOKED and confirmed.hold_expires_at is None
    assert topics(store) == ["RESERVE_STOCK"]
    assert store.outbox[0].payload["grams"] == "30"
    assert store.reminders == [("schedule", "h-1")]


def test_a_lapsed_hold_is_not_booked() -> None:
    expiry = BOOKED_AT + dt.timedelta(minutes=15)
    store = FakeAppointments(held(expiry))
    with pytest.raises(errors.FailedPrecondition) as caught:
        bookings(store, expiry + dt.timedelta(minutes=1)).book(None, "h-1", "", "", None, None)
    assert caught.value.reason == "HOLD_EXPIRED"
    assert store.saved["h-1"].status is S.PENDING and store.outbox == [] and store.board == []


def test_an_unknown_appointment_is_not_found() -> None:
    with pytest.raises(errors.NotFound):
        bookings(FakeAppointments(), BOOKED_AT).cancel(None, "nope", "reason")


def test_a_moves_board_signal_names_the_day_it_left_and_an_answer_keeps_its_own_key() -> None:
    """A move to another day refreshes both days' boards; the inventory's answer keeps the
    revision, so its status is in the key (a later answer at the same revision is new)."""
    day = dt.date(2026, 12, 1)
    moved = board_changed(
        "a-1", "s-1", day, "BOOKED", 3, "", previous_local_date=day - dt.timedelta(days=1)
    )
    assert moved.payload["previous_local_date"] == "2026-11-30"
    same_day = board_changed("a-1", "s-1", day, "BOOKED", 3, "", previous_local_date=day)
    assert "previous_local_date" not in same_day.payload
    answer = board_changed("a-1", "s-1", day, "BOOKED", 3, "AT_RISK", key_suffix=":AT_RISK")
    assert (moved.dedupe_key, answer.dedupe_key) == (
        "BOARD_CHANGED:a-1:3",
        "BOARD_CHANGED:a-1:3:AT_RISK",
    )
