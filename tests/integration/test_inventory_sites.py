"""Stock sites and storage units, reservation listing, and dispensing by scanning the vial,
through a real gRPC server on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay

from infusion.inventory.v1 import inventory_pb2 as inv
from tests.integration.conftest import Platform, request_id, stock_site
from tests.integration.errors import field_violations

GTIN = "05412345678908"


def test_sites_and_storage_units(platform: Platform) -> None:
    site = platform.inventory.CreateStockSite(
        inv.CreateStockSiteRequest(
            site=inv.StockSite(
                id="nyc",
                display_name="Infusion centre NYC",
                time_zone="America/New_York",
                expiry_check_time=TimeOfDay(hours=7, minutes=30),
                expiry_warning_days=[30, 120],
            ),
            request_id="s1",
        )
    ).site
    assert list(site.expiry_warning_days) == [120, 30]
    assert platform.inventory.GetStockSite(inv.GetStockSiteRequest(id="nyc")).site == site
    defaults = platform.inventory.CreateStockSite(
        inv.CreateStockSiteRequest(
            site=inv.StockSite(id="ldn", display_name="London", time_zone="Europe/London")
        )
    ).site
    assert (defaults.expiry_check_time.hours, list(defaults.expiry_warning_days)) == (
        6,
        [90, 60, 30],
    )
    listed = platform.inventory.ListStockSites(inv.ListStockSitesRequest(page_size=1))
    assert [s.id for s in listed.sites] == ["ldn"] and listed.next_page_token
    with pytest.raises(grpc.RpcError) as twice:
        platform.inventory.CreateStockSite(
            inv.CreateStockSiteRequest(
                site=inv.StockSite(id="nyc", display_name="Again", time_zone="UTC")
            )
        )
    assert twice.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as bad:
        platform.inventory.CreateStockSite(
            inv.CreateStockSiteRequest(
                site=inv.StockSite(
                    id="x", time_zone="Mars/Olympus", expiry_warning_days=[30, 30, -1]
                )
            )
        )
    assert sorted(set(field_violations(bad.value))) == [
        "site.display_name",
        "site.expiry_warning_days",
        "site.time_zone",
    ]
    fridge = platform.inventory.CreateStorageUnit(
        inv.CreateStorageUnitRequest(
            storage_unit=inv.StorageUnit(
                site_id="nyc", display_name="Fridge 1", storage=inv.STORAGE_KIND_REFRIGERATED
            ),
            request_id="u1",
        )
    ).storage_unit
    units = platform.inventory.ListStorageUnits(inv.ListStorageUnitsRequest(site_id="nyc"))
    assert [u.id for u in units.storage_units] == [fridge.id]
    with pytest.raises(grpc.RpcError) as nowhere:
        platform.inventory.CreateStorageUnit(
            inv.CreateStorageUnitRequest(
                storage_unit=inv.StorageUnit(
                    site_id="mars", display_name="F", storage=inv.STORAGE_KIND_REFRIGERATED
                )
            )
        )
    assert field_violations(nowhere.value) == ["storage_unit.site_id"]
    product = platform.inventory.GetProduct(inv.GetProductRequest(id="privigen")).product
    lot = platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id="nyc",
            storage_unit_id=fridge.id,
            product_id=product.id,
            presentation_grams="10",
            lot_number="P1",
            expiry_date=Date(year=2028, month=1, day=31),
            vials=2,
            # ~$100/g (docs/clinical-rules.md#cost)
            unit_cost=Money(currency_code="USD", units=1000),
            request_id=request_id(),
        )
    ).lot
    assert lot.storage_unit_id == fridge.id
    with pytest.raises(grpc.RpcError) as other_site:
        platform.inventory.ReceiveStock(
            inv.ReceiveStockRequest(
                site_id="ldn",
                storage_unit_id=fridge.id,
                product_id=product.id,
                presentation_grams="10",
                lot_number="P1",
                expiry_date=Date(year=2028, month=1, day=31),
                vials=2,
                unit_cost=Money(currency_code="USD", units=1000),
            )
        )
    assert field_violations(other_site.value) == ["storage_unit_id"]


def test_list_reservations_and_dispense_by_scanning(platform: Platform) -> None:
    stock_site(platform, "site-1")
    product = platform.inventory.CreateProduct(
        inv.CreateProductRequest(
            request_id=request_id(),
            product=inv.Product(
                code="scan-ivig",
                brand="Scan IVIg",
                manufacturer="Lab",
                ig_class=inv.IG_CLASS_IVIG,
                concentration_percent="10",
                routes=[inv.ROUTE_IV],
                presentations=[inv.Presentation(grams="5", ml="50", gtin=GTIN)],
                storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
            ),
        )
    ).product
    platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id="site-1",
            gs1_element_string=f"(01){GTIN}(17)280630(10)SC-9",
            vials=10,
            unit_cost=Money(currency_code="GBP", units=170),
            request_id=request_id(),
        )
    )
    made = []
    for i, day in enumerate([3, 1, 2]):
        made.append(
            platform.inventory.ReserveStock(
                inv.ReserveStockRequest(
                    appointment_id=f"appt-{i}",
                    site_id="site-1",
                    patient_id=f"patient-{i}",
                    product_id=product.id,
                    grams="10",
                    needed_on=Date(year=2026, month=12, day=day),
                )
            ).reservation
        )
    page = platform.inventory.ListReservations(
        inv.ListReservationsRequest(site_id="site-1", page_size=2)
    )
    assert [r.appointment_id for r in page.reservations] == ["appt-1", "appt-2"]
    rest = platform.inventory.ListReservations(
        inv.ListReservationsRequest(site_id="site-1", page_size=2, page_token=page.next_page_token)
    )
    assert [r.appointment_id for r in rest.reservations] == ["appt-0"]
    ranged = platform.inventory.ListReservations(
        inv.ListReservationsRequest(
            needed_from=Date(year=2026, month=12, day=2),
            needed_to=Date(year=2026, month=12, day=2),
        )
    )
    assert [r.appointment_id for r in ranged.reservations] == ["appt-2"]
    done = platform.inventory.DispenseReservation(
        inv.DispenseReservationRequest(
            reservation_id=made[1].id,
            vials=[inv.DispensedVials(gs1_element_string=f"(01){GTIN}(17)280630(10)SC-9", vials=2)],
            grams_administered="10",
            request_id=request_id(),
        )
    )
    assert [(a.lot_number, a.patient_id, a.vials) for a in done.administrations] == [
        ("SC-9", "patient-1", 2)
    ]
    dispensed = platform.inventory.ListReservations(
        inv.ListReservationsRequest(state=inv.RESERVATION_STATE_DISPENSED)
    )
    assert [r.id for r in dispensed.reservations] == [made[1].id]
    with pytest.raises(grpc.RpcError) as unknown:
        platform.inventory.DispenseReservation(
            inv.DispenseReservationRequest(
                reservation_id=made[2].id,
                vials=[
                    inv.DispensedVials(gs1_element_string=f"(01){GTIN}(17)280630(10)NOPE", vials=2)
                ],
                grams_administered="10",
            )
        )
    assert field_violations(unknown.value) == ["vials[0].gs1_element_string"]
