"""In-process servers on real ports: inventory (seeded with the shipped catalogue) and a
scheduler that reads products from it over gRPC, each on its own database; both trust the
test's in-memory issuer, the scheduler calls the inventory with its service token, and the
stubs carry a token of the test operator (every role a person may hold, in org-1)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
from google.type.date_pb2 import Date
from sqlalchemy import create_engine, text

from infusion.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.channels import open_channel
from services.common.clock import FixedClock
from services.inventory.__main__ import build as build_inventory
from services.inventory.seed import seed_catalogue
from services.inventory.settings import load_settings as inventory_settings
from services.scheduler.__main__ import build as build_scheduler
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.settings import load_settings as scheduler_settings
from tests.issuer import TestIssuer

NOW = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def request_id() -> str:
    return f"test-{next(_ids)}"


@dataclass
class Platform:
    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    inventory: inventory_pb2_grpc.InventoryServiceStub
    scheduler_channel: grpc.Channel
    inventory_channel: grpc.Channel
    clock: FixedClock
    scheduler_address: str
    inventory_address: str
    stop_inventory: Callable[[], None]
    forget_products: Callable[[], None]
    issuer: TestIssuer
    # the inventory as the scheduler service calls it (forecast pushes are the scheduler's)
    scheduler_service: inventory_pb2_grpc.InventoryServiceStub


@pytest.fixture
def issuer() -> TestIssuer:
    """The test's token issuer: every in-process server of the test trusts it."""
    return TestIssuer()


@pytest.fixture
def platform(database_url: str, issuer: TestIssuer) -> Iterator[Platform]:
    with running_platform(database_url, issuer) as running:
        yield running


def scheduler_database_url(database_url: str) -> str:
    """The scheduler's own database beside the inventory's: a SQLite file next to it, or the
    same PostgreSQL schema (tables and Alembic version tables do not collide)."""
    if database_url.startswith("sqlite"):
        return database_url.replace("test.db", "scheduler.db")
    return database_url


def audited_ids(url: str, service: str, method: str) -> list[str]:
    """The resource ids named by ``service``'s audit records of ``method`` (the RPC's name),
    one entry per record naming it: a record written twice shows twice."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                text(f"SELECT resource_ids FROM {service}_audit_events WHERE method LIKE :m"),
                {"m": f"%/{method}"},
            ).scalars()
            named = [json.loads(ids) if isinstance(ids, str) else ids for ids in rows]
    finally:
        engine.dispose()
    return [i for ids in named for i in ids]


def write_apart(url: str, sql: str, **params: object) -> None:
    """One SQL statement committed in a transaction of its own, as another client's would
    be: a change the service under test did not make (a concurrent one, or a fault)."""
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text(sql), params)
    finally:
        engine.dispose()


@contextmanager
def running_platform(database_url: str, issuer: TestIssuer | None = None) -> Iterator[Platform]:
    """Inventory (seeded) and a scheduler reading products from it, on ``database_url``, both
    trusting ``issuer`` (a new one by default)."""
    issuer = issuer or TestIssuer()
    clock = FixedClock(NOW)
    inv_settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_GRPC_WORKERS": "8",
            "INVENTORY_SHUTDOWN_GRACE_SECONDS": "1",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
        },
    )
    inventory = build_inventory(inv_settings, clock, issuer.service_auth("inventory"))
    inventory.start()
    seed_catalogue(inv_settings, clock)
    sched_url = scheduler_database_url(database_url)
    sched_settings = scheduler_settings(
        {
            "SCHEDULER_DATABASE_URL": sched_url,
            "SCHEDULER_LISTEN": "127.0.0.1:0",
            "INVENTORY_ADDRESS": inventory.address,
            "SCHEDULER_GRPC_WORKERS": "8",
            "SCHEDULER_SHUTDOWN_GRACE_SECONDS": "1",
            "SCHEDULER_JOBS": "0",
            "SCHEDULER_AUDIT_LINKER": "thread",
        },
    )
    scheduler_auth = issuer.service_auth("scheduler")
    products = InventoryProducts(open_channel(inventory.address, None, scheduler_auth.tokens))
    scheduler = build_scheduler(sched_settings, clock, products, scheduler_auth)
    scheduler.start()
    sch_channel = issuer.channel(scheduler.address)
    inv_channel = issuer.channel(inventory.address)
    service_channel = issuer.service_channel("scheduler", inventory.address)
    try:
        yield Platform(
            scheduler=scheduler_pb2_grpc.SchedulerServiceStub(sch_channel),
            inventory=inventory_pb2_grpc.InventoryServiceStub(inv_channel),
            scheduler_channel=sch_channel,
            inventory_channel=inv_channel,
            clock=clock,
            scheduler_address=scheduler.address,
            inventory_address=inventory.address,
            stop_inventory=lambda: inventory.stop(0),
            forget_products=products.forget,
            issuer=issuer,
            scheduler_service=inventory_pb2_grpc.InventoryServiceStub(service_channel),
        )
    finally:
        service_channel.close()
        sch_channel.close()
        inv_channel.close()
        scheduler.stop(0)
        inventory.stop(0)


def stock_site(p: Platform, site_id: str = "site-1", time_zone: str = "Europe/London") -> None:
    """Create the inventory's record of a site (the scheduler's site id and its zone)."""
    from infusion.inventory.v1 import inventory_pb2 as inv

    p.inventory.CreateStockSite(
        inv.CreateStockSiteRequest(
            site=inv.StockSite(id=site_id, display_name=site_id.title(), time_zone=time_zone),
            request_id=f"site-{site_id}",
        )
    )


RESERVED_FOR = Date(year=2026, month=12, day=1)
"""The day the inventory tests' reservations are for (a week after NOW)."""


def reserve(
    p: Platform, site_id: str, appointment_id: str, product_id: str, grams: str
) -> inventory_pb2.Reservation:
    """ReserveStock for one appointment at ``site_id`` on RESERVED_FOR for patient "p": the
    reservation made, or the call's RpcError raised. Shared by the inventory tests that only
    need a reservation to work on."""
    return p.inventory.ReserveStock(
        inventory_pb2.ReserveStockRequest(
            appointment_id=appointment_id,
            site_id=site_id,
            patient_id="p",
            product_id=product_id,
            grams=grams,
            needed_on=RESERVED_FOR,
        )
    ).reservation
