"""Two replicas of the inventory on one PostgreSQL database (issue 6): both run the daily check
at once, and both relays carry the outbox to notify, yet every event is raised once and
notified once (dedupe keys in the outbox, SKIP LOCKED in the relays, request ids at notify)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from sqlalchemy import create_engine, text

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.health import wait_serving
from services.demo import load_notify
from tests.e2e.test_processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_two_inventory_replicas_raise_and_deliver_each_event_once(
    postgres_url: str, tmp_path: Path
) -> None:
    notify_address = f"127.0.0.1:{free_port()}"
    replicas = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    env = dict(os.environ)
    env.update(
        INVENTORY_DATABASE_URL=postgres_url,
        NOTIFY_DATABASE_URL=f"sqlite:///{tmp_path / 'notify.db'}",
        NOTIFY_LISTEN=notify_address,
        NOTIFY_ADDRESS=notify_address,
        INVENTORY_SHUTDOWN_GRACE_SECONDS="1",
        NOTIFY_SHUTDOWN_GRACE_SECONDS="1",
    )
    subprocess.run(
        [sys.executable, "-m", "services.inventory", "seed"],
        env=env,
        check=True,
        capture_output=True,
    )
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.notify"],
                env=env,
                stdout=(tmp_path / "notify.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        assert wait_serving(notify_address)
        load_notify(notify_address)  # a console subscriber for every topic
        for i, address in enumerate(replicas):  # one after the other: each migrates first
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.inventory"],
                    env={**env, "INVENTORY_LISTEN": address},
                    stdout=(tmp_path / f"inventory-{i}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
            assert wait_serving(address)
        stubs = [
            inventory_pb2_grpc.InventoryServiceStub(grpc.insecure_channel(a)) for a in replicas
        ]
        stubs[0].CreateStockSite(
            inv.CreateStockSiteRequest(
                request_id="s", site=inv.StockSite(id="s", display_name="S", time_zone="UTC")
            )
        )
        product = stubs[0].GetProduct(inv.GetProductRequest(id="privigen")).product.id
        for n in range(5):  # five lots expiring within 30 days: five LOT_EXPIRING events
            expiry = dt.date.today() + dt.timedelta(days=10 + n)
            stubs[n % 2].ReceiveStock(
                inv.ReceiveStockRequest(
                    request_id=f"r{n}",
                    site_id="s",
                    product_id=product,
                    presentation_grams="10",
                    lot_number=f"SOON-{n}",
                    expiry_date=Date(year=expiry.year, month=expiry.month, day=expiry.day),
                    vials=2,
                    unit_cost=Money(currency_code="GBP", units=340),  # £34/g (domain.md §6)
                )
            )
        with ThreadPoolExecutor(4) as pool:  # both replicas, twice each, at once
            runs = list(
                pool.map(
                    lambda i: stubs[i % 2].RunExpiryCheck(inv.RunExpiryCheckRequest(site_id="s")),
                    range(4),
                )
            )
        assert sum(len(r.warnings) for r in runs) == 5  # each lot warned by exactly one run
        engine = create_engine(postgres_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT count(*) FROM inventory_outbox WHERE topic = 'LOT_EXPIRING'")
                ).scalar()
        finally:
            engine.dispose()
        assert rows == 5
        notify = notify_pb2_grpc.NotifyServiceStub(grpc.insecure_channel(notify_address))

        def notified() -> int:
            return len(
                notify.ListNotifications(
                    npb.ListNotificationsRequest(topic=npb.TOPIC_LOT_EXPIRING, page_size=100)
                ).notifications
            )

        deadline = time.monotonic() + 30
        while notified() < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # both relays keep running: nothing more may arrive
        assert notified() == 5
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=20)
