"""The demo centre `make run` loads (services/demo.py) works against real servers and loads once."""

from __future__ import annotations

import datetime as dt

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services import demo
from services.common.auth.tokens import StaticToken
from tests.integration.conftest import Platform


def test_demo_centre_loads_once_and_is_usable(platform: Platform) -> None:
    today = dt.date(2026, 11, 24)
    tokens = StaticToken(platform.issuer.operator_token())
    lines = demo.load(platform.scheduler_address, platform.inventory_address, today, tokens=tokens)
    assert lines and "12 patients" in lines[1]
    assert (
        demo.load(platform.scheduler_address, platform.inventory_address, today, tokens=tokens)
        == []
    )
    site = platform.scheduler.ListSites(pb.ListSitesRequest(organisation_id="demo-org")).sites[0]
    booked = platform.scheduler.ListAppointments(
        pb.ListAppointmentsRequest(site_id=site.id)
    ).appointments
    assert len(booked) == 3
    reserved = platform.inventory.ListReservations(
        inv.ListReservationsRequest(site_id=site.id)
    ).reservations
    assert {r.appointment_id for r in reserved} == {a.id for a in booked}
    due = platform.scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=30)
    ).due_infusions
    unbooked = [d for d in due if not d.booked_appointment_id]
    assert len(unbooked) >= 9
    slots = platform.scheduler.FindSlots(
        pb.FindSlotsRequest(therapy_plan_id=unbooked[0].therapy_plan_id)
    ).slots
    assert slots
