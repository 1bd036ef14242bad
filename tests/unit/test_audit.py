"""The audit trail's pure parts: canonical hashing, the chain and its verification, the FHIR R4
mapping (checked by fhirclient's models), which ids a call concerns, and group commit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from fhirclient.models.auditevent import AuditEvent
from fhirclient.models.fhirabstractbase import FHIRValidationError
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from infusion.inventory.v1 import inventory_pb2 as inv_pb
from infusion.notify.v1 import notify_pb2 as notify_pb
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common import errors
from services.common.audit.fhir import audit_event_json, bundle_json
from services.common.audit.group_commit import GroupCommit, WriteFailed
from services.common.audit.ids import from_request, from_response, reference_field
from services.common.audit.record import (
    GENESIS,
    MUTATION,
    PATIENT_READ,
    AuditRecord,
    bounded,
    canonical,
    clean,
    content_hash,
    record_hash,
)
from services.common.audit.store import AuditStore, Link
from services.common.audit.trail import AuditTrail
from services.common.audit.verify import verify
from services.common.auth.policy import policy_of
from services.common.clock import SystemClock
from services.common.db import Database
from services.common.migrations import upgrade
from services.scheduler.store.models import audit_tables

T0 = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)


def record(n: int = 0, **changes: object) -> AuditRecord:
    base = AuditRecord(
        id=f"0190-{n:04d}",
        service="scheduler",
        occurred_at=T0 + dt.timedelta(seconds=n),
        method="/infusion.scheduler.v1.SchedulerService/CreatePatient",
        kind=MUTATION,
        resource_type="Patient",
        resource_ids=("pat-1",),
        patient_ids=("pat-1",),
        subject="user-7",
        caller_kind="user",
        client_id="ward-app",
        roles=("prescriber",),
        token_id="jti-1",
        organisation_id="org-1",
        peer="ipv4:10.0.0.7:53122",
        outcome="OK",
        request_id=f"req-{n}",
        purpose="TREAT",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def chain(count: int) -> list[AuditRecord]:
    out, previous = [], GENESIS
    for n in range(1, count + 1):
        link = record(n).chained(n, previous)
        previous = link.hash
        out.append(link)
    return out


def links(records: list[AuditRecord]) -> list[Link]:
    return [Link(r.sequence, r.id, r.previous_hash, r.hash, r) for r in records]


def test_hash_covers_every_field_and_the_previous_hash() -> None:
    linked = record().chained(1, GENESIS)
    assert linked.hash == record_hash(linked) and len(linked.hash) == 64
    changes = [
        ("subject", "user-8"),
        ("outcome", "NOT_FOUND"),
        ("previous_hash", "1" * 64),
        ("patient_ids", ("pat-2",)),
        ("occurred_at", T0 + dt.timedelta(microseconds=1)),
    ]
    for name, value in changes:
        assert record_hash(dataclasses.replace(linked, **{name: value})) != linked.hash, name


def test_canonical_form_is_stable_json() -> None:
    linked = record().chained(1, GENESIS)
    text = canonical(linked).decode()
    assert '"occurred_at":"2026-12-02T09:30:00.000000+00:00"' in text
    assert '"hash"' not in text and " " not in text.replace("ipv4:", "")
    same_instant = dataclasses.replace(
        linked, occurred_at=T0.astimezone(dt.timezone(dt.timedelta(hours=2)))
    )
    assert record_hash(same_instant) == linked.hash


def test_an_intact_chain_verifies() -> None:
    verdict = verify(links(chain(5)))
    assert verdict.intact and verdict.checked == 5
    assert verify([]).intact


@pytest.mark.parametrize(
    ("damage", "broken_at", "words"),
    [
        (lambda c: c[:2] + [dataclasses.replace(c[2], subject="someone")] + c[3:], 3, "altered"),
        (lambda c: c[:2] + c[3:], 4, "missing"),
        (lambda c: c[:1] + [c[2], c[1]] + c[3:], 3, "missing or was inserted"),
        (
            lambda c: c[:3] + [dataclasses.replace(c[3], previous_hash=GENESIS)] + c[4:],
            4,
            "previous",
        ),
    ],
)
def test_the_first_broken_link_is_reported(damage: object, broken_at: int, words: str) -> None:
    verdict = verify(links(damage(chain(6))))  # type: ignore[operator]
    assert verdict.broken is not None
    assert verdict.broken.sequence == broken_at
    assert words in verdict.broken.problem
    assert verdict.checked == broken_at - 1 or words.startswith("missing")


def test_a_rehashed_altered_record_still_breaks_the_next_link() -> None:
    chained = chain(4)
    forged = dataclasses.replace(chained[1], subject="someone", hash="")
    forged = dataclasses.replace(forged, hash=record_hash(forged))
    verdict = verify(links([chained[0], forged, *chained[2:]]))
    assert verdict.broken is not None and verdict.broken.sequence == 3


def test_a_removed_record_and_a_record_outside_the_chain_are_reported() -> None:
    damaged = links(chain(3))
    damaged[1] = dataclasses.replace(damaged[1], record=None)
    verdict = verify(damaged)
    assert verdict.broken is not None and verdict.broken.sequence == 2
    assert "gone" in verdict.broken.problem
    stray = verify(links(chain(2)), ["0190-9999"])
    assert stray.broken is not None and "0190-9999" in str(stray.broken)


def test_ids_are_cleaned_sorted_and_bounded() -> None:
    assert bounded({"b", "a", "", "x\x00y", "with space"}) == ("a", "b", "with?space", "x?y")
    assert len(bounded({f"id-{n}" for n in range(900)})) == 500


@given(
    st.text(st.characters(blacklist_categories=()), max_size=200),
    st.integers(min_value=0, max_value=150),
)
def test_cleaning_keeps_printable_text_and_replaces_the_rest_once(value: str, limit: int) -> None:
    """``clean`` returns most values untouched without its pattern: the same result as the
    pattern always gives, and cleaning twice changes nothing (a journal line made from a
    cleaned record becomes the same record)."""
    expected = re.sub(r"[\x00-\x20\x7f\ud800-\udfff]", "?", value[:limit])
    assert clean(value, limit) == expected
    assert clean(expected, limit) == expected


def test_a_raw_record_of_a_record_cleans_back_to_it() -> None:
    original = record()
    assert original.raw().cleaned() == original
    assert content_hash(original.raw().cleaned()) == content_hash(original)


def test_a_raw_record_without_an_offset_on_its_time_is_not_a_record() -> None:
    """A journal line's time is UTC with its offset; one without cannot be placed in time
    (it is refused, so the collector keeps its segment aside, not a record at a guessed
    hour)."""
    naive = record().raw()._replace(occurred_at="2026-12-02T09:30:00.000000")
    with pytest.raises(ValueError, match="offset"):
        naive.cleaned()


def test_fhir_r4_audit_event_mapping() -> None:
    linked = record().chained(7, "a" * 64)
    event = audit_event_json(linked)
    assert AuditEvent(event, strict=True).as_json() == event  # the model accepts it as is
    assert event["resourceType"] == "AuditEvent" and event["id"] == "scheduler-7"
    assert event["action"] == "C" and event["outcome"] == "0"
    assert event["recorded"] == "2026-12-02T09:30:00.000000Z"
    (agent,) = event["agent"]
    assert agent["requestor"] is True and agent["who"]["identifier"]["value"] == "user-7"
    assert agent["network"] == {"address": "ipv4:10.0.0.7:53122", "type": "2"}
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    patients = [e for e in event["entity"] if e["role"]["code"] == "1"]
    assert [p["what"]["reference"] for p in patients] == ["Patient/pat-1"]
    hashes = {x["url"].rsplit("/", 1)[1]: x for x in event["extension"]}
    assert hashes["audit-hash"]["valueString"] == linked.hash
    read = audit_event_json(
        dataclasses.replace(linked, kind=PATIENT_READ, outcome="NOT_FOUND", purpose="")
    )
    assert (read["action"], read["outcome"], "purposeOfEvent" in read) == ("R", "4", False)
    failed = audit_event_json(dataclasses.replace(linked, outcome="INTERNAL"))
    assert failed["outcome"] == "8"
    bundle = bundle_json(chain(3))
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 3


def test_the_fhir_model_refuses_what_r4_does_not_allow() -> None:
    event = audit_event_json(record().chained(1, GENESIS))
    with pytest.raises(FHIRValidationError):
        AuditEvent({**event, "recorded": 12}, strict=True)
    with pytest.raises(FHIRValidationError):
        AuditEvent({**event, "category": [{"text": "R5 only"}]}, strict=True)


def test_which_ids_a_call_concerns() -> None:
    assert reference_field("TherapyPlan") == "therapy_plan_id"
    got = from_request(pb.GetPatientRequest(id="pat-1"), "Patient")
    assert (got.resource_ids, got.patient_ids) == ({"pat-1"}, {"pat-1"})
    plan = pb.CreateTherapyPlanRequest(
        request_id="r", therapy_plan=pb.TherapyPlan(id="plan-1", patient_id="pat-2")
    )
    got = from_request(plan, "TherapyPlan")
    assert (got.resource_ids, got.patient_ids) == ({"plan-1"}, {"pat-2"})
    dose = pb.CalculateDoseResponse(
        calculation=pb.DoseCalculation(therapy_plan_id="plan-1", patient_id="pat-2")
    )
    got = from_response(dose, "TherapyPlan")
    assert (got.resource_ids, got.patient_ids) == ({"plan-1"}, {"pat-2"})
    page = pb.ListPatientsResponse(patients=[pb.Patient(id=f"p{n}", mrn="MRN") for n in range(3)])
    assert from_response(page, "Patient").patient_ids == {"p0", "p1", "p2"}


def _filled(descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of ``descriptor`` with every singular string field set to a value naming it,
    and (at the top) every singular message field filled the same way."""
    message = message_factory.GetMessageClass(descriptor)()
    for f in descriptor.fields:
        if f.is_repeated:
            continue
        if f.type == FieldDescriptor.TYPE_STRING:
            setattr(message, f.name, f"{descriptor.name}.{f.name}")
        elif f.message_type is not None and depth == 0:
            getattr(message, f.name).CopyFrom(_filled(f.message_type, 1))
    return message


def _ids_by_walking(request: Message, resource_type: str) -> tuple[set[str], set[str]]:
    """from_request's rule read field by field: every set singular string field of the
    request, then those of its singular message fields."""
    resources: set[str] = set()
    patients: set[str] = set()

    def note(name: str, value: str, owner: str) -> None:
        if name == "patient_id":
            patients.add(value)
        elif name == reference_field(resource_type) or (name == "id" and owner == resource_type):
            resources.add(value)
            if name == "id" and owner == "Patient":
                patients.add(value)

    for f, value in request.ListFields():
        if f.is_repeated:
            continue
        if f.type == FieldDescriptor.TYPE_STRING:
            note(f.name, value, request.DESCRIPTOR.name)
            if f.name == "id":
                resources.add(value)
                if resource_type == "Patient":
                    patients.add(value)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            for inner, inner_value in value.ListFields():
                if inner.type == FieldDescriptor.TYPE_STRING and not inner.is_repeated:
                    note(inner.name, inner_value, value.DESCRIPTOR.name)
    return resources, patients


def test_the_ids_of_every_audited_request_are_read_as_field_by_field() -> None:
    """from_request works out once per request type which fields to read: for the request of
    every audited method of the three services, it finds what reading every field does."""
    checked = 0
    for file in (pb.DESCRIPTOR, inv_pb.DESCRIPTOR, notify_pb.DESCRIPTOR):
        for service in file.services_by_name.values():
            for method in service.methods:
                policy = policy_of(f"/{service.full_name}/{method.name}")
                if policy is None or not policy.resource_type:
                    continue
                request = _filled(method.input_type)
                got = from_request(request, policy.resource_type)
                assert (got.resource_ids, got.patient_ids) == _ids_by_walking(
                    request, policy.resource_type
                ), method.full_name
                checked += 1
    assert checked > 50


def test_group_commit_shares_writes_and_returns_only_when_stored() -> None:
    batches: list[list[int]] = []
    stored: set[int] = set()
    gate = threading.Event()

    def write(items: Sequence[int]) -> None:
        if not batches:
            gate.wait(5)  # the first write is slow: the others queue behind it
        batches.append(list(items))
        stored.update(items)

    group: GroupCommit[int] = GroupCommit(write)
    seen_stored: dict[int, bool] = {}

    def submit(n: int) -> None:
        group.submit(n)
        seen_stored[n] = n in stored

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(10)]
    threads[0].start()
    time.sleep(0.05)
    for t in threads[1:]:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert sorted(n for b in batches for n in b) == list(range(10))
    assert len(batches) < 10  # the nine that queued shared a commit
    assert seen_stored == {n: True for n in range(10)}


@pytest.mark.parametrize("writers", [1, 2])
def test_group_commit_writes_up_to_its_writers_batches_at_once(writers: int) -> None:
    """While a batch's write is held up (a commit waiting for its flush), a caller arriving
    after it was gathered leads a batch of its own when a second writer is allowed, and
    waits for the first otherwise; either way each returns once its own item is stored."""
    first_writing, release_first = threading.Event(), threading.Event()
    stored: list[int] = []

    def write(items: Sequence[int]) -> None:
        if 1 in items:
            first_writing.set()
            release_first.wait(5)
        stored.extend(items)

    group: GroupCommit[int] = GroupCommit(write, writers=writers)
    one = threading.Thread(target=group.submit, args=(1,))
    one.start()
    assert first_writing.wait(5)
    two = threading.Thread(target=group.submit, args=(2,))
    two.start()
    two.join(0.5)  # long enough for a write of its own; a wait behind the first never ends
    assert two.is_alive() == (writers == 1)
    assert stored == ([] if writers == 1 else [2])
    release_first.set()
    for t in (one, two):
        t.join(5)
        assert not t.is_alive()
    assert sorted(stored) == [1, 2]


@pytest.mark.parametrize("arrives", [True, False])
def test_a_lingering_leader_writes_as_soon_as_nobody_is_on_the_way(arrives: bool) -> None:
    """A leader lingers (here up to 5 s) for the calls announced with ``expect``; the moment
    the last of them submits, or says it will not, the batch is written: one write with both
    items, or the leader's alone, long before the linger ends."""
    batches: list[list[int]] = []
    group: GroupCommit[int] = GroupCommit(batches.append, linger=5.0)  # type: ignore[arg-type]
    group.expect()  # the second call is on its way
    group.expect()  # the first, announced too
    started = time.monotonic()
    first = threading.Thread(target=group.submit, args=(1, True))
    first.start()
    time.sleep(0.1)  # the first leads and lingers
    assert batches == [] and first.is_alive()
    if arrives:
        group.submit(2, expected=True)
    else:
        group.unexpect()
    first.join(5)
    assert not first.is_alive()
    assert batches == ([[1, 2]] if arrives else [[1]])
    assert time.monotonic() - started < 2.5


def test_group_commit_failure_reaches_every_waiter_of_the_batch() -> None:
    def write(items: Sequence[int]) -> None:
        raise RuntimeError("database down")

    group: GroupCommit[int] = GroupCommit(write)
    with pytest.raises(WriteFailed):
        group.submit(1)
    with pytest.raises(WriteFailed):  # and the next caller leads a new write
        group.submit(2)


def test_a_read_record_the_database_cannot_take_answers_unavailable_and_returns_the_connection(
    tmp_path: Path,
) -> None:
    """The reads' group commit speaks to the driver directly: a driver error still reads as
    SQLAlchemy's (a lost database: UNAVAILABLE, which clients retry), the pooled connection
    goes back, and the next record is stored, queued for the linker and linked by it."""
    db = Database(f"sqlite:///{tmp_path}/scheduler.db", pool_size=1)
    try:
        upgrade("scheduler", db.engine)
        store = AuditStore("scheduler", audit_tables)
        trail = AuditTrail("scheduler", db, store, SystemClock())
        trail.journal = None  # the group commit, PostgreSQL's way, on this SQLite file
        append = store.append

        def lost(*_: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        store.append = lost  # type: ignore[method-assign,assignment]
        with pytest.raises(errors.Unavailable):
            trail.store_now(record(1).raw())
        store.append = append  # type: ignore[method-assign]
        connect = db.engine.raw_connection

        def unreachable() -> None:  # the pool's connect raises the driver's own error
            raise sqlite3.OperationalError("unable to open database file")

        db.engine.raw_connection = unreachable  # type: ignore[method-assign,assignment]
        with pytest.raises(errors.Unavailable):
            trail.store_now(record(3).raw())
        db.engine.raw_connection = connect  # type: ignore[method-assign]
        trail.store_now(record(2).raw())
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert trail.linker.link_all() == 1
        with db.engine.connect() as connection:
            linked = connection.execute(
                text(
                    "SELECT e.id FROM scheduler_audit_events e "
                    "JOIN scheduler_audit_chain c ON c.event_id = e.id"
                )
            )
            assert linked.scalars().all() == [record(2).id]
    finally:
        db.dispose()
