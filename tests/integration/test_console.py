"""The staff console against real services (in-process, SQLite) and the development issuer
over HTTP: sign-in by the authorization code flow with PKCE, the health check, each page with
the demo centre's data for the roles that may open it and a 403 page for those that may not,
and booking and cancelling through the pages."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from google.type.money_pb2 import Money
from starlette.testclient import TestClient

from demo import centre
from demo.builder import Builder
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.convert import from_date, to_date
from services.console.app import create_app
from services.console.settings import load_settings
from services.launcher import free_port
from tests.integration.console_support import (
    TODAY,
    Platform,
    publish_lot_expiring,
    running_platform,
    sign_in,
)

BASE = "http://127.0.0.1"  # a loopback address: the development issuer redirects only there


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("console")) as running:
        yield running


def client_as(platform: Platform, role: str, organisation: str = centre.ORG) -> TestClient:
    client = TestClient(platform.app, base_url=BASE)
    sign_in(client, role, organisation)
    return client


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_healthz_answers_200_when_the_three_services_serve(platform: Platform) -> None:
    answer = TestClient(platform.app, base_url=BASE).get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["services"] == {
        "scheduler": "SERVING",
        "inventory": "SERVING",
        "notify": "SERVING",
    }


def test_a_page_sends_a_stranger_to_sign_in(platform: Platform) -> None:
    answer = TestClient(platform.app, base_url=BASE).get("/board", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fboard"


def test_sign_in_is_the_authorization_code_flow_with_pkce(platform: Platform) -> None:
    client = TestClient(platform.app, base_url=BASE)
    to_issuer = client.get("/login", follow_redirects=False)
    location = to_issuer.headers["location"]
    assert location.startswith(f"{platform.issuer.issuer.url}/authorize?")
    assert "code_challenge_method=S256" in location and "code_challenge=" in location
    sign_in(client, "nurse")
    home = client.get("/", follow_redirects=False)
    assert home.headers["location"] == "/board"  # a nurse's first (and only) page
    board = client.get("/board")
    assert "Dev-nurse" not in board.text and "Nurse (development)" in board.text
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', board.text, re.S)
    assert nav and "Chair board" in nav.group(1)
    assert "Due list" not in nav.group(1) and "Pharmacy" not in nav.group(1)
    # signing out ends the session: the board asks for sign-in again
    client.post("/logout", data={"csrf_token": csrf(board.text)})
    assert client.get("/board", follow_redirects=False).status_code == 303


def test_a_replayed_callback_signs_nobody_in(platform: Platform) -> None:
    client = TestClient(platform.app, base_url=BASE)
    answer = client.get("/auth/callback?code=made-up&state=made-up", follow_redirects=False)
    assert answer.status_code == 400
    assert client.get("/board", follow_redirects=False).status_code == 303


def test_the_board_shows_the_demo_day_with_names_and_nurse_load(platform: Platform) -> None:
    client = client_as(platform, "nurse")
    day = platform.booked_day
    page = client.get("/board", params={"date": day.isoformat()})
    assert page.status_code == 200
    # the demo centre books three patients (demo/centre.py); the board names them
    appointments = (
        platform.scheduler()
        .ListAppointments(pb.ListAppointmentsRequest(site_id=platform.site_id))
        .appointments
    )
    that_day = [a for a in appointments if a.local_date == from_date(day)]
    assert that_day
    for a in that_day:
        patient = platform.scheduler().GetPatient(pb.GetPatientRequest(id=a.patient_id)).patient
        assert f"{patient.family_name}, {patient.given_name}" in page.text
        assert a.patient_id not in page.text  # names, not ids
        assert _brand(platform, a.product_id) in page.text  # the product by its name
        assert f"{a.dose_grams} g" in page.text
    assert page.text.count('<th scope="row">Chair ') == 6  # the demo's six chairs, a row each
    assert "Nurse load per hour" in page.text
    # printing: a stylesheet of its own that leaves out navigation and buttons
    assert 'href="http://127.0.0.1/static/print.css" media="print"' in page.text
    printed = TestClient(platform.app, base_url=BASE).get("/static/print.css")
    assert printed.status_code == 200 and ".site-header" in printed.text
    # a wall screen listens for its day's changes (polling every 30 s only while it cannot)
    wall = client.get("/board", params={"date": day.isoformat(), "wall": "1"})
    assert 'class="wall"' in wall.text and 'hx-trigger="board-changed delay:300ms"' in wall.text
    assert f'data-events="/board/events?site={platform.site_id}&amp;date={day}"' in wall.text
    assert 'data-poll-seconds="30"' in wall.text
    rows = client.get(
        "/board", params={"date": day.isoformat(), "wall": "1"}, headers={"HX-Request": "true"}
    )
    assert "<html" not in rows.text and "Nurse load per hour" in rows.text


@pytest.mark.parametrize(
    ("role", "page", "allowed"),
    [
        ("nurse", "/board", True),
        ("scheduling_coordinator", "/board", True),
        ("pharmacist", "/board", False),
        ("nurse", "/due", False),
        ("scheduling_coordinator", "/due", True),
        ("prescriber", "/due", False),
        ("pharmacist", "/pharmacy", True),
        ("nurse", "/pharmacy", False),
        ("pharmacy_manager", "/pharmacy/pick-list", False),
        ("pharmacist", "/pharmacy/pick-list.csv", True),
        ("pharmacist", "/stock", True),
        ("pharmacy_manager", "/stock", True),
        ("nurse", "/stock", False),
        ("pharmacist", "/receive", True),
        ("pharmacy_manager", "/receive", False),
        ("pharmacist", "/forecast", True),
        ("scheduling_coordinator", "/forecast", False),
        ("pharmacy_manager", "/reorder", True),
        ("pharmacist", "/reorder", False),
        ("pharmacist", "/recall", True),
        ("pharmacy_manager", "/recall", False),
        ("auditor", "/recall", False),
        ("prescriber", "/patients", True),
        ("scheduling_coordinator", "/patients", True),
        ("nurse", "/patients", False),
        ("pharmacist", "/patients", False),
    ],
)
def test_each_page_opens_for_its_roles_only(
    platform: Platform, role: str, page: str, allowed: bool
) -> None:
    answer = client_as(platform, role).get(page)
    assert answer.status_code == (200 if allowed else 403), answer.text[:500]
    if not allowed:
        assert "Not allowed" in answer.text


def test_another_organisation_sees_none_of_the_demo_centre(platform: Platform) -> None:
    other = "other-org"
    administrator = StaticToken(platform.issuer.issuer.role_token("administrator", other))
    build = Builder(
        scheduler_pb2_grpc.SchedulerServiceStub(
            open_channel(platform.scheduler_address, None, administrator)
        ),
        inventory_pb2_grpc.InventoryServiceStub(
            open_channel(platform.inventory_address, None, administrator)
        ),
        other,
    )
    site = build.site(name="Other day unit", request_id="console-test-other-site")
    build.chairs(site.id, 2)
    nurse = client_as(platform, "nurse", organisation=other)
    board = nurse.get("/board")
    assert board.status_code == 200
    assert "Other day unit" in board.text and "Demo infusion centre" not in board.text
    assert board.text.count('<th scope="row">Chair ') == 2
    # the demo's site named outright is no site of theirs
    assert nurse.get("/board", params={"site": platform.site_id}).status_code == 404
    # nor is a demo plan or appointment: the scheduler answers NOT_FOUND, the page 404
    coordinator = client_as(platform, "scheduling_coordinator", organisation=other)
    due = client_as(platform, "scheduling_coordinator").get("/due")
    plan = re.search(r'href="/due/([^/"]+)/slots"', due.text)
    assert plan
    assert coordinator.get(f"/due/{plan.group(1)}/slots").status_code == 404
    # and a nurse of an organisation without sites finds none
    assert client_as(platform, "nurse", organisation="empty-org").get("/board").status_code == 404


def test_healthz_answers_503_naming_the_service_that_does_not_answer(
    platform: Platform,
) -> None:
    settings = load_settings(
        {
            "SCHEDULER_ADDRESS": platform.scheduler_address,
            "INVENTORY_ADDRESS": platform.inventory_address,
            "NOTIFY_ADDRESS": f"127.0.0.1:{free_port()}",  # nobody listens there
            "AUTH_ISSUER": platform.issuer.issuer.url,
        }
    )
    answer = TestClient(create_app(settings), base_url=BASE).get("/healthz")
    assert answer.status_code == 503
    services = answer.json()["services"]
    assert services["scheduler"] == services["inventory"] == "SERVING"
    assert services["notify"] != "SERVING"


def test_booking_from_the_due_list_creates_the_booking(platform: Platform) -> None:
    client = client_as(platform, "scheduling_coordinator")
    due = client.get("/due")
    assert due.status_code == 200
    plan_id = re.search(r'href="/due/([^/"]+)/slots"', due.text)
    assert plan_id, "no unbooked due infusion on the demo's due list"
    slots = client.get(f"/due/{plan_id.group(1)}/slots")
    assert slots.status_code == 200
    form = re.search(r'<form method="post" action="/book/confirm">(.*?)</form>', slots.text, re.S)
    assert form, slots.text[:2000]
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form.group(1)))
    confirm = client.post("/book/confirm", data=fields)
    assert confirm.status_code == 200 and "Book this infusion?" in confirm.text
    before = _appointments(platform, plan_id.group(1))
    assert before == []  # nothing is booked before the confirmation
    confirmed = dict(
        re.findall(r'name="([a-z_]+)" value="([^"]*)"', confirm.text.split('action="/book"')[1])
    )
    booked = client.post("/book", data=confirmed, follow_redirects=False)
    assert booked.status_code == 303, booked.text[:1000]
    made = _appointments(platform, plan_id.group(1))
    assert len(made) == 1
    assert made[0].chair_id == fields["chair_id"]
    assert made[0].local_date == from_date(dt.date.fromisoformat(fields["date"]))
    # the same confirmation sent twice (a double click) is one booking
    client.post("/book", data=confirmed, follow_redirects=False)
    assert len(_appointments(platform, plan_id.group(1))) == 1
    # the board of that day shows it, with a cancel button for the coordinator
    board = client.get(booked.headers["location"])
    assert f"/appointments/{made[0].id}/cancel/confirm" in board.text
    # cancelling asks first, then cancels
    ask = client.post(
        f"/appointments/{made[0].id}/cancel/confirm", data={"csrf_token": csrf(board.text)}
    )
    assert "Cancel this appointment?" in ask.text
    assert _appointments(platform, plan_id.group(1))[0].status == pb.APPOINTMENT_STATUS_BOOKED
    values = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', ask.text.split('/cancel"')[1]))
    done = client.post(
        f"/appointments/{made[0].id}/cancel",
        data={**values, "reason": "patient asked"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert _appointments(platform, plan_id.group(1))[0].status == pb.APPOINTMENT_STATUS_CANCELLED


def test_a_form_without_the_session_csrf_token_is_refused(platform: Platform) -> None:
    client = client_as(platform, "scheduling_coordinator")
    answer = client.post("/book", data={"csrf_token": "forged", "plan": "x"})
    assert answer.status_code == 403


def _brand(platform: Platform, product_id: str) -> str:
    from infusion.inventory.v1 import inventory_pb2 as inv

    token = StaticToken(platform.issuer.issuer.role_token("pharmacist", centre.ORG))
    stub = inventory_pb2_grpc.InventoryServiceStub(
        open_channel(platform.inventory_address, None, token)
    )
    brand = stub.GetProduct(inv.GetProductRequest(id=product_id)).product.brand
    assert brand
    return str(brand)


def _appointments(platform: Platform, plan_id: str) -> list[pb.Appointment]:
    listed = (
        platform.scheduler()
        .ListAppointments(pb.ListAppointmentsRequest(site_id=platform.site_id, page_size=500))
        .appointments
    )
    return [a for a in listed if a.therapy_plan_id == plan_id]


def test_pharmacy_lists_expiring_lots_and_the_pick_list(platform: Platform) -> None:
    client = client_as(platform, "pharmacist")
    page = client.get("/pharmacy", params={"days": "3650"})
    assert page.status_code == 200
    lots = re.findall(r'<tr(?: class="overdue")?><th scope="row">([^<]+)</th>', page.text)
    assert lots, page.text[:3000]
    narrow = client.get("/pharmacy", params={"days": "0"})
    assert len(re.findall(r'<tr(?: class="overdue")?><th scope="row">', narrow.text)) < len(lots)
    # the demo reserves stock for its bookings; that day's pick list names their lots
    day = platform.booked_day.isoformat()
    booked = [
        a
        for a in platform.scheduler()
        .ListAppointments(pb.ListAppointmentsRequest(site_id=platform.site_id))
        .appointments
        if a.local_date == from_date(platform.booked_day)
    ]
    pick = client.get("/pharmacy/pick-list", params={"date": day})
    assert pick.status_code == 200
    exported = client.get("/pharmacy/pick-list.csv", params={"date": day})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["appointment"] for r in rows} == {a.id for a in booked}
    assert all(int(r["vials"]) > 0 and r["lot"] for r in rows)
    for r in rows:
        assert r["lot"] in pick.text and r["appointment"] in pick.text
        assert r["product"] == _brand(platform, r["product_id"]) and r["product"] in pick.text


# -- pharmacy: stock, receiving by scan, forecast, reorder, recall -----------------------------

GTIN = "05412345678908"  # a valid GTIN-14 (check digit 8)


def _inventory(
    platform: Platform, role: str, org: str = centre.ORG
) -> inventory_pb2_grpc.InventoryServiceStub:
    token = StaticToken(platform.issuer.issuer.role_token(role, org))
    return inventory_pb2_grpc.InventoryServiceStub(
        open_channel(platform.inventory_address, None, token)
    )


def _scan_product(platform: Platform) -> inv.Product:
    """A product whose 5 g vials carry GTIN (the shipped catalogue has no GTINs)."""
    admin = _inventory(platform, "administrator")
    found: list[inv.Product] = [
        p
        for p in admin.ListProducts(inv.ListProductsRequest(page_size=200)).products
        if p.code == "console-scan-ivig"
    ]
    if found:
        return found[0]
    made: inv.Product = admin.CreateProduct(
        inv.CreateProductRequest(
            request_id="console-test-scan-product",
            product=inv.Product(
                code="console-scan-ivig",
                brand="Scanned IVIg",
                manufacturer="Lab",
                ig_class=inv.IG_CLASS_IVIG,
                concentration_percent="10",
                routes=[inv.ROUTE_IV],
                presentations=[inv.Presentation(grams="5", ml="50", gtin=GTIN)],
                storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
            ),
        )
    ).product
    return made


def _rows(page: str) -> list[list[str]]:
    """The body rows of the page's tables, each cell's text."""
    rows = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", page, re.S):
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
            cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
            rows.append([re.sub(r"<[^>]+>", "", c).strip() for c in cells])
    return rows


def test_stock_levels_per_product_and_site(platform: Platform) -> None:
    client = client_as(platform, "pharmacist")
    page = client.get("/stock")
    assert page.status_code == 200
    levels = _inventory(platform, "pharmacist").GetStockLevels(
        inv.GetStockLevelsRequest(site_id=platform.site_id)
    )
    assert levels.products
    rows = {r[1]: r for r in _rows(page.text)}
    for product in levels.products:
        row = rows[_brand(platform, product.product_id)]
        assert row[0] == "Demo infusion centre pharmacy"
        assert row[2:5] == [
            str(product.on_hand_vials),
            str(product.reserved_vials),
            str(product.available_vials),
        ]
    # a pharmacist of another organisation sees none of it
    other = client_as(platform, "pharmacist", organisation="other-pharmacy-org")
    assert "Demo infusion centre" not in other.get("/stock").text


def test_receiving_a_scanned_delivery(platform: Platform) -> None:
    product = _scan_product(platform)
    client = client_as(platform, "pharmacist")
    form = client.get("/receive")
    assert form.status_code == 200 and 'id="scan"' in form.text and "autofocus" in form.text
    token = csrf(form.text)
    scan = f"(01){GTIN}(17)280630(10)CONSOLE-7(21)SN-1"
    # an unreadable scan says why, on the form, and books nothing
    bad = client.post(
        "/receive/check", data={"csrf_token": token, "site": platform.site_id, "scan": "hello"}
    )
    assert bad.status_code == 400 and "The scan could not be read" in bad.text
    wrong = client.post(
        "/receive/check",
        data={"csrf_token": token, "site": platform.site_id, "scan": "(01)05412345678907"},
    )
    assert wrong.status_code == 400 and "not valid" in wrong.text  # a bad check digit
    check = client.post(
        "/receive/check",
        data={
            "csrf_token": token,
            "site": platform.site_id,
            "scan": scan,
            "vials": "12",
            "unit_cost": "170.50",
            "currency": "GBP",
            "supplier": "Wholesaler",
        },
    )
    assert check.status_code == 200
    said = dict(re.findall(r"<dt>([^<]+)</dt><dd>(.*?)</dd>", check.text))
    assert said["Product"] == "Scanned IVIg, 5 g vials"
    assert said["GTIN (01)"] == GTIN and said["Expiry (17)"] == "2028-06-30"
    assert said["Lot (10)"] == "CONSOLE-7" and said["Serial (21)"] == "SN-1"
    assert not _lots(platform, "CONSOLE-7")  # nothing received before the confirmation
    fields = _inputs(check.text)
    fields |= {"site": platform.site_id, "currency": "GBP"}  # the two selects
    assert fields["vials"] == "12" and fields["request_id"]
    done = client.post("/receive", data=fields)
    assert done.status_code == 200, done.text[:2000]
    assert "12 vials of Scanned IVIg 5 g, lot" in done.text and "CONSOLE-7" in done.text
    (lot,) = _lots(platform, "CONSOLE-7")
    assert (lot.product_id, lot.on_hand_vials, lot.site_id) == (product.id, 12, platform.site_id)
    assert lot.unit_cost.units == 170 and lot.unit_cost.nanos == 500_000_000
    # the same confirmation sent again (a double click, a reload) is one receipt
    client.post("/receive", data=fields)
    assert _lots(platform, "CONSOLE-7")[0].on_hand_vials == 12
    # and the stock page has it
    assert "Scanned IVIg" in client.get("/stock").text


def _inputs(page: str) -> dict[str, str]:
    """Each input's name and value (in whatever order the tag writes its attributes)."""
    found = {}
    for tag in re.findall(r"<input\b[^>]*>", page):
        name = re.search(r'\bname="([^"]*)"', tag)
        value = re.search(r'\bvalue="([^"]*)"', tag)
        if name:
            found[name.group(1)] = html.unescape(value.group(1)) if value else ""
    return found


def _lots(platform: Platform, lot_number: str) -> list[inv.Lot]:
    return list(
        _inventory(platform, "pharmacist").ListLots(inv.ListLotsRequest(lot_number=lot_number)).lots
    )


def test_the_forecast_chart(platform: Platform) -> None:
    client = client_as(platform, "pharmacy_manager")
    levels = _inventory(platform, "pharmacist").GetStockLevels(
        inv.GetStockLevelsRequest(site_id=platform.site_id)
    )
    product = levels.products[0].product_id
    page = client.get("/forecast", params={"product": product, "days": "21"})
    assert page.status_code == 200
    answer = _inventory(platform, "pharmacist").GetStockForecast(
        inv.GetStockForecastRequest(site_id=platform.site_id, product_id=product, horizon_days=21)
    )
    assert '<svg viewBox="0 0 760 260" role="img"' in page.text
    assert page.text.count('<rect class="reserved"') == len(answer.days) == 21
    assert '<polyline class="on-hand"' in page.text
    table = _rows(page.text)
    assert [r[0] for r in table] == [to_date(d.date).isoformat() for d in answer.days]
    assert [r[1] for r in table] == [str(Decimal(d.in_date_on_hand_grams)) for d in answer.days]
    if answer.HasField("first_stockout_date"):
        assert "stockout-line" in page.text and "Stockout on" in page.text
    else:
        assert "stockout-line" not in page.text and "No stockout in the next 21 days" in page.text
    # a product with a demand forecast (the scheduler's push) beyond its stock: the stockout
    # day is marked, on that day's bar
    scanned = _scan_product(platform)
    stockout = TODAY + dt.timedelta(days=3)
    _demand(platform, scanned.id, stockout, "5000")
    page = client.get("/forecast", params={"product": scanned.id, "days": "7"})
    assert f"Stockout on {stockout.strftime('%A %-d %B %Y')}" in page.text
    line = re.search(r'<line class="stockout-line" x1="([0-9.]+)"', page.text)
    bars = re.findall(
        r'<rect class="forecast" x="([0-9.]+)" y="[0-9.]+" width="([0-9.]+)"', page.text
    )
    assert line and len(bars) == 7
    x, width = (float(v) for v in bars[3])  # the fourth day's bar, centred on the line
    assert abs(x + width / 2 - float(line.group(1))) < 0.05


def _demand(platform: Platform, product_id: str, day: dt.date, grams: str) -> None:
    """The scheduler's demand forecast push (a service's permission), as the scheduler."""
    stub = inventory_pb2_grpc.InventoryServiceStub(
        open_channel(
            platform.inventory_address, None, platform.issuer.service_auth("scheduler").tokens
        )
    )
    stub.UpsertDemandForecast(
        inv.UpsertDemandForecastRequest(
            request_id=f"console-test-demand-{product_id}-{day}",
            forecasts=[
                inv.DemandForecast(
                    site_id=platform.site_id,
                    product_id=product_id,
                    day=from_date(day),
                    grams=grams,
                )
            ],
        )
    )


def test_reorder_suggestions_and_purchase_orders(platform: Platform) -> None:
    manager = _inventory(platform, "pharmacy_manager")
    suggestions = manager.ListReorderSuggestions(
        inv.ListReorderSuggestionsRequest(site_id=platform.site_id)
    ).suggestions
    assert suggestions  # the demo's shelf is under its safety stock
    privigen = suggestions[0]
    client = client_as(platform, "pharmacy_manager")
    page = client.get("/reorder")
    assert page.status_code == 200
    brand = _brand(platform, privigen.product_id)
    suggested = next(r for r in _rows(page.text) if r[0] == brand)
    assert suggested[1] == f"{privigen.vials} × {privigen.presentation_grams} g"
    assert suggested[2] == privigen.grams
    assert "No purchase orders." in page.text
    manager.CreatePurchaseOrder(
        inv.CreatePurchaseOrderRequest(
            request_id="console-test-po",
            purchase_order=inv.PurchaseOrder(
                site_id=platform.site_id,
                supplier="Demo wholesaler",
                reference="PO-CONSOLE-1",
                lines=[
                    inv.PurchaseOrderLine(
                        product_id=privigen.product_id,
                        presentation_grams=privigen.presentation_grams,
                        vials_ordered=privigen.vials,
                        unit_cost=Money(currency_code="GBP", units=500),
                    )
                ],
            ),
        )
    )
    rows = _rows(client.get("/reorder").text)
    order = next(r for r in rows if r[0] == "PO-CONSOLE-1")
    assert order[1:3] == ["Demo wholesaler", "open"]
    assert (
        order[4] == f"{brand} {privigen.presentation_grams} g: 0 of {privigen.vials} vials received"
    )


def test_the_recall_page_lists_the_patients_and_sites(platform: Platform) -> None:
    pharmacist = _inventory(platform, "pharmacist")
    reservations = pharmacist.ListReservations(
        inv.ListReservationsRequest(
            site_id=platform.site_id,
            needed_from=from_date(platform.booked_day),
            needed_to=from_date(platform.booked_day),
        )
    ).reservations
    reservation = next(r for r in reservations if r.lines)
    line = reservation.lines[0]
    opened = sum(Decimal(x.presentation_grams) * x.vials for x in reservation.lines)
    given = min(Decimal(reservation.grams), opened)
    pharmacist.DispenseReservation(
        inv.DispenseReservationRequest(
            reservation_id=reservation.id,
            vials=[inv.DispensedVials(lot_id=x.lot_id, vials=x.vials) for x in reservation.lines],
            grams_administered=str(given),
            grams_wasted=str(opened - given),
            request_id="console-test-dispense",
        )
    )
    client = client_as(platform, "pharmacist")
    form = client.get("/recall")
    assert form.status_code == 200 and "<h2>" not in form.text  # nothing traced yet
    page = client.get("/recall", params={"product": line.product_id, "lot": line.lot_number})
    assert page.status_code == 200
    rows = _rows(page.text)
    held = _lots(platform, line.lot_number)
    assert [r[0] for r in rows[: len(held)]] == sorted(h.site_id for h in held)
    recipients = [r for r in rows if r[0] == reservation.patient_id]
    assert recipients and recipients[0][1] == reservation.appointment_id
    assert recipients[0][2] == platform.site_id
    # another organisation's pharmacist traces the same lot number to nobody
    other = client_as(platform, "pharmacist", organisation="other-pharmacy-org")
    traced = other.get("/recall", params={"product": line.product_id, "lot": line.lot_number})
    assert traced.status_code == 200
    assert reservation.patient_id not in traced.text and platform.site_id not in traced.text


# -- the patient page --------------------------------------------------------------------------


def test_the_patient_page_for_the_prescriber_and_the_coordinator(platform: Platform) -> None:
    prescriber = client_as(platform, "prescriber")
    listed = prescriber.get("/patients")
    assert listed.status_code == 200
    link = re.search(r'<a href="/patients/([^"]+)">([^<]+)</a>', listed.text)
    assert link
    patient_id = link.group(1)
    stub = platform.scheduler("prescriber")
    plan = stub.ListTherapyPlans(pb.ListTherapyPlansRequest(patient_id=patient_id)).therapy_plans[0]
    for day, hand, kg in (
        (60, pb.HAND_LEFT, "28.5"),
        (30, pb.HAND_LEFT, "31"),
        (30, pb.HAND_RIGHT, "35"),
    ):
        stub.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome=pb.OutcomeRecord(
                    patient_id=patient_id,
                    therapy_plan_id=plan.id,
                    recorded_on=from_date(TODAY - dt.timedelta(days=day)),
                    measure=pb.OUTCOME_MEASURE_GRIP_STRENGTH,
                    value=kg,
                    hand=hand,
                ),
                request_id=f"console-test-grip-{patient_id}-{day}-{hand}",
            )
        )
    page = prescriber.get(f"/patients/{patient_id}")
    assert page.status_code == 200
    assert f"<h1>{link.group(2)}</h1>" in page.text
    # the plan's version, the dose with the service's own rationale, the measurements
    dose = stub.CalculateDose(
        pb.CalculateDoseRequest(therapy_plan_id=plan.id, dosing_date=from_date(TODAY))
    ).calculation
    assert dose.rationale and all(html.escape(line) in page.text for line in dose.rationale)
    assert f"<dt>Total</dt><dd>{dose.total_grams} g</dd>" in page.text
    measured = stub.ListMeasurements(pb.ListMeasurementsRequest(patient_id=patient_id)).measurements
    assert measured and f"<td>{measured[0].weight_kg}</td>" in page.text
    rows = _rows(page.text)
    assert [plan.id, str(plan.version), "active"] == rows[0][:3]
    # outcomes, and the grip chart: one line per hand, a dot per reading
    assert "31 kg, left hand" in page.text and "35 kg, right hand" in page.text
    assert page.text.count('<polyline class="series-') == 2
    assert page.text.count("<circle ") == 3
    # the plan's outcome review, as ListDueReviews gives it (within a year, or overdue)
    reviews = [
        r
        for r in stub.ListDueReviews(
            pb.ListDueReviewsRequest(site_id=plan.site_id, horizon_days=366)
        ).due_reviews
        if r.therapy_plan_id == plan.id
    ]
    assert reviews  # the demo's plans have a review schedule (docs/regimens.md)
    for r in reviews:
        state = pb.ReviewState.Name(r.state).removeprefix("REVIEW_STATE_").lower()
        assert f"<strong>Outcome review {state.replace('_', ' ')}" in page.text
    assert page.text.count('<p class="review">') == len(reviews)
    # the prescriber reads no bookings; the coordinator does, and calculates no dose
    assert "Upcoming bookings" not in page.text
    # the coordinator reaches it from the due list too
    due = client_as(platform, "scheduling_coordinator").get("/due")
    assert re.search(r'<th scope="row"><a href="/patients/[^"]+">', due.text)
    coordinator = client_as(platform, "scheduling_coordinator").get(f"/patients/{patient_id}")
    assert coordinator.status_code == 200
    assert "Upcoming bookings" in coordinator.text and "Past infusions" in coordinator.text
    assert "The next dose" not in coordinator.text and "Outcomes" not in coordinator.text
    # a booked patient's upcoming booking lists the reminders it scheduled for them
    booked = next(
        a
        for a in platform.scheduler()
        .ListAppointments(pb.ListAppointmentsRequest(site_id=platform.site_id))
        .appointments
        if a.status == pb.APPOINTMENT_STATUS_BOOKED and a.reminders
    )
    page = client_as(platform, "scheduling_coordinator").get(f"/patients/{booked.patient_id}")
    first = booked.reminders[0]
    when = first.due_time.ToDatetime(dt.UTC).strftime("%Y-%m-%d %H:%M")
    assert f"{first.offset} before ({when} UTC): scheduled" in page.text
    # another organisation's prescriber finds no such patient
    other = client_as(platform, "prescriber", organisation="other-org")
    assert other.get(f"/patients/{patient_id}").status_code == 404
    assert link.group(2) not in other.get("/patients").text


def test_another_organisation_reaches_no_demo_stock_page(platform: Platform) -> None:
    other = "other-pharmacy-org"
    manager = client_as(platform, "pharmacy_manager", organisation=other)
    for page in ("/forecast", "/reorder"):
        # no stock site of theirs at all, and the demo's named outright is none of theirs
        assert manager.get(page).status_code == 404
        assert manager.get(page, params={"site": platform.site_id}).status_code == 404
    pharmacist = client_as(platform, "pharmacist", organisation=other)
    form = pharmacist.get("/receive")
    assert form.status_code == 404  # no site to receive at
    # a receipt posted for the demo's site (of a product the catalogue knows) is the
    # inventory's to refuse
    _scan_product(platform)
    token = csrf(pharmacist.get("/recall").text)
    refused = pharmacist.post(
        "/receive",
        data={
            "csrf_token": token,
            "site": platform.site_id,
            "scan": f"(01){GTIN}(17)280630(10)INTRUDER-1",
            "vials": "1",
            "unit_cost": "1",
            "currency": "GBP",
        },
    )
    # (as for a site that does not exist: "no stock site ...")
    assert refused.status_code == 400 and "no stock site" in refused.text, refused.text[:500]
    assert not _lots(platform, "INTRUDER-1")


def test_receiving_a_scanned_delivery_against_its_purchase_order(platform: Platform) -> None:
    """(Last in the module: the reorder test expects no purchase order before its own.)
    An order of 10 vials at £150 each; a carton of 4 is scanned: the check offers the order
    (10 still to come), receiving books the lot at the order's cost (4 × £150) and the order is
    partially received, 6 still to come; the same form again is one receipt."""
    product = _scan_product(platform)
    order = (
        _inventory(platform, "pharmacy_manager")
        .CreatePurchaseOrder(
            inv.CreatePurchaseOrderRequest(
                request_id="console-test-po-scan",
                purchase_order=inv.PurchaseOrder(
                    site_id=platform.site_id,
                    supplier="Plasma Co",
                    reference="PO-SCAN-1",
                    lines=[
                        inv.PurchaseOrderLine(
                            product_id=product.id,
                            presentation_grams="5",
                            vials_ordered=10,
                            unit_cost=Money(currency_code="GBP", units=150),
                        )
                    ],
                ),
            )
        )
        .purchase_order
    )
    client = client_as(platform, "pharmacist")
    token = csrf(client.get("/receive").text)
    scan = f"(01){GTIN}(17)290131(10)PO-LOT-1"
    check = client.post(
        "/receive/check",
        data={"csrf_token": token, "site": platform.site_id, "scan": scan, "vials": "4"},
    )
    assert check.status_code == 200
    assert "Order PO-SCAN-1 from Plasma Co: 10 vials still to come" in check.text
    fields = _inputs(check.text) | {
        "site": platform.site_id,
        "currency": "GBP",
        "order": f"{order.id}/{order.lines[0].id}",  # the first choice, checked
    }
    done = client.post("/receive", data=fields)
    assert done.status_code == 200, done.text[:2000]
    assert f'against purchase order <span class="id">{order.id}</span>' in done.text
    (lot,) = _lots(platform, "PO-LOT-1")
    assert (lot.on_hand_vials, lot.unit_cost.units, lot.unit_cost.currency_code) == (4, 150, "GBP")
    client.post("/receive", data=fields)  # a double submit: one receipt
    assert _lots(platform, "PO-LOT-1")[0].on_hand_vials == 4
    now = (
        _inventory(platform, "pharmacist")
        .GetPurchaseOrder(inv.GetPurchaseOrderRequest(id=order.id))
        .purchase_order
    )
    assert now.state == inv.PURCHASE_ORDER_STATE_PARTIALLY_RECEIVED
    assert now.lines[0].vials_received == 4
    again = client.post(
        "/receive/check",
        data={"csrf_token": token, "site": platform.site_id, "scan": scan, "vials": "6"},
    )
    assert "6 vials still to come" in again.text


# --- the user's own notifications ----------------------------------------------------------------


def _my_form(page: str, **changes: object) -> dict[str, object]:
    """The preferences form as the page filled it in (ticked boxes included), with changes."""
    fields: dict[str, object] = {
        k: v
        for k, v in _inputs(page).items()
        if not k.startswith("topic_") and k not in ("quiet_start", "quiet_end") or v
    }
    ticked: dict[str, list[str]] = {}
    for tag in re.findall(r"<input\b[^>]*\bchecked[^>]*>", page):
        name = re.search(r'\bname="([^"]*)"', tag)
        value = re.search(r'\bvalue="([^"]*)"', tag)
        if name and value:
            ticked.setdefault(name.group(1), []).append(value.group(1))
    for name in [k for k in fields if k.startswith("topic_")]:
        del fields[name]
    fields.update(ticked)
    fields.update(changes)
    return fields


def test_my_notifications_lists_what_i_received_and_saves_my_preferences(
    platform: Platform,
) -> None:
    org = "me-org"  # an organisation of its own: the module's other tests never meet it
    client = client_as(platform, "nurse", org)
    page = client.get("/me/notifications")
    assert page.status_code == 200, page.text[:500]
    assert 'href="/me/notifications" aria-current="page"' in page.text  # in the navigation
    assert "No notification has been sent to you" in page.text
    assert 'name="etag" value=""' in page.text  # nothing saved yet

    # notify's refusals, field by field, in the form's words; nothing is saved
    bad = client.post(
        "/me/notifications",
        data=_my_form(page.text, time_zone="Mars/Olympus", topic_low_stock=["SMS"]),
    )
    assert bad.status_code == 400
    assert "Your preferences were not saved" in bad.text
    assert "Time zone: &#39;Mars/Olympus&#39; is not an IANA time zone" in bad.text
    assert "Low stock: SMS is chosen but the subscriber has no phone" in bad.text
    assert 'name="etag" value=""' in client.get("/me/notifications").text
    # the console's own reading of the form
    half = client.post("/me/notifications", data=_my_form(page.text, quiet_start="22:00"))
    assert half.status_code == 400 and "give both the start and the end" in half.text

    saved = client.post(
        "/me/notifications",
        data=_my_form(
            page.text,
            display_name="Nia Nurse",
            email="nia@example.org",
            quiet_start="22:00",
            quiet_end="07:00",
            topic_lot_expiring=["EMAIL", "CONSOLE"],
        ),
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/me/notifications?saved=1"
    again = client.get("/me/notifications?saved=1")
    assert "Your preferences are saved." in again.text
    fields = _inputs(again.text)
    assert fields["email"] == "nia@example.org" and fields["quiet_start"] == "22:00"
    assert fields["etag"] == 'W/"1"'
    assert re.search(r'id="topic_lot_expiring-email"[^>]*checked', again.text)
    assert not re.search(r'id="topic_low_stock-email"[^>]*checked', again.text)

    # an old etag (another tab saved meanwhile) is said plainly and the form shows what is saved
    client.post("/me/notifications", data=_my_form(again.text, phone="+447911123456"))
    stale = client.post(
        "/me/notifications",
        data=_my_form(again.text, phone="+447911000000", request_id="the-other-tab"),
    )
    assert stale.status_code == 409 and "changed elsewhere" in stale.text
    assert _inputs(stale.text)["phone"] == "+447911123456"

    # a broadcast of the user's organisation reaches them and shows with its text and status
    publish_lot_expiring(platform, org, "me-site", "LOT-ME-1")
    listed = client.get("/me/notifications").text
    assert "Lot expiring" in listed and "LOT-ME-1" in listed
    assert "Email: pending" in listed and "Console: pending" in listed


def test_my_notifications_keeps_to_the_users_own_rights(platform: Platform) -> None:
    # a pharmacist reads no patient names: a topic naming patients is refused, readably
    pharmacist = client_as(platform, "pharmacist", "me-org-2")
    page = pharmacist.get("/me/notifications").text
    refused = pharmacist.post(
        "/me/notifications", data=_my_form(page, topic_infusion_due=["CONSOLE"])
    )
    assert refused.status_code == 400
    assert "Infusion due: INFUSION_DUE messages name patients" in refused.text
    # a forged form is refused before notify is asked
    forged = pharmacist.post("/me/notifications", data=_my_form(page, csrf_token="forged"))
    assert forged.status_code == 403
    # the auditor's role is the audit trail only: no link, and the page says so
    auditor = client_as(platform, "auditor", "me-org-2")
    answer = auditor.get("/me/notifications")
    assert answer.status_code == 403 and "Not allowed" in answer.text
    assert 'href="/me/notifications"' not in answer.text
