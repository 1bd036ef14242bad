"""PlanSchedule with skip_without_stock through gRPC, the inventory in process: the
proposals move to days whose in-date, unreserved stock covers them, infusions of one day share
its grams, one with no stocked day left is unplaced naming the product, and with the inventory
down the plan is made without stock and says so (stock_checked false), as FindSlots does."""

from __future__ import annotations

from google.type.date_pb2 import Date
from google.type.money_pb2 import Money

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.builders import patient_plan, site_with_chairs
from tests.integration.conftest import Platform, request_id, stock_site

DUE = Date(year=2026, month=12, day=1)  # Tuesday; today is Tue 24 Nov
LAST_STOCKED = Date(year=2026, month=11, day=27)  # Friday: the lot's expiry date


def plan(platform: Platform, site_id: str, skip: bool) -> pb.PlanScheduleResponse:
    return platform.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site_id,
            horizon_days=14,
            mode=pb.PLAN_MODE_PROPOSE,
            time_limit_seconds=3,
            seed=1,
            skip_without_stock=skip,
        )
    )


def test_plan_schedule_moves_proposals_to_days_with_stock(platform: Platform) -> None:
    site, _ = site_with_chairs(platform)  # 2 chairs, weekdays 08:00–18:00
    stock_site(platform, site.id)
    # two 70 kg patients on Gammagard Liquid 1 g/kg: 70 g each, due Tue 1 Dec, window
    # Fri 27 Nov – Sat 5 Dec (weekends closed)
    a = patient_plan(platform, site, "MRN-SA")
    b = patient_plan(platform, site, "MRN-SB")
    # 7 × 10 g = 70 g, usable up to its expiry on Fri 27 Nov: one dose on 27 Nov, 0 g after
    platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site.id,
            product_id=a.product_id,
            presentation_grams="10",
            lot_number="SHORT-DATED",
            expiry_date=LAST_STOCKED,
            vials=7,
            unit_cost=Money(currency_code="GBP", units=340),
            request_id=request_id(),
        )
    )

    # default: both on their due day, flagged: 0 g on 1 Dec
    flagged = plan(platform, site.id, skip=False)
    assert flagged.stock_checked and not flagged.unplaced
    assert [p.slot.local_date for p in flagged.proposals] == [DUE, DUE]
    assert all(p.slot.stock_short and "0 g" in p.slot.stock_note for p in flagged.proposals)

    # skip_without_stock: 27 Nov has 70 g, one dose (70 ≤ 70, two would need 140); every other
    # day of the window 0 g. So one proposal moves to 27 Nov (4 days early), the other is
    # unplaced, naming the product and the grams, day by day.
    skipped = plan(platform, site.id, skip=True)
    assert skipped.stock_checked
    (moved,) = skipped.proposals
    assert moved.slot.local_date == LAST_STOCKED and moved.slot.days_from_due == -4
    assert not moved.slot.stock_short
    (left,) = skipped.unplaced
    assert {moved.therapy_plan_id, left.therapy_plan_id} == {a.id, b.id}
    assert left.stock_product_id == a.product_id
    assert (
        "2026-11-27: Gammagard Liquid: 0 g in date and unreserved left "
        "(70 g of 70 g go to other proposals); the dose is 70 g" in left.reason
    )
    assert "2026-12-01: Gammagard Liquid: 0 g in date and unreserved left; the dose is 70 g" in (
        left.reason
    )
    assert skipped.greedy_kpis.placed == 1 and skipped.kpis.placed == 1

    # COMMIT books the one that has stock, on the stocked day
    committed = platform.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site.id,
            horizon_days=14,
            mode=pb.PLAN_MODE_COMMIT,
            time_limit_seconds=3,
            seed=1,
            skip_without_stock=True,
            request_id=request_id(),
        )
    )
    booked = platform.scheduler.ListAppointments(
        pb.ListAppointmentsRequest(site_id=site.id)
    ).appointments
    assert [x.local_date for x in booked] == [LAST_STOCKED]
    assert [x.appointment_id for x in committed.proposals] == [booked[0].id]
    assert len(committed.unplaced) == 1


def test_plan_schedule_without_the_inventory_plans_without_stock(platform: Platform) -> None:
    site, _ = site_with_chairs(platform)
    stock_site(platform, site.id)  # nothing on the shelf: every day 0 g
    patient_plan(platform, site, "MRN-SD")
    assert not plan(platform, site.id, skip=True).proposals  # checked: no day has stock
    platform.stop_inventory()  # products stay cached; the stock cannot be asked
    down = plan(platform, site.id, skip=True)
    # as FindSlots: not checked, planned as without the option, nothing flagged
    assert not down.stock_checked and not down.unplaced
    assert [p.slot.local_date for p in down.proposals] == [DUE]
    assert not down.proposals[0].slot.stock_short
