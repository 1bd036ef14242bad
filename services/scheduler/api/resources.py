"""Sites, chairs, patients, measurements and therapy plans: protobuf ⇄ domain.

Each resource has an ``*_in`` (a message to its domain value, adding the field violations it
finds) and an ``*_out`` (a stored value to its message); updates merge the request's masked
fields into the current value's message and read the result back with the same ``*_in``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.type import dayofweek_pb2

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import (
    decimal_str,
    from_date,
    from_datetime,
    from_time_of_day,
    parse_date,
    parse_decimal,
    parse_time_of_day,
)
from services.common.crud import masked
from services.common.errors import Violations
from services.common.etag import etag_for
from services.scheduler.api.schedules import objective_in, objective_out
from services.scheduler.domain.appointments import NurseShift, SiteCapacity
from services.scheduler.domain.due import DEFAULT_WINDOW_DAYS
from services.scheduler.domain.habits import Habits
from services.scheduler.domain.patients import BodyMeasurement, Patient, SexAtBirth
from services.scheduler.domain.plans import (
    DEFAULT_PRE_INFUSION_MINUTES,
    DEFAULT_ROUNDING_BAND_PERCENT,
    DoseBasis,
    Indication,
    Induction,
    PlanStatus,
    RampDose,
    RoundingRule,
    Route,
    TherapyPlan,
    WeightPolicy,
)
from services.scheduler.domain.sites import Chair, OpeningHours, Site
from services.scheduler.domain.slots import wall_time
from services.scheduler.usecases.records import Stored

T = TypeVar("T")
M = TypeVar("M", bound=Message)

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
    if f.name
    not in {
        "id",
        "version",
        "patient_id",
        "etag",
        "create_time",
        "update_time",
        # set by ConvertRegimen (docs/regimens.md), carried from version to version
        "ramp_up",
        "infusion_days",
        "regimen_start_date",
    }
)


def enum_in(value: int, enum_type: Any, domain: type[Any], field: str, v: Violations) -> Any:
    """A proto enum value to its domain StrEnum by name (prefix stripped); UNSPECIFIED is bad."""
    name = enum_type.Name(value) if value in enum_type.values() else ""
    prefix = enum_type.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    member = name.removeprefix(prefix)
    if not name or member == "UNSPECIFIED" or member not in domain.__members__:
        choices = ", ".join(f"{prefix}{m}" for m in domain.__members__)
        v.add(field, f"is required: one of {choices}")
        return None
    return domain[member]


def enum_out(member: Any, enum_type: Any) -> Any:
    prefix = enum_type.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    return enum_type.Value(prefix + member.value)


# --- sites ---------------------------------------------------------------------------------------


def site_in(msg: pb.Site, v: Violations) -> Site:
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


def site_out(stored: Stored[Site]) -> pb.Site:
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


def chair_in(msg: pb.Chair, v: Violations) -> Chair:
    """Nothing in a chair can be malformed (``v`` keeps the signature of the other ``*_in``)."""
    return Chair(id=msg.id, site_id=msg.site_id, display_name=msg.display_name, active=msg.active)


def chair_out(stored: Stored[Chair]) -> pb.Chair:
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


def patient_in(msg: pb.Patient, v: Violations) -> Patient:
    birth = parse_date(msg.birth_date, "patient.birth_date", v)
    sex = enum_in(msg.sex_at_birth, pb.SexAtBirth, SexAtBirth, "patient.sex_at_birth", v)
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


def patient_out(stored: Stored[Patient]) -> pb.Patient:
    p = stored.value
    return pb.Patient(
        id=p.id,
        organisation_id=p.organisation_id,
        mrn=p.mrn,
        given_name=p.given_name,
        family_name=p.family_name,
        birth_date=from_date(p.birth_date),
        sex_at_birth=enum_out(p.sex_at_birth, pb.SexAtBirth),
        notify_subscriber_id=p.notify_subscriber_id,
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )


def measurement_in(m: pb.Measurement, v: Violations) -> BodyMeasurement:
    if not m.patient_id:
        v.add("measurement.patient_id", "is required")
    day = parse_date(m.measured_on, "measurement.measured_on", v)
    weight = parse_decimal(m.weight_kg, "measurement.weight_kg", v)
    height = parse_decimal(m.height_cm, "measurement.height_cm", v)
    return BodyMeasurement(
        "",
        m.patient_id,
        day or dt.date.min,
        weight if weight is not None else Decimal(0),
        height if height is not None else Decimal(0),
        m.pregnant,
    )


def measurement_out(m: BodyMeasurement, created: dt.datetime) -> pb.Measurement:
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


def plan_in(msg: pb.TherapyPlan, v: Violations) -> TherapyPlan:
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
        indication=enum_in(msg.indication, pb.Indication, Indication, f"{p}.indication", v),
        route=enum_in(msg.route, pb.Route, Route, f"{p}.route", v),
        product_id=msg.product_id,
        dose_basis=enum_in(msg.dose_basis, pb.DoseBasis, DoseBasis, f"{p}.dose_basis", v),
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
        else enum_in(msg.weight_policy, pb.WeightPolicy, WeightPolicy, f"{p}.weight_policy", v),
        rounding_rule=RoundingRule.NEAREST
        if msg.rounding_rule == pb.ROUNDING_RULE_UNSPECIFIED
        else enum_in(msg.rounding_rule, pb.RoundingRule, RoundingRule, f"{p}.rounding_rule", v),
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
        else enum_in(msg.status, pb.PlanStatus, PlanStatus, f"{p}.status", v),
        override_outside_bands=msg.dose_override.allow_outside_bands,
        override_reason=msg.dose_override.reason,
        keep_cadence=msg.keep_cadence,
        ramp_up=tuple(
            RampDose(
                step.day,
                parse_decimal(step.grams, f"{p}.ramp_up[{i}].grams", v) or Decimal(0),
            )
            for i, step in enumerate(msg.ramp_up)
        ),
        infusion_days=tuple(msg.infusion_days),
        regimen_start_date=parse_date(
            msg.regimen_start_date, f"{p}.regimen_start_date", v, required=False
        ),
        home_administration=msg.home_administration,
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


def plan_out(stored: Stored[TherapyPlan]) -> pb.TherapyPlan:
    p = stored.value
    msg = pb.TherapyPlan(
        id=p.id,
        version=p.version,
        patient_id=p.patient_id,
        site_id=p.site_id,
        indication=enum_out(p.indication, pb.Indication),
        route=enum_out(p.route, pb.Route),
        product_id=p.product_id,
        dose_basis=enum_out(p.dose_basis, pb.DoseBasis),
        maintenance_dose=decimal_str(p.maintenance_dose),
        interval_days=p.interval_days,
        window_days_early=p.window_days_early,
        window_days_late=p.window_days_late,
        max_grams_per_day=decimal_str(p.max_grams_per_day),
        weight_policy=enum_out(p.weight_policy, pb.WeightPolicy),
        rounding_rule=enum_out(p.rounding_rule, pb.RoundingRule),
        rounding_band_percent=decimal_str(p.rounding_band_percent),
        max_rate_ml_per_kg_h=decimal_str(p.max_rate_ml_per_kg_h),
        pre_infusion_minutes=p.pre_infusion_minutes,
        infusion_sites=p.infusion_sites,
        start_date=from_date(p.start_date),
        last_infusion_date=from_date(p.last_infusion_date),
        last_product_id=p.last_product_id,
        status=enum_out(p.status, pb.PlanStatus),
        dose_override=pb.DoseOverride(
            allow_outside_bands=p.override_outside_bands, reason=p.override_reason
        ),
        keep_cadence=p.keep_cadence,
        ramp_up=[pb.PlanRampStep(day=d.day, grams=decimal_str(d.grams)) for d in p.ramp_up],
        infusion_days=list(p.infusion_days),
        regimen_start_date=from_date(p.regimen_start_date),
        home_administration=p.home_administration,
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


_NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def unsaved(value: T) -> Stored[T]:
    """A domain value as a message for applying an update mask: the mask may only name
    mutable fields, so the output-only etag and timestamps are never read."""
    return Stored(value, 0, _NEVER, _NEVER)


def patch(
    out: Callable[[Stored[T]], M],
    translate: Callable[[M, Violations], T],
    message: M,
    mask: FieldMask,
    mutable: tuple[str, ...],
    *,
    prefix: str,
) -> Callable[[T], T]:
    """The change an Update RPC asks for, as a function of the current value: the use case
    calls it after the etag check, with the row locked."""
    return lambda current: masked(
        out(unsaved(current)), message, mask, mutable, prefix=prefix, translate=translate
    )
