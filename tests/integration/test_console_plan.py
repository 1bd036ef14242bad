"""The console's schedule planning page against real services with the demo centre: the
optimiser's proposal drawn on each day's board before anything is booked, booking it with one
confirmation (a double submit books once), a change in between said plainly, and the page
refused to roles without the permission and to another organisation."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.console_support import TODAY, Platform, running_platform, sign_in

BASE = "http://127.0.0.1"
ASK = {"date": TODAY.isoformat(), "days": "14", "time_limit": "5"}


@pytest.fixture
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("console-plan")) as running:
        yield running


def client_as(platform: Platform, role: str, organisation: str = "") -> TestClient:
    client = TestClient(platform.app, base_url=BASE)
    if organisation:
        sign_in(client, role, organisation)
    else:
        sign_in(client, role)
    return client


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def booked(platform: Platform) -> list[pb.Appointment]:
    listed = platform.scheduler().ListAppointments(
        pb.ListAppointmentsRequest(site_id=platform.site_id, page_size=500)
    )
    return [a for a in listed.appointments if a.status == pb.APPOINTMENT_STATUS_BOOKED]


def propose(client: TestClient, platform: Platform) -> tuple[str, dict[str, str]]:
    """The proposal page and the fields of its "book these" form."""
    form = client.get("/plan", params={"site": platform.site_id})
    assert form.status_code == 200, form.text[:500]
    page = client.post(
        f"/plan/propose?site={platform.site_id}", data={"csrf_token": csrf(form.text), **ASK}
    )
    assert page.status_code == 200, page.text[:1000]
    book = page.text.split('action="/plan/book')[1].split("</form>")[0]
    return page.text, dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', book))


def test_the_proposal_is_drawn_on_the_boards_and_booked_once_confirmed(
    platform: Platform,
) -> None:
    client = client_as(platform, "scheduling_coordinator")
    before = booked(platform)
    page, fields = propose(client, platform)
    proposed = int(re.search(r"Proposal: (\d+) infusions", page).group(1))  # type: ignore[union-attr]
    assert proposed > 0
    # each proposed infusion is a block on its day's board, named, next to what is booked
    assert page.count("status-proposed") == proposed
    assert re.search(r'status-proposed"[^>]*>.*?<strong class="patient">[^<]*, ', page, re.S)
    assert booked(platform) == before  # nothing is booked before the confirmation
    result = client.post(f"/plan/book?site={platform.site_id}", data=fields)
    assert result.status_code == 200, result.text[:1000]
    assert "These are the infusions the proposal showed." in result.text
    after = booked(platform)
    assert len(after) == len(before) + proposed
    # the same confirmation again (a double submit) books nothing more
    client.post(f"/plan/book?site={platform.site_id}", data=fields)
    assert len(booked(platform)) == len(after)


def test_a_booking_made_in_between_is_said_plainly(platform: Platform) -> None:
    client = client_as(platform, "scheduling_coordinator")
    page, fields = propose(client, platform)
    # someone books one of the proposed patients elsewhere before the confirmation
    due = client.get("/due", params={"days": "14"}).text
    plan_id = re.search(r'href="/due/([^/"]+)/slots"', due)
    assert plan_id
    sch = platform.scheduler()
    slot = sch.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan_id.group(1))).slots[-1]
    sch.BookAppointment(
        pb.BookAppointmentRequest(
            therapy_plan_id=plan_id.group(1),
            chair_id=slot.chair_id,
            local_date=slot.local_date,
            local_start=slot.local_start,
            request_id="console-plan-in-between",
        )
    )
    result = client.post(f"/plan/book?site={platform.site_id}", data=fields)
    assert result.status_code == 200
    assert "The schedule changed since the proposal" in result.text


def test_only_coordinators_of_the_site_plan(platform: Platform) -> None:
    assert client_as(platform, "nurse").get("/plan").status_code == 403
    assert client_as(platform, "pharmacist").get("/plan").status_code == 403
    other = client_as(platform, "scheduling_coordinator", organisation="other-org")
    assert other.get("/plan", params={"site": platform.site_id}).status_code == 404
