"""Enrolling many patients from a CSV file (a centre's list when it starts on the platform):
each row a patient, their weight and height on a day, and an IV therapy plan at one site.

The whole file is read and checked first, so a file with a mistake changes nothing and every
mistake is named by line and column. Then each row is three calls (CreatePatient,
RecordMeasurement, CreateTherapyPlan) whose request ids are made from the row's own content:
running the same file again, after a failure half way or twice by mistake, creates nothing
twice; a row changed since is a new request. An MRN that the organisation already holds from
elsewhere is reported and skipped, not enrolled a second time. A row the scheduler refuses
(a weight outside the bands, an unknown product) is reported with the scheduler's reason; the
other rows go on. Request ids carry a digest, never the MRN or a name: request ids are logged.
Free of the terminal (services/cli shows progress and the table)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TypeVar

import grpc

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date
from services.console.backend import UserCalls

REQUIRED = (
    "mrn",
    "family_name",
    "given_name",
    "birth_date",
    "sex",
    "weight_kg",
    "height_cm",
    "measured_on",
    "product",
    "dose_g_per_kg",
    "interval_days",
    "start_date",
)
OPTIONAL = ("indication", "induction_days", "induction_total_g_per_kg")
MAX_ROWS = 5000
# refusals that are the caller's or the link's, not the row's: the rest would fail alike
STOPPING = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
T = TypeVar("T")
SEX: dict[str, pb.SexAtBirth] = {
    "f": pb.SEX_AT_BIRTH_FEMALE,
    "female": pb.SEX_AT_BIRTH_FEMALE,
    "m": pb.SEX_AT_BIRTH_MALE,
    "male": pb.SEX_AT_BIRTH_MALE,
}
INDICATION: dict[str, pb.Indication] = {
    "mmn": pb.INDICATION_MMN,
    "cidp": pb.INDICATION_CIDP,
    "pid": pb.INDICATION_PID,
    "other": pb.INDICATION_OTHER,
}


@dataclass(frozen=True)
class Enrolment:
    """One row, checked."""

    line: int
    mrn: str
    family_name: str
    given_name: str
    birth_date: dt.date
    sex: pb.SexAtBirth
    weight_kg: str
    height_cm: str
    measured_on: dt.date
    product: str
    dose_g_per_kg: str
    interval_days: int
    start_date: dt.date
    indication: pb.Indication
    induction_days: int
    induction_total_g_per_kg: str

    def key(self, step: str, organisation: str) -> str:
        """The request id of one step: a digest of what the step sends (and the organisation),
        so the same row is the same request and a changed row a new one."""
        content: tuple[object, ...]
        if step == "patient":
            content = (self.mrn, self.family_name, self.given_name, self.birth_date, self.sex)
        elif step == "measure":
            content = (self.mrn, self.weight_kg, self.height_cm, self.measured_on)
        else:
            content = (
                self.mrn,
                self.product,
                self.dose_g_per_kg,
                self.interval_days,
                self.start_date,
                self.indication,
                self.induction_days,
                self.induction_total_g_per_kg,
            )
        digest = hashlib.sha256(repr((organisation, step, content)).encode()).hexdigest()
        return f"import-{step}-{digest[:32]}"


@dataclass
class Outcome:
    line: int
    mrn: str
    state: str  # imported, skipped, refused
    detail: str = ""
    patient_id: str = ""
    plan_id: str = ""


@dataclass
class Checked:
    rows: list[Enrolment] = field(default_factory=list)
    mistakes: list[str] = field(default_factory=list)


class _Fields:
    """One row's raw values, read field by field, each mistake noted."""

    def __init__(self, value: dict[str, str]) -> None:
        self.value = value
        self.mistakes: list[str] = []

    def text(self, name: str, required: bool = False) -> str:
        found = self.value.get(name, "")
        if required and not found:
            self.mistakes.append(f"{name}: required")
        return found

    def day(self, name: str) -> dt.date:
        try:
            return dt.date.fromisoformat(self.value.get(name, ""))
        except ValueError:
            self.mistakes.append(f"{name}: not a date (YYYY-MM-DD)")
            return dt.date.min

    def amount(self, name: str) -> str:
        found = self.value.get(name, "")
        try:
            if Decimal(found) > 0:
                return found
        except InvalidOperation:
            pass
        self.mistakes.append(f"{name}: a number above 0")
        return ""

    def whole(self, name: str, default: str = "") -> int:
        found = self.value.get(name, "") or default
        if found.isdigit():
            return int(found)
        self.mistakes.append(f"{name}: a whole number")
        return 0

    def choice(self, name: str, choices: dict[str, T], default: str = "") -> T | None:
        found = choices.get((self.value.get(name, "") or default).lower())
        if found is None:
            self.mistakes.append(f"{name}: one of {', '.join(choices)}")
        return found


def check(text: str) -> Checked:
    """Every row of a CSV text (a header line naming the columns), or every mistake in it."""
    found = Checked()
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
    if missing:
        found.mistakes.append(f"line 1: missing columns: {', '.join(missing)}")
        return found
    for number, raw in enumerate(reader, start=2):
        if number - 1 > MAX_ROWS:
            found.mistakes.append(f"more than {MAX_ROWS} rows: split the file")
            break
        f = _Fields({k: (v or "").strip() for k, v in raw.items() if k})
        row = Enrolment(
            line=number,
            mrn=f.text("mrn", required=True),
            family_name=f.text("family_name", required=True),
            given_name=f.text("given_name"),
            birth_date=f.day("birth_date"),
            sex=f.choice("sex", SEX) or pb.SEX_AT_BIRTH_UNSPECIFIED,
            weight_kg=f.amount("weight_kg"),
            height_cm=f.amount("height_cm"),
            measured_on=f.day("measured_on"),
            product=f.text("product", required=True),
            dose_g_per_kg=f.amount("dose_g_per_kg"),
            interval_days=f.whole("interval_days"),
            start_date=f.day("start_date"),
            indication=f.choice("indication", INDICATION, "mmn") or pb.INDICATION_UNSPECIFIED,
            induction_days=f.whole("induction_days", "0"),
            induction_total_g_per_kg=f.text("induction_total_g_per_kg"),
        )
        found.mistakes += [f"line {number}: {m}" for m in f.mistakes]
        if not f.mistakes:
            found.rows.append(row)
    return found


def enrol(
    calls: UserCalls,
    organisation: str,
    site_id: str,
    rows: list[Enrolment],
    done: Callable[[Outcome], None] = lambda _o: None,
) -> Iterator[Outcome]:
    """Each row enrolled at ``site_id``, in order; ``done`` hears of each as it ends (the
    command line's progress)."""
    products: dict[str, str] = {}
    for row in rows:
        outcome = _one(calls, organisation, site_id, row, products)
        done(outcome)
        yield outcome


def _one(
    calls: UserCalls, organisation: str, site_id: str, row: Enrolment, products: dict[str, str]
) -> Outcome:
    outcome = Outcome(row.line, row.mrn, "refused")
    try:
        if row.product not in products:
            products[row.product] = calls.inventory.GetProduct(
                inv.GetProductRequest(id=row.product)
            ).product.id
        patient = calls.scheduler.CreatePatient(
            pb.CreatePatientRequest(
                request_id=row.key("patient", organisation),
                patient=pb.Patient(
                    organisation_id=organisation,
                    mrn=row.mrn,
                    family_name=row.family_name,
                    given_name=row.given_name,
                    birth_date=from_date(row.birth_date),
                    sex_at_birth=row.sex,
                ),
            )
        ).patient
        outcome.patient_id = patient.id
        calls.scheduler.RecordMeasurement(
            pb.RecordMeasurementRequest(
                request_id=row.key("measure", organisation),
                measurement=pb.Measurement(
                    patient_id=patient.id,
                    measured_on=from_date(row.measured_on),
                    weight_kg=row.weight_kg,
                    height_cm=row.height_cm,
                ),
            )
        )
        plan = pb.TherapyPlan(
            patient_id=patient.id,
            site_id=site_id,
            indication=row.indication,
            route=pb.ROUTE_IV,
            product_id=products[row.product],
            dose_basis=pb.DOSE_BASIS_G_PER_KG,
            maintenance_dose=row.dose_g_per_kg,
            interval_days=row.interval_days,
            start_date=from_date(row.start_date),
        )
        if row.induction_days:
            plan.induction.CopyFrom(
                pb.InductionCourse(
                    total_g_per_kg=row.induction_total_g_per_kg or "2", days=row.induction_days
                )
            )
        made = calls.scheduler.CreateTherapyPlan(
            pb.CreateTherapyPlanRequest(request_id=row.key("plan", organisation), therapy_plan=plan)
        ).therapy_plan
    except grpc.RpcError as error:
        if not isinstance(error, grpc.Call):
            raise
        if error.code() == grpc.StatusCode.ALREADY_EXISTS and not outcome.patient_id:
            outcome.state = "skipped"
            outcome.detail = "the organisation already has a patient with this MRN"
        elif error.code() in STOPPING:
            raise  # nothing else will go through either: stop, a re-run carries on
        else:
            outcome.detail = f"{error.code().name}: {error.details()}"
        return outcome
    outcome.state, outcome.plan_id = "imported", made.id
    return outcome
