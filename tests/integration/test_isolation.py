"""Two organisations on one platform (scheduler, inventory, notify on SQLite and PostgreSQL):
organisation B's callers, holding every permission a person or hospital system can hold, call
every RPC of the three services — walked from the service descriptors, so a new RPC fails here
until it is covered or listed as organisation-less — naming organisation A's ids
(docs/security.md, "Scope"):

- an id of A's answers exactly as an id that does not exist (the same status code), and for
  the RPCs in NOT_FOUND that is NOT_FOUND: nothing tells B that A's id exists;
- no reply that B gets (a list, report, forecast, recipient list, event, notification or
  the Subscribe stream) holds any of A's ids;
- B's own data stays visible to B, and A's data is unchanged by B's attempts.

A site-limited nurse of A (sites = [one site]) sees the other site of A as missing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay

from infusion.audit.v1 import audit_pb2, audit_pb2_grpc
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.policy import SERVICES, declared
from services.common.auth.roles import Roles
from services.common.convert import from_datetime
from services.issuer.issuer import OPERATOR_ROLES
from tests.integration.builders import (
    book,
    measure,
    patient_plan,
    plan_message,
    site_with_chairs,
)
from tests.integration.conftest import NOW, Platform, request_id, stock_site

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.notify_conftest import (  # noqa: E402
    Factory,
    lot_expiring,
    notify_factory,  # noqa: F401 (fixture)
    subscriber,
)

ORG_A, ORG_B = "org-a", "org-b"
LOT = "SHARED-LOT-1"  # both organisations hold a lot of this number: a recall stays apart
DAY = dt.date(2026, 12, 1)

# RPCs with nothing of an organisation's: the catalogue is shared reference data
ORGANISATION_LESS = {"CreateProduct", "GetProduct", "ListProducts", "UpdateProduct"}
# The audit trail: every service serves it, only to auditors (its own test below)
AUDIT_TRAIL = {"ListAuditEvents"}
# Naming another organisation where one creates: PERMISSION_DENIED (OUT_OF_SCOPE), with
# nothing to hide (the caller named it)
DENIED = {"CreateSite", "CreatePatient", "CreateSubscriber"}
# Asked for one of A's resources by id (or for what is at A's site): NOT_FOUND
NOT_FOUND = {
    "GetSite",
    "UpdateSite",
    "GetChair",
    "ListChairs",
    "UpdateChair",
    "CreateChair",
    "GetPatient",
    "RecordOutcome",
    "ListOutcomes",
    "ListDueReviews",
    "RecordReviewDecision",
    "ProposeRegimenAdjustment",
    "AcceptRegimenProposal",
    "UpdatePatient",
    "RecordMeasurement",
    "ListMeasurements",
    "GetTherapyPlan",
    "UpdateTherapyPlan",
    "CalculateDose",
    "ListDueInfusions",
    "ListChairBlocks",
    "DeleteChairBlock",
    "CreateChairBlock",
    "FindSlots",
    "HoldSlot",
    "BookAppointment",
    "BookInductionCourse",
    "CheckIn",
    "StartInfusion",
    "CompleteInfusion",
    "MarkNoShow",
    "CancelAppointment",
    "RescheduleAppointment",
    "GetAppointment",
    "GetChairBoard",
    "PlanSchedule",
    "ConvertRegimen",
    "SetPlanAuthorisation",
    "SetPayerCaps",
    "RecordHomeInfusion",
    "GetPlanCoverage",
    "GetLot",
    "QuarantineLot",
    "ReleaseLot",
    "RecordCount",
    "ReverseMovement",
    "GetStockLevels",
    "GetStockSite",
    "ListStorageUnits",
    "AmendReservation",
    "ReleaseReservation",
    "GetReservation",
    "DispenseReservation",
    "RecordWaste",
    "TransferStock",
    "ReturnToSupplier",
    "GetPurchaseOrder",
    "ReceivePurchaseOrder",
    "CancelPurchaseOrder",
    "GetSubscriber",
    "UpdateSubscriber",
    "CancelNotification",
    "GetNotification",
}
# CreateStockSite names a new site's id: A's id is taken (ALREADY_EXISTS), which tells B no
# more than that a random id is in use (docs/security.md, "Scope")
ID_TAKEN = {"CreateStockSite"}


@dataclass
class Caller:
    """One organisation's stubs: a person with every person's role, a hospital system."""

    p: Platform  # the platform with this organisation's operator stubs
    notify: notify_pb2_grpc.NotifyServiceStub  # as the organisation's operator
    system: dict[str, Any]  # service full name -> stub as its hospital system (integration)
    person: dict[str, Any]  # service full name -> stub as its operator
    channels: list[grpc.Channel]


@dataclass
class World:
    platform: Platform
    a: Caller
    b: Caller
    a_ids: dict[str, str]  # A's resources
    b_ids: dict[str, str]  # B's resources (B's own view must show them)
    notify_address: str


def _caller(platform: Platform, notify_address: str, org: str) -> Caller:
    issuer = platform.issuer
    operator = issuer.operator_token(org)
    system = issuer.integration_token(org)
    channels = []

    def stubs(token: str) -> dict[str, Any]:
        made = {}
        for stub, address in (
            (scheduler_pb2_grpc.SchedulerServiceStub, platform.scheduler_address),
            (inventory_pb2_grpc.InventoryServiceStub, platform.inventory_address),
            (notify_pb2_grpc.NotifyServiceStub, notify_address),
        ):
            channel = issuer.channel(address, token)
            channels.append(channel)
            made[stub.__name__.removesuffix("Stub")] = stub(channel)
        return made

    person = stubs(operator)
    return Caller(
        p=dataclasses.replace(
            platform, scheduler=person["SchedulerService"], inventory=person["InventoryService"]
        ),
        notify=person["NotifyService"],
        system={
            f"infusion.{k.lower().removesuffix('service')}.v1.{k}": v
            for k, v in stubs(system).items()
        },
        person={
            f"infusion.{k.lower().removesuffix('service')}.v1.{k}": v for k, v in person.items()
        },
        channels=channels,
    )


def _date(day: dt.date) -> Date:
    return Date(year=day.year, month=day.month, day=day.day)


GBP = Money(currency_code="GBP", units=340)


def _organisation_data(c: Caller, platform: Platform, org: str, mrn: str) -> dict[str, str]:
    """A site with chairs, a patient with a plan, a booking with its reservation, stock, a
    storage unit, a block, a policy, an order, a forecast, a dispensed dose, a subscriber and
    a notification: one of everything an organisation owns."""
    p = c.p
    site, chairs = site_with_chairs(p, org=org)
    stock_site(p, site.id)
    plan = patient_plan(p, site, mrn, org=org)
    unit = p.inventory.CreateStorageUnit(
        inv.CreateStorageUnitRequest(
            storage_unit=inv.StorageUnit(
                site_id=site.id, display_name="Fridge", storage=inv.STORAGE_KIND_REFRIGERATED
            ),
            request_id=request_id(),
        )
    ).storage_unit
    lot = p.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site.id,
            product_id=plan.product_id,
            presentation_grams="10",
            lot_number=LOT,
            expiry_date=Date(year=2028, month=1, day=31),
            vials=20,
            unit_cost=GBP,
            request_id=request_id(),
        )
    ).lot
    appointment = book(p, plan, chairs[0], DAY, 9)
    reservation = platform.scheduler_service.ReserveStock(
        inv.ReserveStockRequest(
            appointment_id=appointment.id,
            site_id=site.id,
            patient_id=plan.patient_id,
            product_id=plan.product_id,
            grams="70",
            needed_on=_date(DAY),
        )
    ).reservation
    # a second reservation, dispensed, so the lot has a recipient
    given = platform.scheduler_service.ReserveStock(
        inv.ReserveStockRequest(
            appointment_id=f"given-{appointment.id[-30:]}",
            site_id=site.id,
            patient_id=plan.patient_id,
            product_id=plan.product_id,
            grams="10",
            needed_on=_date(NOW.date()),
        )
    ).reservation
    platform.scheduler_service.DispenseReservation(
        inv.DispenseReservationRequest(
            reservation_id=given.id,
            vials=[inv.DispensedVials(lot_id=lot.id, vials=1)],
            grams_administered="10",
            patient_id=plan.patient_id,
            appointment_id=given.appointment_id,
            administered_time=from_datetime(NOW),
            request_id=request_id(),
        )
    )
    block = p.scheduler.CreateChairBlock(
        pb.CreateChairBlockRequest(
            chair_block=pb.ChairBlock(
                chair_id=chairs[1].id,
                start_time=from_datetime(dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC)),
                end_time=from_datetime(dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)),
                reason="service",
            ),
            request_id=request_id(),
        )
    ).chair_block
    p.inventory.SetReorderPolicy(
        inv.SetReorderPolicyRequest(
            policy=inv.ReorderPolicy(
                site_id=site.id,
                product_id=plan.product_id,
                lead_time_days=7,
                safety_stock_grams="20",
                review_period_days=7,
                order_presentation_grams="10",
                case_vials=4,
                maximum_grams="0",
            ),
            request_id=request_id(),
        )
    )
    order = p.inventory.CreatePurchaseOrder(
        inv.CreatePurchaseOrderRequest(
            purchase_order=inv.PurchaseOrder(
                site_id=site.id,
                supplier="BPL Wholesale",
                expected_date=_date(DAY),
                reference=f"PO-{org}",
                lines=[
                    inv.PurchaseOrderLine(
                        product_id=plan.product_id,
                        presentation_grams="10",
                        vials_ordered=4,
                        unit_cost=GBP,
                    )
                ],
            ),
            request_id=request_id(),
        )
    ).purchase_order
    platform.scheduler_service.UpsertDemandForecast(
        inv.UpsertDemandForecastRequest(
            forecasts=[
                inv.DemandForecast(
                    site_id=site.id, product_id=plan.product_id, day=_date(DAY), grams="30"
                )
            ],
            request_id=request_id(),
        )
    )
    movement = p.inventory.ListMovements(inv.ListMovementsRequest(lot_id=lot.id)).movements[0]
    staff = c.notify.CreateSubscriber(
        npb.CreateSubscriberRequest(
            subscriber=subscriber(
                external_ref=f"staff-{org}",
                preferences=[
                    npb.Preference(topic=npb.TOPIC_LOT_EXPIRING, channels=[npb.CHANNEL_EMAIL])
                ],
            ),
            request_id=request_id(),
        )
    ).subscriber
    # the person's own subscriber (the same subject in both organisations: two users)
    mine = c.notify.UpdateMyNotificationSettings(
        npb.UpdateMyNotificationSettingsRequest(
            settings=npb.MyNotificationSettings(
                time_zone="Europe/London",
                email=f"me-{org}@example.org",
                preferences=[
                    npb.Preference(topic=npb.TOPIC_LOT_EXPIRING, channels=[npb.CHANNEL_EMAIL])
                ],
            ),
            request_id=request_id(),
        )
    ).settings
    notification = (
        c.system["infusion.notify.v1.NotifyService"]
        .Publish(
            npb.PublishRequest(
                topic=npb.TOPIC_LOT_EXPIRING,
                payload=lot_expiring(site=site.id, lot=LOT),
                dedupe_key=f"expiring-{LOT}",
                request_id=request_id(),
            )
        )
        .notification
    )
    return {
        "site": site.id,
        "chair": chairs[0].id,
        "chair2": chairs[1].id,
        "patient": plan.patient_id,
        "mrn": mrn,
        "plan": plan.id,
        "appointment": appointment.id,
        "appointment_etag": appointment.etag,
        "block": block.id,
        "lot": lot.id,
        "movement": movement.id,
        "unit": unit.id,
        "reservation": reservation.id,
        "reservation_etag": reservation.etag,
        "given": given.id,
        "order": order.id,
        "order_etag": order.etag,
        "subscriber": staff.id,
        "my_subscriber": mine.subscriber_id,
        "my_email": mine.email,
        "notification": notification.id,
        "dedupe": f"expiring-{LOT}",
        "product": plan.product_id,
    }


@pytest.fixture
def world(platform: Platform, notify_factory: Factory) -> Iterator[World]:  # noqa: F811
    server = notify_factory()
    a = _caller(platform, server.address, ORG_A)
    b = _caller(platform, server.address, ORG_B)
    try:
        a_ids = _organisation_data(a, platform, ORG_A, "MRN-A")
        b_ids = _organisation_data(b, platform, ORG_B, "MRN-B")
        yield World(platform, a, b, a_ids, b_ids, server.address)
    finally:
        for channel in a.channels + b.channels:
            channel.close()


# --- the requests ------------------------------------------------------------------------------

Ids = dict[str, str]
START = TimeOfDay(hours=14)


def _requests(i: Ids) -> dict[str, list[Message]]:
    """Per RPC, requests naming the resources in ``i`` (A's, or ids that do not exist)."""
    site, plan, appt, lot = i["site"], i["plan"], i["appointment"], i["lot"]
    day = _date(DAY)
    return {
        # --- scheduler
        "CreateSite": [
            pb.CreateSiteRequest(
                site=pb.Site(organisation_id=ORG_A, display_name="X", time_zone="UTC"),
                request_id=request_id(),
            )
        ],
        "GetSite": [pb.GetSiteRequest(id=site)],
        "ListSites": [pb.ListSitesRequest(), pb.ListSitesRequest(organisation_id=ORG_A)],
        "UpdateSite": [
            pb.UpdateSiteRequest(
                site=pb.Site(id=site, display_name="Taken", etag='W/"1"'),
                update_mask=FieldMask(paths=["display_name"]),
                request_id=request_id(),
            )
        ],
        "CreateChair": [
            pb.CreateChairRequest(
                chair=pb.Chair(site_id=site, display_name="Mine"), request_id=request_id()
            )
        ],
        "GetChair": [pb.GetChairRequest(id=i["chair"])],
        "ListChairs": [pb.ListChairsRequest(site_id=site)],
        "UpdateChair": [
            pb.UpdateChairRequest(
                chair=pb.Chair(id=i["chair"], display_name="Taken", etag='W/"1"'),
                update_mask=FieldMask(paths=["display_name"]),
                request_id=request_id(),
            )
        ],
        "CreatePatient": [
            pb.CreatePatientRequest(
                patient=pb.Patient(
                    organisation_id=ORG_A,
                    mrn="NEW",
                    family_name="X",
                    birth_date=Date(year=1970, month=1, day=1),
                    sex_at_birth=pb.SEX_AT_BIRTH_MALE,
                ),
                request_id=request_id(),
            )
        ],
        "GetPatient": [pb.GetPatientRequest(id=i["patient"])],
        "ListPatients": [
            pb.ListPatientsRequest(),
            pb.ListPatientsRequest(organisation_id=ORG_A),
            pb.ListPatientsRequest(mrn=i["mrn"]),
            pb.ListPatientsRequest(ids=[i["patient"]]),
        ],
        "UpdatePatient": [
            pb.UpdatePatientRequest(
                patient=pb.Patient(id=i["patient"], family_name="Taken", etag='W/"1"'),
                update_mask=FieldMask(paths=["family_name"]),
                request_id=request_id(),
            )
        ],
        "RecordMeasurement": [
            pb.RecordMeasurementRequest(
                measurement=pb.Measurement(
                    patient_id=i["patient"],
                    measured_on=_date(NOW.date()),
                    weight_kg="70",
                    height_cm="170",
                ),
                request_id=request_id(),
            )
        ],
        "ListMeasurements": [pb.ListMeasurementsRequest(patient_id=i["patient"])],
        "CreateTherapyPlan": [
            pb.CreateTherapyPlanRequest(
                therapy_plan=plan_message(i["patient"], site, i["product"]),
                request_id=request_id(),
            )
        ],
        "GetTherapyPlan": [pb.GetTherapyPlanRequest(id=plan)],
        "ListTherapyPlans": [
            pb.ListTherapyPlansRequest(),
            pb.ListTherapyPlansRequest(patient_id=i["patient"]),
            pb.ListTherapyPlansRequest(site_id=site),
        ],
        "UpdateTherapyPlan": [
            pb.UpdateTherapyPlanRequest(
                therapy_plan=pb.TherapyPlan(id=plan, interval_days=21, etag='W/"1"'),
                update_mask=FieldMask(paths=["interval_days"]),
                reason="x",
                request_id=request_id(),
            )
        ],
        "RecordOutcome": [
            pb.RecordOutcomeRequest(
                outcome=pb.OutcomeRecord(
                    patient_id=i["patient"],
                    therapy_plan_id=plan,
                    recorded_on=_date(DAY - dt.timedelta(days=30)),
                    measure=pb.OUTCOME_MEASURE_GRIP_STRENGTH,
                    value="30",
                    hand=pb.HAND_RIGHT,
                ),
                request_id=request_id(),
            )
        ],
        "ListOutcomes": [
            pb.ListOutcomesRequest(patient_id=i["patient"]),
            pb.ListOutcomesRequest(patient_id=i["patient"], therapy_plan_id=plan),
        ],
        "ListDueReviews": [pb.ListDueReviewsRequest(site_id=site, horizon_days=366)],
        "RecordReviewDecision": [
            pb.RecordReviewDecisionRequest(
                therapy_plan_id=plan,
                decision=pb.REVIEW_DECISION_KIND_CONTINUE,
                reason="x",
                request_id=request_id(),
            )
        ],
        "ProposeRegimenAdjustment": [pb.ProposeRegimenAdjustmentRequest(therapy_plan_id=plan)],
        "AcceptRegimenProposal": [
            pb.AcceptRegimenProposalRequest(
                proposal=pb.RegimenProposal(
                    kind=pb.PROPOSAL_KIND_SHORTER_INTERVAL,
                    therapy_plan_id=plan,
                    plan_version=1,
                    interval_days=21,
                    grams="70",
                ),
                reason="x",
                request_id=request_id(),
            )
        ],
        "CalculateDose": [pb.CalculateDoseRequest(therapy_plan_id=plan, dosing_date=day)],
        "ListDueInfusions": [pb.ListDueInfusionsRequest(site_id=site, horizon_days=30)],
        "CreateChairBlock": [
            pb.CreateChairBlockRequest(
                chair_block=pb.ChairBlock(
                    chair_id=i["chair"],
                    start_time=from_datetime(dt.datetime(2026, 12, 3, 9, tzinfo=dt.UTC)),
                    end_time=from_datetime(dt.datetime(2026, 12, 3, 10, tzinfo=dt.UTC)),
                    reason="x",
                ),
                request_id=request_id(),
            )
        ],
        "ListChairBlocks": [
            pb.ListChairBlocksRequest(
                site_id=site, start_date=day, end_date=_date(DAY + dt.timedelta(days=7))
            )
        ],
        "DeleteChairBlock": [pb.DeleteChairBlockRequest(id=i["block"], request_id=request_id())],
        "FindSlots": [pb.FindSlotsRequest(therapy_plan_id=plan, start_date=day, end_date=day)],
        "HoldSlot": [
            pb.HoldSlotRequest(
                therapy_plan_id=plan,
                chair_id=i["chair"],
                local_date=day,
                local_start=START,
                request_id=request_id(),
            )
        ],
        "BookAppointment": [
            pb.BookAppointmentRequest(
                therapy_plan_id=plan,
                chair_id=i["chair"],
                local_date=day,
                local_start=START,
                request_id=request_id(),
            ),
            pb.BookAppointmentRequest(hold_id=appt, request_id=request_id()),
        ],
        "BookInductionCourse": [
            pb.BookInductionCourseRequest(
                therapy_plan_id=plan, first_date=day, request_id=request_id()
            )
        ],
        "CheckIn": [pb.CheckInRequest(id=appt, request_id=request_id())],
        "StartInfusion": [pb.StartInfusionRequest(id=appt, request_id=request_id())],
        "CompleteInfusion": [
            pb.CompleteInfusionRequest(id=appt, grams_given="70", request_id=request_id())
        ],
        "ConvertRegimen": [
            pb.ConvertRegimenRequest(
                therapy_plan_id=plan,
                etag='W/"1"',
                route=pb.ROUTE_SC,
                product_id=i["product"],
                reason="x",
                request_id=request_id(),
            )
        ],
        "SetPlanAuthorisation": [
            pb.SetPlanAuthorisationRequest(
                authorisation=pb.PlanAuthorisation(
                    therapy_plan_id=plan, payer="x", valid_from=day, valid_to=day, active=True
                ),
                request_id=request_id(),
            )
        ],
        "SetPayerCaps": [
            pb.SetPayerCapsRequest(
                payer_caps=pb.PayerCaps(therapy_plan_id=plan, grams_per_7_days="40"),
                request_id=request_id(),
            )
        ],
        "RecordHomeInfusion": [
            pb.RecordHomeInfusionRequest(
                therapy_plan_id=plan, given_on=day, grams_given="35", request_id=request_id()
            )
        ],
        "GetPlanCoverage": [pb.GetPlanCoverageRequest(therapy_plan_id=plan)],
        "MarkNoShow": [pb.MarkNoShowRequest(id=appt, request_id=request_id())],
        "CancelAppointment": [
            pb.CancelAppointmentRequest(id=appt, reason="x", request_id=request_id())
        ],
        "RescheduleAppointment": [
            pb.RescheduleAppointmentRequest(
                id=appt,
                chair_id=i["chair"],
                local_date=day,
                local_start=START,
                etag=i["appointment_etag"],
                request_id=request_id(),
            )
        ],
        "GetAppointment": [pb.GetAppointmentRequest(id=appt)],
        "ListAppointments": [
            pb.ListAppointmentsRequest(site_id=site),
            pb.ListAppointmentsRequest(patient_id=i["patient"]),
        ],
        "GetChairBoard": [pb.GetChairBoardRequest(site_id=site, local_date=day)],
        "PlanSchedule": [
            pb.PlanScheduleRequest(
                site_id=site,
                mode=pb.PLAN_MODE_COMMIT,
                start_date=day,
                horizon_days=3,
                request_id=request_id(),
            )
        ],
        # --- inventory
        "ReceiveStock": [
            inv.ReceiveStockRequest(
                site_id=site,
                product_id=i["product"],
                presentation_grams="10",
                lot_number="NEW",
                expiry_date=Date(year=2028, month=1, day=31),
                vials=1,
                unit_cost=GBP,
                request_id=request_id(),
            )
        ],
        "GetLot": [inv.GetLotRequest(id=lot)],
        "ListLots": [
            inv.ListLotsRequest(),
            inv.ListLotsRequest(site_id=site),
            inv.ListLotsRequest(lot_number=LOT),
        ],
        "QuarantineLot": [
            inv.QuarantineLotRequest(lot_id=lot, reason="x", request_id=request_id())
        ],
        "ReleaseLot": [inv.ReleaseLotRequest(lot_id=lot, reason="x", request_id=request_id())],
        "RecordCount": [
            inv.RecordCountRequest(lot_id=lot, counted_vials=1, reason="x", request_id=request_id())
        ],
        "ReverseMovement": [
            inv.ReverseMovementRequest(
                movement_id=i["movement"], reason="x", request_id=request_id()
            )
        ],
        "ListMovements": [
            inv.ListMovementsRequest(),
            inv.ListMovementsRequest(lot_id=lot),
            inv.ListMovementsRequest(site_id=site),
        ],
        "GetStockLevels": [inv.GetStockLevelsRequest(site_id=site)],
        "ReconcileStock": [inv.ReconcileStockRequest(), inv.ReconcileStockRequest(site_id=site)],
        "CreateStockSite": [
            inv.CreateStockSiteRequest(
                site=inv.StockSite(id=site, display_name="Mine", time_zone="UTC"),
                request_id=request_id(),
            )
        ],
        "GetStockSite": [inv.GetStockSiteRequest(id=site)],
        "ListStockSites": [inv.ListStockSitesRequest()],
        "CreateStorageUnit": [
            inv.CreateStorageUnitRequest(
                storage_unit=inv.StorageUnit(
                    site_id=site, display_name="Mine", storage=inv.STORAGE_KIND_REFRIGERATED
                ),
                request_id=request_id(),
            )
        ],
        "ListStorageUnits": [inv.ListStorageUnitsRequest(site_id=site)],
        "ReserveStock": [
            inv.ReserveStockRequest(
                appointment_id=appt,
                site_id=site,
                patient_id=i["patient"],
                product_id=i["product"],
                grams="70",
                needed_on=day,
            )
        ],
        "AmendReservation": [
            inv.AmendReservationRequest(
                reservation_id=i["reservation"],
                grams="60",
                needed_on=day,
                etag=i["reservation_etag"],
                request_id=request_id(),
            )
        ],
        "ReleaseReservation": [
            inv.ReleaseReservationRequest(
                reservation_id=i["reservation"], reason="x", request_id=request_id()
            )
        ],
        "GetReservation": [
            inv.GetReservationRequest(id=i["reservation"]),
            inv.GetReservationRequest(appointment_id=appt),
        ],
        "ListReservations": [
            inv.ListReservationsRequest(),
            inv.ListReservationsRequest(site_id=site),
            inv.ListReservationsRequest(patient_id=i["patient"]),
        ],
        "DispenseReservation": [
            inv.DispenseReservationRequest(
                reservation_id=i["reservation"],
                grams_administered="70",
                patient_id=i["patient"],
                appointment_id=appt,
                administered_time=from_datetime(NOW),
                request_id=request_id(),
            )
        ],
        "RecordWaste": [
            inv.RecordWasteRequest(
                lot_id=lot, vials=1, reason=inv.WASTE_REASON_DAMAGED, request_id=request_id()
            )
        ],
        "TransferStock": [
            inv.TransferStockRequest(
                lot_id=lot, to_site_id=site, vials=1, reason="x", request_id=request_id()
            )
        ],
        "ReturnToSupplier": [
            inv.ReturnToSupplierRequest(lot_id=lot, vials=1, reason="x", request_id=request_id())
        ],
        "RecallLot": [
            inv.RecallLotRequest(
                product_id=i["product"], lot_number=LOT, reason="x", request_id=request_id()
            )
        ],
        "ListLotRecipients": [
            inv.ListLotRecipientsRequest(product_id=i["product"], lot_number=LOT)
        ],
        "RunExpiryCheck": [inv.RunExpiryCheckRequest(site_id=site)],
        "GetCostReport": [
            inv.GetCostReportRequest(
                site_id=site,
                group_by=inv.COST_GROUPING_PRODUCT,
                start_date=_date(NOW.date() - dt.timedelta(days=7)),
                end_date=_date(NOW.date() + dt.timedelta(days=1)),
            )
        ],
        "UpsertDemandForecast": [
            inv.UpsertDemandForecastRequest(
                forecasts=[
                    inv.DemandForecast(site_id=site, product_id=i["product"], day=day, grams="1")
                ],
                request_id=request_id(),
            )
        ],
        "GetStockForecast": [
            inv.GetStockForecastRequest(site_id=site, product_id=i["product"], horizon_days=14)
        ],
        "SetReorderPolicy": [
            inv.SetReorderPolicyRequest(
                policy=inv.ReorderPolicy(
                    site_id=site,
                    product_id=i["product"],
                    lead_time_days=1,
                    safety_stock_grams="1",
                    review_period_days=1,
                    order_presentation_grams="10",
                    case_vials=1,
                    maximum_grams="0",
                ),
                request_id=request_id(),
            )
        ],
        "GetReorderPolicy": [inv.GetReorderPolicyRequest(site_id=site, product_id=i["product"])],
        "ListReorderSuggestions": [inv.ListReorderSuggestionsRequest(site_id=site)],
        "CreatePurchaseOrder": [
            inv.CreatePurchaseOrderRequest(
                purchase_order=inv.PurchaseOrder(
                    site_id=site,
                    supplier="X",
                    lines=[
                        inv.PurchaseOrderLine(
                            product_id=i["product"],
                            presentation_grams="10",
                            vials_ordered=1,
                            unit_cost=GBP,
                        )
                    ],
                ),
                request_id=request_id(),
            )
        ],
        "GetPurchaseOrder": [inv.GetPurchaseOrderRequest(id=i["order"])],
        "ListPurchaseOrders": [
            inv.ListPurchaseOrdersRequest(),
            inv.ListPurchaseOrdersRequest(site_id=site),
        ],
        "ReceivePurchaseOrder": [
            inv.ReceivePurchaseOrderRequest(purchase_order_id=i["order"], request_id=request_id())
        ],
        "CancelPurchaseOrder": [
            inv.CancelPurchaseOrderRequest(
                id=i["order"], reason="x", etag=i["order_etag"], request_id=request_id()
            )
        ],
        "ListOutgoingEvents": [inv.ListOutgoingEventsRequest(page_size=1000)],
        # --- notify
        "CreateSubscriber": [
            npb.CreateSubscriberRequest(
                subscriber=subscriber(organisation_id=ORG_A), request_id=request_id()
            )
        ],
        "GetSubscriber": [npb.GetSubscriberRequest(id=i["subscriber"])],
        "ListSubscribers": [npb.ListSubscribersRequest(), npb.ListSubscribersRequest(site_id=site)],
        "UpdateSubscriber": [
            npb.UpdateSubscriberRequest(
                subscriber=npb.Subscriber(id=i["subscriber"], display_name="Taken", etag='W/"1"'),
                update_mask=FieldMask(paths=["display_name"]),
                request_id=request_id(),
            )
        ],
        "Publish": [
            npb.PublishRequest(
                topic=npb.TOPIC_LOT_EXPIRING,
                payload=lot_expiring(site="b-site"),
                subscriber_ids=[i["subscriber"]],
                request_id=request_id(),
            ),
            # A's dedupe key is not A's notification for B: a new one of B's (see the leak check)
            npb.PublishRequest(
                topic=npb.TOPIC_LOT_EXPIRING,
                payload=lot_expiring(site="b-site"),
                dedupe_key=i["dedupe"],
                request_id=request_id(),
            ),
        ],
        "CancelNotification": [
            npb.CancelNotificationRequest(id=i["notification"], request_id=request_id())
        ],
        "GetNotification": [npb.GetNotificationRequest(id=i["notification"])],
        "ListNotifications": [
            npb.ListNotificationsRequest(),
            npb.ListNotificationsRequest(subscriber_id=i["subscriber"]),
            npb.ListNotificationsRequest(dedupe_key=i["dedupe"]),
        ],
        "Subscribe": [npb.SubscribeRequest(after_sequence=0)],
        # a user's own: found by the token's subject, never by an id; naming A's is ignored,
        # and B's own subscriber exists, so an empty etag is stale (ABORTED) either way
        "GetMyNotificationSettings": [npb.GetMyNotificationSettingsRequest()],
        "UpdateMyNotificationSettings": [
            npb.UpdateMyNotificationSettingsRequest(
                settings=npb.MyNotificationSettings(
                    subscriber_id=i["my_subscriber"], time_zone="UTC", email="x@example.org"
                ),
                request_id=request_id(),
            )
        ],
        "ListMyNotifications": [npb.ListMyNotificationsRequest()],
    }


def _missing(ids: Ids) -> Ids:
    """Ids of the same kinds that exist nowhere."""
    return {k: (v if k in {"product", "mrn", "dedupe"} else f"missing-{k}") for k, v in ids.items()}


_n = itertools.count()


def _outcome(
    stub: Any, method: str, request: Message, streaming: bool
) -> tuple[grpc.StatusCode, str]:
    """(status code, the reply as text) of one call."""
    try:
        if streaming:
            replies = []
            stream = getattr(stub, method)(request, timeout=5)
            for reply in stream:
                replies.append(reply)
                if reply.HasField("heartbeat"):  # replay done: what follows is live
                    stream.cancel()
                    break
            return grpc.StatusCode.OK, "\n".join(str(r) for r in replies)
        return grpc.StatusCode.OK, str(getattr(stub, method)(request, timeout=30))
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED:
            return grpc.StatusCode.OK, ""
        return error.code(), ""


def _leaks(text: str, a_ids: Ids) -> list[str]:
    secrets = {
        k: v
        for k, v in a_ids.items()
        if k not in {"product", "dedupe", "appointment_etag", "reservation_etag", "order_etag"}
    }
    return [f"{k}={v}" for k, v in secrets.items() if v in text]


def test_every_rpc_keeps_organisations_apart(world: World) -> None:
    a_ids, b = world.a_ids, world.b
    roles = Roles.default()
    person = roles.grant(OPERATOR_ROLES).permissions
    system = roles.grant(["integration"], roles.specs["integration"].permissions).permissions
    requests_a = _requests(a_ids)
    requests_missing = _requests(_missing(a_ids))
    problems: list[str] = []
    for service in SERVICES:
        for method in service.methods:
            name = method.name
            if name in ORGANISATION_LESS or name in AUDIT_TRAIL:
                continue
            policy = declared(method)
            assert policy is not None, name
            assert name in requests_a, f"{name}: not covered by the isolation test"
            if policy.permission in person:
                stub = b.person[service.full_name]
            elif policy.permission in system:
                stub = b.system[service.full_name]
            else:  # only our services may call it: they act for every organisation
                assert name == "UpsertDemandForecast", f"{name}: no person or system may call it"
                stub = b.person[service.full_name]
            streaming = method.server_streaming
            for theirs, missing in zip(requests_a[name], requests_missing[name], strict=True):
                code, text = _outcome(stub, name, theirs, streaming)
                fixed = name in DENIED | ID_TAKEN | NOT_FOUND
                # (a fixed answer needs no comparison: and CreateStockSite would create)
                expected = code if fixed else _outcome(stub, name, missing, streaming)[0]
                leaks = _leaks(text, a_ids)
                if leaks:
                    problems.append(f"{name}: reply holds A's {leaks}")
                if name in DENIED:
                    if code != grpc.StatusCode.PERMISSION_DENIED:
                        problems.append(f"{name}: {code.name}, want PERMISSION_DENIED")
                elif name in ID_TAKEN:
                    if code != grpc.StatusCode.ALREADY_EXISTS:
                        problems.append(f"{name}: {code.name}, want ALREADY_EXISTS")
                elif name in NOT_FOUND and code != grpc.StatusCode.NOT_FOUND:
                    problems.append(f"{name}({theirs}): {code.name}, want NOT_FOUND")
                elif code != expected and name not in NOT_FOUND:
                    problems.append(f"{name}: {code.name} for A's ids, {expected.name} for none")
    assert not problems, "\n".join(problems)
    _a_is_unchanged(world)
    _b_sees_its_own(world)


def _a_is_unchanged(world: World) -> None:
    """Nothing B tried changed A's data (revisions, states, balances)."""
    a, i = world.a, world.a_ids
    assert a.p.scheduler.GetSite(pb.GetSiteRequest(id=i["site"])).site.etag == 'W/"1"'
    assert a.p.scheduler.GetPatient(pb.GetPatientRequest(id=i["patient"])).patient.etag == 'W/"1"'
    assert (
        a.p.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=i["plan"])).therapy_plan.version
        == 1
    )
    appointment = a.p.scheduler.GetAppointment(
        pb.GetAppointmentRequest(id=i["appointment"])
    ).appointment
    assert appointment.etag == i["appointment_etag"]
    lot = a.p.inventory.GetLot(inv.GetLotRequest(id=i["lot"])).lot
    assert lot.state == inv.LOT_STATE_AVAILABLE and lot.on_hand_vials == 19  # 20 received, 1 given
    reservation = a.p.inventory.GetReservation(
        inv.GetReservationRequest(id=i["reservation"])
    ).reservation
    assert reservation.etag == i["reservation_etag"]
    order = a.p.inventory.GetPurchaseOrder(
        inv.GetPurchaseOrderRequest(id=i["order"])
    ).purchase_order
    assert order.etag == i["order_etag"]
    blocks = a.p.scheduler.ListChairBlocks(
        pb.ListChairBlocksRequest(
            site_id=i["site"], start_date=_date(DAY), end_date=_date(DAY + dt.timedelta(days=7))
        )
    ).chair_blocks
    assert [x.id for x in blocks] == [i["block"]]
    notification = (
        a.system["infusion.notify.v1.NotifyService"]
        .GetNotification(npb.GetNotificationRequest(id=i["notification"]))
        .notification
    )
    assert not notification.HasField("cancel_time")
    subscriber_a = a.notify.GetSubscriber(npb.GetSubscriberRequest(id=i["subscriber"])).subscriber
    assert subscriber_a.etag == 'W/"1"'
    mine = a.notify.GetMyNotificationSettings(npb.GetMyNotificationSettingsRequest()).settings
    assert (mine.subscriber_id, mine.etag) == (i["my_subscriber"], 'W/"1"')


def _b_sees_its_own(world: World) -> None:
    """The checks above are not vacuous: B's lists hold B's rows."""
    b, i = world.b, world.b_ids
    assert [s.id for s in b.p.scheduler.ListSites(pb.ListSitesRequest()).sites] == [i["site"]]
    patients = b.p.scheduler.ListPatients(pb.ListPatientsRequest()).patients
    assert [x.id for x in patients] == [i["patient"]]
    lots = b.p.inventory.ListLots(inv.ListLotsRequest(lot_number=LOT)).lots
    assert [x.id for x in lots] == [i["lot"]]
    recipients = b.p.inventory.ListLotRecipients(
        inv.ListLotRecipientsRequest(product_id=i["product"], lot_number=LOT)
    ).administrations
    assert {r.patient_id for r in recipients} == {i["patient"]}
    assert [s.id for s in b.p.inventory.ListStockSites(inv.ListStockSitesRequest()).sites] == [
        i["site"]
    ]
    listed = (
        b.system["infusion.notify.v1.NotifyService"]
        .ListNotifications(npb.ListNotificationsRequest())
        .notifications
    )
    assert i["notification"] in {n.id for n in listed}
    assert {n.organisation_id for n in listed} == {ORG_B}
    mine = b.notify.ListMyNotifications(npb.ListMyNotificationsRequest()).notifications
    assert [n.notification_id for n in mine] == [i["notification"]]


def test_the_stream_shows_only_the_callers_organisation(world: World) -> None:
    a_stream = world.a.system["infusion.notify.v1.NotifyService"]
    code, text = _outcome(a_stream, "Subscribe", npb.SubscribeRequest(after_sequence=0), True)
    assert code == grpc.StatusCode.OK and world.a_ids["notification"] in text
    assert world.b_ids["notification"] not in text


def test_a_nurse_limited_to_one_site_sees_the_other_as_missing(world: World) -> None:
    """A's nurse at A's first site only: A's second site, its plan, booking and stock are
    missing to her; organisation-wide patients stay visible."""
    platform, a = world.platform, world.a
    second, chairs = site_with_chairs(a.p, org=ORG_A)
    stock_site(a.p, second.id)
    plan = patient_plan(a.p, second, "MRN-A2", org=ORG_A)
    booked = book(a.p, plan, chairs[0], DAY, 10)
    token = platform.issuer.issuer.user_token(
        ["nurse", "scheduling_coordinator", "pharmacist"], ORG_A, sites=[world.a_ids["site"]]
    )
    sch_channel = platform.issuer.channel(platform.scheduler_address, token)
    inv_channel = platform.issuer.channel(platform.inventory_address, token)
    try:
        scheduler = scheduler_pb2_grpc.SchedulerServiceStub(sch_channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(inv_channel)
        sites = scheduler.ListSites(pb.ListSitesRequest()).sites
        assert [s.id for s in sites] == [world.a_ids["site"]]
        for call in (
            lambda: scheduler.GetSite(pb.GetSiteRequest(id=second.id)),
            lambda: scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id)),
            lambda: scheduler.GetAppointment(pb.GetAppointmentRequest(id=booked.id)),
            lambda: scheduler.ListChairs(pb.ListChairsRequest(site_id=second.id)),
            lambda: inventory.GetStockSite(inv.GetStockSiteRequest(id=second.id)),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        appointments = scheduler.ListAppointments(
            pb.ListAppointmentsRequest(patient_id=plan.patient_id)
        ).appointments
        assert appointments == []
        plans = scheduler.ListTherapyPlans(pb.ListTherapyPlansRequest()).therapy_plans
        assert {p.id for p in plans} == {world.a_ids["plan"]}
        assert [s.id for s in inventory.ListStockSites(inv.ListStockSitesRequest()).sites] == [
            world.a_ids["site"]
        ]
        # a patient belongs to the organisation, not to a site
        assert (
            scheduler.GetPatient(pb.GetPatientRequest(id=plan.patient_id)).patient.id
            == plan.patient_id
        )
        # creating a site needs every site of the organisation
        with pytest.raises(grpc.RpcError) as denied:
            scheduler.CreateSite(
                pb.CreateSiteRequest(
                    site=pb.Site(display_name="X", time_zone="UTC"), request_id=request_id()
                )
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        sch_channel.close()
        inv_channel.close()


def test_a_caller_limited_to_one_site_lists_its_sites_notifications(world: World) -> None:
    """A hospital system of A limited to A's first site lists A's notifications about that site
    and leaves out one about another site of A (in the query, so pages stay full)."""
    service = notify_pb2_grpc.NotifyServiceStub(
        world.platform.issuer.service_channel("scheduler", world.notify_address)
    )
    elsewhere = service.Publish(
        npb.PublishRequest(
            topic=npb.TOPIC_LOT_EXPIRING,
            payload=lot_expiring(site="site_elsewhere"),  # "_" is no wildcard to the filter
            organisation_id=ORG_A,
            request_id=request_id(),
        )
    ).notification
    token = world.platform.issuer.issuer.role_token(
        "integration", ORG_A, sites=[world.a_ids["site"]]
    )
    channel = world.platform.issuer.channel(world.notify_address, token)
    try:
        notify = notify_pb2_grpc.NotifyServiceStub(channel)
        listed = {
            n.id for n in notify.ListNotifications(npb.ListNotificationsRequest()).notifications
        }
        assert world.a_ids["notification"] in listed
        assert elsewhere.id not in listed
        with pytest.raises(grpc.RpcError) as caught:
            notify.GetNotification(npb.GetNotificationRequest(id=elsewhere.id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()
    # the organisation's unrestricted operator sees both
    every = {
        n.id
        for n in world.a.system["infusion.notify.v1.NotifyService"]
        .ListNotifications(npb.ListNotificationsRequest())
        .notifications
    }
    assert {world.a_ids["notification"], elsewhere.id} <= every


def test_a_service_publishes_for_the_organisation_it_names(world: World) -> None:
    """A service names the organisation it publishes for; without one, notify refuses."""
    service = notify_pb2_grpc.NotifyServiceStub(
        world.platform.issuer.service_channel("scheduler", world.notify_address)
    )
    with pytest.raises(grpc.RpcError) as unnamed:
        service.Publish(
            npb.PublishRequest(
                topic=npb.TOPIC_LOT_EXPIRING, payload=lot_expiring(), request_id=request_id()
            )
        )
    assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    sent = service.Publish(
        npb.PublishRequest(
            topic=npb.TOPIC_LOT_EXPIRING,
            payload=lot_expiring(site=world.a_ids["site"]),
            organisation_id=ORG_A,
            request_id=request_id(),
        )
    ).notification
    assert sent.organisation_id == ORG_A
    # A's staff subscriber and A's user (LOT_EXPIRING by email) receive it, B's do not
    assert {d.subscriber_id for d in sent.deliveries} == {
        world.a_ids["subscriber"],
        world.a_ids["my_subscriber"],
    }
    measure(world.a.p, world.a_ids["patient"], "71", "165")  # A still works on its own data


def _trail_text(platform: Platform, notify_address: str, token: str, request: Any) -> str:
    """Every service's ListAuditEvents answer to ``request`` as ``token``, as text."""
    texts = []
    for address in (platform.scheduler_address, platform.inventory_address, notify_address):
        channel = platform.issuer.channel(address, token)
        try:
            texts.append(str(audit_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(request)))
        finally:
            channel.close()
    return "\n".join(texts)


def test_an_auditor_reads_only_its_organisations_trail(world: World) -> None:
    """B's auditor asks every service's trail, unfiltered and for A's patient: nothing of A's
    comes back, while A's auditor finds A's patient in the scheduler's records (so the records
    exist and the filter is what keeps them apart)."""
    issuer, a_ids = world.platform.issuer, world.a_ids
    b_auditor = issuer.issuer.role_token("auditor", ORG_B)
    a_auditor = issuer.issuer.role_token("auditor", ORG_A)
    for request in (
        audit_pb2.ListAuditEventsRequest(page_size=1000),
        audit_pb2.ListAuditEventsRequest(patient_id=a_ids["patient"]),
    ):
        text = _trail_text(world.platform, world.notify_address, b_auditor, request)
        assert not _leaks(text, a_ids), _leaks(text, a_ids)
    mine = _trail_text(
        world.platform,
        world.notify_address,
        a_auditor,
        audit_pb2.ListAuditEventsRequest(patient_id=a_ids["patient"]),
    )
    assert a_ids["patient"] in mine
