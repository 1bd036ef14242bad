"""Domain objects for unit tests: a typical MMN plan (1 g/kg every 4 weeks,
docs/clinical-rules.md#regimen)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from services.scheduler.domain.plans import DoseBasis, Indication, Route, TherapyPlan


def plan(**overrides: object) -> TherapyPlan:
    fields: dict[str, object] = dict(
        id="plan",
        patient_id="pt",
        site_id="s",
        indication=Indication.MMN,
        route=Route.IV,
        product_id="gammagard",
        dose_basis=DoseBasis.G_PER_KG,
        maintenance_dose=Decimal(1),
        interval_days=28,
        start_date=dt.date(2026, 12, 1),
    )
    fields.update(overrides)
    return TherapyPlan(**fields)  # type: ignore[arg-type]
