"""Slot rules on small hand-drawn days (domain/slots.py). Times are local minutes: 08:00 = 480."""

from __future__ import annotations

import datetime as dt

from services.scheduler.domain.capacity import DayCapacity, FixedBooking, SiteRules
from services.scheduler.domain.slots import (
    CHAIRS,
    HOURS,
    NURSES,
    PATIENT_BOOKED,
    START_LIMIT,
    DayBook,
    rank,
)

DAY = dt.date(2026, 12, 1)
RULES = SiteRules(nurse_ratio=2, start_limit=1, turnover_minutes=15, granularity_minutes=15)


def day(chairs: tuple[str, ...] = ("A", "B"), nurses: int = 2, **kw: object) -> DayCapacity:
    # open 08:00–12:00 (480–720) with `nurses` on duty all morning
    fields: dict[str, object] = dict(
        day=DAY,
        open_minute=480,
        close_minute=720,
        chairs=chairs,
        nurse_shifts=((480, 720, nurses),),
    )
    fields.update(kw)
    return DayCapacity(**fields)  # type: ignore[arg-type]


def booking(i: str, chair: str, start: int, end: int, patient: str = "") -> FixedBooking:
    return FixedBooking(i, patient or f"p-{i}", chair, DAY, start, end)


def test_a_chair_is_free_only_after_the_turnover() -> None:
    book = DayBook(day(), RULES, [booking("x", "A", 480, 600)])  # A: 08:00–10:00, clean to 10:15
    assert [c.rule for c in book.check("A", 600, 60, "me")] == [CHAIRS]  # 10:00 too early
    assert book.check("A", 615, 60, "me") == []  # 10:15: cleaned
    # chair B is free; 2 nurses × 1 start each allow a second start in 08:00–08:15
    assert book.check("B", 480, 60, "me") == []


def test_nurse_ratio_counts_every_running_infusion() -> None:
    # one nurse at 1:2 → at most two infusions at once
    book = DayBook(
        day(chairs=("A", "B", "C"), nurses=1),
        RULES,
        [booking("x", "A", 480, 600), booking("y", "B", 540, 660)],
    )
    clash = book.check("C", 570, 30, "me")  # 09:30: x and y both running
    assert [c.rule for c in clash] == [NURSES]
    assert "1 nurse(s) on duty at 1:2" in clash[0].detail
    assert book.check("C", 600, 60, "me") == []  # 10:00: x has ended


def test_start_limit_per_quarter_hour() -> None:
    # two nurses × 1 start each per quarter: a third start at 08:00–08:15 is refused
    book = DayBook(
        day(chairs=("A", "B", "C"), nurses=2),
        RULES,
        [booking("x", "A", 480, 540), booking("y", "B", 480, 540)],
    )
    # running at 08:00 would be 3 ≤ 2 nurses × 2 patients: the ratio holds; starts would be 3
    assert [c.rule for c in book.check("C", 480, 60, "me")] == [START_LIMIT]
    assert book.check("C", 495, 60, "me") == []  # the next quarter hour
    relaxed = SiteRules(nurse_ratio=2, start_limit=2, turnover_minutes=15)
    book = DayBook(day(chairs=("A", "B", "C"), nurses=2), relaxed, book.bookings)
    assert book.check("C", 480, 60, "me") == []  # 2 nurses × 2 starts


def test_hours_grid_and_one_infusion_per_patient() -> None:
    book = DayBook(day(), RULES, [booking("x", "A", 480, 540, patient="me")])
    rules = [c.rule for c in book.check("B", 700, 60, "me")]
    # ends 12:40 > 12:00; already booked today; and no nurse is on duty after 12:00
    assert rules == [HOURS, PATIENT_BOOKED, NURSES]
    assert [c.rule for c in book.check("B", 490, 30, "other")] == [HOURS]  # 08:10 off grid


def test_fits_and_the_limit_of_a_full_day() -> None:
    book = DayBook(day(), RULES, [])
    fits, limit, _ = book.fits(240, "me")  # the whole morning on either chair
    assert [(f.chair_id, f.start) for f in fits] == [("A", 480), ("B", 480)]
    assert book.fits(300, "me")[1] == HOURS  # 5 h > 4 h open
    full = DayBook(day(), RULES, [booking("x", "A", 480, 720), booking("y", "B", 495, 720)])
    assert full.fits(60, "me")[1] == CHAIRS
    thin = DayBook(day(nurses=1), SiteRules(1, 4, 0), [booking("x", "A", 480, 720)])
    assert thin.fits(60, "me")[1] == NURSES


def test_blocks_take_the_chair() -> None:
    book = DayBook(day(chair_blocks=(("A", 540, 600),)), RULES, [])
    assert [c.rule for c in book.check("A", 480, 60, "me")] == [CHAIRS]  # 08:00–09:00 + 15
    assert book.check("A", 480, 45, "me") == []  # ends 08:45, cleaned by 09:00


def test_ranking_prefers_the_due_day_then_the_wished_time_and_chair() -> None:
    book = DayBook(day(), RULES, [])
    fits, _, _ = book.fits(60, "me")
    later = DAY + dt.timedelta(days=1)
    ranked = rank([(later, fits[0])] + [(DAY, f) for f in fits], DAY, morning=True, last_chair="B")
    assert ranked[0][0] == DAY and ranked[0][1].chair_id == "B"
    assert ranked[-1][0] == later
