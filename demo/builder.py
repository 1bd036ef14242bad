"""Sites, chairs, stock, patients and therapy plans made through the services' gRPC APIs, as a
client makes them: the one set-up the demo centre, the walk-through, the benchmarks and the
tests share, so a change to what a site or a plan needs is made once.

Only the generated stubs are used (never a service's modules): the builder works against any
running scheduler and inventory, in process or not, and is not in the way when a service's
insides move.

Request ids: every mutation carries one (they are idempotency keys). ``Builder.ids`` makes one
from a label naming what is made (``site``, ``chair-2``, ``patient-7``, ``receive-LOT-A``),
so a caller picks the scheme: fresh ones by default, the label itself where a test retries a
call and wants the same answer (a replay), or a prefix of its own."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from google.type.date_pb2 import Date
from google.type.dayofweek_pb2 import DayOfWeek
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc

WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
ALL_DAYS = (*WEEKDAYS, "SATURDAY", "SUNDAY")
# £34 per gram, the UK National Ig Database average (docs/clinical-rules.md#cost)
PENCE_PER_GRAM = 3400

Day: TypeAlias = dt.date | Date


def pb_date(day: Day) -> Date:
    if isinstance(day, Date):
        return day
    return Date(year=day.year, month=day.month, day=day.day)


def _time(hour: int) -> TimeOfDay:
    return TimeOfDay(hours=min(hour, 24))


def hours(
    days: Sequence[str] = WEEKDAYS, open_h: int = 8, close_h: int = 18
) -> list[pb.OpeningHours]:
    """Opening hours, the same each of ``days`` (24 is midnight at the end of the day)."""
    return [
        pb.OpeningHours(day=DayOfWeek.Value(d), open=_time(open_h), close=_time(close_h))
        for d in days
    ]


def shifts(
    nurses: int, days: Sequence[str] = WEEKDAYS, start: int = 8, end: int = 18
) -> list[pb.NurseShift]:
    """``nurses`` on duty from ``start`` to ``end`` on each of ``days``."""
    return [
        pb.NurseShift(day=DayOfWeek.Value(d), start=_time(start), end=_time(end), nurses=nurses)
        for d in days
    ]


def vial_cost(grams: str) -> Money:
    """A vial's price at the national average per gram (10 g: £340)."""
    return Money(currency_code="GBP", units=PENCE_PER_GRAM * int(grams) // 100)


def therapy_plan(
    patient_id: str, site_id: str, product_id: str, start: Day, **fields: object
) -> pb.TherapyPlan:
    """A maintenance IV plan for MMN at 1 g/kg every 28 days from ``start``; ``fields`` change
    any of that (an induction course, another dose or interval)."""
    values: dict[str, object] = dict(
        patient_id=patient_id,
        site_id=site_id,
        indication=pb.INDICATION_MMN,
        route=pb.ROUTE_IV,
        product_id=product_id,
        dose_basis=pb.DOSE_BASIS_G_PER_KG,
        maintenance_dose="1",
        interval_days=28,
        start_date=pb_date(start),
    )
    values.update(fields)
    return pb.TherapyPlan(**values)  # type: ignore[arg-type]


def fresh_id(label: str) -> str:
    return f"{label}-{uuid.uuid4()}"


class Pharmacy:
    """Makes stock sites and lots through ``inventory``, each call with the request id ``ids``
    makes from its label."""

    def __init__(
        self,
        inventory: inventory_pb2_grpc.InventoryServiceStub,
        ids: Callable[[str], str] = fresh_id,
    ) -> None:
        self.inventory = inventory
        self.ids = ids

    def _id(self, label: str, given: str | None) -> str:
        return given if given is not None else self.ids(label)

    def stock_site(
        self,
        site_id: str,
        time_zone: str,
        name: str = "Pharmacy",
        *,
        request_id: str | None = None,
    ) -> inv.StockSite:
        """The inventory's record of a scheduler site: the same id and time zone."""
        made: inv.StockSite = self.inventory.CreateStockSite(
            inv.CreateStockSiteRequest(
                request_id=self._id(f"stock-site-{site_id}", request_id),
                site=inv.StockSite(id=site_id, display_name=name, time_zone=time_zone),
            )
        ).site
        return made

    def product_id(self, code: str) -> str:
        """The catalogue's id of a product code (a code is an alias some reads do not resolve)."""
        return str(self.inventory.GetProduct(inv.GetProductRequest(id=code)).product.id)

    def receive(
        self,
        site_id: str,
        product_id: str,
        lot_number: str,
        expiry: Day,
        vials: int,
        *,
        grams: str = "10",
        supplier: str = "",
        actor: str = "",
        via: inventory_pb2_grpc.InventoryServiceStub | None = None,
        request_id: str | None = None,
    ) -> inv.Lot:
        """A lot of ``vials`` ``grams`` g vials at the national average price; ``via``: another
        inventory (a replica) to receive it through."""
        lot: inv.Lot = (
            (via or self.inventory)
            .ReceiveStock(
                inv.ReceiveStockRequest(
                    request_id=self._id(f"receive-{lot_number}", request_id),
                    site_id=site_id,
                    product_id=product_id,
                    presentation_grams=grams,
                    lot_number=lot_number,
                    expiry_date=pb_date(expiry),
                    vials=vials,
                    unit_cost=vial_cost(grams),
                    supplier=supplier,
                    actor=actor,
                )
            )
            .lot
        )
        return lot


class Builder(Pharmacy):
    """Makes the centre, patients, plans and bookings through ``scheduler`` for organisation
    ``org`` (empty: the caller's own), and its stock through ``inventory``."""

    def __init__(
        self,
        scheduler: scheduler_pb2_grpc.SchedulerServiceStub,
        inventory: inventory_pb2_grpc.InventoryServiceStub,
        org: str = "",
        ids: Callable[[str], str] = fresh_id,
    ) -> None:
        super().__init__(inventory, ids)
        self.scheduler = scheduler
        self.org = org

    # --- the centre -----------------------------------------------------------------------------

    def site(
        self,
        *,
        name: str = "Day unit",
        tz: str = "Europe/London",
        days: Sequence[str] = WEEKDAYS,
        open_h: int = 8,
        close_h: int = 18,
        capacity: pb.SiteCapacity | None = None,
        request_id: str | None = None,
    ) -> pb.Site:
        """A site open ``open_h``–``close_h`` on ``days``; without ``capacity``, no nurse model."""
        site = pb.Site(
            organisation_id=self.org,
            display_name=name,
            time_zone=tz,
            opening_hours=hours(days, open_h, close_h),
        )
        if capacity is not None:
            site.capacity.CopyFrom(capacity)
        made: pb.Site = self.scheduler.CreateSite(
            pb.CreateSiteRequest(request_id=self._id("site", request_id), site=site)
        ).site
        return made

    def chairs(self, site_id: str, count: int) -> list[pb.Chair]:
        """``count`` active chairs, "Chair 1" onwards."""
        return [
            self.scheduler.CreateChair(
                pb.CreateChairRequest(
                    request_id=self.ids(f"chair-{i}"),
                    chair=pb.Chair(site_id=site_id, display_name=f"Chair {i}", active=True),
                )
            ).chair
            for i in range(1, count + 1)
        ]

    # --- patients and plans -------------------------------------------------------------------

    def patient(
        self,
        mrn: str,
        *,
        given: str = "Ada",
        family: str = "Example",
        born: Day = dt.date(1970, 5, 1),
        sex: int = pb.SEX_AT_BIRTH_FEMALE,
        notify_subscriber_id: str = "",
        via: scheduler_pb2_grpc.SchedulerServiceStub | None = None,
        request_id: str | None = None,
    ) -> pb.Patient:
        made: pb.Patient = (
            (via or self.scheduler)
            .CreatePatient(
                pb.CreatePatientRequest(
                    request_id=self._id("patient", request_id),
                    patient=pb.Patient(
                        organisation_id=self.org,
                        mrn=mrn,
                        given_name=given,
                        family_name=family,
                        birth_date=pb_date(born),
                        sex_at_birth=sex,  # type: ignore[arg-type]
                        notify_subscriber_id=notify_subscriber_id,
                    ),
                )
            )
            .patient
        )
        return made

    def measure(
        self,
        patient_id: str,
        weight: str,
        height: str,
        on: Day,
        *,
        pregnant: bool = False,
        via: scheduler_pb2_grpc.SchedulerServiceStub | None = None,
        request_id: str | None = None,
    ) -> pb.Measurement:
        made: pb.Measurement = (
            (via or self.scheduler)
            .RecordMeasurement(
                pb.RecordMeasurementRequest(
                    request_id=self._id(f"measure-{patient_id}", request_id),
                    measurement=pb.Measurement(
                        patient_id=patient_id,
                        measured_on=pb_date(on),
                        weight_kg=weight,
                        height_cm=height,
                        pregnant=pregnant,
                    ),
                )
            )
            .measurement
        )
        return made

    def plan(
        self,
        plan: pb.TherapyPlan,
        *,
        via: scheduler_pb2_grpc.SchedulerServiceStub | None = None,
        request_id: str | None = None,
    ) -> pb.TherapyPlan:
        made: pb.TherapyPlan = (
            (via or self.scheduler)
            .CreateTherapyPlan(
                pb.CreateTherapyPlanRequest(
                    request_id=self._id(f"plan-{plan.patient_id}", request_id),
                    therapy_plan=plan,
                )
            )
            .therapy_plan
        )
        return made

    def enrol(
        self,
        mrn: str,
        site_id: str,
        product_id: str,
        start: Day,
        *,
        measured_on: Day,
        weight: str = "70",
        height: str = "165",
        given: str = "Ada",
        family: str = "Example",
        born: Day = dt.date(1970, 5, 1),
        sex: int = pb.SEX_AT_BIRTH_FEMALE,
        notify_subscriber_id: str = "",
        plan: Mapping[str, object] | None = None,
        key: str = "",
        via: scheduler_pb2_grpc.SchedulerServiceStub | None = None,
    ) -> tuple[pb.Patient, pb.TherapyPlan]:
        """A patient, their weight and height, and a plan (``therapy_plan`` with ``plan``'s
        fields) starting ``start``; ``via``: another scheduler. The three request ids are
        labelled ``patient-<key>``, ``measure-<key>`` and ``plan-<key>``: a ``key`` per patient
        where the ids are made from the label alone (enrolling the same key again is then a
        retry). Never the MRN or a name: request ids are logged."""
        suffix = f"-{key}" if key else ""
        patient = self.patient(
            mrn,
            given=given,
            family=family,
            born=born,
            sex=sex,
            notify_subscriber_id=notify_subscriber_id,
            via=via,
            request_id=self.ids(f"patient{suffix}"),
        )
        self.measure(
            patient.id,
            weight,
            height,
            measured_on,
            via=via,
            request_id=self.ids(f"measure{suffix}"),
        )
        made = self.plan(
            therapy_plan(patient.id, site_id, product_id, start, **(plan or {})),
            via=via,
            request_id=self.ids(f"plan{suffix}"),
        )
        return patient, made

    def book(
        self,
        plan_id: str,
        chair_id: str,
        day: Day,
        hour: int,
        minute: int = 0,
        *,
        request_id: str | None = None,
    ) -> pb.Appointment:
        made: pb.Appointment = self.scheduler.BookAppointment(
            pb.BookAppointmentRequest(
                therapy_plan_id=plan_id,
                chair_id=chair_id,
                local_date=pb_date(day),
                local_start=TimeOfDay(hours=hour, minutes=minute),
                request_id=self._id(f"book-{plan_id}", request_id),
            )
        ).appointment
        return made
