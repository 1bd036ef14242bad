"""Inventory on PostgreSQL: ReserveStock throughput and p99 with 32 calls
in flight, on one hot product (50 lots) and spread over 200 products, then a check that nothing
was over-committed; GetStockForecast latency with 10,000 open reservations.

The inventory runs as a process (as under `make run`: 16 request threads, a pool of 10
connections) on a throwaway database created on 127.0.0.1:5432 and dropped afterwards.

Stock is seeded through the RPCs with enough vials that nothing runs out (50 lots × 1,000
vials of the hot product, 400 vials of each of the 200 others): a refusal is a cheaper path
than an allocation, so letting stock run out would flatter the numbers. Every call asks for
20 g (two 10 g vials); FEFO sends every hot call to the same first-expiring lot, so the hot
run measures the worst case: all 32 requests queue on one lot row's lock.

Each call carries its own appointment id (the idempotency key) via bench.load --unique-field.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy import create_engine, text

from bench.harness import (
    channel,
    conninfo,
    dev_issuer,
    environment,
    load,
    measured_load,
    operator_token,
    running,
    throwaway_database,
)
from bench.lean import count, lean_process
from demo.builder import Pharmacy, pb_date
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from services.issuer.local import LocalIssuer

SITE = "bench-site"
HOT = "gammagard-liquid"
HOT_LOTS, HOT_VIALS = 50, 1000
SPREAD_PRODUCTS, SPREAD_VIALS = 200, 1000  # 500 reservations a product: runs of 40,000+ calls
DOSE_GRAMS = "20"
FORECAST_RESERVATIONS = 10_000
FORECAST_HORIZON_DAYS = 90
RESERVE = "/infusion.inventory.v1.InventoryService/ReserveStock"
FORECAST = "/infusion.inventory.v1.InventoryService/GetStockForecast"
APPOINTMENT_ID = 1  # ReserveStockRequest.appointment_id's field number
HOT_RUN = "ReserveStock, 1 hot product (50 lots), PostgreSQL"
SPREAD_RUN = "ReserveStock, 200 products spread, PostgreSQL"


@contextmanager
def inventory_process(url: str, issuer: LocalIssuer) -> Iterator[tuple[str, int]]:
    """The service's address and process id (its CPU time is read around each load). Its jobs
    are off, as in the other benchmarks: the check a service runs 20 s after it starts (expiry
    and reorder at every site) fell inside some runs, over 1,000 lots and thousands of
    reservations, and counted in the service's CPU a reservation (1.7 ms became 2.5)."""
    env = environment(
        issuer, {"inventory": url}, INVENTORY_SHUTDOWN_GRACE_SECONDS="2", INVENTORY_JOBS="0"
    )
    with running(env, ("inventory",)) as processes:
        yield processes.addresses["inventory"], processes.pid("inventory")


def _bench_product(i: int) -> inv.Product:
    return inv.Product(
        code=f"bench-ivig-{i:03d}",
        brand=f"Bench IVIg {i:03d}",
        manufacturer="Bench",
        ig_class=inv.IG_CLASS_IVIG,
        concentration_percent="10",
        routes=[inv.ROUTE_IV],
        presentations=[
            inv.Presentation(grams="10", ml="100"),
            inv.Presentation(grams="5", ml="50"),
        ],
        storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
    )


def prepare(stub: Any, today: dt.date, spread_vials: int = SPREAD_VIALS) -> tuple[str, list[str]]:
    """The site, the hot product's 50 lots and 200 other products with a lot of
    ``spread_vials`` each, all via the RPCs. Returns (hot product id, spread product ids)."""
    pharmacy = Pharmacy(stub, ids=lambda label: f"bench-{label}")
    pharmacy.stock_site(SITE, "Europe/London", "Bench site", request_id="bench-site")

    def receive(product_id: str, lot: str, vials: int, expiry: dt.date) -> None:
        pharmacy.receive(
            SITE, product_id, lot, expiry, vials, request_id=f"bench-receive-{product_id}-{lot}"
        )

    hot = str(stub.GetProduct(inv.GetProductRequest(id=HOT)).product.id)
    for i in range(HOT_LOTS):
        receive(hot, f"HOT-{i:03d}", HOT_VIALS, today + dt.timedelta(days=200 + 10 * i))
    spread = []
    for i in range(SPREAD_PRODUCTS):
        product = stub.CreateProduct(
            inv.CreateProductRequest(product=_bench_product(i), request_id=f"bench-product-{i}")
        ).product
        receive(product.id, f"SPREAD-{i:03d}", spread_vials, today + dt.timedelta(days=400))
        spread.append(str(product.id))
    return hot, spread


def reserve_request(product_id: str, needed_on: dt.date, appointment: str = "") -> Any:
    return inv.ReserveStockRequest(
        appointment_id=appointment,
        site_id=SITE,
        patient_id="bench-patient",
        product_id=product_id,
        grams=DOSE_GRAMS,
        needed_on=pb_date(needed_on),
        rounding_band_percent="0",
    )


def verify(url: str, stub: Any, hot: str) -> dict[str, int]:
    """After the load: the projections equal the ledger (ReconcileStock), no lot has more
    reserved than on hand, and each lot's reserved vials equal the vials its open
    reservations hold."""
    reconcile = stub.ReconcileStock(inv.ReconcileStockRequest(site_id=SITE))
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            over = c.scalar(text("SELECT count(*) FROM lots WHERE reserved_vials > on_hand_vials"))
            mismatched = c.scalar(
                text(
                    "SELECT count(*) FROM lots l LEFT JOIN (SELECT lot_id, sum(vials) AS v "
                    "FROM reservation_lines GROUP BY lot_id) r ON r.lot_id = l.id "
                    "WHERE l.reserved_vials <> coalesce(r.v, 0)"
                )
            )
            reservations = c.scalar(text("SELECT count(*) FROM reservations"))
            hot_open = c.scalar(
                text(
                    "SELECT count(*) FROM reservations WHERE product_id = :p AND state = 'ACTIVE'"
                ),
                {"p": hot},
            )
    finally:
        engine.dispose()
    return {
        "lots_checked": reconcile.lots_checked,
        "movements_checked": reconcile.movements_checked,
        "reconcile_discrepancies": len(reconcile.discrepancies),
        "lots_over_committed": int(over or 0),
        "lots_reserved_not_matching_lines": int(mismatched or 0),
        "reservations": int(reservations or 0),
        "hot_open_reservations": int(hot_open or 0),
    }


def lean_runs(
    url: str,
    requests: tuple[list[bytes], list[bytes]],
    seconds: float,
    concurrency: int,
    log: Callable[[str], None],
) -> tuple[dict[str, dict[str, Any]], int]:
    """The same two loads, request for request, against the lean baseline (bench/lean.py) on
    a copy of the real shelf as received (same lots, products and vials, nothing reserved);
    then, on a fresh copy, against the same work served by grpc's asyncio server
    (bench/lean_aio.py), whose rows give their share of the threaded baseline. Returns the
    runs and the lean lots found over-committed after them (both shelves)."""
    out: dict[str, dict[str, Any]] = {}
    over_committed = 0
    for module, named in (("bench.lean", lean_name), ("bench.lean_aio", lean_aio_name)):
        threaded = named is lean_name
        with lean_process(url, module) as (address, pid):
            seed_lean_lots(url)
            for real, payloads in zip((HOT_RUN, SPREAD_RUN), requests, strict=True):
                name = named(real)
                log(f"inventory: {name}")
                out[name] = measured_load(
                    pid,
                    url,
                    address,
                    RESERVE,
                    payloads,
                    seconds,
                    concurrency,
                    unique_field=APPOINTMENT_ID,
                )
                if not threaded:  # its share of the threaded baseline's row
                    out[name]["lean_baseline"] = lean_name(real)
        over_committed += lean_over_committed(url)
    return out, over_committed


def lean_name(real: str) -> str:
    return real.replace("PostgreSQL", "lean baseline")


def lean_aio_name(real: str) -> str:
    return real.replace("PostgreSQL", "lean baseline on grpc.aio")


def seed_lean_lots(url: str) -> None:
    """The lean lots as the bench received them: the real lots' ids, products, vial sizes,
    expiries and on-hand vials, nothing reserved (whatever an earlier lean run left is
    cleared first)."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("TRUNCATE lean_ledger, lean_reservation_lines, lean_reservations, lean_lots")
        conn.execute(
            "INSERT INTO lean_lots SELECT id, site_id, product_id, lot_number, "
            "presentation_grams::numeric, expiry_date, on_hand_vials, 0 FROM lots "
            "WHERE site_id = %s AND state = 'AVAILABLE'",
            (SITE,),
        )


def lean_over_committed(url: str) -> int:
    """Lean lots with more reserved than on hand, or reserved vials their lines don't hold."""
    return count(
        url,
        "SELECT count(*) FROM lean_lots l LEFT JOIN (SELECT lot_id, sum(vials) AS v "
        "FROM lean_reservation_lines GROUP BY lot_id) r ON r.lot_id = l.id "
        "WHERE l.reserved > l.on_hand OR l.reserved <> coalesce(r.v, 0)",
    )


def top_up(stub: Any, hot: str, today: dt.date, have: int) -> int:
    """Open reservations of the hot product up to FORECAST_RESERVATIONS, needed on days
    spread over the forecast horizon."""
    missing = max(FORECAST_RESERVATIONS - have, 0)

    def one(n: int) -> None:
        day = today + dt.timedelta(days=1 + n % FORECAST_HORIZON_DAYS)
        stub.ReserveStock(reserve_request(hot, day, f"topup-{os.getpid()}-{n}"), timeout=60)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(missing)))
    return missing


def run(seconds: float, concurrency: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Returns {"results": {name: load result}, "checks": {...}}."""
    today = dt.datetime.now(ZoneInfo("Europe/London")).date()
    results: dict[str, dict[str, Any]] = {}
    with (
        dev_issuer() as issuer,
        throwaway_database("inventory") as url,
        inventory_process(url, issuer) as (address, pid),
    ):
        token = operator_token(issuer)
        opened = channel(address, token)
        stub = inventory_pb2_grpc.InventoryServiceStub(opened)
        log("inventory: seeding 50 hot lots and 200 products through the RPCs")
        hot, spread = prepare(stub, today)
        hot_requests = [
            reserve_request(hot, today + dt.timedelta(days=1 + k)).SerializeToString()
            for k in range(28)
        ]
        spread_requests = [
            reserve_request(p, today + dt.timedelta(days=7)).SerializeToString() for p in spread
        ]
        cpu: dict[str, float] = {}
        for name, requests in (
            (HOT_RUN, hot_requests),
            (SPREAD_RUN, spread_requests),
        ):
            log(f"inventory: {name}")
            results[name] = measured_load(
                pid,
                url,
                address,
                RESERVE,
                requests,
                seconds,
                concurrency,
                unique_field=APPOINTMENT_ID,
                token=token,
            )
            # the service's own CPU per call: its ceiling on one core is 1 s / this
            cpu[name] = results[name]["cpu_ms"]["server"]
        log(f"inventory: service CPU ms per ReserveStock call: {cpu}")
        lean, lean_over = lean_runs(url, (hot_requests, spread_requests), seconds, concurrency, log)
        for real in (HOT_RUN, SPREAD_RUN):  # the table gives the real path's share of lean
            results[real]["lean_baseline"] = lean_name(real)
        results.update(lean)
        checks: dict[str, Any] = dict(verify(url, stub, hot))
        log(f"inventory: checks after the ReserveStock runs: {checks}")
        added = top_up(stub, hot, today, checks["hot_open_reservations"])
        checks = verify(url, stub, hot) | {"topped_up": added, "service_cpu_ms_per_call": cpu}
        checks["lean_lots_over_committed"] = lean_over
        forecast = inv.GetStockForecastRequest(
            site_id=SITE, product_id=hot, horizon_days=FORECAST_HORIZON_DAYS
        ).SerializeToString()
        stub.GetStockForecast(inv.GetStockForecastRequest.FromString(forecast))
        n = checks["hot_open_reservations"]
        for in_flight in (1, concurrency):
            log(f"inventory: GetStockForecast, {in_flight} in flight")
            results[
                f"GetStockForecast {FORECAST_HORIZON_DAYS} d, {n:,} open reservations, "
                f"{in_flight} in flight"
            ] = load(address, FORECAST, forecast, seconds, in_flight, token=token)
        opened.close()
    return {"results": results, "checks": checks}
