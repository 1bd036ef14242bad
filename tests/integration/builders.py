"""Small builders for scheduler resources used across integration tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from google.type.date_pb2 import Date
from google.type.dayofweek_pb2 import DayOfWeek
from google.type.timeofday_pb2 import TimeOfDay

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.conftest import Platform, request_id


def date(y: int, m: int, d: int) -> Date:
    return Date(year=y, month=m, day=d)


def weekday_hours(open_h: int = 8, close_h: int = 18) -> list[pb.OpeningHours]:
    return [
        pb.OpeningHours(
            day=DayOfWeek.Value(day), open=TimeOfDay(hours=open_h), close=TimeOfDay(hours=close_h)
        )
        for day in ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
    ]


def make_site(p: Platform, tz: str = "Europe/London", org: str = "org-1") -> pb.Site:
    return p.scheduler.CreateSite(
        pb.CreateSiteRequest(
            request_id=request_id(),
            site=pb.Site(
                organisation_id=org,
                display_name="Day unit",
                time_zone=tz,
                opening_hours=weekday_hours(),
            ),
        )
    ).site


def make_patient(
    p: Platform,
    mrn: str = "MRN-1",
    sex: int = pb.SEX_AT_BIRTH_FEMALE,
    birth: Date | None = None,
    org: str = "org-1",
) -> pb.Patient:
    return p.scheduler.CreatePatient(
        pb.CreatePatientRequest(
            request_id=request_id(),
            patient=pb.Patient(
                organisation_id=org,
                mrn=mrn,
                given_name="Ada",
                family_name="Example",
                birth_date=birth or date(1970, 5, 1),
                sex_at_birth=sex,
            ),
        )
    ).patient


def measure(
    p: Platform,
    patient_id: str,
    weight: str,
    height: str,
    on: Date | None = None,
    pregnant: bool = False,
) -> pb.Measurement:
    return p.scheduler.RecordMeasurement(
        pb.RecordMeasurementRequest(
            request_id=request_id(),
            measurement=pb.Measurement(
                patient_id=patient_id,
                measured_on=on or date(2026, 11, 1),
                weight_kg=weight,
                height_cm=height,
                pregnant=pregnant,
            ),
        )
    ).measurement


def product_id(p: Platform, code: str) -> str:
    return str(p.inventory.GetProduct(inv.GetProductRequest(id=code)).product.id)


def plan_message(patient_id: str, site_id: str, product: str, **kw: object) -> pb.TherapyPlan:
    fields: dict[str, object] = dict(
        patient_id=patient_id,
        site_id=site_id,
        indication=pb.INDICATION_MMN,
        route=pb.ROUTE_IV,
        product_id=product,
        dose_basis=pb.DOSE_BASIS_G_PER_KG,
        maintenance_dose="1",
        interval_days=28,
        start_date=date(2026, 12, 1),
    )
    fields.update(kw)
    return pb.TherapyPlan(**fields)  # type: ignore[arg-type]


def make_plan(p: Platform, plan: pb.TherapyPlan) -> pb.TherapyPlan:
    return p.scheduler.CreateTherapyPlan(
        pb.CreateTherapyPlanRequest(request_id=request_id(), therapy_plan=plan)
    ).therapy_plan


WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
ALL_DAYS = (*WEEKDAYS, "SATURDAY", "SUNDAY")


def hours(
    days: tuple[str, ...] = WEEKDAYS, open_h: int = 8, close_h: int = 18
) -> list[pb.OpeningHours]:
    return [
        pb.OpeningHours(
            day=DayOfWeek.Value(d),
            open=TimeOfDay(hours=open_h),
            close=TimeOfDay(hours=close_h) if close_h < 24 else TimeOfDay(hours=24),
        )
        for d in days
    ]


def shifts(
    nurses: int, days: tuple[str, ...] = WEEKDAYS, start: int = 8, end: int = 18
) -> list[pb.NurseShift]:
    return [
        pb.NurseShift(
            day=DayOfWeek.Value(d),
            start=TimeOfDay(hours=start),
            end=TimeOfDay(hours=end) if end < 24 else TimeOfDay(hours=24),
            nurses=nurses,
        )
        for d in days
    ]


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
    site = p.scheduler.CreateSite(
        pb.CreateSiteRequest(
            request_id=request_id(),
            site=pb.Site(
                organisation_id=org,
                display_name="Day unit",
                time_zone=tz,
                opening_hours=hours(days, open_h, close_h),
                capacity=pb.SiteCapacity(
                    nurse_shifts=shifts(nurses, days, open_h, close_h),
                    nurse_ratio=ratio,
                    start_limit=2,
                    turnover_minutes=15,
                ),
            ),
        )
    ).site
    made = [
        p.scheduler.CreateChair(
            pb.CreateChairRequest(
                request_id=request_id(),
                chair=pb.Chair(site_id=site.id, display_name=f"Chair {i + 1}", active=True),
            )
        ).chair
        for i in range(chairs)
    ]
    return site, made


def patient_plan(
    p: Platform, site: pb.Site, mrn: str, org: str = "org-1", **kw: object
) -> pb.TherapyPlan:
    patient = make_patient(p, mrn=mrn, org=org)
    measure(p, patient.id, "70", "165")
    return make_plan(p, plan_message(patient.id, site.id, product_id(p, "gammagard-liquid"), **kw))


def book(
    p: Platform,
    plan: pb.TherapyPlan,
    chair: pb.Chair,
    day: dt.date,
    hh: int,
    mm: int = 0,
    rid: str = "",
) -> pb.Appointment:
    return p.scheduler.BookAppointment(
        pb.BookAppointmentRequest(
            therapy_plan_id=plan.id,
            chair_id=chair.id,
            local_date=date(day.year, day.month, day.day),
            local_start=TimeOfDay(hours=hh, minutes=mm),
            request_id=rid or request_id(),
        )
    ).appointment


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
