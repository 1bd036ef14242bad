"""The product catalogue through a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from infusion.inventory.v1 import inventory_pb2 as inv
from tests.integration.conftest import Platform, request_id
from tests.integration.errors import error_reason, field_violations


def test_seeded_catalogue_lists_real_products_with_sources(platform: Platform) -> None:
    codes: list[str] = []
    token = ""
    while True:
        page = platform.inventory.ListProducts(
            inv.ListProductsRequest(page_size=4, page_token=token)
        )
        codes += [p.code for p in page.products]
        token = page.next_page_token
        if not token:
            break
    assert len(codes) == len(set(codes)) >= 10
    gammagard = platform.inventory.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product
    # docs/clinical-rules.md#products: Gammagard Liquid 10 %, vials 1, 2.5, 5, 10, 20, 30 g [R11]
    assert gammagard.concentration_percent == "10"
    assert [p.grams for p in gammagard.presentations] == ["1", "2.5", "5", "10", "20", "30"]
    assert [p.ml for p in gammagard.presentations] == ["10", "25", "50", "100", "200", "300"]
    assert gammagard.sources and gammagard.price_per_gram.currency_code == "GBP"
    by_id = platform.inventory.GetProduct(inv.GetProductRequest(id=gammagard.id)).product
    assert by_id == gammagard


def test_filter_by_class(platform: Platform) -> None:
    scig = platform.inventory.ListProducts(
        inv.ListProductsRequest(ig_class=inv.IG_CLASS_SCIG, page_size=100)
    ).products
    assert scig and all(p.ig_class == inv.IG_CLASS_SCIG for p in scig)
    assert "hizentra" in {p.code for p in scig}


def new_product(code: str = "test-ivig") -> inv.Product:
    return inv.Product(
        code=code,
        brand="Test IVIg",
        manufacturer="Lab",
        ig_class=inv.IG_CLASS_IVIG,
        concentration_percent="10",
        routes=[inv.ROUTE_IV],
        presentations=[
            inv.Presentation(grams="5", ml="50"),
            inv.Presentation(grams="10", ml="100"),
        ],
        storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
    )


def test_create_is_idempotent_and_duplicate_code_is_already_exists(platform: Platform) -> None:
    rid = request_id()
    first = platform.inventory.CreateProduct(
        inv.CreateProductRequest(product=new_product(), request_id=rid)
    ).product
    again = platform.inventory.CreateProduct(
        inv.CreateProductRequest(product=new_product(), request_id=rid)
    ).product
    assert again == first  # the retry returns the first result, no second product
    with pytest.raises(grpc.RpcError) as caught:
        platform.inventory.CreateProduct(
            inv.CreateProductRequest(product=new_product(), request_id=request_id())
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(caught.value) == "DUPLICATE_PRODUCT_CODE"


def test_invalid_product_reports_every_bad_field_and_writes_nothing(platform: Platform) -> None:
    bad = new_product("bad-one")
    bad.concentration_percent = ""
    bad.presentations[0].ml = "70"  # 5 g of a 10 % product is 50 mL, not 70
    del bad.routes[:]
    bad.ClearField("ig_class")
    with pytest.raises(grpc.RpcError) as caught:
        platform.inventory.CreateProduct(
            inv.CreateProductRequest(product=bad, request_id=request_id())
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) >= {
        "product.concentration_percent",
        "product.ig_class",
    }
    with pytest.raises(grpc.RpcError) as missing:
        platform.inventory.GetProduct(inv.GetProductRequest(id="bad-one"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_with_mask_and_stale_etag(platform: Platform) -> None:
    created = platform.inventory.CreateProduct(
        inv.CreateProductRequest(product=new_product("upd"), request_id=request_id())
    ).product
    patch = inv.Product(id=created.id, etag=created.etag, note="new note", brand="ignored")
    updated = platform.inventory.UpdateProduct(
        inv.UpdateProductRequest(
            product=patch, update_mask=FieldMask(paths=["note"]), request_id=request_id()
        )
    ).product
    assert updated.note == "new note" and updated.brand == "Test IVIg"
    assert updated.etag != created.etag
    with pytest.raises(grpc.RpcError) as stale:
        platform.inventory.UpdateProduct(
            inv.UpdateProductRequest(
                product=patch, update_mask=FieldMask(paths=["note"]), request_id=request_id()
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    retire = inv.Product(id=created.id, etag=updated.etag, active=False)
    platform.inventory.UpdateProduct(
        inv.UpdateProductRequest(
            product=retire, update_mask=FieldMask(paths=["active"]), request_id=request_id()
        )
    )
    listed = platform.inventory.ListProducts(inv.ListProductsRequest(page_size=500)).products
    assert "upd" not in {p.code for p in listed}
