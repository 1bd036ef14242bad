"""The user's own page in a real browser (the fixtures and helpers of test_console_browser.py:
headless Chromium, the development issuer's sign-in, axe-core, screenshots): a nurse opens
"My notifications" from the navigation, sees a notification sent to her, changes a preference
with the keyboard alone and sees it saved."""

from __future__ import annotations

from typing import Any

import pytest

from demo import centre
from tests.browser.test_console_browser import (
    accessible,
    browser,  # noqa: F401 (a fixture)
    screenshot,
    served,  # noqa: F401 (a fixture)
    sign_in,
    wait_for,
)
from tests.integration.console_support import Platform, publish_lot_expiring

pytestmark = pytest.mark.browser


def test_a_nurse_reads_her_notifications_and_changes_a_preference(
    served: tuple[Platform, str],  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    platform, base = served
    sign_in(browser, base, "nurse", "/board")
    browser.find_element(By.LINK_TEXT, "My notifications").click()
    wait_for(browser, lambda: browser.current_url.endswith("/me/notifications"), "the page")
    assert "No notification has been sent to you" in browser.page_source
    accessible(browser, "my notifications (empty)")

    # first save: an email address and lot expiry by email, with the keyboard alone
    email = browser.find_element(By.ID, "email")
    email.send_keys("nia.nurse@example.org")
    box = browser.find_element(By.ID, "topic_lot_expiring-email")
    box.send_keys(Keys.SPACE)  # a focused checkbox ticks with the space bar
    assert box.is_selected()
    box.send_keys(Keys.ENTER)  # Enter in a form field submits it
    wait_for(browser, lambda: "Your preferences are saved." in browser.page_source, "saved")
    assert browser.find_element(By.ID, "email").get_attribute("value") == "nia.nurse@example.org"
    assert browser.find_element(By.ID, "topic_lot_expiring-email").is_selected()

    # a refusal is said in the form's words, where a screen reader announces it
    zone = browser.find_element(By.ID, "time_zone")
    zone.clear()
    zone.send_keys("Mars/Olympus", Keys.ENTER)
    wait_for(browser, lambda: "were not saved" in browser.page_source, "the refusal")
    alert = browser.find_element(By.CSS_SELECTOR, '[role="alert"]')
    assert "Time zone" in alert.text and "IANA" in alert.text
    accessible(browser, "my notifications (refused)")

    # what was saved stays; a notification to the centre's lot-expiry staff reaches her
    publish_lot_expiring(platform, centre.ORG, platform.site_id, "LOT-BROWSER-1")
    browser.get(f"{base}/me/notifications")
    wait_for(browser, lambda: "LOT-BROWSER-1" in browser.page_source, "the notification")
    row = browser.find_element(By.CSS_SELECTOR, "table.my-notifications tbody tr")
    assert "Lot expiring" in row.text and "Email: pending" in row.text
    assert browser.find_element(By.ID, "time_zone").get_attribute("value") == "Europe/London"
    accessible(browser, "my notifications")
    screenshot(browser, "my-notifications")
