"""The request contract through real servers, on SQLite and PostgreSQL: each input a fuzzer once
turned into INTERNAL (or a memory blow-up) is INVALID_ARGUMENT naming the field and the rule,
the same on both databases, and errors stay small whatever the request held."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from google.type.date_pb2 import Date
from grpc_status import rpc_status

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.notify.v1 import notify_pb2 as npb
from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.builders import make_patient, make_site, plan_message
from tests.integration.conftest import Platform
from tests.integration.errors import detail, field_violations
from tests.integration.notify_conftest import (  # noqa: F401
    NotifyServer,
    lot_expiring,
    notify_factory,
    notify_server,
)

END_OF_TIME = Date(year=9999, month=12, day=31)
START_OF_TIME = Date(year=1, month=1, day=1)
YEAR_10000 = Timestamp(seconds=253402300800)
NEGATIVE_NANOS = Timestamp(seconds=1_795_000_000, nanos=-1)
HUGE = ["1e309", "1e999999999", "9" * 400]


def refused(method: Callable[[Any], Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        method(request)
    return caught.value


def rules(error: grpc.RpcError) -> dict[str, str]:
    """field path → rule, from the BadRequest of an INVALID_ARGUMENT."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    bad = detail(error, error_details_pb2.BadRequest)
    assert bad is not None
    return {v.field: v.reason for v in bad.field_violations}


def test_dates_at_the_calendar_edges_are_invalid_arguments(platform: Platform) -> None:
    s = platform.scheduler
    for edge in (END_OF_TIME, START_OF_TIME):
        calls: list[tuple[Callable[[Any], Any], Any, str]] = [
            (s.GetChairBoard, pb.GetChairBoardRequest(site_id="S", local_date=edge), "local_date"),
            (
                s.PlanSchedule,
                pb.PlanScheduleRequest(site_id="S", start_date=edge, horizon_days=7),
                "start_date",
            ),
            (s.ListChairBlocks, pb.ListChairBlocksRequest(site_id="S", end_date=edge), "end_date"),
            (
                s.RescheduleAppointment,
                pb.RescheduleAppointmentRequest(id="A", local_date=edge, request_id="r"),
                "local_date",
            ),
        ]
        for method, request, field in calls:
            assert rules(refused(method, request)) == {field: "date.range"}


def test_timestamps_out_of_range_are_invalid_arguments(
    platform: Platform,
    notify_server: NotifyServer,  # noqa: F811
) -> None:
    s, i = platform.scheduler, platform.inventory
    for bad in (YEAR_10000, NEGATIVE_NANOS):
        start = pb.StartInfusionRequest(id="any", request_id="r1", actual_start_time=bad)
        assert rules(refused(s.StartInfusion, start)) == {"actual_start_time": "timestamp.range"}
        complete = pb.CompleteInfusionRequest(id="any", request_id="r1", actual_end_time=bad)
        assert rules(refused(s.CompleteInfusion, complete)) == {
            "actual_end_time": "timestamp.range"
        }
        dispense = inv.DispenseReservationRequest(
            reservation_id="any", request_id="r1", administered_time=bad
        )
        assert rules(refused(i.DispenseReservation, dispense)) == {
            "administered_time": "timestamp.range"
        }
        for field in ("send_after", "expires_at"):
            publish = npb.PublishRequest(
                topic=npb.TOPIC_LOT_EXPIRING, payload=lot_expiring(), request_id="r1"
            )
            getattr(publish, field).CopyFrom(bad)
            assert rules(refused(notify_server.stub.Publish, publish)) == {field: "timestamp.range"}


def test_huge_and_tiny_decimals_are_refused_before_any_arithmetic(platform: Platform) -> None:
    i, s = platform.inventory, platform.scheduler
    for grams in HUGE:
        upsert = inv.UpsertDemandForecastRequest(
            request_id="r2", forecasts=[inv.DemandForecast(grams=grams)]
        )
        assert rules(refused(platform.scheduler_service.UpsertDemandForecast, upsert)) == {
            "forecasts[0].grams": "string.pattern"
        }
        reserve = inv.ReserveStockRequest(appointment_id="a", grams=grams)
        assert rules(refused(i.ReserveStock, reserve)).keys() == {"grams"}
        amend = inv.AmendReservationRequest(reservation_id="r", grams=grams, request_id="r3")
        assert rules(refused(i.AmendReservation, amend)).keys() == {"grams"}
    tiny = inv.ReserveStockRequest(
        appointment_id="a", grams="10", rounding_band_percent="1E-999999999"
    )
    assert rules(refused(i.ReserveStock, tiny)).keys() == {"rounding_band_percent"}
    exponent = inv.ReserveStockRequest(
        appointment_id="a", grams="1E+1", rounding_band_percent="1E1"
    )
    assert rules(refused(i.ReserveStock, exponent)) == {
        "grams": "string.pattern",
        "rounding_band_percent": "string.pattern",
    }
    plan = plan_message("p", "s", "gammagard-liquid", rounding_band_percent="1E-999999999")
    create = pb.CreateTherapyPlanRequest(therapy_plan=plan, request_id="r4")
    assert rules(refused(s.CreateTherapyPlan, create)).keys() == {
        "therapy_plan.rounding_band_percent"
    }


def test_nul_and_control_characters_are_refused_alike_on_both_databases(
    platform: Platform,
) -> None:
    s = platform.scheduler
    assert rules(refused(s.GetPatient, pb.GetPatientRequest(id="A\x00B"))) == {
        "id": "string.pattern"
    }
    site = make_site(platform)
    lookup = pb.ListPatientsRequest(organisation_id="org\x00", mrn="M\x00")
    assert rules(refused(s.ListPatients, lookup)) == {
        "organisation_id": "string.pattern",
        "mrn": "default.single_line",
    }
    chair = pb.CreateChairRequest(
        chair=pb.Chair(site_id=site.id, display_name="Chair\x00"), request_id="r\x00"
    )
    assert rules(refused(s.CreateChair, chair)) == {
        "chair.display_name": "default.single_line",
        "request_id": "string.pattern",
    }
    note = inv.RecordWasteRequest(
        lot_id="L", vials=1, reason=inv.WASTE_REASON_OTHER, note="a\x00b", request_id="r"
    )
    assert rules(refused(platform.inventory.RecordWaste, note)) == {"note": "string.pattern"}


def test_free_text_keeps_line_breaks_and_a_valid_absent_id_is_not_found(
    platform: Platform,
) -> None:
    missing = refused(platform.scheduler.GetPatient, pb.GetPatientRequest(id="A-B"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    cancel = pb.CancelAppointmentRequest(
        id="nope", reason="line one\nline two\tend", request_id="r"
    )
    assert refused(platform.scheduler.CancelAppointment, cancel).code() == (
        grpc.StatusCode.NOT_FOUND
    )


def test_over_long_strings_are_refused_at_the_declared_limit(platform: Platform) -> None:
    s, i = platform.scheduler, platform.inventory
    site = make_site(platform)
    patient = pb.Patient(
        organisation_id="org-1",
        mrn="M" * 100_000,
        family_name="F",
        birth_date=Date(year=1970, month=1, day=1),
        sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
    )
    create = pb.CreatePatientRequest(patient=patient, request_id="r5")
    assert rules(refused(s.CreatePatient, create)) == {"patient.mrn": "string.max_len"}
    create.patient.mrn = "M" * 100  # the column's length: accepted
    assert s.CreatePatient(create).patient.mrn == "M" * 100
    chair = pb.CreateChairRequest(
        chair=pb.Chair(site_id=site.id, display_name="C" * 201), request_id="r6"
    )
    assert rules(refused(s.CreateChair, chair)) == {"chair.display_name": "string.max_len"}
    receive = inv.ReceiveStockRequest(
        site_id="site-1", lot_number="L" * 41, actor="a" * 201, request_id="r7"
    )
    assert rules(refused(i.ReceiveStock, receive)) == {
        "lot_number": "string.max_len",
        "actor": "string.max_len",
    }
    reserve = inv.ReserveStockRequest(appointment_id="a" * 41, grams="10")
    assert rules(refused(i.ReserveStock, reserve)) == {"appointment_id": "string.max_len"}
    waste = inv.RecordWasteRequest(lot_id="L", note="n" * 1001, request_id="r8")
    assert rules(refused(i.RecordWaste, waste)) == {"note": "string.max_len"}


def _trailer_bytes(error: grpc.RpcError) -> int:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    return len(status.SerializeToString())


def test_errors_never_echo_the_input_at_length(platform: Platform) -> None:
    i = platform.inventory
    # 900,000 characters: under a 1 MB message limit, far over any field's
    huge_id = refused(i.GetProduct, inv.GetProductRequest(id="x" * 900_000))
    assert rules(huge_id) == {"id": "string.max_len"}
    assert _trailer_bytes(huge_id) < 1_000 and "xxxxx" not in (huge_id.details() or "")
    absent = refused(i.GetProduct, inv.GetProductRequest(id="y" * 40))
    assert absent.code() == grpc.StatusCode.NOT_FOUND
    info = detail(absent, error_details_pb2.ResourceInfo)
    assert info is not None and len(info.resource_name) <= 64
    many = inv.UpsertDemandForecastRequest(
        request_id="r9", forecasts=[inv.DemandForecast(grams="x")] * 10_000
    )
    bad = refused(platform.scheduler_service.UpsertDemandForecast, many)
    assert len(rules(bad)) == 20
    assert (bad.details() or "").endswith("; and 9980 more")
    assert _trailer_bytes(bad) < 10_000
    too_many = inv.UpsertDemandForecastRequest(
        request_id="r9", forecasts=[inv.DemandForecast(grams="x")] * 20_001
    )
    assert rules(refused(platform.scheduler_service.UpsertDemandForecast, too_many)) == {
        "forecasts": "repeated.max_items"
    }


def test_enums_must_be_defined_and_a_patient_outside_the_calendar_is_refused(
    platform: Platform,
) -> None:
    request = inv.ListProductsRequest(ig_class=99)  # type: ignore[arg-type]
    assert rules(refused(platform.inventory.ListProducts, request)) == {
        "ig_class": "enum.defined_only"
    }
    old = refused(
        lambda birth: make_patient(platform, mrn="OLD", birth=birth),
        Date(year=1899, month=12, day=31),
    )
    assert field_violations(old) == ["patient.birth_date"]


def test_a_forged_page_token_with_a_nul_key_is_refused(platform: Platform) -> None:
    forged = base64.urlsafe_b64encode(json.dumps({"s": "sites:", "k": ["A\x00B"]}).encode())
    request = pb.ListSitesRequest(page_token=forged.decode())
    assert field_violations(refused(platform.scheduler.ListSites, request)) == ["page_token"]
