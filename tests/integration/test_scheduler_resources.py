"""Sites, chairs, patients, measurements and plans through a real gRPC server (SQLite and
PostgreSQL): validation, idempotency, etags, pagination, versions and the due list."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.type.dayofweek_pb2 import DayOfWeek
from google.type.timeofday_pb2 import TimeOfDay

from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from tests.integration.builders import (
    date,
    make_patient,
    make_plan,
    make_site,
    measure,
    plan_message,
    product_id,
)
from tests.integration.conftest import Platform, request_id
from tests.integration.errors import (
    error_metadata,
    error_reason,
    field_violations,
    precondition_types,
)


def test_site_bad_time_zone_and_overlapping_hours_list_both_fields(platform: Platform) -> None:
    site = pb.Site(
        organisation_id="org-1",
        display_name="X",
        time_zone="Atlantis/Capital",
        opening_hours=[
            pb.OpeningHours(
                day=DayOfWeek.MONDAY, open=TimeOfDay(hours=8), close=TimeOfDay(hours=12)
            ),
            pb.OpeningHours(
                day=DayOfWeek.MONDAY, open=TimeOfDay(hours=11), close=TimeOfDay(hours=15)
            ),
        ],
    )
    with pytest.raises(grpc.RpcError) as caught:
        platform.scheduler.CreateSite(pb.CreateSiteRequest(site=site, request_id=request_id()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["site.time_zone", "site.opening_hours[1]"]
    listed = platform.scheduler.ListSites(pb.ListSitesRequest(organisation_id="org-1"))
    assert len(listed.sites) == 0  # nothing written


def test_site_update_with_etag_and_pagination(platform: Platform) -> None:
    sites = [make_site(platform) for _ in range(3)]
    first = platform.scheduler.ListSites(pb.ListSitesRequest(organisation_id="org-1", page_size=2))
    second = platform.scheduler.ListSites(
        pb.ListSitesRequest(organisation_id="org-1", page_size=2, page_token=first.next_page_token)
    )
    assert [s.id for s in first.sites] + [s.id for s in second.sites] == sorted(s.id for s in sites)
    assert second.next_page_token == ""
    site = sites[0]
    patch = pb.Site(id=site.id, etag=site.etag, time_zone="America/New_York")
    updated = platform.scheduler.UpdateSite(
        pb.UpdateSiteRequest(
            site=patch, update_mask=FieldMask(paths=["time_zone"]), request_id=request_id()
        )
    ).site
    assert updated.time_zone == "America/New_York" and updated.display_name == "Day unit"
    assert len(updated.opening_hours) == 5
    with pytest.raises(grpc.RpcError) as stale:
        platform.scheduler.UpdateSite(
            pb.UpdateSiteRequest(
                site=patch, update_mask=FieldMask(paths=["time_zone"]), request_id=request_id()
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(stale.value) == "STALE_ETAG"
    assert error_metadata(stale.value)["current_etag"] == updated.etag


def test_chairs_belong_to_an_existing_site(platform: Platform) -> None:
    site = make_site(platform)
    chair = platform.scheduler.CreateChair(
        pb.CreateChairRequest(
            request_id=request_id(),
            chair=pb.Chair(site_id=site.id, display_name="Chair 1", active=True),
        )
    ).chair
    assert chair.site_id == site.id and chair.active
    with pytest.raises(grpc.RpcError) as dup:
        platform.scheduler.CreateChair(
            pb.CreateChairRequest(
                request_id=request_id(), chair=pb.Chair(site_id=site.id, display_name="Chair 1")
            )
        )
    assert dup.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(dup.value) == "DUPLICATE_CHAIR_NAME"
    with pytest.raises(grpc.RpcError) as missing:
        platform.scheduler.CreateChair(
            pb.CreateChairRequest(
                request_id=request_id(), chair=pb.Chair(site_id="no-such-site", display_name="C")
            )
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(missing.value) == "RESOURCE_NOT_FOUND"
    assert error_metadata(missing.value)["resource_type"] == "site"
    chairs = platform.scheduler.ListChairs(pb.ListChairsRequest(site_id=site.id)).chairs
    assert [c.id for c in chairs] == [chair.id]


def test_patient_idempotency_and_duplicate_mrn(platform: Platform) -> None:
    rid = request_id()
    body = pb.Patient(
        organisation_id="org-1",
        mrn="MRN-7",
        family_name="Example",
        birth_date=date(1980, 1, 2),
        sex_at_birth=pb.SEX_AT_BIRTH_MALE,
    )
    first = platform.scheduler.CreatePatient(pb.CreatePatientRequest(patient=body, request_id=rid))
    retry = platform.scheduler.CreatePatient(pb.CreatePatientRequest(patient=body, request_id=rid))
    assert retry.patient == first.patient
    with pytest.raises(grpc.RpcError) as dup:
        platform.scheduler.CreatePatient(
            pb.CreatePatientRequest(patient=body, request_id=request_id())
        )
    assert dup.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(dup.value) == "DUPLICATE_MRN"
    other_org = pb.Patient()
    other_org.CopyFrom(body)
    other_org.organisation_id = "org-2"
    # org-1's operator cannot create in org-2 (docs/security.md, "Scope") ...
    with pytest.raises(grpc.RpcError) as denied:
        platform.scheduler.CreatePatient(
            pb.CreatePatientRequest(patient=other_org, request_id=request_id())
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(denied.value) == "OUT_OF_SCOPE"
    # ... org-2's may, with the same MRN and even the same request_id
    org_2 = platform.issuer.channel(
        platform.scheduler_address, platform.issuer.operator_token("org-2")
    )
    try:
        created = scheduler_pb2_grpc.SchedulerServiceStub(org_2).CreatePatient(
            pb.CreatePatientRequest(patient=other_org, request_id=rid)
        )
    finally:
        org_2.close()
    assert created.patient.id != first.patient.id
    assert created.patient.organisation_id == "org-2"
    body.mrn = "MRN-8"
    with pytest.raises(grpc.RpcError) as reused:
        platform.scheduler.CreatePatient(pb.CreatePatientRequest(patient=body, request_id=rid))
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(reused.value) == ["request_id"]


def test_patients_listed_by_id_are_those_asked_for_in_the_callers_scope(
    platform: Platform,
) -> None:
    """The console names a board's 90 patients in one call: ListPatients filtered by ids.
    Unknown and other organisations' ids are absent (no existence leak); a page token is bound
    to the ids it was issued for."""
    mine = [make_patient(platform, f"IDS-{n}") for n in range(3)]
    org_2 = platform.issuer.channel(
        platform.scheduler_address, platform.issuer.operator_token("org-2")
    )
    try:
        theirs = (
            scheduler_pb2_grpc.SchedulerServiceStub(org_2)
            .CreatePatient(
                pb.CreatePatientRequest(
                    patient=pb.Patient(
                        organisation_id="org-2",
                        mrn="IDS-X",
                        family_name="Other",
                        birth_date=date(1980, 1, 2),
                        sex_at_birth=pb.SEX_AT_BIRTH_MALE,
                    ),
                    request_id=request_id(),
                )
            )
            .patient
        )
    finally:
        org_2.close()
    asked = [mine[2].id, mine[0].id, theirs.id, "no-such-patient"]
    listed = platform.scheduler.ListPatients(pb.ListPatientsRequest(ids=asked))
    assert sorted(p.id for p in listed.patients) == sorted([mine[0].id, mine[2].id])
    assert not listed.next_page_token
    first = platform.scheduler.ListPatients(pb.ListPatientsRequest(ids=asked, page_size=1))
    second = platform.scheduler.ListPatients(
        pb.ListPatientsRequest(ids=asked, page_size=1, page_token=first.next_page_token)
    )
    assert {first.patients[0].id, second.patients[0].id} == {mine[0].id, mine[2].id}
    with pytest.raises(grpc.RpcError) as other_query:
        platform.scheduler.ListPatients(
            pb.ListPatientsRequest(ids=[mine[1].id], page_token=first.next_page_token)
        )
    assert other_query.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(other_query.value) == ["page_token"]
    with pytest.raises(grpc.RpcError) as too_many:
        platform.scheduler.ListPatients(pb.ListPatientsRequest(ids=[f"p{n}" for n in range(501)]))
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(too_many.value) == ["ids"]


def test_measurement_bands(platform: Platform) -> None:
    patient = make_patient(platform)
    with pytest.raises(grpc.RpcError) as caught:
        measure(platform, patient.id, weight="401", height="39")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["measurement.weight_kg", "measurement.height_cm"]
    measure(platform, patient.id, "70", "170", on=date(2026, 10, 1))
    measure(platform, patient.id, "72.5", "170", on=date(2026, 11, 1))
    listed = platform.scheduler.ListMeasurements(pb.ListMeasurementsRequest(patient_id=patient.id))
    assert [m.weight_kg for m in listed.measurements] == ["72.5", "70"]  # newest first


def test_plan_validation_references_and_versions(platform: Platform) -> None:
    site = make_site(platform)
    patient = make_patient(platform)
    gammagard = product_id(platform, "gammagard-liquid")
    with pytest.raises(grpc.RpcError) as bad:
        make_plan(
            platform,
            plan_message(patient.id, site.id, gammagard, maintenance_dose="3", interval_days=0),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == [
        "therapy_plan.maintenance_dose",
        "therapy_plan.interval_days",
    ]
    with pytest.raises(grpc.RpcError) as refs:
        make_plan(platform, plan_message(patient.id, "no-site", "no-product"))
    assert refs.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_types(refs.value) == ["SITE_EXISTS", "PRODUCT_EXISTS"]

    plan = make_plan(platform, plan_message(patient.id, site.id, gammagard))
    assert plan.version == 1 and plan.status == pb.PLAN_STATUS_ACTIVE
    assert plan.window_days_early == 4 and plan.rounding_band_percent == "10"
    v2 = platform.scheduler.UpdateTherapyPlan(
        pb.UpdateTherapyPlanRequest(
            therapy_plan=pb.TherapyPlan(id=plan.id, etag=plan.etag, interval_days=21),
            update_mask=FieldMask(paths=["interval_days"]),
            request_id=request_id(),
            reason="wearing-off at week 3",
        )
    ).therapy_plan
    assert (v2.version, v2.interval_days, v2.maintenance_dose) == (2, 21, "1")
    old = platform.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id, version=1))
    assert old.therapy_plan.interval_days == 28
    with pytest.raises(grpc.RpcError) as immutable:
        platform.scheduler.UpdateTherapyPlan(
            pb.UpdateTherapyPlanRequest(
                therapy_plan=pb.TherapyPlan(id=plan.id, etag=v2.etag, patient_id="x"),
                update_mask=FieldMask(paths=["patient_id"]),
                request_id=request_id(),
            )
        )
    assert immutable.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_due_list_orders_by_due_date_with_induction_days_first(platform: Platform) -> None:
    # Clock: 24 Nov 2026 (conftest). Horizon 28 days → until 22 Dec.
    site = make_site(platform)
    gammagard = product_id(platform, "gammagard-liquid")
    a = make_patient(platform, mrn="A")
    b = make_patient(platform, mrn="B")
    induction = make_plan(
        platform,
        plan_message(
            a.id,
            site.id,
            gammagard,
            start_date=date(2026, 12, 7),
            induction=pb.InductionCourse(total_g_per_kg="2", days=2),
        ),
    )
    maintenance = make_plan(
        platform,
        plan_message(
            b.id,
            site.id,
            gammagard,
            start_date=date(2026, 11, 20),
            interval_days=21,
            last_infusion_date=date(2026, 11, 10),
        ),
    )
    due = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=site.id))
    rows = [(d.therapy_plan_id, d.course_day, d.due_date.day) for d in due.due_infusions]
    # B: 10 Nov + 21 = 1 Dec; A: induction 7 and 8 Dec
    assert rows == [(maintenance.id, 0, 1), (induction.id, 1, 7), (induction.id, 2, 8)]
    assert due.as_of == date(2026, 11, 24)
    page = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, page_size=2)
    )
    rest = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, page_size=2, page_token=page.next_page_token)
    )
    assert [d.course_day for d in page.due_infusions] + [
        d.course_day for d in rest.due_infusions
    ] == [0, 1, 2]
    short = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=7)
    )
    assert [d.therapy_plan_id for d in short.due_infusions] == [maintenance.id]


def test_due_list_uses_the_sites_local_date(platform: Platform) -> None:
    # 05:00 UTC on 25 Nov is still 21:00 on 24 Nov in Los Angeles (UTC−8 in November)
    platform.clock.set(dt.datetime(2026, 11, 25, 5, 0, tzinfo=dt.UTC))
    la = make_site(platform, tz="America/Los_Angeles")
    london = make_site(platform, tz="Europe/London")
    as_of_la = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=la.id)).as_of
    as_of_london = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=london.id)
    ).as_of
    assert (as_of_la.day, as_of_london.day) == (24, 25)
