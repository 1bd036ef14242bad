"""Check-in, start and completion windows (services/scheduler/domain/attendance.py), worked by
hand in the site's local time: a winter day in London (GMT = UTC), a day in Sydney (UTC+11 in
December, so the local day starts the evening before in UTC) and London's two clock-change
days (23 and 25 hours long)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.common import errors
from services.scheduler.domain.attendance import (
    CLOCK_TOLERANCE,
    LATE_COMPLETION,
    check_check_in,
    check_complete,
    check_start,
    visit_window,
)

LONDON = ZoneInfo("Europe/London")
SYDNEY = ZoneInfo("Australia/Sydney")


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def refused(rule: str, check: object, *args: object) -> str:
    """The description of the single violation ``check(*args)`` raises, which names ``rule``."""
    with pytest.raises(errors.FailedPrecondition) as caught:
        check(*args)  # type: ignore[operator]
    assert [v.type for v in caught.value.violations] == [rule]
    assert caught.value.reason == rule
    return caught.value.violations[0].description


# A London appointment on Tuesday 1 Dec 2026, 09:00–14:00 GMT (= UTC in winter).
WINTER = visit_window("a-1", dt.date(2026, 12, 1), utc(2026, 12, 1, 14), LONDON)


def test_the_window_is_the_local_day_and_closes_at_its_end_for_a_day_visit() -> None:
    assert (WINTER.opens, WINTER.day_ends) == (utc(2026, 12, 1), utc(2026, 12, 2))
    # 14:00 + 6 h = 20:00 is before midnight: the day's end closes completion
    assert WINTER.closes == utc(2026, 12, 2)


def test_check_in_six_days_early_is_refused_and_the_day_itself_is_open() -> None:
    text = refused("CHECK_IN_WINDOW", check_check_in, WINTER, utc(2026, 11, 25, 9))
    assert "2026-12-01 00:00 to 2026-12-02 00:00 (Europe/London)" in text
    assert "it is 2026-11-25 09:00" in text
    refused("CHECK_IN_WINDOW", check_check_in, WINTER, utc(2026, 11, 30, 23, 59))
    check_check_in(WINTER, utc(2026, 12, 1, 0, 0))  # from local midnight
    check_check_in(WINTER, utc(2026, 12, 1, 8, 30))  # early for a 09:00 chair
    check_check_in(WINTER, utc(2026, 12, 1, 23, 59))  # late, still that day
    refused("CHECK_IN_WINDOW", check_check_in, WINTER, utc(2026, 12, 2, 0, 0))


def test_sydney_checks_in_by_its_own_day_not_the_utc_date() -> None:
    # 09:00 AEDT on 1 Dec is 22:00 UTC on 30 Nov; the local day is 13:00 UTC 30 Nov to
    # 13:00 UTC 1 Dec
    sydney = visit_window("s-1", dt.date(2026, 12, 1), utc(2026, 12, 1, 3), SYDNEY)
    assert (sydney.opens, sydney.day_ends) == (utc(2026, 11, 30, 13), utc(2026, 12, 1, 13))
    check_check_in(sydney, utc(2026, 11, 30, 21, 30))  # 08:30 local: the UTC date is the 30th
    check_check_in(sydney, utc(2026, 11, 30, 13, 0))  # local midnight
    refused("CHECK_IN_WINDOW", check_check_in, sydney, utc(2026, 11, 30, 12, 59))
    refused("CHECK_IN_WINDOW", check_check_in, sydney, utc(2026, 12, 1, 13, 0))  # 2 Dec, 00:00


def test_the_spring_forward_day_has_23_hours() -> None:
    # Sunday 29 Mar 2026: 01:00 GMT becomes 02:00 BST; the day ends at 00:00 BST = 23:00 UTC
    spring = visit_window("d-1", dt.date(2026, 3, 29), utc(2026, 3, 29, 13), LONDON)
    assert (spring.opens, spring.day_ends) == (utc(2026, 3, 29, 0), utc(2026, 3, 29, 23))
    check_check_in(spring, utc(2026, 3, 29, 22, 59))  # 23:59 BST
    # 00:30 BST on the 30th, still the 29th in UTC and within 24 h of the day's start
    refused("CHECK_IN_WINDOW", check_check_in, spring, utc(2026, 3, 29, 23, 30))


def test_the_fall_back_day_has_25_hours() -> None:
    # Sunday 25 Oct 2026: 02:00 BST becomes 01:00 GMT; the day starts at 00:00 BST = 23:00 UTC
    # on the 24th and ends at 00:00 GMT on the 26th
    autumn = visit_window("d-2", dt.date(2026, 10, 25), utc(2026, 10, 25, 13), LONDON)
    assert (autumn.opens, autumn.day_ends) == (utc(2026, 10, 24, 23), utc(2026, 10, 26, 0))
    check_check_in(autumn, utc(2026, 10, 24, 23, 30))  # 00:30 BST on the 25th
    refused("CHECK_IN_WINDOW", check_check_in, autumn, utc(2026, 10, 24, 22, 59))


def test_a_start_is_on_the_day_and_not_ahead_of_the_clock() -> None:
    now = utc(2026, 12, 1, 9, 10)
    check_start(WINTER, now, now)
    check_start(WINTER, now, utc(2026, 12, 1, 9, 0))  # recorded ten minutes late
    check_start(WINTER, now, now + CLOCK_TOLERANCE)  # the tablet's clock is a little ahead
    text = refused("START_WINDOW", check_start, WINTER, now, utc(2026, 12, 1, 11, 0))
    assert "ahead of the clock" in text
    text = refused("START_WINDOW", check_start, WINTER, now, utc(2026, 11, 30, 23, 0))
    assert "not on the booked day" in text
    refused("START_WINDOW", check_start, WINTER, utc(2026, 11, 25, 9), utc(2026, 11, 25, 9))


def test_completion_of_a_day_visit_ends_with_the_day() -> None:
    started = utc(2026, 12, 1, 9, 5)
    check_complete(WINTER, utc(2026, 12, 1, 14, 0), started, utc(2026, 12, 1, 14, 0))
    check_complete(WINTER, utc(2026, 12, 1, 23, 59), started, utc(2026, 12, 1, 14, 0))
    refused("COMPLETE_WINDOW", check_complete, WINTER, utc(2026, 12, 2, 0, 1), started, started)
    # six days early, with nothing recorded: the planned start is the start
    early = utc(2026, 11, 25, 9)
    text = refused("COMPLETE_WINDOW", check_complete, WINTER, early, utc(2026, 12, 1, 9), early)
    assert "completion is open from 2026-12-01 00:00 to 2026-12-02 00:00" in text


def test_a_long_evening_infusion_completes_after_midnight_within_the_grace() -> None:
    # booked 16:00–21:00 GMT; a reaction halves the rate and it runs past midnight
    evening = visit_window("e-1", dt.date(2026, 12, 1), utc(2026, 12, 1, 21), LONDON)
    assert evening.closes == utc(2026, 12, 1, 21) + LATE_COMPLETION == utc(2026, 12, 2, 3)
    started = utc(2026, 12, 1, 16, 10)
    check_complete(evening, utc(2026, 12, 2, 0, 40), started, utc(2026, 12, 2, 0, 30))
    check_complete(evening, utc(2026, 12, 2, 3, 0), started, utc(2026, 12, 2, 2, 55))
    text = refused(
        "COMPLETE_WINDOW", check_complete, evening, utc(2026, 12, 2, 3, 1), started, started
    )
    assert "until 6 h after the planned end" in text


def test_the_recorded_end_is_after_the_start_and_has_happened() -> None:
    now = utc(2026, 12, 1, 14)
    started = utc(2026, 12, 1, 9)
    text = refused("COMPLETE_WINDOW", check_complete, WINTER, now, started, utc(2026, 12, 1, 16))
    assert "ahead of the clock" in text
    text = refused("COMPLETE_WINDOW", check_complete, WINTER, now, started, started)
    assert "not after the start" in text
    text = refused(
        "COMPLETE_WINDOW", check_complete, WINTER, now, started, utc(2026, 11, 30, 23, 0)
    )
    assert "outside" in text
    # a start recorded on another day is refused at completion too
    text = refused(
        "COMPLETE_WINDOW", check_complete, WINTER, now, utc(2026, 11, 30, 9), utc(2026, 12, 1, 13)
    )
    assert "not on the booked day" in text
