"""Fixtures for the notify integration tests: an in-process notify server on a real port and
database (SQLite and PostgreSQL through ``database_url``), with an injected clock, the
dispatcher NOT running (NOTIFY_JOBS=0: tests call ``run_once``), and recording adapters
unless a test passes real ones. The server trusts the test's issuer (fixture ``issuer``); the
stub calls as a hospital system (the integration role) granted all it may be.

Import what you use: ``from tests.integration.notify_conftest import notify_server  # noqa``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import grpc
import pytest

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.clock import FixedClock
from services.notify.__main__ import Notify, assemble
from services.notify.adapters.channels import Adapter, OutgoingMessage
from services.notify.domain.model import Channel
from services.notify.settings import NotifySettings
from tests.issuer import TestIssuer

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)  # a Tuesday, noon in London
_ids = itertools.count()


def rid() -> str:
    return f"notify-test-{next(_ids)}"


class Recorder:
    """An adapter that keeps what it was asked to send (and can be told to fail)."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self.fail_with: list[Exception] = []
        self.lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> None:
        with self.lock:
            if self.fail_with:
                raise self.fail_with.pop(0)
            self.sent.append(message)


@dataclass
class NotifyServer:
    app: Notify
    stub: notify_pb2_grpc.NotifyServiceStub
    channel: grpc.Channel
    clock: FixedClock
    address: str
    recorders: dict[Channel, Recorder] = field(default_factory=dict)

    def run_once(self) -> int:
        return self.app.dispatcher.run_once()

    def drain(self) -> int:
        return self.app.dispatcher.drain()


TEST_SETTINGS = NotifySettings(
    listen="127.0.0.1:0",
    jobs=False,
    audit_linker="thread",
    grpc_workers=16,
    shutdown_grace_seconds=1,
    heartbeat_seconds=0.3,
    stream_poll_seconds=0.05,
    retry_base_seconds=60,
    retry_max_seconds=3600,
    max_attempts=4,
    dispatch_workers=1,
)

Factory = Callable[..., NotifyServer]


@pytest.fixture
def notify_factory(database_url: str, issuer: TestIssuer) -> Iterator[Factory]:
    """Builds (and afterwards stops) notify servers; each call may pass its own config and
    adapters. Servers built by one test share its database."""
    made: list[NotifyServer] = []

    def make(
        config: NotifySettings | None = None,
        adapters: Mapping[Channel, Adapter] | None = None,
        clock: FixedClock | None = None,
    ) -> NotifyServer:
        settings = with_changes(config or TEST_SETTINGS, database_url=database_url)
        clock = clock or FixedClock(NOW)
        recorders: dict[Channel, Recorder] = {}
        if adapters is None:
            recorders = {c: Recorder() for c in Channel}
            adapters = dict(recorders)
        app = assemble(settings, clock, adapters, issuer.service_auth("notify"))
        app.service.start()
        channel = issuer.channel(app.service.address, issuer.integration_token())
        server = NotifyServer(
            app=app,
            stub=notify_pb2_grpc.NotifyServiceStub(channel),
            channel=channel,
            clock=clock,
            address=app.service.address,
            recorders=recorders,
        )
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.channel.close()
            server.app.service.stop(0)


@pytest.fixture
def notify_server(notify_factory: Factory) -> NotifyServer:
    return notify_factory()


def with_changes(settings: NotifySettings, **changes: object) -> NotifySettings:
    """A copy with some fields changed, validated as the environment's would be."""
    return NotifySettings(**{**settings.model_dump(), **changes})


def config(**changes: object) -> NotifySettings:
    return with_changes(TEST_SETTINGS, **changes)


# --- request builders ---------------------------------------------------------------------------


def subscriber(**fields: object) -> pb.Subscriber:
    base: dict[str, object] = {
        "external_ref": "staff-1",
        "display_name": "Pat Pharmacist",
        "time_zone": "Europe/London",
        "email": "pat@example.org",
        "kind": pb.SUBSCRIBER_KIND_STAFF,
    }
    base.update(fields)
    return pb.Subscriber(**base)  # type: ignore[arg-type]


def create(server: NotifyServer, **fields: object) -> pb.Subscriber:
    return server.stub.CreateSubscriber(
        pb.CreateSubscriberRequest(subscriber=subscriber(**fields), request_id=rid())
    ).subscriber


def lot_expiring(site: str = "site-1", lot: str = "LOT42") -> pb.Payload:
    from google.type import date_pb2

    return pb.Payload(
        lot_expiring=pb.LotExpiringPayload(
            site_id=site,
            lot_id="lot-1",
            product_id="privigen",
            lot_number=lot,
            expiry_date=date_pb2.Date(year=2026, month=12, day=20),
            days_left=26,
            threshold_days=30,
            on_hand_vials=12,
            reserved_vials=3,
        )
    )


def reminder(start: dt.datetime, site: str = "site-1") -> pb.Payload:
    from services.common.convert import from_datetime

    return pb.Payload(
        appointment_reminder=pb.AppointmentReminderPayload(
            appointment_id="appt-1",
            patient_id="patient-1",
            site_id=site,
            site_name="Royal Free Day Unit",
            start_time=from_datetime(start),
            time_zone="Europe/London",
            patient_name="Alex",
            product_brand="Privigen",
        )
    )


def publish(
    server: NotifyServer,
    topic: int,
    payload: pb.Payload,
    subscriber_ids: list[str] | None = None,
    **fields: object,
) -> pb.PublishResponse:
    request = pb.PublishRequest(
        topic=topic,  # type: ignore[arg-type]
        payload=payload,
        subscriber_ids=subscriber_ids or [],
        request_id=str(fields.pop("request_id", rid())),
        **fields,  # type: ignore[arg-type]
    )
    response: pb.PublishResponse = server.stub.Publish(request)
    return response
