"""Demand forecasts, the stock forecast, reorder policies and suggestions, purchase orders and
the daily reorder check through a real gRPC server on SQLite and PostgreSQL. The shelf below
is the worked example of docs/forecast-and-reorder.md, built with the real RPCs (ReceiveStock,
ReserveStock, CreatePurchaseOrder, UpsertDemandForecast), so the figures match the unit test's
hand arithmetic."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money

from infusion.inventory.v1 import inventory_pb2 as inv
from services.common.db import Database
from services.common.identity import acting_as, service_caller
from services.common.outbox import Outbox
from services.inventory.store.models import outbox
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.planning import Planning
from services.inventory.usecases.sites import Sites
from services.inventory.usecases.stock import Stock
from tests.integration.conftest import Platform, request_id, stock_site
from tests.integration.errors import error_reason, field_violations, precondition_types

GBP_950 = Money(currency_code="GBP", units=950)
TODAY = dt.date(2026, 11, 24)  # the platform clock: 2026-11-24 09:00 UTC, London


def d(n: int) -> Date:
    day = TODAY + dt.timedelta(days=n)
    return Date(year=day.year, month=day.month, day=day.day)


@pytest.fixture(autouse=True)
def sites(platform: Platform) -> None:
    stock_site(platform, "site-1")
    stock_site(platform, "site-2")


def pid(p: Platform, code: str = "gammagard-liquid") -> str:
    return p.inventory.GetProduct(inv.GetProductRequest(id=code)).product.id


def receive(p: Platform, lot: str, vials: int, expiry: Date, **kw: object) -> inv.Lot:
    fields: dict[str, object] = dict(
        site_id="site-1",
        product_id=pid(p),
        presentation_grams="10",
        lot_number=lot,
        expiry_date=expiry,
        vials=vials,
        unit_cost=GBP_950,
        request_id=request_id(),
    )
    fields.update(kw)
    return p.inventory.ReceiveStock(inv.ReceiveStockRequest(**fields)).lot  # type: ignore[arg-type]


def order(p: Platform, vials: int = 4, **kw: object) -> inv.PurchaseOrder:
    fields: dict[str, object] = dict(
        site_id="site-1",
        supplier="BPL Wholesale",
        expected_date=d(7),
        reference="PO-1",
        lines=[
            inv.PurchaseOrderLine(
                product_id=pid(p), presentation_grams="10", vials_ordered=vials, unit_cost=GBP_950
            )
        ],
    )
    fields.update(kw)
    return p.inventory.CreatePurchaseOrder(
        inv.CreatePurchaseOrderRequest(
            purchase_order=inv.PurchaseOrder(**fields),  # type: ignore[arg-type]
            request_id=request_id(),
        )
    ).purchase_order


def upsert(p: Platform, *entries: tuple[int, str], site: str = "site-1") -> int:
    return p.scheduler_service.UpsertDemandForecast(
        inv.UpsertDemandForecastRequest(
            forecasts=[
                inv.DemandForecast(site_id=site, product_id=pid(p), day=d(n), grams=g)
                for n, g in entries
            ],
            request_id=request_id(),
        )
    ).upserted


def forecast(p: Platform, days: int = 14, **kw: object) -> inv.GetStockForecastResponse:
    return p.inventory.GetStockForecast(
        inv.GetStockForecastRequest(
            site_id="site-1",
            product_id=pid(p),
            horizon_days=days,
            **kw,  # type: ignore[arg-type]
        )
    )


def set_policy(p: Platform, **kw: object) -> inv.ReorderPolicy:
    fields: dict[str, object] = dict(
        site_id="site-1",
        product_id=pid(p),
        lead_time_days=7,
        safety_stock_grams="20",
        review_period_days=7,
        order_presentation_grams="10",
        case_vials=4,
        maximum_grams="0",
    )
    fields.update(kw)
    return p.inventory.SetReorderPolicy(
        inv.SetReorderPolicyRequest(
            policy=inv.ReorderPolicy(**fields),  # type: ignore[arg-type]
            request_id=request_id(),
        )
    ).policy


def worked_example(p: Platform) -> None:
    """Lot A 3 × 10 g to 11-26, lot B 5 × 10 g to 2027-03-31, 4 × 10 g ordered for 12-01,
    25 g booked on 11-25 and on 12-02, 20 g forecast on 11-27, 11-30, 12-04 and 12-07."""
    receive(p, "A", 3, d(2))
    receive(p, "B", 5, Date(year=2027, month=3, day=31))
    order(p)
    for appointment, day in (("appt-1", d(1)), ("appt-2", d(8))):
        p.inventory.ReserveStock(
            inv.ReserveStockRequest(
                appointment_id=appointment,
                site_id="site-1",
                patient_id="patient-1",
                product_id=pid(p),
                grams="25",
                needed_on=day,
            )
        )
    assert upsert(p, (3, "20"), (6, "20"), (10, "20"), (13, "20")) == 4


def test_stock_forecast_follows_the_worked_example(platform: Platform) -> None:
    worked_example(platform)
    f = forecast(platform)
    assert [x.projected_available_grams for x in f.days] == [
        "80", "55", "55", "30", "30", "30", "10", "50", "25", "25", "5", "5", "5", "0"
    ]  # fmt: skip
    assert [x.reserved_demand_grams for x in f.days if x.reserved_demand_grams != "0"] == [
        "25",
        "25",
    ]
    assert f.days[3].expiring_grams == "5" and f.days[3].in_date_on_hand_grams == "50"
    assert f.days[7].arriving_grams == "40" and f.days[13].shortfall_grams == "15"
    assert f.first_stockout_date == d(13)
    later = forecast(platform, 3, start_date=d(6))  # simulated from today, shown from 11-30
    assert [x.projected_available_grams for x in later.days] == ["10", "50", "25"]
    assert not later.HasField("first_stockout_date")


def test_forecast_upsert_replaces_deletes_and_retries(platform: Platform) -> None:
    rid = request_id()
    request = inv.UpsertDemandForecastRequest(
        forecasts=[
            inv.DemandForecast(site_id="site-1", product_id="privigen", day=d(1), grams="7.5")
        ],
        request_id=rid,
    )
    assert platform.scheduler_service.UpsertDemandForecast(request).upserted == 1
    assert platform.scheduler_service.UpsertDemandForecast(request).upserted == 1  # a retry: same
    f = forecast(platform, 2)
    assert [x.forecast_demand_grams for x in f.days] == ["0", "0"]  # another product
    upsert(platform, (1, "12.25"))
    upsert(platform, (1, "30"), (2, "5"))  # replaces day 1
    assert [x.forecast_demand_grams for x in forecast(platform, 3).days] == ["0", "30", "5"]
    assert forecast(platform, 3).first_stockout_date == d(1)  # nothing on the shelf
    upsert(platform, (1, "0"))  # "0" removes the day
    assert [x.forecast_demand_grams for x in forecast(platform, 3).days] == ["0", "0", "5"]


def test_bad_forecast_entries_name_each_field_and_write_nothing(platform: Platform) -> None:
    g = pid(platform)

    def entry(site: str, product: str, day: Date | None, grams: str) -> inv.DemandForecast:
        e = inv.DemandForecast(site_id=site, product_id=product, grams=grams)
        if day is not None:
            e.day.CopyFrom(day)
        return e

    def upsert(*entries: inv.DemandForecast) -> None:
        platform.scheduler_service.UpsertDemandForecast(
            inv.UpsertDemandForecastRequest(forecasts=entries, request_id=request_id())
        )

    # the request contract refuses malformed grams first (signs, places, text), by path
    with pytest.raises(grpc.RpcError) as malformed:
        upsert(
            entry("site-1", g, d(1), "9"),
            entry("site-1", g, d(3), "-1"),
            entry("site-1", g, d(4), "0.0001"),  # below a milligram
            entry("site-1", g, d(5), "abc"),
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(malformed.value) == [
        "forecasts[1].grams",
        "forecasts[2].grams",
        "forecasts[3].grams",
    ]
    with pytest.raises(grpc.RpcError) as bad:
        upsert(
            entry("site-1", g, d(1), "9"),
            entry("nowhere", g, d(1), "1"),
            entry("site-1", "nothing", d(2), "1"),
            entry("site-1", g, d(3), "0"),
            entry("site-1", g, None, "1"),
            entry("site-1", g, d(1), "2"),  # day 1 twice
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == [
        "forecasts[4].day",
        "forecasts[1].site_id",
        "forecasts[2].product_id",
        "forecasts[5].day",
    ]
    assert all(x.forecast_demand_grams == "0" for x in forecast(platform, 5).days)
    with pytest.raises(grpc.RpcError) as empty:
        platform.scheduler_service.UpsertDemandForecast(inv.UpsertDemandForecastRequest())
    assert field_violations(empty.value) == ["forecasts"]


def test_stock_forecast_refuses_bad_questions(platform: Platform) -> None:
    cases = [
        (dict(horizon_days=0), ["horizon_days"]),
        (dict(horizon_days=367), ["horizon_days"]),
        (dict(start_date=d(-1)), ["start_date"]),
        (dict(start_date=Date(year=2026, month=2, day=30)), ["start_date"]),
        (dict(site_id="nowhere"), ["site_id"]),
        (dict(product_id="nothing"), ["product_id"]),
    ]
    for change, fields in cases:
        request: dict[str, object] = dict(
            site_id="site-1", product_id=pid(platform), horizon_days=7
        )
        request.update(change)
        with pytest.raises(grpc.RpcError) as bad:
            platform.inventory.GetStockForecast(inv.GetStockForecastRequest(**request))  # type: ignore[arg-type]
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, change
        assert field_violations(bad.value) == fields, change


def test_forecast_ignores_stock_that_cannot_be_used(platform: Platform) -> None:
    quarantined = receive(platform, "Q", 2, d(100))
    platform.inventory.QuarantineLot(
        inv.QuarantineLotRequest(
            lot_id=quarantined.id, reason="fridge alarm", request_id=request_id()
        )
    )
    receive(platform, "E", 1, d(0))  # usable today only
    receive(platform, "OTHER", 9, d(100), site_id="site-2")
    f = forecast(platform, 2)
    assert [(x.in_date_on_hand_grams, x.expiring_grams) for x in f.days] == [
        ("10", "0"),
        ("0", "10"),
    ]


def test_reorder_policy_set_get_and_etags(platform: Platform) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        platform.inventory.GetReorderPolicy(
            inv.GetReorderPolicyRequest(site_id="site-1", product_id=pid(platform))
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    created = set_policy(platform, product_id="gammagard-liquid")  # a code works as an id
    assert created.product_id == pid(platform) and created.safety_stock_grams == "20"
    got = platform.inventory.GetReorderPolicy(
        inv.GetReorderPolicyRequest(site_id="site-1", product_id=pid(platform))
    ).policy
    assert got == created
    changed = set_policy(platform, safety_stock_grams="30", etag=created.etag)
    assert changed.safety_stock_grams == "30" and changed.etag != created.etag
    with pytest.raises(grpc.RpcError) as stale:
        set_policy(platform, safety_stock_grams="40", etag=created.etag)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(stale.value) == "STALE_ETAG"
    with pytest.raises(grpc.RpcError) as none_yet:
        set_policy(platform, product_id="privigen", etag=created.etag)
    assert none_yet.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(none_yet.value) == "STALE_ETAG"
    overwritten = set_policy(platform, lead_time_days=3)  # no etag: last writer wins
    assert overwritten.lead_time_days == 3 and overwritten.safety_stock_grams == "20"
    rid = request_id()
    request = inv.SetReorderPolicyRequest(policy=overwritten, request_id=rid)
    request.policy.etag = ""
    request.policy.case_vials = 10
    assert platform.inventory.SetReorderPolicy(request) == platform.inventory.SetReorderPolicy(
        request
    )


def test_bad_reorder_policies_write_nothing(platform: Platform) -> None:
    with pytest.raises(grpc.RpcError) as malformed:  # the request contract: plain decimals
        set_policy(platform, safety_stock_grams="-5", maximum_grams="x")
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(malformed.value) == [
        "policy.safety_stock_grams",
        "policy.maximum_grams",
    ]
    with pytest.raises(grpc.RpcError) as bad:
        set_policy(
            platform,
            lead_time_days=-1,
            review_period_days=0,
            order_presentation_grams="7",
            case_vials=0,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == [
        "policy.lead_time_days",
        "policy.review_period_days",
        "policy.order_presentation_grams",
        "policy.case_vials",
    ]
    for change, fields in (
        (dict(site_id="nowhere"), ["policy.site_id"]),
        (dict(product_id="nothing"), ["policy.product_id"]),
        (dict(maximum_grams="10"), ["policy.maximum_grams"]),  # under the 20 g safety stock
        (dict(safety_stock_grams=""), ["policy.safety_stock_grams"]),
    ):
        with pytest.raises(grpc.RpcError) as one:
            set_policy(platform, **change)
        assert field_violations(one.value) == fields, change
    with pytest.raises(grpc.RpcError) as missing:
        platform.inventory.GetReorderPolicy(
            inv.GetReorderPolicyRequest(site_id="site-1", product_id=pid(platform))
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_reorder_suggestion_follows_the_worked_example(platform: Platform) -> None:
    worked_example(platform)
    set_policy(platform)
    found = platform.inventory.ListReorderSuggestions(
        inv.ListReorderSuggestionsRequest(site_id="site-1")
    ).suggestions
    assert len(found) == 1
    s = found[0]
    assert (s.product_id, s.presentation_grams, s.vials, s.grams) == (pid(platform), "10", 4, "40")
    # 4 vials × £950, the last price paid here for a 10 g vial
    assert (s.estimated_cost.currency_code, s.estimated_cost.units) == ("GBP", 3800)
    assert (s.stockout_date, s.order_by_date) == (d(13), d(6))
    assert "35 g is missing" in s.reason and "order by 2026-11-30" in s.reason
    assert s.reason.endswith("Cost at the last price paid here: 950 GBP per 10 g vial.")
    # a generous open order covers it: no suggestion
    order(platform, vials=10, expected_date=d(3))
    assert not platform.inventory.ListReorderSuggestions(
        inv.ListReorderSuggestionsRequest(site_id="site-1")
    ).suggestions
    with pytest.raises(grpc.RpcError) as bad:
        platform.inventory.ListReorderSuggestions(
            inv.ListReorderSuggestionsRequest(site_id="site-1", as_of=d(-1))
        )
    assert field_violations(bad.value) == ["as_of"]
    with pytest.raises(grpc.RpcError) as unknown:
        platform.inventory.ListReorderSuggestions(inv.ListReorderSuggestionsRequest(site_id="x"))
    assert field_violations(unknown.value) == ["site_id"]


@pytest.fixture
def planning(platform: Platform, database_url: str) -> Iterator[Planning]:
    """The daily job's entry point, wired like __main__ on the test's own database, acting as
    the inventory service as the job does."""
    db = Database(database_url)
    catalogue = Catalogue(db, platform.clock)
    sites = Sites(db, platform.clock)
    stock = Stock(db, platform.clock, catalogue, sites)
    with acting_as(service_caller("inventory")):
        yield Planning(db, platform.clock, catalogue, sites, stock, Outbox(outbox))
    db.dispose()


def events(p: Platform, topic: str) -> list[dict[str, object]]:
    found = p.inventory.ListOutgoingEvents(inv.ListOutgoingEventsRequest(topic=topic)).events
    return [json.loads(e.payload_json) for e in found]


def test_daily_check_emits_reorder_due_and_low_stock_once(
    platform: Platform, planning: Planning
) -> None:
    worked_example(platform)
    set_policy(platform)
    set_policy(platform, product_id="privigen", safety_stock_grams="40", case_vials=1)
    price = platform.inventory.GetProduct(inv.GetProductRequest(id="privigen")).product
    found = planning.check_reorder("site-1")
    assert sorted(s.product.product.code for s in found) == ["gammagard-liquid", "privigen"]
    assert planning.check_reorder("site-1", TODAY) == found  # the same day again: no new events
    due = {e["product_code"]: e for e in events(platform, "REORDER_DUE")}
    assert set(due) == {"gammagard-liquid", "privigen"}
    g = due["gammagard-liquid"]
    assert (g["vials"], g["grams"], g["stockout_date"], g["order_by_date"]) == (
        4,
        "40",
        "2026-12-07",
        "2026-11-30",
    )
    assert g["estimated_cost"] == {"amount": "3800", "currency": "GBP"}
    # privigen: nothing held, 40 g safety stock → 4 × 10 g at the catalogue price per gram
    pv = due["privigen"]
    per_gram = Decimal(price.price_per_gram.units) + Decimal(price.price_per_gram.nanos) / 10**9
    cost = pv["estimated_cost"]
    assert isinstance(cost, dict) and Decimal(cost["amount"]) == per_gram * 40
    assert pv["stockout_date"] is None and "catalogue price" in str(pv["reason"])
    low = events(platform, "LOW_STOCK")
    assert [(e["product_code"], e["available_grams"]) for e in low] == [("privigen", "0")]
    planning.check_reorder("site-1", TODAY + dt.timedelta(days=1))  # a new day: new events
    assert len(events(platform, "REORDER_DUE")) == 4
    with pytest.raises(Exception):  # noqa: B017 - an unknown site is refused, nothing written
        planning.check_reorder("nowhere")


# --- purchase orders ----------------------------------------------------------------------------


def test_purchase_order_create_get_list_and_retry(platform: Platform) -> None:
    rid = request_id()
    request = inv.CreatePurchaseOrderRequest(
        purchase_order=inv.PurchaseOrder(
            site_id="site-1",
            supplier="BPL",
            lines=[
                inv.PurchaseOrderLine(
                    product_id="privigen",
                    presentation_grams="20",
                    vials_ordered=6,
                    unit_cost=GBP_950,
                )
            ],
        ),
        request_id=rid,
    )
    first = platform.inventory.CreatePurchaseOrder(request).purchase_order
    assert platform.inventory.CreatePurchaseOrder(request).purchase_order == first
    assert first.state == inv.PURCHASE_ORDER_STATE_OPEN and not first.HasField("expected_date")
    assert first.lines[0].product_id == pid(platform, "privigen") and first.lines[0].id
    got = platform.inventory.GetPurchaseOrder(inv.GetPurchaseOrderRequest(id=first.id))
    assert got.purchase_order == first
    others = [order(platform, reference=f"PO-{n}") for n in range(3)]
    order(platform, site_id="site-2")
    page = platform.inventory.ListPurchaseOrders(
        inv.ListPurchaseOrdersRequest(site_id="site-1", page_size=3)
    )
    assert [x.id for x in page.purchase_orders] == [x.id for x in reversed(others)]
    rest = platform.inventory.ListPurchaseOrders(
        inv.ListPurchaseOrdersRequest(
            site_id="site-1", page_size=3, page_token=page.next_page_token
        )
    )
    assert [x.id for x in rest.purchase_orders] == [first.id] and not rest.next_page_token
    with pytest.raises(grpc.RpcError) as missing:
        platform.inventory.GetPurchaseOrder(inv.GetPurchaseOrderRequest(id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def line(product: str, grams: str, vials: int, cost: Money | None) -> inv.PurchaseOrderLine:
    x = inv.PurchaseOrderLine(product_id=product, presentation_grams=grams, vials_ordered=vials)
    if cost is not None:
        x.unit_cost.CopyFrom(cost)
    return x


def test_bad_purchase_orders_write_nothing(platform: Platform) -> None:
    with pytest.raises(grpc.RpcError) as malformed:  # the request contract comes first
        order(
            platform,
            lines=[line(pid(platform), "x", 1, Money(currency_code="gbp", units=1))],
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(malformed.value) == [
        "purchase_order.lines[0].unit_cost.currency_code",
        "purchase_order.lines[0].presentation_grams",
    ]
    with pytest.raises(grpc.RpcError) as bad:
        order(
            platform,
            site_id="nowhere",
            supplier=" ",
            lines=[
                line("nothing", "10", 1, GBP_950),
                line(pid(platform), "7", 0, None),
                line(pid(platform), "10", 1, Money(currency_code="GBP", units=-1)),
            ],
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == [
        "purchase_order.site_id",
        "purchase_order.supplier",
        "purchase_order.lines[0].product_id",
        "purchase_order.lines[1].presentation_grams",
        "purchase_order.lines[1].vials_ordered",
        "purchase_order.lines[1].unit_cost",
        "purchase_order.lines[2].unit_cost",
    ]
    for change, fields in (
        (dict(lines=[]), ["purchase_order.lines"]),
        (dict(expected_date=d(-1)), ["purchase_order.expected_date"]),
    ):
        with pytest.raises(grpc.RpcError) as one:
            order(platform, **change)
        assert field_violations(one.value) == fields
    assert not platform.inventory.ListPurchaseOrders(
        inv.ListPurchaseOrdersRequest()
    ).purchase_orders


def receipt(
    line: inv.PurchaseOrderLine, lot: str, vials: int, **kw: object
) -> inv.PurchaseOrderReceipt:
    fields: dict[str, object] = dict(
        line_id=line.id, lot_number=lot, expiry_date=d(400), vials=vials
    )
    fields.update(kw)
    return inv.PurchaseOrderReceipt(**fields)  # type: ignore[arg-type]


def receive_order(
    p: Platform, po: inv.PurchaseOrder, *receipts: inv.PurchaseOrderReceipt, rid: str = ""
) -> inv.ReceivePurchaseOrderResponse:
    return p.inventory.ReceivePurchaseOrder(
        inv.ReceivePurchaseOrderRequest(
            purchase_order_id=po.id,
            receipts=receipts,
            actor="pharmacist",
            request_id=rid or request_id(),
        )
    )


def test_partial_deliveries_become_lots_until_the_order_is_received(platform: Platform) -> None:
    po = order(platform, vials=10)
    line = po.lines[0]
    rid = request_id()
    first = receive_order(platform, po, receipt(line, "L1", 3), receipt(line, "L2", 2), rid=rid)
    assert (
        receive_order(platform, po, receipt(line, "L1", 3), receipt(line, "L2", 2), rid=rid)
        == first
    )
    assert first.purchase_order.state == inv.PURCHASE_ORDER_STATE_PARTIALLY_RECEIVED
    assert first.purchase_order.lines[0].vials_received == 5
    assert [(x.lot_number, x.on_hand_vials, x.supplier) for x in first.lots] == [
        ("L1", 3, "BPL Wholesale"),
        ("L2", 2, "BPL Wholesale"),
    ]
    moves = platform.inventory.ListMovements(inv.ListMovementsRequest(lot_id=first.lots[0].id))
    assert [m.note for m in moves.movements] == [f"purchase order {po.id}"]
    # the forecast now expects only the 5 vials still to come
    f = forecast(platform, 8)
    assert f.days[0].in_date_on_hand_grams == "50" and f.days[7].arriving_grams == "50"
    with pytest.raises(grpc.RpcError) as over:  # 6 more than the 5 still expected
        receive_order(platform, po, receipt(line, "L3", 4), receipt(line, "L4", 2))
    assert over.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_types(over.value) == ["PURCHASE_ORDER_LINE_REMAINING"]
    last = receive_order(platform, po, receipt(line, "L1", 5))
    assert last.purchase_order.state == inv.PURCHASE_ORDER_STATE_RECEIVED
    assert last.lots[0].on_hand_vials == 8  # topped up the existing lot
    lots = platform.inventory.ListLots(inv.ListLotsRequest(site_id="site-1")).lots
    assert sorted(x.lot_number for x in lots) == ["L1", "L2"]  # nothing from the refused try
    with pytest.raises(grpc.RpcError) as done:
        receive_order(platform, po, receipt(line, "L9", 1))
    assert precondition_types(done.value) == ["PURCHASE_ORDER_OPEN"]
    with pytest.raises(grpc.RpcError) as final:
        platform.inventory.CancelPurchaseOrder(
            inv.CancelPurchaseOrderRequest(id=po.id, reason="late", request_id=request_id())
        )
    assert precondition_types(final.value) == ["PURCHASE_ORDER_OPEN"]


def test_bad_deliveries_name_each_receipt_and_book_nothing(platform: Platform) -> None:
    po = order(platform, vials=10)
    line = po.lines[0]
    with pytest.raises(grpc.RpcError) as bad:
        receive_order(
            platform,
            po,
            receipt(line, "OK", 1),
            receipt(line, "", 1),
            receipt(line, "PAST", 1, expiry_date=d(-3)),
            inv.PurchaseOrderReceipt(line_id="nope", lot_number="X", vials=0),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == [
        "receipts[3].line_id",
        "receipts[3].vials",
        "receipts[3].expiry_date",
    ]
    with pytest.raises(grpc.RpcError) as second:
        receive_order(
            platform,
            po,
            receipt(line, "OK", 1),
            receipt(line, "", 1),
            receipt(line, "PAST", 1, expiry_date=d(-3)),
        )
    assert field_violations(second.value) == ["receipts[1].lot_number", "receipts[2].expiry_date"]
    with pytest.raises(grpc.RpcError) as scan:  # a GTIN the catalogue does not know
        receive_order(
            platform,
            po,
            inv.PurchaseOrderReceipt(
                line_id=line.id, vials=1, gs1_element_string="(01)05412345678908(17)280630(10)S1"
            ),
        )
    assert field_violations(scan.value) == ["receipts[0].gs1_element_string"]
    with pytest.raises(grpc.RpcError) as garbled:
        receive_order(
            platform,
            po,
            inv.PurchaseOrderReceipt(line_id=line.id, vials=1, gs1_element_string="garbage"),
        )
    assert field_violations(garbled.value) == ["receipts[0].gs1_element_string"]
    assert not platform.inventory.ListLots(inv.ListLotsRequest(site_id="site-1")).lots
    got = platform.inventory.GetPurchaseOrder(inv.GetPurchaseOrderRequest(id=po.id)).purchase_order
    assert got.state == inv.PURCHASE_ORDER_STATE_OPEN and got.lines[0].vials_received == 0
    with pytest.raises(grpc.RpcError) as unknown:
        receive_order(platform, inv.PurchaseOrder(id="nope"), receipt(line, "X", 1))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_needs_a_reason_checks_the_etag_and_stops_arrivals(platform: Platform) -> None:
    po = order(platform)
    assert forecast(platform, 8).days[7].arriving_grams == "40"
    with pytest.raises(grpc.RpcError) as no_reason:
        platform.inventory.CancelPurchaseOrder(
            inv.CancelPurchaseOrderRequest(id=po.id, request_id=request_id())
        )
    assert field_violations(no_reason.value) == ["reason"]
    receive_order(platform, po, receipt(po.lines[0], "L1", 1))
    with pytest.raises(grpc.RpcError) as stale:
        platform.inventory.CancelPurchaseOrder(
            inv.CancelPurchaseOrderRequest(
                id=po.id, reason="late", etag=po.etag, request_id=request_id()
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    current = platform.inventory.GetPurchaseOrder(
        inv.GetPurchaseOrderRequest(id=po.id)
    ).purchase_order
    rid = request_id()
    request = inv.CancelPurchaseOrderRequest(
        id=po.id, reason="supplier out of stock", etag=current.etag, request_id=rid
    )
    cancelled = platform.inventory.CancelPurchaseOrder(request).purchase_order
    assert platform.inventory.CancelPurchaseOrder(request).purchase_order == cancelled  # retry
    assert cancelled.state == inv.PURCHASE_ORDER_STATE_CANCELLED
    assert cancelled.cancel_reason == "supplier out of stock"
    assert forecast(platform, 8).days[7].arriving_grams == "0"  # no longer expected
    with pytest.raises(grpc.RpcError) as again:
        platform.inventory.CancelPurchaseOrder(
            inv.CancelPurchaseOrderRequest(id=po.id, reason="x", request_id=request_id())
        )
    assert precondition_types(again.value) == ["PURCHASE_ORDER_OPEN"]
    listed = platform.inventory.ListPurchaseOrders(
        inv.ListPurchaseOrdersRequest(state=inv.PURCHASE_ORDER_STATE_CANCELLED)
    ).purchase_orders
    assert [x.id for x in listed] == [po.id]
    assert not platform.inventory.ListPurchaseOrders(
        inv.ListPurchaseOrdersRequest(state=inv.PURCHASE_ORDER_STATE_OPEN)
    ).purchase_orders
