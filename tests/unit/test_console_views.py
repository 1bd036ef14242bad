"""The console's arithmetic (services/console/views.py), the development issuer's
authorization codes (services/issuer/authorization.py) and the console's settings."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import jwt
import pytest

from services.common.auth.roles import Roles
from services.common.settings import SettingsError
from services.console import views
from services.console.auth import PAGE, User
from services.console.settings import load_settings
from services.issuer.authorization import (
    AuthorizationError,
    AuthorizationRequest,
    Authorizations,
    s256,
)
from services.issuer.issuer import Issuer

AXIS = views.Interval(8 * 60, 18 * 60)  # 08:00-18:00, 600 minutes


def test_a_block_is_placed_in_percent_of_the_day() -> None:
    # 09:00-11:00: 60 minutes after the start of 600 = 10 %, 120 minutes = 20 %
    assert views.place(views.Interval(9 * 60, 11 * 60), AXIS) == views.Placement(10.0, 20.0)
    # 17:00-19:00 is cut at closing: 540/600 = 90 %, the last 60 minutes = 10 %
    assert views.place(views.Interval(17 * 60, 19 * 60), AXIS) == views.Placement(90.0, 10.0)


def test_hours_of_the_axis() -> None:
    assert views.hours(AXIS) == [h * 60 for h in range(8, 18)]
    assert views.hours(views.Interval(8 * 60 + 30, 10 * 60)) == [480, 540]


def test_nurse_load_is_the_peak_per_hour_against_nurses_times_ratio() -> None:
    tuesday = dt.date(2026, 11, 24)
    appointments = [
        views.Interval(9 * 60, 11 * 60),  # 09:00-11:00
        views.Interval(9 * 60 + 30, 10 * 60),  # 09:30-10:00
        views.Interval(10 * 60 + 45, 12 * 60),  # 10:45-12:00
    ]
    shifts = [
        views.Shift(2, 8 * 60, 18 * 60, 1),  # Tuesday, one nurse all day
        views.Shift(2, 10 * 60, 12 * 60, 1),  # and a second 10:00-12:00
        views.Shift(3, 8 * 60, 18 * 60, 5),  # Wednesday's do not count
    ]
    load = {h.label: h for h in views.nurse_load(appointments, AXIS, shifts, 4, tuesday)}
    assert (load["08:00"].patients, load["08:00"].capacity) == (0, 4)
    assert (load["09:00"].patients, load["09:00"].capacity) == (2, 4)  # 09:30-10:00 overlap
    assert (load["10:00"].patients, load["10:00"].capacity) == (2, 8)  # 10:45-11:00 overlap
    assert (load["11:00"].patients, load["12:00"].patients) == (1, 0)
    over = views.nurse_load(appointments, AXIS, shifts, 1, tuesday)
    assert [h.label for h in over if h.over] == ["09:00"]  # 2 patients, 1 nurse x 1
    assert views.nurse_load(appointments, AXIS, [], 4, tuesday)[1].capacity is None


def test_status_labels_put_stock_risk_first_until_the_infusion_runs() -> None:
    assert views.status_label(2, False) == "booked"
    assert views.status_label(2, True) == "at risk for stock"
    assert views.status_label(3, True) == "at risk for stock"
    assert views.status_label(4, True) == "in chair"
    assert views.status_label(5, False) == "done"
    assert views.status_label(7, False) == "no-show"


def test_expiring_lots_within_the_window_soonest_first() -> None:
    today = dt.date(2026, 11, 24)
    lots = [
        ("L3", "p", dt.date(2027, 1, 23), 5, 0),  # 60 days: inside a 60-day window
        ("L1", "p", dt.date(2026, 11, 20), 2, 0),  # expired 4 days ago
        ("L2", "p", dt.date(2027, 1, 24), 5, 1),  # 61 days: outside
        ("L4", "p", dt.date(2026, 12, 1), 0, 0),  # nothing on hand
    ]
    found = views.expiring(lots, today, 60)
    assert [(x.lot_number, x.days_left) for x in found] == [("L1", -4), ("L3", 60)]


def test_nice_ceiling_is_1_2_or_5_times_a_power_of_ten() -> None:
    assert [views.nice_ceiling(Decimal(v)) for v in ("0", "1", "1.5", "180", "730", "1000")] == [
        1,
        1,
        2,
        200,
        1000,
        1000,
    ]


def test_the_forecast_chart_scales_lines_and_bars_and_marks_the_stockout() -> None:
    day = dt.date(2026, 11, 24)

    def d(
        i: int, on_hand: str, reserved: str, fc: str, avail: str, short: str
    ) -> views.ForecastDay:
        return views.ForecastDay(
            day + dt.timedelta(days=i),
            Decimal(on_hand),
            Decimal(reserved),
            Decimal(fc),
            Decimal(avail),
            Decimal(short),
        )

    days = [d(0, "160", "40", "20", "100", "0"), d(1, "100", "100", "50", "0", "50")]
    chart = views.forecast_chart(
        days, day + dt.timedelta(days=1), width=210, height=140, left=0, top=0, bottom_margin=40
    )
    # plot: x 0..200 (right = width - 10), two days of 100 each, centres 50 and 150;
    # y: zero line at 100, the peak 160 rounds up to 200, so 1 g = 0.5 units
    assert (chart.bottom, chart.right) == (100, 200)
    assert chart.on_hand == "50.0,20.0 150.0,50.0"  # 160 g -> 100 - 80; 100 g -> 100 - 50
    assert chart.available == "50.0,50.0 150.0,100.0"
    first, second = chart.bars
    # bars 60 % of a day wide, centred: 50 - 30 = 20, width 60
    assert (first.x, first.width) == (20.0, 60.0)
    # reserved 40 g: 20 units tall from the zero line; forecast 20 g on top: 10 units
    assert (first.reserved_y, first.reserved_height) == (80.0, 20.0)
    assert (first.forecast_y, first.forecast_height) == (70.0, 10.0)
    assert (second.reserved_y, second.forecast_y) == (50.0, 25.0)  # 100 g, then 150 g
    assert chart.stockout_x == 150.0
    assert chart.y_ticks == [(100.0, "0"), (75.0, "50"), (50.0, "100"), (25.0, "150"), (0.0, "200")]
    assert views.forecast_chart(days, None).stockout_x is None


def test_a_page_needs_every_permission_its_calls_need() -> None:
    roles = Roles.default()

    def user(*names: str) -> User:
        return User("s", "n", "org", names, None, 0, "t")

    assert user("nurse").may_open(PAGE["board"], roles)
    assert not user("nurse").may_open(PAGE["due"], roles)
    assert user("scheduling_coordinator").may_open(PAGE["due"], roles)
    assert [p.name for p in user("pharmacist").pages(roles)] == [
        "pharmacy",
        "stock",
        "receive",
        "forecast",
        "recall",
    ]
    # buying, not the shelf: no reservations.read (pick list), stock.receive or lots.trace
    assert [p.name for p in user("pharmacy_manager").pages(roles)] == [
        "stock",
        "forecast",
        "reorder",
    ]
    assert user("auditor").pages(roles) == []


# -- the development issuer's authorization codes ----------------------------------------------

VERIFIER = "v" * 43


def _request(**changes: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "console",
        "redirect_uri": "http://127.0.0.1:8080/auth/callback",
        "state": "st",
        "nonce": "no",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
        **changes,
    }


def test_s256_agrees_with_authlibs_client() -> None:
    """The issuer checks the challenge the console's client (Authlib) made."""
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    for verifier in (VERIFIER, "dBjftJeZ4CVP-mJ92K1ahTkhM64qzY2XrzsjxoxtXsc"):
        assert s256(verifier) == create_s256_code_challenge(verifier)


@pytest.mark.parametrize(
    "changes",
    [
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": "javascript:alert(1)"},
        {"code_challenge_method": "plain"},
        {"code_challenge": ""},
        {"response_type": "token"},
        {"client_id": ""},
    ],
)
def test_an_authorization_request_is_refused_when(changes: dict[str, str]) -> None:
    with pytest.raises(AuthorizationError):
        AuthorizationRequest.parse(_request(**changes))


def test_a_code_is_redeemed_once_with_its_verifier_for_the_roles_tokens() -> None:
    clock = [1_000_000.0]
    issuer = Issuer.fresh("http://127.0.0.1:1", now=lambda: clock[0])
    codes = Authorizations(issuer, now=lambda: clock[0])
    location = codes.approve(AuthorizationRequest.parse(_request()), "nurse", "org-9")
    assert location.startswith("http://127.0.0.1:8080/auth/callback?code=")
    assert location.endswith("&state=st")
    code = location.split("code=")[1].split("&")[0]
    form = {
        "code": code,
        "redirect_uri": "http://127.0.0.1:8080/auth/callback",
        "client_id": "console",
        "code_verifier": VERIFIER,
    }
    with pytest.raises(AuthorizationError, match="code_verifier"):
        codes.redeem({**form, "code_verifier": "w" * 43})
    # a failed try used the code up: a guessed verifier gets one chance only
    with pytest.raises(AuthorizationError, match="unknown, used or expired"):
        codes.redeem(form)
    code = codes.approve(AuthorizationRequest.parse(_request()), "nurse", "org-9")
    form["code"] = code.split("code=")[1].split("&")[0]
    answer = codes.redeem(form)
    access = jwt.decode(str(answer["access_token"]), options={"verify_signature": False})
    assert (access["roles"], access["org"], access["aud"]) == (
        ["nurse"],
        "org-9",
        "infusion-platform",
    )
    identity = jwt.decode(str(answer["id_token"]), options={"verify_signature": False})
    assert (identity["aud"], identity["nonce"], identity["org"]) == ("console", "no", "org-9")
    with pytest.raises(AuthorizationError):
        codes.redeem(form)  # used
    late = codes.approve(AuthorizationRequest.parse(_request()), "nurse")
    clock[0] += 61
    with pytest.raises(AuthorizationError):
        codes.redeem({**form, "code": late.split("code=")[1].split("&")[0]})


def test_only_person_roles_are_offered() -> None:
    codes = Authorizations(Issuer.fresh("http://127.0.0.1:1"))
    assert "nurse" in codes.person_roles()
    assert "scheduler_service" not in codes.person_roles()
    assert "integration" not in codes.person_roles()
    with pytest.raises(AuthorizationError):
        codes.approve(AuthorizationRequest.parse(_request()), "scheduler_service")


# -- settings ----------------------------------------------------------------------------------


def test_console_settings_defaults_and_refusals() -> None:
    settings = load_settings({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.address("inventory") == "127.0.0.1:50052"
    with pytest.raises(SettingsError, match="CONSOLE_LISTN: unknown setting"):
        load_settings({"CONSOLE_LISTN": "x"})
    with pytest.raises(SettingsError, match="AUTH_ISSUER"):
        load_settings({"AUTH_ISSUER": "issuer.example"})
    far = load_settings({"SCHEDULER_ADDRESS": "10.0.0.5:50051"})
    with pytest.raises(SettingsError, match="in the clear"):
        far.client_tls("scheduler")
    tls = load_settings({"SCHEDULER_ADDRESS": "scheduler:50051", "CONSOLE_TLS_CA_FILE": "/ca"})
    assert tls.client_tls("scheduler") is not None


def test_the_vendored_htmx_is_the_npm_packages() -> None:
    """services/console/static/vendor/htmx.min.js is a copy of package.json's htmx.org (the
    image has no node_modules): after an upgrade there, copy it again."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    installed = repo / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"
    if not installed.exists():
        pytest.skip("node_modules not installed (make setup)")
    vendored = repo / "services" / "console" / "static" / "vendor" / "htmx.min.js"
    assert vendored.read_bytes() == installed.read_bytes()


def test_after_sign_in_the_console_returns_only_to_its_own_pages() -> None:
    from services.console.app import local_path

    assert local_path("/board?date=2026-11-24")
    for elsewhere in ("https://evil.example/", "//evil.example/", "/\\evil.example", "board"):
        assert not local_path(elsewhere), elsewhere


def test_the_line_chart_puts_days_in_proportion_and_one_line_per_hand() -> None:
    day = dt.date(2026, 1, 1)
    readings = [
        ("left hand", day, Decimal("30")),
        ("left hand", day + dt.timedelta(days=30), Decimal("40")),
        ("right hand", day + dt.timedelta(days=10), Decimal("20")),
    ]
    chart = views.line_chart(readings, "kg", width=330, height=140, left=0, top=0, bottom_margin=40)
    # x: 0..300 over 30 days, 10 units a day; y: zero at 100, 40 kg rounds up to 50: 2 units a kg
    left, right = chart.series
    assert left.name == "left hand" and left.points == "0.0,40.0 300.0,20.0"
    assert right.points == "100.0,60.0"
    assert right.dots == [(100.0, 60.0, "2026-01-11: 20 kg")]
    assert chart.y_ticks[-1] == (0.0, "50")
    # one day only: in the middle
    single = views.line_chart(readings[:1], "kg", width=330, left=0)
    assert single.series[0].points.startswith("150.0,")
