"""The three services in-process on one database, and every RPC of them as a raw call: the
fuzz and memory tests send the same bytes to a stack on SQLite and one on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.type.date_pb2 import Date

from infusion.audit.v1 import audit_pb2
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.notify.v1 import notify_pb2
from infusion.scheduler.v1 import scheduler_pb2
from services.common.auth.policy import policy_of
from services.common.auth.roles import Roles
from services.common.clock import FixedClock
from services.notify.__main__ import assemble
from services.notify.domain.model import Channel
from tests.integration.builders import give, patient_plan, site_with_chairs
from tests.integration.conftest import NOW, request_id, running_platform
from tests.integration.notify_conftest import TEST_SETTINGS, Recorder, with_changes
from tests.issuer import TEST_ORGANISATION, TestIssuer

SERVICES = [
    service
    for module in (scheduler_pb2, inv, notify_pb2, audit_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
"""Every RPC of the three services, read from their descriptors."""

CALL_TIMEOUT = 30.0


def allowed_role(path: str) -> str:
    """A shipped role whose permissions include the method's: the fuzz reaches the handler,
    past authentication and permissions, as a caller allowed to make the call."""
    policy = policy_of(path)
    assert policy is not None, f"{path} declares no policy"
    roles = Roles.default()
    if policy.permission in roles.authenticated:  # every valid token holds it
        return "nurse"
    return next(name for name, spec in roles.specs.items() if policy.permission in spec.permissions)


@dataclass
class Stack:
    name: str
    addresses: dict[str, str]  # by service full name
    issuer: TestIssuer
    # placeholder id in a seed (tests/fuzz/seeds.py) → the id this stack's server issued
    placeholders: dict[str, str] = field(default_factory=dict)
    _channels: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)

    def channel(self, path: str, service: str) -> grpc.Channel:
        role = allowed_role(path)
        key = (service, role)
        if key not in self._channels:
            token = self.issuer.issuer.role_token(role, TEST_ORGANISATION)
            self._channels[key] = self.issuer.channel(self.addresses[service], token)
        return self._channels[key]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def call(self, method: MethodDescriptor, request: Any) -> grpc.StatusCode:
        """Send the request; the status code it got (a stream: after its first message)."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        channel = self.channel(path, method.containing_service.full_name)
        payload = substituted(request, self.placeholders).SerializeToString()
        try:
            if method.server_streaming:
                stream = channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT)
                try:
                    next(iter(stream))
                finally:
                    stream.cancel()
            else:
                channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
            return code
        return grpc.StatusCode.OK


def substituted(request: Any, placeholders: dict[str, str]) -> Any:
    """A copy of ``request`` with every string field that is exactly a placeholder replaced by
    its id (a hostile value put in its place is sent as it is)."""
    if not placeholders:
        return request
    copy = type(request)()
    copy.CopyFrom(request)
    _substitute(copy, placeholders)
    return copy


def _substitute(message: Any, placeholders: dict[str, str]) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.type == descriptor.TYPE_MESSAGE:
            items = value if descriptor.is_repeated else [value]
            for item in items:
                if not isinstance(item, str | bytes | int | float):
                    _substitute(item, placeholders)
        elif descriptor.type == descriptor.TYPE_STRING:
            if descriptor.is_repeated:
                value[:] = [placeholders.get(v, v) for v in value]
            elif value in placeholders:
                setattr(message, descriptor.name, placeholders[value])


def regimen_fixtures(platform: Any) -> dict[str, str]:
    """A scheduler site, patient (70 kg) and plan for the seeds of the outcome, review, proposal
    and coverage RPCs, whose ids the server issues: ``seed:site``, ``seed:patient``,
    ``seed:plan``; and the plans of the conversion and home-infusion seeds."""
    sp = scheduler_pb2
    site = platform.scheduler.CreateSite(
        sp.CreateSiteRequest(
            site=sp.Site(display_name="Fuzz seeds", time_zone="Europe/London"),
            request_id="fuzz-seed-site",
        )
    ).site
    patient = platform.scheduler.CreatePatient(
        sp.CreatePatientRequest(
            patient=sp.Patient(
                mrn="FUZZ-SEED",
                given_name="Sam",
                family_name="Seed",
                birth_date=Date(year=1970, month=5, day=1),
                sex_at_birth=sp.SEX_AT_BIRTH_FEMALE,
            ),
            request_id="fuzz-seed-patient",
        )
    ).patient
    platform.scheduler.RecordMeasurement(
        sp.RecordMeasurementRequest(
            measurement=sp.Measurement(
                patient_id=patient.id,
                measured_on=Date(year=2026, month=11, day=1),
                weight_kg="70",
                height_cm="165",
            ),
            request_id="fuzz-seed-measure",
        )
    )

    def iv_plan(request_id: str) -> Any:
        return platform.scheduler.CreateTherapyPlan(
            sp.CreateTherapyPlanRequest(
                therapy_plan=sp.TherapyPlan(
                    patient_id=patient.id,
                    site_id=site.id,
                    indication=sp.INDICATION_MMN,
                    route=sp.ROUTE_IV,
                    product_id="gammagard-liquid",
                    dose_basis=sp.DOSE_BASIS_G_PER_KG,
                    maintenance_dose="1",
                    interval_days=28,
                    start_date=Date(year=2026, month=11, day=1),
                ),
                request_id=request_id,
            )
        ).therapy_plan

    plan = iv_plan("fuzz-seed-plan")
    to_convert = iv_plan("fuzz-seed-convert-plan")
    return {
        "seed:site": site.id,
        "seed:patient": patient.id,
        "seed:plan": plan.id,
        "seed:proposal-plan": proposal_fixture(platform),
        "seed:convert-plan": to_convert.id,
        "seed:convert-plan-etag": to_convert.etag,
        "seed:home-plan": home_fixture(platform, iv_plan("fuzz-seed-home-plan")),
    }


def home_fixture(platform: Any, plan: Any) -> str:
    """An IV plan switched to Hizentra weekly at home, the last IV dose on 10 November: 1 g/kg
    of 70 kg every 28 days is 17.5 g a week from 17 November (RecordHomeInfusion's seed)."""
    converted = platform.scheduler.ConvertRegimen(
        scheduler_pb2.ConvertRegimenRequest(
            therapy_plan_id=plan.id,
            etag=plan.etag,
            route=scheduler_pb2.ROUTE_SC,
            product_id="hizentra",
            last_dose_date=Date(year=2026, month=11, day=10),
            reason="home therapy",
            home_administration=True,
            request_id="fuzz-seed-home-convert",
        )
    ).therapy_plan
    return str(converted.id)


def proposal_fixture(platform: Any) -> str:
    """A plan whose outcomes give the docs/regimens.md example (grip strength falls on day 24 of
    a 28-day interval in three cycles → every 21 days), for AcceptRegimenProposal's seed: four
    infusions given (the clock moved through them and back) and the grip readings."""
    site, chairs = site_with_chairs(platform)
    plan = patient_plan(platform, site, "FUZZ-PROPOSAL")
    days = [dt.date(2026, 12, 1) + dt.timedelta(days=28 * n) for n in range(4)]
    for day in days:
        give(platform, plan, chairs[0], day)
    for start in days[:3]:
        for offset, kg in ((0, "20"), (7, "30"), (24, "24")):
            on = start + dt.timedelta(days=offset)
            platform.scheduler.RecordOutcome(
                scheduler_pb2.RecordOutcomeRequest(
                    outcome=scheduler_pb2.OutcomeRecord(
                        patient_id=plan.patient_id,
                        therapy_plan_id=plan.id,
                        recorded_on=Date(year=on.year, month=on.month, day=on.day),
                        measure=scheduler_pb2.OUTCOME_MEASURE_GRIP_STRENGTH,
                        value=kg,
                        hand=scheduler_pb2.HAND_RIGHT,
                    ),
                    request_id=request_id(),
                )
            )
    platform.clock.set(NOW)
    return str(plan.id)


@contextmanager
def running_stack(name: str, database_url: str) -> Iterator[Stack]:
    """Scheduler, inventory (seeded, with stock site "site-1") and notify on one database."""
    with ExitStack() as stack:
        issuer = TestIssuer()
        platform = stack.enter_context(running_platform(database_url, issuer))
        settings = with_changes(TEST_SETTINGS, database_url=database_url, grpc_workers=8)
        notify = assemble(
            settings,
            FixedClock(NOW),
            {c: Recorder() for c in Channel},
            issuer.service_auth("notify"),
        )
        notify.service.start()
        stack.callback(notify.service.stop, 0)
        platform.inventory.CreateStockSite(
            inv.CreateStockSiteRequest(
                site=inv.StockSite(id="site-1", display_name="Site 1", time_zone="Europe/London"),
                request_id="fuzz-site-1",
            )
        )
        running = Stack(
            name=name,
            addresses={
                "infusion.scheduler.v1.SchedulerService": platform.scheduler_address,
                "infusion.inventory.v1.InventoryService": platform.inventory_address,
                "infusion.notify.v1.NotifyService": notify.service.address,
                # served by all three from their own trails; the scheduler's is fuzzed
                "infusion.audit.v1.AuditService": platform.scheduler_address,
            },
            issuer=issuer,
            placeholders=regimen_fixtures(platform),
        )
        stack.callback(running.close)
        yield running
