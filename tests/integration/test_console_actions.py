"""The console's actions (services/console/actions.py) against real services: the chair
actions on the board (check in, start, complete with the lots, no-show), moving a booking,
a purchase order from a reorder suggestion and a lot's recall. Each: it works, a refusal is a
readable page (not a 500), a role without the permission gets 403, another organisation's
appointment or lot is not found, and the same form sent twice acts once."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, to_date
from tests.integration.console_support import Platform, running_platform
from tests.integration.test_console import _inventory, client_as, csrf


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("console-actions")) as running:
        yield running


def _listed(platform: Platform) -> list[pb.Appointment]:
    return list(
        platform.scheduler()
        .ListAppointments(pb.ListAppointmentsRequest(site_id=platform.site_id, page_size=500))
        .appointments
    )


def _get(platform: Platform, appointment_id: str) -> pb.Appointment:
    return (
        platform.scheduler().GetAppointment(pb.GetAppointmentRequest(id=appointment_id)).appointment
    )


def _booked_on(platform: Platform, day: dt.date) -> list[pb.Appointment]:
    found = [
        a
        for a in _listed(platform)
        if a.status == pb.APPOINTMENT_STATUS_BOOKED and to_date(a.local_date) == day
    ]
    return sorted(found, key=lambda a: (a.local_start.hours, a.local_start.minutes, a.id))


def _form(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the page's form posting to ``action``."""
    found = re.search(rf'<form[^>]*action="{re.escape(action)}"[^>]*>(.*?)</form>', page, re.S)
    assert found, f"no form to {action} on the page"
    return {
        k: html.unescape(v) for k, v in re.findall(r'name="([a-z_0-9]+)" value="([^"]*)"', found[1])
    }


def _at_start_of(platform: Platform, a: pb.Appointment, minutes: int = 0) -> None:
    """The clock at the appointment's booked start (London in November is UTC), plus
    ``minutes``."""
    day = to_date(a.local_date)
    start = dt.datetime.combine(
        day, dt.time(a.local_start.hours, a.local_start.minutes), tzinfo=dt.UTC
    )
    platform.clock.set(start + dt.timedelta(minutes=minutes))


def _board(client: TestClient, platform: Platform, day: dt.date) -> str:
    page = client.get("/board", params={"site": platform.site_id, "date": day.isoformat()})
    assert page.status_code == 200, page.text[:1000]
    return page.text


def test_a_nurse_checks_in_starts_and_completes_an_infusion(platform: Platform) -> None:
    day = platform.booked_day
    a = _booked_on(platform, day)[0]
    _at_start_of(platform, a, -10)
    nurse = client_as(platform, "nurse")
    board = _board(nurse, platform, day)
    # a booked block offers check in and no-show to the nurse, not the coordinator's move
    assert f"/appointments/{a.id}/check-in" in board
    assert f"/appointments/{a.id}/no-show" in board
    assert f"/appointments/{a.id}/move" not in board
    checking_in = _form(board, f"/appointments/{a.id}/check-in")
    done = nurse.post(f"/appointments/{a.id}/check-in", data=checking_in, follow_redirects=False)
    assert done.status_code == 303, done.text[:1000]
    assert _get(platform, a.id).status == pb.APPOINTMENT_STATUS_CHECKED_IN
    revision = _get(platform, a.id).etag
    # the same form again (a double click) is one check-in: nothing changes
    again = nurse.post(f"/appointments/{a.id}/check-in", data=checking_in, follow_redirects=False)
    assert again.status_code == 303
    assert _get(platform, a.id).etag == revision
    # in the chair
    _at_start_of(platform, a, 0)
    board = nurse.get(done.headers["location"]).text
    starting = _form(board, f"/appointments/{a.id}/start")
    assert nurse.post(f"/appointments/{a.id}/start", data=starting).status_code == 200
    assert _get(platform, a.id).status == pb.APPOINTMENT_STATUS_IN_PROGRESS
    # complete: the form offers the booked dose; the lot typed as at the chair
    _at_start_of(platform, a, 90)
    board = _board(nurse, platform, day)
    form = nurse.post(
        f"/appointments/{a.id}/complete/form",
        data=_form(board, f"/appointments/{a.id}/complete/form"),
    )
    assert form.status_code == 200 and "Complete the infusion" in form.text
    assert f'name="grams" type="text" inputmode="decimal" value="{a.dose_grams}"' in form.text
    fields = _form(form.text, f"/appointments/{a.id}/complete")
    fields |= {"grams": a.dose_grams, "lot_1": "LOT-CHAIR-1", "vials_1": "2"}
    completed = nurse.post(f"/appointments/{a.id}/complete", data=fields, follow_redirects=False)
    assert completed.status_code == 303, completed.text[:2000]
    given = _get(platform, a.id)
    assert given.status == pb.APPOINTMENT_STATUS_FULFILLED
    assert [(x.lot_number, x.vials) for x in given.scanned_lots] == [("LOT-CHAIR-1", 2)]
    # sent twice: still one completion, same revision
    twice = nurse.post(f"/appointments/{a.id}/complete", data=fields, follow_redirects=False)
    assert twice.status_code == 303
    assert _get(platform, a.id).etag == given.etag


def test_a_refused_chair_action_is_a_readable_message(platform: Platform) -> None:
    later = max(to_date(a.local_date) for a in _listed(platform))
    a = _booked_on(platform, later)[0]
    platform.clock.set(dt.datetime.combine(later - dt.timedelta(days=1), dt.time(9), tzinfo=dt.UTC))
    nurse = client_as(platform, "nurse")
    board = _board(nurse, platform, later)
    answer = nurse.post(
        f"/appointments/{a.id}/check-in", data=_form(board, f"/appointments/{a.id}/check-in")
    )
    # the scheduler's rule, said on the page with the way back to the board (not a 500)
    assert answer.status_code == 409, answer.text[:1000]
    assert "Not possible now" in answer.text and "(rule " in answer.text
    assert f"/board?site={platform.site_id}" in answer.text
    assert _get(platform, a.id).status == pb.APPOINTMENT_STATUS_BOOKED
    # an unreadable dose is the field's refusal
    _at_start_of(platform, a, 0)
    answer = nurse.post(
        f"/appointments/{a.id}/complete",
        data={"csrf_token": csrf(board), "grams": "lots", "lot_1": "X", "request_id": "r-1"},
    )
    assert answer.status_code == 400
    assert "Not accepted" in answer.text and "grams_given" in answer.text


def test_chair_actions_need_their_permission_and_the_organisation(platform: Platform) -> None:
    a = _booked_on(platform, max(to_date(x.local_date) for x in _listed(platform)))[0]
    coordinator = client_as(platform, "scheduling_coordinator")
    board = _board(coordinator, platform, to_date(a.local_date))
    assert f"/appointments/{a.id}/check-in" not in board  # not offered ...
    token = csrf(board)
    for action in ("check-in", "start", "no-show", "complete", "complete/form"):
        refused = coordinator.post(f"/appointments/{a.id}/{action}", data={"csrf_token": token})
        assert refused.status_code == 403, action  # ... nor allowed
    stranger = client_as(platform, "nurse", organisation="other-clinic-org")
    page = stranger.get("/board")
    answer = stranger.post(
        f"/appointments/{a.id}/check-in",
        data={
            "csrf_token": csrf(page.text) if "csrf_token" in page.text else "",
            "request_id": "x",
        },
    )
    assert answer.status_code == 404
    assert _get(platform, a.id).status == pb.APPOINTMENT_STATUS_BOOKED


def test_no_show_once_the_time_has_come(platform: Platform) -> None:
    day = min(
        to_date(x.local_date) for x in _listed(platform) if x.status == pb.APPOINTMENT_STATUS_BOOKED
    )
    a = _booked_on(platform, day)[-1]
    _at_start_of(platform, a, 30)
    nurse = client_as(platform, "nurse")
    board = _board(nurse, platform, day)
    fields = _form(board, f"/appointments/{a.id}/no-show")
    done = nurse.post(f"/appointments/{a.id}/no-show", data=fields, follow_redirects=False)
    assert done.status_code == 303
    assert _get(platform, a.id).status == pb.APPOINTMENT_STATUS_NOSHOW


def test_moving_a_booking_and_a_stale_page(platform: Platform) -> None:
    later = max(to_date(a.local_date) for a in _listed(platform))
    platform.clock.set(dt.datetime.combine(later - dt.timedelta(days=3), dt.time(9), tzinfo=dt.UTC))
    a = _booked_on(platform, later)[0]
    coordinator = client_as(platform, "scheduling_coordinator")
    board = _board(coordinator, platform, later)
    assert f'href="/appointments/{a.id}/move"' in board
    slots = coordinator.get(f"/appointments/{a.id}/move")
    assert slots.status_code == 200, slots.text[slots.text.find("<main") :][:800]
    offered = re.findall(
        rf'<form method="post" action="/appointments/{a.id}/move/confirm">(.*?)</form>',
        slots.text,
        re.S,
    )
    assert len(offered) >= 2, slots.text[:3000]
    first, second = (
        {k: html.unescape(v) for k, v in re.findall(r'name="([a-z_]+)" value="([^"]*)"', f)}
        for f in offered[:2]
    )
    ask = coordinator.post(f"/appointments/{a.id}/move/confirm", data=first)
    assert ask.status_code == 200 and "Move this booking?" in ask.text
    assert _get(platform, a.id).etag == a.etag  # nothing moved before the confirmation
    confirmed = _form(ask.text, f"/appointments/{a.id}/move")
    moved = coordinator.post(f"/appointments/{a.id}/move", data=confirmed, follow_redirects=False)
    assert moved.status_code == 303, moved.text[:2000]
    now = _get(platform, a.id)
    assert now.chair_id == first["chair_id"]
    assert now.local_date == from_date(dt.date.fromisoformat(first["date"]))
    # the same confirmation again is the same move (not refused as stale, not moved twice)
    again = coordinator.post(f"/appointments/{a.id}/move", data=confirmed, follow_redirects=False)
    assert again.status_code == 303
    assert _get(platform, a.id).etag == now.etag
    # another slot chosen on the page opened before the move: it changed since
    stale = coordinator.post(f"/appointments/{a.id}/move/confirm", data=second)
    answer = coordinator.post(
        f"/appointments/{a.id}/move", data=_form(stale.text, f"/appointments/{a.id}/move")
    )
    assert answer.status_code == 409
    assert "changed by someone else since you opened the page" in answer.text
    assert _get(platform, a.id).etag == now.etag
    # the patient page's upcoming bookings offer the move too
    patient = coordinator.get(f"/patients/{a.patient_id}")
    assert f'href="/appointments/{a.id}/move"' in patient.text
    # a nurse may not move; another organisation finds no such appointment
    nurse = client_as(platform, "nurse")
    assert nurse.get(f"/appointments/{a.id}/move").status_code == 403
    other = client_as(platform, "scheduling_coordinator", organisation="other-clinic-org")
    assert other.get(f"/appointments/{a.id}/move").status_code == 404


def _orders(platform: Platform) -> list[inv.PurchaseOrder]:
    return list(
        _inventory(platform, "pharmacy_manager")
        .ListPurchaseOrders(inv.ListPurchaseOrdersRequest(site_id=platform.site_id))
        .purchase_orders
    )


def test_a_purchase_order_from_a_suggestion(platform: Platform) -> None:
    manager = client_as(platform, "pharmacy_manager")
    page = manager.get("/reorder")
    assert page.status_code == 200
    suggestion = _form(page.text, "/reorder/order/confirm")
    ask = manager.post("/reorder/order/confirm", data=suggestion)
    assert ask.status_code == 200 and "Yes, place the order" in ask.text
    before = len(_orders(platform))
    fields = _form(ask.text, "/reorder/order") | {
        "vials": suggestion["vials"],
        "supplier": "Demo wholesaler",
        "unit_cost": "480.00",
        "currency": "GBP",
    }
    placed = manager.post("/reorder/order", data=fields, follow_redirects=False)
    assert placed.status_code == 303, placed.text[:2000]
    orders = _orders(platform)
    assert len(orders) == before + 1
    made = next(o for o in orders if o.id in placed.headers["location"])
    assert made.supplier == "Demo wholesaler"
    assert made.lines[0].vials_ordered == int(suggestion["vials"])
    assert made.lines[0].product_id == suggestion["product_id"]
    # twice: one order
    manager.post("/reorder/order", data=fields, follow_redirects=False)
    assert len(_orders(platform)) == before + 1
    assert "placed" in manager.get(placed.headers["location"]).text
    # a refusal (no vials) is the field's message, not a 500
    refused = manager.post("/reorder/order", data=fields | {"vials": "0", "request_id": "po-0"})
    assert refused.status_code == 400, refused.text[:1000]
    assert "vials" in refused.text
    # the pharmacist has no such permission; another organisation's site is not theirs
    pharmacist = client_as(platform, "pharmacist")
    token = csrf(pharmacist.get("/recall").text)
    assert pharmacist.post("/reorder/order", data=fields | {"csrf_token": token}).status_code == 403
    other = client_as(platform, "pharmacy_manager", organisation="other-pharmacy-org")
    other_page = other.get("/stock")
    answer = other.post(
        "/reorder/order",
        data=fields | {"csrf_token": csrf(other_page.text), "request_id": "po-other"},
    )
    assert answer.status_code == 404
    assert len(_orders(platform)) == before + 1


def test_recalling_a_lot(platform: Platform) -> None:
    pharmacist = _inventory(platform, "pharmacist")
    lot = next(
        x
        for x in pharmacist.ListLots(inv.ListLotsRequest(site_id=platform.site_id)).lots
        if x.state == inv.LOT_STATE_AVAILABLE
    )
    client = client_as(platform, "pharmacist")
    page = client.get("/recall", params={"product": lot.product_id, "lot": lot.lot_number})
    ask = client.post("/recall/confirm", data=_form(page.text, "/recall/confirm"))
    assert ask.status_code == 200 and "Yes, recall the lot" in ask.text
    fields = _form(ask.text, "/recall/lot")
    # the reason is required
    assert client.post("/recall/lot", data=fields).status_code == 400
    assert _lot_state(platform, lot.id) == inv.LOT_STATE_AVAILABLE
    # the pharmacy manager may not recall; another organisation finds no such lot
    manager = client_as(platform, "pharmacy_manager")
    token = csrf(manager.get("/reorder").text)
    refused = manager.post("/recall/lot", data=fields | {"csrf_token": token, "reason": "x"})
    assert refused.status_code == 403
    other = client_as(platform, "pharmacist", organisation="other-pharmacy-org")
    other_token = csrf(other.get("/recall").text)
    answer = other.post(
        "/recall/lot",
        data=fields | {"csrf_token": other_token, "reason": "x", "request_id": "recall-other"},
    )
    assert answer.status_code == 404
    assert _lot_state(platform, lot.id) == inv.LOT_STATE_AVAILABLE
    done = client.post("/recall/lot", data=fields | {"reason": "supplier notice 42"})
    assert done.status_code == 200, done.text[:2000]
    assert "recalled" in done.text and platform.site_id in done.text
    assert _lot_state(platform, lot.id) == inv.LOT_STATE_RECALLED
    twice = client.post("/recall/lot", data=fields | {"reason": "supplier notice 42"})
    assert twice.status_code == 200


def _lot_state(platform: Platform, lot_id: str) -> int:
    lots = _inventory(platform, "pharmacist").ListLots(
        inv.ListLotsRequest(site_id=platform.site_id)
    )
    return next(x.state for x in lots.lots if x.id == lot_id)
