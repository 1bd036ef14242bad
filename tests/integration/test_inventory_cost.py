"""GetCostReport through a real gRPC server on SQLite and PostgreSQL: validation that lists
every bad field, dispensed and wasted grams and their cost grouped by product, patient and
appointment, reversals, the site's local days, and the valuation at the end of the period."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money

from infusion.inventory.v1 import inventory_pb2 as inv
from services.common.db import Database
from services.common.identity import acting_as, service_caller
from services.common.ids import new_id
from services.inventory.domain.stock import MovementKind
from services.inventory.store import stock as ledger
from services.inventory.store.models import AdministrationRow
from tests.integration.conftest import Platform, request_id, stock_site
from tests.integration.errors import field_violations

EXPIRY = Date(year=2028, month=6, day=30)
TODAY = Date(year=2026, month=11, day=24)  # the fixture's clock: 2026-11-24 09:00Z


def gbp(amount: str) -> Money:
    value = Decimal(amount)
    units = int(value)
    return Money(currency_code="GBP", units=units, nanos=int((value - units) * 1_000_000_000))


@pytest.fixture(autouse=True)
def sites(platform: Platform) -> None:
    stock_site(platform, "site-1")
    stock_site(platform, "site-ny", time_zone="America/New_York")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The inventory's own database, for ledger entries whose RPCs are not under test here."""
    database = Database(database_url, pool_size=1)
    try:
        yield database
    finally:
        database.dispose()


def product_id(p: Platform, code: str) -> str:
    return str(p.inventory.GetProduct(inv.GetProductRequest(id=code)).product.id)


def receive(
    p: Platform, code: str, grams: str, lot: str, vials: int, cost: str, site: str = "site-1"
) -> inv.Lot:
    return p.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site,
            product_id=product_id(p, code),
            presentation_grams=grams,
            lot_number=lot,
            expiry_date=EXPIRY,
            vials=vials,
            unit_cost=gbp(cost),
            request_id=request_id(),
        )
    ).lot


def report(
    p: Platform,
    group_by: int = inv.COST_GROUPING_PRODUCT,
    start: Date = TODAY,
    end: Date = TODAY,
    site: str = "site-1",
) -> inv.GetCostReportResponse:
    return p.inventory.GetCostReport(
        inv.GetCostReportRequest(site_id=site, start_date=start, end_date=end, group_by=group_by)
    )


def rows(lines: object) -> list[tuple[str, str, str, str, str]]:
    """(key, dispensed grams, dispensed cost, wasted grams, wasted cost) in pounds."""

    def money(m: Money) -> str:
        return f"{m.currency_code} {Decimal(m.units) + Decimal(m.nanos) / 10**9:.2f}"

    return [
        (x.key, x.dispensed_grams, money(x.dispensed_cost), x.wasted_grams, money(x.wasted_cost))
        for x in lines  # type: ignore[attr-defined]
    ]


def dispense(
    db: Database,
    p: Platform,
    lot_id: str,
    vials: int,
    given: str,
    wasted: str,
    patient: str,
    appointment: str,
) -> str:
    """What DispenseReservation writes for one lot (ledger and trace), written with the
    store's own append; returns the DISPENSE movement's id."""
    reservation = new_id()
    now = p.clock.now()
    # the store's own writes, as the inventory service (which sees every organisation)
    with acting_as(service_caller("inventory")), db.write() as s:
        lot = ledger.lot_row(s, lot_id, for_update=True)
        moved = ledger.add_movement(
            s,
            lot,
            MovementKind.DISPENSE,
            -vials,
            0,
            now,
            grams=Decimal(given),
            reservation_id=reservation,
        )
        if Decimal(wasted):
            ledger.add_movement(
                s,
                lot,
                MovementKind.WASTE,
                0,
                0,
                now,
                grams=Decimal(wasted),
                reservation_id=reservation,
            )
        s.add(
            AdministrationRow(
                id=new_id(),
                reservation_id=reservation,
                patient_id=patient,
                appointment_id=appointment,
                site_id=lot.site_id,
                lot_id=lot.id,
                product_id=lot.product_id,
                lot_number=lot.lot_number,
                vials=vials,
                grams_administered=Decimal(given),
                grams_wasted=Decimal(wasted),
                unit_cost=lot.unit_cost,
                currency=lot.currency,
                presentation_grams=lot.presentation_grams,
                administered_at=now,
            )
        )
        return moved.id


def write_off(db: Database, p: Platform, lot_id: str, vials: int) -> str:
    """What RecordWaste writes: whole vials out, no patient."""
    # the store's own writes, as the inventory service (which sees every organisation)
    with acting_as(service_caller("inventory")), db.write() as s:
        lot = ledger.lot_row(s, lot_id, for_update=True)
        return ledger.add_movement(
            s, lot, MovementKind.WASTE, -vials, 0, p.clock.now(), reason_code="DAMAGED"
        ).id


# --- validation ------------------------------------------------------------------------------


def test_a_bad_request_lists_every_bad_field(platform: Platform) -> None:
    with pytest.raises(grpc.RpcError) as no_date:  # the request contract: a calendar date
        platform.inventory.GetCostReport(
            inv.GetCostReportRequest(site_id="nowhere", end_date=Date(year=2026, month=2, day=30))
        )
    assert no_date.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(no_date.value) == ["end_date"]
    with pytest.raises(grpc.RpcError) as bad:
        platform.inventory.GetCostReport(inv.GetCostReportRequest(site_id="nowhere"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == ["start_date", "end_date", "group_by", "site_id"]
    with pytest.raises(grpc.RpcError) as backwards:
        report(platform, start=Date(year=2026, month=11, day=25))
    assert field_violations(backwards.value) == ["end_date"]
    with pytest.raises(grpc.RpcError) as too_long:  # 2025-11-24 … 2026-11-24 is 366 days…
        report(platform, start=Date(year=2025, month=11, day=23))  # …and this is 367
    assert field_violations(too_long.value) == ["end_date"]
    report(platform, start=Date(year=2025, month=11, day=24))  # exactly 366: fine
    with pytest.raises(grpc.RpcError) as no_site:
        report(platform, site="")
    assert field_violations(no_site.value) == ["site_id"]


# --- valuation -------------------------------------------------------------------------------


def test_valuation_is_on_hand_at_each_lots_own_cost_at_the_end_of_the_period(
    platform: Platform,
) -> None:
    a = receive(platform, "gammagard-liquid", "10", "GA-1", 12, "340")
    receive(platform, "gammagard-liquid", "5", "GA-2", 4, "175.50")
    receive(platform, "privigen", "10", "PR-1", 3, "350")
    receive(platform, "privigen", "10", "PR-9", 5, "350", site="site-ny")  # another site
    empty = report(platform)
    assert (list(empty.lines), list(empty.totals)) == ([], [])
    gammagard, privigen = (product_id(platform, c) for c in ("gammagard-liquid", "privigen"))
    # Gammagard: 12 × 10 g + 4 × 5 g = 16 vials, 140 g, 12 × 340 + 4 × 175.50 = £4,782
    # Privigen: 3 × 10 g = 30 g, 3 × 350 = £1,050; the total is £5,832
    expected = sorted([(gammagard, 16, "140", gbp("4782")), (privigen, 3, "30", gbp("1050"))])
    got = [(v.product_id, v.on_hand_vials, v.on_hand_grams, v.value) for v in empty.valuation]
    assert got == expected
    assert list(empty.valuation_totals) == [gbp("5832")]

    platform.clock.advance(dt.timedelta(days=1))  # 25 Nov: two of lot GA-1 are not found
    platform.inventory.RecordCount(
        inv.RecordCountRequest(
            lot_id=a.id, counted_vials=10, reason="count", request_id=request_id()
        )
    )
    # the 24th still ends with 16 vials; the 25th with 14, worth 4,782 − 2 × 340 = £4,102
    assert list(report(platform).valuation_totals) == [gbp("5832")]
    tomorrow = Date(year=2026, month=11, day=25)
    after = report(platform, start=tomorrow, end=tomorrow)
    assert [(v.on_hand_vials, v.value) for v in after.valuation][0] == (14, gbp("4102"))
    assert list(after.valuation_totals) == [gbp("5152")]
    assert not after.lines  # a count is not waste
    # before anything was received there was nothing to value
    yesterday = Date(year=2026, month=11, day=23)
    assert not report(platform, start=yesterday, end=yesterday).valuation


# --- dispensed and wasted --------------------------------------------------------------------


def test_dispensed_and_wasted_cost_by_product_patient_and_appointment(
    platform: Platform, db: Database
) -> None:
    ten = receive(platform, "gammagard-liquid", "10", "GA-1", 20, "340")
    five = receive(platform, "gammagard-liquid", "5", "GA-5", 10, "180")
    priv = receive(platform, "privigen", "20", "PR-1", 5, "700")
    # patient A, appt 1: 3 × 10 g opened, 27.3 g given, 2.7 g thrown away
    dispense(db, platform, ten.id, 3, "27.3", "2.7", "patient-a", "appt-1")
    # patient A, appt 2: 2 × 5 g opened, all 10 g given (5 g vial: £180, so £36/g)
    dispense(db, platform, five.id, 2, "10", "0", "patient-a", "appt-2")
    # patient B, appt 3: 2 × 20 g Privigen, 38 g given, 2 g wasted (£700/20 g = £35/g)
    dispense(db, platform, priv.id, 2, "38", "2", "patient-b", "appt-3")
    # a 10 g vial dropped in the fridge: £340, nobody's
    write_off(db, platform, ten.id, 1)

    gammagard, privigen = (product_id(platform, c) for c in ("gammagard-liquid", "privigen"))
    by_product = report(platform)
    assert rows(by_product.lines) == sorted(
        [
            # 27.3 × 34 = 928.20 plus 10 × 36 = 360 → 37.3 g, £1,288.20;
            # wasted 2.7 × 34 = 91.80 plus the dropped vial 340 → 12.7 g, £431.80
            (gammagard, "37.3", "GBP 1288.20", "12.7", "GBP 431.80"),
            # 38 × 35 = 1,330; 2 × 35 = 70
            (privigen, "38", "GBP 1330.00", "2", "GBP 70.00"),
        ]
    )
    # 37.3 + 38 = 75.3 g given, £2,618.20; 12.7 + 2 = 14.7 g wasted, £501.80
    assert rows(by_product.totals) == [("", "75.3", "GBP 2618.20", "14.7", "GBP 501.80")]

    by_patient = report(platform, inv.COST_GROUPING_PATIENT)
    assert rows(by_patient.lines) == [
        ("", "0", "GBP 0.00", "10", "GBP 340.00"),  # unattributed whole-vial waste
        ("patient-a", "37.3", "GBP 1288.20", "2.7", "GBP 91.80"),
        ("patient-b", "38", "GBP 1330.00", "2", "GBP 70.00"),
    ]
    by_appointment = report(platform, inv.COST_GROUPING_APPOINTMENT)
    assert rows(by_appointment.lines) == [
        ("", "0", "GBP 0.00", "10", "GBP 340.00"),
        ("appt-1", "27.3", "GBP 928.20", "2.7", "GBP 91.80"),
        ("appt-2", "10", "GBP 360.00", "0", "GBP 0.00"),
        ("appt-3", "38", "GBP 1330.00", "2", "GBP 70.00"),
    ]
    assert by_patient.totals == by_appointment.totals == by_product.totals
    # what is left: 20 − 3 − 1 = 16 × 340 + 8 × 180 + 3 × 700 = 5,440 + 1,440 + 2,100
    assert list(by_product.valuation_totals) == [gbp("8980")]


def test_a_reversal_cancels_the_waste_or_dispense_it_undoes(
    platform: Platform, db: Database
) -> None:
    lot = receive(platform, "gammagard-liquid", "10", "GA-1", 10, "340")
    dropped = write_off(db, platform, lot.id, 2)
    given = dispense(db, platform, lot.id, 1, "10", "0", "patient-a", "appt-1")
    before = report(platform)
    assert rows(before.totals) == [("", "10", "GBP 340.00", "20", "GBP 680.00")]
    platform.clock.advance(dt.timedelta(days=3))  # corrected on a later day
    for movement_id in (dropped, given):
        platform.inventory.ReverseMovement(
            inv.ReverseMovementRequest(
                movement_id=movement_id, reason="recorded in error", request_id=request_id()
            )
        )
    # the 24th no longer shows either, and its closing stock is all 10 vials (£3,400), as if
    # the mistakes had never been made; the 27th, when the reversals were made, shows no
    # negative line either
    after = report(platform, inv.COST_GROUPING_PATIENT)
    assert (list(after.lines), list(after.totals)) == ([], [])
    assert list(after.valuation_totals) == [gbp("3400")]
    later = Date(year=2026, month=11, day=27)
    assert not report(platform, start=later, end=later).lines


def test_the_period_is_the_sites_local_days(platform: Platform, db: Database) -> None:
    # New York is UTC−5 in November: 2026-11-24 03:00Z is still the 23rd there
    platform.clock.set(dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC))
    lot = receive(platform, "privigen", "10", "PR-1", 10, "350", site="site-ny")
    write_off(db, platform, lot.id, 1)
    platform.clock.set(dt.datetime(2026, 11, 25, 4, 59, tzinfo=dt.UTC))  # 23:59 on the 24th
    write_off(db, platform, lot.id, 2)
    platform.clock.set(dt.datetime(2026, 11, 25, 5, 0, tzinfo=dt.UTC))  # 00:00 on the 25th
    write_off(db, platform, lot.id, 4)

    def wasted(day: int) -> list[str]:
        d = Date(year=2026, month=11, day=day)
        return [x.wasted_grams for x in report(platform, start=d, end=d, site="site-ny").totals]

    assert (wasted(23), wasted(24), wasted(25)) == (["10"], ["20"], ["40"])
    whole = report(
        platform,
        start=Date(year=2026, month=11, day=23),
        end=Date(year=2026, month=11, day=25),
        site="site-ny",
    )
    assert rows(whole.totals) == [("", "0", "GBP 0.00", "70", "GBP 2450.00")]  # 7 × £350
    # on-hand at the end of the 24th: 10 − 1 − 2 = 7 vials (the 4 went on the 25th)
    d24 = Date(year=2026, month=11, day=24)
    assert report(platform, start=d24, end=d24, site="site-ny").valuation[0].on_hand_vials == 7


# --- through the real dispensing RPCs --------------------------------------------------------


def test_reserve_dispense_and_record_waste_then_report(platform: Platform) -> None:
    lot = receive(platform, "gammagard-liquid", "10", "GA-1", 10, "340")
    gammagard = product_id(platform, "gammagard-liquid")
    reservation = platform.inventory.ReserveStock(
        inv.ReserveStockRequest(
            appointment_id="appt-7",
            site_id="site-1",
            patient_id="patient-x",
            product_id=gammagard,
            grams="27.3",
            needed_on=TODAY,
            rounding_band_percent="0",
        )
    ).reservation
    assert [(x.lot_id, x.vials) for x in reservation.lines] == [(lot.id, 3)]  # 30 g opened
    platform.inventory.DispenseReservation(
        inv.DispenseReservationRequest(
            reservation_id=reservation.id,
            vials=[inv.DispensedVials(lot_id=lot.id, vials=3)],
            grams_administered="27.3",
            grams_wasted="2.7",
            patient_id="patient-x",
            appointment_id="appt-7",
            request_id=request_id(),
        )
    )
    dropped = platform.inventory.RecordWaste(
        inv.RecordWasteRequest(
            lot_id=lot.id, vials=2, reason=inv.WASTE_REASON_DAMAGED, request_id=request_id()
        )
    ).movement
    by_patient = report(platform, inv.COST_GROUPING_PATIENT)
    assert rows(by_patient.lines) == [
        ("", "0", "GBP 0.00", "20", "GBP 680.00"),  # 2 dropped vials × £340
        # 27.3 × 34 = £928.20 given; 2.7 × 34 = £91.80 left in the last vial
        ("patient-x", "27.3", "GBP 928.20", "2.7", "GBP 91.80"),
    ]
    by_product = report(platform)
    assert rows(by_product.lines) == [(gammagard, "27.3", "GBP 928.20", "22.7", "GBP 771.80")]
    assert by_product.totals == by_patient.totals
    # 10 − 3 − 2 = 5 vials left, £1,700
    assert [(v.on_hand_vials, v.value) for v in by_product.valuation] == [(5, gbp("1700"))]

    platform.inventory.ReverseMovement(
        inv.ReverseMovementRequest(
            movement_id=dropped.id, reason="they were fine", request_id=request_id()
        )
    )
    corrected = report(platform, inv.COST_GROUPING_APPOINTMENT)
    assert rows(corrected.lines) == [("appt-7", "27.3", "GBP 928.20", "2.7", "GBP 91.80")]
    assert [v.on_hand_vials for v in corrected.valuation] == [7]
