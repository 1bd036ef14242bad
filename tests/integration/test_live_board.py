"""The live chair board end to end: a booking made through the scheduler reaches notify as
BOARD_CHANGED (through the scheduler's outbox and relay) and the console's server-sent events
(/board/events, notify's Subscribe as the signed-in nurse) for that site and day within a
second or two; not the board of another day, and nothing of it reaches another organisation's
nurse, even one naming the demo site's id. A reconnect with Last-Event-ID resumes after it, and
a role that may not subscribe is told 204 (its page polls)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from demo import centre
from services.common.auth.roles import Roles
from services.common.convert import to_date
from services.console.app import create_app
from services.console.settings import load_settings
from tests.integration.console_support import Platform, running_platform, sign_in
from tests.integration.live_support import a_free_slot, book, reading_events, relaying, serving


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    directory: Path = tmp_path_factory.mktemp("live")
    with (
        running_platform(directory) as platform,
        relaying(platform, directory),
        serving(platform.app) as base,
    ):
        yield platform, base


def signed_in(base: str, role: str, organisation: str = centre.ORG) -> httpx.Client:
    client = httpx.Client(base_url=base)
    sign_in(client, role, organisation)  # type: ignore[arg-type]  # an httpx.Client as well
    return client


def test_a_booking_reaches_its_days_board_and_no_other_organisation(
    live: tuple[Platform, str],
) -> None:
    platform, base = live
    plan_id, slot = a_free_slot(platform)
    day = to_date(slot.local_date)
    site = platform.site_id
    with (
        reading_events(signed_in(base, "nurse"), site, day) as nurse,
        reading_events(signed_in(base, "scheduling_coordinator"), site, day) as coordinator,
        reading_events(signed_in(base, "nurse"), site, day.replace(year=day.year + 1)) as later,
        reading_events(signed_in(base, "nurse", "other-org"), site, day) as stranger,
    ):
        assert {nurse.status, coordinator.status, later.status, stranger.status} == {200}
        booked = book(platform, plan_id, slot)
        event = nurse.next_board(timeout=10)
        assert event is not None, "no board event within 10 s of the booking"
        kind, sequence, data = event
        change = json.loads(data)
        assert change.pop("revision") >= 1
        assert change == {"appointment_id": booked.id, "status": "BOOKED", "stock_status": ""}
        assert coordinator.next_board(timeout=10) is not None
        # another day's board and another organisation's nurse hear nothing of it
        assert later.next_board(timeout=1) is None
        assert stranger.next_board(timeout=1) is None
    # the browser reconnecting with the id before it gets it again, and only after it
    resumed_from = str(int(sequence) - 1)
    with reading_events(signed_in(base, "nurse"), site, day, resumed_from) as again:
        replayed = again.next_board(timeout=10)
        assert replayed is not None and replayed[1] == sequence
    with reading_events(signed_in(base, "nurse"), site, day, sequence) as after:
        assert after.next_board(timeout=1) is None


def test_the_event_stream_needs_a_signed_in_user_and_a_day(live: tuple[Platform, str]) -> None:
    platform, base = live
    stranger = httpx.get(f"{base}/board/events?site={platform.site_id}&date=2026-11-24")
    assert stranger.status_code == 303 and "/login" in stranger.headers["location"]
    nurse = signed_in(base, "nurse")
    assert nurse.get("/board/events", params={"site": platform.site_id}).status_code == 400
    pharmacist = signed_in(base, "pharmacist")  # the board is not a page of theirs
    answer = pharmacist.get(
        "/board/events", params={"site": platform.site_id, "date": "2026-11-24"}
    )
    assert answer.status_code == 403


def test_a_role_that_may_not_subscribe_gets_204_so_the_page_polls(
    live: tuple[Platform, str],
) -> None:
    """A roles file (AUTH_ROLES_FILE) whose nurse opens the board but may not subscribe: the
    console answers 204, which tells EventSource to stop; the page polls instead."""
    platform, _ = live
    shipped = Roles.default()
    nurse = shipped.specs["nurse"]
    kept = [p for p in nurse.permissions if p != "notify.notifications.subscribe"]
    roles = Roles(
        {**shipped.specs, "nurse": nurse.model_copy(update={"permissions": kept})},
        shipped.authenticated,
    )
    app = create_app(
        load_settings(
            {
                "SCHEDULER_ADDRESS": platform.scheduler_address,
                "INVENTORY_ADDRESS": platform.inventory_address,
                "NOTIFY_ADDRESS": platform.notify_address,
                "AUTH_ISSUER": platform.issuer.issuer.url,
                "CONSOLE_SESSION_SECRET": "test-secret",
            }
        ),
        clock=platform.clock,
        roles=roles,
    )
    client = TestClient(app, base_url="http://127.0.0.1")
    sign_in(client, "nurse")
    assert client.get("/board").status_code == 200
    answer = client.get("/board/events", params={"site": platform.site_id, "date": "2026-11-24"})
    assert answer.status_code == 204
