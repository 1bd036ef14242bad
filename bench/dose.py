"""The CalculateDose request the benchmarks load: a 100 kg patient's 2-day induction of
Gammagard Liquid, with the site, patient, measurement and plan it needs made through the RPCs."""

from __future__ import annotations

import datetime as dt

from google.type.date_pb2 import Date

from bench.harness import ORG, channel
from demo.builder import Builder
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc


def prepare_dose_request(scheduler: str, inventory: str, token: str) -> pb.CalculateDoseRequest:
    sch = scheduler_pb2_grpc.SchedulerServiceStub(channel(scheduler, token))
    inv_stub = inventory_pb2_grpc.InventoryServiceStub(channel(inventory, token))
    build = Builder(sch, inv_stub, ORG, ids=lambda label: f"bench-{label}")
    site = build.site(name="Bench unit")
    _, plan = build.enrol(
        "B-1",
        site.id,
        build.product_id("gammagard-liquid"),
        dt.date(2026, 2, 1),
        measured_on=dt.date(2026, 1, 1),
        weight="100",
        height="175",
        given="",
        family="Bench",
        born=dt.date(1970, 1, 1),
        sex=pb.SEX_AT_BIRTH_MALE,
        plan={"induction": pb.InductionCourse(total_g_per_kg="2", days=2)},
    )
    request = pb.CalculateDoseRequest(
        therapy_plan_id=plan.id,
        dosing_date=Date(year=2026, month=2, day=1),
        course=pb.COURSE_KIND_INDUCTION,
    )
    sch.CalculateDose(request)  # fails loudly here rather than as load errors
    return request
