"""Validation rules of sites and plans: every bad field is reported, each under its own path."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from services.scheduler.domain.plans import (
    Induction,
    validate_plan,
)
from services.scheduler.domain.sites import OpeningHours, Site, validate_site
from tests.unit.builders import plan

T = dt.time


def site(**kw: object) -> Site:
    base: dict[str, object] = dict(
        id="s", organisation_id="org", display_name="Day unit", time_zone="Europe/London"
    )
    base.update(kw)
    return Site(**base)  # type: ignore[arg-type]


def fields(violations: object) -> list[str]:
    return [v.field for v in violations.items]  # type: ignore[attr-defined]


def test_valid_site_has_no_violations() -> None:
    hours = (OpeningHours(1, T(8), T(12)), OpeningHours(1, T(13), T(18)))
    assert not validate_site(site(opening_hours=hours))


def test_unknown_time_zone_and_overlapping_hours_are_both_reported() -> None:
    hours = (OpeningHours(2, T(8), T(12)), OpeningHours(2, T(11, 30), T(17)))
    result = validate_site(site(time_zone="Mars/Olympus", opening_hours=hours))
    assert fields(result) == ["site.time_zone", "site.opening_hours[1]"]


def test_closing_before_opening_is_refused() -> None:
    result = validate_site(site(opening_hours=(OpeningHours(3, T(17), T(9)),)))
    assert fields(result) == ["site.opening_hours[0].close"]


def test_typical_mmn_plan_is_valid() -> None:
    # EFNS/PNS 2010: 1 g/kg every 2–4 weeks (docs/clinical-rules.md#regimen)
    assert not validate_plan(plan())


def test_dose_outside_band_and_interval_under_one_day_are_both_reported() -> None:
    result = validate_plan(plan(maintenance_dose=Decimal("3"), interval_days=0))
    assert fields(result) == ["therapy_plan.maintenance_dose", "therapy_plan.interval_days"]


def test_override_with_reason_allows_a_dose_outside_the_band() -> None:
    high = plan(
        maintenance_dose=Decimal("2.2"),
        override_outside_bands=True,
        override_reason="neurologist: relapse on 2 g/kg",
    )
    assert not validate_plan(high)
    no_reason = plan(maintenance_dose=Decimal("2.2"), override_outside_bands=True)
    assert fields(validate_plan(no_reason)) == ["therapy_plan.dose_override.reason"]


def test_induction_over_one_day_above_2_g_per_kg_is_refused() -> None:
    # 2.5 g/kg in 1 day > 2.0 g/kg on one day (docs/clinical-rules.md#validation-bands)
    result = validate_plan(plan(induction=Induction(Decimal("2.5"), 1)))
    assert fields(result) == ["therapy_plan.induction.days"]
    # 2 g/kg over 5 days = 0.4 g/kg a day: fine
    assert not validate_plan(plan(induction=Induction(Decimal("2"), 5)))
