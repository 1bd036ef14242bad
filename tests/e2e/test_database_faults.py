"""PostgreSQL cutting a service's connections (a restart, a failover, an idle timeout) needs no
manual step: the inventory runs as a process on PostgreSQL, every one of its connections is
terminated by the server, and its next calls succeed on fresh connections (the pool pings a
connection before handing it out)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from services.common.health import wait_serving
from tests.e2e.test_processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
APP = "inventory-e2e-faults"


def test_the_inventory_survives_its_connections_being_cut(
    postgres_url: str, tmp_path: Path
) -> None:
    url = make_url(postgres_url)
    url = url.set(query={**url.query, "application_name": APP})
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.update(
        INVENTORY_DATABASE_URL=url.render_as_string(hide_password=False),
        INVENTORY_LISTEN=address,
        INVENTORY_JOBS="0",
        INVENTORY_SHUTDOWN_GRACE_SECONDS="1",
    )
    subprocess.run(
        [sys.executable, "-m", "services.inventory", "seed"],
        env=env,
        check=True,
        capture_output=True,
    )
    with (tmp_path / "inventory.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.inventory"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_serving(address)
            stub = inventory_pb2_grpc.InventoryServiceStub(grpc.insecure_channel(address))
            stub.CreateStockSite(
                inv.CreateStockSiteRequest(
                    request_id="s", site=inv.StockSite(id="s", display_name="S", time_zone="UTC")
                )
            )
            product = stub.GetProduct(inv.GetProductRequest(id="privigen")).product.id
            expiry = dt.date.today() + dt.timedelta(days=400)

            def receive(n: int) -> inv.Lot:
                return stub.ReceiveStock(
                    inv.ReceiveStockRequest(
                        request_id=f"r{n}",
                        site_id="s",
                        product_id=product,
                        presentation_grams="10",
                        lot_number="L1",
                        expiry_date=Date(year=expiry.year, month=expiry.month, day=expiry.day),
                        vials=5,
                        unit_cost=Money(currency_code="GBP", units=340),  # £34/g (domain.md §6)
                    )
                ).lot

            assert receive(1).on_hand_vials == 5
            admin = create_engine(postgres_url)
            try:
                with admin.connect() as conn:
                    cut = conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = :app"
                        ),
                        {"app": APP},
                    ).scalar()
            finally:
                admin.dispose()
            assert cut and cut >= 1  # the service's pooled connections are gone
            assert receive(2).on_hand_vials == 10  # the next calls just work
            assert receive(3).on_hand_vials == 15
            assert list(stub.ReconcileStock(inv.ReconcileStockRequest()).discrepancies) == []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
