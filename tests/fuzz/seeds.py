"""Valid requests for the mutating RPCs whose ids the caller chooses (or that need none), so the
fuzz can change one field at a time and reach the services' own rules and the databases: a
hostile value that the contract lets through (an extreme integer, a far date) must still not be
INTERNAL. Ids the servers issue differ between the two databases, so a seed names the site,
patient and plan each stack makes for the regimen RPCs by placeholder (``seed:site``,
``seed:patient``, ``seed:plan``, ``seed:proposal-plan``: tests/fuzz/stacks.py makes them and
replaces the placeholders with its own ids)."""

from __future__ import annotations

from google.protobuf.message import Message
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay

from infusion.audit.v1 import audit_pb2
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.notify.v1 import notify_pb2 as npb
from infusion.scheduler.v1 import scheduler_pb2 as pb

PRODUCT = "gammagard-liquid"
DAY = Date(year=2026, month=12, day=1)
GBP = Money(currency_code="GBP", units=34)


def seeds() -> dict[str, Message]:
    """Method name (``:`` and a label for a second seed of one method) → a request the service
    accepts (on an empty database with the catalogue)."""
    return {
        # the console's batch read of a board's patients (unknown ids are simply absent)
        "ListPatients": pb.ListPatientsRequest(ids=["patient-1", "patient-2"], page_size=2),
        "CreateSite": pb.CreateSiteRequest(
            request_id="seed-site",
            site=pb.Site(
                organisation_id="org-1",
                display_name="Day unit",
                time_zone="Europe/London",
                opening_hours=[
                    pb.OpeningHours(day=2, open=TimeOfDay(hours=8), close=TimeOfDay(hours=18))
                ],
                capacity=pb.SiteCapacity(nurse_ratio=4, slot_minutes=15),
            ),
        ),
        "CreatePatient": pb.CreatePatientRequest(
            request_id="seed-patient",
            patient=pb.Patient(
                organisation_id="org-1",
                mrn="MRN-1",
                given_name="Ada",
                family_name="Example",
                birth_date=Date(year=1970, month=5, day=1),
                sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
            ),
        ),
        "RecordOutcome": pb.RecordOutcomeRequest(
            request_id="seed-outcome",
            outcome=pb.OutcomeRecord(
                patient_id="seed:patient",
                therapy_plan_id="seed:plan",
                recorded_on=Date(year=2026, month=11, day=20),
                measure=pb.OUTCOME_MEASURE_GRIP_STRENGTH,
                value="31.5",
                hand=pb.HAND_RIGHT,
                note="dynamometer",
            ),
        ),
        "ListOutcomes": pb.ListOutcomesRequest(
            patient_id="seed:patient", therapy_plan_id="seed:plan", page_size=10
        ),
        "ListDueReviews": pb.ListDueReviewsRequest(site_id="seed:site", horizon_days=366),
        "ProposeRegimenAdjustment": pb.ProposeRegimenAdjustmentRequest(
            therapy_plan_id="seed:plan",
            as_of=Date(year=2026, month=11, day=24),
            measure=pb.OUTCOME_MEASURE_GRIP_STRENGTH,
            hand=pb.HAND_RIGHT,
            max_g_per_kg_day="1",
        ),
        "RecordReviewDecision": pb.RecordReviewDecisionRequest(
            request_id="seed-review",
            therapy_plan_id="seed:plan",
            decision=pb.REVIEW_DECISION_KIND_CONTINUE,
            reason="grip and MRC stable",
            decided_on=Date(year=2026, month=11, day=20),
        ),
        # the docs/regimens.md example, as ProposeRegimenAdjustment gives it on 23 February 2027
        "AcceptRegimenProposal": pb.AcceptRegimenProposalRequest(
            request_id="seed-accept",
            proposal=pb.RegimenProposal(
                kind=pb.PROPOSAL_KIND_SHORTER_INTERVAL,
                therapy_plan_id="seed:proposal-plan",
                plan_version=1,
                interval_days=21,
                grams="70",
            ),
            as_of=Date(year=2027, month=2, day=23),
            reason="weakness before each dose",
            max_g_per_kg_day="1",
        ),
        # what the figures would be: seed:plan (70 kg, 1 g/kg every 28 days) to Hizentra
        "ConvertRegimen": pb.ConvertRegimenRequest(
            therapy_plan_id="seed:plan",
            route=pb.ROUTE_SC,
            product_id="hizentra",
            last_dose_date=Date(year=2026, month=11, day=10),
            reason="home therapy",
            validate_only=True,
            request_id="seed-convert-preview",
        ),
        # the real one, of a plan kept for it (its etag as the stack read it)
        "ConvertRegimen:real": pb.ConvertRegimenRequest(
            therapy_plan_id="seed:convert-plan",
            etag="seed:convert-plan-etag",
            route=pb.ROUTE_SC,
            product_id="hizentra",
            frequency=pb.ScFrequency(every_weeks=1),
            last_dose_date=Date(year=2026, month=11, day=10),
            reason="home therapy",
            home_administration=True,
            request_id="seed-convert",
        ),
        "SetPlanAuthorisation": pb.SetPlanAuthorisationRequest(
            authorisation=pb.PlanAuthorisation(
                therapy_plan_id="seed:plan",
                payer="NHS England",
                approved_grams="1000",
                approved_doses=13,
                valid_from=Date(year=2026, month=11, day=1),
                valid_to=Date(year=2027, month=10, day=31),
                active=True,
            ),
            request_id="seed-authorisation",
        ),
        "SetPayerCaps": pb.SetPayerCapsRequest(
            payer_caps=pb.PayerCaps(
                therapy_plan_id="seed:plan",
                payer="NHS England",
                grams_per_7_days="100",
                grams_per_28_days="280",
            ),
            request_id="seed-caps",
        ),
        "GetPlanCoverage": pb.GetPlanCoverageRequest(
            therapy_plan_id="seed:plan", as_of=Date(year=2026, month=11, day=24)
        ),
        # a dose of seed:home-plan (Hizentra weekly at home from 17 November) given on the
        # stacks' today
        "RecordHomeInfusion": pb.RecordHomeInfusionRequest(
            therapy_plan_id="seed:home-plan",
            given_on=Date(year=2026, month=11, day=24),
            grams_given="17.5",
            scanned_lots=[pb.ScannedLot(lot_number="LOT-H1", vials=4, product_id="hizentra")],
            request_id="seed-home",
        ),
        "CreateStockSite": inv.CreateStockSiteRequest(
            request_id="seed-stock-site",
            site=inv.StockSite(id="site-2", display_name="Site 2", time_zone="Europe/Paris"),
        ),
        "ReceiveStock": inv.ReceiveStockRequest(
            site_id="site-1",
            product_id=PRODUCT,
            presentation_grams="10",
            lot_number="LOT-1",
            expiry_date=Date(year=2027, month=6, day=30),
            vials=10,
            unit_cost=GBP,
            request_id="seed-receive",
        ),
        "ReserveStock": inv.ReserveStockRequest(
            appointment_id="seed-appointment",
            site_id="site-1",
            patient_id="seed-patient",
            product_id=PRODUCT,
            grams="20",
            needed_on=DAY,
        ),
        "UpsertDemandForecast": inv.UpsertDemandForecastRequest(
            request_id="seed-forecast",
            forecasts=[
                inv.DemandForecast(site_id="site-1", product_id=PRODUCT, day=DAY, grams="30")
            ],
        ),
        "GetStockForecast": inv.GetStockForecastRequest(
            site_id="site-1", product_id=PRODUCT, horizon_days=30, start_date=DAY
        ),
        "SetReorderPolicy": inv.SetReorderPolicyRequest(
            request_id="seed-policy",
            policy=inv.ReorderPolicy(
                site_id="site-1",
                product_id=PRODUCT,
                lead_time_days=7,
                safety_stock_grams="100",
                review_period_days=7,
                order_presentation_grams="10",
                case_vials=10,
            ),
        ),
        "CreatePurchaseOrder": inv.CreatePurchaseOrderRequest(
            request_id="seed-order",
            purchase_order=inv.PurchaseOrder(
                site_id="site-1",
                supplier="Supplier",
                expected_date=DAY,
                lines=[
                    inv.PurchaseOrderLine(
                        product_id=PRODUCT, presentation_grams="10", vials_ordered=5, unit_cost=GBP
                    )
                ],
            ),
        ),
        "CreateStorageUnit": inv.CreateStorageUnitRequest(
            request_id="seed-unit",
            storage_unit=inv.StorageUnit(
                site_id="site-1", display_name="Fridge 1", storage=inv.STORAGE_KIND_REFRIGERATED
            ),
        ),
        "GetCostReport": inv.GetCostReportRequest(
            site_id="site-1",
            start_date=Date(year=2026, month=11, day=1),
            end_date=DAY,
            group_by=inv.COST_GROUPING_PRODUCT,
        ),
        "RunExpiryCheck": inv.RunExpiryCheckRequest(site_id="site-1", as_of=DAY),
        "CreateSubscriber": npb.CreateSubscriberRequest(
            request_id="seed-subscriber",
            subscriber=npb.Subscriber(
                external_ref="staff-1",
                display_name="Pat",
                time_zone="Europe/London",
                email="pat@example.org",
                kind=npb.SUBSCRIBER_KIND_STAFF,
                quiet_hours=npb.QuietHours(start=TimeOfDay(hours=22), end=TimeOfDay(hours=7)),
            ),
        ),
        "Publish": npb.PublishRequest(
            topic=npb.TOPIC_LOT_EXPIRING,
            request_id="seed-publish",
            dedupe_key="seed-publish",
            payload=npb.Payload(
                lot_expiring=npb.LotExpiringPayload(
                    site_id="site-1", lot_id="lot-1", lot_number="LOT-1", expiry_date=DAY,
                    days_left=30, threshold_days=30, on_hand_vials=3,
                )
            ),
        ),
        "UpdateMyNotificationSettings": npb.UpdateMyNotificationSettingsRequest(
            request_id="seed-my-settings",
            settings=npb.MyNotificationSettings(
                display_name="Nia",
                time_zone="Europe/London",
                email="nia@example.org",
                preferences=[
                    npb.Preference(topic=npb.TOPIC_LOT_EXPIRING, channels=[npb.CHANNEL_EMAIL])
                ],
                quiet_hours=npb.QuietHours(start=TimeOfDay(hours=22), end=TimeOfDay(hours=7)),
            ),
        ),
        "GetMyNotificationSettings": npb.GetMyNotificationSettingsRequest(),
        "ListMyNotifications": npb.ListMyNotificationsRequest(page_size=10),
        "ListAuditEvents": audit_pb2.ListAuditEventsRequest(
            page_size=10, patient_id="patient-1", actor="test-operator"
        ),
    }  # fmt: skip
