"""Translations of ConvertRegimen, SetPlanAuthorisation, SetPayerCaps and GetPlanCoverage
(docs/regimens.md): protobuf in, domain values out, and back."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import (
    decimal_str,
    from_date,
    from_datetime,
    parse_date,
    parse_decimal,
)
from services.common.errors import Violations
from services.common.etag import etag_for
from services.scheduler.api.bookings import lots_in
from services.scheduler.domain.plans import Route
from services.scheduler.domain.regimens.authorisations import AuthorisationCheck
from services.scheduler.domain.regimens.coverage import PlanAuthorisation, PlanCaps
from services.scheduler.domain.regimens.sc_conversion import (
    FIRST_SC_DAYS,
    FIRST_SC_DAYS_TWO_WEEKLY_OPTION,
    ORDER,
    WEEKLY,
    FactorOverride,
    Frequency,
)
from services.scheduler.domain.regimens.sc_products import CURRENT_LABEL
from services.scheduler.domain.regimens.switch import Converted
from services.scheduler.domain.vials import VialChoice
from services.scheduler.usecases.records import Stored
from services.scheduler.usecases.regimens import ConvertRequest, Coverage, HomeInfusionRecord

ROUTE_IN = {
    pb.ROUTE_IV: Route.IV,
    pb.ROUTE_SC: Route.SC,
    pb.ROUTE_FACILITATED_SC: Route.FACILITATED_SC,
}
ROUTE_OUT = {v: k for k, v in ROUTE_IN.items()}


def vials_out(choice: VialChoice) -> list[pb.VialCount]:
    return [pb.VialCount(grams=decimal_str(size), count=count) for size, count in choice.vials]


def frequency_in(msg: pb.ScFrequency, v: Violations) -> Frequency:
    per_week, every = msg.infusions_per_week, msg.every_weeks
    if per_week > 1 and every > 1:
        v.add("frequency", "give infusions_per_week or every_weeks, not both")
        return WEEKLY
    frequency = Frequency(per_week or 1, every or 1)
    if frequency not in ORDER:
        v.add("frequency", "is not an SC frequency")
        return WEEKLY
    return frequency


def convert_in(msg: pb.ConvertRegimenRequest, v: Violations) -> ConvertRequest:
    if not msg.therapy_plan_id:
        v.add("therapy_plan_id", "is required")
    route = ROUTE_IN.get(msg.route)
    if route is None:
        v.add("route", "is required: SC, FACILITATED_SC or IV")
    if not msg.product_id:
        v.add("product_id", "is required")
    if not msg.reason.strip():
        v.add("reason", "is required: it is kept with the new version")
    if not msg.validate_only and not msg.request_id:
        v.add("request_id", "is required")
    override = None
    if msg.HasField("factor_override") and (
        msg.factor_override.factor or msg.factor_override.reason
    ):
        factor = parse_decimal(msg.factor_override.factor, "factor_override.factor", v)
        if factor is not None and factor <= 0:
            v.add("factor_override.factor", "must be above 0")
        if not msg.factor_override.reason.strip():
            v.add("factor_override.reason", "is required with a factor")
        override = FactorOverride(factor or Decimal(1), msg.factor_override.reason)
    start_days = msg.two_weekly_start_days or FIRST_SC_DAYS
    if start_days not in (FIRST_SC_DAYS, FIRST_SC_DAYS_TWO_WEEKLY_OPTION):
        v.add("two_weekly_start_days", "must be 7 or 14")
    if route is Route.IV and msg.interval_days <= 0:
        v.add("interval_days", "is required going back to IV: the IV interval")
    if route is Route.IV and msg.home_administration:
        v.add("home_administration", "only a subcutaneous plan is given at home")
    cycle = parse_decimal(msg.cycle_grams, "cycle_grams", v, required=False)
    if cycle is not None and cycle <= 0:
        v.add("cycle_grams", "must be above 0")
    return ConvertRequest(
        plan_id=msg.therapy_plan_id,
        etag=msg.etag,
        route=route or Route.SC,
        product_id=msg.product_id,
        reason=msg.reason,
        frequency=frequency_in(msg.frequency, v),
        override=override,
        label_version=msg.label_version or CURRENT_LABEL,
        last_dose_date=parse_date(msg.last_dose_date, "last_dose_date", v, required=False),
        two_weekly_start_days=start_days,
        cycle_grams=cycle,
        interval_days=msg.interval_days,
        validate_only=msg.validate_only,
        home=msg.home_administration,
    )


def conversion_out(c: Converted, from_route: Route) -> pb.RegimenConversion:
    plan = c.plan
    frequency = c.schedule.frequency if c.schedule is not None else None
    msg = pb.RegimenConversion(
        from_route=ROUTE_OUT[from_route],
        to_route=ROUTE_OUT[plan.route],
        product_id=plan.product_id,
        factor=decimal_str(c.factor),
        factor_source=c.factor_text,
        cycle_grams=decimal_str(c.cycle_grams),
        cycle_interval_days=c.cycle_interval_days,
        weekly_grams=decimal_str(c.weekly_raw_grams.quantize(Decimal("0.01"))),
        weekly_grams_given=decimal_str(c.weekly_grams.quantize(Decimal("0.01"))),
        infusions_per_week=frequency.per_week if frequency else 0,
        every_weeks=frequency.every_weeks if frequency else 0,
        grams_per_infusion=decimal_str(c.infusion.dose_grams),
        vials=vials_out(c.infusion),
        volume_ml=decimal_str(c.volume_ml.quantize(Decimal("0.01"))),
        sites=c.sites,
        site_max_ml=decimal_str(c.site_max_ml),
        infusion_days=list(plan.infusion_days),
        first_date=from_date(c.first_date),
        skipped=list(c.schedule.skipped) if c.schedule is not None else [],
        rationale=list(c.rationale),
        interval_days=plan.interval_days,
    )
    if c.ramp is not None:
        msg.steady_date.CopyFrom(from_date(c.ramp.first_steady_date))
        for index, step in enumerate(c.ramp.steps, start=1):
            msg.ramp_up.append(
                pb.RampStep(
                    step=index,
                    week=step.week,
                    day=step.day,
                    date=from_date(step.date),
                    fraction=str(step.fraction),
                    raw_grams=decimal_str(step.raw_grams.quantize(Decimal("0.01"))),
                    grams=decimal_str(step.vials.dose_grams),
                    vials=vials_out(step.vials),
                    volume_ml=decimal_str(step.volume_ml.quantize(Decimal("0.01"))),
                    sites=step.sites,
                    flags=list(step.flags),
                )
            )
    return msg


def authorisation_in(msg: pb.PlanAuthorisation, v: Violations) -> PlanAuthorisation:
    p = "authorisation"
    first = parse_date(msg.valid_from, f"{p}.valid_from", v)
    last = parse_date(msg.valid_to, f"{p}.valid_to", v)
    return PlanAuthorisation(
        id=msg.id,
        plan_id=msg.therapy_plan_id,
        payer=msg.payer,
        valid_from=first or dt.date.min,
        valid_to=last or dt.date.max,
        approved_grams=parse_decimal(msg.approved_grams, f"{p}.approved_grams", v, required=False),
        approved_doses=msg.approved_doses or None,
        active=msg.active,
        cap_override_reason=msg.cap_override_reason,
    )


def authorisation_out(stored: Stored[PlanAuthorisation]) -> pb.PlanAuthorisation:
    a = stored.value
    return pb.PlanAuthorisation(
        id=a.id,
        therapy_plan_id=a.plan_id,
        payer=a.payer,
        approved_grams=decimal_str(a.approved_grams),
        approved_doses=a.approved_doses or 0,
        valid_from=from_date(a.valid_from),
        valid_to=from_date(a.valid_to),
        active=a.active,
        cap_override_reason=a.cap_override_reason,
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )


def caps_in(msg: pb.PayerCaps, v: Violations) -> PlanCaps:
    p = "payer_caps"
    return PlanCaps(
        plan_id=msg.therapy_plan_id,
        payer=msg.payer,
        grams_per_7_days=parse_decimal(
            msg.grams_per_7_days, f"{p}.grams_per_7_days", v, required=False
        ),
        grams_per_28_days=parse_decimal(
            msg.grams_per_28_days, f"{p}.grams_per_28_days", v, required=False
        ),
        authorisation_required=msg.authorisation_required,
    )


def caps_out(stored: Stored[PlanCaps]) -> pb.PayerCaps:
    c = stored.value
    return pb.PayerCaps(
        therapy_plan_id=c.plan_id,
        payer=c.payer,
        grams_per_7_days=decimal_str(c.grams_per_7_days),
        grams_per_28_days=decimal_str(c.grams_per_28_days),
        authorisation_required=c.authorisation_required,
        etag=etag_for(stored.revision),
        update_time=from_datetime(stored.updated_at),
    )


def state_out(
    check: AuthorisationCheck, covering: PlanAuthorisation | None, day: dt.date
) -> pb.AuthorisationState:
    if not check.allowed:
        status = pb.AUTHORISATION_STATUS_MISSING
    elif covering is None:
        status = pb.AUTHORISATION_STATUS_NOT_REQUIRED
    elif check.code == "authorisation_expiring":
        status = pb.AUTHORISATION_STATUS_EXPIRING
    else:
        status = pb.AUTHORISATION_STATUS_AUTHORISED
    msg = pb.AuthorisationState(status=status, explanation=check.explanation)
    if covering is not None:
        msg.authorisation_id = covering.id
        msg.payer = covering.payer
        msg.valid_to.CopyFrom(from_date(covering.valid_to))
        msg.days_left = (covering.valid_to - day).days
    return msg


def coverage_out(c: Coverage) -> pb.GetPlanCoverageResponse:
    reply = pb.GetPlanCoverageResponse(
        authorisations=[authorisation_out(a) for a in c.authorisations],
        authorisation=state_out(c.state, c.covering, c.as_of),
        patient_id=c.patient_id,
    )
    if c.caps is not None:
        reply.payer_caps.CopyFrom(caps_out(c.caps))
    return reply


def home_in(
    msg: pb.RecordHomeInfusionRequest, v: Violations
) -> tuple[dt.date, Decimal, list[dict[str, object]]]:
    if not msg.therapy_plan_id:
        v.add("therapy_plan_id", "is required")
    day = parse_date(msg.given_on, "given_on", v)
    grams = parse_decimal(msg.grams_given, "grams_given", v)
    lots: list[dict[str, object]] = lots_in(msg.scanned_lots, v)
    return day or dt.date.min, grams or Decimal(0), lots


def home_out(row: HomeInfusionRecord) -> pb.HomeInfusion:
    return pb.HomeInfusion(
        id=row.id,
        therapy_plan_id=row.plan_id,
        plan_version=row.plan_version,
        patient_id=row.patient_id,
        given_on=from_date(row.given_on),
        due_date=from_date(row.due_date),
        ramp_step=row.ramp_step,
        grams_given=decimal_str(row.grams_given),
        product_id=row.product_id,
        scanned_lots=[
            pb.ScannedLot(
                lot_number=str(lot.get("lot_number", "")),
                gs1_element_string=str(lot.get("gs1_element_string", "")),
                vials=int(str(lot.get("vials", 0))),
                product_id=str(lot.get("product_id", "")),
            )
            for lot in row.scanned_lots
        ],
        create_time=from_datetime(row.created_at),
    )
