"""The due inputs stored with a plan version (services/scheduler/store/due_inputs.py) give the
due rule exactly what the whole plan gives it (usecases/records.py's ``due_spec`` and
``plan_history``), for every kind of plan the due rule tells apart; and equal inputs give equal
strings, which the due scan relies on to evaluate such plans once."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from services.scheduler.domain.plans import Induction, RampDose, Route, TherapyPlan
from services.scheduler.store import due_inputs
from services.scheduler.store.codec import plan_to_spec
from services.scheduler.usecases.records import due_spec, plan_history
from tests.unit.builders import plan

BASE = plan(id="plan-1", patient_id="patient-1", version=3)
VARIANTS = {
    "plain": BASE,
    "induction": dataclasses.replace(BASE, induction=Induction(Decimal("2"), 5)),
    "given before": dataclasses.replace(
        BASE, last_infusion_date=dt.date(2026, 11, 10), keep_cadence=True
    ),
    "windows": dataclasses.replace(BASE, window_days_early=2, window_days_late=6),
    "converted": dataclasses.replace(
        BASE,
        route=Route.SC,
        interval_days=7,
        ramp_up=(RampDose(0, Decimal("10.5")), RampDose(3, Decimal("12"))),
        infusion_days=(0, 2, 4),
        regimen_start_date=dt.date(2026, 12, 3),
    ),
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=list(VARIANTS))
def test_the_stored_inputs_give_what_the_whole_plan_gives(variant: TherapyPlan) -> None:
    spec, history = due_inputs.decode(due_inputs.encode(plan_to_spec(variant)))
    named = dataclasses.replace(
        spec, plan_id=variant.id, plan_version=variant.version, patient_id=variant.patient_id
    )
    assert named == due_spec(variant)
    assert list(history) == list(plan_history(variant))


def test_equal_inputs_equal_strings_whatever_else_differs() -> None:
    other = dataclasses.replace(
        BASE, id="plan-2", patient_id="patient-2", maintenance_dose=Decimal(2), version=1
    )
    assert due_inputs.encode(plan_to_spec(BASE)) == due_inputs.encode(plan_to_spec(other))
    later = dataclasses.replace(BASE, start_date=dt.date(2026, 12, 2))
    assert due_inputs.encode(plan_to_spec(BASE)) != due_inputs.encode(plan_to_spec(later))


def test_a_spec_written_before_the_regimen_fields_reads_as_none_of_them() -> None:
    spec = plan_to_spec(BASE)
    for field in ("ramp_up", "infusion_days", "regimen_start_date"):
        del spec[field]
    decoded, _ = due_inputs.decode(due_inputs.encode(spec))
    assert (decoded.ramp, decoded.infusion_days, decoded.history_from) == ((), (), None)
