"""What a page's query chooses, read the same way on every page that asks it: the site (one of
those open to the user, the first when none is named), the day (``YYYY-MM-DD``, today at the
site by default) and what today is at a site (in its own time zone: a board opened just after
midnight in London shows London's new day, whatever the server's zone).

Its own module because pages.py and the optimiser's page (schedule_page.py) both choose a site
and a day, and neither should reach into the other's private helpers for it."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from starlette.exceptions import HTTPException

from services.common.clock import Clock


def chosen_site(sites: list[Any], wanted: str | None) -> Any:
    """The site ``wanted`` names among ``sites`` (the user's), else the first; 404 when the
    user has none or names another."""
    if not sites:
        raise HTTPException(404, "No site of your organisation is open to you.")
    if wanted:
        for site in sites:
            if site.id == wanted:
                return site
        raise HTTPException(404, "No such site.")
    return sites[0]


def asked_day(value: str | None, default: dt.date) -> dt.date:
    """The day ``value`` names (``YYYY-MM-DD``), ``default`` when empty; 400 when not a date."""
    if not value:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"Not a date: {value!r} (YYYY-MM-DD).") from None


def local_today(clock: Clock, time_zone: str) -> dt.date:
    """Today in ``time_zone`` (a site's; UTC when it is not a zone zoneinfo knows)."""
    try:
        zone = ZoneInfo(time_zone)
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    return clock.now().astimezone(zone).date()
