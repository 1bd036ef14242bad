"""Lots and the ledger through a real gRPC server on SQLite and PostgreSQL: receiving (typed
and scanned), validation that writes nothing, idempotent retries, quarantine, counts,
reversals, and stock levels as sums over the ledger."""

from __future__ import annotations

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money

from infusion.inventory.v1 import inventory_pb2 as inv
from tests.integration.conftest import Platform, request_id, stock_site
from tests.integration.errors import field_violations, precondition_types

GBP_950 = Money(currency_code="GBP", units=950)
EXPIRY = Date(year=2028, month=6, day=30)


@pytest.fixture(autouse=True)
def sites(platform: Platform) -> None:
    stock_site(platform, "site-1")
    stock_site(platform, "site-2")


def product(p: Platform, code: str = "gammagard-liquid") -> inv.Product:
    return p.inventory.GetProduct(inv.GetProductRequest(id=code)).product


def receive(p: Platform, **kw: object) -> inv.ReceiveStockResponse:
    fields: dict[str, object] = dict(
        site_id="site-1",
        product_id=product(p).id,
        presentation_grams="10",
        lot_number="LE123",
        expiry_date=EXPIRY,
        vials=12,
        unit_cost=GBP_950,
        supplier="Wholesaler",
        request_id=request_id(),
    )
    fields.update(kw)
    return p.inventory.ReceiveStock(inv.ReceiveStockRequest(**fields))  # type: ignore[arg-type]


def test_receipts_add_up_and_a_retry_does_not_double(platform: Platform) -> None:
    rid = request_id()
    first = receive(platform, request_id=rid)
    again = receive(platform, request_id=rid)
    assert again == first
    assert first.lot.state == inv.LOT_STATE_AVAILABLE
    assert (first.lot.on_hand_vials, first.lot.on_hand_grams) == (12, "120")  # 12 × 10 g
    more = receive(platform, vials=3)
    assert more.lot.id == first.lot.id and more.lot.on_hand_vials == 15
    moves = platform.inventory.ListMovements(inv.ListMovementsRequest(lot_id=first.lot.id))
    assert [m.on_hand_delta_vials for m in moves.movements] == [12, 3]
    assert all(m.kind == inv.MOVEMENT_KIND_RECEIPT for m in moves.movements)


def test_bad_receipts_list_every_field_and_write_nothing(platform: Platform) -> None:
    with pytest.raises(grpc.RpcError) as bad:
        receive(
            platform, vials=0, expiry_date=Date(year=2026, month=1, day=31), presentation_grams="7"
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == ["vials", "expiry_date", "presentation_grams"]
    assert not platform.inventory.ListLots(inv.ListLotsRequest(site_id="site-1")).lots
    receive(platform, site_id="site-2")
    with pytest.raises(grpc.RpcError) as clash:  # same lot number, another expiry
        receive(platform, expiry_date=Date(year=2028, month=1, day=31))
    assert field_violations(clash.value) == ["expiry_date"]


def test_scanned_receipt_matches_the_gtin_to_a_presentation(platform: Platform) -> None:
    created = platform.inventory.CreateProduct(
        inv.CreateProductRequest(
            request_id=request_id(),
            product=inv.Product(
                code="scan-ivig",
                brand="Scan IVIg",
                manufacturer="Lab",
                ig_class=inv.IG_CLASS_IVIG,
                concentration_percent="10",
                routes=[inv.ROUTE_IV],
                presentations=[inv.Presentation(grams="5", ml="50", gtin="05412345678908")],
                storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
            ),
        )
    ).product
    scanned = platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id="site-1",
            gs1_element_string="(01)05412345678908(17)280630(10)SC-9",
            vials=4,
            unit_cost=GBP_950,
            request_id=request_id(),
        )
    ).lot
    assert (scanned.product_id, scanned.presentation_grams, scanned.lot_number) == (
        created.id,
        "5",
        "SC-9",
    )
    assert scanned.expiry_date == EXPIRY and scanned.gtin == "05412345678908"
    with pytest.raises(grpc.RpcError) as disagree:
        platform.inventory.ReceiveStock(
            inv.ReceiveStockRequest(
                site_id="site-1",
                gs1_element_string="(01)05412345678908(17)280630(10)SC-9",
                lot_number="OTHER",
                vials=1,
                unit_cost=GBP_950,
                request_id=request_id(),
            )
        )
    assert field_violations(disagree.value) == ["lot_number"]
    with pytest.raises(grpc.RpcError) as garbled:
        platform.inventory.ReceiveStock(
            inv.ReceiveStockRequest(
                site_id="site-1",
                gs1_element_string="0105412345678909",
                vials=1,
                unit_cost=GBP_950,
                request_id=request_id(),
            )
        )
    assert field_violations(garbled.value) == ["gs1_element_string"]


def test_quarantine_and_release(platform: Platform) -> None:
    lot = receive(platform).lot
    held = platform.inventory.QuarantineLot(
        inv.QuarantineLotRequest(
            lot_id=lot.id, reason="temperature excursion", request_id=request_id()
        )
    ).lot
    assert (held.state, held.on_hand_vials, held.available_vials) == (
        inv.LOT_STATE_QUARANTINED,
        12,
        0,
    )
    with pytest.raises(grpc.RpcError) as twice:
        platform.inventory.QuarantineLot(
            inv.QuarantineLotRequest(lot_id=lot.id, reason="again", request_id=request_id())
        )
    assert precondition_types(twice.value) == ["LOT_STATE_TRANSITION"]
    back = platform.inventory.ReleaseLot(
        inv.ReleaseLotRequest(
            lot_id=lot.id, reason="data logger within range", request_id=request_id()
        )
    ).lot
    assert (back.state, back.available_vials) == (inv.LOT_STATE_AVAILABLE, 12)
    with pytest.raises(grpc.RpcError) as not_held:
        platform.inventory.ReleaseLot(
            inv.ReleaseLotRequest(lot_id=lot.id, reason="x", request_id=request_id())
        )
    assert precondition_types(not_held.value) == ["LOT_QUARANTINED"]


def test_reversal_and_count_corrections(platform: Platform) -> None:
    first = receive(platform)
    mistake = receive(platform, vials=5)
    reversed_ = platform.inventory.ReverseMovement(
        inv.ReverseMovementRequest(
            movement_id=mistake.movement.id, reason="keyed 5 instead of 0", request_id=request_id()
        )
    )
    assert reversed_.reversal.on_hand_delta_vials == -5
    assert reversed_.reversal.reverses_movement_id == mistake.movement.id
    assert reversed_.lot.on_hand_vials == 12
    with pytest.raises(grpc.RpcError) as again:
        platform.inventory.ReverseMovement(
            inv.ReverseMovementRequest(
                movement_id=mistake.movement.id, reason="twice", request_id=request_id()
            )
        )
    assert precondition_types(again.value) == ["MOVEMENT_REVERSIBLE"]
    counted = platform.inventory.RecordCount(
        inv.RecordCountRequest(
            lot_id=first.lot.id, counted_vials=11, reason="shelf count", request_id=request_id()
        )
    )
    assert counted.movement.on_hand_delta_vials == -1 and counted.lot.on_hand_vials == 11
    empty = platform.inventory.RecordCount(
        inv.RecordCountRequest(
            lot_id=first.lot.id, counted_vials=0, reason="none found", request_id=request_id()
        )
    ).lot
    assert empty.state == inv.LOT_STATE_DEPLETED
    moves = platform.inventory.ListMovements(inv.ListMovementsRequest(lot_id=first.lot.id))
    assert [m.on_hand_delta_vials for m in moves.movements] == [12, 5, -5, -1, -11]
    assert moves.movements[1].reversed_by_movement_id == reversed_.reversal.id


def test_stock_levels_sum_the_ledger_and_respect_expiry(platform: Platform) -> None:
    gammagard = product(platform).id
    receive(platform, lot_number="A", vials=10, presentation_grams="10")
    receive(
        platform,
        lot_number="B",
        vials=4,
        presentation_grams="20",
        expiry_date=Date(year=2027, month=1, day=31),
    )
    levels = platform.inventory.GetStockLevels(inv.GetStockLevelsRequest(site_id="site-1"))
    [total] = levels.products
    # 10 × 10 g + 4 × 20 g = 180 g on hand, all available today
    assert (total.product_id, total.on_hand_vials, total.on_hand_grams) == (gammagard, 14, "180")
    assert total.available_grams == "180"
    assert [lot.lot_number for lot in levels.lots] == ["B", "A"]  # first expiry first
    later = platform.inventory.GetStockLevels(
        inv.GetStockLevelsRequest(site_id="site-1", as_of=Date(year=2027, month=2, day=1))
    ).products[0]
    assert (later.available_vials, later.available_grams) == (10, "100")  # lot B has expired


def test_list_filters_take_a_product_by_catalogue_code_as_other_calls_do(
    platform: Platform,
) -> None:
    receive(platform, lot_number="A", vials=10, presentation_grams="10")
    by_code = platform.inventory.GetStockLevels(
        inv.GetStockLevelsRequest(site_id="site-1", product_id="gammagard-liquid")
    )
    assert [p.on_hand_vials for p in by_code.products] == [10]
    lots = platform.inventory.ListLots(
        inv.ListLotsRequest(site_id="site-1", product_id="gammagard-liquid")
    ).lots
    assert [x.lot_number for x in lots] == ["A"]
    with pytest.raises(grpc.RpcError) as unknown:
        platform.inventory.ListLots(inv.ListLotsRequest(site_id="site-1", product_id="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
