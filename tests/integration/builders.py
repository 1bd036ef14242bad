"""The integration tests' shorthand over demo/builder.py: the same builder, on an in-process
:class:`Platform`, with the tests' request ids and organisation ``org-1`` by default."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from google.type.date_pb2 import Date

from demo.builder import ALL_DAYS as ALL_DAYS
from demo.builder import WEEKDAYS, Builder, shifts, therapy_plan
from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.conftest import Platform, request_id


def builder(p: Platform, org: str = "org-1") -> Builder:
    return Builder(p.scheduler, p.inventory, org, ids=lambda _: request_id())


def date(y: int, m: int, d: int) -> Date:
    return Date(year=y, month=m, day=d)


def make_site(p: Platform, tz: str = "Europe/London", org: str = "org-1") -> pb.Site:
    return builder(p, org).site(tz=tz)


def make_patient(
    p: Platform,
    mrn: str = "MRN-1",
    sex: int = pb.SEX_AT_BIRTH_FEMALE,
    birth: Date | None = None,
    org: str = "org-1",
) -> pb.Patient:
    return builder(p, org).patient(mrn, sex=sex, born=birth or date(1970, 5, 1))


def measure(
    p: Platform,
    patient_id: str,
    weight: str,
    height: str,
    on: Date | None = None,
    pregnant: bool = False,
) -> pb.Measurement:
    on = on or date(2026, 11, 1)
    return builder(p).measure(patient_id, weight, height, on, pregnant=pregnant)


def product_id(p: Platform, code: str) -> str:
    return builder(p).product_id(code)


def plan_message(patient_id: str, site_id: str, product: str, **kw: object) -> pb.TherapyPlan:
    return therapy_plan(patient_id, site_id, product, date(2026, 12, 1), **kw)


def make_plan(p: Platform, plan: pb.TherapyPlan) -> pb.TherapyPlan:
    return builder(p).plan(plan)


def site_with_chairs(
    p: Platform,
    chairs: int = 2,
    nurses: int = 2,
    ratio: int = 4,
    tz: str = "Europe/London",
    days: tuple[str, ...] = WEEKDAYS,
    open_h: int = 8,
    close_h: int = 18,
    org: str = "org-1",
) -> tuple[pb.Site, list[pb.Chair]]:
    b = builder(p, org)
    site = b.site(
        tz=tz,
        days=days,
        open_h=open_h,
        close_h=close_h,
        capacity=pb.SiteCapacity(
            nurse_shifts=shifts(nurses, days, open_h, close_h),
            nurse_ratio=ratio,
            start_limit=2,
            turnover_minutes=15,
        ),
    )
    return site, b.chairs(site.id, chairs)


def patient_plan(
    p: Platform, site: pb.Site, mrn: str, org: str = "org-1", **kw: object
) -> pb.TherapyPlan:
    b = builder(p, org)
    product = b.product_id("gammagard-liquid")
    start = date(2026, 12, 1)
    _, plan = b.enrol(mrn, site.id, product, start, measured_on=date(2026, 11, 1), plan=kw)
    return plan


def book(
    p: Platform,
    plan: pb.TherapyPlan,
    chair: pb.Chair,
    day: dt.date,
    hh: int,
    mm: int = 0,
    rid: str = "",
) -> pb.Appointment:
    return builder(p).book(plan.id, chair.id, day, hh, mm, request_id=rid or None)


def assert_no_chair_minute_twice(
    appointments: Iterable[pb.Appointment], turnover: int = 15
) -> None:
    """No two appointments share a chair-minute, turnover included."""
    by_chair: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    for a in appointments:
        by_chair.setdefault(a.chair_id, []).append(
            (a.start_time.ToDatetime(), a.end_time.ToDatetime() + dt.timedelta(minutes=turnover))
        )
    for spans in by_chair.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start


def give(p: Platform, plan: pb.TherapyPlan, chair: pb.Chair, day: dt.date) -> pb.Appointment:
    """Book, check in, start and complete an infusion of 70 g on ``day`` at 09:00 (a site on
    UTC in winter, as London is), moving the platform's clock through the day."""

    def at(hour: int, minute: int, days_before: int = 0) -> dt.datetime:
        moment = dt.time(hour, minute)
        return dt.datetime.combine(day - dt.timedelta(days=days_before), moment, tzinfo=dt.UTC)

    p.clock.set(at(12, 0, days_before=1))
    appointment = book(p, plan, chair, day, 9)
    p.clock.set(at(8, 45))
    p.scheduler.CheckIn(pb.CheckInRequest(id=appointment.id, request_id=request_id()))
    p.clock.set(at(9, 5))
    p.scheduler.StartInfusion(pb.StartInfusionRequest(id=appointment.id, request_id=request_id()))
    p.clock.set(at(14, 10))
    done: pb.Appointment = p.scheduler.CompleteInfusion(
        pb.CompleteInfusionRequest(id=appointment.id, grams_given="70", request_id=request_id())
    ).appointment
    return done
