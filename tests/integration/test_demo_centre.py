"""The demo centre `make run` loads (demo/centre.py) works against real servers and loads once."""

from __future__ import annotations

import datetime as dt

import grpc

from demo import centre
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import StaticToken
from tests.integration.conftest import Platform


def test_demo_centre_loads_once_and_is_usable(platform: Platform) -> None:
    today = dt.date(2026, 11, 24)
    # the demo centre is its organisation's: loaded and read as that organisation's operator
    token = platform.issuer.operator_token(centre.ORG)
    tokens = StaticToken(token)
    scheduler_channel = platform.issuer.channel(platform.scheduler_address, token)
    inventory_channel = platform.issuer.channel(platform.inventory_address, token)
    try:
        _check_demo(platform, today, tokens, scheduler_channel, inventory_channel)
    finally:
        scheduler_channel.close()
        inventory_channel.close()


def _check_demo(
    platform: Platform,
    today: dt.date,
    tokens: StaticToken,
    scheduler_channel: grpc.Channel,
    inventory_channel: grpc.Channel,
) -> None:
    scheduler = scheduler_pb2_grpc.SchedulerServiceStub(scheduler_channel)
    inventory = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
    lines = centre.load(
        platform.scheduler_address, platform.inventory_address, today, tokens=tokens
    )
    assert lines and "12 patients" in lines[1]
    assert (
        centre.load(platform.scheduler_address, platform.inventory_address, today, tokens=tokens)
        == []
    )
    site = scheduler.ListSites(pb.ListSitesRequest(organisation_id="demo-org")).sites[0]
    booked = scheduler.ListAppointments(pb.ListAppointmentsRequest(site_id=site.id)).appointments
    assert len(booked) == 3
    reserved = inventory.ListReservations(inv.ListReservationsRequest(site_id=site.id)).reservations
    assert {r.appointment_id for r in reserved} == {a.id for a in booked}
    due = scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=site.id, horizon_days=30)
    ).due_infusions
    unbooked = [d for d in due if not d.booked_appointment_id]
    assert len(unbooked) >= 9
    slots = scheduler.FindSlots(
        pb.FindSlotsRequest(therapy_plan_id=unbooked[0].therapy_plan_id)
    ).slots
    assert slots
