"""What a console page's query chooses (services/console/choosing.py): the site among the
user's, the day asked, and today in the site's own time zone."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from starlette.exceptions import HTTPException

from services.common.clock import FixedClock
from services.console.choosing import asked_day, chosen_site, local_today

SITES = [SimpleNamespace(id="a"), SimpleNamespace(id="b")]


def test_the_site_named_else_the_first_and_404_for_another_or_none() -> None:
    assert chosen_site(SITES, "b") is SITES[1]
    assert chosen_site(SITES, None) is SITES[0]
    for sites, wanted in ((SITES, "elsewhere"), ([], None)):
        with pytest.raises(HTTPException) as refused:
            chosen_site(sites, wanted)
        assert refused.value.status_code == 404


def test_the_day_asked_else_the_default_and_400_for_a_non_date() -> None:
    default = dt.date(2026, 3, 1)
    assert asked_day("2026-03-07", default) == dt.date(2026, 3, 7)
    assert asked_day("", default) == asked_day(None, default) == default
    with pytest.raises(HTTPException) as refused:
        asked_day("07/03/2026", default)
    assert refused.value.status_code == 400


def test_today_is_the_sites_own_day_and_utcs_for_an_unknown_zone() -> None:
    clock = FixedClock(dt.datetime(2026, 3, 7, 23, 30, tzinfo=dt.UTC))
    assert local_today(clock, "Europe/London") == dt.date(2026, 3, 7)
    assert local_today(clock, "Australia/Sydney") == dt.date(2026, 3, 8)
    assert local_today(clock, "Not/A_Zone") == dt.date(2026, 3, 7)
