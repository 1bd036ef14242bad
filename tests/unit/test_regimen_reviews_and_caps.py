"""Outcome reviews, prior authorisations and payer caps (docs/clinical-rules.md#outcome-reviews,
#prior-authorisations, #payer-caps) against hand-worked dates and sums."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.domain.regimens.authorisations import (
    Authorisation,
    check_authorisation,
    first_period,
    renewal_period,
)
from services.scheduler.domain.regimens.calendar import add_months
from services.scheduler.domain.regimens.caps import (
    DEFAULT_CAPS,
    Dispensed,
    State,
    check_caps,
)
from services.scheduler.domain.regimens.reviews import (
    Decision,
    ReviewDecision,
    ReviewState,
    RouteSwitch,
    review_due,
    review_state,
)

d = dt.date


def test_months_are_clamped_to_the_last_day() -> None:
    assert add_months(d(2025, 8, 31), 6) == d(2026, 2, 28)
    assert add_months(d(2027, 8, 31), 6) == d(2028, 2, 29)  # leap year
    assert add_months(d(2026, 1, 31), 1) == d(2026, 2, 28)
    assert add_months(d(2026, 11, 15), 2) == d(2027, 1, 15)


def test_first_review_six_months_after_start_then_yearly_after_each_decision() -> None:
    start = d(2025, 8, 31)
    assert review_due(start, []).due == d(2026, 2, 28)  # 31 Aug + 6 months, clamped
    # reviewed early, on 10 Feb 2026: next + 12 months = 10 Feb 2027
    decided = [ReviewDecision(d(2026, 2, 10), Decision.CONTINUE)]
    assert review_due(start, decided).due == d(2027, 2, 10)
    stopped = [*decided, ReviewDecision(d(2027, 2, 1), Decision.STOP)]
    schedule = review_due(start, stopped)
    assert schedule.due is None and review_state(schedule.due, d(2027, 3, 1)) is (ReviewState.ENDED)


def test_a_route_switch_brings_the_review_forward_only() -> None:
    start = d(2026, 1, 15)
    events: list[ReviewDecision | RouteSwitch] = [
        ReviewDecision(d(2026, 7, 10), Decision.ADJUST)  # → due 10 Jul 2027
    ]
    # switch to SC with first SC dose 1 Sep 2026: + 6 months = 1 Mar 2027 < 10 Jul 2027
    assert review_due(start, [*events, RouteSwitch(d(2026, 9, 1))]).due == d(2027, 3, 1)
    # switch before the first review: 1 Mar 2026 + 6 = 1 Sep 2026, later than 15 Jul: kept
    assert review_due(start, [RouteSwitch(d(2026, 3, 1))]).due == d(2026, 7, 15)


def test_review_states() -> None:
    due = d(2026, 7, 15)
    assert review_state(due, d(2026, 6, 14)) is ReviewState.NOT_YET  # 31 days before
    assert review_state(due, d(2026, 6, 15)) is ReviewState.DUE  # 30 days before
    assert review_state(due, due) is ReviewState.DUE
    assert review_state(due, d(2026, 7, 16)) is ReviewState.OVERDUE


def test_authorisation_periods() -> None:
    # first: 31 Aug 2025 to 28 Feb 2026 − 1 day = 27 Feb 2026
    assert first_period(d(2025, 8, 31)) == (d(2025, 8, 31), d(2026, 2, 27))
    # renewal: 28 Feb 2026 to 28 Feb 2027 − 1 day = 27 Feb 2027
    assert renewal_period(d(2026, 2, 27)) == (d(2026, 2, 28), d(2027, 2, 27))


def test_bookings_outside_every_authorisation_are_refused_and_near_the_end_warned() -> None:
    frm, to = first_period(d(2026, 1, 1))  # 1 Jan to 30 Jun 2026
    auth = [Authorisation("payer", "hizentra", frm, to)]
    assert check_authorisation(auth, d(2026, 5, 30), True).code is None  # 30 Jun − 30 May = 31
    ok = check_authorisation(auth, d(2026, 5, 31), True)  # 30 Jun − 31 May = 30 ≤ 30: warned
    assert ok.allowed and ok.code == "authorisation_expiring"
    late = check_authorisation(auth, d(2026, 7, 1), True)
    assert not late.allowed and late.code == "no_authorisation"
    assert check_authorisation(auth, d(2026, 7, 1), False).allowed
    revoked = [Authorisation("payer", "hizentra", frm, to, active=False)]
    assert not check_authorisation(revoked, d(2026, 3, 1), True).allowed


MONDAY = d(2026, 3, 2)


def on(day: int, grams: str, state: State = State.BOOKED) -> Dispensed:
    return Dispensed(MONDAY + dt.timedelta(days=day), D(grams), state)


def test_three_16_g_infusions_a_week_of_hizentra_exceed_46_g_per_7_days() -> None:
    # 16 g on days 0 and 2, the new one on day 4: every 7-day run from day −2…4 to day 4…10
    # holds it; runs starting on day −2, −1 and 0 hold 16 + 16 + 16 = 48 g > 46 g.
    # The highest total, earliest if tied: day −2 to day 4 (28 Feb to 6 Mar).
    check = check_caps([on(0, "16"), on(2, "16")], on(4, "16"), DEFAULT_CAPS["hizentra"])
    assert not check.allowed and check.code == "payer_cap_exceeded"
    (run,) = check.runs
    assert (run.days, run.first, run.last, run.grams) == (7, d(2026, 2, 28), d(2026, 3, 6), 48)
    assert "48 g from 2026-02-28 to 2026-03-06, over 46 g per 7 days" in check.explanation


def test_at_the_cap_is_allowed_and_cancelled_bookings_do_not_count() -> None:
    cap = DEFAULT_CAPS["gammagard-liquid"]  # 42 g / 168 g
    # weekly 42 g: any 7 days hold one (42 ≤ 42), any 28 days at most four (168 ≤ 168)
    history = [on(7 * i, "42") for i in range(4)]
    assert check_caps(history, on(28, "42"), cap).allowed
    # 10 g more on day 30: the 28-day runs holding it start on day 3…30; those starting on
    # day 3…7 hold days 7, 14, 21, 28 and 30: 4 × 42 + 10 = 178 > 168 (earliest: day 3).
    # The 7-day runs starting on day 24…28 hold days 28 and 30: 42 + 10 = 52 > 42.
    extra = check_caps([*history, on(28, "42")], on(30, "10"), cap)
    assert not extra.allowed
    assert sorted((r.days, r.first, r.grams) for r in extra.runs) == [
        (7, MONDAY + dt.timedelta(days=24), 52),
        (28, MONDAY + dt.timedelta(days=3), 178),
    ]
    cancelled = [on(2, "42", State.CANCELLED), on(3, "42", State.NO_SHOW)]
    assert check_caps(cancelled, on(4, "42"), cap).allowed


def test_a_given_administration_is_flagged_not_refused_and_an_override_allows() -> None:
    cap = DEFAULT_CAPS["hyqvia"]  # 40 g / 160 g
    given_ = check_caps([], on(0, "50", State.GIVEN), cap)
    assert given_.allowed and given_.code == "cap_exceeded_given"
    over = check_caps([], on(0, "50"), cap, override_reason="payer approved 50 g")
    assert over.allowed and over.code == "cap_overridden"


@given(
    grams=st.lists(st.integers(0, 30), min_size=1, max_size=40),
    new=st.integers(0, 39),
)
@settings(max_examples=200, deadline=None)
def test_a_refusal_names_a_run_over_the_cap_that_contains_the_date(
    grams: list[int], new: int
) -> None:
    cap = DEFAULT_CAPS["cuvitru"]
    history = [on(i, str(g)) for i, g in enumerate(grams) if i != new]
    check = check_caps(history, on(new, "20"), cap)
    day = MONDAY + dt.timedelta(days=new)
    for run in check.runs:
        assert run.first <= day <= run.last and run.grams > run.cap
        assert (run.last - run.first).days == run.days - 1
    assert check.allowed == (not check.runs)
