"""The console in a real browser: Debian's headless Chromium driven through its chromedriver
(selenium; nothing is downloaded at test time), against the console served by uvicorn on a
free port, the development issuer's sign-in page and the three services with the demo centre
(tests/integration/console_support.py). Each page is checked with axe-core (from npm,
package.json) injected into it: no serious or critical WCAG 2.1 A/AA violation. Screenshots go
to test-artifacts/console/ (docs/console.md links them).

Few on purpose (CPU is scarce): one walk for the scheduling coordinator (sign in, board, due
list, slots, confirm, the booked block on the board, the wall screen, the optimiser's
proposal) and one for the pharmacy (the pharmacist, then the pharmacy manager). Without
chromium, chromedriver or axe-core they skip saying which, except under CI=true, where they
fail: `make test` installs chromium (`make browser`) and axe-core."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.console_support import Platform, running_platform
from tests.integration.live_support import serving

REPO = Path(__file__).resolve().parents[2]
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.browser


def _missing() -> str:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return (
            "headless Chromium is not installed "
            "(`make browser`: apt-get install chromium chromium-driver)"
        )
    if not AXE.exists():
        return "axe-core is not installed (`make setup` runs npm install)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extra)"
    return ""


def skip_without_browser() -> None:
    """Skip saying what is missing (fail under CI=true)."""
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    skip_without_browser()
    with (
        running_platform(tmp_path_factory.mktemp("browser")) as platform,
        serving(platform.app) as base,
    ):
        yield platform, base


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def chromium() -> Any:
    """A headless Chromium at the ward PC's size (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1366,768",  # the ward PC
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def accessible(driver: Any, page: str) -> None:
    """axe-core's WCAG 2.1 A and AA rules on the current page: nothing serious or critical."""
    driver.execute_script(AXE.read_text())
    violations = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag',
                                     values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                 nodes: v.nodes.map(n => n.target.join(' '))}))))
          .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
        """
    )
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{page}: {serious}"


def screenshot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, max(768, min(int(height), 3000)))
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    driver.set_window_size(1366, 768)


def sign_in(driver: Any, base: str, role: str, then: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}{then}")
    # the console sent us to the issuer's one-click page
    assert "/authorize" in driver.current_url, driver.current_url
    accessible(driver, "the issuer's sign-in page")
    driver.find_element(By.CSS_SELECTOR, f'button[value="{role}"]').click()
    wait_for(driver, lambda: driver.current_url.startswith(base), "back at the console")


def sign_out(driver: Any, base: str) -> None:
    """Click "Sign out" and wait for its answer: the click returns before the form's
    navigation ends, and a page asked for meanwhile loses the race to the sign-out's redirect
    (the browser lands on the console's home instead of the issuer)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
    wait_for(
        driver,
        lambda: (
            driver.current_url == f"{base}/"
            and driver.find_elements(By.CSS_SELECTOR, 'a[href="/login"]')
        ),
        "signed out, at the console's home",
    )


def wait_for(driver: Any, check: Any, what: str, seconds: float = 30) -> None:
    """Wait until ``check()`` holds.

    A check that reads an element can catch the page between the click and the next page's
    load: the element it found belongs to the page being left (stale) or is not there yet.
    Both mean "not yet", so the wait goes on instead of failing.
    """
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(
        driver,
        seconds,
        ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
    ).until(lambda _d: check(), message=what)


def test_a_coordinator_books_a_due_patient_and_sees_the_block_on_the_board(
    served: tuple[Platform, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    platform, base = served
    day = platform.booked_day.isoformat()
    sign_in(browser, base, "scheduling_coordinator", f"/board?date={day}")
    assert "Chair board" in browser.find_element(By.TAG_NAME, "h1").text
    blocks = browser.find_elements(By.CSS_SELECTOR, ".timeline .block .patient")
    assert blocks and all("," in b.text for b in blocks)  # "Family, Given"
    # the skip link is the first stop of the keyboard and leads to the content
    assert (
        browser.find_element(By.CSS_SELECTOR, "a.skip-link").get_attribute("href").endswith("#main")
    )
    accessible(browser, "the chair board")
    screenshot(browser, "board")
    # on a tablet held upright the page does not scroll sideways (wide tables scroll inside
    # their own region)
    browser.set_window_size(768, 1024)
    browser.refresh()
    wide, view = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert wide <= view, f"the board is {wide} px wide on a {view} px tablet"
    accessible(browser, "the chair board on a tablet")
    browser.set_window_size(1366, 768)

    browser.get(f"{base}/due")
    accessible(browser, "the due list")
    screenshot(browser, "due-list")
    browser.find_element(By.PARTIAL_LINK_TEXT, "Find slots").click()  # htmx: in place
    wait_for(
        browser,
        lambda: browser.find_elements(By.CSS_SELECTOR, "#slots form"),
        "the slots under the due list",
    )
    accessible(browser, "the due list with slots")
    browser.find_element(By.CSS_SELECTOR, "#slots form button").click()
    wait_for(browser, lambda: "Book this infusion?" in browser.page_source, "confirmation")
    accessible(browser, "the booking confirmation")
    browser.find_element(By.XPATH, "//button[normalize-space()='Yes, book it']").click()
    wait_for(browser, lambda: "booked=" in browser.current_url, "the board after booking")
    booked = browser.current_url.split("booked=")[1].split("&")[0]
    cancel = browser.find_elements(
        By.CSS_SELECTOR, f'form[action="/appointments/{booked}/cancel/confirm"]'
    )
    assert cancel, "the new booking is not on the board"

    browser.get(browser.current_url.split("&booked=")[0] + "&wall=1")
    assert "wall" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
    accessible(browser, "the wall screen")
    screenshot(browser, "board-wall")

    # the optimiser's proposal drawn on the boards, before anything is booked
    browser.get(f"{base}/plan")
    accessible(browser, "the plan form")
    days = browser.find_element(By.ID, "days")
    days.clear()
    days.send_keys("14")
    limit = browser.find_element(By.ID, "time_limit")
    limit.clear()
    limit.send_keys("3")
    browser.find_element(By.XPATH, "//button[normalize-space()='Propose']").click()
    wait_for(browser, lambda: "Proposal:" in browser.page_source, "the proposal", 90)
    assert browser.find_elements(By.CSS_SELECTOR, ".block.status-proposed .patient")
    accessible(browser, "the proposal on the boards")
    screenshot(browser, "plan-proposal")

    # the patient page: the coordinator's (bookings), then the prescriber's (dose, outcomes)
    browser.get(f"{base}/patients")
    accessible(browser, "the patient list")
    browser.find_element(By.CSS_SELECTOR, "table.list tbody a").click()
    wait_for(browser, lambda: "/patients/" in browser.current_url, "a patient's page")
    assert "Upcoming bookings" in browser.page_source
    accessible(browser, "the patient page (coordinator)")
    patient_id = browser.current_url.rsplit("/", 1)[1]
    _grip_readings(platform, patient_id)
    sign_out(browser, base)
    sign_in(browser, base, "prescriber", f"/patients/{patient_id}")
    assert browser.find_elements(By.CSS_SELECTOR, "ol.rationale li")
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg circle")) == 4
    accessible(browser, "the patient page (prescriber)")
    screenshot(browser, "patient")
    # the plan's outcomes and proposal, one click from the patient page
    browser.find_element(By.PARTIAL_LINK_TEXT, "Outcomes and a proposal").click()
    wait_for(browser, lambda: "What the outcomes say" in browser.page_source, "the regimen page")
    accessible(browser, "the regimen page")
    screenshot(browser, "regimen")


def _grip_readings(platform: Platform, patient_id: str) -> None:
    import datetime as dt

    from infusion.scheduler.v1 import scheduler_pb2 as pb
    from services.common.convert import from_date
    from tests.integration.console_support import TODAY

    stub = platform.scheduler("prescriber")
    plan = stub.ListTherapyPlans(pb.ListTherapyPlansRequest(patient_id=patient_id)).therapy_plans[0]
    for days, hand, kg in (
        (90, pb.HAND_LEFT, "24.5"),
        (45, pb.HAND_LEFT, "29"),
        (10, pb.HAND_LEFT, "33.5"),
        (45, pb.HAND_RIGHT, "31"),
    ):
        stub.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome=pb.OutcomeRecord(
                    patient_id=patient_id,
                    therapy_plan_id=plan.id,
                    recorded_on=from_date(TODAY - dt.timedelta(days=days)),
                    measure=pb.OUTCOME_MEASURE_GRIP_STRENGTH,
                    value=kg,
                    hand=hand,
                ),
                request_id=f"browser-grip-{days}-{hand}",
            )
        )


def test_the_pharmacy_pages(served: tuple[Platform, str], browser: Any) -> None:
    """The pharmacist: expiring lots, the pick list, stock, receiving a scanned carton, the
    forecast chart and the recall trace; then the pharmacy manager's reorder page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    platform, base = served
    sign_in(browser, base, "pharmacist", "/pharmacy?days=3650")
    assert browser.find_elements(By.CSS_SELECTOR, "table.list tbody th[scope=row]")
    nav = browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Main]").text
    assert "Pharmacy" in nav and "Chair board" not in nav
    accessible(browser, "the pharmacy page")
    screenshot(browser, "pharmacy-expiring")
    browser.get(f"{base}/pharmacy/pick-list?date={platform.booked_day.isoformat()}")
    assert "Pick list" in browser.find_element(By.TAG_NAME, "h1").text
    accessible(browser, "the pick list")
    screenshot(browser, "pick-list")
    browser.get(f"{base}/board")
    assert "Not allowed" in browser.find_element(By.TAG_NAME, "h1").text
    accessible(browser, "the 403 page")

    browser.get(f"{base}/stock")
    assert browser.find_elements(By.CSS_SELECTOR, "table.list tbody th[scope=row]")
    accessible(browser, "the stock levels")
    # receiving: the scanner types into the focused field and ends with Enter
    gtin, product_id = _product_with_gtin(platform)
    browser.get(f"{base}/receive")
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "scan"
    focused.send_keys(f"(01){gtin}(17)280630(10)BROWSER-1\n")
    wait_for(browser, lambda: "Check the scan" in browser.page_source, "the scan checked")
    accessible(browser, "the scan check")
    browser.switch_to.active_element.send_keys("4")  # the vials field has the focus now
    browser.find_element(By.ID, "unit_cost").send_keys("170")
    browser.find_element(By.XPATH, "//button[normalize-space()='Receive these vials']").click()
    wait_for(browser, lambda: "Received" in browser.page_source, "the receipt")
    assert "lot BROWSER-1" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    accessible(browser, "the receipt")
    screenshot(browser, "pharmacy-receive")

    browser.get(f"{base}/forecast?days=28&product={product_id}")  # forecast beyond its stock
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg polyline.on-hand")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg line.stockout-line")
    accessible(browser, "the stock forecast")
    screenshot(browser, "pharmacy-forecast")
    browser.get(f"{base}/recall")
    Select(browser.find_element(By.ID, "product")).select_by_visible_text("Browser IVIg")
    browser.find_element(By.ID, "lot").send_keys("BROWSER-1\n")
    wait_for(browser, lambda: "Patients who received it" in browser.page_source, "the trace")
    accessible(browser, "the recall page")
    screenshot(browser, "pharmacy-recall")

    # the pharmacy manager buys: reorder suggestions and purchase orders
    sign_out(browser, base)
    sign_in(browser, base, "pharmacy_manager", "/reorder")
    assert "Reorder" in browser.find_element(By.TAG_NAME, "h1").text
    accessible(browser, "the reorder page")
    screenshot(browser, "pharmacy-reorder")


def _product_with_gtin(platform: Platform) -> tuple[str, str]:
    """A product whose vials carry a GTIN (the shipped catalogue has none), and a demand
    forecast for it (the scheduler's push) that its stock will not cover."""
    import datetime as dt

    from infusion.inventory.v1 import inventory_pb2 as inv
    from infusion.inventory.v1 import inventory_pb2_grpc
    from services.common.auth.tokens import StaticToken
    from services.common.channels import open_channel
    from services.common.convert import from_date
    from tests.integration.console_support import TODAY

    gtin = "05412345678908"
    token = StaticToken(platform.issuer.issuer.role_token("administrator", "demo-org"))
    product = (
        inventory_pb2_grpc.InventoryServiceStub(
            open_channel(platform.inventory_address, None, token)
        )
        .CreateProduct(
            inv.CreateProductRequest(
                request_id="browser-scan-product",
                product=inv.Product(
                    code="browser-scan-ivig",
                    brand="Browser IVIg",
                    manufacturer="Lab",
                    ig_class=inv.IG_CLASS_IVIG,
                    concentration_percent="10",
                    routes=[inv.ROUTE_IV],
                    presentations=[inv.Presentation(grams="5", ml="50", gtin=gtin)],
                    storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
                ),
            )
        )
        .product
    )
    scheduler = platform.issuer.service_auth("scheduler").tokens
    inventory_pb2_grpc.InventoryServiceStub(
        open_channel(platform.inventory_address, None, scheduler)
    ).UpsertDemandForecast(
        inv.UpsertDemandForecastRequest(
            request_id="browser-demand",
            forecasts=[
                inv.DemandForecast(
                    site_id=platform.site_id,
                    product_id=product.id,
                    day=from_date(TODAY + dt.timedelta(days=days)),
                    grams=grams,
                )
                for days, grams in ((2, "10"), (6, "15"), (9, "40"), (13, "20"))
            ],
        )
    )
    return gtin, str(product.id)
