"""Reads and writes of scheduler rows, mapped to and from domain objects.

Functions take the caller's Session so a use case composes several of them in one
transaction. Unique-constraint races are turned into AlreadyExists here, at the one place
that knows which constraint means what.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, bindparam, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.crud import found
from services.common.errors import AlreadyExists, NotFound
from services.common.pagination import PageRequest
from services.common.reasons import ExistsReason
from services.common.scope import Scope, current_scope
from services.scheduler.domain.appointments import NurseShift, SiteCapacity
from services.scheduler.domain.habits import Habits
from services.scheduler.domain.patients import BodyMeasurement, Patient, SexAtBirth
from services.scheduler.domain.sites import Chair, OpeningHours, Site
from services.scheduler.store.models import (
    ChairRow,
    MeasurementRow,
    PatientRow,
    PlanRow,
    PlanVersionRow,
    SiteRow,
)

M = TypeVar("M")

# --- sites -------------------------------------------------------------------------------------


def site_from_row(row: SiteRow) -> Site:
    return Site(
        id=row.id,
        organisation_id=row.organisation_id,
        display_name=row.display_name,
        time_zone=row.time_zone,
        opening_hours=tuple(
            OpeningHours(int(day), dt.time.fromisoformat(start), dt.time.fromisoformat(end))
            for day, start, end in row.opening_hours
        ),
        closure_dates=tuple(dt.date.fromisoformat(d) for d in row.closure_dates),
        capacity=capacity_from_json(row.capacity or {}),
        schedule_objective=dict(row.schedule_objective or {}),
    )


def capacity_from_json(doc: dict[str, Any]) -> SiteCapacity:
    shifts = tuple(
        NurseShift(int(day), dt.time.fromisoformat(start), dt.time.fromisoformat(end), int(n))
        for day, start, end, n in doc.get("nurse_shifts", [])
    )
    plain = {k: v for k, v in doc.items() if k != "nurse_shifts"}
    return SiteCapacity(nurse_shifts=shifts, **plain)


def capacity_to_json(c: SiteCapacity) -> dict[str, Any]:
    return {
        "nurse_shifts": [
            [s.weekday, s.start.isoformat(), s.end.isoformat(), s.nurses] for s in c.nurse_shifts
        ],
        "nurse_ratio": c.nurse_ratio,
        "start_limit": c.start_limit,
        "turnover_minutes": c.turnover_minutes,
        "slot_minutes": c.slot_minutes,
        "hold_minutes": c.hold_minutes,
        "holiday_country": c.holiday_country,
        "holiday_subdivision": c.holiday_subdivision,
    }


def _site_values(site: Site) -> dict[str, Any]:
    return {
        "organisation_id": site.organisation_id,
        "display_name": site.display_name,
        "time_zone": site.time_zone,
        "opening_hours": [
            [h.weekday, h.open.isoformat(), h.close.isoformat()] for h in site.opening_hours
        ],
        "closure_dates": sorted(d.isoformat() for d in site.closure_dates),
        "capacity": capacity_to_json(site.capacity),
        "schedule_objective": dict(sorted(site.schedule_objective.items())),
    }


def insert_site(session: Session, site: Site, now: dt.datetime) -> SiteRow:
    row = SiteRow(id=site.id, created_at=now, updated_at=now, revision=1, **_site_values(site))
    session.add(row)
    session.flush()
    return row


def site_row(session: Session, site_id: str, *, for_update: bool = False) -> SiteRow:
    """The site, NOT_FOUND when it does not exist or is out of the caller's scope."""
    row = found(_get(session, SiteRow, site_id, for_update), "site", site_id)
    current_scope().check("site", site_id, row.organisation_id, row.id)
    return row


def check_site_scope(session: Session, site_id: str, kind: str, key: str) -> None:
    """NOT_FOUND for a ``kind`` row ``key`` (a chair, a plan, an appointment...) unless its
    site is in the caller's scope: rows below a site belong to the site's organisation."""
    scope = current_scope()
    if scope.unrestricted:
        return
    site = session.get(SiteRow, site_id)
    if site is None or not scope.sees(site.organisation_id, site.id):
        raise NotFound(kind, key)


def organisation_sites(scope: Scope) -> Any:
    """The ids of the scope's organisation's sites, as a subquery for ``site_id IN (...)``."""
    return select(SiteRow.id).where(SiteRow.organisation_id == scope.organisation_id)


def site_scope_clause(scope: Scope, site_column: Any) -> Any:
    """WHERE clause keeping rows whose site is in ``scope`` (true for services)."""
    if scope.unrestricted:
        return scope.where()
    return site_column.in_(organisation_sites(scope)) & scope.site_filter(site_column)


def update_site(session: Session, row: SiteRow, site: Site, now: dt.datetime) -> SiteRow:
    for key, value in _site_values(site).items():
        setattr(row, key, value)
    _bump(row, now)
    session.flush()
    return row


def list_sites(session: Session, organisation_id: str, page: PageRequest) -> list[SiteRow]:
    query = select(SiteRow).where(current_scope().where(SiteRow.organisation_id, SiteRow.id))
    if organisation_id:
        query = query.where(SiteRow.organisation_id == organisation_id)
    return _page(session, query, SiteRow.id, page)


# --- chairs ------------------------------------------------------------------------------------


def chair_from_row(row: ChairRow) -> Chair:
    return Chair(id=row.id, site_id=row.site_id, display_name=row.display_name, active=row.active)


def insert_chair(session: Session, chair: Chair, now: dt.datetime) -> ChairRow:
    row = ChairRow(
        id=chair.id,
        site_id=chair.site_id,
        display_name=chair.display_name,
        active=chair.active,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    _flush_unique(
        session,
        row,
        "chair",
        f"{chair.site_id}/{chair.display_name}",
        "a chair with this display_name already exists at the site",
        "DUPLICATE_CHAIR_NAME",
    )
    return row


def chair_row(session: Session, chair_id: str, *, for_update: bool = False) -> ChairRow:
    row = found(_get(session, ChairRow, chair_id, for_update), "chair", chair_id)
    check_site_scope(session, row.site_id, "chair", chair_id)
    return row


def update_chair(session: Session, row: ChairRow, chair: Chair, now: dt.datetime) -> ChairRow:
    row.display_name = chair.display_name
    row.active = chair.active
    _bump(row, now)
    _flush_unique(
        session,
        row,
        "chair",
        f"{chair.site_id}/{chair.display_name}",
        "a chair with this display_name already exists at the site",
        "DUPLICATE_CHAIR_NAME",
    )
    return row


def list_chairs(
    session: Session, site_id: str, active_only: bool, page: PageRequest
) -> list[ChairRow]:
    query = select(ChairRow).where(ChairRow.site_id == site_id)
    if active_only:
        query = query.where(ChairRow.active.is_(True))
    return _page(session, query, ChairRow.id, page)


# --- patients ----------------------------------------------------------------------------------


def patient_from_row(row: PatientRow) -> Patient:
    return Patient(
        id=row.id,
        organisation_id=row.organisation_id,
        mrn=row.mrn,
        given_name=row.given_name,
        family_name=row.family_name,
        birth_date=row.birth_date,
        sex_at_birth=SexAtBirth(row.sex_at_birth),
        notify_subscriber_id=row.notify_subscriber_id,
    )


def _patient_values(patient: Patient) -> dict[str, Any]:
    return {
        "organisation_id": patient.organisation_id,
        "mrn": patient.mrn,
        "given_name": patient.given_name,
        "family_name": patient.family_name,
        "birth_date": patient.birth_date,
        "sex_at_birth": patient.sex_at_birth.value,
        "notify_subscriber_id": patient.notify_subscriber_id,
    }


def _mrn_taken(session: Session, patient: Patient) -> None:
    clash = session.scalar(
        select(PatientRow.id).where(
            PatientRow.organisation_id == patient.organisation_id,
            PatientRow.mrn == patient.mrn,
            PatientRow.id != patient.id,
        )
    )
    if clash is not None:
        raise AlreadyExists(
            "patient",
            f"{patient.organisation_id}/{patient.mrn}",
            f"MRN {patient.mrn!r} is already used by patient {clash} in this organisation",
            reason="DUPLICATE_MRN",
        )


def insert_patient(session: Session, patient: Patient, now: dt.datetime) -> PatientRow:
    _mrn_taken(session, patient)
    row = PatientRow(
        id=patient.id, revision=1, created_at=now, updated_at=now, **_patient_values(patient)
    )
    _flush_unique(
        session,
        row,
        "patient",
        f"{patient.organisation_id}/{patient.mrn}",
        "the MRN is already used in this organisation",
        "DUPLICATE_MRN",
    )
    return row


def patient_row(session: Session, patient_id: str, *, for_update: bool = False) -> PatientRow:
    row = found(_get(session, PatientRow, patient_id, for_update), "patient", patient_id)
    # a patient belongs to the organisation, not to a site: every site of it may treat them
    current_scope().check("patient", patient_id, row.organisation_id)
    return row


def update_patient(
    session: Session, row: PatientRow, patient: Patient, now: dt.datetime
) -> PatientRow:
    _mrn_taken(session, patient)
    for key, value in _patient_values(patient).items():
        setattr(row, key, value)
    _bump(row, now)
    _flush_unique(
        session,
        row,
        "patient",
        f"{patient.organisation_id}/{patient.mrn}",
        "the MRN is already used in this organisation",
        "DUPLICATE_MRN",
    )
    return row


def list_patients(
    session: Session,
    organisation_id: str,
    mrn: str,
    page: PageRequest,
    ids: Sequence[str] = (),
) -> list[PatientRow]:
    query = select(PatientRow).where(current_scope().where(PatientRow.organisation_id))
    if organisation_id:
        query = query.where(PatientRow.organisation_id == organisation_id)
    if mrn:
        query = query.where(PatientRow.mrn == mrn)
    if ids:
        query = query.where(PatientRow.id.in_(ids))
    return _page(session, query, PatientRow.id, page)


# --- measurements ------------------------------------------------------------------------------


def measurement_from_row(row: MeasurementRow) -> BodyMeasurement:
    return BodyMeasurement(
        id=row.id,
        patient_id=row.patient_id,
        measured_on=row.measured_on,
        weight_kg=row.weight_kg,
        height_cm=row.height_cm,
        pregnant=row.pregnant,
    )


def insert_measurement(session: Session, m: BodyMeasurement, now: dt.datetime) -> MeasurementRow:
    row = MeasurementRow(
        id=m.id,
        patient_id=m.patient_id,
        measured_on=m.measured_on,
        weight_kg=m.weight_kg,
        height_cm=m.height_cm,
        pregnant=m.pregnant,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def latest_measurement(
    session: Session, patient_id: str, on_or_before: dt.date
) -> MeasurementRow | None:
    return session.scalar(
        select(MeasurementRow)
        .where(MeasurementRow.patient_id == patient_id, MeasurementRow.measured_on <= on_or_before)
        .order_by(MeasurementRow.measured_on.desc(), MeasurementRow.id.desc())
        .limit(1)
    )


def list_measurements(session: Session, patient_id: str, page: PageRequest) -> list[MeasurementRow]:
    query = select(MeasurementRow).where(MeasurementRow.patient_id == patient_id)
    key = tuple_(MeasurementRow.measured_on, MeasurementRow.id)
    if page.after:
        day, last_id = page.after
        query = query.where(key < (dt.date.fromisoformat(day), last_id))
    query = query.order_by(MeasurementRow.measured_on.desc(), MeasurementRow.id.desc())
    return list(session.scalars(query.limit(page.size + 1)))


# --- plans -------------------------------------------------------------------------------------


def insert_plan(
    session: Session,
    plan_id: str,
    patient_id: str,
    site_id: str,
    status: str,
    spec: dict[str, Any],
    reason: str,
    now: dt.datetime,
) -> PlanRow:
    row = PlanRow(
        id=plan_id,
        patient_id=patient_id,
        site_id=site_id,
        status=status,
        current_version=1,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.add(
        PlanVersionRow(plan_id=plan_id, version=1, spec=spec, reason=reason, created_at=now)
    )
    session.flush()
    return row


def add_plan_version(
    session: Session,
    row: PlanRow,
    site_id: str,
    status: str,
    spec: dict[str, Any],
    reason: str,
    now: dt.datetime,
) -> PlanVersionRow:
    version = PlanVersionRow(
        plan_id=row.id, version=row.current_version + 1, spec=spec, reason=reason, created_at=now
    )
    session.add(version)
    row.current_version = version.version
    row.site_id = site_id
    row.status = status
    _bump(row, now)
    session.flush()
    return version


def set_plan_usual(row: PlanRow, usual: Habits) -> None:
    row.usual_weekday = usual.weekday
    row.usual_start_minute = usual.start_minute
    row.usual_chair_id = usual.chair_id


def plan_row(session: Session, plan_id: str, *, for_update: bool = False) -> PlanRow:
    row = found(_get(session, PlanRow, plan_id, for_update), "therapy plan", plan_id)
    check_site_scope(session, row.site_id, "therapy plan", plan_id)
    return row


def plan_version(session: Session, plan_id: str, version: int) -> PlanVersionRow:
    row = session.get(PlanVersionRow, (plan_id, version))
    if row is None:
        raise NotFound("therapy plan version", f"{plan_id}@{version}")
    return row


def list_plans(
    session: Session, patient_id: str, site_id: str, status: str, page: PageRequest
) -> list[tuple[PlanRow, PlanVersionRow]]:
    query = select(PlanRow).where(site_scope_clause(current_scope(), PlanRow.site_id))
    if patient_id:
        query = query.where(PlanRow.patient_id == patient_id)
    if site_id:
        query = query.where(PlanRow.site_id == site_id)
    if status:
        query = query.where(PlanRow.status == status)
    rows = _page(session, query, PlanRow.id, page)
    return [(row, plan_version(session, row.id, row.current_version)) for row in rows]


def plans_with_versions(
    session: Session, site_id: str, status: str
) -> Sequence[tuple[PlanRow, PlanVersionRow]]:
    query = (
        select(PlanRow, PlanVersionRow)
        .join(
            PlanVersionRow,
            (PlanVersionRow.plan_id == PlanRow.id)
            & (PlanVersionRow.version == PlanRow.current_version),
        )
        .where(PlanRow.site_id == site_id, PlanRow.status == status)
    )
    return [(plan, version) for plan, version in session.execute(query)]


# --- helpers -----------------------------------------------------------------------------------


def _get(session: Session, model: type[M], key: str, for_update: bool) -> M | None:
    if not key:
        return None
    if for_update:
        return session.get(model, key, with_for_update=True)
    return session.get(model, key)


def _bump(row: Any, now: dt.datetime) -> None:
    row.revision += 1
    row.updated_at = now


def _flush_unique(
    session: Session, row: Any, kind: str, key: str, message: str, reason: ExistsReason
) -> None:
    """Flush; a unique-constraint race lost to a concurrent writer becomes ALREADY_EXISTS."""
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:
        raise AlreadyExists(kind, key, message, reason=reason) from error


def _page(session: Session, query: Select[Any], key_column: Any, page: PageRequest) -> list[Any]:
    if page.after:
        query = query.where(key_column > page.after[0])
    return list(session.scalars(query.order_by(key_column).limit(page.size + 1)))


def _dose_key_statement(specific_version: bool) -> Select[Any]:
    latest = (
        select(MeasurementRow.id)
        .where(
            MeasurementRow.patient_id == PlanRow.patient_id,
            MeasurementRow.measured_on <= bindparam("on"),
        )
        .order_by(MeasurementRow.measured_on.desc(), MeasurementRow.id.desc())
        .limit(1)
        .correlate(PlanRow)
        .scalar_subquery()
    )
    wanted = bindparam("version") if specific_version else PlanRow.current_version
    return (
        select(
            PlanVersionRow.version,
            PatientRow.revision,
            latest,
            SiteRow.organisation_id,
            PlanRow.site_id,
        )
        .select_from(PlanRow)
        .join(
            PlanVersionRow,
            (PlanVersionRow.plan_id == PlanRow.id) & (PlanVersionRow.version == wanted),
        )
        .join(PatientRow, PatientRow.id == PlanRow.patient_id)
        .join(SiteRow, SiteRow.id == PlanRow.site_id)
        .where(PlanRow.id == bindparam("plan_id"))
    )


# Built once: this runs on every CalculateDose, and building the statement cost more than
# executing it.
_DOSE_KEY = {False: _dose_key_statement(False), True: _dose_key_statement(True)}


def dose_input_key(
    connection: Connection, plan_id: str, version: int, on: dt.date
) -> tuple[int, int, str | None] | None:
    """(plan version, patient revision, id of the measurement that applies on ``on``) in one
    round trip: everything a dose depends on that lives in this database, by identity, so a
    cached calculation can be reused without loading and parsing the rows. None when the plan
    or version does not exist, or the plan is out of the caller's scope (the caller then takes
    the full path for the precise error: NOT_FOUND for both)."""
    params: dict[str, Any] = {"plan_id": plan_id, "on": on}
    if version:
        params["version"] = version
    row = connection.execute(_DOSE_KEY[bool(version)], params).first()
    if row is None:
        return None
    if not current_scope().sees(row[3], row[4]):
        return None
    return (row[0], row[1], row[2])
