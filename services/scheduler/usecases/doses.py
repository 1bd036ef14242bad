"""The CalculateDose use case: load the plan version, the patient, the measurement that applies
on the dosing date and the product (from inventory), then run the domain calculation.

A calculation is a pure function of those inputs, and the same dose is asked for again and
again (the due list, slot search, the chair board, the pharmacy's worklist). Results are kept
in a bounded memo keyed by the inputs' identities — plan id and version, patient revision,
measurement id, the cached product object, date and course — which one small query reads;
any change to an input changes the key, so a stale result is never returned.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.scheduler.domain.dosing import DoseResult, ProductSpec, calculate_dose
from services.scheduler.domain.due import CourseKind
from services.scheduler.domain.patients import BodyMeasurement, Patient
from services.scheduler.domain.plans import TherapyPlan
from services.scheduler.store import repository as repo
from services.scheduler.store.codec import plan_from_spec
from services.scheduler.usecases.records import Records

MEMO_SIZE = 4096


class Doses:
    def __init__(
        self,
        records: Records,
        product_spec: Callable[[str], ProductSpec | None],
        memo_size: int = MEMO_SIZE,
    ) -> None:
        self.records = records
        self._product_spec = product_spec
        self._memo: OrderedDict[Hashable, DoseResult] = OrderedDict()
        self._memo_size = memo_size
        self._plan_products: dict[tuple[str, int], str] = {}  # plan versions are immutable
        self._lock = threading.Lock()

    def calculate(
        self, plan_id: str, version: int, dosing_date: dt.date, course: CourseKind | None
    ) -> DoseResult:
        with self.records.db.single_read() as connection:
            identity = repo.dose_input_key(connection, plan_id, version, dosing_date)
        key: Hashable | None = None
        if identity is not None and identity[2] is not None:
            product_id = self._product_of(plan_id, identity[0])
            product = self._product_spec(product_id) if product_id else None
            if product is not None:
                # id(product) is stable while the product cache holds that object, and it
                # changes when inventory's answer is refreshed.
                key = (plan_id, *identity, product.id, id(product), dosing_date, course)
                with self._lock:
                    hit = self._memo.get(key)
                    if hit is not None:
                        self._memo.move_to_end(key)
                        return hit
        result = self._calculate(plan_id, version, dosing_date, course)
        if key is not None:
            with self._lock:
                self._memo[key] = result
                if len(self._memo) > self._memo_size:
                    self._memo.popitem(last=False)
        return result

    def calculate_loaded(
        self,
        plan: TherapyPlan,
        patient: Patient,
        patient_revision: int,
        measurements: Sequence[BodyMeasurement],
        complete: bool,
        dosing_date: dt.date,
        course: CourseKind | None,
    ) -> DoseResult:
        """``calculate`` over inputs the caller has read already (a booking's joined read):
        the patient's latest measurements newest first, ``complete`` when they are all the
        patient has. Same memo and key as ``calculate``; the full path when the measurement
        that applies on ``dosing_date`` is older than those given."""
        measurement = next((m for m in measurements if m.measured_on <= dosing_date), None)
        if measurement is None and not complete:
            return self.calculate(plan.id, plan.version, dosing_date, course)
        if measurement is None:
            raise _no_measurement(plan.patient_id, dosing_date)
        product = self._product_spec(plan.product_id)
        if product is None:
            raise _no_product(plan.product_id)
        key = (
            plan.id,
            plan.version,
            patient_revision,
            measurement.id,
            product.id,
            id(product),
            dosing_date,
            course,
        )
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                return hit
        if course is None:
            course = CourseKind.INDUCTION if plan.induction else CourseKind.MAINTENANCE
        result = calculate_dose(plan, patient, measurement, product, dosing_date, course)
        with self._lock:
            self._memo[key] = result
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return result

    def _product_of(self, plan_id: str, version: int) -> str:
        with self._lock:
            known = self._plan_products.get((plan_id, version))
        if known is not None:
            return known
        with self.records.db.read() as session:
            product_id = str(repo.plan_version(session, plan_id, version).spec["product_id"])
        with self._lock:
            if len(self._plan_products) >= 8 * self._memo_size:
                self._plan_products.clear()
            self._plan_products[(plan_id, version)] = product_id
        return product_id

    def _calculate(
        self, plan_id: str, version: int, dosing_date: dt.date, course: CourseKind | None
    ) -> DoseResult:
        with self.records.db.read() as session:
            row = repo.plan_row(session, plan_id)
            stored = repo.plan_version(session, plan_id, version or row.current_version)
            plan = plan_from_spec(plan_id, stored.version, stored.spec)
            patient = repo.patient_from_row(repo.patient_row(session, plan.patient_id))
            measured = repo.latest_measurement(session, plan.patient_id, dosing_date)
            measurement = None if measured is None else repo.measurement_from_row(measured)
        if measurement is None:
            raise _no_measurement(plan.patient_id, dosing_date)
        product = self._product_spec(plan.product_id)
        if product is None:
            raise _no_product(plan.product_id)
        if course is None:
            # Until administrations are recorded, an induction plan starts with its course.
            course = CourseKind.INDUCTION if plan.induction else CourseKind.MAINTENANCE
        return calculate_dose(plan, patient, measurement, product, dosing_date, course)


def _no_measurement(patient_id: str, dosing_date: dt.date) -> FailedPrecondition:
    return FailedPrecondition(
        [
            PreconditionViolation(
                "MEASUREMENT_ON_OR_BEFORE_DOSING_DATE",
                f"patients/{patient_id}",
                f"no body measurement on or before {dosing_date.isoformat()}: "
                "record the patient's weight and height first",
            )
        ]
    )


def _no_product(product_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        [
            PreconditionViolation(
                "PRODUCT_EXISTS",
                f"products/{product_id}",
                "the plan's product is not in the inventory catalogue",
            )
        ]
    )
