"""A therapy plan version's specification as JSON: exact decimals as strings, dates as ISO.

Kept apart from the models so the stored form of a plan is defined in one place and can be
read back exactly, which is what makes every calculation reproducible from stored inputs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from services.scheduler.domain.habits import Habits
from services.scheduler.domain.plans import (
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
from services.scheduler.store.models import PlanRow, PlanVersionRow


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _undec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _day(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _unday(value: str | None) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)


def plan_to_spec(plan: TherapyPlan) -> dict[str, Any]:
    return {
        "patient_id": plan.patient_id,
        "site_id": plan.site_id,
        "indication": plan.indication.value,
        "route": plan.route.value,
        "product_id": plan.product_id,
        "dose_basis": plan.dose_basis.value,
        "maintenance_dose": _dec(plan.maintenance_dose),
        "interval_days": plan.interval_days,
        "start_date": _day(plan.start_date),
        "window_days_early": plan.window_days_early,
        "window_days_late": plan.window_days_late,
        "induction": None
        if plan.induction is None
        else {"total_g_per_kg": _dec(plan.induction.total_g_per_kg), "days": plan.induction.days},
        "max_grams_per_day": _dec(plan.max_grams_per_day),
        "weight_policy": plan.weight_policy.value,
        "rounding_rule": plan.rounding_rule.value,
        "rounding_band_percent": _dec(plan.rounding_band_percent),
        "max_rate_ml_per_kg_h": _dec(plan.max_rate_ml_per_kg_h),
        "pre_infusion_minutes": plan.pre_infusion_minutes,
        "observation_minutes": plan.observation_minutes,
        "infusion_sites": plan.infusion_sites,
        "last_infusion_date": _day(plan.last_infusion_date),
        "last_product_id": plan.last_product_id,
        "status": plan.status.value,
        "override_outside_bands": plan.override_outside_bands,
        "override_reason": plan.override_reason,
        "keep_cadence": plan.keep_cadence,
        "ramp_up": [[d.day, _dec(d.grams)] for d in plan.ramp_up],
        "infusion_days": list(plan.infusion_days),
        "regimen_start_date": _day(plan.regimen_start_date),
        "home_administration": plan.home_administration,
    }


def plan_of(row: PlanRow, version: PlanVersionRow) -> TherapyPlan:
    """A stored plan: its version's specification and the row's scheduling preferences."""
    plan = plan_from_spec(row.id, version.version, version.spec)
    usual = Habits(row.usual_weekday, row.usual_start_minute, row.usual_chair_id or "")
    return dataclasses.replace(plan, usual=usual)


def plan_from_spec(plan_id: str, version: int, spec: dict[str, Any]) -> TherapyPlan:
    induction = spec.get("induction")
    start = _unday(spec["start_date"])
    assert start is not None
    maintenance = _undec(spec["maintenance_dose"])
    assert maintenance is not None
    band = _undec(spec["rounding_band_percent"])
    assert band is not None
    return TherapyPlan(
        id=plan_id,
        version=version,
        patient_id=spec["patient_id"],
        site_id=spec["site_id"],
        indication=Indication(spec["indication"]),
        route=Route(spec["route"]),
        product_id=spec["product_id"],
        dose_basis=DoseBasis(spec["dose_basis"]),
        maintenance_dose=maintenance,
        interval_days=int(spec["interval_days"]),
        start_date=start,
        window_days_early=int(spec["window_days_early"]),
        window_days_late=int(spec["window_days_late"]),
        induction=None
        if induction is None
        else Induction(Decimal(induction["total_g_per_kg"]), int(induction["days"])),
        max_grams_per_day=_undec(spec.get("max_grams_per_day")),
        weight_policy=WeightPolicy(spec["weight_policy"]),
        rounding_rule=RoundingRule(spec["rounding_rule"]),
        rounding_band_percent=band,
        max_rate_ml_per_kg_h=_undec(spec.get("max_rate_ml_per_kg_h")),
        pre_infusion_minutes=int(spec["pre_infusion_minutes"]),
        observation_minutes=spec.get("observation_minutes"),
        infusion_sites=int(spec["infusion_sites"]),
        last_infusion_date=_unday(spec.get("last_infusion_date")),
        last_product_id=spec.get("last_product_id", ""),
        status=PlanStatus(spec["status"]),
        override_outside_bands=bool(spec.get("override_outside_bands", False)),
        override_reason=spec.get("override_reason", ""),
        keep_cadence=bool(spec.get("keep_cadence", False)),
        ramp_up=tuple(RampDose(int(day), Decimal(grams)) for day, grams in spec.get("ramp_up", [])),
        infusion_days=tuple(int(d) for d in spec.get("infusion_days", [])),
        regimen_start_date=_unday(spec.get("regimen_start_date")),
        home_administration=bool(spec.get("home_administration", False)),
    )
