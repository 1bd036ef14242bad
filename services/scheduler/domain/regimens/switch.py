"""A route switch as a plan's next version: IV → SC, IV → facilitated SC (HyQvia with its
ramp-up), and back to IV (docs/regimens.md, "Regimen conversion").

The arithmetic is the adopted rules' (sc_conversion.py, ramp_up.py); this module only turns
their results into the next :class:`TherapyPlan` version: a fixed number of grams per infusion,
the interval and, for several infusions a week, the days of each week they fall on, the sites,
the first date by the new route (the version's start and regimen start, so doses given by the
old route no longer set the next due date), and a ramp-up as a finite list of (day, grams).
Nothing is booked or applied here; the use case stores the version with the clinician's reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from services.scheduler.domain.plans import DoseBasis, RampDose, Route, TherapyPlan
from services.scheduler.domain.regimens.ramp_up import RampUp, hyqvia_ramp_up
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.sc_conversion import (
    FIRST_SC_DAYS,
    WEEKLY,
    FactorOverride,
    Frequency,
    PreviousTherapy,
    ScSchedule,
    conversion_factor,
    first_sc_date,
    sc_infusions,
    sc_weekly_dose,
)
from services.scheduler.domain.regimens.sc_products import CURRENT_LABEL, ScProduct
from services.scheduler.domain.regimens.whole_vials import grams_text, round_to_vials
from services.scheduler.domain.vials import VialChoice

MAX_PLAN_SITES = 12  # a plan's infusion_sites band (domain/plans.py)


@dataclass(frozen=True)
class Switch:
    """What ConvertRegimen asks for."""

    to_route: Route
    product: ScProduct  # the new route's product (for IV: its vial sizes are what count)
    cycle_grams: Decimal  # grams given per cycle by the old route
    last_dose: dt.date  # the last dose by the old route
    body_weight_kg: Decimal
    frequency: Frequency = WEEKLY
    override: FactorOverride | None = None
    label_version: str = CURRENT_LABEL
    two_weekly_start_days: int = FIRST_SC_DAYS
    iv_interval_days: int = 0  # back to IV only
    from_product: ScProduct | None = None  # back to IV: the SC product whose factor is undone
    home: bool = False  # the new SC version is given at home


@dataclass(frozen=True)
class Converted:
    plan: TherapyPlan  # the next version (not yet stored)
    factor: Decimal | None
    factor_text: str
    weekly_raw_grams: Decimal
    weekly_grams: Decimal  # what the new schedule gives a week
    infusion: VialChoice
    volume_ml: Decimal
    sites: int
    site_max_ml: Decimal | None
    first_date: dt.date
    schedule: ScSchedule | None
    ramp: RampUp | None
    rationale: tuple[str, ...]
    cycle_grams: Decimal = Decimal(0)  # what the old route gave per cycle
    cycle_interval_days: int = 0


def _windows(plan: TherapyPlan, shortest_gap: int) -> tuple[int, int]:
    """Windows narrower than half the shortest gap between doses, so consecutive doses' windows
    never overlap (a plan's window must also be shorter than its interval)."""
    most = max((shortest_gap - 1) // 2, 0)
    return min(plan.window_days_early, most), min(plan.window_days_late, most)


def convert(plan: TherapyPlan, switch: Switch) -> Converted:
    if switch.to_route is plan.route:
        raise Refused("same_route", f"the plan is already {plan.route.value}")
    if switch.cycle_grams <= 0:
        raise Refused("no_cycle_grams", "the grams given per cycle are not known")
    if switch.to_route is Route.SC:
        done = _to_sc(plan, switch)
    elif switch.to_route is Route.FACILITATED_SC:
        done = _to_facilitated(plan, switch)
    else:
        done = _to_iv(plan, switch)
    home = switch.home and switch.to_route is not Route.IV
    return dataclasses.replace(
        done,
        plan=dataclasses.replace(done.plan, home_administration=home),
        cycle_grams=switch.cycle_grams,
        cycle_interval_days=plan.interval_days,
    )


def _by_route(
    plan: TherapyPlan,
    route: Route,
    product_id: str,
    grams: Decimal,
    first: dt.date,
    last_dose: dt.date,
    **changes: object,
) -> TherapyPlan:
    """The next version on ``route``: a fixed number of grams per dose from ``first``, the
    old route's last dose kept as the dose given before it (the observation rule sees the
    product switch); no induction course, no IV rate limit, unless ``changes`` say more."""
    fields: dict[str, object] = {
        "route": route,
        "product_id": product_id,
        "dose_basis": DoseBasis.FIXED_GRAMS,
        "maintenance_dose": grams,
        "start_date": first,
        "regimen_start_date": first,
        "last_infusion_date": last_dose,
        "last_product_id": plan.product_id,
        "induction": None,
        "max_rate_ml_per_kg_h": None,
        "ramp_up": (),
        "infusion_days": (),
    }
    return dataclasses.replace(plan, **{**fields, **changes})  # type: ignore[arg-type]


def _previous(plan: TherapyPlan) -> PreviousTherapy:
    return PreviousTherapy.IV if plan.route is Route.IV else PreviousTherapy.WEEKLY_SC


def _too_many_sites(sites: int) -> None:
    if sites > MAX_PLAN_SITES:
        raise Refused(
            "no_sc_schedule_fits",
            f"{sites} sites at once is more than a plan's {MAX_PLAN_SITES}",
        )


def _to_sc(plan: TherapyPlan, switch: Switch) -> Converted:
    product = switch.product
    if plan.route is not Route.IV:
        raise Refused(
            "conversion_route",
            f"a {plan.route.value} plan goes back to IV before another SC product",
        )
    dose = sc_weekly_dose(
        product,
        plan.indication,
        switch.cycle_grams,
        plan.interval_days,
        switch.body_weight_kg,
        switch.label_version,
        switch.override,
    )
    schedule = sc_infusions(
        product, plan.indication, dose.weekly_raw_grams, switch.body_weight_kg, switch.frequency
    )
    _too_many_sites(schedule.sites)
    first, first_text = first_sc_date(
        switch.last_dose, _previous(plan), schedule.frequency, switch.two_weekly_start_days
    )
    frequency = schedule.frequency
    interval = 7 * frequency.every_weeks
    days = frequency.days() if frequency.per_week > 1 else ()
    gaps = [b - a for a, b in zip(days, (*days[1:], interval), strict=False)] or [interval]
    early, late = _windows(plan, min(gaps))
    new = _by_route(
        plan,
        Route.SC,
        product.key,
        schedule.infusion.dose_grams,
        first,
        switch.last_dose,
        interval_days=interval,
        infusion_days=days,
        infusion_sites=schedule.sites,
        window_days_early=early,
        window_days_late=late,
    )
    return Converted(
        new,
        dose.factor,
        dose.rationale[0],
        dose.weekly_raw_grams,
        schedule.weekly_grams,
        schedule.infusion,
        schedule.volume_ml,
        schedule.sites,
        schedule.site_max_ml,
        first,
        schedule,
        None,
        (*dose.rationale, *schedule.rationale, first_text),
    )


def _to_facilitated(plan: TherapyPlan, switch: Switch) -> Converted:
    product = switch.product
    if plan.route is not Route.IV:
        raise Refused("conversion_route", "facilitated SC starts from an IV plan")
    if switch.override is not None:
        raise Refused(
            "conversion_route",
            f"{product.brand} is 1:1 with its ramp-up: a factor override does not apply",
        )
    first, first_text = first_sc_date(switch.last_dose, PreviousTherapy.IV)
    ramp = hyqvia_ramp_up(
        product,
        plan.indication,
        switch.cycle_grams,
        plan.interval_days,
        first,
        switch.body_weight_kg,
        plan.rounding_rule,
        plan.rounding_band_percent,
    )
    sites = max(s.sites for s in ramp.steps)
    _too_many_sites(sites)
    factor = conversion_factor(product, plan.indication)
    gaps = [b.day - a.day for a, b in zip(ramp.steps, ramp.steps[1:], strict=False)]
    early, late = _windows(plan, min([*gaps, plan.interval_days]))
    full = ramp.full_dose
    new = _by_route(
        plan,
        Route.FACILITATED_SC,
        product.key,
        full.dose_grams,
        first,
        switch.last_dose,
        infusion_sites=sites,
        ramp_up=tuple(RampDose(s.day, s.vials.dose_grams) for s in ramp.steps),
        window_days_early=early,
        window_days_late=late,
    )
    weeks = Decimal(plan.interval_days) / 7
    last = ramp.steps[-1]
    return Converted(
        new,
        None if factor is None else factor.value,
        "" if factor is None else factor.text,
        switch.cycle_grams / weeks,
        full.dose_grams / weeks,
        full,
        last.volume_ml,
        last.sites,
        product.site_max_ml,
        first,
        None,
        ramp,
        (first_text, *ramp.rationale),
    )


def _to_iv(plan: TherapyPlan, switch: Switch) -> Converted:
    """Back to IV: the weekly grams by the SC route × the IV interval in weeks ÷ the SC
    product's factor (the conversion run backwards), rounded by the plan's rule to whole vials
    of the IV product; the first IV dose falls when the next SC dose would have."""
    if switch.iv_interval_days <= 0:
        raise Refused("iv_interval", "going back to IV needs the IV interval (interval_days)")
    source = switch.from_product
    factor_value: Decimal | None = None
    factor_text = ""
    if switch.override is not None or source is not None:
        found = (
            conversion_factor(source, plan.indication, switch.label_version, switch.override)
            if source is not None
            else conversion_factor(
                switch.product, plan.indication, switch.label_version, switch.override
            )
        )
        if found is not None:
            factor_value, factor_text = found.value, found.text
    if factor_value is None:
        brand = source.brand if source is not None else plan.product_id
        raise Refused(
            "no_conversion_factor",
            f"{brand} has no conversion factor for {plan.indication.value} "
            f"({switch.label_version} label): a clinician's factor with a reason is needed "
            "(docs/clinical-rules.md#sc-dose)",
        )
    per_interval = len(plan.infusion_days) or 1
    weekly = switch.cycle_grams * per_interval * 7 / plan.interval_days
    weeks = Decimal(switch.iv_interval_days) / 7
    raw = weekly * weeks / factor_value
    if not switch.product.vial_grams:
        raise Refused("vials_not_configured", f"{switch.product.brand} has no vial sizes")
    choice = round_to_vials(
        raw, switch.product.vial_grams, plan.rounding_rule, plan.rounding_band_percent
    )
    days = plan.infusion_days or (0,)
    position = (switch.last_dose - plan.start_date).days % plan.interval_days
    later = [x for x in days if x > position]
    gap = (later[0] if later else plan.interval_days + days[0]) - position
    first = switch.last_dose + dt.timedelta(days=gap)
    new = _by_route(
        plan,
        Route.IV,
        switch.product.key,
        choice.dose_grams,
        first,
        switch.last_dose,
        interval_days=switch.iv_interval_days,
        infusion_sites=1,
        window_days_early=min(plan.window_days_early, switch.iv_interval_days - 1),
        window_days_late=min(plan.window_days_late, switch.iv_interval_days - 1),
    )
    rationale = (
        f"{factor_text}, run backwards: {grams_text(weekly)} g a week × {grams_text(weeks)} weeks "
        f"÷ {factor_value} = {grams_text(raw)} g every {switch.iv_interval_days} days; "
        f"{choice.explanation} (docs/regimens.md, back to IV).",
        f"First IV dose on {first.isoformat()}, when the next SC dose would have been given "
        f"({gap} days after {switch.last_dose.isoformat()}).",
    )
    return Converted(
        new,
        factor_value,
        factor_text,
        weekly,
        choice.dose_grams / weeks,
        choice,
        choice.dose_grams * 100 / switch.product.concentration_percent,
        1,
        None,
        first,
        None,
        None,
        rationale,
    )


def first_doses(plan: TherapyPlan, days: int = 56) -> list[tuple[dt.date, Decimal]]:
    """A converted version's doses over its first ``days`` days, as planned (ramp-up steps,
    then the steady interval; several infusions an interval on their days)."""
    end = plan.start_date + dt.timedelta(days=days)
    doses: list[tuple[dt.date, Decimal]] = [
        (plan.start_date + dt.timedelta(days=d.day), d.grams) for d in plan.ramp_up
    ]
    if doses:
        day = doses[-1][0] + dt.timedelta(days=plan.interval_days)
        while day < end:
            doses.append((day, plan.maintenance_dose))
            day += dt.timedelta(days=plan.interval_days)
        return [d for d in doses if d[0] < end]
    offsets = plan.infusion_days or (0,)
    cycle = 0
    while True:
        base = plan.start_date + dt.timedelta(days=cycle * plan.interval_days)
        if base >= end:
            return doses
        doses += [
            (base + dt.timedelta(days=o), plan.maintenance_dose)
            for o in offsets
            if base + dt.timedelta(days=o) < end
        ]
        cycle += 1


def doses_after(
    plan: TherapyPlan, due: dt.date, ramp_step: int, last: dt.date
) -> list[tuple[dt.date, Decimal | None]]:
    """The doses a converted version plans after the one due on ``due`` (ramp step
    ``ramp_step``, 0 outside a ramp-up) up to ``last``: the remaining ramp steps with their
    grams, then the steady interval (None: the version's full dose); with several infusions an
    interval, the days of the pattern. For the inventory's forecast of unbooked doses."""
    doses: list[tuple[dt.date, Decimal | None]] = []
    day = due
    if ramp_step:
        base = plan.ramp_up[ramp_step - 1].day
        doses += [
            (due + dt.timedelta(days=d.day - base), d.grams) for d in plan.ramp_up[ramp_step:]
        ]
        day = doses[-1][0] if doses else due
    if len(plan.infusion_days) > 1:
        cycle = (day - plan.start_date).days // plan.interval_days
        while True:
            start = plan.start_date + dt.timedelta(days=cycle * plan.interval_days)
            if start > last:
                break
            doses += [
                (start + dt.timedelta(days=o), None)
                for o in plan.infusion_days
                if day < start + dt.timedelta(days=o) <= last
            ]
            cycle += 1
        return doses
    day += dt.timedelta(days=plan.interval_days)
    while day <= last:
        doses.append((day, None))
        day += dt.timedelta(days=plan.interval_days)
    return [d for d in doses if d[0] <= last]
