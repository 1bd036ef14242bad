"""Regimen conversion, authorisations and payer caps (docs/regimens.md): ConvertRegimen makes a
plan's next version on another route from the adopted rules (domain/regimens/switch.py);
SetPlanAuthorisation, SetPayerCaps and GetPlanCoverage keep a plan's coverage; bookings and
conversions are checked against it (:func:`check_plan_allows_booking`, called once by the booking
use case), and the due list shows its state.

A rule's refusal (domain/regimens/refusals.py) becomes a FAILED_PRECONDITION whose rule names
it (:data:`RULES`), its text the figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.convert import decimal_str
from services.common.db import Database
from services.common.errors import (
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
    Violations,
)
from services.common.etag import check_etag
from services.common.ids import new_id
from services.common.reasons import SchedulerRule
from services.scheduler.domain.appointments import AppointmentStatus
from services.scheduler.domain.due import CourseKind, DueItem
from services.scheduler.domain.plans import PlanStatus, Route, TherapyPlan, validate_plan
from services.scheduler.domain.regimens.authorisations import AuthorisationCheck
from services.scheduler.domain.regimens.coverage import (
    PlanAuthorisation,
    PlanCaps,
    authorisation_state,
    check_booking,
    check_regimen,
    validate_authorisation,
    validate_caps,
)
from services.scheduler.domain.regimens.refusals import Refused
from services.scheduler.domain.regimens.sc_conversion import (
    FIRST_SC_DAYS,
    WEEKLY,
    FactorOverride,
    Frequency,
)
from services.scheduler.domain.regimens.sc_products import CURRENT_LABEL, ScProduct
from services.scheduler.domain.regimens.switch import Converted, Switch, convert, first_doses
from services.scheduler.store import appointments
from services.scheduler.store import coverage as store
from services.scheduler.store import repository as repo
from services.scheduler.store.codec import plan_of, plan_to_spec
from services.scheduler.store.events import Event, write_events
from services.scheduler.store.models import (
    AppointmentRow,
    HomeInfusionRow,
    PayerCapsRow,
    PlanAuthorisationRow,
    PlanRow,
    outbox,
)
from services.scheduler.usecases.doses import Doses
from services.scheduler.usecases.records import Records, Stored

# a rule's refusal code → the FAILED_PRECONDITION rule that names it
RULES: dict[str, SchedulerRule] = {
    "no_conversion_factor": "CONVERSION_FACTOR_KNOWN",
    "no_sc_schedule_fits": "SC_SCHEDULE_FITS",
    "vials_not_configured": "SC_PRODUCT_CONFIGURED",
    "site_volume_not_configured": "SC_PRODUCT_CONFIGURED",
    "no_ramp_for_interval": "RAMP_UP_KNOWN",
    "same_route": "CONVERSION_ROUTE",
    "conversion_route": "CONVERSION_ROUTE",
    "no_cycle_grams": "CYCLE_GRAMS_KNOWN",
    "iv_interval": "CONVERSION_ROUTE",
    "no_authorisation": "AUTHORISATION_COVERS",
    "authorised_quantity": "AUTHORISED_QUANTITY",
    "payer_cap_exceeded": "PAYER_CAP",
}


def refusal(refused: Refused, subject: str) -> FailedPrecondition:
    return FailedPrecondition(
        [PreconditionViolation(RULES[refused.code], subject, f"{refused.code}: {refused.text}")]
    )


def _failed(rule: SchedulerRule, subject: str, text: str) -> FailedPrecondition:
    return FailedPrecondition([PreconditionViolation(rule, subject, text)])


@dataclass(frozen=True)
class ConvertRequest:
    plan_id: str
    etag: str
    route: Route
    product_id: str
    reason: str
    frequency: Frequency = WEEKLY
    override: FactorOverride | None = None
    label_version: str = CURRENT_LABEL
    last_dose_date: dt.date | None = None
    two_weekly_start_days: int = FIRST_SC_DAYS
    cycle_grams: Decimal | None = None
    interval_days: int = 0
    validate_only: bool = False
    home: bool = False


@dataclass(frozen=True)
class HomeInfusionRecord:
    """A dose given at home, as recorded."""

    id: str
    plan_id: str
    plan_version: int
    patient_id: str
    given_on: dt.date
    due_date: dt.date
    ramp_step: int
    grams_given: Decimal
    product_id: str
    scanned_lots: list[dict[str, object]]
    created_at: dt.datetime


@dataclass(frozen=True)
class Coverage:
    authorisations: list[Stored[PlanAuthorisation]]
    caps: Stored[PlanCaps] | None
    state: AuthorisationCheck
    covering: PlanAuthorisation | None
    as_of: dt.date
    patient_id: str


def _stored_authorisation(row: PlanAuthorisationRow) -> Stored[PlanAuthorisation]:
    return Stored(store.authorisation_of(row), row.revision, row.created_at, row.updated_at)


def _stored_caps(row: PayerCapsRow) -> Stored[PlanCaps]:
    return Stored(store.caps_of(row), row.revision, row.created_at, row.updated_at)


class Regimens:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        records: Records,
        doses: Doses,
        sc_product: Callable[[str], ScProduct | None],
    ) -> None:
        self.db = db
        self.clock = clock
        self.records = records
        self.doses = doses
        self._sc_product = sc_product

    # --- ConvertRegimen --------------------------------------------------------------------------

    def preview(self, request: ConvertRequest) -> Converted:
        with self.db.read() as session:
            return self._convert(session, request)[1]

    def convert(
        self, session: Session, request: ConvertRequest
    ) -> tuple[Stored[TherapyPlan], Converted]:
        row, converted = self._convert(session, request)
        new = dataclasses.replace(converted.plan, version=row.current_version + 1)
        reason = request.reason.strip()
        if request.override is not None:
            reason += f" (factor {request.override.factor}: {request.override.reason.strip()})"
        repo.add_plan_version(
            session,
            row,
            new.site_id,
            new.status.value,
            plan_to_spec(new),
            reason[:1000],
            self.clock.now(),
        )
        return Stored(new, row.revision, row.created_at, row.updated_at), converted

    def _convert(self, session: Session, request: ConvertRequest) -> tuple[PlanRow, Converted]:
        subject = f"therapyPlans/{request.plan_id}"
        row = repo.plan_row(session, request.plan_id, for_update=not request.validate_only)
        if not request.validate_only or request.etag:
            check_etag(request.etag, row.revision, field="etag", resource=f"plan {row.id}")
        plan = plan_of(row, repo.plan_version(session, row.id, row.current_version))
        if plan.status is not PlanStatus.ACTIVE:
            raise _failed("PLAN_ACTIVE", subject, f"the plan is {plan.status}")
        open_ids = [
            a.id
            for a in appointments.for_plans(session, [plan.id], self.clock.now())
            if a.status != AppointmentStatus.FULFILLED.value
        ]
        if open_ids:
            raise _failed(
                "NO_OPEN_BOOKINGS",
                subject,
                f"the plan has booked or held infusions ({', '.join(open_ids)}) by its current "
                "route: cancel them before switching route",
            )
        product = self._sc_product(request.product_id)
        if product is None:
            raise _failed(
                "PRODUCT_EXISTS",
                f"products/{request.product_id}",
                "the inventory service has no such active product",
            )
        last_day, last_grams = self._last_dose(session, plan)
        last_day = request.last_dose_date or last_day
        if last_day is None:
            raise _failed(
                "LAST_DOSE_KNOWN",
                subject,
                "no dose by the plan's route is recorded: give last_dose_date",
            )
        cycle = request.cycle_grams or last_grams
        if cycle is None:
            cycle = self.doses.calculate(
                plan.id, plan.version, last_day, CourseKind.MAINTENANCE
            ).total_grams
        measured = repo.latest_measurement(session, plan.patient_id, max(last_day, self._today()))
        if measured is None:
            raise _failed(
                "MEASUREMENT_ON_OR_BEFORE_DOSING_DATE",
                f"patients/{plan.patient_id}",
                "no body measurement: record the patient's weight first",
            )
        switch = Switch(
            to_route=request.route,
            product=product,
            cycle_grams=cycle,
            last_dose=last_day,
            body_weight_kg=measured.weight_kg,
            frequency=request.frequency,
            override=request.override,
            label_version=request.label_version,
            two_weekly_start_days=request.two_weekly_start_days,
            iv_interval_days=request.interval_days,
            from_product=self._sc_product(plan.product_id) if request.route is Route.IV else None,
            home=request.home,
        )
        try:
            converted = convert(plan, switch)
        except Refused as refused:
            raise refusal(refused, subject) from refused
        validate_plan(converted.plan).raise_if_any()
        authorisations = [
            store.authorisation_of(r) for r in store.authorisation_rows(session, [plan.id])
        ]
        caps_row = store.caps_row(session, plan.id)
        caps = None if caps_row is None else store.caps_of(caps_row)
        _, covering = authorisation_state(authorisations, caps, converted.first_date)
        try:
            check_regimen(
                caps,
                first_doses(converted.plan),
                covering.cap_override_reason if covering is not None else "",
            )
        except Refused as refused:
            raise refusal(refused, subject) from refused
        return row, converted

    def _today(self) -> dt.date:
        return self.clock.now().date()

    def _last_dose(
        self, session: Session, plan: TherapyPlan
    ) -> tuple[dt.date | None, Decimal | None]:
        """The last recorded dose of the plan and the grams of its cycle (every day given for
        the same due date), else the dose entered with the plan (no grams)."""
        rows = list(
            session.scalars(
                select(AppointmentRow)
                .where(
                    AppointmentRow.plan_id == plan.id,
                    AppointmentRow.status == AppointmentStatus.FULFILLED.value,
                )
                .order_by(AppointmentRow.local_date.desc(), AppointmentRow.id)
                .limit(20)
            )
        )
        if rows:
            last = rows[0]
            cycle = [r for r in rows if r.due_date == last.due_date and r.course == last.course]
            grams = sum((r.grams_given or r.dose_grams for r in cycle), Decimal(0))
            return last.local_date, grams
        return plan.last_infusion_date, None

    # --- authorisations and caps ------------------------------------------------------------------

    def set_authorisation(
        self, session: Session, authorisation: PlanAuthorisation, etag: str
    ) -> Stored[PlanAuthorisation]:
        validate_authorisation(authorisation).raise_if_any()
        plan = repo.plan_row(session, authorisation.plan_id)
        now = self.clock.now()
        values = {
            "payer": authorisation.payer.strip(),
            "approved_grams": authorisation.approved_grams,
            "approved_doses": authorisation.approved_doses,
            "valid_from": authorisation.valid_from,
            "valid_to": authorisation.valid_to,
            "active": authorisation.active,
            "cap_override_reason": authorisation.cap_override_reason.strip(),
        }
        if authorisation.id:
            row = store.authorisation_row(session, authorisation.id, for_update=True)
            if row.plan_id != authorisation.plan_id:
                raise NotFound("authorisation", authorisation.id)
            check_etag(
                etag,
                row.revision,
                field="authorisation.etag",
                resource=f"authorisation {row.id}",
            )
            for name, value in values.items():
                setattr(row, name, value)
            row.revision += 1
            row.updated_at = now
        else:
            row = PlanAuthorisationRow(
                id=new_id(),
                plan_id=authorisation.plan_id,
                patient_id=plan.patient_id,
                revision=1,
                created_at=now,
                updated_at=now,
                **values,
            )
            session.add(row)
        session.flush()
        return _stored_authorisation(row)

    def set_caps(self, session: Session, caps: PlanCaps, etag: str) -> Stored[PlanCaps]:
        validate_caps(caps).raise_if_any()
        plan = repo.plan_row(session, caps.plan_id)
        now = self.clock.now()
        row = store.caps_row(session, caps.plan_id, for_update=True)
        values = {
            "payer": caps.payer.strip(),
            "grams_per_7_days": caps.grams_per_7_days,
            "grams_per_28_days": caps.grams_per_28_days,
            "authorisation_required": caps.authorisation_required,
        }
        if row is None:
            row = PayerCapsRow(
                plan_id=caps.plan_id,
                patient_id=plan.patient_id,
                revision=1,
                created_at=now,
                updated_at=now,
                **values,
            )
            session.add(row)
        else:
            check_etag(
                etag, row.revision, field="payer_caps.etag", resource=f"caps of {caps.plan_id}"
            )
            for name, value in values.items():
                setattr(row, name, value)
            row.revision += 1
            row.updated_at = now
        session.flush()
        return _stored_caps(row)

    # --- home administration ----------------------------------------------------------------

    def record_home(
        self,
        session: Session,
        plan_id: str,
        given_on: dt.date,
        grams: Decimal,
        lots: list[dict[str, object]],
    ) -> tuple[HomeInfusionRecord, DueItem | None]:
        """A dose given at home: the plan's open due item it fulfils, and the next one."""
        subject = f"therapyPlans/{plan_id}"
        row = repo.plan_row(session, plan_id)
        plan = plan_of(row, repo.plan_version(session, plan_id, row.current_version))
        if plan.status is not PlanStatus.ACTIVE:
            raise _failed("PLAN_ACTIVE", subject, f"the plan is {plan.status}")
        if not plan.home_administration:
            raise _failed(
                "HOME_ADMINISTRATION",
                subject,
                "the plan is not given at home: its doses are booked and completed in a chair",
            )
        site = repo.site_from_row(repo.site_row(session, plan.site_id))
        today = site.local_today(self.clock.now())
        v = Violations()
        if given_on > today:
            v.add("given_on", f"must not be after the site's today ({today})")
        first = plan.regimen_start_date or plan.start_date
        if given_on < first:
            v.add("given_on", f"must not be before the plan's start ({first})")
        if grams <= 0:
            v.add("grams_given", "must be greater than 0")
        v.raise_if_any()
        items = self.records.due_items(session, [plan], today)
        item = items[0]
        home = HomeInfusionRow(
            id=new_id(),
            plan_id=plan.id,
            plan_version=plan.version,
            patient_id=plan.patient_id,
            site_id=plan.site_id,
            given_on=given_on,
            due_date=item.due_date,
            ramp_step=item.ramp_step,
            grams_given=grams,
            product_id=plan.product_id,
            scanned_lots=lots,
            created_at=self.clock.now(),
        )
        session.add(home)
        session.flush()
        write_events(session, outbox, [_home_dispense(home, site.time_zone)], self.clock.now())
        after = self.records.due_items(session, [plan], today)
        record = HomeInfusionRecord(
            home.id,
            home.plan_id,
            home.plan_version,
            home.patient_id,
            home.given_on,
            home.due_date,
            home.ramp_step,
            home.grams_given,
            home.product_id,
            list(home.scanned_lots),
            home.created_at,
        )
        return record, after[0] if after else None

    def coverage(self, plan_id: str, as_of: dt.date | None) -> Coverage:
        with self.db.read() as session:
            row = repo.plan_row(session, plan_id)
            if as_of is None:
                site = repo.site_from_row(repo.site_row(session, row.site_id))
                as_of = site.local_today(self.clock.now())
            auths = [_stored_authorisation(r) for r in store.authorisation_rows(session, [plan_id])]
            caps_row = store.caps_row(session, plan_id)
        caps = None if caps_row is None else _stored_caps(caps_row)
        state, covering = authorisation_state(
            [a.value for a in auths], None if caps is None else caps.value, as_of
        )
        return Coverage(auths, caps, state, covering, as_of, row.patient_id)

    def states(
        self, items: Sequence[DueItem]
    ) -> dict[tuple[str, dt.date], tuple[AuthorisationCheck, PlanAuthorisation | None]]:
        """Each due item's authorisation state on its due date (plans with no coverage on
        record are left out: nothing is required of them)."""
        plan_ids = {i.plan_id for i in items}
        with self.db.read() as session:
            auths: dict[str, list[PlanAuthorisation]] = {}
            for r in store.authorisation_rows(session, plan_ids):
                auths.setdefault(r.plan_id, []).append(store.authorisation_of(r))
            caps = {k: store.caps_of(v) for k, v in store.caps_rows(session, plan_ids).items()}
        states = {}
        for item in items:
            if item.plan_id in auths or item.plan_id in caps:
                states[(item.plan_id, item.due_date)] = authorisation_state(
                    auths.get(item.plan_id, []), caps.get(item.plan_id), item.due_date
                )
        return states


def _home_dispense(home: HomeInfusionRow, time_zone: str) -> Event:
    """What the pharmacy owes a dose given at home, written to the outbox with its record:
    adapters/inventory_relay.py reserves the dose (keyed by the home infusion's id) and
    dispenses it with the scanned lots, as a chair's DISPENSE does, so the stock leaves the
    pharmacy and each lot's recall trace names the patient."""
    payload = {
        "home_infusion_id": home.id,
        "appointment_id": home.id,  # the inventory's reservation key
        "site_id": home.site_id,
        "patient_id": home.patient_id,
        "product_id": home.product_id,
        "grams_given": decimal_str(home.grams_given),
        "given_on": home.given_on.isoformat(),
        "time_zone": time_zone,
        "scanned_lots": list(home.scanned_lots),
    }
    return Event("HOME_DISPENSE", f"HOME_DISPENSE:{home.id}", payload)


def home_refusal(plan_id: str) -> FailedPrecondition:
    """A chair operation (slots, hold, booking) on a plan given at home."""
    return _failed(
        "HOME_ADMINISTRATION",
        f"therapyPlans/{plan_id}",
        "the plan is given at home, not in a chair: record each dose with RecordHomeInfusion",
    )


def check_plan_allows_booking(
    session: Session,
    plan: TherapyPlan,
    product_id: str,
    day: dt.date,
    grams: Decimal,
    exclude_id: str,
    now: dt.datetime,
) -> None:
    """The booking use case's one call before it writes a booking: FAILED_PRECONDITION
    HOME_ADMINISTRATION for a plan given at home (no chair), and AUTHORISATION_COVERS,
    AUTHORISED_QUANTITY or PAYER_CAP when the plan's coverage refuses ``grams`` of
    ``product_id`` on ``day`` (``exclude_id``: the appointment being moved)."""
    if plan.home_administration:
        raise home_refusal(plan.id)
    auth_rows = store.authorisation_rows(session, [plan.id])
    caps_row = store.caps_row(session, plan.id)
    if not auth_rows and caps_row is None:
        return
    window = dt.timedelta(days=27)
    others = store.administrations(
        session, plan.patient_id, product_id, day - window, day + window, exclude_id, now
    )
    if auth_rows:  # an approved quantity counts over the whole authorisation period
        first = min(r.valid_from for r in auth_rows)
        last = max(r.valid_to for r in auth_rows)
        seen = {g.id for g in others}
        others = [
            *others,
            *(
                g
                for g in store.administrations(
                    session, plan.patient_id, product_id, first, last, exclude_id, now
                )
                if g.id not in seen
            ),
        ]
    try:
        check_booking(
            [store.authorisation_of(r) for r in auth_rows],
            None if caps_row is None else store.caps_of(caps_row),
            plan.id,
            day,
            grams,
            others,
        )
    except Refused as refused:
        raise refusal(refused, f"therapyPlans/{plan.id}") from refused
