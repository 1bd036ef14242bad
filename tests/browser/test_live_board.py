"""The live chair board in two real browsers (fixtures, sign-in, axe-core and screenshots as
in test_console_browser.py): the nurse's board is open on the day of a free slot; in a second
browser the coordinator books a due patient into that slot from the due list's slots and the
confirmation; the new block appears on the nurse's open board within seconds, without the page
reloading (a marker set on the window before the booking is still there after it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.common.convert import to_date
from tests.browser.test_console_browser import (
    accessible,
    browser,  # noqa: F401  (the fixture)
    chromium,
    screenshot,
    sign_in,
    skip_without_browser,
    wait_for,
)
from tests.integration.console_support import Platform, running_platform
from tests.integration.live_support import a_free_slot, relaying, serving

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    skip_without_browser()
    directory = tmp_path_factory.mktemp("live-browser")
    with (
        running_platform(directory) as platform,
        relaying(platform, directory),
        serving(platform.app) as base,
    ):
        yield platform, base


def test_a_booking_appears_on_an_open_board_without_a_reload(
    live: tuple[Platform, str],
    browser: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    platform, base = live
    plan_id, slot = a_free_slot(platform)
    day = to_date(slot.local_date).isoformat()
    sign_in(browser, base, "nurse", f"/board?site={platform.site_id}&date={day}")
    wait_for(
        browser,
        lambda: browser.find_element(By.ID, "board").get_attribute("data-live") == "on",
        "the board listening to its events",
    )
    assert browser.find_element(By.ID, "board-live").text.startswith("Live")
    blocks = len(browser.find_elements(By.CSS_SELECTOR, ".timeline .block"))
    browser.execute_script("window.stillTheSamePage = true;")

    coordinator = chromium()  # a second browser: the coordinator's, at the due list
    try:
        sign_in(coordinator, base, "scheduling_coordinator", f"/due/{plan_id}/slots")
        coordinator.find_element(By.CSS_SELECTOR, 'form[action="/book/confirm"] button').click()
        wait_for(coordinator, lambda: "Book this infusion?" in coordinator.page_source, "confirm")
        coordinator.find_element(By.XPATH, "//button[normalize-space()='Yes, book it']").click()
        wait_for(coordinator, lambda: "booked=" in coordinator.current_url, "booked")
    finally:
        coordinator.quit()
    wait_for(
        browser,
        lambda: len(browser.find_elements(By.CSS_SELECTOR, ".timeline .block")) == blocks + 1,
        "the new booking's block on the open board",
        seconds=15,
    )
    assert browser.execute_script("return window.stillTheSamePage === true;")
    accessible(browser, "the live chair board")
    screenshot(browser, "board-live")
