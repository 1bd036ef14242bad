"""SchedulerService servicer: protobuf in, domain calls, protobuf out. No rules live here."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.type import dayofweek_pb2

from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from services.common.convert import (
    decimal_str,
    from_date,
    from_datetime,
    from_time_of_day,
    parse_date,
    parse_decimal,
    parse_time_of_day,
)
from services.common.errors import FieldViolation, InvalidArgument, Violations, required
from services.common.etag import etag_for
from services.common.fieldmask import apply_mask
from services.common.idempotency import IdempotencyStore
from services.common.pagination import page_request, split_page
from services.scheduler.api.bookings import BookingApi, due_out
from services.scheduler.api.schedules import ScheduleApi, objective_in, objective_out
from services.scheduler.domain.appointments import NurseShift, SiteCapacity
from services.scheduler.domain.dosing import DoseResult
from services.scheduler.domain.due import DEFAULT_WINDOW_DAYS, CourseKind
from services.scheduler.domain.habits import Habits
from services.scheduler.domain.patients import BodyMeasurement, Patient, SexAtBirth
from services.scheduler.domain.plans import (
    DEFAULT_PRE_INFUSION_MINUTES,
    DEFAULT_ROUNDING_BAND_PERCENT,
    DoseBasis,
    Indication,
    Induction,
    PlanStatus,
    RoundingRule,
    Route,
    TherapyPlan,
    WeightPolicy,
)
from services.scheduler.domain.sites import Chair, OpeningHours, Site
from services.scheduler.domain.slots import wall_time
from services.scheduler.usecases.bookings import Bookings
from services.scheduler.usecases.doses import Doses
from services.scheduler.usecases.records import Records, Stored
from services.scheduler.usecases.schedules import Schedules

R = TypeVar("R", bound=Message)
T = TypeVar("T")
DEFAULT_HORIZON_DAYS = 28
MAX_HORIZON_DAYS = 366

SITE_MUTABLE = (
    "display_name",
    "time_zone",
    "opening_hours",
    "closure_dates",
    "capacity",
    "schedule_objective",
)
CHAIR_MUTABLE = ("display_name", "active")
PATIENT_MUTABLE = (
    "mrn",
    "given_name",
    "family_name",
    "birth_date",
    "sex_at_birth",
    "notify_subscriber_id",
)
PLAN_MUTABLE = tuple(
    f.name
    for f in pb.TherapyPlan.DESCRIPTOR.fields
    if f.name not in {"id", "version", "patient_id", "etag", "create_time", "update_time"}
)

_ENUMS: dict[type[Any], tuple[Any, str]] = {}


def _enum_in(value: int, enum_type: Any, domain: type[Any], field: str, v: Violations) -> Any:
    """A proto enum value to its domain StrEnum by name (prefix stripped); UNSPECIFIED is bad."""
    name = enum_type.Name(value) if value in enum_type.values() else ""
    prefix = enum_type.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    member = name.removeprefix(prefix)
    if not name or member == "UNSPECIFIED" or member not in domain.__members__:
        choices = ", ".join(f"{prefix}{m}" for m in domain.__members__)
        v.add(field, f"is required: one of {choices}")
        return None
    return domain[member]


def _enum_out(member: Any, enum_type: Any) -> Any:
    prefix = enum_type.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    return enum_type.Value(prefix + member.value)


# --- sites ---------------------------------------------------------------------------------------


def _site_in(msg: pb.Site, v: Violations) -> Site:
    hours = []
    for i, h in enumerate(msg.opening_hours):
        path = f"site.opening_hours[{i}]"
        opens = parse_time_of_day(h.open, f"{path}.open", v)
        closes = parse_time_of_day(h.close, f"{path}.close", v)
        weekday = 0 if h.day == dayofweek_pb2.DAY_OF_WEEK_UNSPECIFIED else int(h.day)
        if opens is not None and closes is not None:
            hours.append(OpeningHours(weekday, opens, closes))
    closures = []
    for i, d in enumerate(msg.closure_dates):
        day = parse_date(d, f"site.closure_dates[{i}]", v)
        if day is not None:
            closures.append(day)
    return Site(
        id=msg.id,
        organisation_id=msg.organisation_id,
        display_name=msg.display_name,
        time_zone=msg.time_zone,
        opening_hours=tuple(hours),
        closure_dates=tuple(closures),
        capacity=_capacity_in(msg.capacity, v),
        schedule_objective=objective_in(msg.schedule_objective),
    )


def _capacity_in(msg: pb.SiteCapacity, v: Violations) -> SiteCapacity:
    """Unset numbers take the defaults of domain/appointments.py."""
    shifts = []
    for i, shift in enumerate(msg.nurse_shifts):
        path = f"site.capacity.nurse_shifts[{i}]"
        start = parse_time_of_day(shift.start, f"{path}.start", v)
        end = parse_time_of_day(shift.end, f"{path}.end", v)
        weekday = 0 if shift.day == dayofweek_pb2.DAY_OF_WEEK_UNSPECIFIED else int(shift.day)
        if start is not None and end is not None:
            shifts.append(NurseShift(weekday, start, end, shift.nurses))
    d = SiteCapacity()
    return SiteCapacity(
        nurse_shifts=tuple(shifts),
        nurse_ratio=msg.nurse_ratio or d.nurse_ratio,
        start_limit=msg.start_limit or d.start_limit,
        turnover_minutes=msg.turnover_minutes if msg.turnover_minutes else d.turnover_minutes,
        slot_minutes=msg.slot_minutes or d.slot_minutes,
        hold_minutes=msg.hold_minutes or d.hold_minutes,
        holiday_country=msg.holiday_country,
        holiday_subdivision=msg.holiday_subdivision,
    )


def _capacity_out(c: SiteCapacity) -> pb.SiteCapacity:
    return pb.SiteCapacity(
        nurse_shifts=[
            pb.NurseShift(
                day=s.weekday,
                start=from_time_of_day(s.start),
                end=from_time_of_day(s.end),
                nurses=s.nurses,
            )
            for s in c.nurse_shifts
        ],
        nurse_ratio=c.nurse_ratio,
        start_limit=c.start_limit,
        turnover_minutes=c.turnover_minutes,
        slot_minutes=c.slot_minutes,
        hold_minutes=c.hold_minutes,
        holiday_country=c.holiday_country,
        holiday_subdivision=c.holiday_subdivision,
    )


def _site_out(stored: Stored[Site]) -> pb.Site:
    s = stored.value
    return pb.Site(
        id=s.id,
        organisation_id=s.organisation_id,
        display_name=s.display_name,
        time_zone=s.time_zone,
        opening_hours=[
            pb.OpeningHours(
                day=h.weekday, open=from_time_of_day(h.open), close=from_time_of_day(h.close)
            )
            for h in s.opening_hours
        ],
        closure_dates=[from_date(d) for d in s.closure_dates],
        capacity=_capacity_out(s.capacity),
        schedule_objective=objective_out(s.schedule_objective),
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )


# --- chairs --------------------------------------------------------------------------------------


def _chair_in(msg: pb.Chair) -> Chair:
    return Chair(id=msg.id, site_id=msg.site_id, display_name=msg.display_name, active=msg.active)


def _chair_out(stored: Stored[Chair]) -> pb.Chair:
    c = stored.value
    return pb.Chair(
        id=c.id,
        site_id=c.site_id,
        display_name=c.display_name,
        active=c.active,
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )


# --- patients ------------------------------------------------------------------------------------


def _patient_in(msg: pb.Patient, v: Violations) -> Patient:
    birth = parse_date(msg.birth_date, "patient.birth_date", v)
    sex = _enum_in(msg.sex_at_birth, pb.SexAtBirth, SexAtBirth, "patient.sex_at_birth", v)
    return Patient(
        id=msg.id,
        organisation_id=msg.organisation_id,
        mrn=msg.mrn.strip(),
        given_name=msg.given_name,
        family_name=msg.family_name,
        birth_date=birth or dt.date.min,
        sex_at_birth=sex or SexAtBirth.FEMALE,
        notify_subscriber_id=msg.notify_subscriber_id,
    )


def _patient_out(stored: Stored[Patient]) -> pb.Patient:
    p = stored.value
    return pb.Patient(
        id=p.id,
        organisation_id=p.organisation_id,
        mrn=p.mrn,
        given_name=p.given_name,
        family_name=p.family_name,
        birth_date=from_date(p.birth_date),
        sex_at_birth=_enum_out(p.sex_at_birth, pb.SexAtBirth),
        notify_subscriber_id=p.notify_subscriber_id,
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )


def _measurement_out(m: BodyMeasurement, created: dt.datetime) -> pb.Measurement:
    return pb.Measurement(
        id=m.id,
        patient_id=m.patient_id,
        measured_on=from_date(m.measured_on),
        weight_kg=decimal_str(m.weight_kg),
        height_cm=decimal_str(m.height_cm),
        pregnant=m.pregnant,
        create_time=from_datetime(created),
    )


# --- plans ---------------------------------------------------------------------------------------


def _plan_in(msg: pb.TherapyPlan, v: Violations) -> TherapyPlan:
    p = "therapy_plan"
    dose = parse_decimal(msg.maintenance_dose, f"{p}.maintenance_dose", v)
    induction = None
    if msg.HasField("induction") and (msg.induction.days or msg.induction.total_g_per_kg):
        total = parse_decimal(msg.induction.total_g_per_kg, f"{p}.induction.total_g_per_kg", v)
        induction = Induction(total or Decimal(0), msg.induction.days)
    start = parse_date(msg.start_date, f"{p}.start_date", v)
    band = parse_decimal(
        msg.rounding_band_percent or str(DEFAULT_ROUNDING_BAND_PERCENT),
        f"{p}.rounding_band_percent",
        v,
        minimum=Decimal(0),
        maximum=Decimal(100),
    )
    plan = TherapyPlan(
        id=msg.id,
        patient_id=msg.patient_id,
        site_id=msg.site_id,
        indication=_enum_in(msg.indication, pb.Indication, Indication, f"{p}.indication", v),
        route=_enum_in(msg.route, pb.Route, Route, f"{p}.route", v),
        product_id=msg.product_id,
        dose_basis=_enum_in(msg.dose_basis, pb.DoseBasis, DoseBasis, f"{p}.dose_basis", v),
        maintenance_dose=dose or Decimal(0),
        interval_days=msg.interval_days,
        start_date=start or dt.date.min,
        window_days_early=msg.window_days_early
        if msg.HasField("window_days_early")
        else DEFAULT_WINDOW_DAYS,
        window_days_late=msg.window_days_late
        if msg.HasField("window_days_late")
        else DEFAULT_WINDOW_DAYS,
        induction=induction,
        max_grams_per_day=parse_decimal(
            msg.max_grams_per_day, f"{p}.max_grams_per_day", v, required=False
        ),
        weight_policy=WeightPolicy.AUTOMATIC
        if msg.weight_policy == pb.WEIGHT_POLICY_UNSPECIFIED
        else _enum_in(msg.weight_policy, pb.WeightPolicy, WeightPolicy, f"{p}.weight_policy", v),
        rounding_rule=RoundingRule.NEAREST
        if msg.rounding_rule == pb.ROUNDING_RULE_UNSPECIFIED
        else _enum_in(msg.rounding_rule, pb.RoundingRule, RoundingRule, f"{p}.rounding_rule", v),
        rounding_band_percent=band if band is not None else DEFAULT_ROUNDING_BAND_PERCENT,
        max_rate_ml_per_kg_h=parse_decimal(
            msg.max_rate_ml_per_kg_h, f"{p}.max_rate_ml_per_kg_h", v, required=False
        ),
        pre_infusion_minutes=msg.pre_infusion_minutes
        if msg.HasField("pre_infusion_minutes")
        else DEFAULT_PRE_INFUSION_MINUTES,
        observation_minutes=msg.observation_minutes
        if msg.HasField("observation_minutes")
        else None,
        infusion_sites=msg.infusion_sites or 1,
        last_infusion_date=parse_date(
            msg.last_infusion_date, f"{p}.last_infusion_date", v, required=False
        ),
        last_product_id=msg.last_product_id,
        status=PlanStatus.ACTIVE
        if msg.status == pb.PLAN_STATUS_UNSPECIFIED
        else _enum_in(msg.status, pb.PlanStatus, PlanStatus, f"{p}.status", v),
        override_outside_bands=msg.dose_override.allow_outside_bands,
        override_reason=msg.dose_override.reason,
        keep_cadence=msg.keep_cadence,
        usual=Habits(
            weekday=None
            if msg.usual_weekday == dayofweek_pb2.DAY_OF_WEEK_UNSPECIFIED
            else int(msg.usual_weekday),
            start_minute=_minute_of(msg.usual_start, f"{p}.usual_start", v)
            if msg.HasField("usual_start")
            else None,
            chair_id=msg.usual_chair_id,
        ),
    )
    return plan


def _minute_of(msg: Any, field: str, v: Violations) -> int | None:
    at = parse_time_of_day(msg, field, v)
    return None if at is None else at.hour * 60 + at.minute


def _plan_out(stored: Stored[TherapyPlan]) -> pb.TherapyPlan:
    p = stored.value
    msg = pb.TherapyPlan(
        id=p.id,
        version=p.version,
        patient_id=p.patient_id,
        site_id=p.site_id,
        indication=_enum_out(p.indication, pb.Indication),
        route=_enum_out(p.route, pb.Route),
        product_id=p.product_id,
        dose_basis=_enum_out(p.dose_basis, pb.DoseBasis),
        maintenance_dose=decimal_str(p.maintenance_dose),
        interval_days=p.interval_days,
        window_days_early=p.window_days_early,
        window_days_late=p.window_days_late,
        max_grams_per_day=decimal_str(p.max_grams_per_day),
        weight_policy=_enum_out(p.weight_policy, pb.WeightPolicy),
        rounding_rule=_enum_out(p.rounding_rule, pb.RoundingRule),
        rounding_band_percent=decimal_str(p.rounding_band_percent),
        max_rate_ml_per_kg_h=decimal_str(p.max_rate_ml_per_kg_h),
        pre_infusion_minutes=p.pre_infusion_minutes,
        infusion_sites=p.infusion_sites,
        start_date=from_date(p.start_date),
        last_infusion_date=from_date(p.last_infusion_date),
        last_product_id=p.last_product_id,
        status=_enum_out(p.status, pb.PlanStatus),
        dose_override=pb.DoseOverride(
            allow_outside_bands=p.override_outside_bands, reason=p.override_reason
        ),
        keep_cadence=p.keep_cadence,
        usual_weekday=p.usual.weekday or dayofweek_pb2.DAY_OF_WEEK_UNSPECIFIED,
        usual_chair_id=p.usual.chair_id,
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )
    if p.observation_minutes is not None:
        msg.observation_minutes = p.observation_minutes
    if p.usual.start_minute is not None:
        msg.usual_start.CopyFrom(from_time_of_day(wall_time(p.usual.start_minute)))
    if p.induction is not None:
        msg.induction.CopyFrom(
            pb.InductionCourse(
                total_g_per_kg=decimal_str(p.induction.total_g_per_kg), days=p.induction.days
            )
        )
    return msg


_COURSE_IN = {
    pb.COURSE_KIND_MAINTENANCE: CourseKind.MAINTENANCE,
    pb.COURSE_KIND_INDUCTION: CourseKind.INDUCTION,
}
_COURSE_OUT = {v: k for k, v in _COURSE_IN.items()}


def _fraction_str(value: Fraction, places: str = "0.1") -> str:
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return decimal_str(exact.quantize(Decimal(places), ROUND_HALF_UP))


_DOSE_MEMO: dict[int, tuple[DoseResult, pb.DoseCalculation]] = {}
_DOSE_MEMO_LIMIT = 4096


def _dose_out(result: DoseResult) -> pb.DoseCalculation:
    """Memoised per result object: Doses hands back the same object for the same inputs,
    and the entry pins it, so its id cannot be reused while the entry lives."""
    entry = _DOSE_MEMO.get(id(result))
    if entry is not None and entry[0] is result:
        return entry[1]
    if len(_DOSE_MEMO) >= _DOSE_MEMO_LIMIT:
        _DOSE_MEMO.clear()
    message = _translate_dose(result)
    _DOSE_MEMO[id(result)] = (result, message)
    return message


def _translate_dose(result: DoseResult) -> pb.DoseCalculation:
    w = result.weight
    ml_per_gram = Decimal(100) / result.product.concentration_percent
    sizes_ml = dict(result.product.presentations)
    days = []
    for d in result.days:
        day = pb.DoseDay(
            day=d.day,
            date=from_date(d.date),
            raw_grams=decimal_str(d.raw_grams.quantize(Decimal("0.01"), ROUND_HALF_UP)),
            rounded_grams=decimal_str(d.vials.dose_grams),
            vials=[
                pb.VialCount(
                    grams=decimal_str(size),
                    ml=decimal_str(sizes_ml.get(size, size * ml_per_gram)),
                    count=count,
                )
                for size, count in d.vials.vials
            ],
            expected_waste_grams=decimal_str(d.vials.waste_grams),
        )
        if d.infusion is not None and d.chair is not None:
            day.volume_ml = _fraction_str(d.infusion.volume_ml)
            day.rate_steps.extend(
                pb.RateStep(
                    rate_ml_per_kg_h=decimal_str(s.rate_ml_per_kg_h),
                    rate_ml_per_h=decimal_str(s.rate_ml_per_h),
                    minutes=math.ceil(s.minutes),
                    volume_ml=_fraction_str(s.volume_ml),
                    capped_by_patient_maximum=s.capped,
                )
                for s in d.infusion.steps
            )
            day.infusion_minutes = d.infusion.minutes
            day.pre_infusion_minutes = d.chair.pre_minutes
            day.observation_minutes = d.chair.observation_minutes
            day.chair_minutes = d.chair.chair_minutes
            day.booked_chair_minutes = d.chair.booked_minutes
        else:
            day.volume_ml = decimal_str(
                (d.vials.dose_grams * ml_per_gram).quantize(Decimal("0.1"), ROUND_HALF_UP)
            )
        days.append(day)
    return pb.DoseCalculation(
        therapy_plan_id=result.plan_id,
        patient_id=result.measurement.patient_id,
        plan_version=result.plan_version,
        product_id=result.product.id,
        product_brand=result.product.brand,
        course=_COURSE_OUT[result.course],
        dosing_weight=pb.DosingWeight(
            dosing_weight_kg=decimal_str(w.dosing_kg),
            policy_applied=_enum_out(w.policy_applied, pb.WeightPolicy),
            policy_requested=_enum_out(w.policy_requested, pb.WeightPolicy),
            actual_weight_kg=decimal_str(w.actual_kg),
            ideal_weight_kg=decimal_str(w.ideal_kg),
            adjusted_weight_kg=decimal_str(w.adjusted_kg),
            bmi=decimal_str(w.bmi),
            height_cm=decimal_str(result.measurement.height_cm),
            measured_on=from_date(result.measurement.measured_on),
            reason=w.reason,
        ),
        days=days,
        total_grams=decimal_str(result.total_grams),
        rules_applied=list(result.rules_applied),
        rationale=list(result.rationale),
    )


_NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _unsaved(value: T) -> Stored[T]:
    """A domain value as a message for applying an update mask: the mask may only name
    mutable fields, so the output-only etag and timestamps are never read."""
    return Stored(value, 0, _NEVER, _NEVER)


class SchedulerApi(BookingApi, ScheduleApi, pb_grpc.SchedulerServiceServicer):
    def __init__(
        self,
        cases: Records,
        doses: Doses,
        idempotency: IdempotencyStore,
        bookings: Bookings,
        planner: Schedules,
    ) -> None:
        self.cases = cases
        self.doses = doses
        self.idem = idempotency
        self.bookings = bookings
        self.planner = planner

    def _mutate(self, name: str, request: Message, rtype: type[R], fn: Callable[..., R]) -> R:
        return self.idem.run(f"scheduler.{name}", request, rtype, fn)

    # sites
    def CreateSite(self, request: pb.CreateSiteRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        site = _site_in(request.site, v)
        v.raise_if_any()
        return self._mutate(
            "CreateSite",
            request,
            pb.CreateSiteResponse,
            lambda s: pb.CreateSiteResponse(site=_site_out(self.cases.create_site(s, site))),
        )

    def GetSite(self, request: pb.GetSiteRequest, context: grpc.ServicerContext) -> Any:
        site_id = required(request.id, "id")
        return pb.GetSiteResponse(site=_site_out(self.cases.get_site(site_id)))

    def ListSites(self, request: pb.ListSitesRequest, context: grpc.ServicerContext) -> Any:
        scope = f"sites:{request.organisation_id}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.cases.list_sites(request.organisation_id, page),
            page,
            lambda s: [s.value.id],
            scope=scope,
        )
        return pb.ListSitesResponse(sites=[_site_out(s) for s in rows], next_page_token=token)

    def UpdateSite(self, request: pb.UpdateSiteRequest, context: grpc.ServicerContext) -> Any:
        site_id = required(request.site.id, "site.id")

        def change(current: Site) -> Site:
            merged = apply_mask(
                _site_out(_unsaved(current)),
                request.site,
                request.update_mask,
                SITE_MUTABLE,
                prefix="site",
            )
            v = Violations()
            site = _site_in(merged, v)  # type: ignore[arg-type]
            v.raise_if_any()
            return site

        return self._mutate(
            "UpdateSite",
            request,
            pb.UpdateSiteResponse,
            lambda s: pb.UpdateSiteResponse(
                site=_site_out(self.cases.update_site(s, site_id, request.site.etag, change))
            ),
        )

    # chairs
    def CreateChair(self, request: pb.CreateChairRequest, context: grpc.ServicerContext) -> Any:
        chair = _chair_in(request.chair)
        return self._mutate(
            "CreateChair",
            request,
            pb.CreateChairResponse,
            lambda s: pb.CreateChairResponse(chair=_chair_out(self.cases.create_chair(s, chair))),
        )

    def GetChair(self, request: pb.GetChairRequest, context: grpc.ServicerContext) -> Any:
        chair_id = required(request.id, "id")
        return pb.GetChairResponse(chair=_chair_out(self.cases.get_chair(chair_id)))

    def ListChairs(self, request: pb.ListChairsRequest, context: grpc.ServicerContext) -> Any:
        site_id = required(request.site_id, "site_id")
        scope = f"chairs:{site_id}:{request.active_only}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.cases.list_chairs(site_id, request.active_only, page),
            page,
            lambda c: [c.value.id],
            scope=scope,
        )
        return pb.ListChairsResponse(chairs=[_chair_out(c) for c in rows], next_page_token=token)

    def UpdateChair(self, request: pb.UpdateChairRequest, context: grpc.ServicerContext) -> Any:
        chair_id = required(request.chair.id, "chair.id")

        def change(current: Chair) -> Chair:
            merged = apply_mask(
                _chair_out(_unsaved(current)),
                request.chair,
                request.update_mask,
                CHAIR_MUTABLE,
                prefix="chair",
            )
            return _chair_in(merged)  # type: ignore[arg-type]

        return self._mutate(
            "UpdateChair",
            request,
            pb.UpdateChairResponse,
            lambda s: pb.UpdateChairResponse(
                chair=_chair_out(self.cases.update_chair(s, chair_id, request.chair.etag, change))
            ),
        )

    # patients
    def CreatePatient(self, request: pb.CreatePatientRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        patient = _patient_in(request.patient, v)
        v.raise_if_any()
        return self._mutate(
            "CreatePatient",
            request,
            pb.CreatePatientResponse,
            lambda s: pb.CreatePatientResponse(
                patient=_patient_out(self.cases.create_patient(s, patient))
            ),
        )

    def GetPatient(self, request: pb.GetPatientRequest, context: grpc.ServicerContext) -> Any:
        patient_id = required(request.id, "id")
        return pb.GetPatientResponse(patient=_patient_out(self.cases.get_patient(patient_id)))

    def ListPatients(self, request: pb.ListPatientsRequest, context: grpc.ServicerContext) -> Any:
        scope = f"patients:{request.organisation_id}:{request.mrn}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.cases.list_patients(request.organisation_id, request.mrn, page),
            page,
            lambda p: [p.value.id],
            scope=scope,
        )
        return pb.ListPatientsResponse(
            patients=[_patient_out(p) for p in rows], next_page_token=token
        )

    def UpdatePatient(self, request: pb.UpdatePatientRequest, context: grpc.ServicerContext) -> Any:
        patient_id = required(request.patient.id, "patient.id")

        def change(current: Patient) -> Patient:
            merged = apply_mask(
                _patient_out(_unsaved(current)),
                request.patient,
                request.update_mask,
                PATIENT_MUTABLE,
                prefix="patient",
            )
            v = Violations()
            patient = _patient_in(merged, v)  # type: ignore[arg-type]
            v.raise_if_any()
            return patient

        return self._mutate(
            "UpdatePatient",
            request,
            pb.UpdatePatientResponse,
            lambda s: pb.UpdatePatientResponse(
                patient=_patient_out(
                    self.cases.update_patient(s, patient_id, request.patient.etag, change)
                )
            ),
        )

    def RecordMeasurement(
        self, request: pb.RecordMeasurementRequest, context: grpc.ServicerContext
    ) -> Any:
        m = request.measurement
        v = Violations()
        if not m.patient_id:
            v.add("measurement.patient_id", "is required")
        day = parse_date(m.measured_on, "measurement.measured_on", v)
        weight = parse_decimal(m.weight_kg, "measurement.weight_kg", v)
        height = parse_decimal(m.height_cm, "measurement.height_cm", v)
        v.raise_if_any()
        assert day is not None and weight is not None and height is not None
        measurement = BodyMeasurement("", m.patient_id, day, weight, height, m.pregnant)

        def record(session: Any) -> pb.RecordMeasurementResponse:
            saved, created = self.cases.record_measurement(session, measurement)
            return pb.RecordMeasurementResponse(measurement=_measurement_out(saved, created))

        return self._mutate("RecordMeasurement", request, pb.RecordMeasurementResponse, record)

    def ListMeasurements(
        self, request: pb.ListMeasurementsRequest, context: grpc.ServicerContext
    ) -> Any:
        patient_id = required(request.patient_id, "patient_id")
        scope = f"measurements:{patient_id}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.cases.list_measurements(patient_id, page),
            page,
            lambda pair: [pair[0].measured_on.isoformat(), pair[0].id],
            scope=scope,
        )
        return pb.ListMeasurementsResponse(
            measurements=[_measurement_out(m, c) for m, c in rows], next_page_token=token
        )

    # plans
    def CreateTherapyPlan(
        self, request: pb.CreateTherapyPlanRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        plan = _plan_in(request.therapy_plan, v)
        v.raise_if_any()
        return self._mutate(
            "CreateTherapyPlan",
            request,
            pb.CreateTherapyPlanResponse,
            lambda s: pb.CreateTherapyPlanResponse(
                therapy_plan=_plan_out(self.cases.create_plan(s, plan, "created"))
            ),
        )

    def GetTherapyPlan(
        self, request: pb.GetTherapyPlanRequest, context: grpc.ServicerContext
    ) -> Any:
        plan_id = required(request.id, "id")
        if request.version < 0:
            raise InvalidArgument([FieldViolation("version", "must not be negative")])
        return pb.GetTherapyPlanResponse(
            therapy_plan=_plan_out(self.cases.get_plan(plan_id, request.version))
        )

    def ListTherapyPlans(
        self, request: pb.ListTherapyPlansRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        status = (
            None
            if request.status == pb.PLAN_STATUS_UNSPECIFIED
            else _enum_in(request.status, pb.PlanStatus, PlanStatus, "status", v)
        )
        v.raise_if_any()
        scope = f"plans:{request.patient_id}:{request.site_id}:{request.status}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.cases.list_plans(request.patient_id, request.site_id, status, page),
            page,
            lambda p: [p.value.id],
            scope=scope,
        )
        return pb.ListTherapyPlansResponse(
            therapy_plans=[_plan_out(p) for p in rows], next_page_token=token
        )

    def UpdateTherapyPlan(
        self, request: pb.UpdateTherapyPlanRequest, context: grpc.ServicerContext
    ) -> Any:
        plan_id = required(request.therapy_plan.id, "therapy_plan.id")

        def change(current: TherapyPlan) -> TherapyPlan:
            merged = apply_mask(
                _plan_out(_unsaved(current)),
                request.therapy_plan,
                request.update_mask,
                PLAN_MUTABLE,
                prefix="therapy_plan",
            )
            v = Violations()
            plan = _plan_in(merged, v)  # type: ignore[arg-type]
            v.raise_if_any()
            return plan

        return self._mutate(
            "UpdateTherapyPlan",
            request,
            pb.UpdateTherapyPlanResponse,
            lambda s: pb.UpdateTherapyPlanResponse(
                therapy_plan=_plan_out(
                    self.cases.update_plan(
                        s, plan_id, request.therapy_plan.etag, change, request.reason
                    )
                )
            ),
        )

    # dose and due list
    def CalculateDose(self, request: pb.CalculateDoseRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        if not request.therapy_plan_id:
            v.add("therapy_plan_id", "is required")
        if request.plan_version < 0:
            v.add("plan_version", "must not be negative")
        day = parse_date(request.dosing_date, "dosing_date", v)
        if request.course not in _COURSE_IN and request.course != pb.COURSE_KIND_UNSPECIFIED:
            v.add("course", "is not a known course kind")
        v.raise_if_any()
        assert day is not None
        result = self.doses.calculate(
            request.therapy_plan_id, request.plan_version, day, _COURSE_IN.get(request.course)
        )
        return pb.CalculateDoseResponse(calculation=_dose_out(result))

    def ListDueInfusions(
        self, request: pb.ListDueInfusionsRequest, context: grpc.ServicerContext
    ) -> Any:
        site_id = required(request.site_id, "site_id")
        horizon = request.horizon_days or DEFAULT_HORIZON_DAYS
        if not 1 <= horizon <= MAX_HORIZON_DAYS:
            raise InvalidArgument(
                [FieldViolation("horizon_days", f"must be 1–{MAX_HORIZON_DAYS} days")]
            )
        scope = f"due:{site_id}:{horizon}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        today, items = self.cases.due_list(site_id, horizon)
        if page.after:
            after = tuple(page.after)
            items = [
                i
                for i in items
                if (i.due_date.isoformat(), i.plan_id, f"{i.course_day:03d}") > after
            ]
        rows, token = split_page(
            items[: page.size + 1],
            page,
            lambda i: [i.due_date.isoformat(), i.plan_id, f"{i.course_day:03d}"],
            scope=scope,
        )
        return pb.ListDueInfusionsResponse(
            due_infusions=[due_out(i) for i in rows],
            next_page_token=token,
            as_of=from_date(today),
        )
