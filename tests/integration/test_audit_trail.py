"""The audit trail through real servers, on SQLite and PostgreSQL: one record per mutation in
the mutation's transaction, none for a rolled-back one or an idempotent replay, a record per
patient read before the answer leaves, ListAuditEvents for auditors of the organisation, the
chain verified and tampering found."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from sqlalchemy import MetaData, create_engine, text

from infusion.audit.v1 import audit_pb2, audit_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from services.common.audit.__main__ import main as audit_main
from services.common.audit.fhir import bundle_json
from services.common.audit.journal import ReadJournal, beside
from services.common.audit.store import AuditStore, define_audit_tables
from services.common.audit.verify import verify
from tests.integration.builders import date, make_patient
from tests.integration.conftest import Platform, request_id, scheduler_database_url
from tests.issuer import TEST_ORGANISATION

CREATE_PATIENT = "/infusion.scheduler.v1.SchedulerService/CreatePatient"
GET_PATIENT = "/infusion.scheduler.v1.SchedulerService/GetPatient"


def auditor(p: Platform, organisation: str = TEST_ORGANISATION) -> audit_pb2_grpc.AuditServiceStub:
    token = p.issuer.issuer.role_token("auditor", organisation)
    return audit_pb2_grpc.AuditServiceStub(p.issuer.channel(p.scheduler_address, token))


def events(p: Platform, **filters: object) -> list[audit_pb2.AuditEvent]:
    stub = auditor(p)
    found: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=50, page_token=token, **filters)  # type: ignore[arg-type]
        )
        found += page.audit_events
        token = page.next_page_token
        if not token:
            return found


def of_method(found: list[audit_pb2.AuditEvent], method: str) -> list[audit_pb2.AuditEvent]:
    return [e for e in found if e.method == method]


def scheduler_store(database_url: str) -> tuple[AuditStore, str]:
    url = scheduler_database_url(database_url)
    return AuditStore("scheduler", define_audit_tables(MetaData(), "scheduler")), url


def linked(store: AuditStore, url: str) -> None:
    """Wait until the scheduler's keeper has chained every record written so far (reads'
    records on SQLite pass through the read journal beside the file first)."""
    engine = create_engine(url)
    journal = beside(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            with engine.connect() as connection:
                waiting = ReadJournal(journal).pending() if journal is not None else 0
                if store.pending_count(connection) == 0 and waiting == 0:
                    return
            assert time.monotonic() < deadline, "records left unlinked"
            time.sleep(0.05)
    finally:
        engine.dispose()


def test_mutation_once_replay_none_rollback_none_read_recorded(platform: Platform) -> None:
    p = platform
    rid = request_id()
    request = pb.CreatePatientRequest(
        request_id=rid,
        patient=pb.Patient(
            organisation_id=TEST_ORGANISATION,
            mrn="MRN-A1",
            given_name="Ada",
            family_name="Example",
            birth_date=date(1970, 5, 1),
            sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
        ),
    )
    created = p.scheduler.CreatePatient(request).patient
    again = p.scheduler.CreatePatient(request).patient  # replay: the first result, no change
    assert again.id == created.id
    with pytest.raises(grpc.RpcError) as refused:  # same MRN, new request: rolled back
        p.scheduler.CreatePatient(
            pb.CreatePatientRequest(request_id=request_id(), patient=request.patient)
        )
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    p.scheduler.GetPatient(
        pb.GetPatientRequest(id=created.id), metadata=[("x-purpose-of-use", "TREAT")]
    )
    with pytest.raises(grpc.RpcError):
        p.scheduler.GetPatient(pb.GetPatientRequest(id="no-such-patient"))

    found = events(p)
    creates = of_method(found, CREATE_PATIENT)
    assert len(creates) == 1
    (create,) = creates
    assert create.kind == "mutation" and create.outcome == "OK"
    assert create.request_id == rid
    assert list(create.patient_ids) == [created.id]
    assert created.id in create.resource_ids
    assert create.subject == "test-operator" and create.organisation_id == TEST_ORGANISATION
    assert create.peer and create.token_id and "prescriber" in create.roles
    reads = of_method(found, GET_PATIENT)
    assert [(r.outcome, list(r.patient_ids), r.purpose_of_use) for r in reads] == [
        ("OK", [created.id], "TREAT"),
        ("NOT_FOUND", ["no-such-patient"], ""),
    ]
    # filters: by patient, by actor, by time
    assert {e.method for e in events(p, patient_id=created.id)} == {CREATE_PATIENT, GET_PATIENT}
    assert events(p, actor="someone-else") == []
    assert len(events(p, actor="test-operator")) == len(found)
    late = create.time
    late.seconds += 3600
    assert events(p, start_time=late) == []
    # another organisation's auditor sees none of it; the operator may not read the trail
    assert (
        auditor(p, "org-2").ListAuditEvents(audit_pb2.ListAuditEventsRequest()).audit_events == []
    )
    with pytest.raises(grpc.RpcError) as denied:
        audit_pb2_grpc.AuditServiceStub(p.scheduler_channel).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest()
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_bad_purpose_of_use_is_refused(platform: Platform) -> None:
    patient = make_patient(platform)
    with pytest.raises(grpc.RpcError) as refused:
        platform.scheduler.GetPatient(
            pb.GetPatientRequest(id=patient.id), metadata=[("x-purpose-of-use", "a b;c")]
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_chain_verifies_and_tampering_is_found(
    platform: Platform, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = make_patient(platform)
    for _ in range(3):
        platform.scheduler.GetPatient(pb.GetPatientRequest(id=patient.id))
    store, url = scheduler_store(database_url)
    linked(store, url)
    assert audit_main(["verify", "scheduler", "--database-url", url]) == 0
    assert "intact: 4 records" in capsys.readouterr().out
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            records = [link.record for link in store.walk(connection) if link.record]
            bundle = bundle_json(records)  # validated against fhirclient's R4 model
            assert len(bundle["entry"]) == 4
            with pytest.raises(Exception, match="append-only"), connection.begin_nested():
                connection.execute(text("UPDATE scheduler_audit_events SET outcome = 'X'"))
            with pytest.raises(Exception, match="append-only"), connection.begin_nested():
                connection.execute(text("DELETE FROM scheduler_audit_chain"))
        with engine.begin() as connection:  # an owner who drops the guard first
            if connection.dialect.name == "postgresql":
                connection.execute(text("ALTER TABLE scheduler_audit_events DISABLE TRIGGER USER"))
            else:
                connection.execute(text("DROP TRIGGER scheduler_audit_events_no_update"))
            third = records[2].id
            connection.execute(
                text("UPDATE scheduler_audit_events SET peer = 'elsewhere' WHERE id = :id"),
                {"id": third},
            )
    finally:
        engine.dispose()
    assert audit_main(["verify", "scheduler", "--database-url", url]) == 1
    assert "BROKEN at record 3" in capsys.readouterr().out


def test_chain_holds_under_concurrent_writers(platform: Platform, database_url: str) -> None:
    """Mutations and reads from many threads at once: one unbroken chain, one record each."""
    patient = make_patient(platform)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                make_patient(platform, mrn=f"MRN-C{n}-{i}")
                platform.scheduler.GetPatient(pb.GetPatientRequest(id=patient.id))
        except BaseException as error:  # noqa: BLE001  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store, url = scheduler_store(database_url)
    linked(store, url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            verdict = verify(store.walk(connection), store.outside_chain(connection))
    finally:
        engine.dispose()
    assert verdict.intact, verdict.broken
    assert verdict.checked == 1 + 30 + 30


def test_a_refused_attempt_on_patient_data_is_recorded_with_its_outcome(
    platform: Platform,
) -> None:
    """An authenticated caller without the permission is refused, and the attempt is in the
    trail (who, what, which patient, PERMISSION_DENIED); a call without a valid token is
    refused without a record (nobody to name; a flood must not become writes)."""
    p = platform
    patient = make_patient(p)
    token = p.issuer.issuer.role_token("auditor", TEST_ORGANISATION)
    stranger = pb_grpc.SchedulerServiceStub(p.issuer.channel(p.scheduler_address, token))
    with pytest.raises(grpc.RpcError) as refused:
        stranger.GetPatient(pb.GetPatientRequest(id=patient.id))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:
        stranger.CreatePatient(pb.CreatePatientRequest(request_id=request_id()))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = pb_grpc.SchedulerServiceStub(grpc.insecure_channel(p.scheduler_address))
    with pytest.raises(grpc.RpcError) as refused:
        anonymous.GetPatient(pb.GetPatientRequest(id=patient.id))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    denied = [e for e in events(p) if e.outcome == "PERMISSION_DENIED"]
    assert [(e.method, e.kind, list(e.patient_ids)) for e in denied] == [
        (GET_PATIENT, "patient-read", [patient.id]),
        (CREATE_PATIENT, "mutation", []),
    ]
    assert all("auditor" in e.roles and e.organisation_id == TEST_ORGANISATION for e in denied)
