"""Therapy plans: a per-patient regimen (docs/clinical-rules.md#regimen), versioned because
regimens change as response wears off (docs/clinical-rules.md#regimen-versions). Validation
bands are docs/clinical-rules.md#validation-bands; outside them only with an explicit override
carrying a reason."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from services.common.errors import Violations
from services.scheduler.domain.due import DEFAULT_WINDOW_DAYS
from services.scheduler.domain.habits import Habits, validate_habits

# validation bands: docs/clinical-rules.md#validation-bands
DOSE_G_PER_KG_BAND = (Decimal("0.1"), Decimal("2.5"))  # per course or maintenance infusion
MAX_G_PER_KG_ONE_DAY = Decimal("2.0")
INTERVAL_DAYS_BAND = (1, 182)
# defaults: docs/clinical-rules.md#chair-time
DEFAULT_PRE_INFUSION_MINUTES = 30
DEFAULT_ROUNDING_BAND_PERCENT = Decimal("10")  # docs/clinical-rules.md#dose-rounding nearest: ±10 %
MAX_INDUCTION_DAYS = 10  # sources give 2–5 days; 10 leaves room: docs/clinical-rules.md#regimen


class Indication(StrEnum):
    MMN = "MMN"
    CIDP = "CIDP"
    PID = "PID"
    OTHER = "OTHER"


class Route(StrEnum):
    IV = "IV"
    SC = "SC"
    FACILITATED_SC = "FACILITATED_SC"


class DoseBasis(StrEnum):
    G_PER_KG = "G_PER_KG"
    FIXED_GRAMS = "FIXED_GRAMS"


class PlanStatus(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"


class WeightPolicy(StrEnum):
    ACTUAL = "ACTUAL"
    IDEAL = "IDEAL"
    ADJUSTED = "ADJUSTED"
    AUTOMATIC = "AUTOMATIC"


class RoundingRule(StrEnum):
    NEAREST = "NEAREST"
    NEAREST_5G = "NEAREST_5G"
    DOWN = "DOWN"
    UP = "UP"
    NONE = "NONE"


@dataclass(frozen=True)
class Induction:
    total_g_per_kg: Decimal
    days: int


@dataclass(frozen=True)
class RampDose:
    """One dose of a ramp-up: its day from the plan's start date and its grams
    (docs/regimens.md, "Regimen conversion")."""

    day: int
    grams: Decimal


@dataclass(frozen=True)
class TherapyPlan:
    id: str
    patient_id: str
    site_id: str
    indication: Indication
    route: Route
    product_id: str
    dose_basis: DoseBasis
    maintenance_dose: Decimal
    interval_days: int
    start_date: dt.date
    version: int = 1
    window_days_early: int = DEFAULT_WINDOW_DAYS
    window_days_late: int = DEFAULT_WINDOW_DAYS
    induction: Induction | None = None
    max_grams_per_day: Decimal | None = None
    weight_policy: WeightPolicy = WeightPolicy.AUTOMATIC
    rounding_rule: RoundingRule = RoundingRule.NEAREST
    rounding_band_percent: Decimal = DEFAULT_ROUNDING_BAND_PERCENT
    max_rate_ml_per_kg_h: Decimal | None = None
    pre_infusion_minutes: int = DEFAULT_PRE_INFUSION_MINUTES
    observation_minutes: int | None = None
    infusion_sites: int = 1
    last_infusion_date: dt.date | None = None
    last_product_id: str = ""
    status: PlanStatus = PlanStatus.ACTIVE
    override_outside_bands: bool = False
    override_reason: str = ""
    keep_cadence: bool = False
    # a version made by ConvertRegimen (docs/regimens.md): its ramp-up, the days of each interval
    # with several SC infusions, and the first dose by its route
    ramp_up: tuple[RampDose, ...] = ()
    infusion_days: tuple[int, ...] = ()
    regimen_start_date: dt.date | None = None
    # given at home (SC): due and forecast as any dose, never booked in a chair; each dose is
    # recorded as given (docs/regimens.md, "Home administration")
    home_administration: bool = False
    # scheduling preferences (not clinical content): stored with the plan row, not its versions
    usual: Habits = field(default_factory=Habits)


def validate_plan(plan: TherapyPlan, prefix: str = "therapy_plan") -> Violations:
    """Every rule of a plan on its own; existence of patient, site and product is the use
    case's job (it needs the store and the inventory service)."""
    v = Violations()
    p = prefix
    v.extend(validate_habits(plan.usual, f"{p}.").items)
    for name in ("patient_id", "site_id", "product_id"):
        if not getattr(plan, name):
            v.add(f"{p}.{name}", "is required")
    override = plan.override_outside_bands
    if override and not plan.override_reason.strip():
        v.add(f"{p}.dose_override.reason", "is required when dosing outside the validation bands")
    low, high = DOSE_G_PER_KG_BAND
    if plan.maintenance_dose <= 0:
        v.add(f"{p}.maintenance_dose", "must be greater than 0")
    elif plan.dose_basis is DoseBasis.G_PER_KG and not override:
        if not low <= plan.maintenance_dose <= high:
            v.add(
                f"{p}.maintenance_dose",
                f"{plan.maintenance_dose} g/kg is outside the {low}–{high} g/kg band "
                "(docs/clinical-rules.md#validation-bands); "
                "set dose_override with a reason to allow it",
            )
        elif plan.maintenance_dose > MAX_G_PER_KG_ONE_DAY:
            v.add(
                f"{p}.maintenance_dose",
                f"{plan.maintenance_dose} g/kg on one day exceeds {MAX_G_PER_KG_ONE_DAY} g/kg "
                "(docs/clinical-rules.md#validation-bands); "
                "set dose_override with a reason to allow it",
            )
    if plan.interval_days < INTERVAL_DAYS_BAND[0]:
        v.add(f"{p}.interval_days", "must be at least 1 day")
    elif plan.interval_days > INTERVAL_DAYS_BAND[1] and not override:
        v.add(
            f"{p}.interval_days",
            f"{plan.interval_days} days is over the {INTERVAL_DAYS_BAND[1]}-day band "
            "(docs/clinical-rules.md#validation-bands); "
            "set dose_override with a reason to allow it",
        )
    for name in ("window_days_early", "window_days_late"):
        value = getattr(plan, name)
        if value < 0:
            v.add(f"{p}.{name}", "must not be negative")
        elif plan.interval_days >= 1 and value >= plan.interval_days:
            v.add(f"{p}.{name}", f"must be shorter than the {plan.interval_days}-day interval")
    if plan.induction is not None:
        ind = plan.induction
        if not 1 <= ind.days <= MAX_INDUCTION_DAYS:
            v.add(f"{p}.induction.days", f"must be 1–{MAX_INDUCTION_DAYS} days")
        if ind.total_g_per_kg <= 0:
            v.add(f"{p}.induction.total_g_per_kg", "must be greater than 0")
        elif not override:
            if not low <= ind.total_g_per_kg <= high:
                v.add(
                    f"{p}.induction.total_g_per_kg",
                    f"{ind.total_g_per_kg} g/kg is outside the {low}–{high} g/kg course band "
                    "(docs/clinical-rules.md#validation-bands)",
                )
            elif ind.days >= 1 and ind.total_g_per_kg / ind.days > MAX_G_PER_KG_ONE_DAY:
                v.add(
                    f"{p}.induction.days",
                    f"{ind.total_g_per_kg} g/kg over {ind.days} day(s) is more than "
                    f"{MAX_G_PER_KG_ONE_DAY} g/kg on one day "
                    "(docs/clinical-rules.md#validation-bands)",
                )
    if plan.max_grams_per_day is not None and plan.max_grams_per_day <= 0:
        v.add(f"{p}.max_grams_per_day", "must be greater than 0")
    if not Decimal(0) <= plan.rounding_band_percent <= Decimal(100):
        v.add(f"{p}.rounding_band_percent", "must be 0–100")
    if plan.max_rate_ml_per_kg_h is not None and plan.max_rate_ml_per_kg_h <= 0:
        v.add(f"{p}.max_rate_ml_per_kg_h", "must be greater than 0")
    if not 0 <= plan.pre_infusion_minutes <= 240:
        v.add(f"{p}.pre_infusion_minutes", "must be 0–240 minutes")
    if plan.observation_minutes is not None and not 0 <= plan.observation_minutes <= 240:
        v.add(f"{p}.observation_minutes", "must be 0–240 minutes")
    if not 1 <= plan.infusion_sites <= 12:
        v.add(f"{p}.infusion_sites", "must be 1–12")
    if plan.ramp_up:
        days = [d.day for d in plan.ramp_up]
        if days[0] != 0 or any(b <= a for a, b in zip(days, days[1:], strict=False)):
            v.add(f"{p}.ramp_up", "days must start at 0 and rise")
        if any(d.grams <= 0 for d in plan.ramp_up):
            v.add(f"{p}.ramp_up", "each dose must be greater than 0 g")
    if plan.infusion_days:
        days = list(plan.infusion_days)
        if days[0] != 0 or any(b <= a for a, b in zip(days, days[1:], strict=False)):
            v.add(f"{p}.infusion_days", "must start at 0 and rise")
        elif plan.interval_days >= 1 and days[-1] >= plan.interval_days:
            v.add(f"{p}.infusion_days", f"must fall within the {plan.interval_days}-day interval")
    if plan.home_administration and plan.route is Route.IV:
        v.add(f"{p}.home_administration", "only a subcutaneous plan is given at home")
    if plan.last_infusion_date is not None and plan.last_infusion_date > plan.start_date:
        v.add(f"{p}.last_infusion_date", "must not be after the plan's start_date")
    return v
