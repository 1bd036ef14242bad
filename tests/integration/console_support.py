"""A running platform for the console's tests: the development issuer served over HTTP (its
sign-in page and token endpoint, in a thread), the three services in-process on SQLite
trusting it, the demo centre `make run` loads (demo/centre.py) and the console application
with a clock fixed on the demo's day. ``sign_in`` goes through the real authorization code
flow: the console's redirect, the issuer's one-click page, the console's callback."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
from starlette.applications import Starlette
from starlette.testclient import TestClient

from demo import centre
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.clock import FixedClock
from services.common.convert import from_date, to_date
from services.console.app import create_app
from services.console.settings import load_settings as console_settings
from services.inventory.__main__ import build as build_inventory
from services.inventory.seed import seed_catalogue
from services.inventory.settings import load_settings as inventory_settings
from services.issuer.endpoints import make_server
from services.notify.__main__ import assemble
from services.notify.settings import NotifySettings
from services.scheduler.__main__ import build as build_scheduler
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.settings import load_settings as scheduler_settings
from tests.issuer import TestIssuer

# a Tuesday morning in London: the demo centre is loaded for this day
NOW = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
TODAY = NOW.date()


@dataclass
class Platform:
    issuer: TestIssuer
    scheduler_address: str
    inventory_address: str
    notify_address: str
    clock: FixedClock
    app: Starlette
    site_id: str
    booked_day: dt.date  # the first day the demo booked appointments on

    def scheduler(
        self, role: str = "scheduling_coordinator", org: str = centre.ORG
    ) -> scheduler_pb2_grpc.SchedulerServiceStub:
        token = self.issuer.issuer.role_token(role, org)
        return scheduler_pb2_grpc.SchedulerServiceStub(
            open_channel(self.scheduler_address, None, StaticToken(token))
        )


def publish_lot_expiring(platform: Platform, org: str, site_id: str, lot_number: str) -> None:
    """A LOT_EXPIRING broadcast of ``org`` (reaching its staff who chose the topic), published
    as a hospital system: what a user's own notifications page then lists."""
    token = StaticToken(platform.issuer.issuer.role_token("integration", org))
    notify = notify_pb2_grpc.NotifyServiceStub(open_channel(platform.notify_address, None, token))
    notify.Publish(
        npb.PublishRequest(
            topic=npb.TOPIC_LOT_EXPIRING,
            payload=npb.Payload(
                lot_expiring=npb.LotExpiringPayload(
                    site_id=site_id,
                    lot_id=f"lot-{lot_number}",
                    product_id="privigen",
                    lot_number=lot_number,
                    expiry_date=from_date(TODAY + dt.timedelta(days=14)),
                    days_left=14,
                    threshold_days=30,
                    on_hand_vials=6,
                )
            ),
            request_id=f"publish-{org}-{lot_number}",
        )
    )


@contextmanager
def running_platform(directory: Path) -> Iterator[Platform]:
    issuer = TestIssuer()
    http = make_server(issuer.issuer, "127.0.0.1", 0)
    issuer.issuer.url = f"http://127.0.0.1:{http.server_address[1]}"
    serving = threading.Thread(target=http.serve_forever, daemon=True)
    serving.start()
    clock = FixedClock(NOW)
    inv_settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": f"sqlite:///{directory / 'inventory.db'}",
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_SHUTDOWN_GRACE_SECONDS": "1",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
        }
    )
    inventory = build_inventory(inv_settings, clock, issuer.service_auth("inventory"))
    inventory.start()
    seed_catalogue(inv_settings, clock)
    notify = assemble(
        NotifySettings(
            listen="127.0.0.1:0",
            jobs=False,
            shutdown_grace_seconds=1,
            database_url=f"sqlite:///{directory / 'notify.db'}",
        ),
        clock,
        {},
        issuer.service_auth("notify"),
    )
    notify.service.start()
    sched_settings = scheduler_settings(
        {
            "SCHEDULER_DATABASE_URL": f"sqlite:///{directory / 'scheduler.db'}",
            "SCHEDULER_LISTEN": "127.0.0.1:0",
            "INVENTORY_ADDRESS": inventory.address,
            "NOTIFY_ADDRESS": notify.service.address,
            "SCHEDULER_SHUTDOWN_GRACE_SECONDS": "1",
            "SCHEDULER_JOBS": "0",
            "SCHEDULER_AUDIT_LINKER": "thread",
        }
    )
    scheduler_auth = issuer.service_auth("scheduler")
    products = InventoryProducts(open_channel(inventory.address, None, scheduler_auth.tokens))
    scheduler = build_scheduler(sched_settings, clock, products, scheduler_auth)
    scheduler.start()
    try:
        operator = StaticToken(issuer.operator_token(centre.ORG))
        centre.load(scheduler.address, inventory.address, TODAY, tokens=operator)
        sites = scheduler_pb2_grpc.SchedulerServiceStub(
            open_channel(scheduler.address, None, operator)
        ).ListSites(pb.ListSitesRequest(organisation_id=centre.ORG))
        site_id = sites.sites[0].id
        booked = scheduler_pb2_grpc.SchedulerServiceStub(
            open_channel(scheduler.address, None, operator)
        ).ListAppointments(pb.ListAppointmentsRequest(site_id=site_id))
        booked_day = min(to_date(a.local_date) for a in booked.appointments)
        app = create_app(
            console_settings(
                {
                    "SCHEDULER_ADDRESS": scheduler.address,
                    "INVENTORY_ADDRESS": inventory.address,
                    "NOTIFY_ADDRESS": notify.service.address,
                    "AUTH_ISSUER": issuer.issuer.url,
                    "CONSOLE_SESSION_SECRET": "test-secret",
                }
            ),
            clock=clock,
        )
        yield Platform(
            issuer,
            scheduler.address,
            inventory.address,
            notify.service.address,
            clock,
            app,
            site_id,
            booked_day,
        )
    finally:
        scheduler.stop(0)
        notify.service.stop(0)
        inventory.stop(0)
        http.shutdown()
        http.server_close()


def sign_in(
    client: TestClient, role: str, organisation: str = centre.ORG, next_path: str = "/"
) -> None:
    """The authorization code flow as a browser does it: the console sends the browser to
    the issuer, the user clicks their role there, the issuer sends the browser back."""
    to_issuer = client.get("/login", params={"next": next_path}, follow_redirects=False)
    assert to_issuer.status_code in (302, 303), to_issuer.text
    authorize = to_issuer.headers["location"]
    page = httpx.get(authorize)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', page.text))
    fields = {k: _unescape(v) for k, v in fields.items()}
    answer = httpx.post(
        authorize.split("?")[0],
        data={**fields, "role": role, "organisation": organisation},
    )
    assert answer.status_code == 303, answer.text
    back = urlparse(answer.headers["location"])
    done = client.get(f"{back.path}?{back.query}", follow_redirects=False)
    assert done.status_code == 303, done.text


def _unescape(value: str) -> str:
    import html

    return html.unescape(value)
