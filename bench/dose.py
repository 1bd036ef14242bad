"""The CalculateDose request the benchmarks load: a 100 kg patient's 2-day induction of
Gammagard Liquid, with the site, patient, measurement and plan it needs made through the RPCs."""

from __future__ import annotations

from google.type.date_pb2 import Date

from bench.harness import ORG, channel
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc


def prepare_dose_request(scheduler: str, inventory: str, token: str) -> pb.CalculateDoseRequest:
    sch = scheduler_pb2_grpc.SchedulerServiceStub(channel(scheduler, token))
    inv_stub = inventory_pb2_grpc.InventoryServiceStub(channel(inventory, token))
    product = inv_stub.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product
    site = sch.CreateSite(
        pb.CreateSiteRequest(
            request_id="bench-site",
            site=pb.Site(organisation_id=ORG, display_name="Bench unit", time_zone="Europe/London"),
        )
    ).site
    patient = sch.CreatePatient(
        pb.CreatePatientRequest(
            request_id="bench-patient",
            patient=pb.Patient(
                organisation_id=ORG,
                mrn="B-1",
                family_name="Bench",
                birth_date=Date(year=1970, month=1, day=1),
                sex_at_birth=pb.SEX_AT_BIRTH_MALE,
            ),
        )
    ).patient
    sch.RecordMeasurement(
        pb.RecordMeasurementRequest(
            request_id="bench-m",
            measurement=pb.Measurement(
                patient_id=patient.id,
                measured_on=Date(year=2026, month=1, day=1),
                weight_kg="100",
                height_cm="175",
            ),
        )
    )
    plan = sch.CreateTherapyPlan(
        pb.CreateTherapyPlanRequest(
            request_id="bench-plan",
            therapy_plan=pb.TherapyPlan(
                patient_id=patient.id,
                site_id=site.id,
                indication=pb.INDICATION_MMN,
                route=pb.ROUTE_IV,
                product_id=product.id,
                dose_basis=pb.DOSE_BASIS_G_PER_KG,
                maintenance_dose="1",
                interval_days=28,
                start_date=Date(year=2026, month=2, day=1),
                induction=pb.InductionCourse(total_g_per_kg="2", days=2),
            ),
        )
    ).therapy_plan
    request = pb.CalculateDoseRequest(
        therapy_plan_id=plan.id,
        dosing_date=Date(year=2026, month=2, day=1),
        course=pb.COURSE_KIND_INDUCTION,
    )
    sch.CalculateDose(request)  # fails loudly here rather than as load errors
    return request
