"""The CalculateDose use case: load the plan version, the patient, the measurement that applies
on the dosing date and the product (from inventory), then run the domain calculation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.scheduler.domain.dosing import DoseResult, ProductSpec, calculate_dose
from services.scheduler.domain.due import CourseKind
from services.scheduler.store import repository as repo
from services.scheduler.store.codec import plan_from_spec
from services.scheduler.usecases import SchedulerUseCases


class DoseService:
    def __init__(
        self, cases: SchedulerUseCases, product_spec: Callable[[str], ProductSpec | None]
    ) -> None:
        self.cases = cases
        self._product_spec = product_spec

    def calculate(
        self, plan_id: str, version: int, dosing_date: dt.date, course: CourseKind | None
    ) -> DoseResult:
        with self.cases.db.read() as session:
            row = repo.plan_row(session, plan_id)
            stored = repo.plan_version(session, plan_id, version or row.current_version)
            plan = plan_from_spec(plan_id, stored.version, stored.spec)
            patient = repo.patient_from_row(repo.patient_row(session, plan.patient_id))
            measured = repo.latest_measurement(session, plan.patient_id, dosing_date)
            measurement = None if measured is None else repo.measurement_from_row(measured)
        if measurement is None:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "MEASUREMENT_ON_OR_BEFORE_DOSING_DATE",
                        f"patients/{plan.patient_id}",
                        f"no body measurement on or before {dosing_date.isoformat()}: "
                        "record the patient's weight and height first",
                    )
                ]
            )
        product = self._product_spec(plan.product_id)
        if product is None:
            raise FailedPrecondition(
                [
                    PreconditionViolation(
                        "PRODUCT_EXISTS",
                        f"products/{plan.product_id}",
                        "the plan's product is not in the inventory catalogue",
                    )
                ]
            )
        if course is None:
            # Until administrations are recorded, an induction plan starts with its course.
            course = CourseKind.INDUCTION if plan.induction else CourseKind.MAINTENANCE
        return calculate_dose(plan, patient, measurement, product, dosing_date, course)
