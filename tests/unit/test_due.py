"""Due dates and windows (docs/clinical-rules.md#next-due-date, #due-window), worked by hand."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.domain.due import Administration, CourseKind, DueSpec, due_infusions

D = dt.date


def spec(**kw: object) -> DueSpec:
    base: dict[str, object] = dict(
        plan_id="p",
        plan_version=1,
        patient_id="pt",
        product_id="prod",
        start_date=D(2026, 12, 1),
        interval_days=28,
    )
    base.update(kw)
    return DueSpec(**base)  # type: ignore[arg-type]


def test_no_history_no_induction_is_due_on_start_date_with_default_4_day_window() -> None:
    [item] = due_infusions(spec(), [], today=D(2026, 11, 24))
    # due 1 Dec; window 1 Dec − 4 = 27 Nov … 1 Dec + 4 = 5 Dec
    assert item.due_date == D(2026, 12, 1)
    assert (item.window_start, item.window_end) == (D(2026, 11, 27), D(2026, 12, 5))
    assert item.course is CourseKind.MAINTENANCE and not item.overdue


def test_last_administration_plus_interval() -> None:
    history = [Administration(D(2026, 11, 10), CourseKind.MAINTENANCE)]
    [item] = due_infusions(spec(interval_days=21), history, today=D(2026, 11, 24))
    # 10 Nov + 21 days = 1 Dec
    assert item.due_date == D(2026, 12, 1)


def test_induction_days_come_first_on_consecutive_days() -> None:
    items = due_infusions(spec(induction_days=5), [], today=D(2026, 11, 24))
    assert [i.course_day for i in items] == [1, 2, 3, 4, 5]
    assert [i.due_date for i in items] == [D(2026, 12, d) for d in range(1, 6)]
    assert all(i.course is CourseKind.INDUCTION for i in items)


def test_partly_given_induction_lists_the_remaining_days() -> None:
    history = [
        Administration(D(2026, 12, 1), CourseKind.INDUCTION),
        Administration(D(2026, 12, 2), CourseKind.INDUCTION),
    ]
    items = due_infusions(spec(induction_days=5), history, today=D(2026, 12, 2))
    assert [(i.course_day, i.due_date) for i in items] == [
        (3, D(2026, 12, 3)),
        (4, D(2026, 12, 4)),
        (5, D(2026, 12, 5)),
    ]


def test_first_maintenance_after_induction_is_one_interval_after_the_first_course_day() -> None:
    history = [Administration(D(2026, 12, d), CourseKind.INDUCTION) for d in range(1, 6)]
    [item] = due_infusions(spec(induction_days=5), history, today=D(2026, 12, 6))
    # docs/clinical-rules.md#next-due-date: course day 1 = 1 Dec, + 28 days = 29 Dec (not 5 Dec + 28
    # = 2 Jan)
    assert item.due_date == D(2026, 12, 29)


def test_overdue_when_the_window_closed_before_today() -> None:
    history = [Administration(D(2026, 10, 1), CourseKind.MAINTENANCE)]
    [item] = due_infusions(spec(), history, today=D(2026, 11, 24))
    # 1 Oct + 28 = 29 Oct; window ends 2 Nov < 24 Nov
    assert item.due_date == D(2026, 10, 29) and item.overdue


@given(
    last=st.dates(min_value=D(2000, 1, 1), max_value=D(2090, 1, 1)),
    interval=st.integers(1, 182),
    early=st.integers(0, 30),
    late=st.integers(0, 30),
)
def test_window_always_brackets_the_due_date(
    last: dt.date, interval: int, early: int, late: int
) -> None:
    history = [Administration(last, CourseKind.MAINTENANCE)]
    s = spec(interval_days=interval, window_days_early=early, window_days_late=late)
    [item] = due_infusions(s, history, today=last)
    assert item.window_start <= item.due_date <= item.window_end
    assert (item.due_date - last).days == interval
    assert (item.window_end - item.window_start).days == early + late


# --- rule 6: a dose split over consecutive days (docs/clinical-rules.md#split-over-days) -------

M = CourseKind.MAINTENANCE


def test_a_split_dose_with_no_history_is_due_on_consecutive_days_from_the_start() -> None:
    items = due_infusions(spec(infusion_days=(0, 1, 2)), [], today=D(2026, 11, 24))
    # course days 1, 2, 3 on 1, 2 and 3 Dec, each with its own ±4-day window
    assert [(i.course_day, i.due_date) for i in items] == [
        (1, D(2026, 12, 1)),
        (2, D(2026, 12, 2)),
        (3, D(2026, 12, 3)),
    ]
    assert items[2].window_end == D(2026, 12, 7)


def test_a_one_day_dose_before_the_split_counts_as_a_whole_course() -> None:
    # 3 Nov given as one day (course day 0): next course 3 Nov + 28 = 1 Dec, then 2 Dec
    history = [Administration(D(2026, 11, 3), M)]
    items = due_infusions(spec(infusion_days=(0, 1)), history, today=D(2026, 11, 24))
    assert [(i.course_day, i.due_date) for i in items] == [(1, D(2026, 12, 1)), (2, D(2026, 12, 2))]


def test_the_rest_of_a_course_follows_the_day_given_even_when_it_drifted() -> None:
    # course due 1 Dec but given 4 Dec (day 1 of 2): day 2 follows on 5 Dec, not 2 Dec
    history = [Administration(D(2026, 12, 4), M, D(2026, 12, 1), course_day=1)]
    items = due_infusions(spec(infusion_days=(0, 1)), history, today=D(2026, 12, 4))
    assert [(i.course_day, i.due_date) for i in items] == [(2, D(2026, 12, 5))]


def test_the_next_course_is_one_interval_after_the_first_day_given() -> None:
    # given 4 and 5 Dec (due 1 and 2 Dec): next course 4 Dec + 28 = 1 Jan and 2 Jan, the first
    # day reporting its 3-day drift; keeping the cadence counts from the due date instead
    history = [
        Administration(D(2026, 12, 4), M, D(2026, 12, 1), course_day=1),
        Administration(D(2026, 12, 5), M, D(2026, 12, 2), course_day=2),
    ]
    items = due_infusions(spec(infusion_days=(0, 1)), history, today=D(2026, 12, 10))
    assert [(i.course_day, i.due_date) for i in items] == [(1, D(2027, 1, 1)), (2, D(2027, 1, 2))]
    assert (items[0].drift_days, items[1].drift_days) == (3, 0)
    kept = due_infusions(
        spec(infusion_days=(0, 1), keep_cadence=True), history, today=D(2026, 12, 10)
    )
    # 1 Dec + 28 = 29 Dec
    assert [i.due_date for i in kept] == [D(2026, 12, 29), D(2026, 12, 30)]


def test_sc_infusions_spread_over_the_week_are_not_a_split_course() -> None:
    # days 0, 2, 4 of each week: one infusion due at a time (rule 5), course day 0
    history = [Administration(D(2026, 12, 1), M)]
    [item] = due_infusions(
        spec(interval_days=7, infusion_days=(0, 2, 4)), history, today=D(2026, 12, 1)
    )
    assert (item.course_day, item.due_date) == (0, D(2026, 12, 3))
