"""Memory per request is bounded by the contract: the worst request of each hostile class keeps
the servers' resident memory within 50 MB of where it was.

How it is measured: the servers run in this process (tests/integration/conftest.py), so the
process's peak resident set (VmHWM in /proc/self/status) covers them. The requests are built
first, the peak is reset to the current resident set (writing 5 to /proc/self/clear_refs), the
requests are sent, and the new peak minus the resident set before is the growth. Before the
contract one ReserveStock with rounding_band_percent "1E-999999999" alone grew it by ~1.8 GB.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.builders import plan_message
from tests.integration.conftest import Platform

LIMIT_BYTES = 50 * 1024 * 1024
STATUS = Path("/proc/self/status")
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak memory"
)


def _kib(name: str) -> int:
    found = re.search(rf"^{name}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    assert found is not None
    return int(found.group(1))


def _worst_requests(p: Platform) -> list[tuple[Any, Any]]:
    s, i = p.scheduler, p.inventory
    megabytes = "9" * 900_000  # the largest that fits a 1 MB message limit with room
    return [
        (i.ReserveStock, inv.ReserveStockRequest(grams="10", rounding_band_percent="1E-999999999")),
        (
            s.CreateTherapyPlan,
            pb.CreateTherapyPlanRequest(
                therapy_plan=plan_message("p", "s", "x", rounding_band_percent="1E-999999999"),
                request_id="m1",
            ),
        ),
        (i.ReserveStock, inv.ReserveStockRequest(grams="1e999999999", appointment_id="a")),
        (i.AmendReservation, inv.AmendReservationRequest(reservation_id="r", grams=megabytes)),
        (
            p.scheduler_service.UpsertDemandForecast,
            inv.UpsertDemandForecastRequest(
                forecasts=[inv.DemandForecast(grams="1e309", site_id="\x00")] * 20_000
            ),
        ),
        (
            p.scheduler_service.UpsertDemandForecast,
            inv.UpsertDemandForecastRequest(forecasts=[inv.DemandForecast(grams="1")] * 150_000),
        ),
        (i.GetProduct, inv.GetProductRequest(id=megabytes)),
        (s.CreatePatient, pb.CreatePatientRequest(patient=pb.Patient(mrn=megabytes))),
        (s.GetChairBoard, pb.GetChairBoardRequest(local_date=Date(year=9999, month=12, day=31))),
        (
            s.StartInfusion,
            pb.StartInfusionRequest(id="a", actual_start_time=Timestamp(seconds=253402300800)),
        ),
    ]


def test_the_worst_request_of_each_class_keeps_memory_growth_under_50_mb(
    platform: Platform,
) -> None:
    calls = _worst_requests(platform)
    for method, request in calls:  # warm up: first calls build caches that stay
        with pytest.raises(grpc.RpcError):
            method(request, timeout=30)
    Path("/proc/self/clear_refs").write_text("5")
    before = _kib("VmRSS")
    for _ in range(3):
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as refused:
                method(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    growth = (_kib("VmHWM") - before) * 1024
    assert growth < LIMIT_BYTES, f"peak resident memory grew by {growth / 2**20:.1f} MB"
