"""The console's actions in a real browser (fixtures, sign-in and axe-core from
test_console_browser.py): the coordinator moves a booking, the nurse checks it in, starts and
completes it with a typed lot; the pharmacy manager orders from a reorder suggestion; the
pharmacist recalls a lot. Every new page is checked with axe-core and photographed to
test-artifacts/console/."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.convert import to_date
from tests.browser.test_console_browser import (
    accessible,
    browser,
    screenshot,
    served,
    sign_in,
    sign_out,
    wait_for,
)
from tests.integration.console_support import Platform

pytestmark = pytest.mark.browser
__all__ = ["browser", "served"]  # the fixtures, shared


def _appointment(platform: Platform, appointment_id: str) -> pb.Appointment:
    found: pb.Appointment = (
        platform.scheduler().GetAppointment(pb.GetAppointmentRequest(id=appointment_id)).appointment
    )
    return found


def _at(platform: Platform, a: pb.Appointment, minutes: int) -> None:
    start = dt.datetime.combine(
        to_date(a.local_date), dt.time(a.local_start.hours, a.local_start.minutes), tzinfo=dt.UTC
    )
    platform.clock.set(start + dt.timedelta(minutes=minutes))


def _click(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


def test_move_a_booking_then_check_in_start_and_complete_it(
    served: tuple[Platform, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    platform, base = served
    day = platform.booked_day
    platform.clock.set(dt.datetime.combine(day, dt.time(7), tzinfo=dt.UTC))
    sign_in(browser, base, "scheduling_coordinator", f"/board?date={day.isoformat()}")
    move = browser.find_element(By.CSS_SELECTOR, "a.action[href$='/move']")
    appointment_id = move.get_attribute("href").split("/appointments/")[1].split("/")[0]
    move.click()
    wait_for(browser, lambda: "Move" in browser.find_element(By.TAG_NAME, "h1").text, "slots")
    accessible(browser, "the move page")
    screenshot(browser, "move")
    _click(browser, "table.list tbody form button")
    wait_for(browser, lambda: "Move this booking?" in browser.page_source, "the confirmation")
    accessible(browser, "the move confirmation")
    browser.find_element(By.XPATH, "//button[normalize-space()='Yes, move it']").click()
    wait_for(browser, lambda: "moved=1" in browser.current_url, "the board after the move")
    board = browser.current_url
    a = _appointment(platform, appointment_id)
    assert a.status == pb.APPOINTMENT_STATUS_BOOKED
    sign_out(browser, base)

    # the nurse at the chair: check in, start, complete with the lot typed
    _at(platform, a, -10)
    sign_in(browser, base, "nurse", board.removeprefix(base))
    _click(browser, f'form[action="/appointments/{a.id}/check-in"] button')
    wait_for(
        browser,
        lambda: browser.find_elements(
            By.CSS_SELECTOR, f'form[action="/appointments/{a.id}/start"]'
        ),
        "the start button",
    )
    accessible(browser, "the board with chair actions")
    screenshot(browser, "board-actions")
    _at(platform, a, 0)
    _click(browser, f'form[action="/appointments/{a.id}/start"] button')
    wait_for(
        browser,
        lambda: browser.find_elements(
            By.CSS_SELECTOR, f'form[action="/appointments/{a.id}/complete/form"]'
        ),
        "the complete button",
    )
    _at(platform, a, 90)
    _click(browser, f'form[action="/appointments/{a.id}/complete/form"] button')
    wait_for(browser, lambda: "Complete the infusion" in browser.page_source, "the form")
    assert browser.find_element(By.ID, "grams").get_attribute("value") == a.dose_grams
    # the cursor starts in the lot field, where a scanner types
    assert browser.switch_to.active_element.get_attribute("id") == "lot_1"
    browser.switch_to.active_element.send_keys("LOT-CHAIR-7")
    accessible(browser, "the completion form")
    screenshot(browser, "complete")
    browser.find_element(By.XPATH, "//button[normalize-space()='Record it as given']").click()
    wait_for(browser, lambda: "/board" in browser.current_url, "the board after completing")
    given = _appointment(platform, a.id)
    assert given.status == pb.APPOINTMENT_STATUS_FULFILLED
    assert [x.lot_number for x in given.scanned_lots] == ["LOT-CHAIR-7"]


def test_order_from_a_suggestion_and_recall_a_lot(
    served: tuple[Platform, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    platform, base = served
    sign_in(browser, base, "pharmacy_manager", "/reorder")
    _click(browser, 'form[action="/reorder/order/confirm"] button')
    wait_for(browser, lambda: "Yes, place the order" in browser.page_source, "the confirmation")
    accessible(browser, "the order confirmation")
    screenshot(browser, "order-confirm")
    browser.find_element(By.ID, "supplier").send_keys("Demo wholesaler")
    browser.find_element(By.ID, "unit_cost").send_keys("480.00")
    browser.find_element(By.XPATH, "//button[normalize-space()='Yes, place the order']").click()
    wait_for(
        browser,
        lambda: "ordered=" in browser.current_url,
        "the reorder page again",
    )
    assert "Demo wholesaler" in browser.page_source
    accessible(browser, "the reorder page with the new order")
    sign_out(browser, base)

    token = StaticToken(platform.issuer.issuer.role_token("pharmacist", "demo-org"))
    stock = inventory_pb2_grpc.InventoryServiceStub(
        open_channel(platform.inventory_address, None, token)
    )
    lot = next(
        x
        for x in stock.ListLots(inv.ListLotsRequest(site_id=platform.site_id)).lots
        if x.state == inv.LOT_STATE_AVAILABLE
    )
    sign_in(browser, base, "pharmacist", f"/recall?product={lot.product_id}&lot={lot.lot_number}")
    _click(browser, 'form[action="/recall/confirm"] button')
    wait_for(browser, lambda: "Yes, recall the lot" in browser.page_source, "the confirmation")
    accessible(browser, "the recall confirmation")
    screenshot(browser, "recall-confirm")
    browser.find_element(By.ID, "reason").send_keys("supplier notice 42")
    browser.find_element(By.XPATH, "//button[normalize-space()='Yes, recall the lot']").click()
    wait_for(browser, lambda: "recalled" in browser.find_element(By.TAG_NAME, "h1").text, "done")
    accessible(browser, "the recalled lot")
    screenshot(browser, "recalled")
    assert platform.site_id in browser.page_source
