"""The clinic's records: sites, chairs, patients, measurements and therapy plans, and the due
list they imply. Domain rules applied to stored state, one transaction each.

api/ translates protobuf to the domain objects these take; the store maps them to rows.
Mutating use cases take the caller's Session so the idempotency record commits with them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.crud import checked_change
from services.common.db import Database
from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.due import (
    Administration,
    CourseKind,
    DueItem,
    DueSpec,
    due_infusions,
)
from services.scheduler.domain.patients import (
    BodyMeasurement,
    Patient,
    validate_measurement,
    validate_patient,
)
from services.scheduler.domain.plans import PlanStatus, TherapyPlan, validate_plan
from services.scheduler.domain.sites import Chair, Site, validate_chair, validate_site
from services.scheduler.store import appointments, home
from services.scheduler.store import repository as repo
from services.scheduler.store.codec import plan_of, plan_to_spec
from services.scheduler.store.models import ChairRow, PatientRow, PlanRow, SiteRow

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Stored(Generic[T]):
    """A domain object with its concurrency and audit metadata."""

    value: T
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime


def _stored(value: T, row: SiteRow | ChairRow | PatientRow | PlanRow) -> Stored[T]:
    return Stored(value, row.revision, row.created_at, row.updated_at)


class Records:
    def __init__(self, db: Database, clock: Clock, product_exists: Callable[[str], bool]) -> None:
        self.db = db
        self.clock = clock
        self._product_exists = product_exists

    # --- sites ---------------------------------------------------------------------------------

    def create_site(self, session: Session, site: Site) -> Stored[Site]:
        scope = current_scope()
        scope.require_all_sites("creating a site")
        organisation = scope.organisation_for(site.organisation_id, "site.organisation_id")
        site = dataclasses.replace(site, id=new_id(), organisation_id=organisation)
        validate_site(site).raise_if_any()
        row = repo.insert_site(session, site, self.clock.now())
        return _stored(repo.site_from_row(row), row)

    def get_site(self, site_id: str) -> Stored[Site]:
        with self.db.read() as session:
            row = repo.site_row(session, site_id)
            return _stored(repo.site_from_row(row), row)

    def list_sites(self, organisation_id: str, page: PageRequest) -> list[Stored[Site]]:
        with self.db.read() as session:
            rows = repo.list_sites(session, organisation_id, page)
            return [_stored(repo.site_from_row(r), r) for r in rows]

    def update_site(
        self, session: Session, site_id: str, etag: str, change: Callable[[Site], Site]
    ) -> Stored[Site]:
        row = repo.site_row(session, site_id, for_update=True)
        current = repo.site_from_row(row)
        changed = checked_change(
            etag, row.revision, current, change, field="site.etag", resource=f"site {site_id}"
        )
        updated = dataclasses.replace(changed, id=site_id)
        if updated.organisation_id != current.organisation_id:
            raise InvalidArgument(
                [FieldViolation("site.organisation_id", "cannot change after creation")]
            )
        validate_site(updated).raise_if_any()
        row = repo.update_site(session, row, updated, self.clock.now())
        return _stored(repo.site_from_row(row), row)

    # --- chairs --------------------------------------------------------------------------------

    def create_chair(self, session: Session, chair: Chair) -> Stored[Chair]:
        chair = dataclasses.replace(chair, id=new_id())
        validate_chair(chair).raise_if_any()
        repo.site_row(session, chair.site_id)
        row = repo.insert_chair(session, chair, self.clock.now())
        return _stored(repo.chair_from_row(row), row)

    def get_chair(self, chair_id: str) -> Stored[Chair]:
        with self.db.read() as session:
            row = repo.chair_row(session, chair_id)
            return _stored(repo.chair_from_row(row), row)

    def list_chairs(
        self, site_id: str, active_only: bool, page: PageRequest
    ) -> list[Stored[Chair]]:
        with self.db.read() as session:
            repo.site_row(session, site_id)
            rows = repo.list_chairs(session, site_id, active_only, page)
            return [_stored(repo.chair_from_row(r), r) for r in rows]

    def update_chair(
        self, session: Session, chair_id: str, etag: str, change: Callable[[Chair], Chair]
    ) -> Stored[Chair]:
        row = repo.chair_row(session, chair_id, for_update=True)
        current = repo.chair_from_row(row)
        changed = checked_change(
            etag, row.revision, current, change, field="chair.etag", resource=f"chair {chair_id}"
        )
        updated = dataclasses.replace(changed, id=chair_id)
        if updated.site_id != current.site_id:
            raise InvalidArgument([FieldViolation("chair.site_id", "cannot change")])
        validate_chair(updated).raise_if_any()
        row = repo.update_chair(session, row, updated, self.clock.now())
        return _stored(repo.chair_from_row(row), row)

    # --- patients ------------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return self.clock.now().date()

    def create_patient(self, session: Session, patient: Patient) -> Stored[Patient]:
        organisation = current_scope().organisation_for(
            patient.organisation_id, "patient.organisation_id"
        )
        patient = dataclasses.replace(patient, id=new_id(), organisation_id=organisation)
        validate_patient(patient, self._today() + dt.timedelta(days=1)).raise_if_any()
        row = repo.insert_patient(session, patient, self.clock.now())
        return _stored(repo.patient_from_row(row), row)

    def get_patient(self, patient_id: str) -> Stored[Patient]:
        with self.db.read() as session:
            row = repo.patient_row(session, patient_id)
            return _stored(repo.patient_from_row(row), row)

    def list_patients(
        self, organisation_id: str, mrn: str, page: PageRequest, ids: Sequence[str] = ()
    ) -> list[Stored[Patient]]:
        with self.db.read() as session:
            rows = repo.list_patients(session, organisation_id, mrn, page, ids)
            return [_stored(repo.patient_from_row(r), r) for r in rows]

    def update_patient(
        self, session: Session, patient_id: str, etag: str, change: Callable[[Patient], Patient]
    ) -> Stored[Patient]:
        row = repo.patient_row(session, patient_id, for_update=True)
        current = repo.patient_from_row(row)
        changed = checked_change(
            etag,
            row.revision,
            current,
            change,
            field="patient.etag",
            resource=f"patient {patient_id}",
        )
        updated = dataclasses.replace(changed, id=patient_id)
        if updated.organisation_id != current.organisation_id:
            raise InvalidArgument(
                [FieldViolation("patient.organisation_id", "cannot change after creation")]
            )
        validate_patient(updated, self._today() + dt.timedelta(days=1)).raise_if_any()
        row = repo.update_patient(session, row, updated, self.clock.now())
        return _stored(repo.patient_from_row(row), row)

    def record_measurement(
        self, session: Session, measurement: BodyMeasurement
    ) -> tuple[BodyMeasurement, dt.datetime]:
        measurement = dataclasses.replace(measurement, id=new_id())
        patient = repo.patient_row(session, measurement.patient_id)
        # One day of slack: a clinic west of UTC records "today" while UTC is already tomorrow.
        validate_measurement(
            measurement, patient.birth_date, self._today() + dt.timedelta(days=1)
        ).raise_if_any()
        now = self.clock.now()
        row = repo.insert_measurement(session, measurement, now)
        return repo.measurement_from_row(row), row.created_at

    def list_measurements(
        self, patient_id: str, page: PageRequest
    ) -> list[tuple[BodyMeasurement, dt.datetime]]:
        with self.db.read() as session:
            repo.patient_row(session, patient_id)
            rows = repo.list_measurements(session, patient_id, page)
            return [(repo.measurement_from_row(r), r.created_at) for r in rows]

    # --- therapy plans -------------------------------------------------------------------------

    def _check_plan_references(self, session: Session, plan: TherapyPlan) -> None:
        problems = []
        if plan.patient_id:
            try:
                repo.patient_row(session, plan.patient_id)
            except NotFound:
                problems.append(
                    PreconditionViolation(
                        "PATIENT_EXISTS",
                        f"patients/{plan.patient_id}",
                        "the patient does not exist",
                    )
                )
        if plan.site_id:
            try:
                repo.site_row(session, plan.site_id)
            except NotFound:
                problems.append(
                    PreconditionViolation(
                        "SITE_EXISTS", f"sites/{plan.site_id}", "the site does not exist"
                    )
                )
        if plan.usual.chair_id and plan.site_id:
            chair = session.get(ChairRow, plan.usual.chair_id)
            if chair is None or chair.site_id != plan.site_id:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "therapy_plan.usual_chair_id", "is not a chair of the plan's site"
                        )
                    ]
                )
        if plan.product_id and not self._product_exists(plan.product_id):
            problems.append(
                PreconditionViolation(
                    "PRODUCT_EXISTS",
                    f"products/{plan.product_id}",
                    "the inventory service has no such active product",
                )
            )
        if problems:
            raise FailedPrecondition(problems)

    def create_plan(self, session: Session, plan: TherapyPlan, reason: str) -> Stored[TherapyPlan]:
        plan = dataclasses.replace(plan, id=new_id(), version=1)
        validate_plan(plan).raise_if_any()
        self._check_plan_references(session, plan)
        row = repo.insert_plan(
            session,
            plan.id,
            plan.patient_id,
            plan.site_id,
            plan.status.value,
            plan_to_spec(plan),
            reason,
            self.clock.now(),
        )
        repo.set_plan_usual(row, plan.usual)
        return _stored(plan, row)

    def get_plan(self, plan_id: str, version: int = 0) -> Stored[TherapyPlan]:
        with self.db.read() as session:
            return self._load_plan(session, plan_id, version)

    def _load_plan(self, session: Session, plan_id: str, version: int) -> Stored[TherapyPlan]:
        row = repo.plan_row(session, plan_id)
        stored = repo.plan_version(session, plan_id, version or row.current_version)
        return _stored(plan_of(row, stored), row)

    def list_plans(
        self, patient_id: str, site_id: str, status: PlanStatus | None, page: PageRequest
    ) -> list[Stored[TherapyPlan]]:
        with self.db.read() as session:
            pairs = repo.list_plans(
                session, patient_id, site_id, status.value if status else "", page
            )
            return [_stored(plan_of(row, version), row) for row, version in pairs]

    def update_plan(
        self,
        session: Session,
        plan_id: str,
        etag: str,
        change: Callable[[TherapyPlan], TherapyPlan],
        reason: str,
    ) -> Stored[TherapyPlan]:
        row = repo.plan_row(session, plan_id, for_update=True)
        current = plan_of(row, repo.plan_version(session, plan_id, row.current_version))
        changed = checked_change(
            etag,
            row.revision,
            current,
            change,
            field="therapy_plan.etag",
            resource=f"plan {plan_id}",
        )
        updated = dataclasses.replace(changed, id=plan_id, version=row.current_version + 1)
        if updated.patient_id != current.patient_id:
            raise InvalidArgument(
                [FieldViolation("therapy_plan.patient_id", "cannot change: create a new plan")]
            )
        validate_plan(updated).raise_if_any()
        self._check_plan_references(session, updated)
        repo.add_plan_version(
            session,
            row,
            updated.site_id,
            updated.status.value,
            plan_to_spec(updated),
            reason,
            self.clock.now(),
        )
        repo.set_plan_usual(row, updated.usual)
        return _stored(updated, row)

    # --- due list ------------------------------------------------------------------------------

    def due_list(self, site_id: str, horizon_days: int) -> tuple[dt.date, list[DueItem]]:
        """Every active plan's next due infusion(s) up to the horizon, by due date."""
        with self.db.read() as session:
            site = repo.site_from_row(repo.site_row(session, site_id))
            today = site.local_today(self.clock.now())
            pairs = repo.plans_with_versions(session, site_id, PlanStatus.ACTIVE.value)
            plans = [plan_of(row, v) for row, v in pairs]
            items = self.due_items(session, plans, today)
        until = today + dt.timedelta(days=horizon_days)
        items = [i for i in items if i.due_date <= until]
        items.sort(key=lambda i: (i.due_date, i.plan_id, i.course_day))
        return today, items

    def due_items(
        self, session: Session, plans: Sequence[TherapyPlan], today: dt.date
    ) -> list[DueItem]:
        """Each plan's next due item(s): fulfilled appointments are its history, and an item
        already covered by an active appointment names it."""
        rows = appointments.for_plans(session, [p.id for p in plans], self.clock.now())
        home_doses = home.given_at_home(session, [p.id for p in plans])
        return due_items_from(plans, rows, today, home_doses)

    def load_plan(self, session: Session, plan_id: str) -> TherapyPlan:
        return self._load_plan(session, plan_id, 0).value


def due_items_from(
    plans: Sequence[TherapyPlan],
    rows: Sequence[Any],
    today: dt.date,
    home_doses: Mapping[str, Sequence[Administration]] | None = None,
) -> list[DueItem]:
    """Records.due_items over appointments already read (rows with id, plan_id, status,
    local_date, course, course_day and due_date: the plans' fulfilled and active ones) and
    the doses given at home (a home plan's history; a booked plan has none)."""
    given: dict[str, list[Administration]] = {}
    booked: dict[tuple[str, str, int], str] = {}
    for row in rows:
        if row.status == AppointmentStatus.FULFILLED.value:
            given.setdefault(row.plan_id, []).append(
                Administration(
                    row.local_date, CourseKind(row.course), row.due_date, row.course_day or 0
                )
            )
        else:
            booked[(row.plan_id, row.course, row.course_day)] = row.id
    for plan_id, doses in (home_doses or {}).items():
        given.setdefault(plan_id, []).extend(doses)
    items: list[DueItem] = []
    for plan in plans:
        history = [*plan_history(plan), *given.get(plan.id, [])]
        for item in due_infusions(due_spec(plan), history, today):
            key = (plan.id, item.course.value, item.course_day)
            items.append(dataclasses.replace(item, booked_appointment_id=booked.get(key, "")))
    return items


def due_spec(plan: TherapyPlan) -> DueSpec:
    return DueSpec(
        plan_id=plan.id,
        plan_version=plan.version,
        patient_id=plan.patient_id,
        product_id=plan.product_id,
        start_date=plan.start_date,
        interval_days=plan.interval_days,
        window_days_early=plan.window_days_early,
        window_days_late=plan.window_days_late,
        induction_days=plan.induction.days if plan.induction else 0,
        keep_cadence=plan.keep_cadence,
        ramp=tuple((d.day, d.grams) for d in plan.ramp_up),
        infusion_days=plan.infusion_days,
        history_from=plan.regimen_start_date,
    )


def plan_history(plan: TherapyPlan) -> Sequence[Administration]:
    """The dose given before the plan was entered, if any (fulfilled appointments add the
    rest: see due_items)."""
    if plan.last_infusion_date is None:
        return []
    return [Administration(plan.last_infusion_date, CourseKind.MAINTENANCE)]
