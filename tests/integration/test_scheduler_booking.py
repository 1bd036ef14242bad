"""Slot search and the booking lifecycle through real gRPC servers on SQLite and PostgreSQL:
ranked slots and day limits, direct and held bookings, conflicts answered with ABORTED naming
what collided, the FHIR status moves, the next due date after completion, rescheduling,
induction series, and wall-clock times that daylight saving never moves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.timeofday_pb2 import TimeOfDay

from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.builders import (
    ALL_DAYS,
    assert_no_chair_minute_twice,
    book,
    date,
    patient_plan,
    site_with_chairs,
)
from tests.integration.conftest import Platform, request_id
from tests.integration.errors import detail, error_reason, precondition_types


def test_find_slots_ranks_the_due_day_and_explains_closed_days(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")  # starts (is due) Tue 2026-12-01, ±4 days
    found = platform.scheduler.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan.id))
    assert found.due_date == date(2026, 12, 1)
    assert found.chair_minutes % 15 == 0 and found.chair_minutes > 0
    best = found.slots[0]
    assert (best.local_date, best.local_start.hours, best.days_from_due) == (
        date(2026, 12, 1),
        8,
        0,
    )
    assert best.chair_id in {c.id for c in chairs}
    # the window 27 Nov–5 Dec (today is 24 Nov): the weekend is closed
    closed = {(d.local_date.day, d.limit) for d in found.day_limits}
    assert {(28, "CLOSED"), (29, "CLOSED")} <= closed
    afternoon = platform.scheduler.FindSlots(
        pb.FindSlotsRequest(
            therapy_plan_id=plan.id,
            preferences=pb.SlotPreferences(time_of_day=pb.TIME_OF_DAY_PREFERENCE_AFTERNOON),
        )
    )
    assert afternoon.slots[0].local_start.hours >= 12


def test_booking_conflicts_are_aborted_with_the_collision_named(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    first = patient_plan(platform, site, "MRN-1")
    second = patient_plan(platform, site, "MRN-2")
    rid = request_id()
    booked = book(platform, first, chairs[0], dt.date(2026, 12, 1), 8, rid=rid)
    assert booked.status == pb.APPOINTMENT_STATUS_BOOKED
    assert (booked.local_start.hours, booked.start_time.ToDatetime()) == (
        8,
        dt.datetime(2026, 12, 1, 8, 0),  # GMT in December
    )
    assert book(platform, first, chairs[0], dt.date(2026, 12, 1), 8, rid=rid) == booked
    with pytest.raises(grpc.RpcError) as clash:
        book(platform, second, chairs[0], dt.date(2026, 12, 1), 9)
    assert clash.value.code() == grpc.StatusCode.ABORTED
    from google.rpc import error_details_pb2

    info = detail(clash.value, error_details_pb2.ErrorInfo)
    assert info is not None and info.metadata["rule"] == "CHAIRS"
    assert info.reason == "SLOT_TAKEN"
    assert info.metadata["conflicting_appointment_id"] == booked.id
    with pytest.raises(grpc.RpcError) as again:  # the plan's next infusion is booked already
        book(platform, first, chairs[1], dt.date(2026, 12, 2), 8)
    assert precondition_types(again.value) == ["NOT_BOOKED_YET"]
    with pytest.raises(grpc.RpcError) as late:  # 16:00 + 5 h runs past 18:00: not a race
        book(platform, second, chairs[1], dt.date(2026, 12, 1), 16)
    assert precondition_types(late.value) == ["OPENING_HOURS"]
    ok = book(platform, second, chairs[1], dt.date(2026, 12, 1), 8)
    assert ok.chair_id == chairs[1].id


def test_nurse_ratio_is_a_conflict_too(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform, chairs=2, nurses=1, ratio=1)
    a = patient_plan(platform, site, "MRN-1")
    b = patient_plan(platform, site, "MRN-2")
    book(platform, a, chairs[0], dt.date(2026, 12, 1), 8)
    with pytest.raises(grpc.RpcError) as busy:
        book(platform, b, chairs[1], dt.date(2026, 12, 1), 9)
    assert busy.value.code() == grpc.StatusCode.ABORTED
    assert "nurse" in (busy.value.details() or "")


def test_hold_then_book_and_an_expired_hold(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    hold = platform.scheduler.HoldSlot(
        pb.HoldSlotRequest(
            therapy_plan_id=plan.id,
            chair_id=chairs[0].id,
            local_date=date(2026, 12, 1),
            local_start=TimeOfDay(hours=10),
            request_id=request_id(),
        )
    ).appointment
    assert hold.status == pb.APPOINTMENT_STATUS_PENDING
    booked = platform.scheduler.BookAppointment(
        pb.BookAppointmentRequest(hold_id=hold.id, request_id=request_id())
    ).appointment
    assert (booked.id, booked.status) == (hold.id, pb.APPOINTMENT_STATUS_BOOKED)
    other = patient_plan(platform, site, "MRN-2")
    late = platform.scheduler.HoldSlot(
        pb.HoldSlotRequest(
            therapy_plan_id=other.id,
            chair_id=chairs[1].id,
            local_date=date(2026, 12, 1),
            local_start=TimeOfDay(hours=10),
            request_id=request_id(),
        )
    ).appointment
    platform.clock.advance(dt.timedelta(minutes=16))  # holds last 15 minutes by default
    got = platform.scheduler.GetAppointment(pb.GetAppointmentRequest(id=late.id)).appointment
    assert got.status == pb.APPOINTMENT_STATUS_CANCELLED and got.cancel_reason == "hold expired"
    with pytest.raises(grpc.RpcError) as lapsed:
        platform.scheduler.BookAppointment(
            pb.BookAppointmentRequest(hold_id=late.id, request_id=request_id())
        )
    assert precondition_types(lapsed.value) == ["HOLD_EXPIRED"]
    # the lapsed hold no longer holds the chair
    assert book(platform, other, chairs[1], dt.date(2026, 12, 1), 10).status == (
        pb.APPOINTMENT_STATUS_BOOKED
    )


def test_lifecycle_and_next_due_date(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    appt = book(platform, plan, chairs[0], dt.date(2026, 12, 2), 9)  # a day after due
    with pytest.raises(grpc.RpcError) as early:
        platform.scheduler.MarkNoShow(pb.MarkNoShowRequest(id=appt.id, request_id=request_id()))
    assert precondition_types(early.value) == ["APPOINTMENT_STARTED"]
    platform.clock.set(dt.datetime(2026, 12, 2, 8, 45, tzinfo=dt.UTC))  # the day, 08:45 GMT
    platform.scheduler.CheckIn(pb.CheckInRequest(id=appt.id, request_id=request_id()))
    platform.clock.set(dt.datetime(2026, 12, 2, 9, 5, tzinfo=dt.UTC))
    started = platform.scheduler.StartInfusion(
        pb.StartInfusionRequest(id=appt.id, request_id=request_id())
    ).appointment
    assert started.status == pb.APPOINTMENT_STATUS_IN_PROGRESS
    with pytest.raises(grpc.RpcError) as cancel:
        platform.scheduler.CancelAppointment(
            pb.CancelAppointmentRequest(id=appt.id, reason="x", request_id=request_id())
        )
    assert precondition_types(cancel.value) == ["APPOINTMENT_STATUS"]
    platform.clock.set(dt.datetime(2026, 12, 2, 14, 10, tzinfo=dt.UTC))
    done = platform.scheduler.CompleteInfusion(
        pb.CompleteInfusionRequest(
            id=appt.id,
            grams_given="70",
            scanned_lots=[pb.ScannedLot(lot_number="LE123", vials=7)],
            request_id=request_id(),
        )
    )
    assert done.appointment.status == pb.APPOINTMENT_STATUS_FULFILLED
    assert [x.lot_number for x in done.appointment.scanned_lots] == ["LE123"]
    # re-anchored on the day actually given: 2 Dec + 28 days = 30 Dec
    assert done.next_due.due_date == date(2026, 12, 30)
    due = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=60)
    )
    assert [d.due_date for d in due.due_infusions] == [date(2026, 12, 30)]


def test_check_in_start_and_complete_only_on_the_sites_day(platform: Platform) -> None:
    """Sydney (UTC+11 in December): the 09:00 chair on Tue 1 Dec starts at 22:00 UTC on 30 Nov;
    the local day runs 13:00 UTC 30 Nov to 13:00 UTC 1 Dec. The clock starts on 24 Nov."""
    site, chairs = site_with_chairs(platform, tz="Australia/Sydney")
    plan = patient_plan(platform, site, "MRN-1")
    appt = book(platform, plan, chairs[0], dt.date(2026, 12, 1), 9)
    assert appt.start_time.ToDatetime(dt.UTC) == dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.UTC)

    def status() -> int:
        return int(
            platform.scheduler.GetAppointment(
                pb.GetAppointmentRequest(id=appt.id)
            ).appointment.status
        )

    def refused(call: Callable[[], object], rule: str) -> str:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert precondition_types(caught.value) == [rule]
        assert error_reason(caught.value) == rule
        return caught.value.details() or ""

    def check_in() -> object:
        return platform.scheduler.CheckIn(pb.CheckInRequest(id=appt.id, request_id=request_id()))

    # a week early, and one minute before the local day: refused, nothing changed
    text = refused(check_in, "CHECK_IN_WINDOW")
    assert "2026-12-01 00:00 to 2026-12-02 00:00 (Australia/Sydney)" in text
    platform.clock.set(dt.datetime(2026, 11, 30, 12, 59, tzinfo=dt.UTC))
    refused(check_in, "CHECK_IN_WINDOW")
    assert status() == pb.APPOINTMENT_STATUS_BOOKED
    # 08:30 in Sydney, though still 30 Nov in UTC: checked in
    platform.clock.set(dt.datetime(2026, 11, 30, 21, 30, tzinfo=dt.UTC))
    check_in()
    assert status() == pb.APPOINTMENT_STATUS_CHECKED_IN

    # a start recorded before it happens is refused; the start itself is taken
    ahead = Timestamp()
    ahead.FromDatetime(dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC))
    refused(
        lambda: platform.scheduler.StartInfusion(
            pb.StartInfusionRequest(id=appt.id, actual_start_time=ahead, request_id=request_id())
        ),
        "START_WINDOW",
    )
    assert status() == pb.APPOINTMENT_STATUS_CHECKED_IN
    platform.clock.set(dt.datetime(2026, 11, 30, 22, 5, tzinfo=dt.UTC))
    platform.scheduler.StartInfusion(pb.StartInfusionRequest(id=appt.id, request_id=request_id()))

    def complete(end: dt.datetime | None = None) -> object:
        ended = Timestamp()
        if end is not None:
            ended.FromDatetime(end)
        return platform.scheduler.CompleteInfusion(
            pb.CompleteInfusionRequest(
                id=appt.id,
                grams_given="70",
                actual_end_time=ended if end is not None else None,
                request_id=request_id(),
            )
        )

    # at 11:00 in Sydney, an end recorded for 14:00 has not happened yet
    platform.clock.set(dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC))
    text = refused(
        lambda: complete(dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)), "COMPLETE_WINDOW"
    )
    assert "ahead of the clock" in text
    assert status() == pb.APPOINTMENT_STATUS_IN_PROGRESS
    platform.clock.set(dt.datetime(2026, 12, 1, 3, 10, tzinfo=dt.UTC))  # 14:10 in Sydney
    done = complete()
    assert isinstance(done, pb.CompleteInfusionResponse)
    assert done.appointment.status == pb.APPOINTMENT_STATUS_FULFILLED
    assert done.appointment.actual_start_time.ToDatetime(dt.UTC) == dt.datetime(
        2026, 11, 30, 22, 5, tzinfo=dt.UTC
    )


def test_keep_cadence_counts_from_the_due_date_and_flags_drift(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1", keep_cadence=True, window_days_late=4)
    # due 1 Dec; given 4 Dec (inside ±4): next due 1 Dec + 28 = 29 Dec, drift +3 days
    appt = book(platform, plan, chairs[0], dt.date(2026, 12, 4), 9)
    platform.clock.set(dt.datetime(2026, 12, 4, 14, 30, tzinfo=dt.UTC))  # recorded at the end
    done = platform.scheduler.CompleteInfusion(
        pb.CompleteInfusionRequest(id=appt.id, grams_given="70", request_id=request_id())
    )
    assert (done.next_due.due_date, done.next_due.drift_days, done.next_due.drifted) == (
        date(2026, 12, 29),
        3,
        False,
    )


def test_reschedule_moves_atomically(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    a = patient_plan(platform, site, "MRN-1")
    b = patient_plan(platform, site, "MRN-2")
    first = book(platform, a, chairs[0], dt.date(2026, 12, 1), 8)
    blocker = book(platform, b, chairs[1], dt.date(2026, 12, 2), 8)
    with pytest.raises(grpc.RpcError) as taken:
        platform.scheduler.RescheduleAppointment(
            pb.RescheduleAppointmentRequest(
                id=first.id,
                chair_id=chairs[1].id,
                local_date=date(2026, 12, 2),
                local_start=TimeOfDay(hours=9),
                request_id=request_id(),
            )
        )
    assert taken.value.code() == grpc.StatusCode.ABORTED
    still = platform.scheduler.GetAppointment(pb.GetAppointmentRequest(id=first.id)).appointment
    assert still.local_date == date(2026, 12, 1)  # nothing moved
    moved = platform.scheduler.RescheduleAppointment(
        pb.RescheduleAppointmentRequest(
            id=first.id,
            chair_id=chairs[0].id,
            local_date=date(2026, 12, 2),
            local_start=TimeOfDay(hours=8, minutes=15),
            etag=still.etag,
            request_id=request_id(),
        )
    ).appointment
    assert (moved.id, moved.local_date, moved.local_start.minutes) == (
        first.id,
        date(2026, 12, 2),
        15,
    )
    assert blocker.id != moved.id
    # the old slot is free again
    c = patient_plan(platform, site, "MRN-3")
    assert book(platform, c, chairs[0], dt.date(2026, 12, 1), 8).status == (
        pb.APPOINTMENT_STATUS_BOOKED
    )


def test_induction_course_books_consecutive_open_days_on_one_chair(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(
        platform,
        site,
        "MRN-1",
        induction=pb.InductionCourse(total_g_per_kg="2", days=5),
        start_date=date(2026, 12, 4),  # a Friday: the course runs Fri, Mon, Tue, Wed, Thu
    )
    course = platform.scheduler.BookInductionCourse(
        pb.BookInductionCourseRequest(therapy_plan_id=plan.id, request_id=request_id())
    ).appointments
    assert [a.local_date.day for a in course] == [4, 7, 8, 9, 10]
    assert len({(a.chair_id, a.local_start.hours, a.local_start.minutes) for a in course}) == 1
    assert len({a.series_id for a in course}) == 1 and course[0].series_id
    assert [a.course_day for a in course] == [1, 2, 3, 4, 5]


def test_wall_clock_times_survive_daylight_saving(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform, days=ALL_DAYS, open_h=0, close_h=24, nurses=2)
    plans = [
        patient_plan(platform, site, f"MRN-{i}", start_date=date(*d))
        for i, d in enumerate([(2027, 3, 26), (2027, 3, 29), (2027, 10, 29), (2027, 11, 1)])
    ]
    # booked in November 2026 (GMT) for 09:00 local on each side of both 2027 changes
    got = [
        book(platform, plan, chairs[0], dt.date(d.year, d.month, d.day), 9)
        for plan, d in zip(
            plans,
            [
                dt.date(2027, 3, 26),
                dt.date(2027, 3, 29),
                dt.date(2027, 10, 29),
                dt.date(2027, 11, 1),
            ],
            strict=True,
        )
    ]
    assert [a.local_start.hours for a in got] == [9, 9, 9, 9]
    assert [a.start_time.ToDatetime().hour for a in got] == [9, 8, 8, 9]  # GMT, BST, BST, GMT
    # the spring-forward night: 00:30 local on 28 March 2027 for N chair minutes ends N real
    # minutes later, an hour later on the wall clock (01:00–02:00 does not exist)
    night = patient_plan(platform, site, "MRN-night", start_date=date(2027, 3, 28))
    appt = book(platform, night, chairs[1], dt.date(2027, 3, 28), 0, 30)
    elapsed = appt.end_time.ToDatetime() - appt.start_time.ToDatetime()
    assert elapsed == dt.timedelta(minutes=appt.chair_minutes)
    wall = (appt.local_end.hours * 60 + appt.local_end.minutes) - 30
    assert wall == appt.chair_minutes + 60


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_64_parallel_bookings_never_share_a_chair_minute(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform, chairs=3, nurses=4, ratio=4)
    plans = [patient_plan(platform, site, f"MRN-{i}") for i in range(64)]

    def attempt(i: int) -> object:
        try:
            return book(platform, plans[i], chairs[i % 3], dt.date(2026, 12, 1), 8 + (i % 4))
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(attempt, range(64)))
    won = [r for r in results if isinstance(r, pb.Appointment)]
    assert {r for r in results if not isinstance(r, pb.Appointment)} <= {grpc.StatusCode.ABORTED}
    assert won
    listed = platform.scheduler.ListAppointments(
        pb.ListAppointmentsRequest(site_id=site.id, page_size=1000)
    ).appointments
    assert {a.id for a in listed} == {a.id for a in won}  # type: ignore[attr-defined]
    assert_no_chair_minute_twice(listed)


def test_concurrent_retries_of_one_booking_book_once_and_answer_alike(platform: Platform) -> None:
    """BookAppointment writes its request_id's key last (services.common.idempotency,
    ``key_last``): eight retries sent at once each run the booking, and all but the first
    meet the key or the booked chair, roll back and answer the first booking."""
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-twin")
    rid = request_id()
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: book(platform, plan, chairs[0], dt.date(2026, 12, 1), 9, rid=rid),
                range(8),
            )
        )
    assert all(a == answers[0] for a in answers)
    listed = platform.scheduler.ListAppointments(
        pb.ListAppointmentsRequest(site_id=site.id, page_size=100)
    ).appointments
    assert [a.id for a in listed] == [answers[0].id]


def test_plan_schedule_proposes_commits_and_shows_on_the_board(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform, chairs=2)
    plans = [patient_plan(platform, site, f"MRN-{i}") for i in range(3)]
    proposal = platform.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site.id,
            horizon_days=14,
            mode=pb.PLAN_MODE_PROPOSE,
            time_limit_seconds=5,
            seed=1,
        )
    )
    assert len(proposal.proposals) == 3 and not proposal.unplaced
    assert proposal.kpis.in_window_share == "1"
    assert proposal.greedy_kpis.placed == 3
    assert {p.therapy_plan_id for p in proposal.proposals} == {p.id for p in plans}
    assert not any(p.appointment_id for p in proposal.proposals)  # nothing written
    assert not platform.scheduler.ListAppointments(
        pb.ListAppointmentsRequest(site_id=site.id)
    ).appointments
    again = platform.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site.id,
            horizon_days=14,
            mode=pb.PLAN_MODE_PROPOSE,
            time_limit_seconds=5,
            seed=1,
        )
    )
    assert [p.slot for p in again.proposals] == [p.slot for p in proposal.proposals]  # seeded
    committed = platform.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site.id,
            horizon_days=14,
            mode=pb.PLAN_MODE_COMMIT,
            time_limit_seconds=5,
            seed=1,
            request_id=request_id(),
        )
    )
    ids = {p.appointment_id for p in committed.proposals}
    assert len(ids) == 3 and "" not in ids
    booked = platform.scheduler.ListAppointments(
        pb.ListAppointmentsRequest(site_id=site.id)
    ).appointments
    assert {a.id for a in booked} == ids
    day = booked[0].local_date
    board = platform.scheduler.GetChairBoard(
        pb.GetChairBoardRequest(site_id=site.id, local_date=day)
    )
    assert [c.chair_id for c in board.chairs] == [c.id for c in chairs]
    shown = {i.appointment.id for c in board.chairs for i in c.items if i.kind == "APPOINTMENT"}
    assert shown == {a.id for a in booked if a.local_date == day}
    assert all(
        c.items[0].local_start.hours == 8 and c.items[-1].local_end.hours == 18
        for c in board.chairs
    )
    assert board.kpis.placed == len(shown)
    with pytest.raises(grpc.RpcError) as too_far:
        platform.scheduler.PlanSchedule(
            pb.PlanScheduleRequest(site_id=site.id, horizon_days=93, mode=pb.PLAN_MODE_PROPOSE)
        )
    assert too_far.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_moves_and_cancellations_raise_appointment_changed(
    platform: Platform, database_url: str
) -> None:
    from sqlalchemy import create_engine, text

    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "MRN-1")
    appt = book(platform, plan, chairs[0], dt.date(2026, 12, 1), 8)
    platform.scheduler.RescheduleAppointment(
        pb.RescheduleAppointmentRequest(
            id=appt.id,
            chair_id=chairs[0].id,
            local_date=date(2026, 12, 2),
            local_start=TimeOfDay(hours=9),
            request_id=request_id(),
        )
    )
    platform.scheduler.CancelAppointment(
        pb.CancelAppointmentRequest(id=appt.id, reason="patient unwell", request_id=request_id())
    )
    url = (
        database_url.replace("test.db", "scheduler.db")
        if database_url.startswith("sqlite")
        else database_url
    )
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT payload FROM scheduler_outbox "
                    "WHERE topic = 'APPOINTMENT_CHANGED' ORDER BY seq"
                )
            ).all()
    finally:
        engine.dispose()
    import json

    payloads = [r[0] if isinstance(r[0], dict) else json.loads(r[0]) for r in rows]
    assert [p["payload"]["cancelled"] for p in payloads] == [False, True]
    moved = payloads[0]["payload"]
    assert moved["start_time"].startswith("2026-12-02T09:00")
    assert moved["previous_start_time"].startswith("2026-12-01T08:00")
